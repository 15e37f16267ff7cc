//! The solver's public request and result types: what a caller (the `kiln` CLI, an embedder)
//! asks for, and what a build returns. Plain data, no behaviour beyond parsing the
//! `--output`, `--secret` and `--ssh` strings the CLI accepts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{Error, Result};

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
        }
    }
}

/// Where the Dockerfile comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerfileSource {
    /// `<context>/Dockerfile`.
    Default,
    /// A file path (relative paths are taken from the current directory).
    Path(PathBuf),
    /// The Dockerfile's bytes (e.g. read from stdin), with a display name.
    Bytes {
        /// Display name used in errors (`Dockerfile`).
        name: String,
        /// The content.
        content: Vec<u8>,
    },
}

/// The network mode of RUN steps (`--network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// The host network (BuildKit's default sandbox network on this engine).
    #[default]
    Default,
    /// The host network, explicitly.
    Host,
    /// No network: a namespace with loopback only.
    None,
}

/// One `--secret id=ID,src=PATH` or `--secret id=ID,env=VAR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// The id RUN mounts refer to.
    pub id: String,
    /// Where the value comes from.
    pub source: SecretSource,
}

/// The origin of a secret's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file on the host.
    File(PathBuf),
    /// An environment variable of the calling process.
    Env(String),
    /// The bytes themselves (embedders).
    Bytes(Vec<u8>),
}

impl SecretSpec {
    /// Parses the CLI form: `id=x,src=path`, `id=x,env=VAR`, `id=x` (env var `x` or file).
    pub fn parse(s: &str) -> Result<Self> {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        for part in s.split(',') {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            match k.trim() {
                "id" => id = Some(v.to_string()),
                "src" | "source" => src = Some(v.to_string()),
                "env" => env = Some(v.to_string()),
                "type" => {}
                other => {
                    return Err(Error::Invalid {
                        what: "secret",
                        message: format!("unexpected key `{other}` in `{s}`"),
                    });
                }
            }
        }
        let id = id.or_else(|| env.clone()).or_else(|| {
            src.as_ref().and_then(|p| {
                std::path::Path::new(p)
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
            })
        });
        let Some(id) = id.filter(|i| !i.is_empty()) else {
            return Err(Error::Invalid {
                what: "secret",
                message: format!("`{s}` has no id"),
            });
        };
        let source = match (src, env) {
            (Some(p), _) => SecretSource::File(PathBuf::from(p)),
            (None, Some(e)) => SecretSource::Env(e),
            (None, None) => SecretSource::Env(id.clone()),
        };
        Ok(Self { id, source })
    }
}

/// One `--ssh id=socket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSpec {
    /// The id (`default` when not given).
    pub id: String,
    /// Agent socket path(s).
    pub paths: Vec<PathBuf>,
}

impl SshSpec {
    /// Parses `default`, `default=$SSH_AUTH_SOCK`, `id=/path/sock`.
    pub fn parse(s: &str) -> Result<Self> {
        let (id, paths) = match s.split_once('=') {
            Some((id, p)) => (id.to_string(), p.split(',').map(PathBuf::from).collect()),
            None => (
                s.to_string(),
                std::env::var_os("SSH_AUTH_SOCK")
                    .map(PathBuf::from)
                    .into_iter()
                    .collect(),
            ),
        };
        if id.is_empty() {
            return Err(Error::Invalid {
                what: "ssh",
                message: format!("`{s}` has no id"),
            });
        }
        Ok(Self { id, paths })
    }
}

/// Where the built image goes (`--output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    /// Stored and tagged in the local content store (`type=image`, default with tags).
    Image {
        /// Extra names (`name=a,b`), on top of the request's tags.
        names: Vec<String>,
    },
    /// An OCI image layout, as a tar (default) or a directory (`tar=false`).
    Oci {
        /// Destination file or directory.
        dest: PathBuf,
        /// Write a tar archive (`true`) or a directory.
        tar: bool,
    },
    /// A docker-archive tar (`docker load`).
    Docker {
        /// Destination file.
        dest: PathBuf,
    },
    /// The final root filesystem written to a directory.
    Local {
        /// Destination directory.
        dest: PathBuf,
    },
    /// The final root filesystem as a tar file.
    Tar {
        /// Destination file (`-` is not supported here).
        dest: PathBuf,
    },
}

impl OutputSpec {
    /// Parses the CLI form `type=oci,dest=out.tar` (also `dest=DIR` alone for `local`).
    pub fn parse(s: &str) -> Result<Self> {
        let mut kv = BTreeMap::new();
        for part in s.split(',') {
            match part.split_once('=') {
                Some((k, v)) => {
                    kv.insert(k.trim().to_string(), v.to_string());
                }
                None if !part.is_empty() => {
                    kv.insert(part.trim().to_string(), "true".to_string());
                }
                None => {}
            }
        }
        let ty = kv
            .get("type")
            .cloned()
            .unwrap_or_else(|| "local".to_string());
        let dest = kv.get("dest").map(PathBuf::from);
        let need_dest = |ty: &str| {
            dest.clone().ok_or_else(|| Error::Invalid {
                what: "output",
                message: format!("type={ty} needs dest=PATH"),
            })
        };
        Ok(match ty.as_str() {
            "image" | "registry" => OutputSpec::Image {
                names: kv
                    .get("name")
                    .map(|n| n.split(',').map(String::from).collect())
                    .unwrap_or_default(),
            },
            "oci" => OutputSpec::Oci {
                dest: need_dest("oci")?,
                tar: kv.get("tar").is_none_or(|v| v != "false"),
            },
            "docker" => OutputSpec::Docker {
                dest: need_dest("docker")?,
            },
            "local" => OutputSpec::Local {
                dest: need_dest("local")?,
            },
            "tar" => OutputSpec::Tar {
                dest: need_dest("tar")?,
            },
            other => {
                return Err(Error::Invalid {
                    what: "output",
                    message: format!("unknown output type `{other}`"),
                });
            }
        })
    }
}

