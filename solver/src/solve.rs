//! Running a plan: base images pulled and unpacked into snapshots, one DAG vertex per image and
//! per filesystem step, each step keyed (definition + input keys + content digests), looked up
//! in the cache store, or executed (RUN through kiln-executor, COPY/ADD/WORKDIR on a mounted
//! snapshot), committed, turned into a layer in the content store, and only then recorded.
//! The final stage becomes an image (config folded by the planner) and goes to the outputs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use kiln_executor as ex;
use kiln_image::{
    ContentStore, Descriptor, Digest, Image, ImageConfig, Platform, Reference, RegistryClient,
};
use kiln_snapshotter::{self as snap, Snapshotter};
use petgraph::graph::{DiGraph, NodeIndex};
use sha2::{Digest as _, Sha256};

use crate::cache::{CacheRecord, CacheStore, LayerRecord};
use crate::context::{ContentCache, SourceTree, digest_sources};
use crate::copy::{self, Chmod, CopyOptions, CopySource};
use crate::dockerignore::IgnoreMatcher;
use crate::error::{Error, Result, io_err};
use crate::explain;
use crate::key::CacheKey;
use crate::plan::{
    self, BaseRef, CopyOp, MountPlan, Op, Plan, PlanInput, RunOp, SourceRef, StepPlan,
};
use crate::progress::{LogStream, Progress, ProgressEvent, StepId};
use crate::remote_cache::{self, CacheEntry, Imported};
use crate::request::{
    BuildOutcome, BuildRequest, CacheExport, CacheSpec, Dockerfile, DockerfileText, NetworkMode,
    PlatformImage, SecretSource, SolverConfig,
};
use crate::scheduler::{CancelHandle, OnceMap, run_dag};
use crate::users;

mod commit;
mod download;
mod emulation;
mod execute;
mod export;
mod graph;
mod history;
mod image;
mod run;
mod step;
mod view;

use commit::cancel_all;
pub(crate) use graph::chain_ids;
use graph::{Dag, cache_entries, stage_tail, tsp_history};
pub(crate) use view::owned_temp_dir;
use view::{View, unique_key};

/// sha256 of an empty tar stream (two zero blocks): the diff_id of a step that changed nothing.
pub(crate) const EMPTY_TAR_DIFF_ID: &str =
    "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

/// Wraps a snapshotter error with what was being done.
pub(crate) fn snap_err(what: impl Into<String>) -> impl FnOnce(snap::Error) -> Error {
    let what = what.into();
    move |source| Error::Snapshot { what, source }
}

/// Wraps an image-crate error with what was being done.
pub(crate) fn img_err(what: impl Into<String>) -> impl FnOnce(kiln_image::Error) -> Error {
    let what = what.into();
    move |source| Error::ImageStore { what, source }
}

/// The engine: owns the content store, snapshotter, cache records and (lazily) the executor.
/// One solver can run many builds, also concurrently.
pub struct Solver {
    config: SolverConfig,
    store: ContentStore,
    pub(crate) snapshotter: Arc<dyn Snapshotter>,
    pub(crate) cache: CacheStore,
    executor: OnceLock<std::result::Result<ex::Executor, Arc<ex::Error>>>,
    registry: RegistryClient,
}

impl std::fmt::Debug for Solver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Solver")
            .field("state_dir", &self.config.state_dir)
            .finish_non_exhaustive()
    }
}

