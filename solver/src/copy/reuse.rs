//! Incremental COPY (issue 15): when a COPY from the context runs again because some of its
//! files changed, the new result is made from the previous result of the same step (same
//! parent snapshot, same instruction) instead of copying every file again.
//!
//! Only when the selection has the same entries (paths and kinds) as last time and only regular
//! files changed: then the copy maps every entry to the same destination as before, and the
//! previous upper directory differs from a full copy's only at the changed files. The new
//! active snapshot's upper directory (not mounted yet) gets the previous one's directories,
//! symlinks and whiteouts re-made and its unchanged files *hard-linked* (one `link` per file, no
//! data written); then, mounted, the changed files (and those whose mtime, size or mode no
//! longer match the source) are copied as a full copy would. Each inode appears once in the new
//! upper directory, so the layer holds plain entries, byte for byte what a full copy gives;
//! nothing writes to a hard-linked inode (a changed file is unlinked and written anew, and a
//! later step's overlay copies up). Anything else (added or removed files, a changed directory
//! or symlink, `--parents`, `--exclude`, ADD, a destination the simple mapping does not find in
//! the previous result) falls back to a full copy.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::context::{EntryKind, SourceTree, WalkEntry};
use crate::dockerignore::clean;
use crate::error::{Result, io_err};
use crate::fsutil;

/// One selected entry: its context path and where the copy put it (relative to the root).
#[derive(Debug, Clone)]
struct Mapped {
    /// The source path as selected (`m`, no leading `/`).
    source: String,
    /// The path below it (empty for the source itself).
    rel: String,
    kind: String,
    dest: String,
}

/// What [`plan`] found: every entry's destination and which files changed.
#[derive(Debug)]
pub(crate) struct Plan {
    entries: Vec<Mapped>,
    changed: HashSet<usize>,
    /// The destination ends with `/`: made before the copy, so a directory source's own
    /// metadata is never applied to it.
    dest_is_dir: bool,
    /// Every path of the previous upper directory, parents first.
    paths: Vec<String>,
}

/// `(label, path, kind, rest)` of an entry line of `context::digest_entries_listed`.
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
    let mut p = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        p.push(part);
        let Ok(m) = fs::symlink_metadata(&p) else {
            return false;
        };
        let last = i + 1 == parts.len();
        if last {
            return m.file_type().is_file();
        }
        if !m.file_type().is_dir() {
            return false;
        }
    }
    false
}

/// Compares the previous and the current entry lines of the step and maps every entry to its
/// destination in `old_upper` (the previous result's upper directory). `None`: not eligible.
pub(crate) fn plan(old: &[String], new: &[String], dest: &str, old_upper: &Path) -> Option<Plan> {
    if old.len() != new.len() || old == new {
        return None;
    }
    let dest_clean = clean(&format!("/{dest}"));
    let dest_is_dir = dest.ends_with('/') || dest.ends_with("/.");
    let mut entries = Vec::with_capacity(new.len());
    let mut changed = HashSet::new();
    // The top entry's kind of each source, and its destination.
    let mut tops: HashMap<String, (String, String)> = HashMap::new();
    for (i, (o, n)) in old.iter().zip(new).enumerate() {
        let (ol, op, ok) = split(o)?;
        let (label, path, kind) = split(n)?;
        if (ol, op, ok) != (label, path, kind) {
            return None;
        }
        if o != n {
            if kind != "f" {
                return None;
            }
            changed.insert(i);
        }
        let source = label.trim_start_matches('/').to_string();
        let rel = path.trim_start_matches('/').to_string();
        let dest = if rel.is_empty() {
            let d = if kind == "d" {
                dest_clean.clone()
            } else {
                let base = source.rsplit('/').next().unwrap_or(&source);
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
            tops.insert(source.clone(), (kind.to_string(), d.clone()));
            d
        } else {
            let (top_kind, top_dest) = tops.get(&source)?;
            if top_kind != "d" {
                return None;
            }
            format!("{}/{rel}", top_dest.trim_end_matches('/'))
        };
        entries.push(Mapped {
            source,
            rel,
            kind: kind.to_string(),
            dest: dest.trim_start_matches('/').to_string(),
        });
    }
    // Two entries written to one place: the later one wins, which the mapping cannot tell.
    let mut seen = HashSet::new();
    for e in entries.iter().filter(|e| e.kind != "d") {
        if !seen.insert(e.dest.as_str()) {
            return None;
        }
    }
    for &i in &changed {
        if !regular_file_at(old_upper, &entries[i].dest) {
            return None;
        }
    }
    Some(Plan {
        paths: tree_paths(old_upper)?,
        entries,
        changed,
        dest_is_dir,
    })
}

/// The source entry of a mapped path in the context, as the copy's walk sees it. `tops`
/// remembers each source's resolved path (resolving is a walk of its own).
fn source_entry(
    tree: &SourceTree<'_>,
    e: &Mapped,
    tops: &mut HashMap<String, PathBuf>,
) -> Result<WalkEntry> {
    let top = match tops.get(&e.source) {
        Some(t) => t.clone(),
        None => {
            let t = tree.resolve(&e.source, true)?;
            tops.insert(e.source.clone(), t.clone());
            t
        }
    };
    let abs = if e.rel.is_empty() {
        top
    } else {
        top.join(&e.rel)
    };
    let meta = if e.rel.is_empty() {
        fs::metadata(&abs).or_else(|_| fs::symlink_metadata(&abs))
    } else {
        fs::symlink_metadata(&abs)
    }
    .map_err(io_err("stat", &abs))?;
    let kind = match e.kind.as_str() {
        "d" => EntryKind::Dir,
        "f" => EntryKind::File,
        "l" => EntryKind::Symlink,
        _ => EntryKind::Other,
    };
    Ok(WalkEntry {
        rel: e.rel.clone(),
        abs,
        kind,
        meta,
    })
}

/// Every path below `root` (relative, parents before children), without following symlinks;
/// `None` when a name is not UTF-8 or a directory cannot be read.
fn tree_paths(root: &Path) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut todo = vec![String::new()];
    while let Some(dir) = todo.pop() {
        let abs = root.join(&dir);
        let mut names = Vec::new();
        for e in fs::read_dir(&abs).ok()? {
            names.push(e.ok()?.file_name().into_string().ok()?);
        }
        names.sort();
        for n in names {
            let rel = if dir.is_empty() {
                n
            } else {
                format!("{dir}/{n}")
            };
            if fs::symlink_metadata(root.join(&rel)).is_ok_and(|m| m.is_dir()) {
                todo.push(rel.clone());
            }
            out.push(rel);
        }
    }
    Some(out)
}

