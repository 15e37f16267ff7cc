//! Planning: a parsed Dockerfile + build args + target → the stages the target needs, each as a
//! chain of filesystem steps (RUN, COPY/ADD, WORKDIR's mkdir) and a folded image config, with
//! BuildKit's dockerfile2llb semantics: meta ARGs only in FROM unless re-declared, ARG/ENV
//! scoping and expansion, ONBUILD triggers, `COPY --from` by name, index or image, RUN mount
//! sources, history entries in BuildKit's wording.
//!
//! Stages are planned on demand from the target (recursively through bases and `--from`
//! sources), so a stage nothing needs is never planned, resolved or run. Base images are
//! resolved through a caller-supplied function (the build pulls them).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use kiln_image::{HealthConfig, History, ImageConfig, Platform};
use kiln_parser::shell::Lexer;
use kiln_parser::{Command, Healthcheck, Instruction, Located, MountType, RunMount};

use crate::dockerignore::clean;
use crate::error::{Error, Result};
use crate::request::NetworkMode;

mod instruction;

/// The default shell of Linux images.
pub(crate) fn default_shell() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into()]
}

/// The default PATH BuildKit puts in images without one.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// An ordered environment where setting a key replaces it in place (llb's `AddEnv`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EnvList(pub(crate) Vec<(String, String)>);

impl EnvList {
    pub(crate) fn set(&mut self, k: &str, v: &str) {
        if let Some(e) = self.0.iter_mut().find(|(key, _)| key == k) {
            e.1 = v.to_string();
        } else {
            self.0.push((k.to_string(), v.to_string()));
        }
    }

    /// `set` for every pair in order, in time linear in both lists (ENV with many pairs).
    pub(crate) fn set_all(&mut self, pairs: &[(String, String)]) {
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        for (i, (k, _)) in self.0.iter().enumerate() {
            index.entry(k.clone()).or_insert(i);
        }
        for (k, v) in pairs {
            if let Some(&i) = index.get(k) {
                self.0[i].1.clone_from(v);
            } else {
                index.insert(k.clone(), self.0.len());
                self.0.push((k.clone(), v.clone()));
            }
        }
    }

    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    fn from_strings(list: &[String]) -> Self {
        let mut e = Self::default();
        for s in list {
            let (k, v) = s.split_once('=').unwrap_or((s.as_str(), ""));
            e.set(k, v);
        }
        e
    }
}

/// Where a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BaseRef {
    Scratch,
    /// Index into [`Plan::images`].
    Image(usize),
    /// File index of an earlier stage.
    Stage(usize),
}

/// Where COPY takes files from, or what a RUN mount shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceRef {
    Context,
    Stage(usize),
    Image(usize),
}

/// One RUN mount and where its files come from.
#[derive(Debug, Clone)]
pub(crate) struct MountPlan {
    pub(crate) mount: RunMount,
    /// For bind mounts and seeded cache mounts.
    pub(crate) source: Option<SourceRef>,
}

/// A RUN step.
#[derive(Debug, Clone)]
pub(crate) struct RunOp {
    pub(crate) args: Vec<String>,
    /// The environment the command sees (part of the cache key).
    pub(crate) env: Vec<String>,
    /// Proxy variables from build args: passed to the process, kept out of the key and image.
    pub(crate) proxy_env: Vec<String>,
    pub(crate) user: String,
    pub(crate) cwd: String,
    pub(crate) network: NetworkMode,
    pub(crate) mounts: Vec<MountPlan>,
    /// A heredoc script shown at `/dev/pipes/NAME` (shebang heredocs).
    pub(crate) script: Option<(String, Vec<u8>)>,
}