/// Everything one build needs.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The build context directory (read in place).
    pub context_dir: PathBuf,
    /// The Dockerfile.
    pub dockerfile: DockerfileSource,
    /// `--build-arg K=V`, in order.
    pub build_args: Vec<(String, String)>,
    /// `--target`.
    pub target: Option<String>,
    /// `--no-cache`: run every step again.
    pub no_cache: bool,
    /// `--no-cache-filter`: stages whose steps run again.
    pub no_cache_filter: Vec<String>,
    /// `--pull`: re-resolve base images in the registry even when stored.
    pub pull: bool,
    /// `--label K=V` added to the final image.
    pub labels: Vec<(String, String)>,
    /// `--secret`.
    pub secrets: Vec<SecretSpec>,
    /// `--ssh`.
    pub ssh: Vec<SshSpec>,
    /// `--network` for RUN steps.
    pub network: NetworkMode,
    /// `-t` names.
    pub tags: Vec<String>,
    /// `--output`; empty with tags means `type=image`.
    pub outputs: Vec<OutputSpec>,
    /// `--cache-from`: build caches whose steps are reused on a local cache miss.
    pub cache_from: Vec<CacheLocation>,
    /// `--cache-to`: where this build's step results are exported.
    pub cache_to: Vec<CacheExport>,
    /// `SOURCE_DATE_EPOCH` (seconds) for created times; `--build-arg SOURCE_DATE_EPOCH=N`
    /// takes precedence, as BuildKit takes the epoch from that build arg.
    pub source_date_epoch: Option<i64>,
    /// `rewrite-timestamp=true`: with an epoch, clamp every file mtime in the layers this
    /// build makes to it (the epoch is then part of every step's cache key).
    pub rewrite_timestamp: bool,
}

/// Where a build cache lives (kiln's own format: an OCI manifest whose config maps step cache
/// keys to their layers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// A registry reference (`type=registry,ref=REF`).
    Registry(String),
    /// An OCI image layout directory (`type=local,src=DIR` / `dest=DIR`).
    Local(PathBuf),
}

/// One `--cache-to` destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExport {
    /// Where to write the cache.
    pub location: CacheLocation,
    /// `mode=max`: every step built; else (`min`) only the steps of the final image.
    pub max: bool,
}

impl BuildRequest {
    /// A request for `context_dir` with everything else at its default.
    pub fn new(context_dir: impl Into<PathBuf>) -> Self {
        Self {
            context_dir: context_dir.into(),
            dockerfile: DockerfileSource::Default,
            build_args: Vec::new(),
            target: None,
            no_cache: false,
            no_cache_filter: Vec::new(),
            pull: false,
            labels: Vec::new(),
            secrets: Vec::new(),
            ssh: Vec::new(),
            network: NetworkMode::Default,
            tags: Vec::new(),
            outputs: Vec::new(),
            cache_from: Vec::new(),
            cache_to: Vec::new(),
            source_date_epoch: None,
            rewrite_timestamp: false,
        }
    }

    /// The build's `SOURCE_DATE_EPOCH`: the last `--build-arg SOURCE_DATE_EPOCH=N`, else
    /// [`BuildRequest::source_date_epoch`].
    pub fn epoch(&self) -> Option<i64> {
        self.build_args
            .iter()
            .rev()
            .find(|(k, _)| k == "SOURCE_DATE_EPOCH")
            .and_then(|(_, v)| v.trim().parse::<i64>().ok())
            .or(self.source_date_epoch)
    }

    /// The epoch layer mtimes are clamped to (`rewrite-timestamp=true` with an epoch).
    pub fn layer_epoch(&self) -> Option<i64> {
        self.epoch().filter(|_| self.rewrite_timestamp)
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
    /// Steps run and steps taken from the cache.
    pub steps_run: usize,
    /// Steps whose result came from the cache.
    pub steps_cached: usize,
    /// Non-fatal warnings (also sent as progress events).
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_cli_forms() {
        assert_eq!(
            OutputSpec::parse("type=oci,dest=/tmp/o.tar").expect("oci"),
            OutputSpec::Oci {
                dest: "/tmp/o.tar".into(),
                tar: true
            }
        );
        assert_eq!(
            OutputSpec::parse("type=oci,dest=/tmp/o,tar=false").expect("oci dir"),
            OutputSpec::Oci {
                dest: "/tmp/o".into(),
                tar: false
            }
        );
        assert!(OutputSpec::parse("type=docker").is_err());
        assert!(OutputSpec::parse("type=nope,dest=x").is_err());
        let s = SecretSpec::parse("id=token,src=/tmp/t").expect("secret");
        assert_eq!(s.id, "token");
        assert_eq!(s.source, SecretSource::File("/tmp/t".into()));
        assert_eq!(
            SecretSpec::parse("id=x,env=Y").expect("env").source,
            SecretSource::Env("Y".into())
        );
        assert!(SecretSpec::parse("src=").is_err());
    }
}
