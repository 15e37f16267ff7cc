//! Build-context access: wildcard expansion of COPY/ADD sources, the walk of exactly the selected
//! files (`.dockerignore` applied), and their content digest for cache keys.
//!
//! The context is read in place, never copied or tarred. Hashing is parallel (rayon) and
//! incremental: a metadata cache keyed by (path, size, mtime, ctime, inode, device), stored under
//! `<state_dir>/context/`, lets a rebuild re-read only files whose metadata changed. The digest
//! covers path, type, mode, uid, gid, xattrs and content (or link target) of each selected entry,
//! never mtimes. The same walker hashes files taken from another stage's snapshot.
//!
//! Memory does not grow with entries beyond what must be kept (issue 15): the walk holds the
//! directory listings being walked, never the entries; the digest's walk runs on every core
//! (sibling directories and runs of a directory's entries in parallel, joined in name order);
//! the entry lines are one [`Listing`] of large chunks and the metadata cache one compact
//! table (about 100 bytes a file each).

use std::fs::{self, Metadata};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dockerignore::{IgnoreMatcher, clean};
use crate::error::{Error, Result, io_err};

fn libc_enametoolong() -> i32 {
    rustix::io::Errno::NAMETOOLONG.raw_os_error()
}

/// The kind of a walked entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One entry of a selection: a path relative to the source root and its metadata.
#[derive(Debug, Clone)]
pub(crate) struct WalkEntry {
    /// Slash-separated path relative to the source root (e.g. `dir/a.txt`).
    pub(crate) rel: String,
    /// Absolute path on disk.
    pub(crate) abs: PathBuf,
    pub(crate) kind: EntryKind,
    /// `lstat` metadata (or `stat` for a followed top-level symlink).
    pub(crate) meta: Metadata,
}

fn kind_of(meta: &Metadata) -> EntryKind {
    let ft = meta.file_type();
    if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    }
}

