//! The typed instruction layer (BuildKit `instructions.ParseInstruction`): validates flags and
//! argument counts of each AST node and turns it into an [`Instruction`]. Errors are raised
//! at the keyword, the flag or the arguments they are about.

use std::collections::HashMap;

use crate::ast::{Heredoc, Node, Parts, parse_heredoc};
use crate::error::Fault;
use crate::flags::{FlagKind, Flags};
use crate::instruction::{
    Add, ArgDecl, Command, Copy, From, Healthcheck, INSTRUCTION_NAMES, Instruction, KeyValue,
    Onbuild, Run, SourceContent,
};
use crate::suggest::suggest;

type Res<T> = std::result::Result<T, String>;

/// A flag error at the flag it names.
fn flag_fault<'a>(parts: &'a Parts, text: &'a str) -> impl Fn((usize, String)) -> Fault + 'a {
    |(i, message)| Fault {
        message,
        at: crate::ast::flag_range(text, parts.keyword.start, i),
    }
}

fn at_least_one(cmd: &str) -> String {
    format!("{cmd} requires at least one argument")
}
fn exactly_one(cmd: &str) -> String {
    format!("{cmd} requires exactly one argument")
}

fn command_of(mut args: Vec<String>, json: bool) -> Command {
    if json {
        Command::Exec(args)
    } else if args.len() == 1 {
        Command::Shell(args.pop().unwrap_or_default())
    } else {
        Command::Shell(args.join(" "))
    }
}

