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

mod entry;
mod env;
mod instruction;
mod merge;

pub(crate) use entry::plan;
pub(crate) use env::EnvList;
pub(crate) use merge::{Merged, merge};

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
    /// The platform the command runs as (its stage's): part of the key.
    pub(crate) platform: Platform,
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
    /// Index of the stage in the plan (the Dockerfile's, offset per platform once merged).
    pub(crate) stage: usize,
    /// Index of the stage in the Dockerfile.
    pub(crate) file_stage: usize,
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
    /// The platform the stage's steps run as: `FROM --platform`, else the target's.
    pub(crate) platform: Platform,
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
    /// The platform each of [`Plan::images`] was resolved for.
    pub(crate) image_platforms: Vec<Platform>,
    /// The platform the target is built for (TARGETPLATFORM).
    pub(crate) platform: Platform,
    pub(crate) warnings: Vec<String>,
}

/// Resolves an image reference (pulling it) for a platform to its config.
pub(crate) type ImageResolver<'a> = dyn FnMut(&str, &Platform) -> Result<ImageConfig> + 'a;

/// The platforms of a build: where it runs and what it builds for.
#[derive(Debug, Clone)]
pub(crate) struct Platforms {
    /// BUILDPLATFORM: the machine the build runs on.
    pub(crate) build: Platform,
    /// TARGETPLATFORM.
    pub(crate) target: Platform,
    /// The target was asked for (`--platform`): the image's os/architecture are the target's
    /// whatever the base image says (BuildKit's `!implicitTarget`).
    pub(crate) explicit: bool,
}

impl Default for Platforms {
    fn default() -> Self {
        Self {
            build: Platform::linux_amd64(),
            target: Platform::linux_amd64(),
            explicit: false,
        }
    }
}

/// Inputs of planning besides the Dockerfile.
pub(crate) struct PlanInput<'a> {
    pub(crate) build_args: &'a [(String, String)],
    pub(crate) target: Option<&'a str>,
    pub(crate) no_cache: bool,
    pub(crate) no_cache_filter: &'a [String],
    pub(crate) network: NetworkMode,
    pub(crate) labels: &'a [(String, String)],
    pub(crate) platforms: Platforms,
}

#[derive(Debug, Clone)]
struct StageState {
    env: EnvList,
    config: ImageConfig,
    history_steps: Vec<Option<usize>>,
    build_args: Vec<(String, Option<String>)>,
    steps: Vec<usize>,
    platform: Platform,
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

    fn resolve_image(
        &mut self,
        reference: &str,
        platform: &Platform,
    ) -> Result<(usize, ImageConfig)> {
        if let Some(i) = (0..self.plan.images.len()).find(|&i| {
            self.plan.images[i].0 == reference && self.plan.image_platforms[i] == *platform
        }) {
            return Ok((i, self.plan.images[i].1.clone()));
        }
        let cfg = (self.resolve)(reference, platform)?;
        self.plan.images.push((reference.to_string(), cfg.clone()));
        self.plan.image_platforms.push(platform.clone());
        Ok((self.plan.images.len() - 1, cfg))
    }

    /// BuildKit's InvalidBaseImagePlatform warning: an image (one with no index entry for the
    /// platform is used whatever its own) whose os/architecture are not the ones asked for.
    fn check_base_platform(
        &mut self,
        name: &str,
        expected: &Platform,
        config: &ImageConfig,
        line: usize,
    ) {
        if config.os == expected.os && config.architecture == expected.architecture {
            return;
        }
        let actual = Platform::normalized(
            &config.os,
            &config.architecture,
            config.variant.as_deref().unwrap_or_default(),
        );
        let warning = format!(
            "InvalidBaseImagePlatform: Base image {name} was pulled with platform {:?}, expected \
             {:?} for current build (line {line})",
            actual.format_all(),
            expected.normalize().format_all()
        );
        if !self.plan.warnings.contains(&warning) {
            self.plan.warnings.push(warning);
        }
    }

    /// A stage's `FROM --platform`, expanded with the meta ARGs and parsed; `None` without it.
    fn stage_platform(&self, i: usize) -> Result<Option<Platform>> {
        let st = &self.df.stages[i];
        let Some(raw) = &st.platform else {
            return Ok(None);
        };
        let line = st.start_line;
        let value = self.word(raw, &self.global, line)?;
        if value.is_empty() {
            return Err(Error::Plan {
                line,
                message: format!("empty platform value from expression {raw}"),
            });
        }
        Platform::parse(&value).map(Some).map_err(|e| Error::Plan {
            line,
            message: format!("failed to parse platform {raw}: {e}"),
        })
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
        let platform = self
            .stage_platform(i)?
            .unwrap_or_else(|| self.input.platforms.target.clone());
        let (base, mut state) = if let Some(b) = base_stage {
            self.stage(b)?;
            let mut s = self.finals[b].clone().ok_or_else(|| Error::Plan {
                line,
                message: "base stage not planned".into(),
            })?;
            s.steps = Vec::new();
            (BaseRef::Stage(b), s)
        } else if base_name.eq_ignore_ascii_case("scratch") {
            // As BuildKit: scratch is always the target platform, whatever `--platform` says.
            let target = self.input.platforms.target.clone();
            let mut cfg = ImageConfig::new(&target);
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
                    platform: target,
                },
            )
        } else {
            let resolved = self.resolve_image(&base_name, &platform);
            let (idx, mut cfg) = resolved.map_err(|e| Error::Plan {
                line,
                message: format!("{base_name}: {}", e.report()),
            })?;
            self.check_base_platform(&base_name, &platform, &cfg, line);
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
                    platform,
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
            platform: state.platform.clone(),
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
            file_stage: stage,
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
        // An image named by `--from` is resolved for the target, as BuildKit does.
        let target = self.input.platforms.target.clone();
        let (idx, cfg) = self.resolve_image(from, &target).map_err(|e| Error::Plan {
            line,
            message: format!("{from}: {}", e.report()),
        })?;
        self.check_base_platform(from, &target, &cfg, line);
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

#[cfg(test)]
mod tests;
