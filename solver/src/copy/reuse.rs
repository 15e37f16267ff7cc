//! Incremental COPY (issue 15): when a COPY from the context runs again because some of its
//! files changed, the new result is made from the previous result of the same step (same
//! parent snapshot, same instruction) instead of copying every file again.
//!
//! Only when the selection has the same sources as last time and its entries differ only in
//! regular files' contents or metadata, or in entries added or removed below a source
//! directory: then the copy maps every entry to the same destination as before, and the
//! previous upper directory differs from a full copy's only at those entries. The new active
//! snapshot's upper directory (not mounted yet) gets the previous one's directories, symlinks
//! and whiteouts re-made and its unchanged files *hard-linked* (one `link` per file, no data
//! written), leaving out what was removed; then, mounted, the changed files (and those whose
//! mtime, size or mode no longer match the source) and the added entries are copied as a full
//! copy would, and every copied directory gets its source's times again. Each inode appears
//! once in the new upper directory, so the layer holds plain entries, byte for byte what a full
//! copy gives; nothing writes to a hard-linked inode (a changed file is unlinked and written
//! anew, and a later step's overlay copies up). Anything else (a source added or removed, an
//! entry whose kind changed, a changed directory or symlink, `--parents`, `--exclude`, ADD, a
//! destination the simple mapping does not find in the previous result, an added entry whose
//! place is taken or whose parent is not a real directory) falls back to a full copy.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::context::{EntryKind, Listing, SourceTree, WalkEntry};
use crate::dockerignore::clean;
use crate::error::{Result, io_err};
use crate::fsutil;

/// One selected entry: its context path and where the copy put it (relative to the root).
#[derive(Debug, Clone)]
struct Mapped<'a> {
    /// The source path as selected (`m`, no leading `/`).
    source: &'a str,
    /// The path below it (empty for the source itself).
    rel: &'a str,
    kind: &'a str,
    dest: String,
}

/// Where a selected source went.
#[derive(Debug)]
struct Top {
    kind: String,
    /// Its destination, no leading `/`.
    dest: String,
    /// Its line (for a source that is not a directory).
    line: usize,
}

/// What [`plan`] found: every entry's destination (derived from its line when asked, nothing
/// stored per entry) and which files changed.
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    lines: &'a Listing,
    /// Each source by its path (`m`).
    tops: HashMap<&'a str, Top>,
    /// The lines of regular files below a directory source, by (path, label).
    files: Vec<u32>,
    changed: HashSet<usize>,
    /// Entries new since the previous result, in listing order (parents first).
    added: Vec<usize>,
    /// Where the previous result holds entries the selection no longer has (not re-made).
    removed: HashSet<String>,
    /// The destination ends with `/`: made before the copy, so a directory source's own
    /// metadata is never applied to it.
    dest_is_dir: bool,
}

/// `(label, path, kind, rest)` of an entry line of `context::digest_sources_listed`.
fn split(line: &str) -> Option<(&str, &str, &str)> {
    let (len, rest) = line.split_once('\0')?;
    let len: usize = len.parse().ok()?;
    let (path, rest) = rest.split_once('\0')?;
    let (kind, _) = rest.split_once('\0')?;
    let label = path.get(..len)?;
    Some((label, path.get(len..)?, kind))
}

/// Whether `rel` (below `root`) is a regular file reached through real directories only.
fn regular_file_at(root: &Path, rel: &str) -> bool {
    let rel = rel.trim_matches('/');
    let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    !name.is_empty()
        && real_dir_at(root, parent)
        && fs::symlink_metadata(root.join(rel)).is_ok_and(|m| m.file_type().is_file())
}

impl<'a> Plan<'a> {
    /// Entry `i` (a line that [`plan`] checked).
    fn entry(&self, i: usize) -> Option<Mapped<'a>> {
        let (label, path, kind) = split(self.lines.get(i))?;
        let source = label.trim_start_matches('/');
        let rel = path.trim_start_matches('/');
        Some(Mapped {
            source,
            rel,
            kind,
            dest: dest_of(&self.tops, source, rel)?,
        })
    }

    /// The regular file entry the copy wrote to `dest` (relative to the root).
    fn file_at(&self, dest: &str) -> Option<usize> {
        for (source, top) in &self.tops {
            if top.kind != "d" {
                if top.kind == "f" && top.dest == dest {
                    return Some(top.line);
                }
                continue;
            }
            let rest = if top.dest.is_empty() {
                dest
            } else {
                match dest.strip_prefix(top.dest.as_str()) {
                    Some(r) => match r.strip_prefix('/') {
                        Some(r) if !r.is_empty() => r,
                        _ => continue,
                    },
                    None => continue,
                }
            };
            let label = format!("/{source}");
            let path = format!("{label}/{rest}");
            if let Ok(i) = self.files.binary_search_by(|&i| {
                file_key(self.lines.get(i as usize)).cmp(&Some((path.as_str(), label.as_str())))
            }) {
                return Some(self.files[i] as usize);
            }
        }
        None
    }
}

