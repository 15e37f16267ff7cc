//! `RUN --mount=...` values: BuildKit's `runmount.go` CSV syntax for bind, cache, tmpfs,
//! secret and ssh mounts, with its validation messages and defaults.

use nom::branch::alt;
use nom::bytes::complete::{tag, take_till, take_while1};
use nom::combinator::value;
use nom::multi::fold_many0;
use nom::{IResult, Parser};

use crate::error::{Error, Result};
use crate::suggest::suggest;

/// The kind of a RUN mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum MountType {
    /// `type=bind` (the default): a directory of the context or another stage/image.
    Bind,
    /// `type=cache`: a persistent cache directory.
    Cache,
    /// `type=tmpfs`.
    Tmpfs,
    /// `type=secret`: a secret file (or env var).
    Secret,
    /// `type=ssh`: an SSH agent socket.
    Ssh,
}

impl MountType {
    /// The lowercase name used in the CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CacheSharing {
    /// Concurrent builds share the directory (default).
    Shared,
    /// Concurrent builds each get their own copy.
    Private,
    /// Concurrent builds wait for each other.
    Locked,
}

/// One parsed `--mount` value (already expanded by the caller).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunMount {
    /// Mount type (default bind).
    pub kind: MountType,
    /// `from=`: stage name or image providing the source (bind, cache).
    pub from: Option<String>,
    /// `source=`/`src=`: path inside `from` (or the secret id for secrets when `id` is unset).
    pub source: Option<String>,
    /// `target=`/`dst=`/`destination=`/`dest=`: mount point in the container.
    pub target: Option<String>,
    /// `readonly`/`ro`/`rw`. Default (when not given): read-only for bind, secret and ssh,
    /// read-write for cache and tmpfs.
    pub read_only: bool,
    /// `id=`: cache id, secret id or ssh id.
    pub id: Option<String>,
    /// `sharing=` (cache only; default shared for cache, `None` otherwise).
    pub sharing: Option<CacheSharing>,
    /// `required` (secret and ssh only).
    pub required: bool,
    /// `size=` in bytes (tmpfs only).
    pub size: Option<u64>,
    /// `mode=` (octal; cache, secret and ssh only).
    pub mode: Option<u32>,
    /// `uid=` (cache, secret and ssh only).
    pub uid: Option<u32>,
    /// `gid=` (cache, secret and ssh only).
    pub gid: Option<u32>,
    /// `env=` (secret only): expose the secret as this environment variable.
    pub env: Option<String>,
}

const ALL_KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "src",
    "target",
    "dst",
    "destination",
    "dest",
    "readonly",
    "ro",
    "readwrite",
    "rw",
    "required",
    "size",
    "id",
    "sharing",
    "mode",
    "uid",
    "gid",
    "env",
];

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A CSV field and its byte range in the record.
type Field = (String, std::ops::Range<usize>);

/// The inside of a quoted CSV field up to its closing quote (`""` is a literal quote).
fn quoted_body(input: &str) -> IResult<&str, String> {
    fold_many0(
        alt((value("\"", tag("\"\"")), take_while1(|c| c != '"'))),
        String::new,
        |mut field, part: &str| {
            field.push_str(part);
            field
        },
    )
    .parse(input)
}

/// An unquoted CSV field: up to a `,` (a `"` in it is an error).
fn bare_field(input: &str) -> IResult<&str, &str> {
    take_till(|c| c == ',' || c == '"').parse(input)
}

