//! Exporters: an image (or several) written as an OCI image layout (directory or tar) or as a
//! docker-archive tar in the layout Docker 25+ `docker save` writes (an OCI layout plus
//! `manifest.json`), and the rootfs writers for `type=local` / `type=tar`. Tars are
//! reproducible: sorted entries, mtime 0, owner 0:0.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::compression::{Compression, CompressionOptions};
use crate::convert::convert_image;
use crate::error::{Error, IoContext, Result};
use crate::image::Image;
use crate::index::ImageIndex;
use crate::json::to_canonical_json;
use crate::spec::{Descriptor, Index, media_type};
use crate::{ContentStore, Digest, Reference};

/// containerd's annotation carrying the full image name in an OCI layout index.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation carrying the reference name (the tag) in an OCI layout index.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Writes `image` as an OCI image layout at `dest`: a tar file when `as_tar`, else a directory.
/// Each name becomes one index entry annotated the way BuildKit (through containerd's archive
/// exporter) does: `io.containerd.image.name` = the full name, `org.opencontainers.image.ref.name`
/// = the tag. Without names the index has one entry without annotations.
pub fn export_oci(
    store: &ContentStore,
    image: &Image,
    names: &[Reference],
    dest: &Path,
    as_tar: bool,
) -> Result<()> {
    let entries = [(image.clone(), names.to_vec())];
    let roots = [(image.descriptor(), names.to_vec())];
    write_layout(store, &roots, &blobs_of(&entries), dest, as_tar)
}

/// Writes a multi-platform image as an OCI image layout at `dest` (a tar file when `as_tar`),
/// as BuildKit's oci exporter does: `index.json` holds one descriptor of the image index per
/// name (annotated as [`export_oci`] does), and `blobs/` the index, every image's manifest,
/// config and layers.
pub fn export_oci_index(
    store: &ContentStore,
    index: &ImageIndex,
    names: &[Reference],
    dest: &Path,
    as_tar: bool,
) -> Result<()> {
    let entries: Vec<(Image, Vec<Reference>)> = index
        .images
        .iter()
        .map(|i| (i.clone(), Vec::new()))
        .collect();
    let mut blobs = blobs_of(&entries);
    blobs.push(index.digest.clone());
    blobs.sort();
    blobs.dedup();
    let roots = [(index.descriptor(), names.to_vec())];
    write_layout(store, &roots, &blobs, dest, as_tar)
}

fn write_layout(
    store: &ContentStore,
    roots: &[(Descriptor, Vec<Reference>)],
    blobs: &[Digest],
    dest: &Path,
    as_tar: bool,
) -> Result<()> {
    let index = layout_index(roots);
    if as_tar {
        write_file_atomically(dest, |w| {
            let mut tar = TarOut::new(w);
            tar.dir("blobs/")?;
            tar.dir("blobs/sha256/")?;
            for d in blobs {
                tar.blob(store, d)?;
            }
            tar.bytes("index.json", &to_canonical_json(&index)?)?;
            tar.bytes("oci-layout", OCI_LAYOUT)?;
            tar.finish()
        })
    } else {
        write_oci_dir(store, &index, blobs, dest)
    }
}

/// Writes an OCI layout tar of several images to `w`.
pub fn write_oci_tar(
    store: &ContentStore,
    images: &[(Image, Vec<Reference>)],
    w: &mut dyn Write,
) -> Result<()> {
    let index = layout_index(&roots_of(images));
    let mut tar = TarOut::new(w);
    tar.dir("blobs/")?;
    tar.dir("blobs/sha256/")?;
    for d in blobs_of(images) {
        tar.blob(store, &d)?;
    }
    tar.bytes("index.json", &to_canonical_json(&index)?)?;
    tar.bytes("oci-layout", OCI_LAYOUT)?;
    tar.finish()
}

fn write_oci_dir(
    store: &ContentStore,
    index: &Index,
    digests: &[Digest],
    dest: &Path,
) -> Result<()> {
    let blobs = dest.join("blobs/sha256");
    fs::create_dir_all(&blobs).at(&blobs)?;
    for d in digests.iter().cloned() {
        let to = blobs.join(d.hex());
        if to.is_file() {
            continue;
        }
        store.materialize(&d)?;
        let from = store.blob_path(&d);
        if !from.is_file() {
            return Err(Error::BlobNotFound { digest: d });
        }
        fs::copy(&from, &to).at(&to)?;
    }
    fs::write(dest.join("oci-layout"), OCI_LAYOUT).at(dest.join("oci-layout"))?;
    fs::write(dest.join("index.json"), to_canonical_json(index)?).at(dest.join("index.json"))
}

fn roots_of(images: &[(Image, Vec<Reference>)]) -> Vec<(Descriptor, Vec<Reference>)> {
    images
        .iter()
        .map(|(i, names)| (i.descriptor(), names.clone()))
        .collect()
}

