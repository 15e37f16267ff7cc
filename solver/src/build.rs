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
    RegistryOptions,
};
use kiln_snapshotter::{self as snap, Snapshotter};
use petgraph::graph::{DiGraph, NodeIndex};
use sha2::{Digest as _, Sha256};

use crate::cache::{CacheRecord, CacheStore, LayerRecord};
use crate::context::{ContentCache, SourceTree, digest_sources};
use crate::copy::{self, Chmod, CopyOptions, CopySource};
use crate::dockerignore::IgnoreMatcher;
use crate::error::{Error, Result, io_err};
use crate::key::{CacheKey, KeyBuilder};
use crate::plan::{
    self, BaseRef, CopyOp, MountPlan, Op, Plan, PlanInput, RunOp, SourceRef, StepPlan,
};
use crate::progress::{LogStream, Progress, ProgressEvent, StepId};
use crate::request::{
    BuildOutcome, BuildRequest, DockerfileSource, NetworkMode, OutputSpec, SecretSource,
    SolverConfig,
};
use crate::scheduler::{OnceMap, run_dag};
use crate::users;

/// sha256 of an empty tar stream (two zero blocks): the diff_id of a step that changed nothing.
const EMPTY_TAR_DIFF_ID: &str =
    "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

pub(crate) fn snap_err(what: impl Into<String>) -> impl FnOnce(snap::Error) -> Error {
    let what = what.into();
    move |e| Error::Snapshot {
        what,
        message: e.to_string(),
    }
}

fn img_err(what: impl Into<String>) -> impl FnOnce(kiln_image::Error) -> Error {
    let what = what.into();
    move |e| Error::Image {
        what,
        message: e.to_string(),
    }
}

/// The engine: owns the content store, snapshotter, cache records and (lazily) the executor.
/// One solver can run many builds, also concurrently.
pub struct Solver {
    config: SolverConfig,
    store: ContentStore,
    pub(crate) snapshotter: Box<dyn Snapshotter>,
    pub(crate) cache: CacheStore,
    executor: OnceLock<std::result::Result<ex::Executor, String>>,
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
    cancel_tokens: Mutex<Vec<ex::CancelToken>>,
    once: OnceMap<CacheKey, FsState>,
    cached: AtomicUsize,
    ran: AtomicUsize,
    secrets: Vec<(String, Vec<u8>)>,
}

fn unique_key(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Mounted read-only view of a committed snapshot (or an empty directory), removed on drop.
struct View<'a> {
    snapshotter: &'a dyn Snapshotter,
    key: Option<String>,
    mounted: Option<snap::MountedSnapshot>,
    empty: Option<tempfile::TempDir>,
}

impl<'a> View<'a> {
    fn open(snapshotter: &'a dyn Snapshotter, parent: Option<&str>) -> Result<Self> {
        match parent {
            None => Ok(Self {
                snapshotter,
                key: None,
                mounted: None,
                empty: Some(
                    tempfile::tempdir().map_err(io_err("create temp dir", std::env::temp_dir()))?,
                ),
            }),
            Some(p) => {
                let key = unique_key("view");
                let mounts = snapshotter
                    .view(&key, Some(p))
                    .map_err(snap_err(format!("view {p}")))?;
                let mut v = Self {
                    snapshotter,
                    key: Some(key),
                    mounted: None,
                    empty: None,
                };
                v.mounted = Some(
                    snap::MountedSnapshot::new(&mounts)
                        .map_err(snap_err(format!("mount view of {p}")))?,
                );
                Ok(v)
            }
        }
    }

    fn path(&self) -> &Path {
        if let Some(m) = &self.mounted {
            return m.path();
        }
        self.empty
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }
}

impl Drop for View<'_> {
    fn drop(&mut self) {
        if let Some(m) = self.mounted.take() {
            let _ = m.unmount();
        }
        if let Some(k) = &self.key {
            let _ = self.snapshotter.remove(k);
        }
    }
}

