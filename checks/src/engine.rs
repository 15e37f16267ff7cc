//! The checks themselves, in the order BuildKit's `dockerfile2llb.toDispatchState` runs them.
//! This module holds the entry point, the rule filter ([`Linter`]) and the checks that look at
//! the file as written: the syntax layer's warnings, the per-instruction checks of
//! `instructions.Parse`, stage names and keyword casing. What needs ARG expansion, base
//! images and each stage's environment is [`crate::dispatch`].

use std::collections::BTreeSet;

use kiln_parser::ast::{Ast, Node};
use kiln_parser::{Dockerfile, Located};

use crate::config::{LintConfig, directive};
use crate::dispatch::Dispatcher;
use crate::rules::{self, Rule};
use crate::{BuildError, CheckOptions, Range, Report, Warning};

/// Collects warnings the way `linter.Linter` does: rules filtered by the config, and the
/// rules that fired remembered for `error=true`.
pub(crate) struct Linter {
    cfg: LintConfig,
    warnings: Vec<Warning>,
    called: Vec<&'static str>,
}

impl Linter {
    pub(crate) fn run(&mut self, rule: &'static Rule, ranges: &[Range], detail: String) {
        if !self.cfg.enabled(rule) {
            return;
        }
        self.called.push(rule.name);
        self.warnings.push(Warning {
            rule,
            detail,
            ranges: ranges.to_vec(),
        });
    }

    fn error(&self) -> Option<String> {
        if !self.cfg.error || self.called.is_empty() {
            return None;
        }
        let mut unique: Vec<&str> = Vec::new();
        for r in &self.called {
            if !unique.contains(r) {
                unique.push(r);
            }
        }
        Some(format!(
            "lint violation found for rules: {}",
            unique.join(", ")
        ))
    }
}

pub(crate) fn lines(start: usize, end: usize) -> Vec<Range> {
    vec![Range::lines(start, end)]
}

pub(crate) fn located(l: &Located) -> Vec<Range> {
    lines(l.start_line, l.end_line)
}

pub(crate) fn err(message: impl Into<String>, ranges: &[Range]) -> BuildError {
    BuildError {
        message: message.into(),
        ranges: ranges.to_vec(),
    }
}

/// Runs every check over `source`.
pub(crate) fn check(source: &[u8], opts: &CheckOptions<'_>) -> Report {
    let cfg_text = opts
        .build_args
        .get("BUILDKIT_DOCKERFILE_CHECK")
        .cloned()
        .or_else(|| directive(source, "check"));
    let cfg = match LintConfig::parse(cfg_text.as_deref().unwrap_or("")) {
        Ok(c) => c,
        Err(e) => {
            return Report {
                warnings: Vec::new(),
                error: Some(err(format!("failed to parse check options: {e}"), &[])),
            };
        }
    };
    let mut lint = Linter {
        cfg,
        warnings: Vec::new(),
        called: Vec::new(),
    };
    let result = run(source, opts, &mut lint);
    let error = match result {
        Err(e) => Some(e),
        Ok(()) => lint.error().map(|m| err(m, &[])),
    };
    Report {
        warnings: lint.warnings,
        error,
    }
}

fn run(source: &[u8], opts: &CheckOptions<'_>, lint: &mut Linter) -> Result<(), BuildError> {
    if source.is_empty() {
        return Err(err("the Dockerfile cannot be empty", &[]));
    }
    let ast = kiln_parser::ast::parse_ast(source).map_err(|e| {
        let r = e.line().map(|l| lines(l, l)).unwrap_or_default();
        err(e.message(), &r)
    })?;
    for w in &ast.warnings {
        lint.run(
            &rules::NO_EMPTY_CONTINUATION,
            &lines(w.line, w.line),
            rules::NO_EMPTY_CONTINUATION_DETAIL.to_owned(),
        );
    }
    let parsed = kiln_parser::parse(source);
    let fail_line = parsed.as_ref().err().and_then(kiln_parser::Error::line);
    parse_checks(&ast, fail_line, lint);
    let df = match parsed {
        Ok(df) => df,
        Err(e) => {
            let line = e.line().unwrap_or(0);
            let r = lines(line, line);
            let message = if e.message() == "no build stage in current context" {
                e.message().to_owned()
            } else {
                format!("dockerfile parse error on line {line}: {}", e.message())
            };
            return Err(err(message, &r));
        }
    };
    if df.stages.is_empty() {
        return Err(err("dockerfile contains no stages to build", &[]));
    }
    let names = NodeNames::new(&ast, &df);
    stage_name_checks(&df, lint);
    casing_checks(&df, &names, lint);
    Dispatcher::new(&df, &names, opts, lint).run()
}

/// The instruction keywords as written, per stage (FROM first), from the syntax layer.
pub(crate) struct NodeNames {
    pub(crate) stages: Vec<Vec<String>>,
}