/// Whether a source path holds glob characters (`*`, `?`, `[`).
pub(crate) fn has_wildcards(p: &str) -> bool {
    let mut escaped = false;
    for c in p.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// Go's `path.Match` for one path component.
pub(crate) fn glob_component(pattern: &str, name: &str) -> bool {
    let mut re = String::from("^");
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '\\' if i < chars.len() => {
                re.push_str(&regex::escape(&chars[i].to_string()));
                i += 1;
            }
            '[' => {
                re.push('[');
                if chars.get(i) == Some(&'^') {
                    re.push('^');
                    i += 1;
                }
                while i < chars.len() && chars[i] != ']' {
                    let ch = chars[i];
                    if ch == '\\' && i + 1 < chars.len() {
                        i += 1;
                        re.push_str(&regex::escape(&chars[i].to_string()));
                    } else if ch == '-' {
                        re.push('-');
                    } else {
                        re.push_str(&regex::escape(&ch.to_string()));
                    }
                    i += 1;
                }
                re.push(']');
                i += 1;
            }
            other => re.push_str(&regex::escape(&other.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).is_ok_and(|r| r.is_match(name))
}

/// A directory tree files are taken from: the build context (with its ignore rules) or a
/// stage/image snapshot mounted somewhere.
pub(crate) struct SourceTree<'a> {
    pub(crate) root: &'a Path,
    pub(crate) ignore: Option<&'a IgnoreMatcher>,
}

impl SourceTree<'_> {
    fn excluded(&self, rel: &str) -> bool {
        // No patterns exclude nothing: skip the per-path cleaning and splitting.
        self.ignore
            .is_some_and(|m| !rel.is_empty() && !m.is_empty() && m.is_excluded(rel))
    }

    /// The host path of `rel` inside the root, symlinks in parent components and (when
    /// `follow_last`) the last one resolved by the kernel as if the root were `/` (see
    /// `kiln_fs`): no chain length or `..` leaves the root; chains over the kernel's limit are an
    /// error. The path may not exist.
    pub(crate) fn resolve(&self, rel: &str, follow_last: bool) -> Result<PathBuf> {
        let root = kiln_fs::Root::open(self.root)?;
        let c = root.canonical(&clean(&format!("/{rel}")), follow_last)?;
        Ok(self.root.join(c.trim_start_matches('/')))
    }

    /// Expands a source path (context-relative or absolute inside a stage) into the matching
    /// paths, as BuildKit's copy does with `AllowWildcard`. A path without wildcards is returned
    /// as is when it exists; none when it does not.
    pub(crate) fn expand(&self, src: &str) -> Result<Vec<String>> {
        let cleaned = clean(&format!("/{src}"));
        let rel = cleaned.trim_start_matches('/').to_string();
        if !has_wildcards(&rel) {
            if rel.is_empty() {
                return Ok(vec![String::new()]);
            }
            if self.excluded(&rel) && !self.ignore.is_some_and(|m| m.may_include_below(&rel)) {
                return Ok(vec![]);
            }
            let (abs, last) = match (self.resolve(&rel, true), self.resolve(&rel, false)) {
                (Ok(abs), Ok(last)) => (abs, last),
                // A path longer than the kernel takes names nothing: "not found" on its line.
                (Err(Error::Contained(e)), _) | (_, Err(Error::Contained(e)))
                    if e.raw_os_error() == Some(libc_enametoolong()) =>
                {
                    return Ok(vec![]);
                }
                (Err(e), _) | (_, Err(e)) => return Err(e),
            };
            return Ok(
                if fs::symlink_metadata(&abs).is_ok() || fs::symlink_metadata(&last).is_ok() {
                    vec![rel]
                } else {
                    vec![]
                },
            );
        }
        let mut current = vec![String::new()];
        for comp in rel.split('/') {
            let mut next = Vec::new();
            for base in &current {
                if has_wildcards(comp) {
                    let dir = self.resolve(base, true)?;
                    let Ok(rd) = fs::read_dir(&dir) else { continue };
                    let mut names: Vec<String> = rd
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().to_string())
                        .collect();
                    names.sort();
                    for n in names {
                        if glob_component(comp, &n) {
                            let p = if base.is_empty() {
                                n
                            } else {
                                format!("{base}/{n}")
                            };
                            if !self.excluded(&p) {
                                next.push(p);
                            }
                        }
                    }
                } else {
                    let unescaped = comp.replace('\\', "");
                    let p = if base.is_empty() {
                        unescaped
                    } else {
                        format!("{base}/{unescaped}")
                    };
                    if fs::symlink_metadata(self.resolve(&p, false)?).is_ok() && !self.excluded(&p)
                    {
                        next.push(p);
                    }
                }
            }
            current = next;
        }
        Ok(current)
    }

    /// Walks one selected source: the top-level path itself (a symlink there is followed) and,
    /// for a directory, everything below it that the ignore rules keep. Entries come sorted by
    /// path with parents before children; `rel` is relative to the source path.
    pub(crate) fn walk(&self, src_rel: &str) -> Result<Vec<WalkEntry>> {
        let mut out = Vec::new();
        self.walk_each(src_rel, &mut |e| {
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`SourceTree::walk`] one entry at a time, in the same order: only one directory listing
    /// per level is held, whatever the number of entries.
    pub(crate) fn walk_each(
        &self,
        src_rel: &str,
        f: &mut dyn FnMut(WalkEntry) -> Result<()>,
    ) -> Result<()> {
        let top = self.top(src_rel)?;
        if top.kind != EntryKind::Dir {
            return f(top);
        }
        let abs = top.abs.clone();
        f(top)?;
        self.walk_children(&abs, &ctx_rel_of(src_rel), "", &mut Vec::new(), f)
    }

    /// The top-level entry of a selected source (`rel` empty; a symlink there is followed).
    pub(crate) fn top(&self, src_rel: &str) -> Result<WalkEntry> {
        let top_abs = self.resolve(&ctx_rel_of(src_rel), true)?;
        let meta = fs::metadata(&top_abs)
            .or_else(|_| fs::symlink_metadata(&top_abs))
            .map_err(io_err("stat", &top_abs))?;
        Ok(WalkEntry {
            rel: String::new(),
            kind: kind_of(&meta),
            abs: top_abs,
            meta,
        })
    }

    /// Everything below the directory `top` (as [`SourceTree::top`] gave it for `src_rel`),
    /// one entry at a time, in [`SourceTree::walk`]'s order.
    pub(crate) fn walk_below(
        &self,
        top: &WalkEntry,
        src_rel: &str,
        f: &mut dyn FnMut(WalkEntry) -> Result<()>,
    ) -> Result<()> {
        self.walk_children(&top.abs, &ctx_rel_of(src_rel), "", &mut Vec::new(), f)
    }

    /// Everything below `abs`, sorted, parents first. `pending` holds excluded directories on
    /// the current path that are walked for kept descendants: they are given to `f` (outermost
    /// first) just before the first such descendant, or never.
    fn walk_children(
        &self,
        abs: &Path,
        ctx_rel: &str,
        rel: &str,
        pending: &mut Vec<WalkEntry>,
        f: &mut dyn FnMut(WalkEntry) -> Result<()>,
    ) -> Result<()> {
        let dents = sorted_entries(abs)?;
        for (name, dent) in dents {
            let n = name.to_string_lossy();
            let child_ctx = if ctx_rel.is_empty() {
                n.to_string()
            } else {
                format!("{ctx_rel}/{n}")
            };
            let child_rel = if rel.is_empty() {
                n.to_string()
            } else {
                format!("{rel}/{n}")
            };
            let child_abs = abs.join(&name);
            // Relative to the open directory: no full path lookup per file.
            let meta = dent.metadata().map_err(io_err("stat", &child_abs))?;
            let kind = kind_of(&meta);
            let entry = WalkEntry {
                rel: child_rel,
                abs: child_abs,
                kind,
                meta,
            };
            if self.excluded(&child_ctx) {
                if kind == EntryKind::Dir
                    && self.ignore.is_some_and(|m| m.may_include_below(&child_ctx))
                {
                    // Descend; the directory is kept only if something below it is kept.
                    let depth = pending.len();
                    let (a, r) = (entry.abs.clone(), entry.rel.clone());
                    pending.push(entry);
                    self.walk_children(&a, &child_ctx, &r, pending, f)?;
                    pending.truncate(depth);
                }
                continue;
            }
            for p in pending.drain(..) {
                f(p)?;
            }
            if kind == EntryKind::Dir {
                let (a, r) = (entry.abs.clone(), entry.rel.clone());
                f(entry)?;
                self.walk_children(&a, &child_ctx, &r, pending, f)?;
            } else {
                f(entry)?;
            }
        }
        Ok(())
    }
}

/// One walked entry, borrowed: what [`entry_line_into`] reads.
struct EntryRef<'e> {
    /// Slash-separated path relative to the source root (empty for the source itself).
    rel: &'e str,
    abs: &'e Path,
    kind: EntryKind,
    meta: &'e Metadata,
}

impl<'e> From<&'e WalkEntry> for EntryRef<'e> {
    fn from(e: &'e WalkEntry) -> Self {
        Self {
            rel: &e.rel,
            abs: &e.abs,
            kind: e.kind,
            meta: &e.meta,
        }
    }
}

/// Appends the line of one walked entry (see [`entry_line_into`]); callable from any thread.
type LineFn<'f> = dyn Fn(&EntryRef<'_>, &mut String) -> Result<()> + Sync + 'f;

/// What a part of a directory's walk holds: its lines and reusable path buffers.
#[derive(Default)]
struct Fold {
    chunks: Vec<Chunk>,
    ctx: String,
    rel: String,
    abs: PathBuf,
}

/// How many levels of directories [`SourceTree::lines_below`] walks in parallel; below them
/// a subtree is walked serially (there is parallelism enough above, and the stack stays small).
const PARALLEL_DEPTH: usize = 24;

/// Appends a line written by `write` to the last chunk (a new one past [`MERGE`] bytes, with
/// room for `hint` bytes).
fn push_line(
    chunks: &mut Vec<Chunk>,
    dir: &Path,
    hint: usize,
    write: impl FnOnce(&mut String) -> Result<()>,
) -> Result<()> {
    if chunks.last().is_none_or(|c| c.text.len() >= MERGE) {
        chunks.push(Chunk {
            text: String::with_capacity(hint),
            ends: Vec::new(),
        });
    }
    let Some(c) = chunks.last_mut() else {
        return Ok(());
    };
    write(&mut c.text)?;
    let end = u32::try_from(c.text.len()).map_err(|_| {
        io_err("list", dir)(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "an entry line over 4 GiB",
        ))
    })?;
    c.ends.push(end);
    Ok(())
}