/// A COPY or ADD step.
#[derive(Debug, Clone)]
pub(crate) struct CopyOp {
    pub(crate) add: bool,
    pub(crate) from: SourceRef,
    pub(crate) sources: Vec<String>,
    pub(crate) inline: Vec<(String, Vec<u8>)>,
    pub(crate) dest: String,
    pub(crate) chown: Option<String>,
    pub(crate) chmod: Option<String>,
    pub(crate) parents: bool,
    pub(crate) exclude: Vec<String>,
    pub(crate) link: bool,
    pub(crate) unpack: bool,
    /// ADD of http(s) URLs: downloaded, never unpacked unless `--unpack`.
    pub(crate) urls: Vec<String>,
    /// ADD `--checksum` (`sha256:...`) of the single URL source.
    pub(crate) checksum: Option<String>,
}

/// What a filesystem step does.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Run(RunOp),
    Copy(CopyOp),
    /// WORKDIR: create the directory (owned by `user`).
    Mkdir {
        path: String,
        user: String,
    },
}

/// One filesystem step.
#[derive(Debug, Clone)]
pub(crate) struct StepPlan {
    /// File index of the stage.
    pub(crate) stage: usize,
    pub(crate) line: usize,
    /// The instruction as written, for progress and errors.
    pub(crate) instruction: String,
    pub(crate) op: Op,
    /// `--no-cache` / `--no-cache-filter` applies.
    pub(crate) no_cache: bool,
}

/// A planned stage.
#[derive(Debug, Clone)]
pub(crate) struct StagePlan {
    pub(crate) name: String,
    pub(crate) base: BaseRef,
    /// Indices into [`Plan::steps`], in order.
    pub(crate) steps: Vec<usize>,
    /// The image config after every instruction.
    pub(crate) config: ImageConfig,
    /// For each history entry, the step that made it (None: base image or config-only).
    pub(crate) history_steps: Vec<Option<usize>>,
}

/// The whole plan.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Indexed by file stage index; `None` for stages the target does not need.
    pub(crate) stages: Vec<Option<StagePlan>>,
    pub(crate) target: usize,
    pub(crate) steps: Vec<StepPlan>,
    /// Image references resolved for FROM and `--from`, with their configs.
    pub(crate) images: Vec<(String, ImageConfig)>,
    pub(crate) warnings: Vec<String>,
}

/// Resolves an image reference (pulling it) to its config.
pub(crate) type ImageResolver<'a> = dyn FnMut(&str) -> Result<ImageConfig> + 'a;

/// Inputs of planning besides the Dockerfile.
pub(crate) struct PlanInput<'a> {
    pub(crate) build_args: &'a [(String, String)],
    pub(crate) target: Option<&'a str>,
    pub(crate) no_cache: bool,
    pub(crate) no_cache_filter: &'a [String],
    pub(crate) network: NetworkMode,
    pub(crate) labels: &'a [(String, String)],
}

#[derive(Debug, Clone)]
struct StageState {
    env: EnvList,
    config: ImageConfig,
    history_steps: Vec<Option<usize>>,
    build_args: Vec<(String, Option<String>)>,
    steps: Vec<usize>,
}

struct Planner<'a, 'r> {
    _r: std::marker::PhantomData<&'r ()>,
    df: &'a kiln_parser::Dockerfile,
    lex: Lexer,
    input: &'a PlanInput<'a>,
    resolve: &'a mut ImageResolver<'a>,
    global: EnvList,
    used_args: BTreeSet<String>,
    plan: Plan,
    finals: Vec<Option<StageState>>,
    in_progress: Vec<bool>,
}

fn platform() -> Platform {
    Platform::linux_amd64()
}

/// Normalises a destination against the working directory, keeping a trailing `/` (BuildKit's
/// `pathRelativeToWorkingDir`).
pub(crate) fn dest_path(workdir: &str, p: &str) -> String {
    let keep = p.ends_with('/') || p.ends_with("/.") || p == "." || p.is_empty();
    let joined = if p.starts_with('/') {
        clean(p)
    } else {
        clean(&format!(
            "{}/{}",
            if workdir.is_empty() { "/" } else { workdir },
            p
        ))
    };
    if keep && joined != "/" {
        format!("{joined}/")
    } else {
        joined
    }
}

