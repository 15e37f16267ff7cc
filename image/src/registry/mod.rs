//! A synchronous client for the OCI distribution API, on `ureq` (blocking HTTP, rustls), so the
//! rest of kiln never meets an async runtime.
//!
//! Why not oci-client: it needs tokio + reqwest (a long compile on a 2-core CI budget) and would
//! have to be wrapped in a runtime per call; the subset of the distribution spec kiln needs
//! (manifests, blobs, uploads, the token flow) is small enough to own, and owning it lets pulls
//! stream straight into the content store with digest checks.
//!
//! What it does: pull (tags and digests, indexes with platform selection, OCI and Docker media
//! types, parallel layer downloads skipped when present, every digest and size verified, blobs
//! stored before the manifests and the tag, so a failed pull leaves no tag to a broken image);
//! push (HEAD each blob first, cross-repository mount, monolithic or chunked upload, manifest
//! last); auth (anonymous, Basic, Bearer challenge with token cache, docker config.json
//! credentials, identity tokens through the OAuth2 POST); HTTPS with per-registry CAs from
//! `certs.d`, and for loopback and `--insecure-registry` hosts Docker's fallback (unverified
//! TLS, then plain HTTP); retries with exponential backoff for transient failures; 401/403/404
//! mapped to errors naming the image.
//!
//! Limits, for registries that are broken or hostile: no body is read past what its reader
//! expects (a blob's descriptor size, 4 MiB for a manifest, 1 MiB for a token reply, 64 KiB
//! for an error text), and every wait is bounded (see [`RegistryOptions`] and `body.rs`):
//! connecting, waiting for response headers, silence inside a body (the idle rule) and a body
//! arriving too slowly (the low-speed rule). Only GET and HEAD are retried after a request may
//! have reached the server; other methods only when the connection could not be opened.
//!
//! This file holds the client, its options and the request plumbing (agents, auth, retries);
//! `pull.rs` and `push.rs` the two directions; `auth.rs` challenges and credentials; `body.rs`
//! the bounded body reader.

mod auth;
mod body;
mod pull;
mod push;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ureq::http::Response;

use auth::{Challenge, parse_challenge};
pub use auth::{Credentials, docker_config_dir, lookup_credentials};
pub use pull::pull;

use crate::compression::CompressionOptions;
use crate::error::{Error, Result};
use crate::{Digest, Reference};

/// Largest manifest or index accepted (the distribution spec suggests 4 MiB).
const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

/// Largest token server reply read.
const MAX_TOKEN_REPLY: u64 = 1024 * 1024;

