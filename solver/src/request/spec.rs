//! The small specs of a [`super::BuildRequest`] that docker/buildx users know as comma-separated
//! strings (`--output`, `--secret`, `--ssh`, `--cache-from`, `--cache-to`, `--network`). Each
//! parses with [`std::str::FromStr`] in buildx's syntax, so the CLI and embedders accept exactly
//! the same text. Parsing is pure: it reads no environment and no file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::Error;

/// Where the Dockerfile comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Dockerfile {
    /// `Dockerfile` at the root of the build context (docker's default).
    #[default]
    InContext,
    /// A file on disk (docker's `-f PATH`; relative paths are relative to the current directory).
    Path(PathBuf),
    /// The Dockerfile's text itself (docker's `-f -`).
    Text(String),
    /// A Dockerfile the caller has already read with [`Dockerfile::read`] (the CLI does, to
    /// show excerpts and run the checks): the build uses it as it is and reads nothing again.
    Read(DockerfileText),
}

/// A Dockerfile's text with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerfileText {
    /// Display name used in errors (`Dockerfile`, `Dockerfile.dev`).
    pub name: String,
    /// The file it was read from (`None` for text given directly); its
    /// `<name>.dockerignore` is preferred to the context's `.dockerignore`, as in BuildKit.
    pub path: Option<PathBuf>,
    /// The content.
    pub text: String,
}

impl Dockerfile {
    /// Reads the Dockerfile for a build of `context`, as BuildKit does: symlinks resolved
    /// inside the directory holding it, so a `Dockerfile` linking out of its directory (a
    /// hostile context's `Dockerfile -> /etc/shadow`) is missing rather than read and shown.
    pub fn read(&self, context: &Path) -> Result<DockerfileText, Error> {
        let path = match self {
            Self::Read(t) => return Ok(t.clone()),
            Self::Text(text) => {
                return Ok(DockerfileText {
                    name: "Dockerfile".into(),
                    path: None,
                    text: text.clone(),
                });
            }
            Self::InContext => context.join("Dockerfile"),
            Self::Path(p) => p.clone(),
        };
        let read_err = |source| Error::ReadDockerfile {
            path: path.clone(),
            source,
        };
        let bytes = kiln_fs::read_in_dir(&path).map_err(read_err)?;
        let text = String::from_utf8(bytes)
            .map_err(|e| read_err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let name = path
            .file_name()
            .map_or_else(|| "Dockerfile".into(), |n| n.to_string_lossy().into_owned());
        Ok(DockerfileText {
            name,
            path: Some(path),
            text,
        })
    }
}

/// Network mode of `RUN` steps (`--network`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// The default: a private network namespace with outbound access through slirp4netns
    /// (the host's network, with a warning, when slirp4netns is not installed).
    #[default]
    Default,
    /// No network: only a loopback interface.
    None,
    /// The host's network namespace.
    Host,
}

impl FromStr for NetworkMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "default" => Ok(Self::Default),
            "none" => Ok(Self::None),
            "host" => Ok(Self::Host),
            other => Err(Error::InvalidOption {
                option: "--network",
                message: format!(
                    "unknown network mode `{other}` (expected `default`, `none` or `host`)"
                ),
            }),
        }
    }
}

/// Layer compression of an export (`compression=` in `--output`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// gzip, docker's default.
    #[default]
    Gzip,
    /// zstd.
    Zstd,
    /// No compression.
    Uncompressed,
}

impl FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "gzip" => Ok(Self::Gzip),
            "zstd" => Ok(Self::Zstd),
            "uncompressed" => Ok(Self::Uncompressed),
            other => Err(Error::InvalidOption {
                option: "--output",
                message: format!(
                    "unknown compression `{other}` (expected `gzip`, `zstd` or `uncompressed`)"
                ),
            }),
        }
    }
}

/// Where an exporter writes: a path, or standard output (`dest=-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A file or directory.
    Path(PathBuf),
    /// Standard output.
    Stdout,
}

impl Destination {
    fn parse(s: &str) -> Self {
        if s == "-" {
            Self::Stdout
        } else {
            Self::Path(PathBuf::from(s))
        }
    }
}