/// Sets `buf` to `base/name` (or `name` when `base` is empty).
fn set_joined(buf: &mut String, base: &str, name: &str) {
    buf.clear();
    if !base.is_empty() {
        buf.push_str(base);
        buf.push('/');
    }
    buf.push_str(name);
}

impl SourceTree<'_> {
    /// The lines of everything below `abs`, in [`SourceTree::walk`]'s order, as chunks: the
    /// entries of a directory are stat'ed and given to `line` in parallel (contiguous runs
    /// of the sorted names, one per thread), each subdirectory is walked where it is met (so
    /// in parallel with its siblings), and the runs are joined in name order. An excluded
    /// directory walked for kept descendants has its line just before theirs, or none when
    /// nothing below it is kept (as `walk_children`'s pending list). Only the directory
    /// listings being walked and the lines are held, never the walk entries.
    ///
    /// `depth` is the number of directories above `abs` walked this way: past
    /// [`PARALLEL_DEPTH`] the rest of the subtree is walked on the current thread (a parallel
    /// level takes several times the stack of a serial one, and a deep chain of directories
    /// would overflow a worker's stack where the serial walk does not).
    fn lines_below(
        &self,
        abs: &Path,
        ctx_rel: &str,
        rel: &str,
        depth: usize,
        line: &LineFn<'_>,
    ) -> Result<Vec<Chunk>> {
        if depth >= PARALLEL_DEPTH {
            let mut chunks = Vec::new();
            self.walk_children(abs, ctx_rel, rel, &mut Vec::new(), &mut |e| {
                push_line(&mut chunks, abs, 0, |out| line(&(&e).into(), out))
            })?;
            return Ok(chunks);
        }
        let dents = sorted_entries(abs)?;
        // Room for this directory's lines (about a hundred bytes each) in one allocation.
        let hint = (dents.len() * 128).min(MERGE);
        let runs = dents
            .into_par_iter()
            .try_fold(Fold::default, |mut acc, (name, dent)| -> Result<Fold> {
                let n = name.to_string_lossy();
                set_joined(&mut acc.ctx, ctx_rel, &n);
                set_joined(&mut acc.rel, rel, &n);
                acc.abs.clear();
                acc.abs.push(abs);
                acc.abs.push(&name);
                // Relative to the open directory: no full path lookup per file.
                let meta = dent.metadata().map_err(io_err("stat", &acc.abs))?;
                drop(dent);
                let kind = kind_of(&meta);
                let excluded = self.excluded(&acc.ctx);
                if excluded
                    && !(kind == EntryKind::Dir
                        && self.ignore.is_some_and(|m| m.may_include_below(&acc.ctx)))
                {
                    return Ok(acc);
                }
                let below = if kind == EntryKind::Dir {
                    let below = self.lines_below(&acc.abs, &acc.ctx, &acc.rel, depth + 1, line)?;
                    if excluded && below.is_empty() {
                        return Ok(acc);
                    }
                    below
                } else {
                    Vec::new()
                };
                let e = EntryRef {
                    rel: &acc.rel,
                    abs: &acc.abs,
                    kind,
                    meta: &meta,
                };
                push_line(&mut acc.chunks, abs, hint, |out| line(&e, out))?;
                append_chunks(&mut acc.chunks, below);
                Ok(acc)
            })
            .map(|r| r.map(|f| f.chunks))
            .collect::<Result<Vec<Vec<Chunk>>>>()?;
        let mut out: Vec<Chunk> = Vec::new();
        for r in runs {
            append_chunks(&mut out, r);
        }
        Ok(out)
    }
}

/// The entries of the directory `abs` with their names, sorted by name.
fn sorted_entries(abs: &Path) -> Result<Vec<(std::ffi::OsString, fs::DirEntry)>> {
    let mut dents: Vec<(std::ffi::OsString, fs::DirEntry)> = Vec::new();
    for e in fs::read_dir(abs).map_err(io_err("read directory", abs))? {
        let e = e.map_err(io_err("read directory", abs))?;
        dents.push((e.file_name(), e));
    }
    dents.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(dents)
}

/// A source path as ignore rules match it: root-relative, no leading `/`.
fn ctx_rel_of(src_rel: &str) -> String {
    clean(&format!("/{src_rel}"))
        .trim_start_matches('/')
        .to_string()
}

/// Metadata that decides whether a cached content digest is still valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    size: u64,
    mtime: i64,
    ctime: i64,
    ino: u64,
    dev: u64,
    mtime_nsec: u32,
    ctime_nsec: u32,
}

impl FileStamp {
    fn of(m: &Metadata) -> Self {
        Self {
            size: m.size(),
            mtime: m.mtime(),
            ctime: m.ctime(),
            ino: m.ino(),
            dev: m.dev(),
            mtime_nsec: u32::try_from(m.mtime_nsec()).unwrap_or(u32::MAX),
            ctime_nsec: u32::try_from(m.ctime_nsec()).unwrap_or(u32::MAX),
        }
    }
}

/// One cached file: its path and xattrs as ranges of the table's text, no allocation of its own.
#[derive(Debug, Clone, Copy)]
struct Cached {
    path: (u32, u32),
    xattrs: (u32, u32),
    stamp: FileStamp,
    digest: [u8; 32],
}

/// Cached digests in a few allocations: paths and xattr strings in one text, fixed-size
/// records beside it (about 100 bytes a file plus its path).
#[derive(Debug, Default)]
struct Table {
    text: Vec<u8>,
    recs: Vec<Cached>,
}

impl Table {
    fn str_at(&self, (start, len): (u32, u32)) -> &[u8] {
        &self.text[start as usize..start as usize + len as usize]
    }

    fn path(&self, r: &Cached) -> &[u8] {
        self.str_at(r.path)
    }

