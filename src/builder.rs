//! The [`Builder`]: the one entry point an embedder calls. It holds the machine-level settings
//! (state directory, parallelism, registry credentials) and turns [`BuildOptions`] into a solver
//! request; the solver does the work and reports through the caller's [`Progress`].

use std::path::{Path, PathBuf};

use kiln_solver::progress::Progress;

use crate::options::{BuildOptions, Dockerfile};

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
    /// The build ran and failed (a parse error, a failing step, a registry error...).
    #[error("{0}")]
    Build(String),
}

impl Error {
    /// The Dockerfile line (1-based, first and last) the error points at, when it is known.
    pub fn dockerfile_lines(&self) -> Option<(usize, usize)> {
        match self {
            Error::Parse(kiln_parser::Error::Syntax { line, end_line, .. }) => {
                Some((*line, *end_line))
            }
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
#[derive(Debug, Clone)]
pub struct Builder {
    state_dir: PathBuf,
    jobs: usize,
    credentials: Vec<Credentials>,
}

impl Builder {
    /// A builder keeping its content store, snapshots and cache in `state_dir`, running as many
    /// steps at once as there are cores.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        let jobs = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            state_dir: state_dir.into(),
            jobs,
            credentials: Vec::new(),
        }
    }

    /// Runs at most `jobs` steps at once (at least 1).
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs.max(1);
        self
    }

    /// Adds credentials for a registry (used before `~/.docker/config.json`).
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials.push(credentials);
        self
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Builds `options`, reporting to `progress`, and returns the image's digests and config.
    pub fn build(
        &self,
        options: &BuildOptions,
        progress: &dyn Progress,
    ) -> Result<BuildResult, Error> {
        let (name, text) = read_dockerfile(options)?;
        // Parse up front: a syntax error is reported with its line before any work starts.
        kiln_parser::parse(text.as_bytes()).map_err(|e| Error::Parse(e.with_file(&name)))?;
        let _ = (progress, self.jobs, &self.credentials);
        Err(Error::Build(
            "the solver is not wired into the facade yet".into(),
        ))
    }
}

/// The Dockerfile's display name and text.
fn read_dockerfile(options: &BuildOptions) -> Result<(String, String), Error> {
    let path = match &options.dockerfile {
        Dockerfile::Text(text) => return Ok(("Dockerfile".into(), text.clone())),
        Dockerfile::InContext => options.context.join("Dockerfile"),
        Dockerfile::Path(p) => p.clone(),
    };
    let text = std::fs::read_to_string(&path).map_err(|source| Error::ReadDockerfile {
        path: path.clone(),
        source,
    })?;
    let name = path
        .file_name()
        .map_or_else(|| "Dockerfile".into(), |n| n.to_string_lossy().into_owned());
    Ok((name, text))
}
