//! The [`Builder`]: the one entry point an embedder calls. It holds the machine-level settings
//! (state directory, parallelism, registry credentials) and turns [`BuildOptions`] into a solver
//! request; the solver does the work and reports through the caller's [`Progress`].

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use kiln_image::{
    CompressionOptions, Digest, Image, Platform, Reference, RegistryClient, RegistryOptions,
    convert_image, export_docker, export_oci,
};
use kiln_solver::progress::{Progress, ProgressEvent};
use kiln_solver::{
    self as solver, BuildRequest, CancelHandle, DockerfileSource, PruneOptions, PruneReport,
    Solver, SolverConfig,
};

use crate::options::{
    BuildOptions, CacheSpec, Compression, Destination, Dockerfile, NetworkMode, OutputSpec,
    SecretSource,
};

/// What can go wrong in a build, as seen through the facade.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A build option could not be parsed or is inconsistent.
    #[error("invalid {option}: {message}")]
    InvalidOption {
        /// The flag or field concerned, e.g. `--output`.
        option: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// `--platform` named something other than linux/amd64.
    #[error("platform `{0}` is not supported yet: kiln builds linux/amd64 images only")]
    UnsupportedPlatform(String),
    /// The Dockerfile could not be read.
    #[error("cannot read Dockerfile `{path}`: {source}")]
    ReadDockerfile {
        /// The path that was tried.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The Dockerfile is not valid; the error names the line.
    #[error("{0}")]
    Parse(#[source] kiln_parser::Error),
    /// The build ran and failed: a failing step, a missing file, a registry error...
    #[error("{0}")]
    Solve(#[source] kiln_solver::Error),
    /// Pushing the built image failed.
    #[error("cannot push `{name}`: {message}")]
    Push {
        /// The name pushed to.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// Writing an output failed.
    #[error("cannot write the output `{dest}`: {message}")]
    Export {
        /// The destination.
        dest: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A local file operation of the facade failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Any other failure, described.
    #[error("{0}")]
    Build(String),
}

impl Error {
    /// Whether the build stopped because its [`CancelHandle`] was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Solve(kiln_solver::Error::Cancelled))
    }

    /// The Dockerfile line (1-based, first and last) the error points at, when it is known.
    pub fn dockerfile_lines(&self) -> Option<(usize, usize)> {
        match self {
            Error::Parse(kiln_parser::Error::Syntax { line, end_line, .. }) => {
                Some((*line, *end_line))
            }
            Error::Solve(
                kiln_solver::Error::Plan { line, .. }
                | kiln_solver::Error::SourceNotFound { line, .. }
                | kiln_solver::Error::StepFailed { line, .. }
                | kiln_solver::Error::ProcessFailed { line, .. }
                | kiln_solver::Error::Exec { line, .. },
            ) if *line > 0 => Some((*line, *line)),
            _ => None,
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

/// The result of a successful build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildResult {
    /// Digest of the image manifest, `sha256:...`.
    pub manifest_digest: String,
    /// Digest of the image config, `sha256:...` (docker's image id).
    pub config_digest: String,
    /// The image config (OCI image config JSON, as stored).
    pub config: Vec<u8>,
    /// Names the image was tagged or exported as.
    pub names: Vec<String>,
}

/// Builds images. Cheap to create; one per state directory is enough, and it may be shared
/// between threads.
///
/// `RUN` steps run in a child process that re-executes the current executable (or the binary
/// given to [`Builder::init_binary`]) as the container init; the init starts from a
/// constructor of the executor before `main`, so nothing needs to be called first.
#[derive(Debug, Clone)]
pub struct Builder {
    state_dir: PathBuf,
    jobs: usize,
    credentials: Vec<Credentials>,
    init_binary: Option<PathBuf>,
}

impl Builder {
    /// A builder keeping its content store, snapshots and cache in `state_dir`, running as many
    /// steps at once as there are cores.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            jobs: 0,
            credentials: Vec::new(),
            init_binary: None,
        }
    }

    /// Runs at most `jobs` steps at once (0: one per core).
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs;
        self
    }

    /// Adds credentials for a registry, used to push (instead of `~/.docker/config.json`;
    /// base images are pulled with the credentials of `~/.docker/config.json`).
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials.push(credentials);
        self
    }

    /// The binary `RUN` steps re-execute as their container init (default: the current
    /// executable). Its `main` must call [`crate::init_main_if_requested`] first.
    pub fn init_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.init_binary = Some(path.into());
        self
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Removes build cache: dangling cache records (whose snapshot is gone), every record with
    /// [`PruneOptions::all`], or the oldest records until snapshots fit in
    /// [`PruneOptions::keep_storage`] bytes; then the snapshots no record needs any more.
    pub fn prune(&self, options: &PruneOptions) -> Result<PruneReport, Error> {
        let mut config = SolverConfig::new(&self.state_dir);
        config.executor_init_binary.clone_from(&self.init_binary);
        let solver = Solver::new(config).map_err(Error::Solve)?;
        solver.prune(options).map_err(Error::Solve)
    }

    /// Builds `options`, reporting to `progress`, and returns the image's digests and config.
    pub fn build(
        &self,
        options: &BuildOptions,
        progress: &dyn Progress,
    ) -> Result<BuildResult, Error> {
        self.build_cancellable(options, progress, &CancelHandle::new())
    }

    /// [`Builder::build`], stopped when `cancel` is cancelled from another thread (a signal
    /// handler's, a UI's): running steps are killed, the build's mounts and temporary
    /// snapshots released, `BuildFinished { success: false }` reported, and the result is
    /// `Error::Solve(kiln_solver::Error::Cancelled)` (see [`Error::is_cancelled`]). The library
    /// never installs signal handlers; the `kiln` binary cancels on SIGINT and SIGTERM.
    ///
    /// ```no_run
    /// # fn f(b: &kiln::Builder, o: &kiln::BuildOptions) {
    /// let cancel = kiln::CancelHandle::new();
    /// let stop = cancel.clone();
    /// std::thread::spawn(move || {
    ///     std::thread::sleep(std::time::Duration::from_secs(60));
    ///     stop.cancel();
    /// });
    /// match b.build_cancellable(o, &kiln::NoProgress, &cancel) {
    ///     Err(e) if e.is_cancelled() => eprintln!("took too long"),
    ///     other => println!("{other:?}"),
    /// }
    /// # }
    /// ```
    pub fn build_cancellable(
        &self,
        options: &BuildOptions,
        progress: &dyn Progress,
        cancel: &CancelHandle,
    ) -> Result<BuildResult, Error> {
        let (name, text) = read_dockerfile(options)?;
        // Parse up front: a syntax error is reported with its line before any work starts.
        kiln_parser::parse(text.as_bytes()).map_err(|e| Error::Parse(e.with_file(&name)))?;
        let mut warnings = Vec::new();
        for (flag, specs) in [
            ("--cache-from", &options.cache_from),
            ("--cache-to", &options.cache_to),
        ] {
            for spec in specs {
                let kind = match spec {
                    CacheSpec::Inline => "inline",
                    CacheSpec::Unsupported(k) => k.as_str(),
                    CacheSpec::Local { .. } | CacheSpec::Registry { .. } => continue,
                };
                warnings.push(format!(
                    "`{flag} type={kind}` is not supported yet; kiln uses its local cache in the state directory"
                ));
            }
        }
        let progress = &WarnAfterStart {
            inner: progress,
            pending: Mutex::new(warnings),
        };
        // An output to stdout is written to a file in the state directory first, then copied.
        let to_stdout = options.outputs.iter().any(|o| {
            matches!(
                o,
                OutputSpec::Oci {
                    dest: Destination::Stdout,
                    ..
                } | OutputSpec::Docker {
                    dest: Destination::Stdout,
                    ..
                } | OutputSpec::Tar {
                    dest: Destination::Stdout
                }
            )
        });
        // Named after this process under `<state>/tmp`: one a killed build leaves is removed
        // by the next start.
        let staging = if to_stdout {
            let tmp = self.state_dir.join("tmp");
            std::fs::create_dir_all(&tmp)
                .and_then(|()| {
                    tempfile::Builder::new()
                        .prefix(&format!(
                            "{}-out-",
                            kiln_snapshotter::Owner::current().tag()
                        ))
                        .tempdir_in(&tmp)
                })
                .map(Some)
                .map_err(|source| Error::Io {
                    what: format!("create a temporary directory in `{}`", tmp.display()),
                    source,
                })?
        } else {
            None
        };
        let plan = OutputPlan::new(
            options,
            staging
                .as_ref()
                .map_or(Path::new("/nonexistent"), |d| d.path()),
        )?;
        let request = Self::request(options, text, &name, &plan);

        let mut config = SolverConfig::new(&self.state_dir);
        config.jobs = self.jobs;
        config.executor_init_binary.clone_from(&self.init_binary);
        let solver = Solver::new(config).map_err(Error::Solve)?;
        let outcome = solver.build_cancellable(&request, progress, cancel);
        progress.flush();
        let outcome = outcome.map_err(Error::Solve)?;

        plan.export_recompressed(&solver, &outcome.manifest_digest, &request.tags)?;
        if let Some(staged) = &plan.to_stdout {
            let mut f = std::fs::File::open(staged).map_err(|source| Error::Io {
                what: format!("open `{}`", staged.display()),
                source,
            })?;
            let mut stdout = std::io::stdout().lock();
            std::io::copy(&mut f, &mut stdout)
                .and_then(|_| stdout.flush())
                .map_err(|source| Error::Io {
                    what: "write the output to stdout".into(),
                    source,
                })?;
        }
        for name in &plan.push {
            self.push(&solver, name)?;
        }
        let config = serde_json::to_vec(&outcome.config)
            .map_err(|e| Error::Build(format!("cannot encode the image config: {e}")))?;
        Ok(BuildResult {
            manifest_digest: outcome.manifest_digest,
            config_digest: outcome.config_digest,
            config,
            names: request.tags,
        })
    }

    fn request(
        options: &BuildOptions,
        text: String,
        name: &str,
        plan: &OutputPlan,
    ) -> BuildRequest {
        let mut req = BuildRequest::new(&options.context);
        req.dockerfile = match &options.dockerfile {
            Dockerfile::InContext => DockerfileSource::Default,
            Dockerfile::Path(p) => DockerfileSource::Path(p.clone()),
            Dockerfile::Text(_) => DockerfileSource::Bytes {
                name: name.to_owned(),
                content: text.into_bytes(),
            },
        };
        req.build_args = options
            .build_args
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        req.target.clone_from(&options.target);
        req.cache_from = options
            .cache_from
            .iter()
            .filter_map(|c| cache_location(c).map(|(l, _)| l))
            .collect();
        req.cache_to = options
            .cache_to
            .iter()
            .filter_map(cache_location)
            .map(|(location, max)| solver::CacheExport { location, max })
            .collect();
        req.source_date_epoch = options.source_date_epoch;
        // The layers are made once for every output: any OCI output asking for clamped
        // timestamps gets them (and so do the others).
        req.rewrite_timestamp = options.outputs.iter().any(|o| {
            matches!(
                o,
                OutputSpec::Oci {
                    rewrite_timestamp: true,
                    ..
                }
            )
        });
        req.no_cache = options.no_cache;
        req.no_cache_filter.clone_from(&options.no_cache_filter);
        req.pull = options.pull;
        req.labels = options
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        req.secrets = options
            .secrets
            .iter()
            .map(|s| solver::SecretSpec {
                id: s.id.clone(),
                source: match &s.source {
                    SecretSource::File(p) => solver::SecretSource::File(p.clone()),
                    SecretSource::Env(v) => solver::SecretSource::Env(v.clone()),
                },
            })
            .collect();
        req.ssh = options
            .ssh
            .iter()
            .map(|s| solver::SshSpec {
                id: s.id.clone(),
                paths: if s.paths.is_empty() {
                    std::env::var_os("SSH_AUTH_SOCK")
                        .map(PathBuf::from)
                        .into_iter()
                        .collect()
                } else {
                    s.paths.clone()
                },
            })
            .collect();
        req.network = match options.network {
            NetworkMode::Default => solver::NetworkMode::Default,
            NetworkMode::None => solver::NetworkMode::None,
            NetworkMode::Host => solver::NetworkMode::Host,
        };
        let mut tags = options.tags.clone();
        for n in &plan.names {
            if !tags.contains(n) {
                tags.push(n.clone());
            }
        }
        req.tags = tags;
        req.outputs.clone_from(&plan.outputs);
        if !req.tags.is_empty()
            && !req
                .outputs
                .iter()
                .any(|o| matches!(o, solver::OutputSpec::Image { .. }))
        {
            // `-t` always tags in kiln's store, whatever else is exported.
            req.outputs
                .push(solver::OutputSpec::Image { names: Vec::new() });
        }
        req
    }

    fn push(&self, solver: &Solver, name: &str) -> Result<(), Error> {
        let reference = Reference::parse(name).map_err(|e| Error::Push {
            name: name.to_owned(),
            message: e.to_string(),
        })?;
        let store = solver.content_store();
        let image = Image::resolve(store, &reference, &Platform::linux_amd64()).map_err(|e| {
            Error::Push {
                name: name.to_owned(),
                message: e.to_string(),
            }
        })?;
        let mut opts = RegistryOptions::default();
        let host = reference.registry().to_owned();
        opts.credentials = self
            .credentials
            .iter()
            .find(|c| c.registry == host)
            .map(|c| kiln_image::Credentials {
                username: c.username.clone(),
                password: c.password.clone(),
            });
        RegistryClient::new(opts)
            .push(store, &image, &reference)
            .map_err(|e| Error::Push {
                name: name.to_owned(),
                message: e.to_string(),
            })?;
        Ok(())
    }
}

/// Forwards events, and sends the facade's own warnings right after `BuildStarted` so that
/// event streams always begin with it.
struct WarnAfterStart<'a> {
    inner: &'a dyn Progress,
    pending: Mutex<Vec<String>>,
}

impl WarnAfterStart<'_> {
    /// Sends warnings not sent yet (the build ended before it started).
    fn flush(&self) {
        let pending =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        for message in pending {
            self.inner.event(&ProgressEvent::Warning { message });
        }
    }
}