/// One `--output` of a build, in buildx's syntax (`type=oci,dest=out.tar`, `-o ./dir`, `-o -`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    /// An OCI image layout: a tar archive (default) or, with `tar=false`, a directory.
    Oci {
        /// Where to write it.
        dest: Destination,
        /// Write an archive (`true`) or a directory (`false`).
        tar: bool,
        /// Image names recorded in the index annotations.
        names: Vec<String>,
        /// Layer compression.
        compression: Compression,
        /// `rewrite-timestamp=true` (BuildKit's name): with `SOURCE_DATE_EPOCH`, clamp every
        /// file mtime in the layers the build makes to the epoch.
        rewrite_timestamp: bool,
    },
    /// A `docker save`-style archive that `docker load` accepts.
    Docker {
        /// Where to write it.
        dest: Destination,
        /// Image names (`RepoTags`).
        names: Vec<String>,
        /// Layer compression.
        compression: Compression,
    },
    /// The final root filesystem, written into a directory.
    Local {
        /// The directory.
        dest: PathBuf,
    },
    /// The final root filesystem as a tar archive.
    Tar {
        /// Where to write it.
        dest: Destination,
    },
    /// An image in kiln's store, tagged with `names`, and pushed when `push` is set.
    Image {
        /// Names to tag (and push).
        names: Vec<String>,
        /// Push to the registry named by each name.
        push: bool,
        /// Layer compression.
        compression: Compression,
    },
}

/// Splits a buildx-style `k=v,k=v` list, honouring double quotes around values that contain
/// commas (`name="a,b"`).
fn split_csv(s: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    fields.push(cur);
    fields.into_iter().filter(|f| !f.is_empty()).collect()
}

fn parse_bool(option: &'static str, key: &str, v: &str) -> Result<bool, Error> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Error::InvalidOption {
            option,
            message: format!("`{key}` must be `true` or `false`, not `{v}`"),
        }),
    }
}

fn names_of(v: &str) -> Vec<String> {
    v.split(',')
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

impl FromStr for OutputSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        const OPT: &str = "--output";
        let err = |message: String| Error::InvalidOption {
            option: OPT,
            message,
        };
        if s == "-" {
            return Ok(Self::Tar {
                dest: Destination::Stdout,
            });
        }
        if !s.contains('=') {
            if s.is_empty() {
                return Err(err("empty output".into()));
            }
            return Ok(Self::Local {
                dest: PathBuf::from(s),
            });
        }
        let mut kind = None;
        let mut dest = None;
        let mut tar = true;
        let mut names = Vec::new();
        let mut compression = Compression::default();
        let mut push = false;
        let mut rewrite_timestamp = false;
        for field in split_csv(s) {
            let Some((k, v)) = field.split_once('=') else {
                return Err(err(format!("`{field}` is not of the form key=value")));
            };
            match k.trim() {
                "type" => kind = Some(v.to_owned()),
                "dest" => dest = Some(v.to_owned()),
                "tar" => tar = parse_bool(OPT, k, v)?,
                "name" => names.extend(names_of(v)),
                "compression" => compression = v.parse()?,
                "push" => push = parse_bool(OPT, k, v)?,
                "rewrite-timestamp" => rewrite_timestamp = parse_bool(OPT, k, v)?,
                // Accepted for compatibility with buildx; kiln has a single behaviour for these.
                "compression-level" | "force-compression" | "oci-mediatypes" => {}
                other => return Err(err(format!("unknown key `{other}`"))),
            }
        }
        let kind = kind.ok_or_else(|| err(format!("`type=` is missing in `{s}`")))?;
        let need_dest = |dest: Option<String>| {
            dest.ok_or_else(|| {
                err(format!(
                    "`type={kind}` needs `dest=` (a path, or `-` for stdout)"
                ))
            })
        };
        Ok(match kind.as_str() {
            "oci" => Self::Oci {
                dest: Destination::parse(&need_dest(dest)?),
                tar,
                names,
                compression,
                rewrite_timestamp,
            },
            "docker" => Self::Docker {
                dest: Destination::parse(&need_dest(dest)?),
                names,
                compression,
            },
            "local" => match Destination::parse(&need_dest(dest)?) {
                Destination::Path(p) => Self::Local { dest: p },
                Destination::Stdout => {
                    return Err(err(
                        "`type=local` writes a directory; use `type=tar,dest=-`".into(),
                    ));
                }
            },
            "tar" => Self::Tar {
                dest: Destination::parse(&need_dest(dest)?),
            },
            "image" => Self::Image {
                names,
                push,
                compression,
            },
            "registry" => Self::Image {
                names,
                push: true,
                compression,
            },
            other => {
                return Err(err(format!(
                    "unknown type `{other}` (expected oci, docker, local, tar, image or registry)"
                )));
            }
        })
    }
}