/// Largest error body read (only its first line or `errors[]` are shown).
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// What every manifest request accepts.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// How the client talks to registries.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) to reach over plain HTTP in addition to loopback ones.
    pub insecure_registries: Vec<String>,
    /// Where `config.json` is looked for (default `$DOCKER_CONFIG` or `~/.docker`).
    pub docker_config_dir: PathBuf,
    /// Credentials to use for every registry instead of config.json (tests, `--username`).
    pub credentials: Option<Credentials>,
    /// Attempts for a request that fails transiently (network error, 429, 5xx).
    pub attempts: u32,
    /// First backoff delay; doubled after each failed attempt.
    pub backoff: Duration,
    /// Parallel layer downloads / uploads.
    pub parallelism: usize,
    /// Upload blobs larger than this in PATCH chunks of this size (`None`: one PUT).
    pub chunk_size: Option<u64>,
    /// A repository on the same registry to try mounting blobs from when pushing.
    pub mount_from: Option<String>,
    /// Compression for layers an image holds uncompressed when it is pushed (`None`: push
    /// them as they are). Default gzip.
    pub push_compression: Option<CompressionOptions>,
    /// Per-registry CA certificates, Docker's layout: `<certs_dir>/<host[:port]>/*.crt`
    /// (default `/etc/docker/certs.d`).
    pub certs_dir: PathBuf,
    /// Longest wait to open a connection, TLS handshake included. Default 30 s, Docker's and
    /// containerd's dial timeout (moby `registry.newTransport`: dial 30 s, TLS handshake 10 s).
    pub connect_timeout: Duration,
    /// Longest wait for the headers of a response once the request is sent. Default 120 s:
    /// Docker sets none (Go's `ResponseHeaderTimeout` 0), so this is only meant to end a wait
    /// that will never be answered, with room for a registry finalising a large upload.
    pub response_timeout: Duration,
    /// The idle rule: longest silence (no byte at all) while a GET or HEAD response is read,
    /// headers or body. Default 30 s. Uploads wait up to `response_timeout` for their answer.
    pub read_timeout: Duration,
    /// The low-speed rule, with [`progress_min_bytes`](Self::progress_min_bytes): in every
    /// window of this length a response body must bring at least that many bytes (or all
    /// that is left of it), else the transfer fails as stalled and a GET is retried on a new
    /// connection. Default 30 s.
    pub progress_window: Duration,
    /// Bytes a body must bring per [`progress_window`](Self::progress_window) (0: no rule).
    /// Default 32 KiB (about 1 KiB/s): any working link passes, a server dripping a few
    /// bytes a second to hold a pull open fails after one window.
    pub progress_min_bytes: u64,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            docker_config_dir: docker_config_dir(),
            credentials: None,
            attempts: 4,
            backoff: Duration::from_millis(250),
            parallelism: 4,
            chunk_size: None,
            mount_from: None,
            certs_dir: PathBuf::from("/etc/docker/certs.d"),
            push_compression: Some(CompressionOptions::default()),
            connect_timeout: Duration::from_secs(30),
            response_timeout: Duration::from_secs(120),
            read_timeout: Duration::from_secs(30),
            progress_window: Duration::from_secs(30),
            progress_min_bytes: 32 * 1024,
        }
    }
}

/// A blocking registry client. Cheap to share between threads (`&self` everywhere).
pub struct RegistryClient {
    agent: ureq::Agent,
    opts: RegistryOptions,
    /// Agents trusting a registry's own CA (certs.d), by registry.
    agents: Mutex<HashMap<String, ureq::Agent>>,
    /// `http` or `https` per insecure registry, decided by probing once.
    schemes: Mutex<HashMap<String, &'static str>>,
    /// Where transfer events go.
    progress: Option<ProgressFn>,
    /// Authorization header per (registry, scope), so a token is fetched once per scope.
    tokens: Mutex<HashMap<(String, String), String>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// Result of a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushReport {
    /// The manifest digest now in the registry (differs from the local one when layers were
    /// compressed for the push).
    pub manifest_digest: Digest,
    /// The manifest size in bytes.
    pub manifest_size: u64,
    /// Blobs that were uploaded.
    pub uploaded: Vec<Digest>,
    /// Blobs already in the repository (HEAD said so) or mounted from another repository.
    pub skipped: Vec<Digest>,
}

/// What a pull or push reports while it runs, per blob (config and layers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferEvent {
    /// A blob of the image: `present` when it need not move (already in the store for a pull,
    /// already in the repository for a push).
    Blob {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// Whether it is already where it is going.
        present: bool,
    },
    /// Bytes moved so far (reported about every 512 KiB for downloads, per chunk for uploads).
    Progress {
        /// The blob.
        digest: Digest,
        /// Bytes done.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
    /// The blob is stored (pull) or in the repository (push; uploaded or mounted).
    Done {
        /// The blob.
        digest: Digest,
    },
}

/// A progress callback shared by the transfer threads.
pub type ProgressFn = Arc<dyn Fn(&TransferEvent) + Send + Sync>;