    /// Appends a record; `None` once the text outgrows 4 GiB (the entry is then not cached).
    fn push(
        &mut self,
        path: &[u8],
        stamp: FileStamp,
        digest: [u8; 32],
        xattrs: &[u8],
    ) -> Option<()> {
        let mut range = |b: &[u8]| -> Option<(u32, u32)> {
            let start = u32::try_from(self.text.len()).ok()?;
            let len = u32::try_from(b.len()).ok()?;
            start.checked_add(len)?;
            self.text.extend_from_slice(b);
            Some((start, len))
        };
        let path = range(path)?;
        let xattrs = range(xattrs)?;
        self.recs.push(Cached {
            path,
            xattrs,
            stamp,
            digest,
        });
        Some(())
    }

    /// The record of `path` in a table sorted by path.
    fn find(&self, path: &[u8]) -> Option<&Cached> {
        self.recs
            .binary_search_by(|r| self.path(r).cmp(path))
            .ok()
            .map(|i| &self.recs[i])
    }
}

/// First bytes of a cache file (a format change makes old files read as empty).
const CACHE_MAGIC: &[u8] = b"kiln-context-cache 2\n";

/// The persistent metadata cache of content digests, one file per context directory under
/// `<state_dir>/context/`: records sorted by path (relative to the context), read into one
/// [`Table`] and written back streamed.
pub(crate) struct ContentCache {
    path: Option<PathBuf>,
    /// Paths under this directory are stored relative to it.
    root: PathBuf,
    /// What the file held, sorted by path; read only.
    loaded: Table,
    /// Digests computed by this build, in any order.
    fresh: Mutex<Table>,
}

impl ContentCache {
    /// Loads the cache for the context at `root` (missing or corrupt files start empty).
    pub(crate) fn load(state_dir: &Path, root: &Path) -> Self {
        let id = hex::encode(Sha256::digest(root.to_string_lossy().as_bytes()));
        let dir = state_dir.join("context");
        // Caches of earlier versions (JSON) are left for the next save to remove.
        let path = dir.join(format!("{id}.cache"));
        let loaded = fs::File::open(&path)
            .ok()
            .and_then(|f| read_table(&mut std::io::BufReader::new(f)).ok())
            .unwrap_or_default();
        Self {
            path: Some(path),
            root: root.to_path_buf(),
            loaded,
            fresh: Mutex::new(Table::default()),
        }
    }

    /// A cache that is never persisted (for snapshot trees).
    pub(crate) fn ephemeral() -> Self {
        Self {
            path: None,
            root: PathBuf::new(),
            loaded: Table::default(),
            fresh: Mutex::new(Table::default()),
        }
    }

    /// The key of a file: its path relative to the root, or absolute when outside of it.
    fn key<'p>(&self, abs: &'p Path) -> &'p [u8] {
        use std::os::unix::ffi::OsStrExt;
        match abs.strip_prefix(&self.root) {
            Ok(rel) if !self.root.as_os_str().is_empty() => rel.as_os_str().as_bytes(),
            _ => abs.as_os_str().as_bytes(),
        }
    }

    #[cfg(test)]
    fn lookup(&self, abs: &Path, stamp: &FileStamp) -> Option<(String, String)> {
        let r = self.loaded.find(self.key(abs))?;
        (r.stamp == *stamp).then(|| {
            (
                hex::encode(r.digest),
                String::from_utf8_lossy(self.loaded.str_at(r.xattrs)).into_owned(),
            )
        })
    }

    /// Appends `xattrs\0digest` of a cached file to `out`; `false` (nothing appended) on a miss.
    fn lookup_into(&self, abs: &Path, stamp: &FileStamp, out: &mut String) -> bool {
        let Some(r) = self
            .loaded
            .find(self.key(abs))
            .filter(|r| r.stamp == *stamp)
        else {
            return false;
        };
        out.push_str(&String::from_utf8_lossy(self.loaded.str_at(r.xattrs)));
        out.push('\0');
        let mut hex = [0u8; 64];
        if hex::encode_to_slice(r.digest, &mut hex).is_ok() {
            out.push_str(std::str::from_utf8(&hex).unwrap_or_default());
        }
        true
    }

    fn store(&self, abs: &Path, stamp: FileStamp, digest: &str, xattrs: &str) {
        if self.path.is_none() {
            return;
        }
        let mut bin = [0u8; 32];
        if hex::decode_to_slice(digest, &mut bin).is_err() {
            return;
        }
        if let Ok(mut t) = self.fresh.lock() {
            let _ = t.push(self.key(abs), stamp, bin, xattrs.as_bytes());
        }
    }

    /// Writes the cache back atomically if anything changed: the loaded records merged with
    /// this build's (which replace those of the same path), sorted, streamed to the file.
    pub(crate) fn save(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let fresh = self.fresh.lock().map_err(|_| Error::Cache {
            path: path.clone(),
            message: "lock poisoned".into(),
        })?;
        if fresh.recs.is_empty() {
            return Ok(());
        }
        // Fresh records by path; of two for one path the later wins.
        let mut order: Vec<u32> =
            (0..u32::try_from(fresh.recs.len()).unwrap_or(u32::MAX)).collect();
        order.sort_by(|&a, &b| {
            fresh
                .path(&fresh.recs[a as usize])
                .cmp(fresh.path(&fresh.recs[b as usize]))
                .then(b.cmp(&a))
        });
        order.dedup_by(|b, a| {
            fresh.path(&fresh.recs[*a as usize]) == fresh.path(&fresh.recs[*b as usize])
        });
        let (old, new) = (&self.loaded, &*fresh);
        crate::cache::write_atomic_with(path, &mut |w| {
            w.write_all(CACHE_MAGIC)?;
            let mut olds = old.recs.iter().peekable();
            for &i in &order {
                let r = &new.recs[i as usize];
                let p = new.path(r);
                while let Some(o) = olds.next_if(|o| old.path(o) < p) {
                    write_rec(w, old, o)?;
                }
                olds.next_if(|o| old.path(o) == p);
                write_rec(w, new, r)?;
            }
            for o in olds {
                write_rec(w, old, o)?;
            }
            Ok(())
        })?;
        if let Some(dir) = path.parent()
            && let Some(stem) = path.file_stem()
        {
            // The JSON cache of earlier versions.
            let _ = fs::remove_file(dir.join(stem).with_extension("json"));
        }
        Ok(())
    }
}

