//! Diff → layer: walks what changed in a snapshot and streams it as a reproducible OCI layer
//! (tar → sha256 for the diff_id → compressor → sha256 for the blob digest → caller's sink).
//! Overlay snapshots are read from their upper directory (whiteout devices and opaque xattrs,
//! `trusted.overlay.opaque` or, made in a user namespace, `user.overlay.opaque`, become `.wh.`
//! entries; a copied-up directory identical to the lower one is left out unless
//! something beneath it changed, as BuildKit's overlay differ does); native snapshots are compared with their parent's tree. Entries are
//! emitted depth first with each directory's children sorted by name bytes, so parents precede
//! children and the same tree always gives the same bytes. Only one directory listing per level
//! is held in memory, never file contents.

use std::cmp::Ordering;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result, stream};
use crate::fsutil;
use crate::snapshot::{Layout, Snapshotter};
use crate::tarwriter::TarWriter;
use kiln_image::{Compression, CompressionOptions, Compressor, HashingWriter};

/// Options for [`write_layer`] and [`write_tree_layer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerOptions {
    /// How to compress the tar stream (kiln-image's compressors: parallel, deterministic).
    pub compression: CompressionOptions,
    /// Clamp every mtime to at most this (seconds since the epoch), for reproducible builds.
    pub source_date_epoch: Option<i64>,
}

/// What was written: the descriptor facts an image manifest and config need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// `sha256:<hex>` of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: String,
    /// `sha256:<hex>` of the bytes written to the sink (the manifest's layer digest).
    pub digest: String,
    /// Bytes written to the sink.
    pub size: u64,
    /// Bytes of the uncompressed tar stream.
    pub uncompressed_size: u64,
    /// OCI media type matching the compression.
    pub media_type: &'static str,
}

/// Writes the changes of snapshot `key` (active, view or committed) relative to its parent as a
/// layer into `out`.
pub fn write_layer(
    snapshotter: &dyn Snapshotter,
    key: &str,
    options: &LayerOptions,
    out: impl Write,
) -> Result<LayerInfo> {
    write_layer_hashed(snapshotter, key, options, out, true)
}

/// [`write_layer`], uncompressed and without computing the digest: the same tar bytes into
/// `out`, for a consumer that hashes them itself (a deferred blob written again, which the
/// content store checks against the digest recorded at build time). Returns the bytes written.
pub fn write_layer_tar(
    snapshotter: &dyn Snapshotter,
    key: &str,
    source_date_epoch: Option<i64>,
    out: impl Write,
) -> Result<u64> {
    let options = LayerOptions {
        compression: CompressionOptions {
            compression: Compression::Uncompressed,
            level: None,
        },
        source_date_epoch,
    };
    write_layer_hashed(snapshotter, key, &options, out, false).map(|i| i.uncompressed_size)
}

fn write_layer_hashed(
    snapshotter: &dyn Snapshotter,
    key: &str,
    options: &LayerOptions,
    out: impl Write,
    hash: bool,
) -> Result<LayerInfo> {
    let layout = snapshotter.layout(key)?;
    stream_layer(options, out, hash, |tar| match &layout {
        Layout::Overlay {
            upper,
            lowers,
            userxattr,
        } => OverlayWalk {
            lowers,
            opaque_xattr: crate::overlay::opaque_xattr(*userxattr),
            pending: Vec::new(),
        }
        .changes(tar, upper, &[], false),
        Layout::Native { dir, parent } => native_changes(tar, dir, parent.as_deref(), &[]),
    })
}

/// Writes the whole tree under `dir` as one layer (every file an addition), e.g. for
/// `COPY --link`-style layers, scratch images and rootfs exports. `dir` itself is not an entry.
pub fn write_tree_layer(dir: &Path, options: &LayerOptions, out: impl Write) -> Result<LayerInfo> {
    stream_layer(options, out, true, |tar| {
        native_changes(tar, dir, None, &[])
    })
}