/// Where the copy puts `rel` below the source `source` (relative to the root).
fn dest_of(tops: &HashMap<&str, Top>, source: &str, rel: &str) -> Option<String> {
    let top = tops.get(source)?;
    Some(if rel.is_empty() {
        top.dest.clone()
    } else if top.dest.is_empty() {
        rel.to_string()
    } else {
        format!("{}/{rel}", top.dest)
    })
}

/// A 64-bit hash of `v` (a collision only ever means a full copy).
fn hash_of(v: &impl Hash) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// Whether `rel` (below `root`, `""` for the root itself) is a directory reached through real
/// directories only.
fn real_dir_at(root: &Path, rel: &str) -> bool {
    let mut p = root.to_path_buf();
    for part in rel.split('/').filter(|s| !s.is_empty()) {
        p.push(part);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_dir() => {}
            _ => return false,
        }
    }
    true
}

/// What the parent's filesystem (mounted at `root`: the new snapshot before anything is
/// written, as the full copy sees it) holds at the destination `dest`: `None` when a symlink
/// or a non-directory is on its way (the copy may then go elsewhere than the previous result
/// shows), else whether a directory is there already (the copy then gives it no source's
/// metadata; a missing one, or a file it replaces, gets the first directory source's).
pub(crate) fn destination_in_parent(root: &Path, dest: &str) -> Option<bool> {
    let dest = clean(&format!("/{dest}"));
    let parts: Vec<&str> = dest.split('/').filter(|s| !s.is_empty()).collect();
    let mut p = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        p.push(part);
        let last = i + 1 == parts.len();
        match fs::symlink_metadata(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(false),
            Err(_) => return None,
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => return None,
            Ok(_) if last => return Some(false),
            Ok(_) => return None,
        }
    }
    Some(true)
}

/// (path, label) of a line, the order of [`Plan::files`].
fn file_key(line: &str) -> Option<(&str, &str)> {
    let (label, _, _) = split(line)?;
    let (_, rest) = line.split_once('\0')?;
    let (path, _) = rest.split_once('\0')?;
    Some((path, label))
}