/// The filesystem a vertex produced.
#[derive(Debug, Clone)]
struct FsState {
    key: CacheKey,
    /// Committed snapshot; `None` for an empty filesystem (scratch).
    snapshot: Option<String>,
    /// Every layer of this filesystem, base first.
    layers: Vec<LayerRecord>,
    /// Whether this vertex's own layer is empty (for history's `empty_layer`).
    own_layer: Option<LayerRecord>,
    /// When this vertex's step really ran (RFC 3339, from its cache record): its history time.
    created: Option<String>,
    /// How the vertex is named when explaining a child's cache miss.
    label: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vertex {
    Image(usize),
    Step(usize),
}

/// Per-build state shared by the vertices.
struct BuildCtx<'a> {
    solver: &'a Solver,
    req: &'a BuildRequest,
    plan: &'a Plan,
    images: &'a [Image],
    context_root: PathBuf,
    ignore: IgnoreMatcher,
    content_cache: ContentCache,
    progress: &'a dyn Progress,
    vertex_of_step: Vec<NodeIndex>,
    vertex_of_image: Vec<NodeIndex>,
    step_ids: Vec<(usize, StepId)>,
    total: usize,
    /// Tokens of the running `RUN` processes, cancelled on the first failure or on
    /// [`CancelHandle::cancel`].
    cancel_tokens: Arc<Mutex<Vec<ex::CancelToken>>>,
    /// Set once the build is being cancelled (failure or caller): no new step starts.
    cancelled: Arc<AtomicBool>,
    once: OnceMap<CacheKey, FsState>,
    cached: AtomicUsize,
    ran: AtomicUsize,
    secrets: Vec<(String, Vec<u8>)>,
    imported: Imported,
    /// Set once the "no slirp4netns, host network" warning was shown.
    warned_host_network: AtomicBool,
    /// The build's tracing span, parent of every step's (steps run on pool threads).
    span: tracing::Span,
    /// Each step's last inputs, to explain a miss.
    explain: crate::explain::ExplainStore,
}

