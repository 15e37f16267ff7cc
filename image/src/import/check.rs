//! The check phase of a load: every blob against its descriptor, configs, manifests, and each
//! layer decompressed to its end and hashed against its diff_id.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;

use super::{Checked, CheckedKind, DockerManifestEntry, Source};
use crate::compression::Compression;
use crate::digest::{HashingReader, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::image::parse_json;
use crate::spec::{self, Descriptor, ImageConfig, Index, Platform};
use crate::{ContentStore, Digest};

/// Opens the copy of a blob the load will use: the store's when it has one, else the
/// archive's (returned too, to be copied in later).
pub(super) fn open_blob(
    store: &ContentStore,
    src: &Source<'_>,
    desc: &Descriptor,
) -> Result<(File, Option<PathBuf>)> {
    if store.has_blob(&desc.digest) {
        return Ok((store.open_blob(&desc.digest)?, None));
    }
    let p = src.blob(&desc.digest)?;
    Ok((File::open(&p).at(&p)?, Some(p)))
}

/// What reading a layer blob to its end found.
pub(super) struct LayerCheck {
    pub(super) digest: Digest,
    pub(super) size: u64,
    pub(super) diff_id: Digest,
    pub(super) compression: Compression,
}

/// Reads a layer blob to its end: its digest and size, and the digest of its uncompressed
/// bytes. A stream that does not decompress to its end (a truncated gzip, say) is an error.
pub(super) fn check_layer(file: impl Read, what: &str) -> Result<LayerCheck> {
    let mut raw = HashingReader::new(file);
    let mut plain = HashingWriter::new(io::sink());
    let mut buffered = BufReader::with_capacity(256 * 1024, &mut raw);
    let head = buffered.fill_buf().map_err(|e| Error::InvalidImage {
        what: what.to_owned(),
        reason: format!("cannot be read: {e}"),
    })?;
    let compression = Compression::detect(head);
    let decoded = match compression {
        Compression::Gzip => io::copy(
            &mut flate2::read::MultiGzDecoder::new(&mut buffered),
            &mut plain,
        ),
        Compression::Zstd => zstd::stream::read::Decoder::with_buffer(&mut buffered)
            .and_then(|mut d| io::copy(&mut d, &mut plain)),
        Compression::Uncompressed => io::copy(&mut buffered, &mut plain),
    };
    // Whatever follows the compressed stream still counts for the blob's digest.
    let rest = decoded.and_then(|_| io::copy(&mut buffered, &mut io::sink()));
    rest.map_err(|e| Error::InvalidImage {
        what: what.to_owned(),
        reason: format!("the {} layer does not decompress: {e}", compression.name()),
    })?;
    drop(buffered);
    let (_, diff_id, _) = plain.finish();
    let diff_id = diff_id.expect("a hashing writer hashes");
    Ok(LayerCheck {
        digest: raw.digest(),
        size: raw.bytes_read(),
        diff_id,
        compression,
    })
}

/// Parses a config and checks it has a `rootfs` of type `layers` listing `layers` diff_ids.
pub(super) fn check_config(bytes: &[u8], layers: usize, what: &str) -> Result<ImageConfig> {
    let value: serde_json::Value = parse_json(bytes, what)?;
    let rootfs = value.get("rootfs");
    let kind = rootfs.and_then(|r| r.get("type")).and_then(|t| t.as_str());
    let diff_ids = rootfs.and_then(|r| r.get("diff_ids"));
    let invalid = |reason: String| Error::InvalidImage {
        what: what.to_owned(),
        reason,
    };
    if rootfs.is_none() {
        return Err(invalid(
            "the config has no `rootfs` (the diff_ids of its layers)".into(),
        ));
    }
    if kind != Some("layers") || !diff_ids.is_some_and(serde_json::Value::is_array) {
        return Err(invalid(
            "the config's `rootfs` needs `type` `layers` and a `diff_ids` list".into(),
        ));
    }
    let config = ImageConfig::from_json(bytes).map_err(|e| invalid(e.to_string()))?;
    if config.rootfs.diff_ids.len() != layers {
        return Err(invalid(format!(
            "layers length mismatch: {layers} layers but {} diff_ids in the config's `rootfs`",
            config.rootfs.diff_ids.len()
        )));
    }
    Ok(config)
}

/// The error for a layer whose uncompressed bytes are not its diff_id (Docker's wording).
pub(super) fn diff_id_mismatch(what: String, expected: &Digest, actual: Digest) -> Error {
    Error::DigestMismatch {
        what,
        expected: expected.clone(),
        actual,
    }
}

pub(super) fn check_manifest(
    store: &ContentStore,
    src: &Source<'_>,
    desc: &Descriptor,
    platform: &Platform,
) -> Result<Checked> {
    let what = format!("manifest {} in {}", desc.digest, src.origin.display());
    if spec::is_index(&desc.media_type) {
        let bytes = read_verified(src, desc)?;
        let index: Index = parse_json(&bytes, &what)?;
        let child = crate::image::select_platform(&index, platform, &what)?.clone();
        let mut image = check_manifest(store, src, &child, platform)?;
        if let CheckedKind::Layout { index: slot, .. } = &mut image.kind {
            // The outermost index is the one an image records.
            *slot = Some((desc.digest.clone(), bytes));
        }
        return Ok(image);
    }
    if !spec::is_manifest(&desc.media_type) {
        return Err(Error::UnsupportedMediaType {
            media_type: desc.media_type.clone(),
            what,
        });
    }
    let bytes = read_verified(src, desc)?;
    let manifest = crate::image::parse_manifest(&bytes, &what)?;
    let config_bytes = if store.has_blob(&manifest.config.digest) {
        store.read_blob(&manifest.config.digest)?
    } else {
        read_verified(src, &manifest.config)?
    };
    if config_bytes.len() as u64 != manifest.config.size {
        return Err(Error::SizeMismatch {
            what: src.what(&manifest.config.digest),
            expected: manifest.config.size,
            actual: config_bytes.len() as u64,
        });
    }
    let config = check_config(
        &config_bytes,
        manifest.layers.len(),
        &format!("config {} of {what}", manifest.config.digest),
    )?;
    let mut blobs = vec![(
        manifest.config.clone(),
        (!store.has_blob(&manifest.config.digest))
            .then(|| src.blob(&manifest.config.digest))
            .transpose()?,
    )];
    for (i, (layer, diff_id)) in manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .enumerate()
    {
        let layer_what = format!("layer {i} ({}) of {what}", layer.digest);
        let (file, path) = open_blob(store, src, layer)?;
        let found = check_layer(file, &layer_what)?;
        if found.size != layer.size {
            return Err(Error::SizeMismatch {
                what: layer_what,
                expected: layer.size,
                actual: found.size,
            });
        }
        if found.digest != layer.digest {
            return Err(Error::DigestMismatch {
                what: layer_what,
                expected: layer.digest.clone(),
                actual: found.digest,
            });
        }
        if &found.diff_id != diff_id {
            return Err(diff_id_mismatch(
                format!("{layer_what} (its diff_id)"),
                diff_id,
                found.diff_id,
            ));
        }
        blobs.push((layer.clone(), path));
    }
    Ok(Checked {
        config: manifest.config.clone(),
        blobs,
        kind: CheckedKind::Layout {
            manifest: (desc.digest.clone(), bytes),
            index: None,
            platform: platform.clone(),
        },
    })
}

pub(super) fn read_verified(src: &Source<'_>, desc: &Descriptor) -> Result<Vec<u8>> {
    let p = src.blob(&desc.digest)?;
    let bytes = fs::read(&p).at(&p)?;
    let actual = Digest::of_bytes(&bytes);
    if actual != desc.digest {
        return Err(Error::DigestMismatch {
            what: src.what(&desc.digest),
            expected: desc.digest.clone(),
            actual,
        });
    }
    if bytes.len() as u64 != desc.size {
        return Err(Error::SizeMismatch {
            what: src.what(&desc.digest),
            expected: desc.size,
            actual: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// A docker-archive without index.json (Docker before 25): `<id>/layer.tar` files and a config
/// JSON named in manifest.json. Its layers are checked here; a manifest is written for it
/// (Docker media types) when it is stored.
pub(super) fn check_legacy(
    store: &ContentStore,
    src: &Source<'_>,
    e: &DockerManifestEntry,
) -> Result<Checked> {
    let config_path = src.path(&e.config, "config")?;
    let config_bytes = fs::read(&config_path).at(&config_path)?;
    let config = check_config(
        &config_bytes,
        e.layers.len(),
        &format!("config `{}` in {}", e.config, src.origin.display()),
    )?;
    let config_desc = Descriptor::new(
        spec::media_type::DOCKER_CONFIG,
        Digest::of_bytes(&config_bytes),
        config_bytes.len() as u64,
    );
    let mut layers = Vec::new();
    let mut blobs = Vec::new();
    for (i, (rel, diff_id)) in e.layers.iter().zip(&config.rootfs.diff_ids).enumerate() {
        let p = src.path(rel, "layer")?;
        let what = format!("layer {i} `{rel}` in {}", src.origin.display());
        let found = check_layer(File::open(&p).at(&p)?, &what)?;
        if &found.diff_id != diff_id {
            return Err(diff_id_mismatch(
                format!("{what} (its diff_id)"),
                diff_id,
                found.diff_id,
            ));
        }
        let desc = Descriptor::new(
            found
                .compression
                .layer_media_type(found.compression != Compression::Zstd),
            found.digest,
            found.size,
        );
        let path = (!store.has_blob(&desc.digest)).then_some(p);
        layers.push(desc.clone());
        blobs.push((desc, path));
    }
    Ok(Checked {
        config: config_desc,
        blobs,
        kind: CheckedKind::Legacy {
            config_bytes,
            config: Box::new(config),
            layers,
        },
    })
}