impl Planner<'_, '_> {
    fn word(&self, w: &str, env: &EnvList, line: usize) -> Result<String> {
        self.lex.process_word(w, &env.0).map_err(|e| Error::Plan {
            line,
            message: e.message().to_string(),
        })
    }

    fn words(&self, w: &str, env: &EnvList, line: usize) -> Result<Vec<String>> {
        self.lex.process_words(w, &env.0).map_err(|e| Error::Plan {
            line,
            message: e.message().to_string(),
        })
    }

    fn stage_index(&self, name: &str) -> Option<usize> {
        let lower = name.to_lowercase();
        self.df
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
    }

    fn resolve_image(&mut self, reference: &str) -> Result<(usize, ImageConfig)> {
        if let Some(i) = self.plan.images.iter().position(|(r, _)| r == reference) {
            return Ok((i, self.plan.images[i].1.clone()));
        }
        let cfg = (self.resolve)(reference)?;
        self.plan.images.push((reference.to_string(), cfg.clone()));
        Ok((self.plan.images.len() - 1, cfg))
    }

    /// Plans stage `i` (and, first, everything it needs).
    fn stage(&mut self, i: usize) -> Result<()> {
        if self.finals[i].is_some() {
            return Ok(());
        }
        if self.in_progress[i] {
            return Err(Error::Plan {
                line: self.df.stages[i].start_line,
                message: "circular dependency between stages".into(),
            });
        }
        self.in_progress[i] = true;
        let st = &self.df.stages[i];
        let line = st.start_line;
        let base_name = self.word(&st.base, &self.global.clone(), line)?;
        if base_name.is_empty() {
            return Err(Error::Plan {
                line,
                message: format!("base name ({}) should not be blank", st.base),
            });
        }
        let name = st.name.clone().unwrap_or_else(|| i.to_string());
        let stage_no_cache = self.input.no_cache
            || self
                .input
                .no_cache_filter
                .iter()
                .any(|f| f.eq_ignore_ascii_case(&name));
        let base_stage = self.stage_index(&base_name).filter(|&b| b < i);
        let (base, mut state) = if let Some(b) = base_stage {
            self.stage(b)?;
            let mut s = self.finals[b].clone().ok_or_else(|| Error::Plan {
                line,
                message: "base stage not planned".into(),
            })?;
            s.steps = Vec::new();
            (BaseRef::Stage(b), s)
        } else if base_name.eq_ignore_ascii_case("scratch") {
            let mut cfg = ImageConfig::new(&platform());
            cfg.config.working_dir = Some("/".into());
            cfg.config.env = Some(vec![format!("PATH={DEFAULT_PATH}")]);
            let env = EnvList::from_strings(cfg.config.env.as_deref().unwrap_or(&[]));
            (
                BaseRef::Scratch,
                StageState {
                    env,
                    config: cfg,
                    history_steps: Vec::new(),
                    build_args: Vec::new(),
                    steps: Vec::new(),
                },
            )
        } else {
            let (idx, mut cfg) = self.resolve_image(&base_name).map_err(|e| Error::Plan {
                line,
                message: format!("{base_name}: {e}"),
            })?;
            cfg.created = None;
            let hist = cfg.history.len();
            let env = EnvList::from_strings(cfg.config.env.as_deref().unwrap_or(&[]));
            (
                BaseRef::Image(idx),
                StageState {
                    env,
                    config: cfg,
                    history_steps: vec![None; hist],
                    build_args: Vec::new(),
                    steps: Vec::new(),
                },
            )
        };
        // PATH is always set.
        if state.env.get("PATH").is_none() {
            state.env.set("PATH", DEFAULT_PATH);
            let mut e = state.config.config.env.clone().unwrap_or_default();
            e.push(format!("PATH={DEFAULT_PATH}"));
            state.config.config.env = Some(e);
        }
        // ONBUILD triggers of the base run first, and do not carry over.
        let triggers = state.config.config.on_build.take().unwrap_or_default();
        let mut instructions: Vec<(Located, bool)> = Vec::new();
        for t in &triggers {
            let mut loc =
                kiln_parser::parse_instruction(t, self.df.escape).map_err(|e| Error::Plan {
                    line,
                    message: format!("onbuild trigger `{t}`: {}", e.message()),
                })?;
            loc.start_line = line;
            loc.end_line = line;
            instructions.push((loc, true));
        }
        instructions.extend(
            self.df.stages[i]
                .instructions
                .iter()
                .cloned()
                .map(|l| (l, false)),
        );
        let mut cmd_set = false;
        for (loc, onbuild) in &instructions {
            self.instruction(
                i,
                &name,
                loc,
                *onbuild,
                &mut state,
                &mut cmd_set,
                stage_no_cache,
            )?;
        }
        self.plan.stages[i] = Some(StagePlan {
            name,
            base,
            steps: state.steps.clone(),
            config: state.config.clone(),
            history_steps: state.history_steps.clone(),
        });
        self.finals[i] = Some(state);
        self.in_progress[i] = false;
        Ok(())
    }