impl NodeNames {
    fn new(ast: &Ast, df: &Dockerfile) -> Self {
        let mut it = ast.children.iter().skip(df.global.len());
        let stages = df
            .stages
            .iter()
            .map(|s| {
                (0..=s.instructions.len())
                    .map(|_| it.next().map(|n| n.value.clone()).unwrap_or_default())
                    .collect()
            })
            .collect();
        NodeNames { stages }
    }
}

/// Checks `instructions.Parse` runs per node while converting it: MAINTAINER, stage name and
/// `AS` casing, and (experimental) description comments. Nodes at or after `fail_line` (the
/// instruction that did not convert) stop the pass, after that node's pre-conversion checks.
fn parse_checks(ast: &Ast, fail_line: Option<usize>, lint: &mut Linter) {
    for node in &ast.children {
        let failed = fail_line.is_some_and(|l| node.start_line >= l);
        if fail_line.is_some_and(|l| node.start_line > l) {
            break;
        }
        let r = lines(node.start_line, node.end_line);
        match node.value.to_lowercase().as_str() {
            "maintainer" => lint.run(
                &rules::MAINTAINER_DEPRECATED,
                &r,
                rules::MAINTAINER_DEPRECATED_DETAIL.to_owned(),
            ),
            "from" => {
                let a = &node.args;
                if a.len() == 3 && a[2] != a[2].to_lowercase() {
                    lint.run(
                        &rules::STAGE_NAME_CASING,
                        &r,
                        rules::stage_name_casing(&a[2]),
                    );
                }
                if !from_matches_as_case(node) {
                    lint.run(
                        &rules::FROM_AS_CASING,
                        &r,
                        rules::from_as_casing(&node.value, &a[1]),
                    );
                }
                if !failed && a.len() == 3 {
                    definition_description("FROM", &[a[2].to_lowercase()], node, &r, lint);
                }
            }
            "arg" if !failed => {
                let keys: Vec<String> = node
                    .args
                    .iter()
                    .map(|a| a.split_once('=').map_or(a.as_str(), |(k, _)| k).to_owned())
                    .collect();
                definition_description("ARG", &keys, node, &r, lint);
            }
            _ => {}
        }
        if failed {
            break;
        }
    }
}

fn from_matches_as_case(node: &Node) -> bool {
    if node.args.len() < 3 {
        return true;
    }
    let cmd = &node.value;
    let lower = *cmd == cmd.to_lowercase();
    let upper = *cmd == cmd.to_uppercase();
    if !lower && !upper {
        return true;
    }
    let a = &node.args[1];
    if lower {
        *a == a.to_lowercase()
    } else {
        *a == a.to_uppercase()
    }
}

fn definition_description(
    instruction: &str,
    keys: &[String],
    node: &Node,
    r: &[Range],
    lint: &mut Linter,
) {
    let (Some(last), Some(first)) = (node.prev_comment.last(), keys.first()) else {
        return;
    };
    let word = last.split(' ').next().unwrap_or("");
    if keys.iter().any(|k| k == word) {
        return;
    }
    let example = if keys.len() > 1 { "<arg_key>" } else { first };
    lint.run(
        &rules::INVALID_DEFINITION_DESCRIPTION,
        r,
        rules::invalid_definition_description(instruction, example),
    );
}

/// `validateStageNames`: reserved and duplicate stage names.
fn stage_name_checks(df: &Dockerfile, lint: &mut Linter) {
    let mut seen = BTreeSet::new();
    for s in &df.stages {
        let Some(name) = &s.name else { continue };
        let r = lines(s.start_line, s.end_line);
        if name == "context" || name == "scratch" {
            lint.run(
                &rules::RESERVED_STAGE_NAME,
                &r,
                rules::reserved_stage_name(name),
            );
        }
        if !seen.insert(name.clone()) {
            lint.run(
                &rules::DUPLICATE_STAGE_NAME,
                &r,
                rules::duplicate_stage_name(name),
            );
        }
    }
}

/// `validateCommandCasing`: every keyword against the majority casing of the stages'
/// keywords (global ARGs do not count, as upstream).
fn casing_checks(df: &Dockerfile, names: &NodeNames, lint: &mut Linter) {
    let consistent = |s: &str| s == s.to_lowercase() || s == s.to_uppercase();
    let (mut lower, mut upper) = (0, 0);
    for n in names.stages.iter().flatten() {
        if consistent(n) {
            if *n == n.to_lowercase() {
                lower += 1;
            } else {
                upper += 1;
            }
        }
    }
    let majority_lower = lower > upper;
    for (s, stage_names) in df.stages.iter().zip(&names.stages) {
        let ranges = std::iter::once(lines(s.start_line, s.end_line))
            .chain(s.instructions.iter().map(located));
        for (name, r) in stage_names.iter().zip(ranges) {
            let casing = if majority_lower && name.to_lowercase() != *name {
                "lowercase"
            } else if !majority_lower && name.to_uppercase() != *name {
                "uppercase"
            } else {
                continue;
            };
            lint.run(
                &rules::CONSISTENT_INSTRUCTION_CASING,
                &r,
                rules::consistent_instruction_casing(name, casing),
            );
        }
    }
}
