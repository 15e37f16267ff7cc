//! The request plumbing of the registry client: agents (per-registry CAs, Docker's insecure
//! fallback), scheme detection, sending with auth challenges and retries, and error mapping.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use ureq::http::Response;

use super::auth::{Challenge, parse_challenge};
use super::*;

/// A request body that can be sent again after an auth challenge or a transient failure.
pub(super) enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    FileRange {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

impl RegistryClient {
    /// The agent for `registry`: one trusting `<certs_dir>/<registry>/*.crt` when such files
    /// exist, else the shared one (Mozilla roots).
    pub(super) fn agent_for(&self, registry: &str) -> ureq::Agent {
        if let Ok(map) = self.agents.lock()
            && let Some(a) = map.get(registry)
        {
            return a.clone();
        }
        let dir = self.opts.certs_dir.join(registry);
        let mut certs = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut paths: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "crt"))
            {
                let Ok(pem) = std::fs::read(p) else { continue };
                for item in ureq::tls::parse_pem(&pem).flatten() {
                    if let ureq::tls::PemItem::Certificate(c) = item {
                        certs.push(c);
                    }
                }
            }
        }
        let agent = if !certs.is_empty() {
            make_agent(&self.opts, Some(certs), false)
        } else if self.is_insecure_registry(registry) {
            // Docker's insecure registries: TLS without verification, else plain HTTP.
            make_agent(&self.opts, None, true)
        } else {
            self.agent.clone()
        };
        if let Ok(mut map) = self.agents.lock() {
            map.insert(registry.to_owned(), agent.clone());
        }
        agent
    }

    /// Whether Docker would accept plain HTTP from this registry: loopback ones and those
    /// given with `--insecure-registry`.
    pub(super) fn is_insecure(&self, reference: &Reference) -> bool {
        self.is_insecure_registry(reference.registry())
    }

    pub(super) fn is_insecure_registry(&self, registry: &str) -> bool {
        crate::reference::is_loopback_registry(registry)
            || self.opts.insecure_registries.iter().any(|r| r == registry)
    }

    /// `https`, or for an insecure registry whatever answers: Docker tries HTTPS first and
    /// falls back to plain HTTP; the answer is remembered for the client's lifetime.
    pub(super) fn scheme(&self, reference: &Reference) -> &'static str {
        if !self.is_insecure(reference) {
            return "https";
        }
        let registry = reference.registry();
        if let Ok(map) = self.schemes.lock()
            && let Some(s) = map.get(registry)
        {
            return s;
        }
        let agent = self.agent_for(registry);
        let probe = agent
            .get(format!("https://{}/v2/", reference.api_host()))
            .config()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .call();
        let (scheme, settled) = match &probe {
            Ok(_) => ("https", true),
            // Nobody listening (yet): plain HTTP for now, ask again next time.
            Err(e) if is_transient(e) => ("http", false),
            // Something answered, but not TLS.
            Err(_) => ("http", true),
        };
        tracing::debug!("registry {registry}: using {scheme}");
        if settled && let Ok(mut map) = self.schemes.lock() {
            map.insert(registry.to_owned(), scheme);
        }
        scheme
    }

    /// Sends one request with auth and retries. `scope_actions` is `pull` or `pull,push`.
    pub(super) fn send(
        &self,
        reference: &Reference,
        scope_actions: &str,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &Body<'_>,
    ) -> Result<Response<ureq::Body>> {
        let registry = reference.registry().to_owned();
        let scope = format!("repository:{}:{scope_actions}", reference.repository());
        let key = (registry.clone(), scope.clone());
        let mut challenged = false;
        let mut attempt = 0;
        let agent = self.agent_for(&registry);
        loop {
            attempt += 1;
            let auth = self.tokens.lock().ok().and_then(|t| t.get(&key).cloned());
            let result = self.send_once(&agent, method, url, headers, auth.as_deref(), body);
            // A POST, PUT or PATCH may have changed something on the server (an upload
            // session, a chunk appended) once it was sent: it is retried only when it never
            // left, because the connection could not be opened.
            let idempotent = matches!(method, "GET" | "HEAD");
            let transient = match &result {
                Ok(resp) => {
                    idempotent && matches!(resp.status().as_u16(), 429 | 500 | 502 | 503 | 504)
                }
                Err(e) if idempotent => is_transient(e),
                Err(e) => never_sent(e),
            };
            if transient && attempt < self.opts.attempts {
                let delay = self.opts.backoff * 2u32.pow(attempt - 1);
                tracing::debug!("{method} {url}: transient failure, retrying in {delay:?}");
                std::thread::sleep(delay);
                continue;
            }
            let resp = result.map_err(|e| Error::Network {
                registry: registry.clone(),
                message: format!("{method} {url}: {}", self.describe_ureq(&e)),
            })?;
            if resp.status().as_u16() == 401 && !challenged {
                challenged = true;
                let header = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                if let Some(value) = self.answer_challenge(reference, &header, &scope)? {
                    if let Ok(mut t) = self.tokens.lock() {
                        t.insert(key.clone(), value);
                    }
                    attempt = 0;
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    pub(super) fn send_once(
        &self,
        agent: &ureq::Agent,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        auth: Option<&str>,
        body: &Body<'_>,
    ) -> std::result::Result<Response<ureq::Body>, ureq::Error> {
        let mut req = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        // The idle rule is for downloads; an upload's answer may take as long as a registry
        // needs to finalise the blob, up to `response_timeout`.
        let per_read = if matches!(method, "GET" | "HEAD") {
            self.opts.read_timeout
        } else {
            self.opts.response_timeout.max(self.opts.read_timeout)
        };
        match body {
            Body::Empty => {
                let req = req
                    .header("Content-Length", "0")
                    .body(())
                    .map_err(ureq::Error::Http)?;
                let req = agent
                    .configure_request(req)
                    .timeout_per_read(Some(per_read))
                    .build();
                agent.run(req)
            }
            Body::Bytes(b) => {
                let req = req.body(b.to_vec()).map_err(ureq::Error::Http)?;
                let req = agent
                    .configure_request(req)
                    .timeout_per_read(Some(per_read))
                    .build();
                agent.run(req)
            }
            Body::FileRange { path, offset, len } => {
                let mut f = File::open(path)?;
                f.seek(SeekFrom::Start(*offset))?;
                let reader = f.take(*len);
                let req = req
                    .header("Content-Length", len.to_string())
                    .body(ureq::SendBody::from_owned_reader(reader))
                    .map_err(ureq::Error::Http)?;
                let req = agent
                    .configure_request(req)
                    .timeout_per_read(Some(per_read))
                    .build();
                agent.run(req)
            }
        }
    }

    /// Works out the Authorization header a 401 challenge asks for, or `None` when it cannot
    /// be answered (the caller then reports the 401).
    pub(super) fn answer_challenge(
        &self,
        reference: &Reference,
        header: &str,
        scope: &str,
    ) -> Result<Option<String>> {
        let creds = self.credentials(reference.registry())?;
        match parse_challenge(header) {
            Some(Challenge::Basic) => Ok(creds.map(|c| c.basic_header())),
            Some(Challenge::Bearer {
                realm,
                service,
                scope: challenge_scope,
            }) => {
                let mut url = realm.clone();
                let mut params = Vec::new();
                if let Some(s) = &service {
                    params.push(format!("service={}", url_encode(s)));
                }
                // Ask for what we need; the challenge's scope may be narrower (pull only).
                params.push(format!("scope={}", url_encode(scope)));
                // A challenge may name several scopes (a mount needs pull on the source too).
                for cs in challenge_scope.iter().flat_map(|c| c.split_whitespace()) {
                    if cs != scope {
                        params.push(format!("scope={}", url_encode(cs)));
                    }
                }
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str(&params.join("&"));
                // A token service on the registry's own host trusts the same CA.
                let same_host = realm.split("://").nth(1).and_then(|r| r.split('/').next())
                    == Some(reference.registry());
                let agent = if same_host {
                    self.agent_for(reference.registry())
                } else {
                    self.agent.clone()
                };
                let mut resp = match &creds {
                    // An identity token (`docker login` with OAuth) is exchanged with a POST, as
                    // the distribution token spec's OAuth2 flow says.
                    Some(c) if c.username == "<token>" => {
                        let mut form = vec![
                            ("grant_type", "refresh_token".to_owned()),
                            ("refresh_token", c.password.clone()),
                            ("client_id", "kiln".to_owned()),
                            ("scope", scope.to_owned()),
                        ];
                        if let Some(s) = &service {
                            form.push(("service", s.clone()));
                        }
                        let body = form
                            .iter()
                            .map(|(k, v)| format!("{k}={}", url_encode(v)))
                            .collect::<Vec<_>>()
                            .join("&");
                        agent
                            .post(&realm)
                            .header("Content-Type", "application/x-www-form-urlencoded")
                            .send(body.as_bytes())
                    }
                    Some(c) => agent
                        .get(&url)
                        .header("Authorization", c.basic_header())
                        .call(),
                    None => agent.get(&url).call(),
                }
                .map_err(|e| Error::Network {
                    registry: realm.clone(),
                    message: e.to_string(),
                })?;
                let status = resp.status().as_u16();
                if status == 401 || status == 403 {
                    return Ok(None);
                }
                if status != 200 {
                    return Err(Error::Registry {
                        registry: reference.registry().to_owned(),
                        message: format!("token server {realm} answered HTTP {status}"),
                    });
                }
                #[derive(serde::Deserialize)]
                struct TokenReply {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let body = body::read_to_vec(
                    resp.body_mut().as_reader(),
                    MAX_TOKEN_REPLY,
                    self.progress_rule(),
                )
                .map_err(|e| Error::Network {
                    registry: realm.clone(),
                    message: format!("reading the token reply: {}", self.describe_io(&e)),
                })?;
                let reply: TokenReply =
                    serde_json::from_slice(&body).map_err(|source| Error::Json {
                        what: format!("token reply from {realm}"),
                        source,
                    })?;
                Ok(reply
                    .token
                    .or(reply.access_token)
                    .map(|t| format!("Bearer {t}")))
            }
            None => Ok(None),
        }
    }

    /// The low-speed rule from the options.
    pub(super) fn progress_rule(&self) -> body::ProgressRule {
        body::ProgressRule {
            window: self.opts.progress_window,
            min_bytes: self.opts.progress_min_bytes,
        }
    }

    /// Says what went wrong while reading a body, naming the rule that stopped it.
    pub(super) fn describe_io(&self, e: &std::io::Error) -> String {
        if let Some(fault) = body::fault_of(e) {
            fault.to_string()
        } else if body::is_idle_timeout(e) {
            format!(
                "no data for {}s (read timeout)",
                self.opts.read_timeout.as_secs_f64()
            )
        } else {
            e.to_string()
        }
    }

    /// Says what went wrong with a request, naming the timeout that ended it.
    pub(super) fn describe_ureq(&self, e: &ureq::Error) -> String {
        let secs = |d: Duration| d.as_secs_f64();
        match e {
            ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => format!(
                "not connected within {}s (connect timeout)",
                secs(self.opts.connect_timeout)
            ),
            ureq::Error::Timeout(ureq::Timeout::RecvResponse) => format!(
                "no complete response headers within {}s (response timeout)",
                secs(self.opts.response_timeout)
            ),
            ureq::Error::Timeout(ureq::Timeout::PerRead) => format!(
                "no data for {}s (read timeout)",
                secs(self.opts.read_timeout)
            ),
            other => other.to_string(),
        }
    }

    /// Maps an unexpected status to the error that names the image.
    pub(super) fn status_error(
        &self,
        reference: &Reference,
        action: &'static str,
        what: &str,
        resp: Response<ureq::Body>,
    ) -> Error {
        let status = resp.status().as_u16();
        let mut resp = resp;
        // A broken or too long error body still gives the status; its text is a bonus.
        let text = body::read_to_vec(
            resp.body_mut().as_reader(),
            MAX_ERROR_BODY,
            self.progress_rule(),
        )
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
        let plain = text.lines().next().unwrap_or_default().trim();
        let detail = registry_message(&text)
            .or_else(|| {
                (!plain.is_empty() && !plain.starts_with('{'))
                    .then(|| plain.chars().take(200).collect())
            })
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        let registry = reference.registry().to_owned();
        let name = reference.familiar();
        match status {
            401 => Error::Unauthorized {
                action,
                reference: name,
                registry,
                detail,
            },
            403 => Error::Denied {
                action,
                reference: name,
                registry,
                detail,
            },
            404 => Error::RegistryNotFound {
                what: what.to_owned(),
                reference: name,
                registry,
            },
            _ => Error::Registry {
                registry,
                message: format!("{action} `{name}`: {what}: HTTP {status}{detail}"),
            },
        }
    }
}

pub(super) fn make_agent(
    opts: &RegistryOptions,
    roots: Option<Vec<ureq::tls::Certificate<'static>>>,
    skip_verify: bool,
) -> ureq::Agent {
    let mut cfg = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(opts.connect_timeout))
        .timeout_recv_response(Some(opts.response_timeout))
        .timeout_per_read(Some(opts.read_timeout))
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .accept_encoding(ureq::config::AutoHeaderValue::None);
    if let Some(roots) = roots {
        cfg = cfg.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
                .build(),
        );
    } else if skip_verify {
        cfg = cfg.tls_config(
            ureq::tls::TlsConfig::builder()
                .disable_verification(true)
                .build(),
        );
    }
    cfg.build().into()
}

/// The `errors[].message` texts of a distribution error body.
pub(super) fn registry_message(body: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let e: Errors = serde_json::from_str(body).ok()?;
    let parts: Vec<String> = e
        .errors
        .iter()
        .map(|i| format!("{} {}", i.code, i.message).trim().to_owned())
        .collect();
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("; "))
    }
}

pub(super) fn is_transient(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(io) => is_transient_io(io),
        ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed => true,
        _ => false,
    }
}

/// Whether the request surely never reached the server (so any method may be sent again).
pub(super) fn never_sent(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::ConnectionFailed
        | ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => true,
        ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
        _ => false,
    }
}

pub(super) fn is_transient_io(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionReset
            | K::ConnectionAborted
            | K::ConnectionRefused
            | K::TimedOut
            | K::Interrupted
            | K::BrokenPipe
    )
}

pub(super) fn url_encode(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