/// Converts one AST node into a typed instruction (BuildKit `ParseInstruction`). The error is
/// BuildKit's message without location.
///
/// Argument strings, flags and heredocs are moved out of `node` (the caller drops it).
pub(crate) fn from_node(node: &mut Node) -> std::result::Result<Instruction, Fault> {
    let parts = std::mem::take(&mut node.parts);
    let at_args = |message: String| Fault {
        message,
        at: Some(parts.args.clone()),
    };
    let at_flag = flag_fault(&parts, &node.original);
    // A bad value of the flag `--name`: at that flag.
    let at_named_flag = |name: &str, message: String| {
        let index = node.flags.iter().position(|f| {
            f.strip_prefix("--")
                .and_then(|f| f.strip_prefix(name))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
        });
        Fault {
            message,
            at: index.and_then(|i| crate::ast::flag_range(&node.original, parts.keyword.start, i)),
        }
    };
    let mut args = if node.trigger.is_some() {
        node.args()
    } else {
        std::mem::take(&mut node.args)
    };
    let flags = &node.flags;
    let no_flags = || Flags::parse(flags, &[]).map_err(&at_flag);
    let lower = crate::ast::KEYWORDS
        .iter()
        .find(|k| k.eq_ignore_ascii_case(&node.value))
        .copied()
        .unwrap_or("");
    Ok(match lower {
        "env" | "label" => {
            no_flags()?;
            let name = if lower == "env" { "ENV" } else { "LABEL" };
            if args.is_empty() {
                return Err(at_args(at_least_one(name)));
            }
            if !args.len().is_multiple_of(3) {
                return Err(at_args(format!("Bad input to {name}, too many arguments")));
            }
            let mut kvs = Vec::with_capacity(args.len() / 3);
            let mut it = std::mem::take(&mut args).into_iter();
            while let (Some(key), Some(value), Some(sep)) = (it.next(), it.next(), it.next()) {
                if key.is_empty() {
                    return Err(at_args(format!("{name} names can not be blank")));
                }
                kvs.push(KeyValue {
                    key,
                    value,
                    equals: sep == "=",
                });
            }
            if lower == "env" {
                Instruction::Env(kvs)
            } else {
                Instruction::Label(kvs)
            }
        }
        "maintainer" => {
            if args.len() != 1 {
                return Err(at_args(exactly_one("MAINTAINER")));
            }
            no_flags()?;
            Instruction::Maintainer(std::mem::take(&mut args[0]))
        }
        "add" => {
            if args.len() < 2 {
                return Err(at_args(no_dest("ADD")));
            }
            let mut f = Flags::parse(
                flags,
                &[
                    ("chown", FlagKind::String),
                    ("chmod", FlagKind::String),
                    ("link", FlagKind::Bool),
                    ("keep-git-dir", FlagKind::Bool),
                    ("checksum", FlagKind::String),
                    ("unpack", FlagKind::Bool),
                    ("exclude", FlagKind::Strings),
                ],
            )
            .map_err(&at_flag)?;
            let (sources, source_contents, dest) =
                sources_and_dest(node, std::mem::take(&mut args), "ADD").map_err(at_args)?;
            Instruction::Add(Add {
                sources,
                source_contents,
                dest,
                chown: f.string("chown"),
                chmod: f.string("chmod"),
                link: f.bool("link"),
                keep_git_dir: f.bool("keep-git-dir"),
                checksum: f.string("checksum"),
                unpack: f.bool_opt("unpack"),
                exclude: f.strings("exclude"),
                json: node.json,
                heredocs: std::mem::take(&mut node.heredocs),
            })
        }
        "copy" => {
            if args.len() < 2 {
                return Err(at_args(no_dest("COPY")));
            }
            let mut f = Flags::parse(
                flags,
                &[
                    ("chown", FlagKind::String),
                    ("from", FlagKind::String),
                    ("chmod", FlagKind::String),
                    ("link", FlagKind::Bool),
                    ("parents", FlagKind::Bool),
                    ("exclude", FlagKind::Strings),
                ],
            )
            .map_err(&at_flag)?;
            let (sources, source_contents, dest) =
                sources_and_dest(node, std::mem::take(&mut args), "COPY").map_err(at_args)?;
            Instruction::Copy(Copy {
                sources,
                source_contents,
                dest,
                from: f.string("from"),
                chown: f.string("chown"),
                chmod: f.string("chmod"),
                link: f.bool("link"),
                parents: f.bool("parents"),
                exclude: f.strings("exclude"),
                json: node.json,
                heredocs: std::mem::take(&mut node.heredocs),
            })
        }
        "from" => {
            let name = stage_name(&args).map_err(at_args)?;
            let mut f = Flags::parse(flags, &[("platform", FlagKind::String)]).map_err(&at_flag)?;
            Instruction::From(From {
                image: std::mem::take(&mut args[0]),
                platform: f.string("platform"),
                name,
            })
        }
        "onbuild" => {
            if args.is_empty() {
                return Err(at_args(at_least_one("ONBUILD")));
            }
            no_flags()?;
            let trigger = args[0].trim().to_uppercase();
            match trigger.as_str() {
                "ONBUILD" => {
                    return Err(at_args(crate::ast::ONBUILD_CHAIN.to_owned()));
                }
                "MAINTAINER" | "FROM" => {
                    return Err(at_args(format!(
                        "{trigger} isn't allowed as an ONBUILD trigger"
                    )));
                }
                _ => {}
            }
            let mut expression = strip_onbuild(&node.original).to_owned();
            for h in &node.heredocs {
                expression.push('\n');
                expression.push_str(&h.content);
                expression.push_str(&h.name);
            }
            let mut child = node
                .trigger
                .take()
                .ok_or_else(|| at_args(at_least_one("ONBUILD")))?;
            child.heredocs = std::mem::take(&mut node.heredocs);
            let instruction = from_node(&mut child)?;
            Instruction::Onbuild(Onbuild {
                expression,
                instruction: Box::new(instruction),
            })
        }
        "workdir" => {
            if args.len() != 1 {
                return Err(at_args(exactly_one("WORKDIR")));
            }
            no_flags()?;
            Instruction::Workdir(std::mem::take(&mut args[0]))
        }
        "run" => {
            let mut f = Flags::parse(
                flags,
                &[
                    ("mount", FlagKind::Strings),
                    ("network", FlagKind::String),
                    ("security", FlagKind::String),
                ],
            )
            .map_err(&at_flag)?;
            let network = f.string("network");
            let security = f.string("security");
            if let Some(n) = &network
                && !matches!(n.to_ascii_lowercase().as_str(), "default" | "none" | "host")
            {
                return Err(at_named_flag(
                    "network",
                    format!("unsupported network mode {}", crate::quote::go_quote(n)),
                ));
            }
            if let Some(s) = &security
                && !matches!(s.as_str(), "sandbox" | "insecure")
            {
                return Err(at_named_flag(
                    "security",
                    format!("unsupported security mode {}", crate::quote::go_quote(s)),
                ));
            }
            Instruction::Run(Run {
                command: command_of(args, node.json),
                mounts: f.strings("mount"),
                network,
                security,
                heredocs: std::mem::take(&mut node.heredocs),
            })
        }
        "cmd" => {
            no_flags()?;
            Instruction::Cmd(command_of(args, node.json))
        }
        "entrypoint" => {
            no_flags()?;
            Instruction::Entrypoint(command_of(args, node.json))
        }
        "healthcheck" => healthcheck(node, &args, &parts)?,
        "expose" => {
            if args.is_empty() {
                return Err(at_args(at_least_one("EXPOSE")));
            }
            no_flags()?;
            let mut ports = args.clone();
            ports.sort();
            Instruction::Expose(ports)
        }
        "user" => {
            if args.len() != 1 {
                return Err(at_args(exactly_one("USER")));
            }
            no_flags()?;
            Instruction::User(std::mem::take(&mut args[0]))
        }
        "volume" => {
            if args.is_empty() {
                return Err(at_args(at_least_one("VOLUME")));
            }
            no_flags()?;
            let mut vols = Vec::with_capacity(args.len());
            for v in &args {
                let v = v.trim();
                if v.is_empty() {
                    return Err(at_args(
                        "VOLUME specified can not be an empty string".to_owned(),
                    ));
                }
                vols.push(v.to_owned());
            }
            Instruction::Volume(vols)
        }
        "stopsignal" => {
            if args.len() != 1 {
                return Err(at_args(exactly_one("STOPSIGNAL")));
            }
            no_flags()?;
            Instruction::StopSignal(std::mem::take(&mut args[0]))
        }
        "arg" => {
            if args.is_empty() {
                return Err(at_args(at_least_one("ARG")));
            }
            no_flags()?;
            let mut decls = Vec::with_capacity(args.len());
            for a in &args {
                match a.split_once('=') {
                    Some((k, v)) => {
                        if k.is_empty() {
                            return Err(at_args("ARG names can not be blank".to_owned()));
                        }
                        decls.push(ArgDecl {
                            name: k.to_owned(),
                            default: Some(v.to_owned()),
                        });
                    }
                    None => decls.push(ArgDecl {
                        name: a.clone(),
                        default: None,
                    }),
                }
            }
            Instruction::Arg(decls)
        }
        "shell" => {
            no_flags()?;
            if args.is_empty() {
                return Err(at_args(at_least_one("SHELL")));
            }
            if !node.json {
                return Err(at_args(
                    "SHELL requires the arguments to be in JSON form".to_owned(),
                ));
            }
            Instruction::Shell(args)
        }
        _ => {
            let mut msg = format!("unknown instruction: {}", node.value);
            if let Some(s) = suggest(&node.value, &INSTRUCTION_NAMES, false) {
                crate::suggest::append(&mut msg, &s);
            }
            return Err(Fault {
                message: msg,
                at: Some(parts.keyword.clone()),
            });
        }
    })
}

