//! Registry credentials and authentication: `WWW-Authenticate` challenge parsing (Basic and
//! Bearer), credentials from `~/.docker/config.json` (`auths`, `credHelpers`, `credsStore`
//! through the `docker-credential-<name>` helpers when installed), and the token request of the
//! bearer flow (docker/distribution's token spec: GET realm?service=..&scope=..).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use crate::error::{Error, Result};

/// A user name and secret for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (`<token>` marks an identity token, which is sent as the password).
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

impl Credentials {
    /// The `Authorization: Basic ...` header value.
    pub(crate) fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            B64.encode(format!("{}:{}", self.username, self.password))
        )
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Bearer realm="https://auth",service="registry",scope="repository:x:pull"` or
/// `Basic realm="..."`. Returns `None` for schemes kiln does not speak.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() || chars.next() != Some('=') {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            let raw: String = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
            raw.trim().clone_into(&mut value);
        }
        out.insert(key.trim().to_ascii_lowercase(), value);
    }
    out
}

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

/// The key Docker uses for a registry in `config.json` (`https://index.docker.io/v1/` for Hub).
fn config_keys(registry: &str) -> Vec<String> {
    if registry == crate::DOCKER_HUB {
        vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
        ]
    } else {
        vec![
            registry.to_owned(),
            format!("https://{registry}"),
            format!("http://{registry}"),
        ]
    }
}

/// Looks up credentials for `registry` in `<dir>/config.json`: a per-registry credential
/// helper first, then the `auths` entry, then the default `credsStore`. A missing file or
/// entry means anonymous access (`Ok(None)`).
pub fn lookup_credentials(dir: &Path, registry: &str) -> Result<Option<Credentials>> {
    lookup_in(dir, registry, None)
}

/// [`lookup_credentials`] with helpers looked up in `helper_dir` instead of `PATH`.
fn lookup_in(dir: &Path, registry: &str, helper_dir: Option<&Path>) -> Result<Option<Credentials>> {
    // No directory: no docker config (RegistryOptions::default).
    if dir.as_os_str().is_empty() {
        return Ok(None);
    }
    let path = dir.join("config.json");
    let cfg: DockerConfig = match std::fs::read(&path) {
        Ok(data) => serde_json::from_slice(&data).map_err(|source| Error::Json {
            what: format!("docker config {}", path.display()),
            source,
        })?,
        Err(_) => return Ok(None),
    };
    let keys = config_keys(registry);
    let server = &keys[0];
    if let Some(helper) = keys.iter().find_map(|k| cfg.cred_helpers.get(k)) {
        return run_helper(helper, server, registry, helper_dir);
    }
    for k in &keys {
        if let Some(entry) = cfg.auths.get(k)
            && let Some(c) = entry_credentials(entry, registry)?
        {
            return Ok(Some(c));
        }
    }
    // An auths entry without inline secrets, or none at all: the default store may know it.
    if let Some(store) = &cfg.creds_store {
        return run_helper(store, server, registry, helper_dir);
    }
    Ok(None)
}

fn entry_credentials(e: &AuthEntry, registry: &str) -> Result<Option<Credentials>> {
    if let Some(token) = &e.identity_token
        && !token.is_empty()
    {
        return Ok(Some(Credentials {
            username: "<token>".into(),
            password: token.clone(),
        }));
    }
    if let Some(auth) = e.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = B64.decode(auth.trim()).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(|| {
            Error::InvalidOption(format!("docker config: the `auth` entry for {registry} is not base64 of `user:password`"))
        })?;
        let (u, p) = decoded.split_once(':').ok_or_else(|| {
            Error::InvalidOption(format!(
                "docker config: the `auth` entry for {registry} has no `:`"
            ))
        })?;
        return Ok(Some(Credentials {
            username: u.to_owned(),
            password: p.to_owned(),
        }));
    }
    match (&e.username, &e.password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        })),
        _ => Ok(None),
    }
}

#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Runs `docker-credential-<helper> get` with the server URL on stdin. A helper that is not
/// installed, or that has no entry ("credentials not found"), means anonymous access.
fn run_helper(
    helper: &str,
    server: &str,
    registry: &str,
    helper_dir: Option<&Path>,
) -> Result<Option<Credentials>> {
    let name = format!("docker-credential-{helper}");
    let program = helper_dir.map_or_else(|| PathBuf::from(&name), |d| d.join(&name));
    let fail = |message: String| Error::CredentialHelper {
        helper: helper.to_owned(),
        registry: registry.to_owned(),
        message,
    };
    let mut child = match Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!("{name} is not installed; trying {registry} anonymously");
            return Ok(None);
        }
        Err(e) => return Err(fail(e.to_string())),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if text.contains("credentials not found") {
            return Ok(None);
        }
        return Err(fail(text.trim().to_owned()));
    }
    let reply: HelperReply =
        serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("bad reply: {e}")))?;
    Ok(Some(Credentials {
        username: reply.username,
        password: reply.secret,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn reads_docker_config_auths_and_missing_helpers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{"127.0.0.1:5000":{"auth":"dXNlcjpwYTpzcw=="},"https://index.docker.io/v1/":{"username":"hub","password":"pw"}},
               "credHelpers":{"ghcr.io":"kiln-test-absent"}}"#,
        )
        .unwrap();
        let c = lookup_credentials(dir.path(), "127.0.0.1:5000")
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("user", "pa:ss")
        );
        let c = lookup_credentials(dir.path(), "docker.io")
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "hub");
        assert_eq!(lookup_credentials(dir.path(), "ghcr.io").unwrap(), None);
        assert_eq!(lookup_credentials(dir.path(), "quay.io").unwrap(), None);
        assert_eq!(c.basic_header(), "Basic aHViOnB3");
    }

    #[test]
    fn runs_a_credential_helper() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("docker-credential-kilntest");
        std::fs::write(
            &bin,
            "#!/bin/sh\nread server\n[ \"$server\" = reg.example ] || { echo credentials not found; exit 1; }\necho '{\"ServerURL\":\"reg.example\",\"Username\":\"bob\",\"Secret\":\"s3\"}'\n",
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"credsStore":"kilntest"}"#,
        )
        .unwrap();
        let c = lookup_in(dir.path(), "reg.example", Some(dir.path()))
            .unwrap()
            .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("bob", "s3"));
        assert_eq!(
            lookup_in(dir.path(), "other.example", Some(dir.path())).unwrap(),
            None
        );
    }
}
