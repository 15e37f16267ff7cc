//! The one request model: how the solver is set up ([`SolverConfig`]), what one build asks for
//! ([`BuildRequest`], used as it is by the `kiln` facade and CLI), and what it returns
//! ([`BuildOutcome`]). Plain data; the comma-separated specs parse in [`spec`]. Nothing here
//! reads the process environment: the CLI maps `SOURCE_DATE_EPOCH`, `SSH_AUTH_SOCK` and
//! `DOCKER_CONFIG` onto fields.

use std::collections::BTreeMap;
use std::path::PathBuf;

pub mod spec;

pub use spec::{
    CacheSpec, Compression, Destination, Dockerfile, DockerfileText, NetworkMode, OutputSpec,
    SecretSource, SecretSpec, SshSpec,
};

/// How the solver is set up; one [`crate::Solver`] can run many builds.
#[derive(Debug, Clone)]
pub struct SolverConfig {
    /// The state directory (content store, snapshots, cache records, context cache).
    pub state_dir: PathBuf,
    /// At most this many steps run at once (0: number of cores).
    pub jobs: usize,
    /// The binary the executor re-executes as the container init (any binary that links
    /// kiln-executor). `None`: the current executable.
    pub executor_init_binary: Option<PathBuf>,
    /// Snapshot driver selection.
    pub snapshot_driver: kiln_snapshotter::DriverChoice,
    /// Registries reached over plain HTTP besides loopback ones (`--insecure-registry`).
    pub insecure_registries: Vec<String>,
    /// Where docker's `config.json` (registry credentials) is looked for; `None`: nowhere
    /// (the CLI passes `$DOCKER_CONFIG` or `~/.docker`).
    pub docker_config_dir: Option<PathBuf>,
    /// Credentials for pushing and pulling, before `config.json`'s.
    pub credentials: Vec<Credentials>,
    /// Threads of the layer compressors of exports and pushes (0: one per core; the bytes
    /// are the same for any count).
    pub compress_threads: usize,
}

impl SolverConfig {
    /// The registry client options of this config; with `registry`, that registry's
    /// [`Credentials`] (if any are configured) are used.
    pub(crate) fn registry_options(&self, registry: Option<&str>) -> kiln_image::RegistryOptions {
        kiln_image::RegistryOptions {
            insecure_registries: self.insecure_registries.clone(),
            docker_config_dir: self
                .docker_config_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/nonexistent")),
            credentials: registry.and_then(|host| {
                self.credentials
                    .iter()
                    .find(|c| c.registry == host)
                    .map(|c| kiln_image::Credentials {
                        username: c.username.clone(),
                        password: c.password.clone(),
                    })
            }),
            ..kiln_image::RegistryOptions::default()
        }
    }
}

/// Credentials for one registry, used to pull base images and push results.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Registry host, e.g. `ghcr.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Credentials")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl SolverConfig {
    /// A config with defaults for everything but the state directory.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            jobs: 0,
            executor_init_binary: None,
            snapshot_driver: kiln_snapshotter::DriverChoice::Auto,
            insecure_registries: Vec::new(),
            docker_config_dir: None,
            credentials: Vec::new(),
            compress_threads: 0,
        }
    }
}

/// Everything that describes one build: the context, the Dockerfile, arguments and outputs.
///
/// ```
/// let mut request = kiln_solver::BuildRequest::new("examples/hello");
/// request.tags.push("hello:latest".into());
/// request.build_args.insert("GREETING".into(), "hi".into());
/// request.outputs.push("type=oci,dest=hello.tar".parse().unwrap());
/// ```
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// The build context directory (read in place).
    pub context: PathBuf,
    /// The Dockerfile (default: `Dockerfile` in the context).
    pub dockerfile: Dockerfile,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// The stage to build (default: the last one).
    pub target: Option<String>,
    /// The platforms to build for (`--platform`); empty: the machine's own, with the base
    /// images' os/architecture kept in the image. Several give an image index, one image per
    /// platform, built in one DAG.
    pub platforms: Vec<kiln_image::Platform>,
    /// Names to tag the image with in kiln's store (`-t`).
    pub tags: Vec<String>,
    /// Labels added to the image config.
    pub labels: BTreeMap<String, String>,
    /// Ignore the cache for every step.
    pub no_cache: bool,
    /// Ignore the cache for the steps of these stages only.
    pub no_cache_filter: Vec<String>,
    /// Always look up base images in their registry, even when they are in the store.
    pub pull: bool,
    /// Network mode of `RUN` steps.
    pub network: NetworkMode,
    /// Secrets for `RUN --mount=type=secret`.
    pub secrets: Vec<SecretSpec>,
    /// SSH agents or keys for `RUN --mount=type=ssh`.
    pub ssh: Vec<SshSpec>,
    /// The agent socket an [`SshSpec`] without paths (`--ssh default`) forwards; the CLI sets
    /// it from `$SSH_AUTH_SOCK`.
    pub ssh_auth_sock: Option<PathBuf>,
    /// Where to write the result (besides kiln's store); with tags and no `type=image`
    /// output, the image is tagged in the store too.
    pub outputs: Vec<OutputSpec>,
    /// Caches to import.
    pub cache_from: Vec<CacheSpec>,
    /// Caches to export.
    pub cache_to: Vec<CacheSpec>,
    /// `SOURCE_DATE_EPOCH` (seconds since the epoch): created times, and with
    /// `rewrite-timestamp=true` file mtimes. The library never reads the environment: the CLI
    /// maps it here. `--build-arg SOURCE_DATE_EPOCH=N` takes precedence, as in BuildKit.
    pub source_date_epoch: Option<i64>,
}

