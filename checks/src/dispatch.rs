//! Stage dispatch for the checks, as BuildKit's `buildDispatchStates`, `resolveStages` and
//! `dispatchStages` do it: FROM names and platforms expanded with the global ARGs, the target
//! and the stages it needs, base images looked up, then each stage's instructions run in order
//! against its environment (base image config, ENV, ARG), which is where variable, ENV/LABEL,
//! ARG, CMD/ENTRYPOINT, WORKDIR, COPY and EXPOSE checks fire. Nothing is built: only what the
//! checks need is tracked.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::OnceLock;

use kiln_parser::shell::Lexer;
use kiln_parser::{Command, Dockerfile, Instruction};
use regex::Regex;

use crate::engine::{Linter, NodeNames, err, lines, located};
use crate::platform::{self, Platform};
use crate::rules;
use crate::{BaseImage, BuildError, CheckOptions, Range, reference, suggest};

/// Build arguments that never become environment variables.
const NON_ENV_ARGS: [&str; 2] = ["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An ordered environment with BuildKit's `AddOrReplace` semantics.
#[derive(Debug, Clone, Default)]
struct EnvList {
    entries: Vec<(String, String)>,
    /// Position of each key in `entries`: a set or lookup costs the same however many
    /// variables there are (100k `ENV` pairs were quadratic).
    index: std::collections::HashMap<String, usize>,
}

impl EnvList {
    fn set(&mut self, k: &str, v: &str) {
        if let Some(&i) = self.index.get(k) {
            v.clone_into(&mut self.entries[i].1);
        } else {
            self.index.insert(k.to_owned(), self.entries.len());
            self.entries.push((k.to_owned(), v.to_owned()));
        }
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.index.get(k).map(|&i| self.entries[i].1.as_str())
    }
    fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }
}

impl kiln_parser::shell::Env for EnvList {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        EnvList::get(self, name).map(Cow::Borrowed)
    }
}

/// What a dispatched stage leaves for the stages built on it.
#[derive(Debug, Clone, Default)]
struct StageState {
    env: EnvList,
    shell: Vec<String>,
    build_args: Vec<String>,
    workdir_set: bool,
}

/// One command to dispatch: the instruction, its keyword as written, where it is.
struct Cmd<'d> {
    instruction: Cow<'d, Instruction>,
    name: String,
    ranges: Vec<Range>,
}

/// A build stage, or an image named by `COPY --from` (no `stage`).
struct State<'d> {
    stage: Option<&'d kiln_parser::Stage>,
    name: String,
    base_name: String,
    base: Option<usize>,
    platform: Option<Platform>,
    ranges: Vec<Range>,
    deps: Vec<usize>,
    image: Option<BaseImage>,
    dispatched: bool,
    result: Option<StageState>,
}

pub(crate) struct Dispatcher<'a, 'd> {
    df: &'d Dockerfile,
    names: &'a NodeNames,
    opts: &'a CheckOptions<'a>,
    lint: &'a mut Linter,
    lexer: Lexer,
    states: Vec<State<'d>>,
    by_name: BTreeMap<String, usize>,
}

impl<'a, 'd> Dispatcher<'a, 'd> {
    pub(crate) fn new(
        df: &'d Dockerfile,
        names: &'a NodeNames,
        opts: &'a CheckOptions<'a>,
        lint: &'a mut Linter,
    ) -> Self {
        Dispatcher {
            df,
            names,
            opts,
            lint,
            lexer: Lexer::new(df.escape),
            states: Vec::new(),
            by_name: BTreeMap::new(),
        }
    }

    pub(crate) fn run(mut self) -> Result<(), BuildError> {
        let target_name = match &self.opts.target {
            Some(t) => t.clone(),
            None => self
                .df
                .stages
                .last()
                .and_then(|s| s.name.clone())
                .unwrap_or_default(),
        };
        let defaults = self.default_args(&target_name);
        self.base_names_with_default_args(&defaults);
        let (global, declared) = self.meta_args(defaults, Some(&self.opts.build_args))?;
        self.stage_states(&global, &declared)?;
        let target = self.resolve_target()?;
        self.dependencies()?;
        let reachable = self.reachable(target);
        self.resolve_images(&reachable);
        self.dispatch_all(&reachable, &global)?;
        Ok(())
    }

