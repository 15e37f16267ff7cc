//! Stage dispatch for the checks, as BuildKit's `buildDispatchStates`, `resolveStages` and
//! `dispatchStages` do it: FROM names and platforms expanded with the global ARGs, the target
//! and the stages it needs, base images looked up, then each stage's instructions run in order
//! against its environment (base image config, ENV, ARG), which is where variable, ENV/LABEL,
//! ARG, CMD/ENTRYPOINT, WORKDIR, COPY and EXPOSE checks fire. Nothing is built: only what the
//! checks need is tracked. This file resolves the stages; `instructions.rs` dispatches their
//! instructions.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use kiln_parser::shell::Lexer;
use kiln_parser::{Dockerfile, Instruction};

use crate::engine::{Linter, NodeNames, err, lines, located};
use crate::platform::{self, Platform};
use crate::rules;
use crate::{BaseImage, BuildError, CheckOptions, Range, reference, suggest};

mod instructions;

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
}