/// Go `encoding/csv` reading one record (nom): the fields with their byte ranges, or the
/// message (its column counted in characters, like Go) and the byte offset it is at.
fn read_csv(s: &str) -> std::result::Result<Vec<Field>, (String, usize)> {
    let line = s.split('\n').next().unwrap_or("");
    let line = line.strip_suffix('\r').unwrap_or(line);
    if s.is_empty() {
        return Err(("EOF".to_owned(), 0));
    }
    let at = |rest: &str| line.len() - rest.len();
    let column = |byte: usize| line[..byte].chars().count() + 1;
    let mut fields = Vec::new();
    let mut rest = line;
    loop {
        let start = at(rest);
        let (after, field) = if let Some(body) = rest.strip_prefix('"') {
            let (after, field) = quoted_body(body).unwrap_or((body, String::new()));
            let Some(after) = after.strip_prefix('"') else {
                let message = format!(
                    "parse error on line 1, column {}: extraneous or missing \" in quoted-field",
                    column(line.len())
                );
                return Err((message, start));
            };
            if !(after.is_empty() || after.starts_with(',')) {
                let message = format!(
                    "parse error on line 1, column {}: extraneous or missing \" in quoted-field",
                    column(at(after))
                );
                return Err((message, at(after)));
            }
            (after, field)
        } else {
            let (after, field) = bare_field(rest).unwrap_or(("", rest));
            if after.starts_with('"') {
                let message = format!(
                    "parse error on line 1, column {}: bare \" in non-quoted-field",
                    column(at(after))
                );
                return Err((message, at(after)));
            }
            (after, field.to_owned())
        };
        fields.push((field, start..at(after)));
        match after.strip_prefix(',') {
            Some(next) => rest = next,
            None => break,
        }
    }
    Ok(fields)
}

/// docker/go-units `RAMInBytes`: `64m`, `1g`, `512k`, `100` (binary multiples).
fn ram_in_bytes(v: &str) -> Option<u64> {
    let v = v.trim();
    let num_len = v
        .char_indices()
        .take_while(|(_, c)| c.is_ascii_digit() || *c == '.')
        .count();
    let (num, unit) = v.split_at(num_len);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024f64.powi(4),
        "p" | "pb" | "pib" => 1024f64.powi(5),
        _ => return None,
    };
    Some((n * mult) as u64)
}

/// Applies one `key[=value]` field of a `--mount` value to `m` (BuildKit `parseMount`'s loop
/// body).
fn apply_field(
    m: &mut RunMount,
    ro_auto: &mut bool,
    field: &str,
) -> std::result::Result<(), String> {
    let (key, value) = match field.split_once('=') {
        Some((k, v)) => (k.to_lowercase(), Some(v)),
        None => (field.to_lowercase(), None),
    };
    let unexpected = |m: &RunMount| {
        format!(
            "unexpected key '{key}' for mount type '{}'",
            m.kind.as_str()
        )
    };
    let Some(value) = value else {
        match key.as_str() {
            "readonly" | "ro" => {
                m.read_only = true;
                *ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.read_only = false;
                *ro_auto = false;
            }
            "required" => {
                if matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    m.required = true;
                } else {
                    return Err(unexpected(m));
                }
            }
            _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
        }
        return Ok(());
    };
    match key.as_str() {
        "type" => {
            m.kind = match value.to_lowercase().as_str() {
                "bind" => MountType::Bind,
                "cache" => MountType::Cache,
                "tmpfs" => MountType::Tmpfs,
                "secret" => MountType::Secret,
                "ssh" => MountType::Ssh,
                _ => {
                    let mut msg =
                        format!("unsupported mount type {}", crate::quote::go_quote(value));
                    if let Some(s) =
                        suggest(value, &["bind", "cache", "tmpfs", "secret", "ssh"], true)
                    {
                        crate::suggest::append(&mut msg, &s);
                    }
                    return Err(msg);
                }
            };
        }
        "from" => m.from = Some(value.to_owned()),
        "source" | "src" => m.source = Some(value.to_owned()),
        "target" | "dst" | "destination" | "dest" => m.target = Some(value.to_owned()),
        "readonly" | "ro" => {
            m.read_only =
                parse_bool(value).ok_or_else(|| format!("invalid value for {key}: {value}"))?;
            *ro_auto = false;
        }
        "readwrite" | "rw" => {
            m.read_only =
                !parse_bool(value).ok_or_else(|| format!("invalid value for {key}: {value}"))?;
            *ro_auto = false;
        }
        "required" => {
            if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                return Err(unexpected(m));
            }
            m.required =
                parse_bool(value).ok_or_else(|| format!("invalid value for {key}: {value}"))?;
        }
        "size" => {
            if m.kind != MountType::Tmpfs {
                return Err(unexpected(m));
            }
            m.size = Some(
                ram_in_bytes(value).ok_or_else(|| format!("invalid value for {key}: {value}"))?,
            );
        }
        "id" => m.id = Some(value.to_owned()),
        "sharing" => {
            if m.kind != MountType::Cache {
                return Err(unexpected(m));
            }
            m.sharing = Some(match value.to_lowercase().as_str() {
                "shared" => CacheSharing::Shared,
                "private" => CacheSharing::Private,
                "locked" => CacheSharing::Locked,
                _ => {
                    return Err(format!(
                        "unsupported sharing value {}",
                        crate::quote::go_quote(value)
                    ));
                }
            });
        }
        "mode" => {
            m.mode = Some(
                u32::from_str_radix(value, 8)
                    .map_err(|_| format!("invalid value {value} for mode"))?,
            );
        }
        "uid" => {
            m.uid = Some(
                value
                    .parse()
                    .map_err(|_| format!("invalid value {value} for uid"))?,
            );
        }
        "gid" => {
            m.gid = Some(
                value
                    .parse()
                    .map_err(|_| format!("invalid value {value} for gid"))?,
            );
        }
        "env" => {
            if m.kind != MountType::Secret {
                return Err(unexpected(m));
            }
            m.env = Some(value.to_owned());
        }
        _ => {
            let mut msg = format!("unexpected key '{key}' in '{field}'");
            if let Some(s) = suggest(&key, ALL_KEYS, true) {
                crate::suggest::append(&mut msg, &s);
            }
            return Err(msg);
        }
    }
    Ok(())
}

