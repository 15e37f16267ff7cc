//! An image as stored: manifest + config + layer descriptors, loaded from or written to the
//! content store. Writing checks the structure (one diff_id per layer, every blob present) so
//! the store never holds a manifest that points at nothing.

use std::collections::BTreeMap;

use crate::compression::Compression;
use crate::error::{Error, Result};
use crate::json::to_canonical_json;
use crate::spec::{self, Descriptor, ImageConfig, Index, Manifest, Platform, media_type};
use crate::{ContentStore, Digest, Reference};

/// A single-platform image in the content store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Digest of the manifest blob (what tags point at).
    pub manifest_digest: Digest,
    /// The manifest media type (OCI or Docker).
    pub manifest_media_type: String,
    /// Size of the manifest blob.
    pub manifest_size: u64,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// Digest of the config blob (the "image id" Docker shows).
    pub config_digest: Digest,
    /// The parsed config.
    pub config: ImageConfig,
    /// The layer descriptors, base first (same as `manifest.layers`).
    pub layers: Vec<Descriptor>,
    /// When the image came from an index: that index's digest (the "repo digest").
    pub index_digest: Option<Digest>,
}

/// What a registry pull returns: the pulled image, all blobs in the store.
pub type PulledImage = Image;

impl Image {
    /// A descriptor of the manifest, for an index entry.
    pub fn descriptor(&self) -> Descriptor {
        let mut d = Descriptor::new(
            self.manifest_media_type.clone(),
            self.manifest_digest.clone(),
            self.manifest_size,
        );
        d.platform = Some(self.config.platform());
        d
    }

    /// Total size of config and layer blobs.
    pub fn content_size(&self) -> u64 {
        self.manifest.config.size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }

    /// Loads the image whose manifest (or index, resolved for `platform`) has `digest`.
    ///
    /// An index whose entry for `platform` was never pulled (the tag of an index another
    /// platform was pulled from) gives [`Error::ImageNotFound`].
    pub fn load(store: &ContentStore, digest: &Digest, platform: &Platform) -> Result<Self> {
        Self::load_named(store, digest, platform, &digest.to_string())
    }

    fn load_named(
        store: &ContentStore,
        digest: &Digest,
        platform: &Platform,
        name: &str,
    ) -> Result<Self> {
        let bytes = store.read_blob(digest)?;
        let what = format!("manifest {digest}");
        let kind = media_type_of(&bytes, &what)?;
        if spec::is_index(&kind) {
            let index: Index = parse_json(&bytes, &what)?;
            let desc = select_platform(&index, platform, name)?;
            if !store.has_blob(&desc.digest) {
                return Err(Error::ImageNotFound {
                    reference: format!("{name} ({platform})"),
                });
            }
            let mut img = Self::load_manifest(store, &desc.digest, store.read_blob(&desc.digest)?)?;
            img.index_digest = Some(digest.clone());
            return Ok(img);
        }
        Self::load_manifest(store, digest, bytes)
    }

    fn load_manifest(store: &ContentStore, digest: &Digest, bytes: Vec<u8>) -> Result<Self> {
        let what = format!("manifest {digest}");
        let manifest = parse_manifest(&bytes, &what)?;
        let config_bytes = store.read_blob(&manifest.config.digest)?;
        let config = ImageConfig::from_json(&config_bytes)?;
        Ok(Self {
            manifest_digest: digest.clone(),
            manifest_media_type: manifest
                .media_type
                .clone()
                .unwrap_or_else(|| media_type::OCI_MANIFEST.to_owned()),
            manifest_size: bytes.len() as u64,
            config_digest: manifest.config.digest.clone(),
            layers: manifest.layers.clone(),
            manifest,
            config,
            index_digest: None,
        })
    }