/// The layout's `index.json`: each root once per name (or once without annotations).
fn layout_index(roots: &[(Descriptor, Vec<Reference>)]) -> Index {
    let mut manifests = Vec::new();
    for (desc, names) in roots {
        let mut desc = desc.clone();
        if names.is_empty() {
            manifests.push(desc);
            continue;
        }
        for name in names {
            desc.annotations.clear();
            desc.annotations
                .insert(ANNOTATION_IMAGE_NAME.to_owned(), name.to_string());
            let tag = name.tag().map_or_else(|| name.to_string(), str::to_owned);
            desc.annotations.insert(ANNOTATION_REF_NAME.to_owned(), tag);
            manifests.push(desc.clone());
        }
    }
    Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.to_owned()),
        manifests,
        annotations: BTreeMap::new(),
    }
}

/// Every blob the images need (manifests, configs, layers), sorted and without duplicates.
fn blobs_of(images: &[(Image, Vec<Reference>)]) -> Vec<Digest> {
    let mut all: Vec<Digest> = images
        .iter()
        .flat_map(|(i, _)| {
            [i.manifest_digest.clone(), i.config_digest.clone()]
                .into_iter()
                .chain(i.layers.iter().map(|l| l.digest.clone()))
        })
        .collect();
    all.sort();
    all.dedup();
    all
}

/// One entry of a docker-archive `manifest.json`.
#[derive(Serialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Writes a docker-archive that `docker load` accepts, laid out as Docker 25+ `docker save`
/// does: `blobs/sha256/*`, `index.json` (OCI, with name annotations), `manifest.json`
/// (`Config`, `RepoTags`, `Layers` pointing into `blobs/`) and `oci-layout`. Layers are written
/// uncompressed like `docker save` unless `compression` asks otherwise (BuildKit's
/// `type=docker` defaults to gzip).
pub fn write_docker_archive(
    store: &ContentStore,
    images: &[(Image, Vec<Reference>)],
    compression: Option<CompressionOptions>,
    w: &mut dyn Write,
) -> Result<()> {
    let target = compression.unwrap_or(CompressionOptions {
        compression: Compression::Uncompressed,
        level: None,
    });
    let mut converted = Vec::with_capacity(images.len());
    for (image, names) in images {
        converted.push((convert_image(store, image, target, false)?, names.clone()));
    }
    let manifest_json: Vec<DockerManifestEntry> = converted
        .iter()
        .map(|(image, names)| DockerManifestEntry {
            config: format!("blobs/sha256/{}", image.config_digest.hex()),
            repo_tags: names
                .iter()
                .filter(|n| n.tag().is_some())
                .map(Reference::familiar)
                .collect(),
            layers: image
                .layers
                .iter()
                .map(|l| format!("blobs/sha256/{}", l.digest.hex()))
                .collect(),
        })
        .collect();
    let index = layout_index(&roots_of(&converted));
    let mut tar = TarOut::new(w);
    tar.dir("blobs/")?;
    tar.dir("blobs/sha256/")?;
    for d in blobs_of(&converted) {
        tar.blob(store, &d)?;
    }
    tar.bytes("index.json", &to_canonical_json(&index)?)?;
    let mut mj = serde_json::to_vec(&manifest_json).map_err(|source| Error::Json {
        what: "docker-archive manifest.json".into(),
        source,
    })?;
    mj.push(b'\n');
    tar.bytes("manifest.json", &mj)?;
    tar.bytes("oci-layout", OCI_LAYOUT)?;
    tar.finish()
}

/// [`write_docker_archive`] into a file (written to a temp file and renamed).
pub fn export_docker(
    store: &ContentStore,
    images: &[(Image, Vec<Reference>)],
    compression: Option<CompressionOptions>,
    dest: &Path,
) -> Result<()> {
    write_file_atomically(dest, |f| {
        write_docker_archive(store, images, compression, f)
    })
}

/// Writes a directory tree (a rootfs from the snapshotter) as a tar stream for
/// `--output type=tar`: entries sorted, ownership and modes kept, mtimes clamped to
/// `source_date_epoch` (the build's `SOURCE_DATE_EPOCH`) when given.
pub fn write_rootfs_tar(
    root: &Path,
    source_date_epoch: Option<i64>,
    w: &mut dyn Write,
) -> Result<()> {
    let epoch = source_date_epoch.map(|e| e.max(0) as u64);
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    append_tree(&mut b, root, Path::new(""), epoch)?;
    b.finish().at(root)
}

