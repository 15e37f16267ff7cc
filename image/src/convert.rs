//! Recompressing stored layers when an export or push asks for another compression than the
//! one a layer was stored with. Converted blobs go into the content store like any other, and a
//! small record under `content/converted/` remembers "blob X as zstd level 3 is blob Y" so the
//! same conversion is done once.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::compression::{Compression, CompressionOptions, decompress};
use crate::error::{Error, IoContext, Result};
use crate::image::{Image, WriteOptions, write_image_with};
use crate::spec::{Descriptor, media_type};
use crate::{ContentStore, Digest, LayerWriter};

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
    // The uncompressed form of a layer is addressed by its diff_id.
    if target.compression == Compression::Uncompressed && store.has_blob(diff_id) {
        return Ok(Descriptor::new(
            target.compression.layer_media_type(false),
            diff_id.clone(),
            store.blob_size(diff_id)?,
        ));
    }
    // A layer a build deferred is compressed straight from its source: the uncompressed
    // blob is never written.
    if Compression::from_layer_media_type(&layer.media_type) == Some(Compression::Uncompressed)
        && &layer.digest == diff_id
        && let Some(rec) = store.deferred_blob(&layer.digest)
    {
        return compress_layer_stream(store, diff_id, target, |w| store.stream_deferred(&rec, w));
    }
    let record = record_path(store, &layer.digest, target);
    if let Some(done) = recorded(store, &record, target)? {
        return Ok(done);
    }
    let src = store.open_blob(&layer.digest)?;
    let mut reader = decompress(src).at(store.blob_path(&layer.digest))?;
    let mut w = store.layer_writer(target)?;
    copy_large(&mut reader, &mut w).at(store.blob_path(&layer.digest))?;
    finish(
        store,
        w,
        diff_id,
        &format!("uncompressed content of layer {}", layer.digest),
        &record,
    )
}