impl Solver {
    /// Opens (creating) the state directory: content store, snapshots, cache records.
    pub fn new(config: SolverConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.state_dir)
            .map_err(io_err("create directory", &config.state_dir))?;
        let store = ContentStore::open(&config.state_dir).map_err(img_err("content store"))?;
        let snapshotter = snap::open(&config.state_dir, config.snapshot_driver)
            .map_err(snap_err(config.state_dir.display().to_string()))?;
        let cache = CacheStore::open(&config.state_dir)?;
        let registry = RegistryClient::new(RegistryOptions {
            insecure_registries: config.insecure_registries.clone(),
            ..RegistryOptions::default()
        });
        Ok(Self {
            config,
            store,
            snapshotter,
            cache,
            executor: OnceLock::new(),
            registry,
        })
    }

    /// The content store builds write to.
    pub fn content_store(&self) -> &ContentStore {
        &self.store
    }

    /// The cache record store.
    pub fn cache_store(&self) -> &CacheStore {
        &self.cache
    }

    fn executor(&self) -> Result<&ex::Executor> {
        let r = self.executor.get_or_init(|| {
            let init = match &self.config.executor_init_binary {
                Some(p) => p.clone(),
                None => std::env::current_exe().map_err(|e| e.to_string())?,
            };
            ex::Executor::new(ex::ExecutorConfig {
                init_binary: init,
                state_dir: self.config.state_dir.clone(),
            })
            .map_err(|e| e.to_string())
        });
        r.as_ref().map_err(|e| Error::Exec {
            line: 0,
            command: String::new(),
            message: e.clone(),
        })
    }

    fn jobs(&self) -> usize {
        if self.config.jobs > 0 {
            self.config.jobs
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        }
    }

    fn pull(&self, reference: &str, force: bool) -> Result<Image> {
        let r = Reference::parse(reference).map_err(img_err(reference))?;
        let platform = Platform::linux_amd64();
        if !force && let Ok(img) = Image::resolve(&self.store, &r, &platform) {
            return Ok(img);
        }
        let img = self
            .registry
            .pull(&self.store, &r, &platform)
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
        let started = Instant::now();
        let r = self.build_inner(req, progress);
        progress.event(&ProgressEvent::BuildFinished {
            success: r.is_ok(),
            elapsed: started.elapsed(),
        });
        r
    }

    fn build_inner(&self, req: &BuildRequest, progress: &dyn Progress) -> Result<BuildOutcome> {
        let context_root = std::fs::canonicalize(&req.context_dir)
            .map_err(io_err("open build context", &req.context_dir))?;
        let (df_bytes, df_path) = match &req.dockerfile {
            DockerfileSource::Default => {
                let p = context_root.join("Dockerfile");
                (
                    std::fs::read(&p).map_err(io_err("read Dockerfile", &p))?,
                    Some(p),
                )
            }
            DockerfileSource::Path(p) => (
                std::fs::read(p).map_err(io_err("read Dockerfile", p))?,
                Some(p.clone()),
            ),
            DockerfileSource::Bytes { content, .. } => (content.clone(), None),
        };
        let df = kiln_parser::parse(&df_bytes).map_err(|e| Error::Parse(e.to_string()))?;
        let ignore = IgnoreMatcher::for_build(&context_root, df_path.as_deref())?;

        // Plan, pulling base images as the planner meets them.
        let mut images: Vec<Image> = Vec::new();
        let input = PlanInput {
            build_args: &req.build_args,
            target: req.target.as_deref(),
            no_cache: req.no_cache,
            no_cache_filter: &req.no_cache_filter,
            network: req.network,
            labels: &req.labels,
        };
        let plan = {
            let mut resolver = |r: &str| -> Result<ImageConfig> {
                let img = self.pull(r, req.pull)?;
                let cfg = img.config.clone();
                images.push(img);
                Ok(cfg)
            };
            plan::plan(&df, &input, &mut resolver)?
        };
        for w in &plan.warnings {
            progress.event(&ProgressEvent::Warning { message: w.clone() });
        }

        // The DAG.
        let mut g: DiGraph<Vertex, ()> = DiGraph::new();
        let vertex_of_image: Vec<NodeIndex> = (0..images.len())
            .map(|i| g.add_node(Vertex::Image(i)))
            .collect();
        let vertex_of_step: Vec<NodeIndex> = (0..plan.steps.len())
            .map(|s| g.add_node(Vertex::Step(s)))
            .collect();
        let tail = |stage: usize| stage_tail(&plan, stage, &vertex_of_image, &vertex_of_step);
        for (si, sp) in plan.stages.iter().enumerate() {
            let Some(sp) = sp else { continue };
            let mut prev = match &sp.base {
                BaseRef::Scratch => None,
                BaseRef::Image(i) => Some(vertex_of_image[*i]),
                BaseRef::Stage(b) => tail(*b),
            };
            let _ = si;
            for &s in &sp.steps {
                let v = vertex_of_step[s];
                if let Some(p) = prev {
                    g.add_edge(p, v, ());
                }
                for src in step_sources(&plan.steps[s]) {
                    let sv = match src {
                        SourceRef::Context => None,
                        SourceRef::Stage(t) => tail(t),
                        SourceRef::Image(i) => Some(vertex_of_image[i]),
                    };
                    if let Some(sv) = sv
                        && Some(sv) != prev
                    {
                        g.add_edge(sv, v, ());
                    }
                }
                prev = Some(v);
            }
        }
        // Progress numbering in Dockerfile order: FROM images first, then steps by line.
        let mut order: Vec<(usize, usize, NodeIndex)> = Vec::new();
        for (i, v) in vertex_of_image.iter().enumerate() {
            let line = plan
                .stages
                .iter()
                .enumerate()
                .find_map(|(si, s)| {
                    s.as_ref()
                        .filter(|s| s.base == BaseRef::Image(i))
                        .map(|_| df.stages[si].start_line)
                })
                .unwrap_or(0);
            order.push((line, 0, *v));
        }
        for (s, v) in vertex_of_step.iter().enumerate() {
            order.push((plan.steps[s].line, 1 + s, *v));
        }
        order.sort();
        let total = order.len();
        let step_ids: Vec<(usize, StepId)> = {
            let mut ids = vec![(0, StepId(0)); g.node_count()];
            for (n, (_, _, v)) in order.iter().enumerate() {
                ids[v.index()] = (n + 1, StepId(n));
            }
            ids
        };
        progress.event(&ProgressEvent::BuildStarted { total_steps: total });

        let mut secrets = Vec::new();
        for s in &req.secrets {
            let bytes = match &s.source {
                SecretSource::File(p) => std::fs::read(p).map_err(io_err("read secret", p))?,
                SecretSource::Env(v) => std::env::var(v).unwrap_or_default().into_bytes(),
                SecretSource::Bytes(b) => b.clone(),
            };
            secrets.push((s.id.clone(), bytes));
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
            cancel_tokens: Mutex::new(Vec::new()),
            once: OnceMap::new(),
            cached: AtomicUsize::new(0),
            ran: AtomicUsize::new(0),
            secrets,
        };
        let cancel = AtomicBool::new(false);
        let results = run_dag(&g, self.jobs(), &cancel, |idx, v, inputs| {
            let r = ctx.vertex(idx, *v, &inputs);
            if r.is_err()
                && let Ok(tokens) = ctx.cancel_tokens.lock()
            {
                for t in tokens.iter() {
                    t.cancel();
                }
            }
            r
        });
        let _ = ctx.content_cache.save();
        let results = results?;

        // The image.
        let target = plan.target;
        let tail_v = stage_tail(&plan, target, &ctx.vertex_of_image, &ctx.vertex_of_step);
        let fs = tail_v.map(|v| results[v.index()].clone());
        let tsp = plan.stages[target].as_ref().ok_or_else(|| Error::Plan {
            line: 0,
            message: "target not planned".into(),
        })?;
        let mut config = tsp.config.clone();
        let layers: Vec<LayerRecord> = fs.as_ref().map(|f| f.layers.clone()).unwrap_or_default();
        let ts = kiln_image::spec::build_timestamp();
        config.created = Some(ts.clone());
        let mut diff_ids = Vec::new();
        for l in &layers {
            diff_ids.push(Digest::parse(&l.diff_id).map_err(img_err("diff_id"))?);
        }
        config.rootfs.diff_ids = diff_ids;
        for (h, step) in config.history.iter_mut().zip(tsp_history(&plan, target)) {
            if let Some(s) = step {
                h.created = Some(ts.clone());
                let v = ctx.vertex_of_step[s];
                h.empty_layer = results[v.index()].own_layer.is_none();
            }
        }
        let mut descs = Vec::new();
        for l in &layers {
            descs.push(Descriptor::new(
                l.media_type.clone(),
                Digest::parse(&l.digest).map_err(img_err("layer digest"))?,
                l.size,
            ));
        }
        let image =
            kiln_image::write_image(&self.store, &config, &descs).map_err(img_err("write"))?;
        let mut names: Vec<Reference> = Vec::new();
        for t in &req.tags {
            names.push(Reference::parse(t).map_err(img_err(t.clone()))?);
        }
        let outputs: Vec<OutputSpec> = if req.outputs.is_empty() && !req.tags.is_empty() {
            vec![OutputSpec::Image { names: Vec::new() }]
        } else {
            req.outputs.clone()
        };
        for o in &outputs {
            self.export(
                o,
                &image,
                &names,
                fs.as_ref().and_then(|f| f.snapshot.as_deref()),
            )?;
        }
        progress.event(&ProgressEvent::ImageWritten {
            manifest_digest: image.manifest_digest.to_string(),
            config_digest: image.config_digest.to_string(),
            names: names.iter().map(|n| n.to_string()).collect(),
        });
        Ok(BuildOutcome {
            manifest_digest: image.manifest_digest.to_string(),
            config_digest: image.config_digest.to_string(),
            config: image.config.clone(),
            steps_run: ctx.ran.load(Ordering::SeqCst),
            steps_cached: ctx.cached.load(Ordering::SeqCst),
            warnings: plan.warnings.clone(),
        })
    }

    fn export(
        &self,
        o: &OutputSpec,
        image: &Image,
        names: &[Reference],
        snapshot: Option<&str>,
    ) -> Result<()> {
        match o {
            OutputSpec::Image { names: extra } => {
                let mut all: Vec<Reference> = names.to_vec();
                for n in extra {
                    all.push(Reference::parse(n).map_err(img_err(n.clone()))?);
                }
                for r in &all {
                    self.store
                        .set_tag(r, &image.manifest_digest)
                        .map_err(img_err(r.to_string()))?;
                }
            }
            OutputSpec::Oci { dest, tar } => {
                let gz = kiln_image::CompressionOptions {
                    compression: kiln_image::Compression::Gzip,
                    level: None,
                };
                let image = kiln_image::convert_image(&self.store, image, gz, false)
                    .map_err(img_err(format!("compress layers for {}", dest.display())))?;
                kiln_image::export_oci(&self.store, &image, names, dest, *tar)
                    .map_err(img_err(dest.display().to_string()))?;
            }
            OutputSpec::Docker { dest } => {
                kiln_image::export_docker(
                    &self.store,
                    &[(image.clone(), names.to_vec())],
                    None,
                    dest,
                )
                .map_err(img_err(dest.display().to_string()))?;
            }
            OutputSpec::Local { dest } => {
                let view = View::open(self.snapshotter.as_ref(), snapshot)?;
                std::fs::create_dir_all(dest).map_err(io_err("create directory", dest))?;
                let tree = SourceTree {
                    root: view.path(),
                    ignore: None,
                };
                let src = CopySource::Tree {
                    tree,
                    paths: vec!["/".into()],
                    reset_owner: false,
                };
                let opts = CopyOptions {
                    dest: "/".into(),
                    chown: None,
                    chmod: None,
                    parents: false,
                    exclude: None,
                    unpack_archives: false,
                    line: 0,
                };
                copy::copy(dest, &src, &opts)?;
            }
            OutputSpec::Tar { dest } => {
                let view = View::open(self.snapshotter.as_ref(), snapshot)?;
                let mut f = std::fs::File::create(dest).map_err(io_err("create", dest))?;
                kiln_image::write_rootfs_tar(view.path(), &mut f)
                    .map_err(img_err(dest.display().to_string()))?;
            }
        }
        Ok(())
    }
}