fn write_bytes(w: &mut dyn Write, b: &[u8]) -> std::io::Result<()> {
    w.write_all(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes())?;
    w.write_all(b)
}

fn write_rec(w: &mut dyn Write, t: &Table, r: &Cached) -> std::io::Result<()> {
    let s = &r.stamp;
    write_bytes(w, t.path(r))?;
    for v in [s.size, s.mtime as u64, s.ctime as u64, s.ino, s.dev] {
        w.write_all(&v.to_le_bytes())?;
    }
    w.write_all(&s.mtime_nsec.to_le_bytes())?;
    w.write_all(&s.ctime_nsec.to_le_bytes())?;
    w.write_all(&r.digest)?;
    write_bytes(w, t.str_at(r.xattrs))
}

/// The longest path or xattr string a cache record may hold: a length above it is a damaged
/// file, refused before anything is allocated for it.
const MAX_FIELD: u32 = 1 << 20;

fn field_len(len: u32) -> std::io::Result<usize> {
    if len > MAX_FIELD {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("context cache field of {len} bytes (at most {MAX_FIELD})"),
        ));
    }
    Ok(len as usize)
}

/// Reads a cache file written by [`ContentCache::save`]; any flaw is an error (the cache then
/// starts empty).
fn read_table(r: &mut impl Read) -> std::io::Result<Table> {
    use std::io::{Error as IoError, ErrorKind};
    fn bytes<const N: usize>(r: &mut impl Read) -> std::io::Result<[u8; N]> {
        let mut b = [0u8; N];
        r.read_exact(&mut b)?;
        Ok(b)
    }
    fn string(r: &mut impl Read, out: &mut Vec<u8>) -> std::io::Result<()> {
        let len = field_len(u32::from_le_bytes(bytes(r)?))?;
        let start = out.len();
        out.resize(start + len, 0);
        r.read_exact(&mut out[start..])
    }
    let bad = || IoError::new(ErrorKind::InvalidData, "bad context cache");
    let mut magic = [0u8; CACHE_MAGIC.len()];
    r.read_exact(&mut magic)?;
    if magic != CACHE_MAGIC {
        return Err(bad());
    }
    let mut t = Table::default();
    let (mut path, mut xattrs) = (Vec::new(), Vec::new());
    loop {
        let mut len = [0u8; 4];
        match r.read(&mut len[..1])? {
            0 => break,
            _ => r.read_exact(&mut len[1..])?,
        }
        let len = field_len(u32::from_le_bytes(len))?;
        path.resize(len, 0);
        r.read_exact(&mut path)?;
        let mut n = [0u64; 5];
        for v in &mut n {
            *v = u64::from_le_bytes(bytes(r)?);
        }
        let [size, mtime, ctime, ino, dev] = n;
        let stamp = FileStamp {
            size,
            mtime: mtime as i64,
            ctime: ctime as i64,
            ino,
            dev,
            mtime_nsec: u32::from_le_bytes(bytes(r)?),
            ctime_nsec: u32::from_le_bytes(bytes(r)?),
        };
        let digest = bytes::<32>(r)?;
        xattrs.clear();
        string(r, &mut xattrs)?;
        // Sorted and unique, as written: a binary search finds every record.
        if t.recs.last().is_some_and(|l| t.path(l) >= path.as_slice()) {
            return Err(bad());
        }
        t.push(&path, stamp, digest, &xattrs).ok_or_else(bad)?;
    }
    t.text.shrink_to_fit();
    t.recs.shrink_to_fit();
    Ok(t)
}

/// sha256 of a file's content, streamed.
pub(crate) fn file_sha256(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).map_err(io_err("open", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// A path's xattrs as `name=hex;...` (sorted), for digests.
fn xattr_string(path: &Path) -> String {
    let mut x = String::new();
    for (k, v) in crate::fsutil::list_xattrs(path).unwrap_or_default() {
        x.push_str(&k);
        x.push('=');
        x.push_str(&hex::encode(v));
        x.push(';');
    }
    x
}

/// A run of consecutive entry lines in one string, each line's end in `ends`.
#[derive(Debug, Clone, Default)]
struct Chunk {
    text: String,
    /// Where each line ends in `text`.
    ends: Vec<u32>,
}

impl Chunk {
    /// A chunk holding `line`.
    fn of(line: &str) -> Self {
        let mut c = Chunk::default();
        c.push(line);
        c
    }

    /// Appends a line; `false` (nothing appended) when the text would outgrow 4 GiB.
    fn push(&mut self, line: &str) -> bool {
        let Some(end) = u32::try_from(self.text.len() + line.len()).ok() else {
            return false;
        };
        self.text.push_str(line);
        self.ends.push(end);
        true
    }

    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }
}

/// Chunks up to this size are merged with their neighbour when a walk joins its parts: the
/// listing is a few chunks per thousand lines whatever the number of directories.
const MERGE: usize = 64 * 1024;

/// Appends `parts` to `out`, in order, merging small neighbours (a copy of at most [`MERGE`]
/// bytes; larger chunks are moved).
fn append_chunks(out: &mut Vec<Chunk>, parts: Vec<Chunk>) {
    for c in parts {
        if c.ends.is_empty() {
            continue;
        }
        if let Some(last) = out.last_mut()
            && last.text.len() + c.text.len() <= MERGE
        {
            let base = last.text.len() as u32;
            last.text.push_str(&c.text);
            last.ends.extend(c.ends.iter().map(|e| base + e));
            continue;
        }
        out.push(c);
    }
}

/// The entry lines of a selection (see [`digest_sources_listed`]), in a few large strings
/// (chunks, built in parallel by the walk and kept as they are): a few allocations for any
/// number of entries. Serialized as a list of strings.
#[derive(Debug, Clone, Default)]
pub(crate) struct Listing {
    chunks: Vec<Chunk>,
    /// The index of the first line of each chunk.
    firsts: Vec<usize>,
    len: usize,
}

impl PartialEq for Listing {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Listing {}

impl Listing {
    /// The number of lines.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no lines.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Line `i`.
    pub(crate) fn get(&self, i: usize) -> &str {
        assert!(i < self.len, "line {i} of a listing of {}", self.len);
        let c = self.firsts.partition_point(|&f| f <= i) - 1;
        self.chunks[c].get(i - self.firsts[c])
    }

    /// The lines in order.
    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        let mut it = self
            .chunks
            .iter()
            .flat_map(|c| (0..c.ends.len()).map(move |i| c.get(i)));
        (0..self.len).map(move |_| it.next().unwrap_or_default())
    }

    /// Appends a line.
    pub(crate) fn push(&mut self, line: &str) {
        if !self.chunks.last_mut().is_some_and(|c| c.push(line)) {
            self.firsts.push(self.len);
            self.chunks.push(Chunk::of(line));
        }
        self.len += 1;
    }

    /// Appends the lines of `chunks`, in order, moving them.
    fn append(&mut self, chunks: Vec<Chunk>) {
        for c in chunks {
            if !c.ends.is_empty() {
                self.firsts.push(self.len);
                self.len += c.ends.len();
                self.chunks.push(c);
            }
        }
    }

    /// The text of all lines, in order, a chunk at a time.
    fn texts(&self) -> impl Iterator<Item = &str> + '_ {
        self.chunks.iter().map(|c| c.text.as_str())
    }

    fn shrink_to_fit(&mut self) {
        for c in &mut self.chunks {
            c.text.shrink_to_fit();
            c.ends.shrink_to_fit();
        }
        self.chunks.shrink_to_fit();
        self.firsts.shrink_to_fit();
    }
}