type Tar<'a, W> = TarWriter<HashingWriter<Compressor<HashingWriter<W>>>>;

/// `hash`: false when the caller hashes the bytes itself (the digests are then empty).
fn stream_layer<W: Write>(
    options: &LayerOptions,
    out: W,
    hash: bool,
    body: impl FnOnce(&mut Tar<'_, W>) -> Result<()>,
) -> Result<LayerInfo> {
    // Uncompressed, the blob is the tar: its digest is the diff_id, hashed once.
    let plain = options.compression.compression == Compression::Uncompressed;
    let blob = if plain || !hash {
        HashingWriter::counting(out)
    } else {
        HashingWriter::new(out)
    };
    let comp = Compressor::new(blob, options.compression).map_err(stream("start compressor"))?;
    let raw = if hash {
        HashingWriter::new(comp)
    } else {
        HashingWriter::counting(comp)
    };
    let mut tar = TarWriter::new(raw, options.source_date_epoch);
    body(&mut tar)?;
    let raw = tar.finish()?;
    let (comp, diff_id, uncompressed_size) = raw.finish();
    let diff_id = diff_id.map(|d| d.to_string()).unwrap_or_default();
    let blob = comp.finish().map_err(stream("finish compressor"))?;
    let (mut out, digest, size) = blob.finish();
    let digest = digest.map_or_else(|| diff_id.clone(), |d| d.to_string());
    out.flush().map_err(stream("flush layer"))?;
    Ok(LayerInfo {
        diff_id,
        digest,
        size,
        uncompressed_size,
        media_type: options.compression.compression.layer_media_type(false),
    })
}

/// Names in `dir`, sorted by bytes.
fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .ctx("read dir", dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .ctx("read dir", dir)?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

fn join_rel(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(rel.len() + name.len() + 1);
    if !rel.is_empty() {
        v.extend_from_slice(rel);
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

fn whiteout_name(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut n = b".wh.".to_vec();
    n.extend_from_slice(name);
    join_rel(rel, &n)
}

const OPAQUE: &[u8] = b".wh..wh..opq";

/// A copied-up directory whose entry is held back until something beneath it is emitted.
struct Pending {
    rel: Vec<u8>,
    path: PathBuf,
    meta: fs::Metadata,
}

/// State of one overlay diff walk.
struct OverlayWalk<'a> {
    /// The parent chain's directories, nearest first.
    lowers: &'a [PathBuf],
    /// The xattr that marks an opaque directory (`trusted.` or `user.overlay.opaque`).
    opaque_xattr: &'static str,
    /// Unchanged directories on the current path, outermost first, not yet written.
    pending: Vec<Pending>,
}

impl OverlayWalk<'_> {
    /// Writes the held-back parents, outermost first, so they precede the next entry.
    fn flush<W: Write>(&mut self, tar: &mut TarWriter<W>) -> Result<()> {
        for p in self.pending.drain(..) {
            tar.append_path(&p.rel, &p.path, &p.meta)?;
        }
        Ok(())
    }

    /// Emits the contents of an overlay upper dir as layer entries. `under_opaque` is set when
    /// an ancestor in the upper dir is opaque, so nothing below it may be compared with the
    /// (hidden) lower layers.
    fn changes<W: Write>(
        &mut self,
        tar: &mut TarWriter<W>,
        dir: &Path,
        rel: &[u8],
        under_opaque: bool,
    ) -> Result<()> {
        for name in sorted_names(dir)? {
            let path = dir.join(&name);
            let meta = fs::symlink_metadata(&path).ctx("stat", &path)?;
            let ft = meta.file_type();
            if ft.is_char_device() && meta.rdev() == 0 {
                self.flush(tar)?;
                tar.append_marker(&whiteout_name(rel, name.as_bytes()))?;
                continue;
            }
            let child = join_rel(rel, name.as_bytes());
            if !ft.is_dir() {
                self.flush(tar)?;
                tar.append_path(&child, &path, &meta)?;
                continue;
            }
            let opaque = fsutil::get_xattr(&path, self.opaque_xattr)?.as_deref() == Some(b"y");
            if !opaque && !under_opaque && self.unchanged_dir(&child, &path, &meta)? {
                // Copied up but identical to the lower directory (BuildKit's sameDirent): only
                // written if something beneath it is.
                let depth = self.pending.len();
                self.pending.push(Pending {
                    rel: child.clone(),
                    path: path.clone(),
                    meta,
                });
                self.changes(tar, &path, &child, false)?;
                self.pending.truncate(depth);
                continue;
            }
            self.flush(tar)?;
            tar.append_path(&child, &path, &meta)?;
            if opaque {
                tar.append_marker(&join_rel(&child, OPAQUE))?;
            }
            self.changes(tar, &path, &child, under_opaque || opaque)?;
        }
        Ok(())
    }

    /// Whether the upper directory `path` (at `rel`) has the same mode, owner, mtime and
    /// xattrs (overlay's own `trusted.overlay.*`/`user.overlay.*` aside) as the directory at
    /// `rel` in the merged lower layers.
    fn unchanged_dir(&self, rel: &[u8], path: &Path, meta: &fs::Metadata) -> Result<bool> {
        let Some(lower) = lower_dir(self.lowers, rel, self.opaque_xattr) else {
            return Ok(false);
        };
        let lm = match fs::symlink_metadata(&lower) {
            Ok(m) if m.is_dir() => m,
            _ => return Ok(false),
        };
        if meta.mode() != lm.mode()
            || meta.uid() != lm.uid()
            || meta.gid() != lm.gid()
            || meta.mtime() != lm.mtime()
            || meta.mtime_nsec() != lm.mtime_nsec()
        {
            return Ok(false);
        }
        Ok(entry_xattrs(path)? == entry_xattrs(&lower)?)
    }
}

/// Xattrs that go into a layer entry (overlay's bookkeeping left out).
fn entry_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    Ok(fsutil::list_xattrs(path)?
        .into_iter()
        .filter(|(n, _)| !crate::overlay::is_overlay_xattr(n))
        .collect())
}

/// The directory that `rel` names in the merged view of `lowers` (nearest first): the one in
/// the nearest layer that has it, unless a nearer layer hides it with a whiteout, a
/// non-directory or an opaque ancestor (marked with `opaque_xattr`). `None` when there is no
/// such directory or on any doubt.
fn lower_dir(lowers: &[PathBuf], rel: &[u8], opaque_xattr: &str) -> Option<PathBuf> {
    let comps: Vec<&[u8]> = rel
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    if comps.is_empty() {
        return None;
    }
    for lower in lowers {
        let mut cur = lower.clone();
        let mut opaque_above = false;
        for (k, comp) in comps.iter().enumerate() {
            let next = cur.join(std::ffi::OsStr::from_bytes(comp));
            match fs::symlink_metadata(&next) {
                Ok(m) if m.is_dir() => {
                    if k + 1 == comps.len() {
                        return Some(next);
                    }
                    if fsutil::get_xattr(&next, opaque_xattr).ok()?.as_deref() == Some(b"y") {
                        opaque_above = true;
                    }
                    cur = next;
                }
                // A whiteout, file or symlink hides everything below it in deeper layers.
                Ok(_) => return None,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if opaque_above {
                        return None;
                    }
                    break;
                }
                Err(_) => return None,
            }
        }
    }
    None
}