/// Where a `--secret` takes its value from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file on the host.
    File(PathBuf),
    /// An environment variable of the calling process, read when the build starts (only
    /// because the caller named it).
    Env(String),
    /// buildx's default when neither `src=` nor `env=` is given: the environment variable of
    /// that name when it is set, else the file of that name.
    EnvOrFile(String),
    /// The value itself (embedders).
    Bytes(Vec<u8>),
}

/// A secret exposed to `RUN --mount=type=secret,id=ID` (`--secret id=ID,src=PATH|env=VAR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// The id `RUN --mount=type=secret` refers to.
    pub id: String,
    /// Where its value comes from.
    pub source: SecretSource,
}

impl FromStr for SecretSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        const OPT: &str = "--secret";
        let err = |message: String| Error::InvalidOption {
            option: OPT,
            message,
        };
        let (mut id, mut src, mut env, mut kind) = (None, None, None, None);
        for field in split_csv(s) {
            let Some((k, v)) = field.split_once('=') else {
                return Err(err(format!("`{field}` is not of the form key=value")));
            };
            match k {
                "id" => id = Some(v.to_owned()),
                "src" | "source" => src = Some(v.to_owned()),
                "env" => env = Some(v.to_owned()),
                "type" if v == "file" || v == "env" => kind = Some(v.to_owned()),
                "type" => {
                    return Err(err(format!(
                        "unknown secret type `{v}` (expected file or env)"
                    )));
                }
                other => return Err(err(format!("unknown key `{other}`"))),
            }
        }
        let id = id.or_else(|| src.clone()).or_else(|| env.clone());
        let id = id.ok_or_else(|| err(format!("`id=` is missing in `{s}`")))?;
        let source = match (src, env, kind.as_deref()) {
            (Some(_), Some(_), _) => {
                return Err(err("give either `src=` or `env=`, not both".into()));
            }
            (Some(p), None, Some("env")) | (None, Some(p), _) => SecretSource::Env(p),
            (Some(p), None, _) => SecretSource::File(PathBuf::from(p)),
            (None, None, Some("env")) => SecretSource::Env(id.clone()),
            (None, None, Some(_)) => SecretSource::File(PathBuf::from(&id)),
            // buildx: with neither, an environment variable of that name if set, else a file.
            (None, None, None) => SecretSource::EnvOrFile(id.clone()),
        };
        Ok(Self { id, source })
    }
}

/// An SSH agent socket or keys exposed to `RUN --mount=type=ssh` (`--ssh default|ID=PATH[,PATH]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSpec {
    /// The id `RUN --mount=type=ssh,id=...` refers to (`default` unless named).
    pub id: String,
    /// Agent sockets or key files; empty means the request's
    /// [`ssh_auth_sock`](super::BuildRequest::ssh_auth_sock) (the CLI's `$SSH_AUTH_SOCK`).
    pub paths: Vec<PathBuf>,
}

impl FromStr for SshSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let (id, paths) = match s.split_once('=') {
            Some((id, rest)) => (
                id,
                rest.split(',')
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect(),
            ),
            None => (s, Vec::new()),
        };
        if id.is_empty() || id.contains(',') {
            return Err(Error::InvalidOption {
                option: "--ssh",
                message: format!("`{s}` is not of the form `default` or `ID=PATH[,PATH]`"),
            });
        }
        Ok(Self {
            id: id.to_owned(),
            paths,
        })
    }
}

