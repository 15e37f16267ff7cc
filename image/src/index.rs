//! Image indexes kiln writes: one manifest per platform of a multi-platform build, as an OCI
//! image index (or a Docker manifest list), stored like any manifest so a tag can name it and
//! gc keeps what it reaches. Exporting one as an OCI layout is in `export`, pushing it in
//! `registry::push`.

use crate::convert::convert_image;
use crate::error::{Error, Result};
use crate::image::{Image, WriteOptions, media_type_of, parse_json};
use crate::json::to_canonical_json;
use crate::spec::{self, Descriptor, Index, media_type};
use crate::{CompressionOptions, ContentStore, Digest};

/// A stored image index and the images it lists, in its order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageIndex {
    /// Digest of the index blob (what a tag of a multi-platform image points at).
    pub digest: Digest,
    /// OCI index or Docker manifest list.
    pub media_type: String,
    /// Size of the index blob.
    pub size: u64,
    /// The parsed index.
    pub index: Index,
    /// One image per manifest entry, in the index's order (each with `index_digest` set).
    pub images: Vec<Image>,
}

impl ImageIndex {
    /// A descriptor of the index (for an OCI layout's `index.json`).
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(self.media_type.clone(), self.digest.clone(), self.size)
    }

    /// Loads a stored index and every image it lists; each must be in the store (an index
    /// pulled for one platform only is not a whole `ImageIndex`: use [`Image::load`]).
    /// BuildKit's attestation manifests are skipped.
    pub fn load(store: &ContentStore, digest: &Digest) -> Result<Self> {
        let bytes = store.read_blob(digest)?;
        let what = format!("index {digest}");
        let kind = media_type_of(&bytes, &what)?;
        if !spec::is_index(&kind) {
            return Err(Error::UnsupportedMediaType {
                media_type: kind,
                what,
            });
        }
        let index: Index = parse_json(&bytes, &what)?;
        let mut images = Vec::with_capacity(index.manifests.len());
        for d in &index.manifests {
            let attestation = d
                .annotations
                .get("vnd.docker.reference.type")
                .is_some_and(|t| t == "attestation-manifest");
            if attestation {
                continue;
            }
            if !spec::is_manifest(&d.media_type) {
                return Err(Error::UnsupportedMediaType {
                    media_type: d.media_type.clone(),
                    what: format!("entry {} of {what}", d.digest),
                });
            }
            let platform = d.platform.clone().unwrap_or_else(crate::Platform::host);
            let mut image = Image::load(store, &d.digest, &platform)?;
            image.index_digest = Some(digest.clone());
            images.push(image);
        }
        Ok(Self {
            digest: digest.clone(),
            media_type: kind,
            size: bytes.len() as u64,
            index,
            images,
        })
    }
}

/// Stores an index over `images` (already stored): an OCI image index, or a Docker manifest
/// list with `opts.docker_media_types`; one entry per image in the given order, each with the
/// platform its config names (os, architecture, variant, OS version) and `opts.annotations` on
/// the index. Written as canonical JSON, so the same images give the same digest.
pub fn write_index(
    store: &ContentStore,
    images: &[Image],
    opts: &WriteOptions,
) -> Result<ImageIndex> {
    let entries: Vec<(Image, crate::Platform)> = images
        .iter()
        .map(|i| (i.clone(), i.config.platform()))
        .collect();
    write_index_for(store, &entries, opts)
}

/// [`write_index`] with each entry's platform given: a build's index says the platform each
/// image was built for (BuildKit's `linux/arm64`), which may be less than its config says (a
/// base image's `variant: v8` stays in the config).
pub fn write_index_for(
    store: &ContentStore,
    entries: &[(Image, crate::Platform)],
    opts: &WriteOptions,
) -> Result<ImageIndex> {
    let images: Vec<Image> = entries.iter().map(|(i, _)| i.clone()).collect();
    if images.is_empty() {
        return Err(Error::InvalidImage {
            what: "index to write".into(),
            reason: "no images".into(),
        });
    }
    for image in &images {
        if !store.has_blob(&image.manifest_digest) {
            return Err(Error::BlobNotFound {
                digest: image.manifest_digest.clone(),
            });
        }
    }
    let media_type = if opts.docker_media_types {
        media_type::DOCKER_MANIFEST_LIST
    } else {
        media_type::OCI_INDEX
    };
    let index = Index {
        schema_version: 2,
        media_type: Some(media_type.to_owned()),
        manifests: entries
            .iter()
            .map(|(i, p)| Descriptor {
                platform: Some(p.clone()),
                ..i.descriptor()
            })
            .collect(),
        annotations: opts.annotations.clone(),
    };
    let bytes = to_canonical_json(&index)?;
    let digest = store.put_bytes(&bytes)?;
    let images = images
        .iter()
        .map(|i| Image {
            index_digest: Some(digest.clone()),
            ..i.clone()
        })
        .collect();
    Ok(ImageIndex {
        digest,
        media_type: media_type.to_owned(),
        size: bytes.len() as u64,
        index,
        images,
    })
}

/// Returns `index` with every image's layers in `target` compression ([`convert_image`]) and
/// manifests of the family `docker_media_types` picks, under a new index of the same family
/// (same annotations); `index` itself when nothing changes.
pub fn convert_index(
    store: &ContentStore,
    index: &ImageIndex,
    target: CompressionOptions,
    docker_media_types: bool,
) -> Result<ImageIndex> {
    let mut images = Vec::with_capacity(index.images.len());
    for image in &index.images {
        images.push(convert_image(store, image, target, docker_media_types)?);
    }
    let same_family = (index.media_type == media_type::DOCKER_MANIFEST_LIST) == docker_media_types;
    let unchanged = images
        .iter()
        .zip(&index.images)
        .all(|(a, b)| a.manifest_digest == b.manifest_digest);
    if unchanged && same_family {
        return Ok(index.clone());
    }
    let opts = WriteOptions {
        docker_media_types,
        annotations: index.index.annotations.clone(),
    };
    // Each entry keeps the platform the index gave it.
    let entries: Vec<(Image, crate::Platform)> = images
        .into_iter()
        .zip(&index.index.manifests)
        .map(|(i, d)| {
            let p = d.platform.clone().unwrap_or_else(|| i.config.platform());
            (i, p)
        })
        .collect();
    write_index_for(store, &entries, &opts)
}