    /// `defaultArgs`: the automatic platform ARGs and TARGETSTAGE (build args override them).
    fn default_args(&self, target: &str) -> EnvList {
        let mut env = EnvList::default();
        let p = Platform::linux_amd64();
        for (k, v) in [
            ("BUILDPLATFORM", p.format()),
            ("BUILDOS", p.os.clone()),
            ("BUILDOSVERSION", String::new()),
            ("BUILDARCH", p.architecture.clone()),
            ("BUILDVARIANT", String::new()),
            ("TARGETPLATFORM", p.format()),
            ("TARGETOS", p.os.clone()),
            ("TARGETOSVERSION", String::new()),
            ("TARGETARCH", p.architecture.clone()),
            ("TARGETVARIANT", String::new()),
            ("TARGETSTAGE", target.to_owned()),
        ] {
            let v = self.opts.build_args.get(k).cloned().unwrap_or(v);
            env.set(k, &v);
        }
        env
    }

    /// `buildMetaArgs`: the global ARGs on top of `env`, with `build_args` (or only the
    /// defaults); also the names of every declared global ARG.
    fn meta_args(
        &self,
        mut env: EnvList,
        build_args: Option<&BTreeMap<String, String>>,
    ) -> Result<(EnvList, BTreeSet<String>), BuildError> {
        let mut declared = BTreeSet::new();
        for l in &self.df.global {
            let Instruction::Arg(args) = &l.instruction else {
                continue;
            };
            for a in args {
                let value = match build_args.and_then(|b| b.get(&a.name)) {
                    Some(v) => Some(v.clone()),
                    None => match &a.default {
                        Some(d) => Some(
                            self.lexer
                                .process_word(d, &env)
                                .map_err(|e| err(e.message(), &located(l)))?,
                        ),
                        None => None,
                    },
                };
                if let Some(v) = value {
                    env.set(&a.name, &v);
                }
                declared.insert(a.name.clone());
            }
        }
        Ok((env, declared))
    }

    /// `validateBaseImagesWithDefaultArgs`.
    fn base_names_with_default_args(&mut self, defaults: &EnvList) {
        let Ok((args, _)) = self.meta_args(defaults.clone(), None) else {
            return;
        };
        for s in &self.df.stages {
            let Ok(name) = self.lexer.process_word(&s.base, &args) else {
                return;
            };
            if !reference::is_valid(&name) {
                self.lint.run(
                    &rules::INVALID_DEFAULT_ARG_IN_FROM,
                    &lines(s.start_line, s.end_line),
                    rules::invalid_default_arg_in_from(&s.base),
                );
            }
        }
    }

    fn undeclared_from_args(
        &mut self,
        unmatched: &BTreeSet<String>,
        known: &BTreeSet<String>,
        r: &[Range],
    ) {
        for arg in unmatched {
            if known.contains(arg) {
                continue;
            }
            let s = suggest::search(arg, known.iter().map(String::as_str));
            self.lint.run(
                &rules::UNDEFINED_ARG_IN_FROM,
                r,
                rules::undefined_arg_in_from(arg, s.as_deref()),
            );
        }
    }