fn tsp_history(plan: &Plan, stage: usize) -> Vec<Option<usize>> {
    plan.stages[stage]
        .as_ref()
        .map(|s| s.history_steps.clone())
        .unwrap_or_default()
}

/// The vertex holding a stage's final filesystem.
fn stage_tail(
    plan: &Plan,
    stage: usize,
    images: &[NodeIndex],
    steps: &[NodeIndex],
) -> Option<NodeIndex> {
    let sp = plan.stages[stage].as_ref()?;
    if let Some(&last) = sp.steps.last() {
        return Some(steps[last]);
    }
    match &sp.base {
        BaseRef::Scratch => None,
        BaseRef::Image(i) => Some(images[*i]),
        BaseRef::Stage(b) => stage_tail(plan, *b, images, steps),
    }
}

fn step_sources(step: &StepPlan) -> Vec<SourceRef> {
    match &step.op {
        Op::Copy(c) => vec![c.from.clone()],
        Op::Run(r) => r.mounts.iter().filter_map(|m| m.source.clone()).collect(),
        Op::Mkdir { .. } => Vec::new(),
    }
}

fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

impl BuildCtx<'_> {
    fn snapshotter(&self) -> &dyn Snapshotter {
        self.solver.snapshotter.as_ref()
    }

    fn started(&self, idx: NodeIndex, instruction: String, stage: String, line: usize) -> StepId {
        let (n, id) = self.step_ids[idx.index()];
        self.progress.event(&ProgressEvent::StepStarted {
            step: id,
            index: n,
            total: self.total,
            stage,
            instruction,
            line,
        });
        id
    }

    #[allow(clippy::unused_self)]
    fn state_of(
        &self,
        inputs: &[(NodeIndex, Arc<FsState>)],
        v: Option<NodeIndex>,
    ) -> Option<Arc<FsState>> {
        let v = v?;
        inputs.iter().find(|(i, _)| *i == v).map(|(_, s)| s.clone())
    }

    fn source_vertex(&self, src: &SourceRef) -> Option<NodeIndex> {
        match src {
            SourceRef::Context => None,
            SourceRef::Stage(t) => {
                stage_tail(self.plan, *t, &self.vertex_of_image, &self.vertex_of_step)
            }
            SourceRef::Image(i) => Some(self.vertex_of_image[*i]),
        }
    }

    fn parent_vertex(&self, step: usize) -> Option<NodeIndex> {
        let sp = self.plan.stages[self.plan.steps[step].stage].as_ref()?;
        let pos = sp.steps.iter().position(|&s| s == step)?;
        if pos > 0 {
            return Some(self.vertex_of_step[sp.steps[pos - 1]]);
        }
        match &sp.base {
            BaseRef::Scratch => None,
            BaseRef::Image(i) => Some(self.vertex_of_image[*i]),
            BaseRef::Stage(b) => {
                stage_tail(self.plan, *b, &self.vertex_of_image, &self.vertex_of_step)
            }
        }
    }

    fn vertex(
        &self,
        idx: NodeIndex,
        v: Vertex,
        inputs: &[(NodeIndex, Arc<FsState>)],
    ) -> Result<FsState> {
        match v {
            Vertex::Image(i) => self.image_vertex(idx, i),
            Vertex::Step(s) => self.step_vertex(idx, s, inputs),
        }
    }

    fn image_vertex(&self, idx: NodeIndex, i: usize) -> Result<FsState> {
        let img = &self.images[i];
        let reference = &self.plan.images[i].0;
        let id = self.started(idx, format!("FROM {reference}"), String::new(), 0);
        let t0 = Instant::now();
        let diff_ids: Vec<String> = img
            .config
            .rootfs
            .diff_ids
            .iter()
            .map(|d| d.to_string())
            .collect();
        if diff_ids.len() != img.layers.len() {
            return Err(Error::Image {
                what: reference.clone(),
                message: "layer count does not match the config's diff_ids".into(),
            });
        }
        let chains = chain_ids(&diff_ids);
        let sn = self.snapshotter();
        let mut parent: Option<String> = None;
        let mut unpacked = false;
        for (k, chain) in chains.iter().enumerate() {
            let name = format!("layer-{}", chain.trim_start_matches("sha256:"));
            if sn.stat(&name).is_err() {
                unpacked = true;
                let active = unique_key("unpack");
                sn.prepare(&active, parent.as_deref())
                    .map_err(snap_err(format!("prepare {active}")))?;
                let r = (|| -> Result<()> {
                    let blob = self
                        .solver
                        .store
                        .open_blob(&img.layers[k].digest)
                        .map_err(img_err(img.layers[k].digest.to_string()))?;
                    let applied =
                        snap::apply_layer_to_snapshot(sn, &active, std::io::BufReader::new(blob))
                            .map_err(snap_err(format!("apply layer {}", img.layers[k].digest)))?;
                    if applied.diff_id != diff_ids[k] {
                        return Err(Error::Image {
                            what: img.layers[k].digest.to_string(),
                            message: format!(
                                "diff_id {} does not match the config's {}",
                                applied.diff_id, diff_ids[k]
                            ),
                        });
                    }
                    Ok(())
                })();
                if let Err(e) = r {
                    let _ = sn.remove(&active);
                    return Err(e);
                }
                if let Err(e) = sn.commit(&name, &active) {
                    // Another build committed the same layer meanwhile.
                    let _ = sn.remove(&active);
                    if sn.stat(&name).is_err() {
                        return Err(snap_err(format!("commit {name}"))(e));
                    }
                }
            }
            parent = Some(name);
        }
        let layers: Vec<LayerRecord> = img
            .layers
            .iter()
            .zip(&diff_ids)
            .map(|(d, diff)| LayerRecord {
                digest: d.digest.to_string(),
                diff_id: diff.clone(),
                size: d.size,
                media_type: d.media_type.clone(),
            })
            .collect();
        if unpacked {
            self.progress.event(&ProgressEvent::StepDone {
                step: id,
                elapsed: t0.elapsed(),
            });
        } else {
            self.progress.event(&ProgressEvent::StepCached { step: id });
        }
        Ok(FsState {
            key: CacheKey(format!("image:{}", img.manifest_digest)),
            snapshot: parent,
            own_layer: layers.last().cloned(),
            layers,
        })
    }

    fn step_vertex(
        &self,
        idx: NodeIndex,
        s: usize,
        inputs: &[(NodeIndex, Arc<FsState>)],
    ) -> Result<FsState> {
        let step = &self.plan.steps[s];
        let stage_name = self.plan.stages[step.stage]
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let id = self.started(idx, step.instruction.clone(), stage_name, step.line);
        let t0 = Instant::now();
        let parent = self.state_of(inputs, self.parent_vertex(s));
        let r = self.step_inner(s, step, parent.as_deref(), inputs, id);
        match &r {
            Ok((_, true)) => self.progress.event(&ProgressEvent::StepCached { step: id }),
            Ok((_, false)) => self.progress.event(&ProgressEvent::StepDone {
                step: id,
                elapsed: t0.elapsed(),
            }),
            Err(Error::Cancelled) => {}
            Err(e) => self.progress.event(&ProgressEvent::StepFailed {
                step: id,
                error: e.to_string(),
            }),
        }
        r.map(|(f, _)| f)
    }

    /// Returns the state and whether it came from the cache.
    fn step_inner(
        &self,
        s: usize,
        step: &StepPlan,
        parent: Option<&FsState>,
        inputs: &[(NodeIndex, Arc<FsState>)],
        id: StepId,
    ) -> Result<(FsState, bool)> {
        // Source views stay mounted while the key is computed and the step runs.
        let mut key = KeyBuilder::new(match &step.op {
            Op::Run(_) => "run",
            Op::Copy(_) => "copy",
            Op::Mkdir { .. } => "mkdir",
        });
        key.opt("parent", parent.map(|p| p.key.0.as_str()));
        let mut views: Vec<View<'_>> = Vec::new();
        match &step.op {
            Op::Mkdir { path, user } => {
                key.field("path", path).field("user", user);
            }
            Op::Copy(c) => {
                key.field("add", if c.add { "1" } else { "0" })
                    .list("sources", &c.sources)
                    .field("dest", &c.dest)
                    .opt("chown", c.chown.as_deref())
                    .opt("chmod", c.chmod.as_deref())
                    .field("parents", if c.parents { "1" } else { "0" })
                    .list("exclude", &c.exclude)
                    .field("unpack", if c.unpack { "1" } else { "0" })
                    .field("link", if c.link { "1" } else { "0" });
                for (name, data) in &c.inline {
                    key.field("inline", name)
                        .field("inline-sha256", &hex::encode(Sha256::digest(data)));
                }
                if !c.sources.is_empty() {
                    let digest = match &c.from {
                        SourceRef::Context => {
                            let tree = SourceTree {
                                root: &self.context_root,
                                ignore: Some(&self.ignore),
                            };
                            digest_sources(&tree, &c.sources, &self.content_cache, step.line)?
                        }
                        other => {
                            let src_state = self.state_of(inputs, self.source_vertex(other));
                            let view = View::open(
                                self.snapshotter(),
                                src_state.as_ref().and_then(|f| f.snapshot.as_deref()),
                            )?;
                            let tree = SourceTree {
                                root: view.path(),
                                ignore: None,
                            };
                            let d = digest_sources(
                                &tree,
                                &c.sources,
                                &ContentCache::ephemeral(),
                                step.line,
                            )?;
                            views.push(view);
                            d
                        }
                    };
                    key.field("source-digest", &digest);
                }
                for url in &c.urls {
                    let (view, digest) = self.download(url, c.checksum.as_deref(), step.line)?;
                    key.field("url", url).field("url-digest", &digest);
                    views.push(view);
                }
            }
            Op::Run(r) => {
                key.list("args", &r.args)
                    .list("env", &r.env)
                    .field("user", &r.user)
                    .field("cwd", &r.cwd)
                    .field(
                        "network",
                        match r.network {
                            NetworkMode::Default => "default",
                            NetworkMode::Host => "host",
                            NetworkMode::None => "none",
                        },
                    );
                if let Some((name, data)) = &r.script {
                    key.field("script", name)
                        .field("script-sha256", &hex::encode(Sha256::digest(data)));
                }
                for m in &r.mounts {
                    self.mount_key(&mut key, m, inputs, step.line)?;
                }
            }
        }
        let key = key.finish();
        let no_cache = step.no_cache;
        let compute = || -> Result<(FsState, bool)> {
            if !no_cache && let Some(rec) = self.lookup(&key) {
                self.cached.fetch_add(1, Ordering::SeqCst);
                let mut layers = parent.map(|p| p.layers.clone()).unwrap_or_default();
                if let Some(l) = &rec.layer {
                    layers.push(l.clone());
                }
                return Ok((
                    FsState {
                        key: key.clone(),
                        snapshot: Some(rec.snapshot),
                        layers,
                        own_layer: rec.layer,
                    },
                    true,
                ));
            }
            self.ran.fetch_add(1, Ordering::SeqCst);
            let f = self.execute(s, step, parent, inputs, &key, &views, id)?;
            Ok((f, false))
        };
        // Identical steps in flight run once (same key ⇒ same result).
        let mut was_cached = false;
        let st = self.once.get_or_run(&key, || {
            let (f, c) = compute()?;
            was_cached = c;
            Ok(f)
        })?;
        drop(views);
        Ok((st, was_cached))
    }

    fn mount_key(
        &self,
        key: &mut KeyBuilder,
        m: &MountPlan,
        inputs: &[(NodeIndex, Arc<FsState>)],
        line: usize,
    ) -> Result<()> {
        let rm = &m.mount;
        key.field("mount", rm.kind.as_str())
            .opt("target", rm.target.as_deref())
            .opt("source", rm.source.as_deref())
            .opt("from", rm.from.as_deref())
            .field("ro", if rm.read_only { "1" } else { "0" })
            .opt("id", rm.id.as_deref())
            .opt("env", rm.env.as_deref())
            .opt("mode", rm.mode.map(|x| format!("{x:o}")).as_deref())
            .opt("uid", rm.uid.map(|x| x.to_string()).as_deref())
            .opt("gid", rm.gid.map(|x| x.to_string()).as_deref())
            .opt("size", rm.size.map(|x| x.to_string()).as_deref());
        match &m.source {
            Some(SourceRef::Context) if rm.kind == kiln_parser::MountType::Bind => {
                let tree = SourceTree {
                    root: &self.context_root,
                    ignore: Some(&self.ignore),
                };
                let src = rm.source.clone().unwrap_or_else(|| "/".into());
                let d = digest_sources(&tree, &[src], &self.content_cache, line)?;
                key.field("source-digest", &d);
            }
            Some(other) => {
                let st = self.state_of(inputs, self.source_vertex(other));
                key.opt("source-key", st.as_ref().map(|s| s.key.0.as_str()));
            }
            None => {}
        }
        Ok(())
    }

    fn lookup(&self, key: &CacheKey) -> Option<CacheRecord> {
        let rec = self.solver.cache.get(key)?;
        // Only trust a record whose snapshot and blob still exist.
        self.snapshotter().stat(&rec.snapshot).ok()?;
        if let Some(l) = &rec.layer {
            let d = Digest::parse(&l.digest).ok()?;
            if !self.solver.store.has_blob(&d) {
                return None;
            }
        }
        Some(rec)
    }

    #[allow(clippy::too_many_arguments)]
    fn execute(
        &self,
        _s: usize,
        step: &StepPlan,
        parent: Option<&FsState>,
        inputs: &[(NodeIndex, Arc<FsState>)],
        key: &CacheKey,
        views: &[View<'_>],
        id: StepId,
    ) -> Result<FsState> {
        let sn = self.snapshotter();
        let active = unique_key("active");
        let parent_snap = parent.and_then(|p| p.snapshot.clone());
        let mounts = sn
            .prepare(&active, parent_snap.as_deref())
            .map_err(snap_err(format!("prepare {active}")))?;
        let r = (|| -> Result<()> {
            match &step.op {
                Op::Mkdir { path, user } => {
                    let m = snap::MountedSnapshot::new(&mounts)
                        .map_err(snap_err(format!("mount {active}")))?;
                    let owner = users::resolve_user(Some(m.path()), user);
                    copy::mkdir_all(m.path(), path, Some(owner))?;
                    m.unmount().map_err(snap_err(format!("unmount {active}")))?;
                }
                Op::Copy(c) => {
                    let m = snap::MountedSnapshot::new(&mounts)
                        .map_err(snap_err(format!("mount {active}")))?;
                    self.run_copy(m.path(), c, views, step.line)?;
                    m.unmount().map_err(snap_err(format!("unmount {active}")))?;
                }
                Op::Run(r) => self.run_exec(step, r, &mounts, inputs, id)?,
            }
            Ok(())
        })();
        if let Err(e) = r {
            let _ = sn.remove(&active);
            return Err(e);
        }
        // Normally the first result for this key; under --no-cache (or after a lost record)
        // a same-named snapshot may exist: keep the new result under a fresh name.
        let mut name = format!("step-{}", key.hex());
        if sn.stat(&name).is_ok() {
            name = unique_key(&name);
        }
        sn.commit(&name, &active)
            .map_err(snap_err(format!("commit {name}")))?;
        let layer = self.write_layer(&name)?;
        self.solver.cache.put(
            key,
            &CacheRecord {
                snapshot: name.clone(),
                layer: layer.clone(),
            },
        )?;
        let mut layers = parent.map(|p| p.layers.clone()).unwrap_or_default();
        if let Some(l) = &layer {
            layers.push(l.clone());
        }
        Ok(FsState {
            key: key.clone(),
            snapshot: Some(name),
            layers,
            own_layer: layer,
        })
    }

    fn write_layer(&self, name: &str) -> Result<Option<LayerRecord>> {
        let mut bw = self
            .solver
            .store
            .blob_writer()
            .map_err(img_err("blob writer"))?;
        let opts = snap::LayerOptions {
            // Stored uncompressed: a local build pays no compression; exports that want gzip
            // convert (once, remembered by the content store).
            compression: snap::Compression::None,
            source_date_epoch: std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .and_then(|v| v.trim().parse().ok()),
        };
        let info = snap::write_layer(self.snapshotter(), name, &opts, &mut bw)
            .map_err(snap_err(format!("write layer of {name}")))?;
        if info.diff_id == EMPTY_TAR_DIFF_ID {
            return Ok(None);
        }
        let expected = Digest::parse(&info.digest).map_err(img_err("layer digest"))?;
        let (digest, size) = bw
            .commit(Some(&expected))
            .map_err(img_err(format!("layer of {name}")))?;
        Ok(Some(LayerRecord {
            digest: digest.to_string(),
            diff_id: info.diff_id,
            size,
            media_type: info.media_type.to_string(),
        }))
    }

    fn run_copy(&self, root: &Path, c: &CopyOp, views: &[View<'_>], line: usize) -> Result<()> {
        let chown = match &c.chown {
            Some(spec) => Some(users::resolve_chown(Some(root), spec, line)?),
            None => None,
        };
        let chmod = match &c.chmod {
            Some(m) => Some(Chmod::parse(m).ok_or_else(|| Error::Plan {
                line,
                message: format!("invalid chmod parameter: '{m}'"),
            })?),
            None => None,
        };
        let exclude = if c.exclude.is_empty() {
            None
        } else {
            Some(IgnoreMatcher::new(&c.exclude)?)
        };
        let opts = CopyOptions {
            dest: c.dest.clone(),
            chown,
            chmod: chmod.as_ref(),
            parents: c.parents,
            exclude: exclude.as_ref(),
            unpack_archives: c.unpack && c.from == SourceRef::Context,
            line,
        };
        if !c.sources.is_empty() {
            let src = match &c.from {
                SourceRef::Context => CopySource::Tree {
                    tree: SourceTree {
                        root: &self.context_root,
                        ignore: Some(&self.ignore),
                    },
                    paths: c.sources.clone(),
                    reset_owner: true,
                },
                _ => {
                    let view = views.first().ok_or(Error::Cancelled)?;
                    CopySource::Tree {
                        tree: SourceTree {
                            root: view.path(),
                            ignore: None,
                        },
                        paths: c.sources.clone(),
                        reset_owner: false,
                    }
                }
            };
            copy::copy(root, &src, &opts)?;
        }
        // Downloaded URLs follow the source-stage view (if any) in `views`.
        let skip = usize::from(c.from != SourceRef::Context && !c.sources.is_empty());
        let url_opts = CopyOptions {
            unpack_archives: false,
            ..opts
        };
        for (url, view) in c.urls.iter().zip(views.iter().skip(skip)) {
            let src = CopySource::Tree {
                tree: SourceTree {
                    root: view.path(),
                    ignore: None,
                },
                paths: vec![url_file_name(url)],
                reset_owner: true,
            };
            copy::copy(root, &src, &url_opts)?;
        }
        let opts = url_opts;
        for (name, data) in &c.inline {
            copy::copy(
                root,
                &CopySource::Inline {
                    name: name.clone(),
                    content: data.clone(),
                },
                &opts,
            )?;
        }
        Ok(())
    }

    fn run_exec(
        &self,
        step: &StepPlan,
        r: &RunOp,
        mounts: &[snap::Mount],
        inputs: &[(NodeIndex, Arc<FsState>)],
        id: StepId,
    ) -> Result<()> {
        let executor = self.solver.executor().map_err(|e| Error::Exec {
            line: step.line,
            command: r.args.join(" "),
            message: e.to_string(),
        })?;
        let rootfs = ex::RootFs::Mounts(
            mounts
                .iter()
                .map(|m| ex::RootMount {
                    fstype: m.fstype.clone(),
                    source: m.source.to_string_lossy().to_string(),
                    options: m.options.clone(),
                })
                .collect(),
        );
        let mut specs: Vec<ex::MountSpec> = Vec::new();
        let mut keep_views: Vec<View<'_>> = Vec::new();
        let _scratch;
        let mut ssh_index = 0;
        for m in &r.mounts {
            let rm = &m.mount;
            match rm.kind {
                kiln_parser::MountType::Bind => {
                    let target = rm.target.clone().unwrap_or_default();
                    let src_rel = rm.source.clone().unwrap_or_else(|| "/".into());
                    let base: PathBuf = match &m.source {
                        Some(SourceRef::Context) | None => self.context_root.clone(),
                        Some(other) => {
                            let st = self.state_of(inputs, self.source_vertex(other));
                            let view = View::open(
                                self.snapshotter(),
                                st.as_ref().and_then(|f| f.snapshot.as_deref()),
                            )?;
                            let p = view.path().to_path_buf();
                            keep_views.push(view);
                            p
                        }
                    };
                    let source = SourceTree {
                        root: &base,
                        ignore: None,
                    }
                    .resolve(&src_rel, true);
                    if std::fs::symlink_metadata(&source).is_err() {
                        return Err(Error::Plan {
                            line: step.line,
                            message: format!(
                                "failed to compute cache key: \"{src_rel}\": not found"
                            ),
                        });
                    }
                    specs.push(ex::MountSpec::Bind(ex::BindMount {
                        source,
                        target,
                        rw: !rm.read_only,
                    }));
                }
                kiln_parser::MountType::Cache => {
                    let target = rm.target.clone().unwrap_or_default();
                    let seed = match &m.source {
                        Some(other) if rm.from.is_some() => {
                            let st = self.state_of(inputs, self.source_vertex(other));
                            let view = View::open(
                                self.snapshotter(),
                                st.as_ref().and_then(|f| f.snapshot.as_deref()),
                            )?;
                            let p = SourceTree {
                                root: view.path(),
                                ignore: None,
                            }
                            .resolve(rm.source.as_deref().unwrap_or("/"), true);
                            keep_views.push(view);
                            Some(p)
                        }
                        _ => None,
                    };
                    specs.push(ex::MountSpec::Cache(ex::CacheMount {
                        id: rm.effective_id().unwrap_or_else(|| target.clone()),
                        target,
                        sharing: match rm.sharing {
                            Some(kiln_parser::CacheSharing::Private) => ex::CacheSharing::Private,
                            Some(kiln_parser::CacheSharing::Locked) => ex::CacheSharing::Locked,
                            _ => ex::CacheSharing::Shared,
                        },
                        readonly: rm.read_only,
                        uid: rm.uid.unwrap_or(0),
                        gid: rm.gid.unwrap_or(0),
                        mode: rm.mode.unwrap_or(0o755),
                        seed,
                    }));
                }
                kiln_parser::MountType::Tmpfs => {
                    specs.push(ex::MountSpec::Tmpfs(ex::TmpfsMount {
                        target: rm.target.clone().unwrap_or_default(),
                        size: rm.size,
                    }));
                }
                kiln_parser::MountType::Secret => {
                    let sid = rm.effective_id().unwrap_or_default();
                    let contents = self
                        .secrets
                        .iter()
                        .find(|(i, _)| *i == sid)
                        .map(|(_, b)| b.clone());
                    if contents.is_none() && rm.required {
                        return Err(Error::Plan {
                            line: step.line,
                            message: format!("secret {sid}: not found"),
                        });
                    }
                    specs.push(ex::MountSpec::Secret(ex::SecretMount {
                        id: sid,
                        contents,
                        target: if rm.env.is_some() && rm.target.is_none() {
                            None
                        } else {
                            rm.effective_target(0)
                        },
                        env: rm.env.clone(),
                        required: rm.required,
                        mode: rm.effective_mode().unwrap_or(0o400),
                        uid: rm.uid.unwrap_or(0),
                        gid: rm.gid.unwrap_or(0),
                    }));
                }
                kiln_parser::MountType::Ssh => {
                    let sid = rm.id.clone().unwrap_or_else(|| "default".into());
                    let socket = self
                        .req
                        .ssh
                        .iter()
                        .find(|s| s.id == sid)
                        .and_then(|s| s.paths.first().cloned());
                    if socket.is_none() && rm.required {
                        return Err(Error::Plan {
                            line: step.line,
                            message: format!("no SSH key {sid:?} forwarded from the client"),
                        });
                    }
                    specs.push(ex::MountSpec::Ssh(ex::SshMount {
                        id: sid,
                        socket,
                        target: rm.effective_target(ssh_index),
                        required: rm.required,
                        mode: rm.effective_mode().unwrap_or(0o600),
                        uid: rm.uid.unwrap_or(0),
                        gid: rm.gid.unwrap_or(0),
                    }));
                    ssh_index += 1;
                }
            }
        }
        if let Some((name, data)) = &r.script {
            let dir =
                tempfile::tempdir().map_err(io_err("create temp dir", std::env::temp_dir()))?;
            let p = dir.path().join(name);
            std::fs::write(&p, data).map_err(io_err("write", &p))?;
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(io_err("chmod", &p))?;
            // The container's /dev is a fresh tmpfs set up after the mounts, so the script is
            // mounted outside /dev (a stub the executor removes afterwards) and put in place at
            // BuildKit's path, /dev/pipes/NAME, before it runs (its `$0` must be that path).
            specs.push(ex::MountSpec::Bind(ex::BindMount {
                source: p,
                target: format!("/.kiln-pipes/{name}"),
                rw: false,
            }));
            _scratch = dir;
        }
        let mut args = r.args.clone();
        if let Some((name, _)) = &r.script
            && let Some(last) = args.last_mut()
        {
            *last = format!(
                "mkdir -p /dev/pipes && cat /.kiln-pipes/{name} > /dev/pipes/{name} && chmod 0755 /dev/pipes/{name} && exec /dev/pipes/{name}"
            );
        }
        let mut env = r.env.clone();
        env.extend(r.proxy_env.iter().cloned());
        let process = ex::ProcessSpec {
            args,
            env,
            cwd: r.cwd.clone(),
            user: r.user.clone(),
            network: match r.network {
                NetworkMode::Default => ex::Network::Default,
                NetworkMode::Host => ex::Network::Host,
                NetworkMode::None => ex::Network::None,
            },
            hostname: None,
            extra_hosts: Vec::new(),
        };
        let token = ex::CancelToken::new();
        if let Ok(mut t) = self.cancel_tokens.lock() {
            t.push(token.clone());
        }
        let mut on_output = |stream: ex::Stream, line: &[u8]| {
            let text = String::from_utf8_lossy(line);
            let text = text.strip_suffix('\n').unwrap_or(&text).to_string();
            self.progress.event(&ProgressEvent::StepLog {
                step: id,
                stream: if matches!(stream, ex::Stream::Stderr) {
                    LogStream::Stderr
                } else {
                    LogStream::Stdout
                },
                line: text,
            });
        };
        let status = executor.run(&process, &rootfs, &specs, &mut on_output, &token);
        drop(keep_views);
        let status = match status {
            Ok(s) => s,
            Err(ex::Error::Cancelled) => return Err(Error::Cancelled),
            Err(e) => {
                return Err(Error::Exec {
                    line: step.line,
                    command: r.args.join(" "),
                    message: e.to_string(),
                });
            }
        };
        if !status.success() {
            return Err(Error::ProcessFailed {
                line: step.line,
                command: r.args.join(" "),
                exit_code: status.code(),
                tail: status.last_lines().to_vec(),
            });
        }
        Ok(())
    }
}

/// The file name BuildKit gives a downloaded URL: the last path segment, or `__unnamed__`.
fn url_file_name(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    let path = no_query.splitn(4, '/').nth(3).unwrap_or("");
    match path.rsplit('/').next() {
        Some(n) if !n.is_empty() && n != "." => n.to_string(),
        _ => "__unnamed__".to_string(),
    }
}

impl BuildCtx<'_> {
    /// Downloads an ADD URL into a temporary directory (mode 0600, as BuildKit's HTTP source),
    /// checking `--checksum`; returns it as a view and the content digest.
    fn download(
        &self,
        url: &str,
        checksum: Option<&str>,
        line: usize,
    ) -> Result<(View<'_>, String)> {
        use std::io::{Read as _, Write as _};
        let dir = tempfile::tempdir().map_err(io_err("create temp dir", std::env::temp_dir()))?;
        let path = dir.path().join(url_file_name(url));
        let fail = |m: String| Error::Plan {
            line,
            message: format!("failed to download {url}: {m}"),
        };
        let resp = ureq::get(url).call().map_err(|e| fail(e.to_string()))?;
        let mut reader = resp.into_body().into_reader();
        let mut f = std::fs::File::create(&path).map_err(io_err("create", &path))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(|e| fail(e.to_string()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            f.write_all(&buf[..n]).map_err(io_err("write", &path))?;
        }
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(io_err("chmod", &path))?;
        let digest = format!("sha256:{}", hex::encode(h.finalize()));
        if let Some(want) = checksum
            && want != digest
        {
            return Err(Error::Plan {
                line,
                message: format!("digest mismatch for {url}: expected {want}, got {digest}"),
            });
        }
        Ok((
            View {
                snapshotter: self.snapshotter(),
                key: None,
                mounted: None,
                empty: Some(dir),
            },
            digest,
        ))
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