/// Fills `new_upper` (an empty, unmounted upper directory) from `old_upper`: directories,
/// symlinks and special files re-made with their metadata, regular files hard-linked except
/// those to write again: the changed ones, and those whose size, mtime or mode no longer match
/// the source. Returns the entries (with their source) the mounted copy must write.
pub(crate) fn seed(
    plan: &Plan,
    tree: &SourceTree<'_>,
    old_upper: &Path,
    new_upper: &Path,
) -> Result<Vec<(WalkEntry, String)>> {
    let by_dest: HashMap<&str, usize> = plan
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == "f")
        .map(|(i, e)| (e.dest.as_str(), i))
        .collect();
    let mut rewrite = Vec::new();
    let mut dirs: Vec<(PathBuf, fs::Metadata)> = Vec::new();
    let mut tops = HashMap::new();
    for rel in &plan.paths {
        let from = &old_upper.join(rel);
        let to = new_upper.join(rel);
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
            dirs.push((to, m));
            continue;
        }
        if ft.is_file() {
            if let Some(&i) = by_dest.get(rel.as_str()) {
                let src = source_entry(tree, &plan.entries[i], &mut tops)?;
                let same = !plan.changed.contains(&i)
                    && src.meta.len() == m.len()
                    && src.meta.mtime() == m.mtime()
                    && src.meta.mtime_nsec() == m.mtime_nsec()
                    && src.meta.mode() & 0o7777 == m.mode() & 0o7777;
                if !same {
                    rewrite.push((src, rel.clone()));
                    continue;
                }
            }
            fs::hard_link(from, &to).map_err(io_err("hard link", &to))?;
            continue;
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
        )?;
    }
    for (to, m) in dirs.iter().rev() {
        fsutil::set_times(to, (m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()))?;
    }
    Ok(rewrite)
}

/// Writes the entries [`seed`] left out through the mounted snapshot at `root`, as the full
/// copy does, then gives the directories the copy gave their source's metadata their source's
/// times again (writing changed their parents'): every directory below a source, and a source
/// directory itself when the copy made it (no `/` at the end of the destination, and no
/// `lowers` directory had it).
pub(crate) fn finish(
    plan: &Plan,
    tree: &SourceTree<'_>,
    root: &Path,
    lowers: &[PathBuf],
    rewrite: &[(WalkEntry, String)],
    opts: &super::CopyOptions<'_>,
) -> Result<()> {
    for (src, dest) in rewrite {
        super::copy_entry(src, &root.join(dest), opts, true, true)?;
    }
    let mut tops = HashMap::new();
    for e in plan.entries.iter().rev().filter(|e| e.kind == "d") {
        if e.rel.is_empty()
            && (plan.dest_is_dir
                || lowers
                    .iter()
                    .any(|l| fs::symlink_metadata(l.join(&e.dest)).is_ok()))
        {
            continue;
        }
        let src = source_entry(tree, e, &mut tops)?;
        let m = &src.meta;
        fsutil::set_times(
            &root.join(&e.dest),
            (m.atime(), m.atime_nsec()),
            (m.mtime(), m.mtime_nsec()),
        )?;
    }
    Ok(())
}
