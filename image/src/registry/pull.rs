//! Pulling: manifests (tags and digests, indexes resolved for a platform), blobs streamed
//! into the store with size and digest checks, layers in parallel, blobs before manifests
//! before the tag. Bodies are read through `body::GuardedBody`: never past the descriptor's
//! size (a manifest by tag: 4 MiB), never slower than the low-speed rule.

use std::io::Read;

use super::body::{self, BodyFault, GuardedBody};
use super::{Body, MANIFEST_ACCEPT, MAX_MANIFEST, RegistryClient, RegistryOptions, TransferEvent};
use crate::error::{Error, Result};
use crate::image::{Image, media_type_of, parse_manifest, select_platform};
use crate::spec::{self, Descriptor, Index, Platform};
use crate::{ContentStore, Digest, Reference};

/// Counts bytes read and reports them.
struct ProgressReader<'a, R> {
    inner: R,
    client: &'a RegistryClient,
    digest: &'a Digest,
    done: u64,
    reported: u64,
    total: u64,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done - self.reported >= 512 * 1024 || (n == 0 && self.done != self.reported) {
            self.reported = self.done;
            self.client.emit(&TransferEvent::Progress {
                digest: self.digest.clone(),
                done: self.done,
                total: self.total,
            });
        }
        Ok(n)
    }
}

impl RegistryClient {
    /// Fetches a manifest or index by tag or digest: its bytes, media type and digest
    /// (verified against the reference's digest when it has one).
    pub fn fetch_manifest(
        &self,
        reference: &Reference,
        target: &str,
    ) -> Result<(Vec<u8>, String, Digest)> {
        self.fetch_manifest_limited(reference, target, MAX_MANIFEST)
    }