fn no_dest(cmd: &str) -> String {
    format!(
        "{cmd} requires at least two arguments, but only one was provided. Destination could not be determined"
    )
}

/// `(?i)^\s*ONBUILD\s*` removed from the original line.
fn strip_onbuild(original: &str) -> &str {
    let t = original.trim_start_matches(['\t', '\n', '\u{c}', '\r', ' ']);
    match t.get(..7) {
        Some(k) if k.eq_ignore_ascii_case("onbuild") => {
            t[7..].trim_start_matches(['\t', '\n', '\u{c}', '\r', ' '])
        }
        _ => original,
    }
}

fn stage_name(args: &[String]) -> Res<Option<String>> {
    if args.len() == 3 && args[1].eq_ignore_ascii_case("as") {
        let name = args[2].to_lowercase();
        let mut chars = name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
        if !valid {
            return Err(format!(
                "invalid name for build stage: {}, name can't start with a number or contain symbols",
                crate::quote::go_quote(&args[2])
            ));
        }
        return Ok(Some(name));
    }
    if args.len() != 1 {
        return Err("FROM requires either one or three arguments".to_owned());
    }
    Ok(None)
}

type SrcDest = (Vec<String>, Vec<SourceContent>, String);

fn sources_and_dest(node: &Node, mut args: Vec<String>, cmd: &str) -> Res<SrcDest> {
    let dest = args.pop().ok_or_else(|| no_dest(cmd))?;
    let srcs = args;
    if !node.json && parse_heredoc(&dest).ok().flatten().is_some() {
        return Err(format!("{cmd} cannot accept a heredoc as a destination"));
    }
    let mut sources = Vec::new();
    let mut contents = Vec::new();
    // The last heredoc of each name. Indexed on first use when there are many: a search per
    // source made a line of many heredocs quadratic (issue 12).
    let mut by_name: Option<HashMap<&str, &Heredoc>> = None;
    let indexed = node.heredocs.len() > 16;
    for s in srcs {
        let heredoc = if node.json || !s.contains("<<") {
            None
        } else {
            parse_heredoc(&s).ok().flatten()
        };
        match heredoc {
            Some(h) => {
                let found = if indexed {
                    let by_name = by_name.get_or_insert_with(|| {
                        node.heredocs.iter().map(|d| (d.name.as_str(), d)).collect()
                    });
                    by_name.get(h.name.as_str()).copied()
                } else {
                    node.heredocs.iter().rev().find(|d| d.name == h.name)
                };
                let content = found.map(|d| d.content.clone()).unwrap_or_default();
                let data = if h.chomp {
                    crate::ast::chomp_heredoc_content(&content)
                } else {
                    content
                };
                contents.push(SourceContent {
                    path: h.name,
                    data,
                    expand: h.expand,
                });
            }
            None => sources.push(s),
        }
    }
    Ok((sources, contents, dest))
}