/// Stores a layer that exists only as a stream (a build that kept no blob of it): `fill`
/// writes the uncompressed tar, which must hash to `diff_id`; the blob is stored in `target`
/// compression through the content store's ingest, and the conversion is recorded exactly as
/// [`convert_layer`] records that of an uncompressed blob (keyed by `diff_id`), so either
/// finds the other's result. Returns the stored blob's descriptor.
pub fn compress_layer_stream(
    store: &ContentStore,
    diff_id: &Digest,
    target: CompressionOptions,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<Descriptor> {
    let what = format!("layer with diff_id {diff_id}");
    let media_type = target.compression.layer_media_type(false);
    if target.compression == Compression::Uncompressed {
        if store.has_blob(diff_id) {
            return Ok(Descriptor::new(
                media_type,
                diff_id.clone(),
                store.blob_size(diff_id)?,
            ));
        }
        let mut w = store.blob_writer()?.named(what.clone());
        fill(&mut w).at(&what)?;
        let (digest, size) = w.commit(Some(diff_id))?;
        return Ok(Descriptor::new(media_type, digest, size));
    }
    let record = record_path(store, diff_id, target);
    if let Some(done) = recorded(store, &record, target)? {
        return Ok(done);
    }
    let mut w = store.layer_writer(target)?;
    fill(&mut w).at(&what)?;
    finish(store, w, diff_id, &what, &record)
}

/// Copies in 1 MiB reads (`io::copy` reads 8 KiB at a time: 32,768 reads and writes for a
/// 256 MiB layer, on the thread that feeds the compressors).
pub(crate) fn copy_large(r: &mut dyn Read, w: &mut dyn Write) -> io::Result<u64> {
    copy_with_buffer(r, w, &mut vec![0u8; 1 << 20])
}

/// Copies `r` to `w` to the end through `buf` (one read and one write per `buf.len()` bytes,
/// where `io::copy` works in 8 KiB), retrying interrupted reads; returns the bytes copied. A
/// caller copying many files passes one buffer for all of them.
pub fn copy_with_buffer(
    r: &mut (impl Read + ?Sized),
    w: &mut (impl Write + ?Sized),
    buf: &mut [u8],
) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = match r.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// `content/converted/<source hex>.<compression>.<level>`.
fn record_path(store: &ContentStore, source: &Digest, target: CompressionOptions) -> PathBuf {
    store.state_dir().join("content/converted").join(format!(
        "{}.{}.{}",
        source.hex(),
        target.compression.name(),
        target
            .level
            .map_or_else(|| "default".to_owned(), |l| l.to_string())
    ))
}

/// The blob an earlier conversion recorded, when it is still stored.
fn recorded(
    store: &ContentStore,
    record: &Path,
    target: CompressionOptions,
) -> Result<Option<Descriptor>> {
    if let Ok(text) = fs::read_to_string(record)
        && let Ok(d) = Digest::parse(text.trim())
        && store.has_blob(&d)
    {
        let size = store.blob_size(&d)?;
        return Ok(Some(Descriptor::new(
            target.compression.layer_media_type(false),
            d,
            size,
        )));
    }
    Ok(None)
}

/// Commits the converted blob after checking its uncompressed content against `diff_id`, and
/// records the conversion (atomically: a crash leaves no half-written record).
fn finish(
    store: &ContentStore,
    mut w: LayerWriter,
    diff_id: &Digest,
    what: &str,
    record: &Path,
) -> Result<Descriptor> {
    w.flush().at(what)?;
    let out = w.finish_expecting(diff_id, what)?;
    let dir = record.parent().unwrap_or(store.state_dir());
    fs::create_dir_all(dir).at(dir)?;
    let mut tmp = tempfile::NamedTempFile::with_prefix_in(".record-", dir).at(dir)?;
    tmp.write_all(out.descriptor.digest.as_str().as_bytes())
        .at(record)?;
    tmp.persist(record).map_err(|e| Error::Io {
        path: record.to_path_buf(),
        source: e.error,
    })?;
    Ok(out.descriptor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streamed_layer_is_verified_stored_and_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let tar: Vec<u8> = (0..300_000u32).map(|i| (i % 13) as u8).collect();
        let diff_id = Digest::of_bytes(&tar);
        let gz = CompressionOptions::default();
        let d = compress_layer_stream(&store, &diff_id, gz, |w| w.write_all(&tar)).unwrap();
        assert_eq!(d.media_type, media_type::OCI_LAYER_GZIP);
        let mut back = Vec::new();
        io::Read::read_to_end(
            &mut decompress(store.open_blob(&d.digest).unwrap()).unwrap(),
            &mut back,
        )
        .unwrap();
        assert!(back == tar);
        // Recorded: the second call does not run `fill`, and convert_layer of the
        // uncompressed blob (same diff_id) finds the same conversion.
        let again =
            compress_layer_stream(&store, &diff_id, gz, |_| panic!("converted twice")).unwrap();
        assert_eq!(again, d);
        let plain = compress_layer_stream(
            &store,
            &diff_id,
            CompressionOptions {
                compression: Compression::Uncompressed,
                level: None,
            },
            |w| w.write_all(&tar),
        )
        .unwrap();
        assert_eq!(plain.digest, diff_id);
        assert_eq!(convert_layer(&store, &plain, &diff_id, gz).unwrap(), d);

        // A stream that is not the layer it claims to be stores nothing.
        let other = Digest::of_bytes(b"something else");
        let err = compress_layer_stream(&store, &other, gz, |w| w.write_all(&tar)).unwrap_err();
        assert!(
            matches!(err, Error::DigestMismatch { .. }) && err.to_string().contains(other.as_str()),
            "{err}"
        );
        let plain_err = compress_layer_stream(
            &store,
            &other,
            CompressionOptions {
                compression: Compression::Uncompressed,
                level: None,
            },
            |w| w.write_all(&tar),
        )
        .unwrap_err();
        assert!(
            matches!(plain_err, Error::DigestMismatch { .. }),
            "{plain_err}"
        );
        assert!(!store.has_blob(&other));
        assert_eq!(
            store.list_blobs().unwrap().len(),
            2,
            "a mismatching stream left a blob"
        );
    }
}