/// A build cache import (`--cache-from`) or export (`--cache-to`) location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheSpec {
    /// A directory in OCI layout (`type=local,src=DIR` / `type=local,dest=DIR`).
    Local {
        /// The directory.
        path: PathBuf,
        /// Export every intermediate step (`mode=max`) rather than the final image's (`min`).
        max: bool,
        /// Also export the content of the build's cache mounts (`cache-mounts=true`).
        cache_mounts: bool,
    },
    /// A registry reference (`type=registry,ref=REF`, or a bare `REF`).
    Registry {
        /// The image reference holding the cache.
        reference: String,
        /// Export every intermediate step (`mode=max`).
        max: bool,
        /// Also export the content of the build's cache mounts (`cache-mounts=true`).
        cache_mounts: bool,
    },
    /// Cache metadata embedded in the image itself (`type=inline`).
    Inline,
    /// A cache backend kiln does not support (`type=gha`, `s3`, `azblob`): warned about and
    /// ignored, as BuildKit does with an unavailable cache.
    Unsupported(String),
}

impl FromStr for CacheSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        const OPT: &str = "--cache-from/--cache-to";
        let err = |message: String| Error::InvalidOption {
            option: OPT,
            message,
        };
        if !s.contains('=') {
            if s.is_empty() {
                return Err(err("empty cache location".into()));
            }
            return Ok(Self::Registry {
                reference: s.to_owned(),
                max: false,
                cache_mounts: false,
            });
        }
        let (mut kind, mut path, mut reference, mut max) = (None, None, None, false);
        let mut cache_mounts = false;
        let mut unknown: Option<String> = None;
        for field in split_csv(s) {
            let Some((k, v)) = field.split_once('=') else {
                return Err(err(format!("`{field}` is not of the form key=value")));
            };
            match k {
                "type" => kind = Some(v.to_owned()),
                "src" | "dest" => path = Some(PathBuf::from(v)),
                "ref" => reference = Some(v.to_owned()),
                "mode" => {
                    max = match v {
                        "max" => true,
                        "min" => false,
                        _ => return Err(err(format!("`mode` must be `min` or `max`, not `{v}`"))),
                    }
                }
                "cache-mounts" => {
                    cache_mounts = match v {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(err(format!(
                                "`cache-mounts` must be `true` or `false`, not `{v}`"
                            )));
                        }
                    }
                }
                "compression" | "compression-level" | "force-compression" | "oci-mediatypes"
                | "ignore-error" | "image-manifest" => {}
                other => unknown = unknown.or(Some(other.to_owned())),
            }
        }
        if let Some(k) = kind.as_deref()
            && matches!(k, "gha" | "s3" | "azblob")
        {
            return Ok(Self::Unsupported(k.to_owned()));
        }
        if let Some(other) = unknown {
            return Err(err(format!("unknown key `{other}`")));
        }
        match kind.as_deref() {
            Some("local") => Ok(Self::Local {
                path: path.ok_or_else(|| err("`type=local` needs `src=` or `dest=`".into()))?,
                max,
                cache_mounts,
            }),
            Some("registry") => Ok(Self::Registry {
                reference: reference.ok_or_else(|| err("`type=registry` needs `ref=`".into()))?,
                max,
                cache_mounts,
            }),
            Some("inline") => Ok(Self::Inline),
            Some(other) => Err(err(format!(
                "unknown cache type `{other}` (expected local, registry, inline, gha, s3 or azblob)"
            ))),
            None => Err(err(format!("`type=` is missing in `{s}`"))),
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Default => "default",
            Self::None => "none",
            Self::Host => "host",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_shorthands_follow_buildx() {
        assert_eq!(
            "-".parse::<OutputSpec>().unwrap(),
            OutputSpec::Tar {
                dest: Destination::Stdout
            }
        );
        assert_eq!(
            "./out".parse::<OutputSpec>().unwrap(),
            OutputSpec::Local {
                dest: PathBuf::from("./out")
            }
        );
    }

    #[test]
    fn output_oci_with_all_keys() {
        let o: OutputSpec =
            "type=oci,dest=/tmp/x.tar,tar=false,compression=zstd,name=\"a:1,b:2\",rewrite-timestamp=true"
            .parse()
            .unwrap();
        assert_eq!(
            o,
            OutputSpec::Oci {
                dest: Destination::Path("/tmp/x.tar".into()),
                tar: false,
                names: vec!["a:1".into(), "b:2".into()],
                compression: Compression::Zstd,
                rewrite_timestamp: true,
            }
        );
    }

    #[test]
    fn output_errors_name_the_problem() {
        let e = "type=oci".parse::<OutputSpec>().unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid --output: `type=oci` needs `dest=` (a path, or `-` for stdout)"
        );
        let e = "type=zip,dest=x"
            .parse::<OutputSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown type `zip`"), "{e}");
        let e = "type=oci,dest=x,foo=1"
            .parse::<OutputSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key `foo`"), "{e}");
        let e = "type=oci,dest=x,compression=lz4"
            .parse::<OutputSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown compression `lz4`"), "{e}");
    }

    #[test]
    fn output_registry_means_push() {
        assert_eq!(
            "type=registry,name=r/x:1".parse::<OutputSpec>().unwrap(),
            OutputSpec::Image {
                names: vec!["r/x:1".into()],
                push: true,
                compression: Compression::Gzip
            }
        );
    }

    #[test]
    fn secret_forms() {
        assert_eq!(
            "id=a,src=/s".parse::<SecretSpec>().unwrap(),
            SecretSpec {
                id: "a".into(),
                source: SecretSource::File("/s".into())
            }
        );
        assert_eq!(
            "id=a,env=TOKEN".parse::<SecretSpec>().unwrap(),
            SecretSpec {
                id: "a".into(),
                source: SecretSource::Env("TOKEN".into())
            }
        );
        assert_eq!(
            "type=env,id=KILN_TEST_UNSET_VAR"
                .parse::<SecretSpec>()
                .unwrap()
                .source,
            SecretSource::Env("KILN_TEST_UNSET_VAR".into())
        );
        assert!("src=/s,env=X,id=a".parse::<SecretSpec>().is_err());
        assert!("id=a,bogus=1".parse::<SecretSpec>().is_err());
    }

    #[test]
    fn ssh_forms() {
        assert_eq!(
            "default".parse::<SshSpec>().unwrap(),
            SshSpec {
                id: "default".into(),
                paths: vec![]
            }
        );
        assert_eq!(
            "git=/a,/b".parse::<SshSpec>().unwrap(),
            SshSpec {
                id: "git".into(),
                paths: vec!["/a".into(), "/b".into()]
            }
        );
        assert!("=x".parse::<SshSpec>().is_err());
    }

    #[test]
    fn cache_forms() {
        assert_eq!(
            "r/cache:1".parse::<CacheSpec>().unwrap(),
            CacheSpec::Registry {
                reference: "r/cache:1".into(),
                max: false,
                cache_mounts: false
            }
        );
        assert_eq!(
            "type=local,dest=/c,mode=max".parse::<CacheSpec>().unwrap(),
            CacheSpec::Local {
                path: "/c".into(),
                max: true,
                cache_mounts: false
            }
        );
        assert_eq!(
            "type=inline".parse::<CacheSpec>().unwrap(),
            CacheSpec::Inline
        );
        assert_eq!(
            "type=gha,scope=x".parse::<CacheSpec>().unwrap(),
            CacheSpec::Unsupported("gha".into())
        );
        assert_eq!(
            "type=registry,ref=r/c,mode=max,cache-mounts=true"
                .parse::<CacheSpec>()
                .unwrap(),
            CacheSpec::Registry {
                reference: "r/c".into(),
                max: true,
                cache_mounts: true
            }
        );
        assert!(
            "type=local,dest=/c,cache-mounts=yes"
                .parse::<CacheSpec>()
                .is_err()
        );
        assert!("type=nope".parse::<CacheSpec>().is_err());
        assert!("type=local,dest=/c,bogus=1".parse::<CacheSpec>().is_err());
        assert!("type=registry".parse::<CacheSpec>().is_err());
    }

    #[test]
    fn network_modes() {
        assert_eq!("none".parse::<NetworkMode>().unwrap(), NetworkMode::None);
        assert!("bridge".parse::<NetworkMode>().is_err());
    }
}