    fn history(state: &mut StageState, created_by: String, step: Option<usize>) {
        let mut by = created_by;
        if step.is_some() {
            by.push_str(" # buildkit");
        }
        state.config.history.push(History {
            created: None,
            created_by: Some(by),
            author: None,
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: step.is_none(),
        });
        state.history_steps.push(step);
    }

    fn add_step(
        &mut self,
        state: &mut StageState,
        stage: usize,
        loc: &Located,
        onbuild: bool,
        op: Op,
        no_cache: bool,
    ) -> usize {
        let instruction = if onbuild {
            format!("ONBUILD {}", loc.original)
        } else {
            loc.original.clone()
        };
        self.plan.steps.push(StepPlan {
            stage,
            line: loc.start_line,
            instruction,
            op,
            no_cache,
        });
        let idx = self.plan.steps.len() - 1;
        state.steps.push(idx);
        idx
    }

    fn source_ref(&mut self, from: &str, stage: usize, line: usize) -> Result<SourceRef> {
        let by_name = self.stage_index(from);
        let by_index = from.parse::<usize>().ok();
        let target = by_name.or(by_index.filter(|_| by_name.is_none()));
        if let Some(t) = target {
            if t >= self.df.stages.len() {
                return Err(Error::Plan {
                    line,
                    message: format!("invalid stage index {t}"),
                });
            }
            if t >= stage {
                return Err(Error::Plan {
                    line,
                    message: format!(
                        "cannot copy from stage {from:?}, it needs to be defined before current stage"
                    ),
                });
            }
            self.stage(t)?;
            return Ok(SourceRef::Stage(t));
        }
        let (idx, _) = self.resolve_image(from).map_err(|e| Error::Plan {
            line,
            message: format!("{from}: {e}"),
        })?;
        Ok(SourceRef::Image(idx))
    }

    fn workdir(state: &StageState) -> String {
        state
            .config
            .config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    }

    fn shell(state: &StageState) -> Vec<String> {
        state
            .config
            .config
            .shell
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(default_shell)
    }

