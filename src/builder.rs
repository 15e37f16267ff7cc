//! The [`Builder`]: the one entry point an embedder calls. It holds the machine-level settings
//! (state directory, parallelism, registry credentials, the init binary) and hands the
//! caller's [`BuildRequest`] to the solver unchanged: the request model, the Dockerfile read,
//! the exports and pushes are all the solver's. This layer adds no behaviour of its own.

use std::path::{Path, PathBuf};

use kiln_solver::progress::Progress;
use kiln_solver::{
    BuildRequest, CancelHandle, Credentials, Dockerfile, Error, PruneOptions, PruneReport, Solver,
    SolverConfig,
};

/// The result of a successful build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildResult {
    /// Digest of the image manifest, `sha256:...`.
    pub manifest_digest: String,
    /// Digest of the image config, `sha256:...` (docker's image id).
    pub config_digest: String,
    /// The image config exactly as stored: these bytes hash to `config_digest`.
    pub config: Vec<u8>,
    /// Names the image was tagged or exported as.
    pub names: Vec<String>,
    /// For a build of several platforms: the digest of the image index (what the names point
    /// at); the digests above are then the first platform's image.
    pub index_digest: Option<String>,
}

/// Builds images. Cheap to create; one per state directory is enough, and it may be shared
/// between threads. It reads no environment variable: what the `kiln` command takes from the
/// environment (`DOCKER_CONFIG`, `SOURCE_DATE_EPOCH`, `SSH_AUTH_SOCK`) is given here or in the
/// [`BuildRequest`].
///
/// `RUN` steps run in a child process that re-executes the current executable (or the binary
/// given to [`Builder::init_binary`]) as the container init; the init starts from a
/// constructor of the executor before `main`, so nothing needs to be called first.
#[derive(Debug, Clone)]
pub struct Builder {
    config: SolverConfig,
}

impl Builder {
    /// A builder keeping its content store, snapshots and cache in `state_dir`, running as many
    /// steps at once as there are cores, with no registry credentials.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            config: SolverConfig::new(state_dir),
        }
    }

    /// Runs at most `jobs` steps at once (0: one per core).
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.config.jobs = jobs;
        self
    }

    /// Compresses exported and pushed layers on `threads` threads (0, the default: one per
    /// core). The bytes are the same for any count.
    pub fn compress_threads(mut self, threads: usize) -> Self {
        self.config.compress_threads = threads;
        self
    }

    /// Adds credentials for a registry, used before those of `config.json`.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.config.credentials.push(credentials);
        self
    }

    /// Looks registry credentials up in `<dir>/config.json` (docker's; the `kiln` command
    /// passes `$DOCKER_CONFIG` or `~/.docker`). Without it, only [`Builder::credentials`].
    pub fn docker_config_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.docker_config_dir = Some(dir.into());
        self
    }

    /// The binary `RUN` steps re-execute as their container init (default: the current
    /// executable): any binary that links kiln, such as `kiln` itself.
    pub fn init_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.executor_init_binary = Some(path.into());
        self
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }

    /// Removes build cache: dangling cache records (whose snapshot is gone), every record with
    /// [`PruneOptions::all`], or the oldest records until snapshots fit in
    /// [`PruneOptions::keep_storage`] bytes; then the snapshots no record needs any more.
    pub fn prune(&self, options: &PruneOptions) -> Result<PruneReport, Error> {
        Solver::new(self.config.clone())?.prune(options)
    }

    /// Builds `request`, reporting to `progress`, and returns the image's digests and config.
    pub fn build(
        &self,
        request: &BuildRequest,
        progress: &dyn Progress,
    ) -> Result<BuildResult, Error> {
        self.build_cancellable(request, progress, &CancelHandle::new())
    }

    /// [`Builder::build`], stopped when `cancel` is cancelled from another thread (a signal
    /// handler's, a UI's): running steps are killed, the build's mounts and temporary
    /// snapshots released, `BuildFinished { success: false }` reported, and the result is
    /// [`Error::Cancelled`] (see [`Error::is_cancelled`]). The library never installs signal
    /// handlers; the `kiln` binary cancels on SIGINT and SIGTERM.
    ///
    /// ```no_run
    /// # fn f(b: &kiln::Builder, o: &kiln::BuildRequest) {
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
        request: &BuildRequest,
        progress: &dyn Progress,
        cancel: &CancelHandle,
    ) -> Result<BuildResult, Error> {
        let solver = Solver::new(self.config.clone())?;
        let outcome = solver.build_cancellable(request, progress, cancel)?;
        Ok(BuildResult {
            manifest_digest: outcome.manifest_digest,
            config_digest: outcome.config_digest,
            config: outcome.config_bytes,
            names: outcome.names,
            index_digest: outcome.index_digest,
        })
    }
}

/// Reads a Dockerfile (or any file named like one) the way a build does: symlinks resolved
/// inside the directory holding it, so a `Dockerfile` linking out of its directory (a hostile
/// context's `Dockerfile -> /etc/shadow`) is missing rather than read and shown in an error.
pub fn read_dockerfile_text(path: &Path) -> Result<String, Error> {
    Ok(Dockerfile::Path(path.to_path_buf())
        .read(Path::new("."))?
        .text)
}