    /// [`fetch_manifest`](Self::fetch_manifest) reading at most `limit` bytes (a descriptor's
    /// size when one is known, never more than 4 MiB).
    fn fetch_manifest_limited(
        &self,
        reference: &Reference,
        target: &str,
        limit: u64,
    ) -> Result<(Vec<u8>, String, Digest)> {
        let what = format!("manifest `{target}`");
        if limit > MAX_MANIFEST {
            return Err(Self::too_large(reference, &what, MAX_MANIFEST));
        }
        let url = format!("{}/manifests/{target}", self.base_url(reference));
        let resp = self.send(
            reference,
            "pull",
            "GET",
            &url,
            &[("Accept", MANIFEST_ACCEPT)],
            &Body::Empty,
        )?;
        if resp.status().as_u16() != 200 {
            return Err(self.status_error(
                reference,
                "pull",
                &format!("manifest `{target}`"),
                resp,
            ));
        }
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok());
        let bytes = body::read_to_vec(resp.into_body().into_reader(), limit, self.progress_rule())
            .map_err(|e| match body::fault_of(&e) {
                Some(BodyFault::TooLong { limit }) => Self::too_large(reference, &what, *limit),
                _ => Error::Network {
                    registry: reference.registry().to_owned(),
                    message: format!(
                        "reading {what} of `{}`: {}",
                        reference.familiar(),
                        self.describe_io(&e)
                    ),
                },
            })?;
        let digest = Digest::of_bytes(&bytes);
        let expected = Digest::parse(target).ok().or(header_digest);
        if let Some(exp) = expected
            && exp != digest
        {
            return Err(Error::DigestMismatch {
                what: format!("manifest `{target}` of `{}`", reference.familiar()),
                expected: exp,
                actual: digest,
            });
        }
        let mt = media_type_of(
            &bytes,
            &format!("manifest `{target}` of `{}`", reference.familiar()),
        )?;
        Ok((bytes, mt, digest))
    }

    fn too_large(reference: &Reference, what: &str, limit: u64) -> Error {
        Error::BodyTooLarge {
            registry: reference.registry().to_owned(),
            repository: reference.repository().to_owned(),
            what: what.to_owned(),
            limit,
        }
    }

    /// Downloads a blob into the store, verifying size and digest (retried on network errors
    /// and stalls, not on a body longer than the descriptor says).
    fn fetch_blob(
        &self,
        store: &ContentStore,
        reference: &Reference,
        desc: &Descriptor,
    ) -> Result<()> {
        let url = format!("{}/blobs/{}", self.base_url(reference), desc.digest);
        let what = format!("blob {} of `{}`", desc.digest, reference.familiar());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self.send(reference, "pull", "GET", &url, &[], &Body::Empty)?;
            if resp.status().as_u16() != 200 {
                return Err(self.status_error(
                    reference,
                    "pull",
                    &format!("blob {}", desc.digest),
                    resp,
                ));
            }
            let reader = ProgressReader {
                inner: GuardedBody::new(
                    resp.into_body().into_reader(),
                    desc.size,
                    self.progress_rule(),
                ),
                client: self,
                digest: &desc.digest,
                done: 0,
                reported: 0,
                total: desc.size,
            };
            match store.put_verified(reader, desc, &what) {
                // Longer than its descriptor: the server is wrong, asking again will not help.
                Err(Error::Io { source, .. })
                    if matches!(body::fault_of(&source), Some(BodyFault::TooLong { .. })) =>
                {
                    return Err(Self::too_large(
                        reference,
                        &format!("blob {}", desc.digest),
                        desc.size,
                    ));
                }
                // The body broke off (connection reset, closed early) or stalled: start the
                // blob again on a fresh connection.
                Err(Error::Io { source, .. }) if attempt < self.opts.attempts => {
                    tracing::debug!(
                        "downloading {what}: {}; retrying",
                        self.describe_io(&source)
                    );
                    std::thread::sleep(self.opts.backoff * 2u32.pow(attempt - 1));
                }
                Err(Error::Io { source, .. }) => {
                    return Err(Error::Network {
                        registry: reference.registry().to_owned(),
                        message: format!("downloading {what}: {}", self.describe_io(&source)),
                    });
                }
                other => return other,
            }
        }
    }

    /// Pulls `reference` for `platform` into `store` and tags it there (when the reference has a
    /// tag). Blobs already in the store are not downloaded again.
    pub fn pull(
        &self,
        store: &ContentStore,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<Image> {
        let target = reference.digest().map_or_else(
            || reference.tag().unwrap_or("latest").to_owned(),
            ToString::to_string,
        );
        let (top_bytes, top_type, top_digest) = self.fetch_manifest(reference, &target)?;
        let name = reference.familiar();
        let (manifest_bytes, manifest_digest, index) = if spec::is_index(&top_type) {
            let index: Index = crate::image::parse_json(&top_bytes, &format!("index of `{name}`"))?;
            let desc = select_platform(&index, platform, &name)?.clone();
            let (bytes, mt, digest) =
                self.fetch_manifest_limited(reference, desc.digest.as_str(), desc.size)?;
            if !spec::is_manifest(&mt) {
                return Err(Error::UnsupportedMediaType {
                    media_type: mt,
                    what: format!("manifest of `{name}`"),
                });
            }
            (bytes, digest, Some((top_bytes, top_digest)))
        } else if spec::is_manifest(&top_type) {
            (top_bytes, top_digest, None)
        } else {
            return Err(Error::UnsupportedMediaType {
                media_type: top_type,
                what: format!("manifest of `{name}`"),
            });
        };
        let manifest = parse_manifest(&manifest_bytes, &format!("manifest of `{name}`"))?;

        let mut blobs: Vec<&Descriptor> = vec![&manifest.config];
        blobs.extend(manifest.layers.iter());
        let missing: Vec<&Descriptor> = blobs
            .into_iter()
            .filter(|d| !store.has_blob(&d.digest))
            .collect();
        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let present = !missing.iter().any(|m| m.digest == d.digest);
            self.emit(&TransferEvent::Blob {
                digest: d.digest.clone(),
                size: d.size,
                present,
            });
        }
        self.for_each_parallel(&missing, |d| {
            self.fetch_blob(store, reference, d)?;
            self.emit(&TransferEvent::Done {
                digest: d.digest.clone(),
            });
            Ok(())
        })?;

        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            store.record_source(&d.digest, reference.registry(), reference.repository())?;
        }
        // Manifests last: a store never holds a manifest whose blobs are missing.
        store.put_bytes(&manifest_bytes)?;
        if let Some((bytes, _)) = &index {
            store.put_bytes(bytes)?;
        }
        let mut image = Image::load(store, &manifest_digest, platform)?;
        image.index_digest = index.map(|(_, d)| d);
        // The tag names what the registry's tag names: the index, from which each platform
        // pulled into this store resolves (`Image::resolve`).
        if reference.tag().is_some() {
            let tagged = image
                .index_digest
                .as_ref()
                .unwrap_or(&image.manifest_digest);
            store.set_tag(reference, tagged)?;
        }
        Ok(image)
    }

    /// Downloads a blob of the repository of `reference` into the store (verified), unless it
    /// is already there.
    pub fn pull_blob(
        &self,
        store: &ContentStore,
        reference: &Reference,
        desc: &Descriptor,
    ) -> Result<()> {
        if store.has_blob(&desc.digest) {
            return Ok(());
        }
        self.fetch_blob(store, reference, desc)
    }
}

/// Pulls with default options (no credentials, loopback over HTTP).
pub fn pull(store: &ContentStore, reference: &Reference, platform: &Platform) -> Result<Image> {
    RegistryClient::new(RegistryOptions::default()).pull(store, reference, platform)
}