fn healthcheck(
    node: &Node,
    args: &[String],
    parts: &Parts,
) -> std::result::Result<Instruction, Fault> {
    let at_args = |message: String| Fault {
        message,
        at: Some(parts.args.clone()),
    };
    let at_flag = flag_fault(parts, &node.original);
    if args.is_empty() {
        return Err(at_args(at_least_one("HEALTHCHECK")));
    }
    let typ = args[0].to_uppercase();
    let rest = &args[1..];
    if typ == "NONE" {
        if !rest.is_empty() {
            return Err(at_args("HEALTHCHECK NONE takes no arguments".to_owned()));
        }
        Flags::parse(&node.flags, &[]).map_err(&at_flag)?;
        return Ok(Instruction::Healthcheck(Healthcheck::None));
    }
    let mut f = Flags::parse(
        &node.flags,
        &[
            ("interval", FlagKind::String),
            ("timeout", FlagKind::String),
            ("start-period", FlagKind::String),
            ("start-interval", FlagKind::String),
            ("retries", FlagKind::String),
        ],
    )
    .map_err(&at_flag)?;
    if typ != "CMD" {
        return Err(at_args(format!(
            "Unknown type {} in HEALTHCHECK (try CMD)",
            crate::quote::go_quote(&typ)
        )));
    }
    if rest.is_empty() {
        return Err(at_args("Missing command after HEALTHCHECK CMD".to_owned()));
    }
    let command = command_of(rest.to_vec(), node.json);
    let durations = [
        ("interval", f.string("interval")),
        ("timeout", f.string("timeout")),
        ("start-period", f.string("start-period")),
        ("start-interval", f.string("start-interval")),
    ];
    for (name, value) in &durations {
        if let Some(v) = value
            && !v.is_empty()
        {
            let d = crate::duration::parse_go_duration(v).map_err(at_args)?;
            if d != 0 && d < 1_000_000 {
                return Err(at_args(format!(
                    "Interval {} cannot be less than 1ms",
                    crate::quote::go_quote(name)
                )));
            }
        }
    }
    let retries = match f.string("retries").filter(|v| !v.is_empty()) {
        Some(v) => {
            let n: i64 = v
                .parse()
                .map_err(|_| {
                    format!(
                        "strconv.ParseInt: parsing {}: invalid syntax",
                        crate::quote::go_quote(&v)
                    )
                })
                .map_err(at_args)?;
            if n < 1 {
                return Err(at_args(format!("--retries must be at least 1 (not {n})")));
            }
            Some(n)
        }
        None => None,
    };
    let [interval, timeout, start_period, start_interval] = durations.map(|(_, v)| v);
    Ok(Instruction::Healthcheck(Healthcheck::Check {
        command,
        interval,
        timeout,
        start_period,
        start_interval,
        retries,
    }))
}
