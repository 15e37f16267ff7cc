//! Pushing: HEAD each blob first, mount from another repository of the same registry when
//! possible, else upload (one PUT, or PATCH chunks then PUT), and the manifest last.

use std::sync::Mutex;

use ureq::http::Response;

use super::{Body, PushReport, RegistryClient, TransferEvent, url_encode};
use crate::compression::Compression;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::index::ImageIndex;
use crate::spec::Descriptor;
use crate::{ContentStore, Digest, Reference};

impl RegistryClient {
    /// Whether the repository of `reference` has the blob (HEAD).
    pub fn blob_exists(&self, reference: &Reference, digest: &Digest) -> Result<bool> {
        let url = format!("{}/blobs/{digest}", self.base_url(reference));
        let resp = self.send(reference, "pull,push", "HEAD", &url, &[], &Body::Empty)?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_error(reference, "push", &format!("blob {digest}"), resp)),
        }
    }

    /// Pushes a stored image to `reference` (tag or digest): blobs first (skipping the ones the
    /// registry has, mounting from `mount_from` when possible), then the manifest.
    pub fn push(
        &self,
        store: &ContentStore,
        image: &Image,
        reference: &Reference,
    ) -> Result<PushReport> {
        // Builds may keep layers uncompressed (cheap for `build -t`); registries get them
        // compressed, as BuildKit pushes them.
        let converted;
        let image = match self.opts.push_compression {
            Some(c)
                if image.layers.iter().any(|l| {
                    Compression::from_layer_media_type(&l.media_type)
                        == Some(Compression::Uncompressed)
                }) =>
            {
                let docker = image.manifest_media_type == crate::media_type::DOCKER_MANIFEST;
                converted = crate::convert_image(store, image, c, docker)?;
                &converted
            }
            _ => image,
        };
        let target = reference
            .tag()
            .map_or_else(|| image.manifest_digest.to_string(), str::to_owned);
        self.push_image(store, image, reference, &target)
    }

    /// Pushes a stored multi-platform image to `reference`: each image's blobs and manifest
    /// (by digest), then the index under the tag (or its digest). Layers stored uncompressed
    /// are compressed first as [`push`](Self::push) does, under a new index. The report names
    /// the index; `uploaded`/`skipped` cover every image's blobs.
    pub fn push_index(
        &self,
        store: &ContentStore,
        index: &ImageIndex,
        reference: &Reference,
    ) -> Result<PushReport> {
        let converted;
        let uncompressed = index.images.iter().flat_map(|i| &i.layers).any(|l| {
            Compression::from_layer_media_type(&l.media_type) == Some(Compression::Uncompressed)
        });
        let index = match self.opts.push_compression {
            Some(c) if uncompressed => {
                let docker = index.media_type == crate::media_type::DOCKER_MANIFEST_LIST;
                converted = crate::convert_index(store, index, c, docker)?;
                &converted
            }
            _ => index,
        };
        let (mut uploaded, mut skipped) = (Vec::new(), Vec::new());
        for image in &index.images {
            let report =
                self.push_image(store, image, reference, image.manifest_digest.as_str())?;
            uploaded.extend(report.uploaded);
            skipped.extend(report.skipped);
        }
        let bytes = store.read_blob(&index.digest)?;
        let target = reference
            .tag()
            .map_or_else(|| index.digest.to_string(), str::to_owned);
        self.push_manifest(reference, &target, &index.media_type, &bytes)?;
        uploaded.sort();
        uploaded.dedup();
        // A blob two images share is uploaded for the first and found for the second.
        skipped.retain(|d| uploaded.binary_search(d).is_err());
        skipped.sort();
        skipped.dedup();
        Ok(PushReport {
            manifest_digest: index.digest.clone(),
            manifest_size: index.size,
            uploaded,
            skipped,
        })
    }

    /// Pushes the blobs of `image` (present in the store), then its manifest as `target`.
    fn push_image(
        &self,
        store: &ContentStore,
        image: &Image,
        reference: &Reference,
        target: &str,
    ) -> Result<PushReport> {
        let mut blobs: Vec<Descriptor> = vec![image.manifest.config.clone()];
        blobs.extend(image.layers.iter().cloned());
        for d in &blobs {
            if !store.has_blob(&d.digest) {
                return Err(Error::BlobNotFound {
                    digest: d.digest.clone(),
                });
            }
        }
        let uploaded = Mutex::new(Vec::new());
        let skipped = Mutex::new(Vec::new());
        self.for_each_parallel(&blobs, |d| {
            let present = self.blob_exists(reference, &d.digest)?;
            self.emit(&TransferEvent::Blob {
                digest: d.digest.clone(),
                size: d.size,
                present,
            });
            let done = if present {
                false
            } else {
                self.upload_blob(store, reference, d)?
            };
            if !present {
                self.emit(&TransferEvent::Done {
                    digest: d.digest.clone(),
                });
            }
            let list = if done { &uploaded } else { &skipped };
            if let Ok(mut l) = list.lock() {
                l.push(d.digest.clone());
            }
            Ok(())
        })?;
        let manifest_bytes = store.read_blob(&image.manifest_digest)?;
        self.push_manifest(
            reference,
            target,
            &image.manifest_media_type,
            &manifest_bytes,
        )?;
        let mut uploaded = uploaded.into_inner().unwrap_or_default();
        let mut skipped = skipped.into_inner().unwrap_or_default();
        uploaded.sort();
        skipped.sort();
        Ok(PushReport {
            manifest_digest: image.manifest_digest.clone(),
            manifest_size: image.manifest_size,
            uploaded,
            skipped,
        })
    }

    /// Puts a manifest or index (`bytes` of type `media_type`) under `target` (a tag or the
    /// digest) in the repository of `reference`. Its blobs must already be there.
    pub fn push_manifest(
        &self,
        reference: &Reference,
        target: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<()> {
        let url = format!("{}/manifests/{target}", self.base_url(reference));
        let resp = self.send(
            reference,
            "pull,push",
            "PUT",
            &url,
            &[("Content-Type", media_type)],
            &Body::Bytes(bytes),
        )?;
        if resp.status().as_u16() != 201 && resp.status().as_u16() != 200 {
            return Err(self.status_error(
                reference,
                "push",
                &format!("manifest `{target}`"),
                resp,
            ));
        }
        Ok(())
    }

    /// Makes sure the repository of `reference` has a stored blob: nothing if HEAD finds it,
    /// else a mount or an upload. Returns true when bytes were uploaded. (For callers that
    /// push other content than images, like a build cache.)
    pub fn push_blob(
        &self,
        store: &ContentStore,
        reference: &Reference,
        desc: &Descriptor,
    ) -> Result<bool> {
        if self.blob_exists(reference, &desc.digest)? {
            return Ok(false);
        }
        self.upload_blob(store, reference, desc)
    }

    /// Uploads one blob. Returns false when a cross-repository mount made the upload unneeded.
    fn upload_blob(
        &self,
        store: &ContentStore,
        reference: &Reference,
        desc: &Descriptor,
    ) -> Result<bool> {
        let base = self.base_url(reference);
        let what = format!("upload of blob {}", desc.digest);
        let mut start = format!("{base}/blobs/uploads/");
        // Mount from the configured repository, else from one this blob was pulled from.
        let prefix = format!("{}/", reference.registry());
        let from = self.opts.mount_from.clone().or_else(|| {
            store
                .sources(&desc.digest)
                .iter()
                .filter_map(|s| s.strip_prefix(&prefix))
                .find(|repo| *repo != reference.repository())
                .map(str::to_owned)
        });
        if let Some(from) = &from {
            start = format!("{start}?mount={}&from={}", desc.digest, url_encode(from));
        }
        let resp = self.send(reference, "pull,push", "POST", &start, &[], &Body::Empty)?;
        match resp.status().as_u16() {
            201 => return Ok(false),
            202 => {}
            _ => return Err(self.status_error(reference, "push", &what, resp)),
        }
        let mut location = location_of(&resp, &base, reference)?;
        store.materialize(&desc.digest)?;
        let path = store.blob_path(&desc.digest);
        let size = desc.size;
        let chunk = self.opts.chunk_size.filter(|c| *c > 0 && *c < size);
        let final_body = if let Some(chunk) = chunk {
            let mut offset = 0;
            while offset < size {
                let len = chunk.min(size - offset);
                let range = format!("{offset}-{}", offset + len - 1);
                let body = Body::FileRange {
                    path: path.clone(),
                    offset,
                    len,
                };
                let resp = self.send(
                    reference,
                    "pull,push",
                    "PATCH",
                    &location,
                    &[
                        ("Content-Type", "application/octet-stream"),
                        ("Content-Range", &range),
                    ],
                    &body,
                )?;
                if resp.status().as_u16() != 202 {
                    return Err(self.status_error(reference, "push", &what, resp));
                }
                location = location_of(&resp, &base, reference)?;
                offset += len;
                self.emit(&TransferEvent::Progress {
                    digest: desc.digest.clone(),
                    done: offset,
                    total: size,
                });
            }
            Body::Empty
        } else {
            Body::FileRange {
                path,
                offset: 0,
                len: size,
            }
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={}", url_encode(desc.digest.as_str()));
        let resp = self.send(
            reference,
            "pull,push",
            "PUT",
            &url,
            &[("Content-Type", "application/octet-stream")],
            &final_body,
        )?;
        if resp.status().as_u16() != 201 {
            return Err(self.status_error(reference, "push", &what, resp));
        }
        Ok(true)
    }
}

fn location_of(resp: &Response<ureq::Body>, base: &str, reference: &Reference) -> Result<String> {
    let loc = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::Registry {
            registry: reference.registry().to_owned(),
            message: "upload answer without a Location header".into(),
        })?;
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return Ok(loc.to_owned());
    }
    // Relative: resolve against scheme://host of the base URL.
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    Ok(format!(
        "{}{}{loc}",
        &base[..host_end],
        if loc.starts_with('/') { "" } else { "/" }
    ))
}