    /// Finds an image in the store by tag or by digest (`name@sha256:...`).
    pub fn resolve(
        store: &ContentStore,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<Self> {
        let digest = match reference.digest() {
            Some(d) if store.has_blob(d) => d.clone(),
            Some(_) => {
                return Err(Error::ImageNotFound {
                    reference: reference.familiar(),
                });
            }
            None => store
                .resolve_tag(reference)?
                .ok_or_else(|| Error::ImageNotFound {
                    reference: reference.familiar(),
                })?,
        };
        Self::load_named(store, &digest, platform, &reference.familiar())
    }
}

/// Options for [`write_image_with`].
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Write Docker v2 schema 2 media types instead of OCI ones (BuildKit's `oci-mediatypes=false`).
    pub docker_media_types: bool,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Stores `config` and a manifest over `layers` (OCI media types), returning the new image.
/// Every layer blob must already be in the store, and `config.rootfs.diff_ids` must have one
/// entry per layer.
pub fn write_image(
    store: &ContentStore,
    config: &ImageConfig,
    layers: &[Descriptor],
) -> Result<Image> {
    write_image_with(store, config, layers, &WriteOptions::default())
}

/// [`write_image`] with options.
pub fn write_image_with(
    store: &ContentStore,
    config: &ImageConfig,
    layers: &[Descriptor],
    opts: &WriteOptions,
) -> Result<Image> {
    if config.rootfs.diff_ids.len() != layers.len() {
        return Err(Error::InvalidImage {
            what: "to write".into(),
            reason: format!(
                "{} layers but {} diff_ids in the config's rootfs",
                layers.len(),
                config.rootfs.diff_ids.len()
            ),
        });
    }
    let mut out_layers = Vec::with_capacity(layers.len());
    for l in layers {
        let size = store.blob_size(&l.digest)?;
        if size != l.size {
            return Err(Error::SizeMismatch {
                what: format!("layer {}", l.digest),
                expected: l.size,
                actual: size,
            });
        }
        let compression = Compression::from_layer_media_type(&l.media_type).ok_or_else(|| {
            Error::UnsupportedMediaType {
                media_type: l.media_type.clone(),
                what: format!("layer {}", l.digest),
            }
        })?;
        let mut l = l.clone();
        compression
            .layer_media_type(opts.docker_media_types && compression != Compression::Zstd)
            .clone_into(&mut l.media_type);
        out_layers.push(l);
    }
    let config_bytes = config.to_canonical_json()?;
    let config_digest = store.put_bytes(&config_bytes)?;
    let (manifest_type, config_type) = if opts.docker_media_types {
        (media_type::DOCKER_MANIFEST, media_type::DOCKER_CONFIG)
    } else {
        (media_type::OCI_MANIFEST, media_type::OCI_CONFIG)
    };
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(manifest_type.to_owned()),
        artifact_type: None,
        config: Descriptor::new(
            config_type,
            config_digest.clone(),
            config_bytes.len() as u64,
        ),
        layers: out_layers,
        subject: None,
        annotations: opts.annotations.clone(),
    };
    let manifest_bytes = to_canonical_json(&manifest)?;
    let manifest_digest = store.put_bytes(&manifest_bytes)?;
    Ok(Image {
        manifest_digest,
        manifest_media_type: manifest_type.to_owned(),
        manifest_size: manifest_bytes.len() as u64,
        config_digest,
        config: config.clone(),
        layers: manifest.layers.clone(),
        manifest,
        index_digest: None,
    })
}

/// Picks the manifest for `platform` out of an index as BuildKit (containerd's
/// `images.Manifest` with `platforms.Only`) does: the entries whose platform the matcher
/// accepts, the best ranked first (arm64 before arm/v8 before arm/v7 ...; the first of equal
/// ones), an entry without a platform last; or says which platforms the index has.
pub(crate) fn select_platform<'a>(
    index: &'a Index,
    platform: &Platform,
    reference: &str,
) -> Result<&'a Descriptor> {
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| spec::is_manifest(&d.media_type))
        .collect();
    let matcher = platform.matcher();
    let best = candidates
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match &d.platform {
            Some(p) => matcher.rank(p).map(|r| (r, i)),
            None => Some((usize::MAX, i)),
        })
        .min()
        .map(|(_, i)| candidates[i]);
    best.ok_or_else(|| Error::PlatformNotFound {
        reference: reference.to_owned(),
        platform: platform.to_string(),
        available: candidates
            .iter()
            .filter(|d| !is_attestation(d))
            .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
            .collect(),
    })
}