impl Progress for WarnAfterStart<'_> {
    fn event(&self, event: &ProgressEvent) {
        self.inner.event(event);
        if matches!(event, ProgressEvent::BuildStarted { .. }) {
            self.flush();
        }
    }
}

/// The facade's outputs turned into the solver's: stdout destinations staged in a temporary
/// file, `name=`s gathered, pushes remembered for after the build, and archives in another
/// compression than gzip exported by the facade itself after converting the layers.
struct OutputPlan {
    outputs: Vec<solver::OutputSpec>,
    recompressed: Vec<Recompressed>,
    names: Vec<String>,
    push: Vec<String>,
    to_stdout: Option<PathBuf>,
}

/// An OCI or docker archive whose layers are converted to `compression` before export.
struct Recompressed {
    /// `Some(tar)` for OCI (archive or directory), `None` for a docker archive.
    oci_tar: Option<bool>,
    dest: PathBuf,
    compression: Compression,
}

impl OutputPlan {
    fn new(options: &BuildOptions, staging: &Path) -> Result<Self, Error> {
        let mut to_stdout = None;
        let mut dest = |d: &Destination| -> PathBuf {
            match d {
                Destination::Path(p) => p.clone(),
                Destination::Stdout => {
                    let p = staging.join("stdout");
                    to_stdout = Some(p.clone());
                    p
                }
            }
        };
        let mut outputs = Vec::new();
        let mut recompressed = Vec::new();
        let mut names = Vec::new();
        let mut push = Vec::new();
        for o in &options.outputs {
            match o {
                OutputSpec::Oci {
                    dest: d,
                    tar,
                    names: n,
                    compression,
                    ..
                } => {
                    names.extend(n.iter().cloned());
                    if *compression == Compression::Gzip {
                        outputs.push(solver::OutputSpec::Oci {
                            dest: dest(d),
                            tar: *tar,
                        });
                    } else {
                        recompressed.push(Recompressed {
                            oci_tar: Some(*tar),
                            dest: dest(d),
                            compression: *compression,
                        });
                    }
                }
                OutputSpec::Docker {
                    dest: d,
                    names: n,
                    compression,
                    ..
                } => {
                    names.extend(n.iter().cloned());
                    if *compression == Compression::Gzip {
                        outputs.push(solver::OutputSpec::Docker { dest: dest(d) });
                    } else {
                        recompressed.push(Recompressed {
                            oci_tar: None,
                            dest: dest(d),
                            compression: *compression,
                        });
                    }
                }
                OutputSpec::Local { dest: d } => {
                    outputs.push(solver::OutputSpec::Local { dest: d.clone() });
                }
                OutputSpec::Tar { dest: d } => {
                    outputs.push(solver::OutputSpec::Tar { dest: dest(d) });
                }
                OutputSpec::Image {
                    names: n,
                    push: p,
                    compression,
                } => {
                    if *compression != Compression::Gzip {
                        return Err(Error::InvalidOption {
                            option: "--output",
                            message: "`type=image` and `type=registry` support only `compression=gzip` for now".into(),
                        });
                    }
                    if *p {
                        let targets = if n.is_empty() { &options.tags } else { n };
                        if targets.is_empty() {
                            return Err(Error::InvalidOption {
                                option: "--push",
                                message: "nothing to push: name the image with `-t`".into(),
                            });
                        }
                        push.extend(targets.iter().cloned());
                    }
                    outputs.push(solver::OutputSpec::Image { names: n.clone() });
                }
            }
        }
        Ok(Self {
            outputs,
            recompressed,
            names,
            push,
            to_stdout,
        })
    }