impl BuildRequest {
    /// The platforms the build makes images for: [`BuildRequest::platforms`] without
    /// repeats, else the host's.
    pub fn target_platforms(&self) -> Vec<kiln_image::Platform> {
        let mut out: Vec<kiln_image::Platform> = Vec::new();
        for p in &self.platforms {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        if out.is_empty() {
            out.push(kiln_image::Platform::host());
        }
        out
    }

    /// A request to build `context` with its own `Dockerfile` and everything else at its
    /// default.
    pub fn new(context: impl Into<PathBuf>) -> Self {
        Self {
            context: context.into(),
            ..Self::default()
        }
    }

    /// The build's `SOURCE_DATE_EPOCH`: `--build-arg SOURCE_DATE_EPOCH=N`, else
    /// [`BuildRequest::source_date_epoch`].
    pub fn epoch(&self) -> Option<i64> {
        self.build_args
            .get("SOURCE_DATE_EPOCH")
            .and_then(|v| v.trim().parse::<i64>().ok())
            .or(self.source_date_epoch)
    }

    /// Whether layer mtimes are clamped: any OCI output asks for `rewrite-timestamp=true`
    /// (the layers are made once for every output, so the others get them too).
    pub fn rewrite_timestamp(&self) -> bool {
        self.outputs.iter().any(|o| {
            matches!(
                o,
                OutputSpec::Oci {
                    rewrite_timestamp: true,
                    ..
                }
            )
        })
    }

    /// The epoch layer mtimes are clamped to (`rewrite-timestamp=true` with an epoch).
    pub fn layer_epoch(&self) -> Option<i64> {
        self.epoch().filter(|_| self.rewrite_timestamp())
    }
}
/// What a successful build produced.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// Digest of the image manifest, `sha256:...`.
    pub manifest_digest: String,
    /// Digest of the image config (the image id), `sha256:...`.
    pub config_digest: String,
    /// The image config as written.
    pub config: kiln_image::ImageConfig,
    /// The image config's bytes exactly as stored: they hash to `config_digest`.
    pub config_bytes: Vec<u8>,
    /// Names the image was tagged or exported as.
    pub names: Vec<String>,
    /// Steps run and steps taken from the cache.
    pub steps_run: usize,
    /// Steps whose result came from the cache.
    pub steps_cached: usize,
    /// Non-fatal warnings (also sent as progress events).
    pub warnings: Vec<String>,
    /// With several platforms: the digest of the image index over them (what the names
    /// point at). The manifest and config digests above are then the first platform's.
    pub index_digest: Option<String>,
    /// Each platform's image, in the order asked for (one entry for a one-platform build).
    pub platforms: Vec<PlatformImage>,
}

/// One platform's image of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformImage {
    /// The platform (`linux/arm64`).
    pub platform: kiln_image::Platform,
    /// Digest of its manifest.
    pub manifest_digest: String,
    /// Digest of its config (its image id).
    pub config_digest: String,
}

/// Where a build cache lives, as the cache import and export use it (kiln's own format: an
/// OCI manifest whose config maps step cache keys to their layers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CacheLocation {
    /// A registry reference (`type=registry,ref=REF`).
    Registry(String),
    /// An OCI image layout directory (`type=local,src=DIR` / `dest=DIR`).
    Local(PathBuf),
}

/// One `--cache-to` destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheExport {
    /// Where to write the cache.
    pub(crate) location: CacheLocation,
    /// `mode=max`: every step built; else (`min`) only the steps of the final image.
    pub(crate) max: bool,
    /// `cache-mounts=true`: also the content of the build's `RUN --mount=type=cache` directories.
    pub(crate) cache_mounts: bool,
}

impl CacheExport {
    /// The export of a `--cache-from/--cache-to` spec (`None`: a type kiln does not support).
    pub(crate) fn of(spec: &CacheSpec) -> Option<Self> {
        match spec {
            CacheSpec::Local {
                path,
                max,
                cache_mounts,
            } => Some(Self {
                location: CacheLocation::Local(path.clone()),
                max: *max,
                cache_mounts: *cache_mounts,
            }),
            CacheSpec::Registry {
                reference,
                max,
                cache_mounts,
            } => Some(Self {
                location: CacheLocation::Registry(reference.clone()),
                max: *max,
                cache_mounts: *cache_mounts,
            }),
            CacheSpec::Inline | CacheSpec::Unsupported(_) => None,
        }
    }
}