impl Solver {
    /// What makes this build slower or narrower than it could be, said once per build: the
    /// native snapshot driver chosen because overlayfs cannot be mounted, a rootless build
    /// with only one id mapped.
    fn environment_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(why) = self.snapshotter.native_fallback() {
            out.push(format!(
                "snapshots use the native driver (a full copy of the parent per step, slower \
                 than overlayfs): {why}"
            ));
        }
        if let Some(r) = kiln_userns::rootless()
            && let Some(why) = &r.single_id
        {
            out.push(format!(
                "rootless build with one id mapped ({why}): steps that need another id fail; {}",
                kiln_userns::subid_hint(r.user.as_deref())
            ));
        }
        out
    }

    /// Opens (creating) the state directory: content store, snapshots, cache records. What
    /// killed kiln processes left (temporary snapshots, mounts, directories, files) is removed.
    pub fn new(config: SolverConfig) -> Result<Self> {
        // An ordinary user builds in a user namespace (rootless); a no-op for root, for a
        // process already in one, and once entered. Needs a single-threaded process the first
        // time: the `kiln` binary enters at the top of `main`.
        kiln_userns::enter_rootless()?;
        std::fs::create_dir_all(&config.state_dir)
            .map_err(io_err("create directory", &config.state_dir))?;
        snap::remove_orphans(&config.state_dir.join("tmp"), "");
        // (ContentStore::open removes the ingest files of killed builds, see `write_layer`.)
        let snapshotter: Arc<dyn Snapshotter> =
            snap::open(&config.state_dir, config.snapshot_driver)
                .map_err(snap_err(config.state_dir.display().to_string()))?
                .into();
        // Step layers are deferred: written from their snapshots when first read.
        let store = ContentStore::open(&config.state_dir)
            .map_err(img_err("content store"))?
            .with_compress_threads(config.compress_threads)
            .with_blob_source(Arc::new(crate::deferred::SnapshotLayers::over(
                &config.state_dir,
                snapshotter.clone(),
            )));
        let cache = CacheStore::open(&config.state_dir)?;
        let registry = RegistryClient::new(config.registry_options(None));
        Ok(Self {
            config,
            store,
            snapshotter,
            cache,
            executor: OnceLock::new(),
            registry,
        })
    }

    /// A temporary directory under `<state_dir>/tmp`, named after this process (see
    /// [`owned_temp_dir`]).
    pub(crate) fn temp_dir(&self) -> Result<tempfile::TempDir> {
        owned_temp_dir(&self.config.state_dir.join("tmp"))
    }

    /// The content store builds write to.
    pub fn content_store(&self) -> &ContentStore {
        &self.store
    }

    /// The cache record store.
    pub fn cache_store(&self) -> &CacheStore {
        &self.cache
    }

    pub(crate) fn executor(&self) -> Result<&ex::Executor> {
        let r = self.executor.get_or_init(|| {
            let init = match &self.config.executor_init_binary {
                Some(p) => p.clone(),
                None => std::env::current_exe().map_err(|source| {
                    Arc::new(ex::Error::Io {
                        what: "find the current executable (the init of RUN steps)",
                        path: "/proc/self/exe".into(),
                        source,
                    })
                })?,
            };
            ex::Executor::new(ex::ExecutorConfig {
                init_binary: init,
                state_dir: self.config.state_dir.clone(),
            })
            .map_err(Arc::new)
        });
        r.as_ref().map_err(|source| Error::ExecutorSetup {
            source: source.clone(),
        })
    }

    fn jobs(&self) -> usize {
        if self.config.jobs > 0 {
            self.config.jobs
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        }
    }

    fn pull(&self, reference: &str, platform: &Platform, force: bool) -> Result<Image> {
        let r = Reference::parse(reference).map_err(img_err(reference))?;
        if !force && let Ok(img) = Image::resolve(&self.store, &r, platform) {
            return Ok(img);
        }
        let img = self
            .registry
            .pull(&self.store, &r, platform)
            .map_err(img_err(format!("pull {reference}")))?;
        if r.digest().is_none() {
            let _ = self.store.set_tag(
                &r,
                img.index_digest.as_ref().unwrap_or(&img.manifest_digest),
            );
        }
        Ok(img)
    }

    /// Runs a build: plan, execute (with the cache), write the image and the outputs.
    pub fn build(&self, req: &BuildRequest, progress: &dyn Progress) -> Result<BuildOutcome> {
        self.build_cancellable(req, progress, &CancelHandle::new())
    }

    /// [`Solver::build`], stopped early when `cancel` is cancelled (from another thread): no
    /// step starts after that, running `RUN` processes are killed, the build's mounts and
    /// temporary snapshots are released, `BuildFinished { success: false }` is reported, and
    /// the result is [`Error::Cancelled`].
    pub fn build_cancellable(
        &self,
        req: &BuildRequest,
        progress: &dyn Progress,
        cancel: &CancelHandle,
    ) -> Result<BuildOutcome> {
        let span = tracing::info_span!("build", context = %req.context.display());
        let _entered = span.enter();
        // Checked, read once (or taken as the caller read it) and parsed once before any work
        // starts and any event is sent: a syntax error is reported with its line alone.
        export::check_outputs(req)?;
        let dockerfile = req.dockerfile.read(&req.context)?;
        let df = kiln_parser::parse(dockerfile.text.as_bytes())
            .map_err(|e| Error::Parse(e.with_file(&dockerfile.name)))?;
        let started = Instant::now();
        let r = if cancel.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            self.build_inner(req, &dockerfile, &df, progress, cancel, &span)
        };
        let r = match r {
            Err(_) if cancel.is_cancelled() => Err(Error::Cancelled),
            other => other,
        };
        progress.event(&ProgressEvent::BuildFinished {
            success: r.is_ok(),
            elapsed: started.elapsed(),
        });
        r
    }

    fn build_inner(
        &self,
        req: &BuildRequest,
        dockerfile: &DockerfileText,
        df: &kiln_parser::Dockerfile,
        progress: &dyn Progress,
        cancel: &CancelHandle,
        span: &tracing::Span,
    ) -> Result<BuildOutcome> {
        let context_root = std::fs::canonicalize(&req.context)
            .map_err(io_err("open build context", &req.context))?;
        let ignore = IgnoreMatcher::for_build(&context_root, dockerfile.path.as_deref())?;
        // `--ssh default` without paths forwards the request's agent socket.
        let resolved;
        let req = if req.ssh.iter().any(|s| s.paths.is_empty()) {
            let mut r = req.clone();
            for s in r.ssh.iter_mut().filter(|s| s.paths.is_empty()) {
                s.paths.extend(req.ssh_auth_sock.iter().cloned());
            }
            resolved = r;
            &resolved
        } else {
            req
        };

        // Plan each target platform, pulling base images as the planner meets them, then lay
        // the plans side by side in one.
        let build_args: Vec<(String, String)> = req
            .build_args
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let labels: Vec<(String, String)> = req
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let target_platforms = req.target_platforms();
        let mut parts = Vec::new();
        for target in &target_platforms {
            let input = PlanInput {
                build_args: &build_args,
                target: req.target.as_deref(),
                no_cache: req.no_cache,
                no_cache_filter: &req.no_cache_filter,
                network: req.network,
                labels: &labels,
                platforms: plan::Platforms {
                    build: Platform::host(),
                    target: target.clone(),
                    explicit: !req.platforms.is_empty(),
                },
            };
            let mut images: Vec<Image> = Vec::new();
            let plan = {
                let mut resolver = |r: &str, platform: &Platform| -> Result<ImageConfig> {
                    let img = self.pull(r, platform, req.pull)?;
                    let cfg = img.config.clone();
                    images.push(img);
                    Ok(cfg)
                };
                plan::plan(df, &input, &mut resolver)?
            };
            parts.push((plan, images));
        }
        let plan::Merged {
            plan,
            images,
            targets,
        } = plan::merge(parts, df.stages.len(), |a: &Image, b: &Image| {
            a.manifest_digest == b.manifest_digest
        })
        .ok_or_else(|| Error::Plan {
            line: 0,
            message: "no platform to build for".into(),
        })?;
        emulation::check(&plan)?;
        for w in &plan.warnings {
            progress.event(&ProgressEvent::Warning { message: w.clone() });
        }

        let Dag {
            graph: g,
            vertex_of_image,
            vertex_of_step,
            step_ids,
        } = Dag::of(&plan, images.len(), df);
        let total = g.node_count();
        progress.event(&ProgressEvent::BuildStarted { total_steps: total });
        progress.event(&ProgressEvent::Environment {
            snapshot_driver: self.snapshotter.driver().name(),
            rootless: kiln_userns::in_user_namespace(),
        });
        for message in self.environment_warnings() {
            progress.event(&ProgressEvent::Warning { message });
        }
        for (flag, specs) in [
            ("--cache-from", &req.cache_from),
            ("--cache-to", &req.cache_to),
        ] {
            for spec in specs {
                let kind = match spec {
                    CacheSpec::Inline => "inline",
                    CacheSpec::Unsupported(k) => k.as_str(),
                    CacheSpec::Local { .. } | CacheSpec::Registry { .. } => continue,
                };
                progress.event(&ProgressEvent::Warning {
                    message: format!(
                        "`{flag} type={kind}` is not supported yet; kiln uses its local cache in the state directory"
                    ),
                });
            }
        }

        let mut secrets = Vec::new();
        for s in &req.secrets {
            let bytes = match &s.source {
                SecretSource::File(p) => std::fs::read(p).map_err(io_err("read secret", p))?,
                // Environment variables the caller named (never one the library picks).
                SecretSource::Env(v) => std::env::var(v).unwrap_or_default().into_bytes(),
                SecretSource::EnvOrFile(id) => match std::env::var_os(id) {
                    Some(v) => v.into_encoded_bytes(),
                    None => std::fs::read(id).map_err(io_err("read secret", id))?,
                },
                SecretSource::Bytes(b) => b.clone(),
            };
            secrets.push((s.id.clone(), bytes));
        }

        let cache_from: Vec<_> = req
            .cache_from
            .iter()
            .filter_map(|c| CacheExport::of(c).map(|e| e.location))
            .collect();
        let (imported, import_warnings) = Imported::load(&self.store, &self.registry, &cache_from);
        for w in import_warnings {
            progress.event(&ProgressEvent::Warning { message: w });
        }

        let ctx = BuildCtx {
            solver: self,
            req,
            plan: &plan,
            images: &images,
            content_cache: ContentCache::load(&self.config.state_dir, &context_root),
            context_root,
            ignore,
            progress,
            vertex_of_step,
            vertex_of_image,
            step_ids,
            total,
            cancel_tokens: Arc::new(Mutex::new(Vec::new())),
            cancelled: Arc::new(AtomicBool::new(false)),
            once: OnceMap::new(),
            cached: AtomicUsize::new(0),
            ran: AtomicUsize::new(0),
            secrets,
            imported,
            warned_host_network: AtomicBool::new(false),
            explain: crate::explain::ExplainStore::open(&self.config.state_dir),
            span: span.clone(),
        };
        let _on_cancel = {
            let (flag, tokens) = (ctx.cancelled.clone(), ctx.cancel_tokens.clone());
            cancel.on_cancel(move || cancel_all(&flag, &tokens))
        };
        let results = run_dag(&g, self.jobs(), &ctx.cancelled, |idx, v, inputs| {
            let r = ctx.vertex(idx, *v, &inputs);
            if r.is_err() {
                cancel_all(&ctx.cancelled, &ctx.cancel_tokens);
            }
            r
        });
        let _ = ctx.content_cache.save();
        let results = results?;
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }

        // The images, one per platform (in the order asked for), indexed when several.
        let mut built = Vec::new();
        for (platform, &target) in target_platforms.iter().zip(&targets) {
            let (image, snapshot) = ctx.target_image(&results, target)?;
            built.push(export::BuiltImage {
                platform: platform.clone(),
                image,
                snapshot,
            });
        }
        let index = if built.len() > 1 {
            // Each entry says the platform asked for (BuildKit's exporter), not the config's.
            let entries: Vec<(Image, Platform)> = built
                .iter()
                .map(|b| (b.image.clone(), b.platform.clone()))
                .collect();
            let opts = kiln_image::WriteOptions::default();
            Some(
                kiln_image::write_index_for(&self.store, &entries, &opts)
                    .map_err(img_err("write the image index"))?,
            )
        } else {
            None
        };
        let built = export::Built {
            images: built,
            index,
        };
        let names = export::image_names(req);
        self.export_all(req, &built, &names)?;
        for exp in req.cache_to.iter().filter_map(CacheExport::of) {
            // Every platform's steps (a cache for `--platform a,b` serves each of them).
            let mut records = std::collections::BTreeMap::new();
            for &target in &targets {
                let tail_v = stage_tail(&plan, target, &ctx.vertex_of_image, &ctx.vertex_of_step);
                records.append(&mut cache_entries(&ctx, &g, &results, tail_v, exp.max));
            }
            let mounts = if exp.cache_mounts {
                let tmp = self.temp_dir()?;
                let ids = remote_cache::cache_mount_ids(&plan);
                remote_cache::pack_mounts(&self.store, &self.config.state_dir, &ids, tmp.path())?
            } else {
                std::collections::BTreeMap::new()
            };
            remote_cache::export(&self.store, &self.registry, &exp, records, mounts)?;
        }
        let first = &built.images[0].image;
        // A multi-platform image is known by its index digest (docker's image id for it).
        let (shown_manifest, shown_config) = match &built.index {
            Some(ix) => (ix.digest.to_string(), ix.digest.to_string()),
            None => (
                first.manifest_digest.to_string(),
                first.config_digest.to_string(),
            ),
        };
        progress.event(&ProgressEvent::ImageWritten {
            manifest_digest: shown_manifest,
            config_digest: shown_config,
            names: names
                .iter()
                .map(|n| Reference::parse(n).map_or_else(|_| n.clone(), |r| r.to_string()))
                .collect(),
        });
        // The stored bytes, which hash to the digest (never a re-serialisation).
        let config_bytes = self
            .store
            .read_blob(&first.config_digest)
            .map_err(img_err("read the image config"))?;
        Ok(BuildOutcome {
            manifest_digest: first.manifest_digest.to_string(),
            config_digest: first.config_digest.to_string(),
            config: first.config.clone(),
            config_bytes,
            names,
            steps_run: ctx.ran.load(Ordering::SeqCst),
            steps_cached: ctx.cached.load(Ordering::SeqCst),
            warnings: plan.warnings.clone(),
            index_digest: built.index.as_ref().map(|ix| ix.digest.to_string()),
            platforms: built
                .images
                .iter()
                .map(|b| PlatformImage {
                    platform: b.platform.clone(),
                    manifest_digest: b.image.manifest_digest.to_string(),
                    config_digest: b.image.config_digest.to_string(),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_spec() {
        let a = "sha256:aaa".to_string();
        let b = "sha256:bbb".to_string();
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(
            c[1],
            format!(
                "sha256:{}",
                hex::encode(Sha256::digest(b"sha256:aaa sha256:bbb"))
            )
        );
    }

    #[test]
    fn empty_tar_digest_constant() {
        assert_eq!(
            EMPTY_TAR_DIFF_ID,
            format!("sha256:{}", hex::encode(Sha256::digest([0u8; 1024])))
        );
    }
}
