//! The instruction half of the checks' dispatch (`dispatchStages`): each stage's commands
//! (its base's ONBUILD triggers first) run in order against the stage's environment, where the
//! variable, ENV/LABEL, ARG, CMD/ENTRYPOINT, WORKDIR, COPY and EXPOSE checks fire.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::OnceLock;

use kiln_parser::shell::Lexer;
use kiln_parser::{Command, Instruction};
use regex::Regex;

use super::{Cmd, DEFAULT_PATH, Dispatcher, EnvList, NON_ENV_ARGS, StageState};
use crate::engine::{Linter, err, located};
use crate::{BuildError, Range, rules, suggest};

impl<'d> Dispatcher<'_, 'd> {
    /// `dispatchStages`: every stage the target needs (or all, with `all_stages`), its
    /// instructions run in order against its environment.
    pub(super) fn dispatch_all(
        &mut self,
        reachable: &BTreeSet<usize>,
        global: &EnvList,
    ) -> Result<(), BuildError> {
        for i in 0..self.states.len() {
            if !self.opts.all_stages && (!reachable.contains(&i) || self.states[i].dispatched) {
                continue;
            }
            let Some(stage) = self.states[i].stage else {
                self.states[i].dispatched = true;
                continue;
            };
            let mut cmds: Vec<Cmd<'d>> = Vec::new();
            let stage_ranges = self.states[i].ranges.clone();
            // ONBUILD triggers are only initialized for the stages the target needs, even
            // when every stage is dispatched (`resolveStages`).
            let triggers = reachable.contains(&i);
            let mut state = match self.states[i].base {
                Some(b) => {
                    let base = &self.states[b];
                    if let Some(bs) = base.stage.filter(|_| triggers) {
                        for l in &bs.instructions {
                            if let Instruction::Onbuild(o) = &l.instruction {
                                cmds.push(Cmd {
                                    instruction: Cow::Owned((*o.instruction).clone()),
                                    name: o
                                        .expression
                                        .split_whitespace()
                                        .next()
                                        .unwrap_or("")
                                        .to_owned(),
                                    ranges: stage_ranges.clone(),
                                });
                            }
                        }
                    }
                    base.result.clone().unwrap_or_default()
                }
                None => {
                    let mut st = StageState::default();
                    if let Some(img) = &self.states[i].image {
                        for e in &img.env {
                            let (k, v) = e.split_once('=').unwrap_or((e, ""));
                            st.env.set(k, v);
                        }
                        st.shell.clone_from(&img.shell);
                        for t in img.onbuild.iter().filter(|_| triggers) {
                            if let Ok(l) = kiln_parser::parse_instruction(t, '\\') {
                                cmds.push(Cmd {
                                    name: t.split_whitespace().next().unwrap_or("").to_owned(),
                                    instruction: Cow::Owned(l.instruction),
                                    ranges: stage_ranges.clone(),
                                });
                            }
                        }
                    }
                    st
                }
            };
            if state.env.get("PATH").is_none() {
                state.env.set("PATH", DEFAULT_PATH);
            }
            let names = &self.names.stages[stage.index];
            for (l, name) in stage.instructions.iter().zip(names.iter().skip(1)) {
                cmds.push(Cmd {
                    instruction: Cow::Borrowed(&l.instruction),
                    name: name.clone(),
                    ranges: located(l),
                });
            }
            self.states[i].dispatched = true;
            let mut trackers = Trackers::default();
            for c in &cmds {
                self.dispatch(i, &mut state, &mut trackers, c, global)?;
            }
            self.states[i].result = Some(state);
        }
        Ok(())
    }

    fn report_unmatched(&mut self, unmatched: &BTreeSet<String>, st: &StageState, r: &[Range]) {
        for var in unmatched {
            if st.build_args.iter().any(|a| a == var) || NON_ENV_ARGS.contains(&var.as_str()) {
                continue;
            }
            let s = suggest::search(var, st.env.keys());
            self.lint.run(
                &rules::UNDEFINED_VAR,
                r,
                rules::undefined_var(var, s.as_deref()),
            );
        }
    }

    /// Expands one word in the stage's environment, reporting undefined variables.
    fn expand(
        &mut self,
        lexer: &Lexer,
        word: &str,
        st: &StageState,
        r: &[Range],
    ) -> Result<String, BuildError> {
        let m = lexer
            .process_word_with_matches(word, &st.env)
            .map_err(|e| err(e.message(), r))?;
        self.report_unmatched(&m.unmatched, st, r);
        Ok(m.word)
    }

    fn expand_all(
        &mut self,
        words: &[String],
        st: &StageState,
        r: &[Range],
    ) -> Result<Vec<String>, BuildError> {
        let lexer = self.lexer.clone();
        words
            .iter()
            .map(|w| self.expand(&lexer, w, st, r))
            .collect()
    }

    fn expand_heredocs(
        &mut self,
        contents: &[kiln_parser::SourceContent],
        st: &StageState,
        r: &[Range],
    ) -> Result<(), BuildError> {
        let mut raw = Lexer::new('\\');
        raw.skip_process_quotes = true;
        for c in contents.iter().filter(|c| c.expand) {
            self.expand(&raw, &c.data, st, r)?;
        }
        Ok(())
    }

    fn dispatch(
        &mut self,
        idx: usize,
        st: &mut StageState,
        trackers: &mut Trackers,
        c: &Cmd<'_>,
        global: &EnvList,
    ) -> Result<(), BuildError> {
        let r = c.ranges.as_slice();
        let lexer = self.lexer.clone();
        match c.instruction.as_ref() {
            Instruction::Env(kvs) => {
                let mut expanded = Vec::with_capacity(kvs.len());
                for kv in kvs {
                    let k = self.expand(&lexer, &kv.key, st, r)?;
                    let v = self.expand(&lexer, &kv.value, st, r)?;
                    expanded.push((k, v, kv.equals));
                }
                for (k, v, equals) in expanded {
                    if !equals {
                        self.lint.run(
                            &rules::LEGACY_KEY_VALUE_FORMAT,
                            r,
                            rules::legacy_key_value_format(&c.name),
                        );
                    }
                    self.no_secret_key("ENV", &k, r);
                    st.env.set(&k, &v);
                }
            }
            Instruction::Label(kvs) => {
                for kv in kvs {
                    self.expand(&lexer, &kv.key, st, r)?;
                    self.expand(&lexer, &kv.value, st, r)?;
                }
                for kv in kvs {
                    if !kv.equals {
                        self.lint.run(
                            &rules::LEGACY_KEY_VALUE_FORMAT,
                            r,
                            rules::legacy_key_value_format(&c.name),
                        );
                    }
                }
            }
            Instruction::Copy(cp) => {
                if let Some(ch) = &cp.chown {
                    self.expand(&lexer, ch, st, r)?;
                }
                let sources = self.expand_all(&cp.sources, st, r)?;
                self.expand(&lexer, &cp.dest, st, r)?;
                self.expand_heredocs(&cp.source_contents, st, r)?;
                match &cp.from {
                    Some(from) => {
                        let src = self.source_index(from);
                        if let Some(s) = src
                            && !self.states[s].dispatched
                        {
                            return Err(err(
                                format!(
                                    "cannot copy from stage {}, it needs to be defined before current stage {}",
                                    rules::go_q(from),
                                    rules::go_q(&self.states[idx].name)
                                ),
                                r,
                            ));
                        }
                    }
                    None => {
                        for s in &sources {
                            self.ignored_source("Copy", s, r);
                        }
                    }
                }
            }
            Instruction::Add(add) => {
                if let Some(ch) = &add.chown {
                    self.expand(&lexer, ch, st, r)?;
                }
                if let Some(sum) = &add.checksum {
                    self.expand(&lexer, sum, st, r)?;
                }
                let sources = self.expand_all(&add.sources, st, r)?;
                self.expand(&lexer, &add.dest, st, r)?;
                self.expand_heredocs(&add.source_contents, st, r)?;
                for s in &sources {
                    let remote = ["http://", "https://", "git://", "git@"]
                        .iter()
                        .any(|p| s.starts_with(p));
                    if !remote {
                        self.ignored_source("Add", s, r);
                    }
                }
            }
            Instruction::Workdir(path) => {
                let path = self.expand(&lexer, path, st, r)?;
                if !st.workdir_set && !path.starts_with('/') {
                    self.lint.run(
                        &rules::WORKDIR_RELATIVE_PATH,
                        r,
                        rules::workdir_relative_path(&path),
                    );
                }
                st.workdir_set = true;
            }
            Instruction::User(w) | Instruction::StopSignal(w) => {
                self.expand(&lexer, w, st, r)?;
            }
            Instruction::Volume(v) => {
                self.expand_all(v, st, r)?;
            }
            Instruction::Run(run) => {
                // `parseMount` expands each `key=value` field's value on its own.
                for m in &run.mounts {
                    for field in m.split(',') {
                        if let Some((_, value)) = field.split_once('=') {
                            self.expand(&lexer, value, st, r)?;
                        }
                    }
                }
            }
            Instruction::Cmd(cmd) => {
                trackers.cmd.used(&c.name, r, self.lint);
                self.json_args(cmd, &c.name, st, r);
            }
            Instruction::Entrypoint(cmd) => {
                trackers.entrypoint.used(&c.name, r, self.lint);
                self.json_args(cmd, &c.name, st, r);
            }
            Instruction::Healthcheck(_) => trackers.healthcheck.used(&c.name, r, self.lint),
            Instruction::Expose(ports) => {
                let mut all = Vec::new();
                for p in ports {
                    all.extend(
                        lexer
                            .process_words(p, &st.env)
                            .map_err(|e| err(e.message(), r))?,
                    );
                }
                for p in &all {
                    self.expose_port(p, r)?;
                }
            }
            Instruction::Arg(args) => {
                for a in args {
                    self.no_secret_key("ARG", &a.name, r);
                    let value = if let Some(v) = self.opts.build_args.get(&a.name) {
                        Some(v.clone())
                    } else if let Some(d) = &a.default {
                        Some(self.expand(&lexer, d, st, r)?)
                    } else {
                        global.get(&a.name).map(str::to_owned)
                    };
                    if let Some(v) = value
                        && !NON_ENV_ARGS.contains(&a.name.as_str())
                    {
                        st.env.set(&a.name, &v);
                    }
                    st.build_args.push(a.name.clone());
                }
            }
            Instruction::Shell(sh) => st.shell.clone_from(sh),
            Instruction::Onbuild(_) | Instruction::Maintainer(_) | Instruction::From(_) => {}
        }
        Ok(())
    }

    fn source_index(&self, from: &str) -> Option<usize> {
        if let Ok(i) = from.parse::<usize>() {
            return Some(i).filter(|i| *i < self.states.len());
        }
        self.by_name.get(&from.to_lowercase()).copied()
    }

    fn json_args(&mut self, cmd: &Command, name: &str, st: &StageState, r: &[Range]) {
        if cmd.is_shell() && st.shell.is_empty() {
            self.lint.run(
                &rules::JSON_ARGS_RECOMMENDED,
                r,
                rules::json_args_recommended(name),
            );
        }
    }

    fn no_secret_key(&mut self, instruction: &str, key: &str, r: &[Range]) {
        static RES: OnceLock<(Regex, Regex)> = OnceLock::new();
        let (deny, allow) = RES.get_or_init(|| {
            let build = |tokens: &str| {
                Regex::new(&format!("(?i)(?:_|^)(?:{tokens})(?:_|$)"))
                    .unwrap_or_else(|e| unreachable!("secret pattern: {e}"))
            };
            (
                build("apikey|auth|credential|credentials|key|password|pword|passwd|secret|token"),
                build("public|file|version"),
            )
        });
        if deny.is_match(key) && !allow.is_match(key) {
            self.lint.run(
                &rules::SECRETS_USED_IN_ARG_OR_ENV,
                r,
                rules::secrets_used_in_arg_or_env(instruction, key),
            );
        }
    }

    /// `validateCopySourcePath` (CopyIgnoredFile).
    fn ignored_source(&mut self, cmd: &str, src: &str, r: &[Range]) {
        let Some(ignore) = self.opts.ignore else {
            return;
        };
        if ignore.has_exclusions() {
            return;
        }
        let cleaned = kiln_parser::clean_path(src);
        if (cleaned == "." || cleaned == "/") && !ignore.ignores_root() {
            return;
        }
        if ignore.is_excluded(&cleaned) {
            self.lint.run(
                &rules::COPY_IGNORED_FILE,
                r,
                rules::copy_ignored_file(cmd, &cleaned),
            );
        }
    }

    /// The lint half of `portSpecs.parsePort`, plus its protocol error.
    fn expose_port(&mut self, raw: &str, r: &[Range]) -> Result<(), BuildError> {
        let parts: Vec<&str> = raw.split(':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [c] => ("", "", *c),
            [h, c] => ("", *h, *c),
            [i, h, c] => (*i, *h, *c),
            _ => {
                let n = parts.len();
                let ip_len = raw.len() - parts[n - 2].len() - parts[n - 1].len() - 2;
                (&raw[..ip_len], parts[n - 2], parts[n - 1])
            }
        };
        let (port, proto) = container.split_once('/').unwrap_or((container, ""));
        if port.is_empty() {
            return Err(err(
                format!("invalid port: {}: no port specified", rules::go_q(raw)),
                r,
            ));
        }
        if !matches!(proto.to_lowercase().as_str(), "" | "tcp" | "udp" | "sctp") {
            return Err(err(
                format!("invalid port: {}: invalid proto: {proto}", rules::go_q(raw)),
                r,
            ));
        }
        if proto != proto.to_lowercase() {
            self.lint.run(
                &rules::EXPOSE_PROTO_CASING,
                r,
                rules::expose_proto_casing(raw),
            );
        }
        if !ip.is_empty() || !host.is_empty() {
            self.lint.run(
                &rules::EXPOSE_INVALID_FORMAT,
                r,
                rules::expose_invalid_format(raw),
            );
        }
        Ok(())
    }
}

/// Where CMD, ENTRYPOINT and HEALTHCHECK were last set in a stage (`instructionTracker`).
#[derive(Default)]
struct Trackers {
    cmd: Tracker,
    entrypoint: Tracker,
    healthcheck: Tracker,
}

#[derive(Default)]
struct Tracker(Option<Vec<Range>>);

impl Tracker {
    /// `validateUsedOnce`: a second use reports the first one, the one that is ignored.
    fn used(&mut self, name: &str, r: &[Range], lint: &mut Linter) {
        if let Some(prev) = &self.0 {
            lint.run(
                &rules::MULTIPLE_INSTRUCTIONS_DISALLOWED,
                prev,
                rules::multiple_instructions_disallowed(name),
            );
        }
        self.0 = Some(r.to_vec());
    }
}