/// Emits what differs between `dir` and `parent` (everything when `parent` is `None`).
fn native_changes<W: Write>(
    tar: &mut TarWriter<W>,
    dir: &Path,
    parent: Option<&Path>,
    rel: &[u8],
) -> Result<()> {
    let new = sorted_names(dir)?;
    let old = match parent {
        Some(p) if p.is_dir() => sorted_names(p)?,
        _ => Vec::new(),
    };
    let (mut i, mut j) = (0, 0);
    while i < new.len() || j < old.len() {
        let ord = match (new.get(i), old.get(j)) {
            (Some(a), Some(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match ord {
            Ordering::Greater => {
                tar.append_marker(&whiteout_name(rel, old[j].as_bytes()))?;
                j += 1;
            }
            Ordering::Less => {
                let path = dir.join(&new[i]);
                let meta = fs::symlink_metadata(&path).ctx("stat", &path)?;
                let child = join_rel(rel, new[i].as_bytes());
                tar.append_path(&child, &path, &meta)?;
                if meta.is_dir() {
                    native_changes(tar, &path, None, &child)?;
                }
                i += 1;
            }
            Ordering::Equal => {
                let path = dir.join(&new[i]);
                let old_path = parent.map(|p| p.join(&old[j]));
                let meta = fs::symlink_metadata(&path).ctx("stat", &path)?;
                let child = join_rel(rel, new[i].as_bytes());
                let old_path = old_path.unwrap_or_default();
                let old_meta = fs::symlink_metadata(&old_path).ctx("stat", &old_path)?;
                let both_dirs = meta.is_dir() && old_meta.is_dir();
                if !same_entry(&path, &meta, &old_path, &old_meta)? {
                    tar.append_path(&child, &path, &meta)?;
                    if meta.is_dir() {
                        // A directory that replaced a non-directory: all of it is new.
                        let base = if both_dirs {
                            Some(old_path.as_path())
                        } else {
                            None
                        };
                        native_changes(tar, &path, base, &child)?;
                    }
                } else if both_dirs {
                    native_changes(tar, &path, Some(&old_path), &child)?;
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

/// Whether two entries would produce the same tar header and data.
fn same_entry(a: &Path, am: &fs::Metadata, b: &Path, bm: &fs::Metadata) -> Result<bool> {
    let (at, bt) = (am.file_type(), bm.file_type());
    let same_type = (at.is_dir() && bt.is_dir())
        || (at.is_file() && bt.is_file())
        || (at.is_symlink() && bt.is_symlink())
        || (at.is_char_device() && bt.is_char_device())
        || (at.is_block_device() && bt.is_block_device())
        || (at.is_fifo() && bt.is_fifo())
        || (at.is_socket() && bt.is_socket());
    if !same_type
        || am.mode() != bm.mode()
        || am.uid() != bm.uid()
        || am.gid() != bm.gid()
        || am.rdev() != bm.rdev()
    {
        return Ok(false);
    }
    if at.is_dir() {
        // A directory's mtime changes with its children; compare it too, as containerd does.
        return Ok(am.mtime() == bm.mtime()
            && am.mtime_nsec() == bm.mtime_nsec()
            && fsutil::list_xattrs(a)? == fsutil::list_xattrs(b)?);
    }
    if am.len() != bm.len() || am.mtime() != bm.mtime() || am.mtime_nsec() != bm.mtime_nsec() {
        return Ok(false);
    }
    if fsutil::list_xattrs(a)? != fsutil::list_xattrs(b)? {
        return Ok(false);
    }
    if at.is_symlink() {
        return Ok(fs::read_link(a).ctx("readlink", a)? == fs::read_link(b).ctx("readlink", b)?);
    }
    if at.is_file() {
        // Equal non-zero nanosecond mtimes mean nothing rewrote the file (copies keep them);
        // whole-second mtimes (from tar extraction) may hide an edit, so compare bytes then, the
        // same rule as containerd's continuity.
        if (am.dev() == bm.dev() && am.ino() == bm.ino()) || am.mtime_nsec() != 0 {
            return Ok(true);
        }
        return same_content(a, b);
    }
    Ok(true)
}

/// Byte-for-byte comparison of two files of equal length.
fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let mut fa = fs::File::open(a).ctx("open", a)?;
    let mut fb = fs::File::open(b).ctx("open", b)?;
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let n = read_full(&mut fa, &mut ba).ctx("read", a)?;
        let m = read_full(&mut fb, &mut bb).ctx("read", b)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