    /// Writes the archives in non-default compressions from the stored image.
    fn export_recompressed(
        &self,
        solver: &Solver,
        manifest_digest: &str,
        tags: &[String],
    ) -> Result<(), Error> {
        if self.recompressed.is_empty() {
            return Ok(());
        }
        let store = solver.content_store();
        let export_err = |dest: &Path, e: kiln_image::Error| Error::Export {
            dest: dest.to_path_buf(),
            message: e.to_string(),
        };
        let digest = Digest::parse(manifest_digest).map_err(|e| Error::Build(e.to_string()))?;
        let image = Image::load(store, &digest, &Platform::linux_amd64())
            .map_err(|e| Error::Build(e.to_string()))?;
        let names = tags
            .iter()
            .map(|t| {
                Reference::parse(t).map_err(|e| Error::Build(format!("invalid name `{t}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for r in &self.recompressed {
            let target = CompressionOptions {
                compression: match r.compression {
                    Compression::Gzip => kiln_image::Compression::Gzip,
                    Compression::Zstd => kiln_image::Compression::Zstd,
                    Compression::Uncompressed => kiln_image::Compression::Uncompressed,
                },
                level: None,
            };
            match r.oci_tar {
                Some(tar) => {
                    let converted = convert_image(store, &image, target, false)
                        .map_err(|e| export_err(&r.dest, e))?;
                    export_oci(store, &converted, &names, &r.dest, tar)
                        .map_err(|e| export_err(&r.dest, e))?;
                }
                None => {
                    export_docker(
                        store,
                        &[(image.clone(), names.clone())],
                        Some(target),
                        &r.dest,
                    )
                    .map_err(|e| export_err(&r.dest, e))?;
                }
            }
        }
        Ok(())
    }
}

/// Reads a Dockerfile (or any file named like one) the way BuildKit does: symlinks resolved
/// inside the directory holding it, so a `Dockerfile` linking out of its directory (a hostile
/// context's `Dockerfile -> /etc/shadow`) is missing rather than read and shown in an error.
pub fn read_dockerfile_text(path: &std::path::Path) -> Result<String, Error> {
    let bytes = kiln_fs::read_in_dir(path).map_err(|source| Error::ReadDockerfile {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| Error::ReadDockerfile {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// The Dockerfile's display name and text.
fn read_dockerfile(options: &BuildOptions) -> Result<(String, String), Error> {
    let path = match &options.dockerfile {
        Dockerfile::Text(text) => return Ok(("Dockerfile".into(), text.clone())),
        Dockerfile::InContext => options.context.join("Dockerfile"),
        Dockerfile::Path(p) => p.clone(),
    };
    let text = read_dockerfile_text(&path)?;
    let name = path
        .file_name()
        .map_or_else(|| "Dockerfile".into(), |n| n.to_string_lossy().into_owned());
    Ok((name, text))
}

/// The solver's cache location for a `--cache-from/--cache-to` spec (`None`: unsupported type).
fn cache_location(spec: &CacheSpec) -> Option<(solver::CacheLocation, bool)> {
    match spec {
        CacheSpec::Local { path, max } => Some((solver::CacheLocation::Local(path.clone()), *max)),
        CacheSpec::Registry { reference, max } => {
            Some((solver::CacheLocation::Registry(reference.clone()), *max))
        }
        CacheSpec::Inline | CacheSpec::Unsupported(_) => None,
    }
}