/// A request body that can be sent again after an auth challenge or a transient failure.
enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    FileRange {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

impl RegistryClient {
    /// A client with `opts`.
    pub fn new(opts: RegistryOptions) -> Self {
        Self {
            agent: make_agent(&opts, None, false),
            opts,
            agents: Mutex::new(HashMap::new()),
            schemes: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            progress: None,
        }
    }

    /// Sends [`TransferEvent`]s to `f` during pulls and pushes (from several threads).
    pub fn with_progress(mut self, f: impl Fn(&TransferEvent) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    fn emit(&self, e: &TransferEvent) {
        if let Some(f) = &self.progress {
            f(e);
        }
    }

    /// The agent for `registry`: one trusting `<certs_dir>/<registry>/*.crt` when such files
    /// exist, else the shared one (Mozilla roots).
    fn agent_for(&self, registry: &str) -> ureq::Agent {
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
    fn is_insecure(&self, reference: &Reference) -> bool {
        self.is_insecure_registry(reference.registry())
    }

    fn is_insecure_registry(&self, registry: &str) -> bool {
        crate::reference::is_loopback_registry(registry)
            || self.opts.insecure_registries.iter().any(|r| r == registry)
    }

    /// `https`, or for an insecure registry whatever answers: Docker tries HTTPS first and
    /// falls back to plain HTTP; the answer is remembered for the client's lifetime.
    fn scheme(&self, reference: &Reference) -> &'static str {
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

    /// The options in use.
    pub fn options(&self) -> &RegistryOptions {
        &self.opts
    }

    fn base_url(&self, reference: &Reference) -> String {
        format!(
            "{}://{}/v2/{}",
            self.scheme(reference),
            reference.api_host(),
            reference.repository()
        )
    }

    fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        if let Some(c) = &self.opts.credentials {
            return Ok(Some(c.clone()));
        }
        lookup_credentials(&self.opts.docker_config_dir, registry)
    }

    /// Sends one request with auth and retries. `scope_actions` is `pull` or `pull,push`.
    fn send(
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

    fn send_once(
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
    fn answer_challenge(
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
    fn progress_rule(&self) -> body::ProgressRule {
        body::ProgressRule {
            window: self.opts.progress_window,
            min_bytes: self.opts.progress_min_bytes,
        }
    }

    /// Says what went wrong while reading a body, naming the rule that stopped it.
    fn describe_io(&self, e: &std::io::Error) -> String {
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
    fn describe_ureq(&self, e: &ureq::Error) -> String {
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
    fn status_error(
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

    fn for_each_parallel<T: Sync>(
        &self,
        items: &[T],
        f: impl Fn(&T) -> Result<()> + Sync,
    ) -> Result<()> {
        if items.len() <= 1 || self.opts.parallelism <= 1 {
            return items.iter().try_for_each(f);
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..self.opts.parallelism.min(items.len()) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some(item) = items.get(i) else { break };
                        if first_error.lock().map_or(true, |e| e.is_some()) {
                            break;
                        }
                        if let Err(e) = f(item)
                            && let Ok(mut slot) = first_error.lock()
                        {
                            slot.get_or_insert(e);
                        }
                    }
                });
            }
        });
        match first_error.into_inner() {
            Ok(Some(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

fn make_agent(
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
fn registry_message(body: &str) -> Option<String> {
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

fn is_transient(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(io) => is_transient_io(io),
        ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed => true,
        _ => false,
    }
}

/// Whether the request surely never reached the server (so any method may be sent again).
fn never_sent(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::ConnectionFailed
        | ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => true,
        ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
        _ => false,
    }
}

fn is_transient_io(e: &std::io::Error) -> bool {
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

fn url_encode(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::media_type_of;

    #[test]
    fn urls_and_messages() {
        assert_eq!(
            url_encode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
        let r = Reference::parse("127.0.0.1:5000/x").unwrap();
        let c = RegistryClient::new(RegistryOptions::default());
        assert_eq!(c.base_url(&r), "http://127.0.0.1:5000/v2/x");
        assert_eq!(
            c.base_url(&Reference::parse("busybox").unwrap()),
            "https://registry-1.docker.io/v2/library/busybox"
        );
        let c = RegistryClient::new(RegistryOptions {
            insecure_registries: vec!["reg.lan:5000".into()],
            ..Default::default()
        });
        assert_eq!(
            c.base_url(&Reference::parse("reg.lan:5000/a").unwrap()),
            "http://reg.lan:5000/v2/a"
        );
        assert_eq!(
            registry_message(r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#)
                .unwrap(),
            "DENIED requested access to the resource is denied"
        );
    }

    #[test]
    fn unknown_media_type_is_named() {
        let err = media_type_of(br#"{"schemaVersion":1,"name":"x"}"#, "manifest `x`")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("manifest.v1+json") && err.contains("manifest `x`"),
            "{err}"
        );
    }
}