/// Appends the children of `root/rel` in name order, descending into each directory right after
/// its own entry (the order Go's filepath.Walk gives BuildKit).
fn append_tree(
    b: &mut tar::Builder<&mut dyn Write>,
    root: &Path,
    rel: &Path,
    epoch: Option<u64>,
) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .at(&dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .at(&dir)?;
    names.sort();
    for name in names {
        let rel_child = rel.join(&name);
        let full = root.join(&rel_child);
        let meta = fs::symlink_metadata(&full).at(&full)?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        // Permission and setuid/setgid/sticky bits only, as Go's archive/tar writes them.
        header.set_mode(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777);
        if let Some(e) = epoch {
            header.set_mtime(header.mtime().unwrap_or(0).min(e));
        }
        if meta.is_dir() {
            b.append_data(&mut header, &rel_child, io::empty())
                .at(&full)?;
            append_tree(b, root, &rel_child, epoch)?;
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&full).at(&full)?;
            header.set_size(0);
            b.append_link(&mut header, &rel_child, &target).at(&full)?;
        } else if meta.is_file() {
            let f = File::open(&full).at(&full)?;
            b.append_data(&mut header, &rel_child, f).at(&full)?;
        } else {
            // Devices, fifos, sockets: header only.
            header.set_size(0);
            b.append_data(&mut header, &rel_child, io::empty())
                .at(&full)?;
        }
    }
    Ok(())
}

fn write_file_atomically(dest: &Path, f: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).at(&parent)?;
    let tmp = tempfile::NamedTempFile::with_prefix_in(".kiln-export-", &parent).at(&parent)?;
    let mut w = io::BufWriter::with_capacity(1 << 20, crate::store::Writeback::new(tmp));
    f(&mut w)?;
    let tmp = w
        .into_inner()
        .map_err(|e| Error::Io {
            path: dest.to_path_buf(),
            source: e.into_error(),
        })?
        .into_inner();
    tmp.as_file().sync_all().at(dest)?;
    tmp.persist(dest).map_err(|e| Error::Io {
        path: dest.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// Reads until `buf` is full or the end; returns how much was read.
fn read_full(r: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A reproducible tar writer for layouts.
struct TarOut<'a> {
    b: tar::Builder<&'a mut dyn Write>,
}

impl<'a> TarOut<'a> {
    fn new(w: &'a mut dyn Write) -> Self {
        Self {
            b: tar::Builder::new(w),
        }
    }

    fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn dir(&mut self, name: &str) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Directory, 0, 0o755);
        self.b.append_data(&mut h, name, io::empty()).at(name)
    }

    fn bytes(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, data.len() as u64, 0o644);
        self.b.append_data(&mut h, name, data).at(name)
    }

    /// Appends a stored blob. Verified while streaming: a blob corrupted in the store fails
    /// the export (whose temp file is then discarded) instead of producing an archive that
    /// lies. The header is the one `append_data` writes (the name fits a ustar header); the
    /// bytes go in 1 MiB writes (not the tar crate's 8 KiB copy), hashed on a thread of their
    /// own.
    fn blob(&mut self, store: &ContentStore, digest: &Digest) -> Result<()> {
        let size = store.blob_size(digest)?;
        // A deferred layer is made as it is archived (not stored first), checked below as a
        // stored blob is.
        let what = if store.deferred_blob(digest).is_some() {
            format!("layer {digest} made from its snapshot")
        } else {
            format!("stored blob {}", store.blob_path(digest).display())
        };
        let path = PathBuf::from(&what);
        let mut file = io::Read::take(store.open_blob_unstored(digest)?, size);
        let mut h = Self::header(tar::EntryType::Regular, size, 0o644);
        let name = format!("blobs/sha256/{}", digest.hex());
        h.set_path(&name).at(&name)?;
        h.set_cksum();
        let w = self.b.get_mut();
        w.write_all(h.as_bytes()).at(&name)?;
        let hash = crate::digest::SideHash::start(4);
        // Buffers come back once the hasher is done with them (the oldest first).
        let mut sent: VecDeque<Arc<Vec<u8>>> = VecDeque::new();
        loop {
            let free = sent.front().is_some_and(|a| Arc::strong_count(a) == 1);
            let mut buf = if free || sent.len() > 8 {
                sent.pop_front()
                    .and_then(|a| Arc::try_unwrap(a).ok())
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            buf.resize(1 << 20, 0);
            let n = read_full(&mut file, &mut buf).at(&path)?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            let buf = Arc::new(buf);
            w.write_all(&buf).at(&name)?;
            hash.push(Arc::clone(&buf)).at(&path)?;
            sent.push_back(buf);
        }
        let (actual, copied) = hash.finish().at(&path)?;
        if &actual != digest {
            return Err(Error::DigestMismatch {
                what,
                expected: digest.clone(),
                actual,
            });
        }
        if copied != size {
            return Err(Error::SizeMismatch {
                what,
                expected: size,
                actual: copied,
            });
        }
        let pad = (512 - size % 512) % 512;
        w.write_all(&[0u8; 512][..pad as usize]).at(&name)?;
        Ok(())
    }

    fn finish(self) -> Result<()> {
        let w = self.b.into_inner().at("archive")?;
        w.flush().at("archive")
    }
}
