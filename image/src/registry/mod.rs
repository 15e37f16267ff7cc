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
//! This file holds the client and its options; `transport.rs` the request plumbing (agents,
//! auth, retries); `pull.rs` and `push.rs` the two directions; `auth.rs` challenges and credentials; `body.rs`
//! the bounded body reader.

mod auth;
mod body;
mod pull;
mod push;
mod transport;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use auth::{Credentials, lookup_credentials};
pub use pull::pull;
use transport::make_agent;
use transport::{Body, url_encode};

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
    /// Where docker's `config.json` (credentials, credential helpers) is looked for, such as
    /// `$DOCKER_CONFIG` or `~/.docker` as the caller resolves them; empty (the default): none.
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
            docker_config_dir: PathBuf::new(),
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

#[cfg(test)]
mod tests {
    use super::transport::registry_message;
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
    fn defaults_read_no_docker_config() {
        // Issue 13: the library reads no environment; the CLI passes $DOCKER_CONFIG/~/.docker.
        let opts = RegistryOptions::default();
        assert_eq!(opts.docker_config_dir, PathBuf::new());
        assert_eq!(
            lookup_credentials(&opts.docker_config_dir, "example.com").unwrap(),
            None
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