/// Compares the previous and the current entry lines of the step and maps every entry to its
/// destination in `old_upper` (the previous result's upper directory). `None`: not eligible.
pub(crate) fn plan<'a>(
    old: &Listing,
    new: &'a Listing,
    dest: &str,
    old_upper: &Path,
) -> Option<Plan<'a>> {
    if old == new {
        return None;
    }
    let dest_clean = clean(&format!("/{dest}"));
    let dest_is_dir = dest.ends_with('/') || dest.ends_with("/.");
    // The previous lines by the hash of (label, path), 12 bytes an entry (what a line names
    // is compared when found); each one found again is marked. Two lines of one hash: copied
    // in full.
    let key = |label: &str, path: &str| hash_of(&(label, path));
    let mut old_at: HashMap<u64, u32> = HashMap::with_capacity(old.len());
    for (j, o) in old.iter().enumerate() {
        let (label, path, _) = split(o)?;
        if old_at
            .insert(key(label, path), u32::try_from(j).ok()?)
            .is_some()
        {
            return None;
        }
    }
    let mut found = vec![false; old.len()];
    let mut changed = HashSet::new();
    let mut added = Vec::new();
    let mut files = Vec::new();
    // The top entry's kind of each source, and its destination.
    let mut tops: HashMap<&'a str, Top> = HashMap::new();
    let mut sources = 0;
    for (i, n) in new.iter().enumerate() {
        let (label, path, kind) = split(n)?;
        match old_at.get(&key(label, path)) {
            Some(&j) => {
                let j = j as usize;
                let o = old.get(j);
                let (ol, op, ok) = split(o)?;
                if (ol, op) != (label, path) || found[j] {
                    return None;
                }
                found[j] = true;
                if ok != kind {
                    return None;
                }
                if o != n {
                    if kind != "f" {
                        return None;
                    }
                    changed.insert(i);
                }
            }
            None => {
                if path.trim_start_matches('/').is_empty() || !matches!(kind, "f" | "d" | "l") {
                    return None;
                }
                added.push(i);
            }
        }
        let source = label.trim_start_matches('/');
        let rel = path.trim_start_matches('/');
        if rel.is_empty() {
            sources += 1;
            let d = if kind == "d" {
                dest_clean.clone()
            } else {
                let base = source.rsplit('/').next().unwrap_or(source);
                let into = format!("{}/{base}", dest_clean.trim_end_matches('/'));
                // A file goes into an existing directory under its name, else to the path.
                match (
                    regular_file_at(old_upper, &into),
                    regular_file_at(old_upper, &dest_clean),
                ) {
                    (true, false) => into,
                    (false, true) if !dest_is_dir => dest_clean.clone(),
                    _ => return None,
                }
            };
            tops.insert(
                source,
                Top {
                    kind: kind.to_string(),
                    dest: d.trim_matches('/').to_string(),
                    line: i,
                },
            );
        } else {
            // A source's line comes before the entries below it, which need it to be a
            // directory.
            if tops.get(source)?.kind != "d" {
                return None;
            }
            if kind == "f" {
                files.push(u32::try_from(i).ok()?);
            }
        }
    }
    // What the previous result holds that the selection no longer has: below a source (a
    // source itself gone is a changed instruction's work). With several sources one place may
    // have been written by two of them: not told apart, so copied in full.
    let mut removed = HashSet::new();
    for (j, o) in old.iter().enumerate() {
        if found[j] {
            continue;
        }
        let (label, path, _) = split(o)?;
        let rel = path.trim_start_matches('/');
        if rel.is_empty() || sources > 1 {
            return None;
        }
        let source = label.trim_start_matches('/');
        if tops.get(source)?.kind != "d" {
            return None;
        }
        removed.insert(dest_of(&tops, source, rel)?);
    }
    drop(old_at);
    drop(found);
    files.sort_by(|&a, &b| file_key(new.get(a as usize)).cmp(&file_key(new.get(b as usize))));
    let plan = Plan {
        lines: new,
        tops,
        files,
        changed,
        added,
        removed,
        dest_is_dir,
    };
    // One source maps its entries to distinct places. Of several, two entries written to one
    // place (the later wins, which the mapping cannot tell) copy in full, and so does a place
    // that is a directory in one and not in another (a symlink the mapping would walk
    // through); a directory two sources have is one directory (the later source's times, see
    // `finish`). Places are compared by hash.
    if sources > 1 {
        let mut dirs = HashSet::new();
        let mut others = HashSet::new();
        for i in 0..new.len() {
            let e = plan.entry(i)?;
            let h = hash_of(&e.dest);
            let clash = if e.kind == "d" {
                dirs.insert(h);
                others.contains(&h)
            } else {
                dirs.contains(&h) || !others.insert(h)
            };
            if clash {
                return None;
            }
        }
    }
    // A directory source's destination is where the copy put it: a real directory of the
    // previous result (a symlink there, in a lower layer, sent it elsewhere).
    if plan
        .tops
        .values()
        .any(|t| t.kind == "d" && !real_dir_at(old_upper, &t.dest))
    {
        return None;
    }
    for &i in &plan.changed {
        if !regular_file_at(old_upper, &plan.entry(i)?.dest) {
            return None;
        }
    }
    // An added entry goes where the previous result has nothing, into a real directory: one
    // the previous result has, or an added one (listed before its children).
    let mut added_dirs: HashSet<String> = HashSet::new();
    for &i in &plan.added {
        let e = plan.entry(i)?;
        if fs::symlink_metadata(old_upper.join(&e.dest)).is_ok() {
            return None;
        }
        let parent = e.dest.rsplit_once('/').map_or("", |(p, _)| p);
        if !added_dirs.contains(parent) && !real_dir_at(old_upper, parent) {
            return None;
        }
        if e.kind == "d" {
            added_dirs.insert(e.dest);
        }
    }
    Some(plan)
}