impl RunMount {
    /// Parses one `--mount` CSV value (after the caller expanded it as a word), applying
    /// BuildKit's validation and defaults. Errors are BuildKit's messages.
    ///
    /// The error is [`Error::Mount`], with the byte range of the offending field in `csv`
    /// ([`Error::mount_field`]) when one field is to blame.
    pub fn parse(csv: &str) -> Result<RunMount> {
        Self::parse_inner(csv).map_err(|(message, field)| Error::Mount { message, field })
    }

    fn parse_inner(
        csv: &str,
    ) -> std::result::Result<RunMount, (String, Option<std::ops::Range<usize>>)> {
        let fields = read_csv(csv)
            .map_err(|(e, at)| (format!("failed to parse csv mounts: {e}"), Some(at..at + 1)))?;
        let mut m = RunMount {
            kind: MountType::Bind,
            from: None,
            source: None,
            target: None,
            read_only: false,
            id: None,
            sharing: None,
            required: false,
            size: None,
            mode: None,
            uid: None,
            gid: None,
            env: None,
        };
        let mut ro_auto = true;
        for (field, range) in &fields {
            apply_field(&mut m, &mut ro_auto, field).map_err(|e| (e, Some(range.clone())))?;
        }
        let file_info_allowed = matches!(
            m.kind,
            MountType::Secret | MountType::Ssh | MountType::Cache
        );
        if !file_info_allowed {
            let t = crate::quote::go_quote(m.kind.as_str());
            if m.mode.is_some() {
                return Err((format!("mode not allowed for {t} type mounts"), None));
            }
            if m.uid.is_some() {
                return Err((format!("uid not allowed for {t} type mounts"), None));
            }
            if m.gid.is_some() {
                return Err((format!("gid not allowed for {t} type mounts"), None));
            }
        }
        if ro_auto {
            m.read_only = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
        }
        if m.kind == MountType::Secret {
            if m.from.is_some() {
                return Err(("secret mount should not have a from".to_owned(), None));
            }
            if m.source.is_some() && m.id.is_some() {
                return Err(("both source and id can't be set".to_owned(), None));
            }
        }
        if m.kind == MountType::Cache && m.sharing.is_none() {
            m.sharing = Some(CacheSharing::Shared);
        }
        Ok(m)
    }