    /// `buildDispatchStates`: FROM names and platforms expanded, stages registered by name.
    fn stage_states(
        &mut self,
        global: &EnvList,
        declared: &BTreeSet<String>,
    ) -> Result<(), BuildError> {
        let mut known: BTreeSet<String> = declared.clone();
        known.extend(global.keys().map(str::to_owned));
        for (i, s) in self.df.stages.iter().enumerate() {
            let r = lines(s.start_line, s.end_line);
            let m = self.lexer.process_word_with_matches(&s.base, global);
            if let Ok(m) = &m {
                self.undeclared_from_args(&m.unmatched, &known, &r);
            }
            let m = m.map_err(|e| err(e.message(), &r))?;
            if m.word.is_empty() {
                return Err(err(
                    format!("base name ({}) should not be blank", s.base),
                    &r,
                ));
            }
            let mut platform = None;
            if let Some(p) = &s.platform {
                let pm = self.lexer.process_word_with_matches(p, global);
                if let Ok(pm) = &pm {
                    self.undeclared_from_args(&pm.unmatched, &known, &r);
                    self.platform_checks(s, p, pm, global, &r);
                }
                let pm = pm.map_err(|e| {
                    err(
                        format!(
                            "failed to process arguments for platform {p}: {}",
                            e.message()
                        ),
                        &r,
                    )
                })?;
                let suggestion = || {
                    pm.unmatched.iter().find_map(|u| {
                        suggest::search(u, global.keys()).map(|s| format!(" (did you mean {s}?)"))
                    })
                };
                if pm.word.is_empty() {
                    return Err(err(
                        format!(
                            "empty platform value from expression {p}{}",
                            suggestion().unwrap_or_default()
                        ),
                        &r,
                    ));
                }
                let parsed = platform::parse(&pm.word).map_err(|e| {
                    err(
                        format!(
                            "failed to parse platform {p}: {e}{}",
                            suggestion().unwrap_or_default()
                        ),
                        &r,
                    )
                })?;
                platform = Some(parsed);
            }
            let base = self.by_name.get(&m.word).copied();
            let name = s.name.clone().unwrap_or_else(|| format!("stage-{i}"));
            if let Some(n) = &s.name {
                self.by_name.insert(n.to_lowercase(), self.states.len());
            }
            self.states.push(State {
                stage: Some(s),
                name,
                base_name: m.word,
                base,
                platform,
                ranges: r,
                deps: Vec::new(),
                image: None,
                dispatched: false,
                result: None,
            });
        }
        Ok(())
    }

    /// `reportRedundantTargetPlatform` and `reportConstPlatformDisallowed`.
    fn platform_checks(
        &mut self,
        s: &kiln_parser::Stage,
        raw: &str,
        m: &kiln_parser::shell::Expansion,
        global: &EnvList,
        r: &[Range],
    ) {
        if m.matched.len() == 1
            && m.unmatched.is_empty()
            && m.matched.contains("TARGETPLATFORM")
            && global.get("TARGETPLATFORM").unwrap_or("") == m.word
        {
            self.lint.run(
                &rules::REDUNDANT_TARGET_PLATFORM,
                r,
                rules::redundant_target_platform(raw),
            );
        }
        if !m.matched.is_empty() || !m.unmatched.is_empty() {
            return;
        }
        let Ok(p) = platform::parse(&m.word) else {
            return;
        };
        let name = s.name.as_deref().unwrap_or("");
        if name.contains(&p.os) || name.contains(&p.architecture) {
            return;
        }
        self.lint.run(
            &rules::FROM_PLATFORM_FLAG_CONST_DISALLOWED,
            r,
            rules::from_platform_flag_const_disallowed(&m.word),
        );
    }

    fn resolve_target(&self) -> Result<usize, BuildError> {
        let Some(t) = &self.opts.target else {
            return Ok(self.states.len() - 1);
        };
        if let Some(i) = self.by_name.get(&t.to_lowercase()) {
            return Ok(*i);
        }
        let mut msg = format!("target stage {} could not be found", rules::go_q(t));
        if let Some(s) = suggest::search(t, self.states.iter().map(|s| s.name.as_str())) {
            let _ = write!(msg, " (did you mean {s}?)");
        }
        Err(err(msg, &[]))
    }