impl<S: AsRef<str>> FromIterator<S> for Listing {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut l = Listing::default();
        for s in iter {
            l.push(s.as_ref());
        }
        l
    }
}

impl Serialize for Listing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Listing {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::{DeserializeSeed, SeqAccess, Visitor};
        struct Lines;
        /// Appends one string to the listing, never allocating a `String` for it.
        struct Line<'a>(&'a mut Listing);
        impl<'de> Visitor<'de> for Lines {
            type Value = Listing;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Listing, A::Error> {
                let mut l = Listing::default();
                while seq.next_element_seed(Line(&mut l))?.is_some() {}
                l.shrink_to_fit();
                Ok(l)
            }
        }
        impl<'de> DeserializeSeed<'de> for Line<'_> {
            type Value = ();
            fn deserialize<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> std::result::Result<(), D::Error> {
                d.deserialize_str(self)
            }
        }
        impl Visitor<'_> for Line<'_> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<(), E> {
                self.0.push(v);
                Ok(())
            }
        }
        d.deserialize_seq(Lines)
    }
}

/// The line of one entry (see [`entry_line_into`]).
#[cfg(test)]
fn entry_line(label: &str, e: &WalkEntry, cache: &ContentCache) -> Result<String> {
    let mut out = String::new();
    entry_line_into(label, &e.into(), cache, &mut out)?;
    Ok(out)
}

/// Appends the line of one entry (`len(label)\0path\0kind\0mode\0uid\0gid\0xattrs\0content\n`)
/// to `out`, its file content hashed unless the cache knows it.
fn entry_line_into(
    label: &str,
    e: &EntryRef<'_>,
    cache: &ContentCache,
    out: &mut String,
) -> Result<()> {
    use std::fmt::Write as _;
    let m = e.meta;
    let sep = if e.rel.is_empty() { "" } else { "/" };
    // Writing to a String cannot fail.
    let _ = write!(out, "{}\0{label}{sep}{}\0", label.len(), e.rel);
    let head = |out: &mut String, kind: &str| {
        let _ = write!(
            out,
            "{kind}\0{:o}\0{}\0{}\0",
            m.mode() & 0o7777,
            m.uid(),
            m.gid()
        );
    };
    match e.kind {
        EntryKind::File => {
            head(out, "f");
            let stamp = FileStamp::of(m);
            if !cache.lookup_into(e.abs, &stamp, out) {
                let d = file_sha256(e.abs)?;
                let x = xattr_string(e.abs);
                cache.store(e.abs, stamp, &d, &x);
                out.push_str(&x);
                out.push('\0');
                out.push_str(&d);
            }
        }
        EntryKind::Dir => {
            head(out, "d");
            out.push_str(&xattr_string(e.abs));
            out.push('\0');
        }
        EntryKind::Symlink => {
            let target = fs::read_link(e.abs).map_err(io_err("read link", e.abs))?;
            head(out, "l");
            out.push_str(&xattr_string(e.abs));
            out.push('\0');
            out.push_str(&target.to_string_lossy());
        }
        EntryKind::Other => {
            head(out, "o");
            out.push_str(&xattr_string(e.abs));
            let _ = write!(out, "\0{:x}", m.rdev());
        }
    }
    out.push('\n');
    Ok(())
}

/// Expands and walks `sources` in `tree`, returning the digest of the selection. A source that
/// matches nothing is an error unless it held wildcards.
pub(crate) fn digest_sources(
    tree: &SourceTree<'_>,
    sources: &[String],
    cache: &ContentCache,
    line: usize,
) -> Result<String> {
    digest_sources_listed(tree, sources, cache, line).map(|(d, _)| d)
}

