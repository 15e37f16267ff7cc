//! Recompressing stored layers when an export or push asks for another compression than the
//! one a layer was stored with. Converted blobs go into the content store like any other, and a
//! small record under `content/converted/` remembers "blob X as zstd level 3 is blob Y" so the
//! same conversion is done once.

use std::fs;
use std::io::{self, Write};

use crate::compression::{Compression, CompressionOptions, decompress};
use crate::error::{Error, IoContext, Result};
use crate::image::{Image, WriteOptions, write_image_with};
use crate::spec::{Descriptor, media_type};
use crate::{ContentStore, Digest};

/// Returns `image` with every layer in `target` compression, converting (and storing) the
/// layers that differ. The result is a new manifest unless nothing had to change.
/// `docker_media_types` picks the media type family of the written manifest.
pub fn convert_image(
    store: &ContentStore,
    image: &Image,
    target: CompressionOptions,
    docker_media_types: bool,
) -> Result<Image> {
    let mut changed = false;
    let mut layers = Vec::with_capacity(image.layers.len());
    for (layer, diff_id) in image.layers.iter().zip(&image.config.rootfs.diff_ids) {
        let current = Compression::from_layer_media_type(&layer.media_type).ok_or_else(|| {
            Error::UnsupportedMediaType {
                media_type: layer.media_type.clone(),
                what: format!("layer {}", layer.digest),
            }
        })?;
        if current == target.compression {
            layers.push(layer.clone());
            continue;
        }
        changed = true;
        layers.push(convert_layer(store, layer, diff_id, target)?);
    }
    let is_docker = image.manifest_media_type == media_type::DOCKER_MANIFEST;
    if !changed && is_docker == docker_media_types {
        return Ok(image.clone());
    }
    let opts = WriteOptions {
        docker_media_types,
        annotations: image.manifest.annotations.clone(),
    };
    let mut out = write_image_with(store, &image.config, &layers, &opts)?;
    out.index_digest = None;
    Ok(out)
}

/// Converts one layer blob to `target`, reusing an earlier conversion when recorded.
pub fn convert_layer(
    store: &ContentStore,
    layer: &Descriptor,
    diff_id: &Digest,
    target: CompressionOptions,
) -> Result<Descriptor> {
    let media_type = target.compression.layer_media_type(false);
    // The uncompressed form of a layer is addressed by its diff_id.
    if target.compression == Compression::Uncompressed && store.has_blob(diff_id) {
        return Ok(Descriptor::new(
            media_type,
            diff_id.clone(),
            store.blob_size(diff_id)?,
        ));
    }
    let record_dir = store.state_dir().join("content/converted");
    let record = record_dir.join(format!(
        "{}.{}.{}",
        layer.digest.hex(),
        target.compression.name(),
        target
            .level
            .map_or_else(|| "default".to_owned(), |l| l.to_string())
    ));
    if let Ok(text) = fs::read_to_string(&record)
        && let Ok(d) = Digest::parse(text.trim())
        && store.has_blob(&d)
    {
        return Ok(Descriptor::new(media_type, d.clone(), store.blob_size(&d)?));
    }
    let src = store.open_blob(&layer.digest)?;
    let mut reader = decompress(src).at(store.blob_path(&layer.digest))?;
    let mut w = store.layer_writer(target)?;
    io::copy(&mut reader, &mut w).at(store.blob_path(&layer.digest))?;
    w.flush().at(store.blob_path(&layer.digest))?;
    let out = w.finish()?;
    if &out.diff_id != diff_id {
        return Err(Error::DigestMismatch {
            what: format!("uncompressed content of layer {}", layer.digest),
            expected: diff_id.clone(),
            actual: out.diff_id,
        });
    }
    fs::create_dir_all(&record_dir).at(&record_dir)?;
    fs::write(&record, out.descriptor.digest.as_str()).at(&record)?;
    Ok(out.descriptor)
}