/// The source entry of a mapped path in the context, as the copy's walk sees it. `tops`
/// remembers each source's resolved path (resolving is a walk of its own).
fn source_entry(
    tree: &SourceTree<'_>,
    e: &Mapped<'_>,
    tops: &mut HashMap<String, PathBuf>,
) -> Result<WalkEntry> {
    let top = match tops.get(e.source) {
        Some(t) => t.clone(),
        None => {
            let t = tree.resolve(e.source, true)?;
            tops.insert(e.source.to_string(), t.clone());
            t
        }
    };
    let abs = if e.rel.is_empty() {
        top
    } else {
        top.join(e.rel)
    };
    let meta = if e.rel.is_empty() {
        fs::metadata(&abs).or_else(|_| fs::symlink_metadata(&abs))
    } else {
        fs::symlink_metadata(&abs)
    }
    .map_err(io_err("stat", &abs))?;
    let kind = match e.kind {
        "d" => EntryKind::Dir,
        "f" => EntryKind::File,
        "l" => EntryKind::Symlink,
        _ => EntryKind::Other,
    };
    Ok(WalkEntry {
        rel: e.rel.to_string(),
        abs,
        kind,
        meta,
    })
}

/// Fills `new_upper` (an empty, unmounted upper directory) from `old_upper`: directories,
/// symlinks and special files re-made with their metadata, regular files hard-linked except
/// those to write again: the changed ones, and those whose size, mtime or mode no longer match
/// the source. Returns the entries (with their source) the mounted copy must write. The old
/// upper directory is walked depth first, one listing per level in memory; a name that is not
/// UTF-8 is an error (the caller then copies in full).
pub(crate) fn seed(
    plan: &Plan<'_>,
    tree: &SourceTree<'_>,
    old_upper: &Path,
    new_upper: &Path,
    chmod: Option<&super::Chmod>,
) -> Result<Vec<(WalkEntry, String)>> {
    let mut rewrite = Vec::new();
    let mut tops = HashMap::new();
    Seeder {
        plan,
        tree,
        old_upper,
        new_upper,
        chmod,
        linked: std::cell::RefCell::default(),
    }
    .dir("", &mut tops, &mut rewrite)?;
    Ok(rewrite)
}

struct Seeder<'p, 't> {
    plan: &'p Plan<'p>,
    tree: &'p SourceTree<'t>,
    old_upper: &'p Path,
    new_upper: &'p Path,
    /// The COPY's `--chmod`: a file's mode in the previous result is the source's with it.
    chmod: Option<&'p super::Chmod>,
    /// Inodes of more than one name linked so far.
    linked: std::cell::RefCell<HashSet<u64>>,
}