    fn build_arg(&self, key: &str) -> Option<&str> {
        self.input
            .build_args
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Plans a build. `resolve` pulls an image and returns its config.
pub(crate) fn plan<'a>(
    df: &'a kiln_parser::Dockerfile,
    input: &'a PlanInput<'a>,
    resolve: &'a mut ImageResolver<'a>,
) -> Result<Plan> {
    if df.stages.is_empty() {
        return Err(Error::Plan {
            line: 0,
            message: "dockerfile contains no stages to build".into(),
        });
    }
    let lex = Lexer::new(df.escape);
    let target = match input.target {
        Some(t) if !t.is_empty() => {
            let lower = t.to_lowercase();
            df.stages
                .iter()
                .position(|s| s.name.as_deref() == Some(lower.as_str()))
                .ok_or_else(|| Error::Plan {
                    line: 0,
                    message: format!("target stage {t:?} could not be found"),
                })?
        }
        _ => df.stages.len() - 1,
    };
    // Builtin platform args, then the meta ARGs (build args override their defaults).
    let mut global = EnvList::default();
    for (k, v) in [
        ("BUILDPLATFORM", "linux/amd64"),
        ("BUILDOS", "linux"),
        ("BUILDARCH", "amd64"),
        ("BUILDVARIANT", ""),
        ("TARGETPLATFORM", "linux/amd64"),
        ("TARGETOS", "linux"),
        ("TARGETARCH", "amd64"),
        ("TARGETVARIANT", ""),
    ] {
        global.set(k, v);
    }
    let mut used_args = BTreeSet::new();
    for g in &df.global {
        if let Instruction::Arg(decls) = &g.instruction {
            for d in decls {
                let v = match input.build_args.iter().rev().find(|(k, _)| *k == d.name) {
                    Some((_, v)) => Some(v.clone()),
                    None => match &d.default {
                        Some(def) => {
                            Some(lex.process_word(def, &global.0).map_err(|e| Error::Plan {
                                line: g.start_line,
                                message: e.message().to_string(),
                            })?)
                        }
                        None => None,
                    },
                };
                if let Some(v) = v {
                    global.set(&d.name, &v);
                }
                used_args.insert(d.name.clone());
            }
        }
    }
    let n = df.stages.len();
    let mut p = Planner {
        _r: std::marker::PhantomData,
        df,
        lex,
        input,
        resolve,
        global,
        used_args,
        plan: Plan {
            stages: vec![None; n],
            target,
            steps: Vec::new(),
            images: Vec::new(),
            warnings: Vec::new(),
        },
        finals: vec![None; n],
        in_progress: vec![false; n],
    };
    p.stage(target)?;
    let mut unused: Vec<String> = input
        .build_args
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| {
            !p.used_args.contains(k)
                && !PROXY_ARGS.contains(&k.as_str())
                && k != "SOURCE_DATE_EPOCH"
                && !k.starts_with("BUILDKIT_")
                && p.global.get(k).is_none()
        })
        .collect();
    unused.sort();
    unused.dedup();
    if !unused.is_empty() {
        p.plan.warnings.push(format!(
            "[Warning] One or more build-args [{}] were not consumed",
            unused.join(" ")
        ));
    }
    let mut plan = p.plan;
    if let Some(Some(t)) = plan.stages.get_mut(target)
        && !input.labels.is_empty()
    {
        let mut labels = t.config.config.labels.clone().unwrap_or_default();
        for (k, v) in input.labels {
            labels.insert(k.clone(), v.clone());
        }
        t.config.config.labels = Some(labels);
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base_config() -> ImageConfig {
        let mut c = ImageConfig::new(&Platform::linux_amd64());
        c.config.env = Some(vec!["PATH=/bin".into()]);
        c.config.cmd = Some(vec!["sh".into()]);
        c.config.on_build = Some(vec!["RUN echo trig".into()]);
        c
    }

    fn plan_of(src: &str, args: &[(&str, &str)], target: Option<&str>) -> Result<Plan> {
        let df = kiln_parser::parse(src.as_bytes()).map_err(Error::Parse)?;
        let args: Vec<(String, String)> = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let input = PlanInput {
            build_args: &args,
            target,
            no_cache: false,
            no_cache_filter: &[],
            network: NetworkMode::Default,
            labels: &[],
        };
        let mut resolver = |r: &str| -> Result<ImageConfig> {
            if r.contains("missing") {
                return Err(Error::Image {
                    what: r.into(),
                    message: "not found".into(),
                });
            }
            let mut c = base_config();
            if !r.contains("onbuild") {
                c.config.on_build = None;
            }
            Ok(c)
        };
        plan(&df, &input, &mut resolver)
    }

    fn run_env(p: &Plan, step: usize) -> Vec<String> {
        match &p.steps[step].op {
            Op::Run(r) => r.env.clone(),
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn arg_env_precedence_and_scope() {
        let p = plan_of(
            "ARG TAG=latest\nARG GLOBAL=g1\nFROM img:${TAG}\nARG GLOBAL\nARG LOCAL=l1\nARG X=arg\nENV X=env\nARG Y\nRUN echo\n",
            &[("X", "cli"), ("UNUSED", "1")],
            None,
        )
        .expect("plan");
        let env = run_env(&p, 0);
        assert!(env.contains(&"GLOBAL=g1".to_string()), "{env:?}");
        assert!(env.contains(&"LOCAL=l1".to_string()));
        assert!(env.contains(&"X=env".to_string()));
        assert!(
            !env.iter()
                .any(|e| e.starts_with("TAG=") || e.starts_with("Y="))
        );
        assert_eq!(p.images[0].0, "img:latest");
        assert_eq!(
            p.warnings,
            vec!["[Warning] One or more build-args [UNUSED] were not consumed".to_string()]
        );
    }

    #[test]
    fn env_same_line_sees_old_value_and_config_folds() {
        let p = plan_of(
            "FROM img\nENV X=old\nENV X=new Y=$X\nLABEL a=$Y\nENTRYPOINT [\"/bin/cat\"]\n",
            &[],
            None,
        )
        .expect("plan");
        let cfg = &p.stages[0].as_ref().expect("stage").config;
        assert_eq!(
            cfg.config
                .labels
                .as_ref()
                .and_then(|l| l.get("a"))
                .map(String::as_str),
            Some("old")
        );
        assert!(
            cfg.config
                .env
                .as_ref()
                .expect("env")
                .contains(&"Y=old".to_string())
        );
        assert_eq!(cfg.config.cmd, None, "ENTRYPOINT clears the base CMD");
        assert!(cfg.history.iter().all(|h| h.empty_layer));
    }

    #[test]
    fn only_needed_stages_and_target() {
        let src = "FROM img AS broken\nRUN exit 7\nFROM img AS a\nRUN echo a\nFROM a AS b\nRUN echo b\nFROM img\nCOPY --from=b /x /x\n";
        let p = plan_of(src, &[], None).expect("plan");
        assert!(p.stages[0].is_none(), "unused stage not planned");
        assert!(p.stages[1].is_some() && p.stages[2].is_some());
        let p = plan_of(src, &[], Some("a")).expect("plan");
        assert_eq!(p.target, 1);
        assert!(p.stages[2].is_none() && p.stages[3].is_none());
        assert!(
            plan_of(src, &[], Some("nope"))
                .expect_err("unknown target")
                .to_string()
                .contains("could not be found")
        );
    }

    #[test]
    fn workdir_and_copy_dest_paths() {
        let p = plan_of("FROM img\nWORKDIR /a\nWORKDIR b\nWORKDIR ../c\nCOPY x rel.txt\nCOPY x .\nCOPY x y /multi/\n", &[], None).expect("plan");
        let cfg = &p.stages[0].as_ref().expect("stage").config;
        assert_eq!(cfg.config.working_dir.as_deref(), Some("/a/c"));
        let dests: Vec<String> = p
            .steps
            .iter()
            .filter_map(|s| match &s.op {
                Op::Copy(c) => Some(c.dest.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(dests, vec!["/a/c/rel.txt", "/a/c/", "/multi/"]);
        let err = plan_of("FROM img\nCOPY a b /notdir\n", &[], None).expect_err("multi to file");
        assert!(err.to_string().contains("Dockerfile:2"), "{err}");
    }

    #[test]
    fn onbuild_triggers_run_first() {
        let p = plan_of("FROM img-onbuild\nRUN echo mine\n", &[], None).expect("plan");
        assert_eq!(p.steps.len(), 2);
        assert!(p.steps[0].instruction.starts_with("ONBUILD RUN echo trig"));
        assert!(
            p.stages[0]
                .as_ref()
                .expect("stage")
                .config
                .config
                .on_build
                .is_none()
        );
    }

    #[test]
    fn shell_form_uses_shell_and_heredocs() {
        let p = plan_of(
            "FROM img\nSHELL [\"/bin/sh\", \"-ec\"]\nRUN echo $0\nRUN <<EOF\necho hi\nEOF\n",
            &[],
            None,
        )
        .expect("plan");
        match &p.steps[0].op {
            Op::Run(r) => assert_eq!(r.args, vec!["/bin/sh", "-ec", "echo $0"]),
            _ => panic!("run"),
        }
        match &p.steps[1].op {
            Op::Run(r) => assert_eq!(r.args, vec!["/bin/sh", "-ec", "echo hi\n"]),
            _ => panic!("run"),
        }
    }

    #[test]
    fn expose_ranges_and_healthcheck() {
        let p = plan_of("FROM img\nEXPOSE 80 53/udp 8000-8001\nHEALTHCHECK --interval=5s --retries=2 CMD true\n", &[], None).expect("plan");
        let cfg = &p.stages[0].as_ref().expect("stage").config.config;
        let ports: Vec<&str> = cfg
            .exposed_ports
            .as_ref()
            .expect("ports")
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(ports, vec!["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
        let hc = cfg.healthcheck.as_ref().expect("hc");
        assert_eq!(hc.test, vec!["CMD-SHELL", "true"]);
        assert_eq!((hc.interval, hc.retries), (5_000_000_000, 2));
    }

    #[test]
    fn meta_args_in_from_and_copy_from_rules() {
        let p = plan_of(
            "ARG TAG=1\nFROM img:$TAG AS a\nRUN echo $TAG\nFROM img\nCOPY --from=0 /x /x\n",
            &[("TAG", "2")],
            None,
        )
        .expect("plan");
        assert!(
            p.images.iter().any(|(r, _)| r == "img:2"),
            "build arg overrides the meta ARG in FROM: {:?}",
            p.images.iter().map(|i| &i.0).collect::<Vec<_>>()
        );
        assert!(
            !run_env(&p, 0).iter().any(|e| e.starts_with("TAG=")),
            "meta ARG not in scope unless re-declared"
        );
        let copy_from = p.steps.iter().find_map(|s| match &s.op {
            Op::Copy(c) => Some(c.from.clone()),
            _ => None,
        });
        assert_eq!(copy_from, Some(SourceRef::Stage(0)), "--from by index");
        let err = plan_of("FROM img AS a\nARG S=a\nCOPY --from=$S /x /x\n", &[], None)
            .expect_err("expansion in --from");
        assert!(
            err.to_string()
                .contains("variable expansion is not supported for --from"),
            "{err}"
        );
        let err = plan_of(
            "FROM img AS first\nCOPY --from=later /x /x\nFROM img AS later\nFROM img\nCOPY --from=first /y /y\n",
            &[],
            None,
        )
        .expect_err("later stage");
        assert!(err.to_string().contains("Dockerfile:2"), "{err}");
    }

    #[test]
    fn stage_inherits_env_args_and_onbuild_of_base_stage() {
        let p = plan_of("FROM img AS base\nARG A=1\nENV E=2\nONBUILD RUN echo trig\nFROM base\nRUN echo $A $E\n", &[], None)
            .expect("plan");
        assert_eq!(
            p.steps.len(),
            2,
            "the ONBUILD trigger runs in the child stage"
        );
        assert!(p.steps[0].instruction.starts_with("ONBUILD RUN echo trig"));
        let env = run_env(&p, 1);
        assert!(
            env.contains(&"A=1".to_string()) && env.contains(&"E=2".to_string()),
            "{env:?}"
        );
        assert!(
            p.stages[1]
                .as_ref()
                .expect("stage")
                .config
                .config
                .on_build
                .is_none()
        );
    }
}