    /// The secret/ssh id after BuildKit's defaults: `id`, else `source` (secrets), else the
    /// base name of `target` (secrets) or `default` (ssh).
    pub fn effective_id(&self) -> Option<String> {
        if let Some(id) = &self.id {
            return Some(id.clone());
        }
        match self.kind {
            MountType::Secret => self.source.clone().or_else(|| {
                self.target
                    .as_deref()
                    .and_then(|t| t.trim_end_matches('/').rsplit('/').next())
                    .filter(|b| !b.is_empty())
                    .map(str::to_owned)
            }),
            MountType::Ssh => Some("default".to_owned()),
            _ => None,
        }
    }

    /// The mount point after BuildKit's defaults: `/run/secrets/<id>` for secrets (unless only
    /// `env` is set), `/run/buildkit/ssh_agent.<n>` for the n-th ssh mount.
    pub fn effective_target(&self, ssh_index: usize) -> Option<String> {
        if let Some(t) = &self.target {
            return Some(t.clone());
        }
        match self.kind {
            MountType::Secret if self.env.is_none() => {
                self.effective_id().map(|id| format!("/run/secrets/{id}"))
            }
            MountType::Ssh => Some(format!("/run/buildkit/ssh_agent.{ssh_index}")),
            _ => None,
        }
    }

    /// The file mode after BuildKit's defaults: 0o400 for secrets, 0o600 for ssh, 0o755 for
    /// cache directories; `None` for the other types.
    pub fn effective_mode(&self) -> Option<u32> {
        self.mode.or(match self.kind {
            MountType::Secret => Some(0o400),
            MountType::Ssh => Some(0o600),
            MountType::Cache => Some(0o755),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let m = RunMount::parse("type=cache,target=/root/.cache").unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert!(!m.read_only);
        assert_eq!(m.sharing, Some(CacheSharing::Shared));
        assert_eq!(m.effective_mode(), Some(0o755));
        let m = RunMount::parse("target=/src,from=build").unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert!(m.read_only);
        let m = RunMount::parse("type=bind,target=/src,rw").unwrap();
        assert!(!m.read_only);
        let m = RunMount::parse("type=secret,id=tok").unwrap();
        assert_eq!(m.effective_target(0).as_deref(), Some("/run/secrets/tok"));
        let m = RunMount::parse("type=ssh,required").unwrap();
        assert!(m.required);
        assert_eq!(
            m.effective_target(1).as_deref(),
            Some("/run/buildkit/ssh_agent.1")
        );
        let m = RunMount::parse("type=tmpfs,target=/t,size=64m").unwrap();
        assert_eq!(m.size, Some(64 << 20));
    }

    #[test]
    fn errors() {
        let e = |s: &str| RunMount::parse(s).unwrap_err().to_string();
        assert_eq!(
            e("type=cahce"),
            "unsupported mount type \"cahce\" (did you mean cache?)"
        );
        assert_eq!(
            e("type=bind,mode=0700"),
            "mode not allowed for \"bind\" type mounts"
        );
        assert_eq!(
            e("type=bind,sharing=locked"),
            "unexpected key 'sharing' for mount type 'bind'"
        );
        assert_eq!(
            e("type=cache,foo"),
            "invalid field 'foo' must be a key=value pair"
        );
        assert_eq!(
            e("type=cache,tagret=/x"),
            "unexpected key 'tagret' in 'tagret=/x' (did you mean target?)"
        );
        assert_eq!(e("type=cache,sharing=x"), "unsupported sharing value \"x\"");
        assert_eq!(
            e("type=secret,id=a,src=b"),
            "both source and id can't be set"
        );
        assert!(e("a\"b").starts_with("failed to parse csv mounts: "));
    }
}