impl Seeder<'_, '_> {
    /// Re-makes the entries of directory `dir` (relative, `""` for the root), its
    /// subdirectories' times set once their contents are in place.
    fn dir(
        &self,
        dir: &str,
        tops: &mut HashMap<String, PathBuf>,
        rewrite: &mut Vec<(WalkEntry, String)>,
    ) -> Result<()> {
        let abs = if dir.is_empty() {
            self.old_upper.to_path_buf()
        } else {
            self.old_upper.join(dir)
        };
        let mut names = Vec::new();
        for e in fs::read_dir(&abs).map_err(io_err("read directory", &abs))? {
            let e = e.map_err(io_err("read directory", &abs))?;
            names.push(e.file_name().into_string().map_err(|_| {
                io_err("read directory", &abs)(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "a name is not UTF-8",
                ))
            })?);
        }
        names.sort();
        for n in names {
            let rel = if dir.is_empty() {
                n
            } else {
                format!("{dir}/{n}")
            };
            self.entry(&rel, tops, rewrite)?;
        }
        Ok(())
    }

    fn entry(
        &self,
        rel: &str,
        tops: &mut HashMap<String, PathBuf>,
        rewrite: &mut Vec<(WalkEntry, String)>,
    ) -> Result<()> {
        let plan = self.plan;
        if plan.removed.contains(rel) {
            return Ok(());
        }
        let from = &self.old_upper.join(rel);
        let to = self.new_upper.join(rel);
        let m = fs::symlink_metadata(from).map_err(io_err("stat", from))?;
        let ft = m.file_type();
        if ft.is_dir() {
            fs::create_dir(&to).map_err(io_err("mkdir", &to))?;
            fsutil::lchown(&to, m.uid(), m.gid())?;
            fs::set_permissions(&to, fs::Permissions::from_mode(m.mode() & 0o7777))
                .map_err(io_err("chmod", &to))?;
            for (k, v) in fsutil::list_xattrs(from)? {
                fsutil::set_xattr(&to, &k, &v)?;
            }
            self.dir(rel, tops, rewrite)?;
            return fsutil::set_times(
                &to,
                (m.atime(), m.atime_nsec()),
                (m.mtime(), m.mtime_nsec()),
            );
        }
        if ft.is_file() {
            if let Some(i) = plan.file_at(rel)
                && let Some(e) = plan.entry(i)
            {
                let src = source_entry(self.tree, &e, tops)?;
                let same = !plan.changed.contains(&i)
                    && src.meta.len() == m.len()
                    && src.meta.mtime() == m.mtime()
                    && src.meta.mtime_nsec() == m.mtime_nsec()
                    && self.chmod.map_or(src.meta.mode() & 0o7777, |c| {
                        c.apply(src.meta.mode(), false)
                    }) == m.mode() & 0o7777;
                if !same {
                    rewrite.push((src, rel.to_string()));
                    return Ok(());
                }
            }
            // One inode at two places of the previous result (a cache import may hold tar
            // hard links; a copy never makes them) would be one here too: copy in full.
            if m.nlink() > 1 && !self.linked.borrow_mut().insert(m.ino()) {
                return Err(io_err("hard link", from)(std::io::Error::other(
                    "two names of one inode in the previous result",
                )));
            }
            return fs::hard_link(from, &to).map_err(io_err("hard link", &to));
        }
        if ft.is_symlink() {
            let target = fs::read_link(from).map_err(io_err("read link", from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(io_err("symlink", &to))?;
            fsutil::lchown(&to, m.uid(), m.gid())?;
        } else {
            fsutil::mknod(&to, m.mode(), m.rdev())?;
            fsutil::lchown(&to, m.uid(), m.gid())?;
            fs::set_permissions(&to, fs::Permissions::from_mode(m.mode() & 0o7777))
                .map_err(io_err("chmod", &to))?;
            for (k, v) in fsutil::list_xattrs(from)? {
                fsutil::set_xattr(&to, &k, &v)?;
            }
        }
        fsutil::set_times(
            &to,
            (m.atime(), m.atime_nsec()),
            (m.mtime(), m.mtime_nsec()),
        )
    }
}

/// Writes the entries [`seed`] left out and the added ones through the mounted snapshot at
/// `root`, as the full copy does (`false`, having written part of it, when a place is not
/// reached through real directories: the caller then discards the snapshot and copies in
/// full), then gives the directories the copy gave their source's metadata their source's
/// times again (writing changed their parents'): every directory below a source, and a source
/// directory itself when the copy made it (no `/` at the end of the destination, and no
/// parent's filesystem had it: `dest_existed`, from [`destination_in_parent`]).
pub(crate) fn finish(
    plan: &Plan<'_>,
    tree: &SourceTree<'_>,
    root: &Path,
    dest_existed: bool,
    rewrite: &[(WalkEntry, String)],
    opts: &super::CopyOptions<'_>,
) -> Result<bool> {
    // Every place written is reached through real directories of the snapshot (what `plan`
    // checked in the previous result): never through a symlink, which could name the host.
    let inside = |dest: &str| real_dir_at(root, dest.rsplit_once('/').map_or("", |(p, _)| p));
    for (src, dest) in rewrite {
        if !inside(dest) {
            return Ok(false);
        }
        super::copy_entry(src, &root.join(dest), opts, true, true)?;
    }
    let mut tops = HashMap::new();
    for &i in &plan.added {
        let Some(e) = plan.entry(i) else { continue };
        if !inside(&e.dest) {
            return Ok(false);
        }
        let src = source_entry(tree, &e, &mut tops)?;
        super::copy_entry(&src, &root.join(&e.dest), opts, true, true)?;
    }
    // The source's times on `e`'s destination; `false` when it is not reached through real
    // directories.
    let mut source_times = |e: &Mapped<'_>| -> Result<bool> {
        if !inside(&e.dest) {
            return Ok(false);
        }
        let m = &source_entry(tree, e, &mut tops)?.meta;
        fsutil::set_times(
            &root.join(&e.dest),
            (m.atime(), m.atime_nsec()),
            (m.mtime(), m.mtime_nsec()),
        )?;
        Ok(true)
    };
    // Directories, symlinks and special files were re-made with the previous result's times
    // (and writing changed directories'); the copy leaves them with their source's. In listing
    // order, which is the sources' order: a directory two sources have keeps the later one's
    // times, as the full copy leaves it (setting times changes no other entry's, so the order
    // within a source does not matter).
    let mut top_seen = false;
    for i in 0..plan.lines.len() {
        let Some(e) = plan.entry(i) else { continue };
        if e.kind == "f" {
            continue;
        }
        // Only the source that made the destination gave it its metadata.
        if e.kind == "d"
            && e.rel.is_empty()
            && (std::mem::replace(&mut top_seen, true) || plan.dest_is_dir || dest_existed)
        {
            continue;
        }
        if !source_times(&e)? {
            return Ok(false);
        }
    }
    Ok(true)
}