    /// The stage (or image) a `--from` names; images become states of their own.
    fn source_state(&mut self, from: &str, r: &[Range]) -> Result<usize, BuildError> {
        if let Ok(index) = from.parse::<i64>() {
            return usize::try_from(index)
                .ok()
                .filter(|i| *i < self.states.len())
                .ok_or_else(|| err(format!("invalid stage index {index}"), r));
        }
        if let Some(i) = self.by_name.get(&from.to_lowercase()) {
            return Ok(*i);
        }
        self.states.push(State {
            stage: None,
            name: String::new(),
            base_name: from.to_owned(),
            base: None,
            platform: None,
            ranges: r.to_vec(),
            deps: Vec::new(),
            image: None,
            dispatched: false,
            result: None,
        });
        Ok(self.states.len() - 1)
    }

    /// `buildStageDependencyGraph`: `COPY --from` and `RUN --mount=from=` sources.
    fn dependencies(&mut self) -> Result<(), BuildError> {
        let n = self.states.len();
        for i in 0..n {
            let Some(stage) = self.states[i].stage else {
                continue;
            };
            for l in &stage.instructions {
                let r = located(l);
                let froms: Vec<String> = match &l.instruction {
                    Instruction::Copy(c) => match &c.from {
                        Some(f) => {
                            let expanded = self
                                .lexer
                                .process_word(f, &kiln_parser::shell::NoEnv)
                                .map_err(|e| err(e.message(), &r))?;
                            if expanded != *f {
                                return Err(err(
                                    "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
                                    &r,
                                ));
                            }
                            vec![f.clone()]
                        }
                        None => Vec::new(),
                    },
                    Instruction::Run(run) => run
                        .mounts
                        .iter()
                        .filter_map(|m| kiln_parser::RunMount::parse(m).ok()?.from)
                        .collect(),
                    _ => Vec::new(),
                };
                for f in froms {
                    let d = self.source_state(&f, &r)?;
                    if !self.states[i].deps.contains(&d) {
                        self.states[i].deps.push(d);
                    }
                }
            }
        }
        Ok(())
    }

    fn reachable(&self, target: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if !seen.insert(i) {
                continue;
            }
            todo.extend(self.states[i].base);
            todo.extend(self.states[i].deps.iter().copied());
        }
        seen
    }

    /// `resolveReachableStages`: base images looked up (when a resolver is given) and their
    /// platform checked against the stage's.
    fn resolve_images(&mut self, reachable: &BTreeSet<usize>) {
        let target = Platform::linux_amd64();
        for i in 0..self.states.len() {
            let st = &self.states[i];
            if st.base.is_some() || st.base_name == "scratch" {
                continue;
            }
            if !(self.opts.all_stages || reachable.contains(&i)) {
                continue;
            }
            let expected = st.platform.clone().unwrap_or_else(|| target.clone());
            let image = self
                .opts
                .base_images
                .and_then(|b| b.resolve(&st.base_name, &expected));
            if let Some(img) = &image
                && img.has_layers
                && (img.platform.os != expected.os
                    || img.platform.architecture != expected.architecture)
            {
                let detail = rules::invalid_base_image_platform(
                    &st.base_name,
                    &expected.format(),
                    &img.platform.format(),
                );
                let r = st.ranges.clone();
                self.lint
                    .run(&rules::INVALID_BASE_IMAGE_PLATFORM, &r, detail);
            }
            let st = &mut self.states[i];
            st.image = image;
            if st.stage.is_none() {
                st.dispatched = true;
            }
        }
    }

    fn dispatch_all(
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
        let cleaned = clean_path(src);
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

/// Go's `filepath.Clean` for slash-separated paths.
fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|x| *x != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            x => out.push(x),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
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

#[cfg(test)]
mod tests {
    use super::clean_path;

    #[test]
    fn clean_like_go() {
        assert_eq!(clean_path("./a//b/../c/"), "a/c");
        assert_eq!(clean_path("/"), "/");
        assert_eq!(clean_path("."), ".");
        assert_eq!(clean_path("/../x"), "/x");
    }
}
