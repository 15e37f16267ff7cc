//! The crate's single error type. Every variant names the digest, path, reference or registry it
//! is about, so a message read out of context still says what failed.

use std::path::PathBuf;

use crate::Digest;

/// Everything that can go wrong in kiln-image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An image reference such as `busybox:latest` could not be parsed.
    #[error("invalid image reference `{reference}`: {reason}")]
    InvalidReference {
        /// The text as given.
        reference: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A digest string is malformed or uses an unsupported algorithm.
    #[error("invalid digest `{digest}`: {reason}")]
    InvalidDigest {
        /// The text as given.
        digest: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// Content did not hash to the digest it was announced with.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was being verified (a blob, a manifest of an image ...).
        what: String,
        /// The digest the content should have.
        expected: Digest,
        /// The digest it has.
        actual: Digest,
    },
    /// Content had another length than its descriptor says (for example a truncated download).
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// What was being verified.
        what: String,
        /// The size the descriptor announced.
        expected: u64,
        /// The number of bytes received.
        actual: u64,
    },
    /// A registry sent more bytes than a blob's descriptor (or the manifest cap) allows; the
    /// download was stopped at that size and nothing of it was kept.
    #[error(
        "registry {registry} sent more than the {limit} bytes expected for {what} of repository `{repository}`; download stopped"
    )]
    BodyTooLarge {
        /// The registry host.
        registry: String,
        /// The repository.
        repository: String,
        /// What was downloaded (`blob sha256:...`, `manifest `v1``).
        what: String,
        /// The most that was accepted.
        limit: u64,
    },
    /// A blob is not in the content store.
    #[error("blob {digest} is not in the content store")]
    BlobNotFound {
        /// The missing digest.
        digest: Digest,
    },
    /// A deferred blob (a layer kept as a snapshot) could not be made again.
    #[error("layer {digest} cannot be written: {reason}")]
    DeferredBlob {
        /// The deferred blob's digest.
        digest: Digest,
        /// Why.
        reason: String,
    },
    /// No image of that name is in the local store.
    #[error("image `{reference}` is not in the local store")]
    ImageNotFound {
        /// The reference that was looked up.
        reference: String,
    },
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON document (manifest, index, config, docker config.json ...) could not be read.
    #[error("invalid {what}: {source}")]
    Json {
        /// Which document.
        what: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A manifest, index or layer uses a media type kiln does not handle.
    #[error("unsupported media type `{media_type}` for {what}")]
    UnsupportedMediaType {
        /// The media type found.
        media_type: String,
        /// Where it was found.
        what: String,
    },
    /// An image index has no manifest for the requested platform (nor one it also runs).
    #[error("{reference} has no image for {platform} (it has {})", .available.join(", "))]
    PlatformNotFound {
        /// The image.
        reference: String,
        /// The platform asked for (`linux/s390x`).
        platform: String,
        /// The platforms the index offers, in its order.
        available: Vec<String>,
    },
    /// An image is structurally wrong (layer count and diff_ids disagree, ...).
    #[error("invalid image {what}: {reason}")]
    InvalidImage {
        /// Which image or document.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An archive given to `load` is not a docker-archive or OCI layout.
    #[error("invalid archive {path}: {reason}")]
    InvalidArchive {
        /// The archive.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry refused the credentials (HTTP 401).
    #[error(
        "unauthorized: {action} `{reference}` on {registry} needs credentials (HTTP 401){detail}"
    )]
    Unauthorized {
        /// `pull` or `push`.
        action: &'static str,
        /// The image.
        reference: String,
        /// The registry host.
        registry: String,
        /// Extra text from the registry, with a leading separator, or empty.
        detail: String,
    },
    /// The registry denied access (HTTP 403).
    #[error("denied: {action} `{reference}` on {registry} is not allowed (HTTP 403){detail}")]
    Denied {
        /// `pull` or `push`.
        action: &'static str,
        /// The image.
        reference: String,
        /// The registry host.
        registry: String,
        /// Extra text from the registry, with a leading separator, or empty.
        detail: String,
    },
    /// The registry does not know the image or blob (HTTP 404).
    #[error("not found: {what} of `{reference}` does not exist on {registry} (HTTP 404)")]
    RegistryNotFound {
        /// The manifest or blob that was asked for.
        what: String,
        /// The image.
        reference: String,
        /// The registry host.
        registry: String,
    },
    /// Any other unexpected registry answer.
    #[error("registry {registry}: {message}")]
    Registry {
        /// The registry host.
        registry: String,
        /// What happened.
        message: String,
    },
    /// The registry could not be reached (after retries).
    #[error("cannot reach registry {registry}: {message}")]
    Network {
        /// The registry host.
        registry: String,
        /// The transport error.
        message: String,
    },
    /// A docker-credential-* helper failed.
    #[error("credential helper `docker-credential-{helper}` failed for {registry}: {message}")]
    CredentialHelper {
        /// The helper name.
        helper: String,
        /// The registry asked about.
        registry: String,
        /// What went wrong.
        message: String,
    },
    /// A platform specifier could not be parsed.
    #[error(transparent)]
    Platform(#[from] kiln_platform::Error),
    /// An option given by the caller is not valid (an unknown compression name ...).
    #[error("invalid option: {0}")]
    InvalidOption(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds the path to an I/O error.
pub(crate) trait IoContext<T> {
    /// Wraps the error into [`Error::Io`] naming `path`.
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}