/// Whether an index entry is BuildKit's attestation manifest (platform `unknown/unknown`).
fn is_attestation(d: &Descriptor) -> bool {
    d.annotations
        .get("vnd.docker.reference.type")
        .is_some_and(|t| t == "attestation-manifest")
}

/// The `mediaType` field of a manifest or index document (falling back on its shape for OCI
/// documents that omit it).
pub(crate) fn media_type_of(bytes: &[u8], what: &str) -> Result<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
        schema_version: Option<u32>,
    }
    let p: Probe = parse_json(bytes, what)?;
    if p.schema_version == Some(1) {
        return Err(Error::UnsupportedMediaType {
            media_type: "application/vnd.docker.distribution.manifest.v1+json".into(),
            what: what.to_owned(),
        });
    }
    Ok(match (p.media_type, p.manifests, p.config) {
        (Some(mt), _, _) => mt,
        (None, Some(_), _) => media_type::OCI_INDEX.to_owned(),
        (None, None, Some(_)) => media_type::OCI_MANIFEST.to_owned(),
        (None, None, None) => {
            return Err(Error::InvalidImage {
                what: what.to_owned(),
                reason: "neither a manifest nor an index".into(),
            });
        }
    })
}

/// Parses a manifest and checks its media types are ones kiln handles.
pub(crate) fn parse_manifest(bytes: &[u8], what: &str) -> Result<Manifest> {
    let m: Manifest = parse_json(bytes, what)?;
    if let Some(mt) = &m.media_type
        && !spec::is_manifest(mt)
    {
        return Err(Error::UnsupportedMediaType {
            media_type: mt.clone(),
            what: what.to_owned(),
        });
    }
    if !spec::is_config(&m.config.media_type) {
        return Err(Error::UnsupportedMediaType {
            media_type: m.config.media_type.clone(),
            what: format!("config of {what}"),
        });
    }
    for l in &m.layers {
        if Compression::from_layer_media_type(&l.media_type).is_none() {
            return Err(Error::UnsupportedMediaType {
                media_type: l.media_type.clone(),
                what: format!("layer {} of {what}", l.digest),
            });
        }
    }
    Ok(m)
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json {
        what: what.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::CompressionOptions;

    #[test]
    fn write_then_load_and_validate() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let mut w = store.layer_writer(CompressionOptions::default()).unwrap();
        w.write_all(b"not really a tar").unwrap();
        let layer = w.finish().unwrap();
        let mut config = ImageConfig::new(&Platform::linux_amd64());
        let err =
            write_image(&store, &config, std::slice::from_ref(&layer.descriptor)).unwrap_err();
        assert!(err.to_string().contains("1 layers but 0 diff_ids"), "{err}");
        config.rootfs.diff_ids.push(layer.diff_id.clone());
        let img = write_image(&store, &config, std::slice::from_ref(&layer.descriptor)).unwrap();
        let again = write_image(&store, &config, std::slice::from_ref(&layer.descriptor)).unwrap();
        assert_eq!(
            img.manifest_digest, again.manifest_digest,
            "same image, same digest"
        );
        let r = Reference::parse("app:1").unwrap();
        store.set_tag(&r, &img.manifest_digest).unwrap();
        let loaded = Image::resolve(&store, &r, &Platform::linux_amd64()).unwrap();
        assert_eq!(loaded, img);
        let docker = write_image_with(
            &store,
            &config,
            std::slice::from_ref(&layer.descriptor),
            &WriteOptions {
                docker_media_types: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(docker.layers[0].media_type, media_type::DOCKER_LAYER_GZIP);
        assert_eq!(docker.manifest.config.media_type, media_type::DOCKER_CONFIG);
        assert_eq!(docker.config_digest, img.config_digest);

        let mut missing = layer.descriptor.clone();
        missing.digest = Digest::of_bytes(b"nope");
        let err = write_image(&store, &config, &[missing]).unwrap_err();
        assert!(matches!(err, Error::BlobNotFound { .. }), "{err}");
        let err = Image::resolve(
            &store,
            &Reference::parse("app:2").unwrap(),
            &Platform::linux_amd64(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "image `app:2` is not in the local store");
    }
}