/// [`digest_sources`], also returning each entry's line. The digest covers exactly the selected
/// entries: for each (in order) its path, type, mode, uid, gid, xattrs and content digest or
/// link target, as the line `len(label)\0label/path\0kind\0mode\0uid\0gid\0xattrs\0content\n`
/// (`label` is the matched source, `/m`) which also explains a later change. The walk and the
/// hashing use every core ([`SourceTree::lines_below`]): memory holds the lines, not the
/// entries.
pub(crate) fn digest_sources_listed(
    tree: &SourceTree<'_>,
    sources: &[String],
    cache: &ContentCache,
    line: usize,
) -> Result<(String, Listing)> {
    let mut listing = Listing::default();
    for s in sources {
        let matches = tree.expand(s)?;
        if matches.is_empty() && !has_wildcards(s) {
            return Err(Error::SourceNotFound {
                line,
                path: s.clone(),
            });
        }
        for m in matches {
            let label = format!("/{m}");
            let entry = |e: &EntryRef<'_>, out: &mut String| entry_line_into(&label, e, cache, out);
            let top = tree.top(&m)?;
            let mut l = String::new();
            entry(&(&top).into(), &mut l)?;
            listing.push(&l);
            if top.kind == EntryKind::Dir {
                listing.append(tree.lines_below(&top.abs, &ctx_rel_of(&m), "", 0, &entry)?);
            }
        }
    }
    listing.shrink_to_fit();
    let mut h = Sha256::new();
    for t in listing.texts() {
        h.update(t.as_bytes());
    }
    Ok((format!("sha256:{}", hex::encode(h.finalize())), listing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_serializes_as_a_list_of_strings() {
        let lines = [
            ["4", "/app/a", "f", "644", "0", "0", "", "aa\n"].join("\0"),
            ["4", "/app", "d", "755", "0", "0", "", "\n"].join("\0"),
        ];
        let l: Listing = lines.iter().collect();
        assert_eq!((l.len(), l.get(1)), (2, lines[1].as_str()));
        let json = serde_json::to_string(&l).expect("encode");
        assert_eq!(json, serde_json::to_string(&lines).expect("encode"));
        let back: Listing = serde_json::from_reader(json.as_bytes()).expect("decode");
        assert_eq!(back, l);
    }

    #[test]
    fn content_cache_survives_a_save_and_knows_changed_files() {
        let state = tempfile::tempdir().expect("tempdir");
        let ctx = tempfile::tempdir().expect("tempdir");
        for (f, data) in [("b.txt", "b"), ("a/x.txt", "x"), ("c", "c")] {
            let p = ctx.path().join(f);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(&p, data).expect("write");
        }
        let tree = SourceTree {
            root: ctx.path(),
            ignore: None,
        };
        let all = ["/".to_string()];
        let cache = ContentCache::load(state.path(), ctx.path());
        let (d1, l1) = digest_sources_listed(&tree, &all, &cache, 1).expect("digest");
        cache.save().expect("save");
        let cache = ContentCache::load(state.path(), ctx.path());
        assert_eq!(cache.loaded.recs.len(), 3, "every file cached");
        let x = ctx.path().join("a/x.txt");
        let stamp = FileStamp::of(&fs::symlink_metadata(&x).expect("stat"));
        let (digest, _) = cache.lookup(&x, &stamp).expect("a hit after reload");
        assert_eq!(digest, file_sha256(&x).expect("hash"));
        let (d2, l2) = digest_sources_listed(&tree, &all, &cache, 1).expect("digest");
        assert_eq!((d2, l2), (d1.clone(), l1), "same digest from the cache");
        fs::write(&x, "changed").expect("write");
        let (d3, _) = digest_sources_listed(&tree, &all, &cache, 1).expect("digest");
        assert_ne!(d3, d1, "a changed file is hashed again");
    }

    /// A damaged cache file whose length field says 4 GiB is refused at that field, before a
    /// buffer of that size is allocated and zeroed.
    #[test]
    fn a_damaged_cache_length_is_refused_before_allocating() {
        let mut file = CACHE_MAGIC.to_vec();
        file.extend_from_slice(&u32::MAX.to_le_bytes());
        file.extend_from_slice(b"short");
        let err = read_table(&mut file.as_slice()).expect_err("damaged");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(
            err.to_string(),
            "context cache field of 4294967295 bytes (at most 1048576)"
        );
    }

    /// The listing and digest as the serial walk gives them: [`SourceTree::walk_each`] in order,
    /// one [`entry_line`] each, hashed line by line.
    fn serial_reference(
        tree: &SourceTree<'_>,
        sources: &[&str],
        cache: &ContentCache,
    ) -> (String, Vec<String>) {
        let mut lines = Vec::new();
        let mut h = Sha256::new();
        for s in sources {
            for m in tree.expand(s).expect("expand") {
                let label = format!("/{m}");
                tree.walk_each(&m, &mut |e| {
                    let l = entry_line(&label, &e, cache)?;
                    h.update(l.as_bytes());
                    lines.push(l);
                    Ok(())
                })
                .expect("walk");
            }
        }
        (format!("sha256:{}", hex::encode(h.finalize())), lines)
    }

    /// The parallel walk gives the serial walk's lines in the same order, over a tree with
    /// many subdirectories, excluded directories with and without re-included descendants,
    /// nested excluded directories, symlinks, empty directories and a listing large enough to
    /// span several chunks.
    #[test]
    fn parallel_walk_lists_as_the_serial_walk() {
        use std::os::unix::fs::symlink;
        let ctx = tempfile::tempdir().expect("tempdir");
        let root = ctx.path();
        let mut files = Vec::new();
        for d in 0..24 {
            for e in 0..(d % 5) {
                for f in 0..(3 + d % 4) {
                    files.push(format!("tree/d{d:02}/e{e}/f{f}.txt"));
                }
            }
            files.push(format!("tree/d{d:02}/top.txt"));
        }
        // Names that sort differently as bytes than by length or case.
        files.extend(
            [
                "tree/B",
                "tree/a",
                "tree/a.b/x",
                "tree/a-b/y",
                "tree/ab/z",
                "tree/a0",
            ]
            .map(String::from),
        );
        // 3,000 entries with long names in one directory: more than one chunk.
        let long = "n".repeat(40);
        files.extend((0..3000).map(|i| format!("tree/flat/{long}{i:04}")));
        // `ex` excluded, `ex/keep` and `ex/in/deep/keep.txt` re-included; `ex2` excluded
        // and walked for a `keep.txt` it does not hold; `ex3` excluded outright.
        files.extend(
            [
                "tree/ex/drop.txt",
                "tree/ex/keep",
                "tree/ex/in/deep/keep.txt",
                "tree/ex/in/deep/drop.txt",
                "tree/ex/in/other/drop.txt",
                "tree/ex2/sub/drop.txt",
                "tree/ex3/keep.txt",
                "tree/z.log",
            ]
            .map(String::from),
        );
        // A chain deeper than PARALLEL_DEPTH, with an excluded directory and a re-included
        // file in its serially walked part.
        let deep = format!("tree/deep/{}", vec!["c"; PARALLEL_DEPTH + 6].join("/"));
        files.extend(
            [
                format!("{deep}/f.txt"),
                format!("{deep}/dx/drop.txt"),
                format!("{deep}/dx/keep.txt"),
                format!("{deep}/dy/drop.txt"),
            ]
            .map(String::from),
        );
        for (i, f) in files.iter().enumerate() {
            let p = root.join(f);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(&p, format!("{i}")).expect("write");
        }
        fs::create_dir_all(root.join("tree/empty/inner")).expect("mkdir");
        symlink("d00/top.txt", root.join("tree/link")).expect("symlink");
        symlink("d01", root.join("tree/d03/dirlink")).expect("symlink");
        symlink("missing", root.join("tree/ex/in/dangling")).expect("symlink");
        let ig = IgnoreMatcher::new(&[
            "tree/ex".to_string(),
            "!tree/ex/keep".into(),
            "!tree/ex/in/deep/keep.txt".into(),
            "tree/ex2".into(),
            "!tree/ex2/*/keep.txt".into(),
            "tree/ex3".into(),
            "*/*.log".into(),
            format!("{deep}/dx"),
            format!("{deep}/dy"),
            format!("!{deep}/dx/keep.txt"),
        ])
        .expect("patterns");
        let state = tempfile::tempdir().expect("tempdir");
        for ignore in [None, Some(&ig)] {
            let tree = SourceTree { root, ignore };
            let sources = ["tree", "tree/d0*", "tree/link"];
            let cache = ContentCache::load(state.path(), root);
            let (want_digest, want) = serial_reference(&tree, &sources, &cache);
            let owned: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
            let (digest, listing) =
                digest_sources_listed(&tree, &owned, &cache, 1).expect("digest");
            let got: Vec<&str> = listing.iter().collect();
            assert_eq!(
                got.len(),
                want.len(),
                "line count (ignore: {})",
                ignore.is_some()
            );
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "line {i} (ignore: {})", ignore.is_some());
                assert_eq!(listing.get(i), w.as_str(), "get({i})");
            }
            assert_eq!(digest, want_digest);
            assert!(listing.chunks.len() > 1, "several chunks");
            let paths: Vec<&str> = got
                .iter()
                .map(|l| l.split('\0').nth(1).expect("path"))
                .collect();
            if ignore.is_some() {
                let (dx, keep) = (format!("/{deep}/dx"), format!("/{deep}/dx/keep.txt"));
                for kept in [
                    "/tree/ex",
                    "/tree/ex/keep",
                    "/tree/ex/in/deep/keep.txt",
                    &dx,
                    &keep,
                ] {
                    assert!(paths.contains(&kept), "{kept} listed");
                }
                let dy = format!("/{deep}/dy");
                assert!(!paths.contains(&dy.as_str()), "{dy} not listed");
                for dropped in ["/tree/ex2", "/tree/ex3", "/tree/ex/in/other", "/tree/z.log"] {
                    assert!(!paths.contains(&dropped), "{dropped} not listed");
                }
            }
        }
    }

    /// A chain of [`DEEP`] directories is walked, as the serial walk walks it, without
    /// overflowing a worker thread's stack (a parallel level takes several times a serial one's).
    #[test]
    fn a_deep_tree_does_not_overflow_the_stack() {
        let ctx = tempfile::tempdir().expect("tempdir");
        let chain = vec!["d"; DEEP].join("/");
        fs::create_dir_all(ctx.path().join(&chain)).expect("mkdir");
        fs::write(ctx.path().join(&chain).join("f"), "x").expect("write");
        let tree = SourceTree {
            root: ctx.path(),
            ignore: None,
        };
        let cache = ContentCache::ephemeral();
        let (_, listing) =
            digest_sources_listed(&tree, &["d".to_string()], &cache, 1).expect("digest");
        assert_eq!(listing.len(), DEEP + 1, "d, the directories below it and f");
        let f = format!("/d/{}/f\0f\0", vec!["d"; DEEP - 1].join("/"));
        assert!(listing.get(DEEP).contains(&f), "{}", listing.get(DEEP));
    }

    /// Directories in [`a_deep_tree_does_not_overflow_the_stack`].
    const DEEP: usize = 150;

    #[test]
    fn glob_like_go() {
        assert!(glob_component("*.txt", "a.txt"));
        assert!(!glob_component("*.txt", "a.md"));
        assert!(glob_component("[ab]?.md", "a1.md"));
        assert!(!glob_component("[ab]?.md", "c3.md"));
        assert!(glob_component("[^a]x", "bx"));
        assert!(glob_component("a\\*", "a*"));
        assert!(!glob_component("a\\*", "ab"));
    }

    #[test]
    fn expand_wildcards_and_ignore() {
        let d = tempfile::tempdir().expect("tempdir");
        for f in [
            "1.txt",
            "2.txt",
            "n.dat",
            "sub/p/x.conf",
            "sub/q/x.conf",
            "skip.txt",
        ] {
            let p = d.path().join(f);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(&p, f).expect("write");
        }
        let ig = IgnoreMatcher::new(&["skip.txt"]).expect("patterns");
        let t = SourceTree {
            root: d.path(),
            ignore: Some(&ig),
        };
        assert_eq!(t.expand("*.txt").expect("expand"), vec!["1.txt", "2.txt"]);
        assert_eq!(
            t.expand("sub/*/x.conf").expect("expand"),
            vec!["sub/p/x.conf", "sub/q/x.conf"]
        );
        assert_eq!(t.expand("/n.dat").expect("expand"), vec!["n.dat"]);
        assert!(t.expand("skip.txt").expect("expand").is_empty());
        assert!(t.expand("missing").expect("expand").is_empty());
        let all: Vec<String> = t
            .walk("")
            .expect("walk")
            .into_iter()
            .map(|e| e.rel)
            .collect();
        assert!(!all.contains(&"skip.txt".to_string()));
        assert!(all.contains(&"sub/q/x.conf".to_string()));
    }
}
