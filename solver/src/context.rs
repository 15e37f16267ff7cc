//! Build-context access: wildcard expansion of COPY/ADD sources, the walk of exactly the selected
//! files (`.dockerignore` applied), and their content digest for cache keys.
//!
//! The context is read in place, never copied or tarred. Hashing is parallel (rayon) and
//! incremental: a metadata cache keyed by (path, size, mtime, ctime, inode, device), stored under
//! `<state_dir>/context/`, lets a rebuild re-read only files whose metadata changed. The digest
//! covers path, type, mode, uid, gid, xattrs and content (or link target) of each selected entry,
//! never mtimes. The same walker hashes files taken from another stage's snapshot.

use std::collections::BTreeMap;
use std::fs::{self, Metadata};
use std::io::Read;
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
        self.ignore
            .is_some_and(|m| !rel.is_empty() && m.is_excluded(rel))
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
        // Ignore rules match root-relative paths without a leading `/`.
        let cleaned = clean(&format!("/{src_rel}"));
        let src_rel = cleaned.trim_start_matches('/');
        let top_abs = self.resolve(src_rel, true)?;
        let meta = fs::metadata(&top_abs)
            .or_else(|_| fs::symlink_metadata(&top_abs))
            .map_err(io_err("stat", &top_abs))?;
        let mut out = vec![WalkEntry {
            rel: String::new(),
            abs: top_abs.clone(),
            kind: kind_of(&meta),
            meta,
        }];
        if out[0].kind == EntryKind::Dir {
            self.walk_dir(&top_abs, src_rel, "", &mut out)?;
        }
        Ok(out)
    }

    fn walk_dir(
        &self,
        abs: &Path,
        ctx_rel: &str,
        rel: &str,
        out: &mut Vec<WalkEntry>,
    ) -> Result<()> {
        out.extend(self.walk_children(abs, ctx_rel, rel)?);
        Ok(())
    }

    /// Everything below `abs`, sorted, parents first; subdirectories are walked in parallel.
    fn walk_children(&self, abs: &Path, ctx_rel: &str, rel: &str) -> Result<Vec<WalkEntry>> {
        let rd = fs::read_dir(abs).map_err(io_err("read directory", abs))?;
        let mut dents: Vec<(std::ffi::OsString, fs::DirEntry)> = Vec::new();
        for e in rd {
            let e = e.map_err(io_err("read directory", abs))?;
            dents.push((e.file_name(), e));
        }
        dents.sort_by(|a, b| a.0.cmp(&b.0));
        let subtrees: Vec<Vec<WalkEntry>> = dents
            .par_iter()
            .map(|(name, dent)| -> Result<Vec<WalkEntry>> {
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
                let child_abs = abs.join(name);
                // Relative to the open directory: no full path lookup per file.
                let meta = dent.metadata().map_err(io_err("stat", &child_abs))?;
                let kind = kind_of(&meta);
                let mut out = Vec::new();
                if self.excluded(&child_ctx) {
                    if kind == EntryKind::Dir
                        && self.ignore.is_some_and(|m| m.may_include_below(&child_ctx))
                    {
                        // Descend; keep the directory only if something below it is kept.
                        let below = self.walk_children(&child_abs, &child_ctx, &child_rel)?;
                        if !below.is_empty() {
                            out.push(WalkEntry {
                                rel: child_rel,
                                abs: child_abs,
                                kind,
                                meta,
                            });
                            out.extend(below);
                        }
                    }
                    return Ok(out);
                }
                out.push(WalkEntry {
                    rel: child_rel.clone(),
                    abs: child_abs.clone(),
                    kind,
                    meta,
                });
                if kind == EntryKind::Dir {
                    out.extend(self.walk_children(&child_abs, &child_ctx, &child_rel)?);
                }
                Ok(out)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(subtrees.into_iter().flatten().collect())
    }
}

/// Metadata that decides whether a cached content digest is still valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileStamp {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
}

impl FileStamp {
    fn of(m: &Metadata) -> Self {
        Self {
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    /// path → (stamp, content digest, xattrs encoding); xattr changes move the ctime too.
    entries: BTreeMap<String, (FileStamp, String, String)>,
}

/// The persistent metadata cache of content digests, one file per context directory under
/// `<state_dir>/context/`.
pub(crate) struct ContentCache {
    path: Option<PathBuf>,
    map: Mutex<CacheFile>,
    dirty: Mutex<bool>,
}

impl ContentCache {
    /// Loads the cache for the context at `root` (missing or corrupt files start empty).
    pub(crate) fn load(state_dir: &Path, root: &Path) -> Self {
        let id = hex::encode(Sha256::digest(root.to_string_lossy().as_bytes()));
        let path = state_dir.join("context").join(format!("{id}.json"));
        let map = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            path: Some(path),
            map: Mutex::new(map),
            dirty: Mutex::new(false),
        }
    }

    /// A cache that is never persisted (for snapshot trees).
    pub(crate) fn ephemeral() -> Self {
        Self {
            path: None,
            map: Mutex::new(CacheFile::default()),
            dirty: Mutex::new(false),
        }
    }

    fn lookup(&self, abs: &Path, stamp: &FileStamp) -> Option<(String, String)> {
        let map = self.map.lock().ok()?;
        let (s, d, x) = map.entries.get(abs.to_string_lossy().as_ref())?;
        (s == stamp).then(|| (d.clone(), x.clone()))
    }

    fn store(&self, abs: &Path, stamp: FileStamp, digest: String, xattrs: String) {
        if self.path.is_none() {
            return;
        }
        if let Ok(mut map) = self.map.lock() {
            map.entries
                .insert(abs.to_string_lossy().to_string(), (stamp, digest, xattrs));
        }
        if let Ok(mut d) = self.dirty.lock() {
            *d = true;
        }
    }

    /// Writes the cache back atomically if anything changed.
    pub(crate) fn save(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if !self.dirty.lock().is_ok_and(|d| *d) {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let bytes = {
            let map = self.map.lock().map_err(|_| Error::Cache {
                path: path.clone(),
                message: "lock poisoned".into(),
            })?;
            serde_json::to_vec(&*map).map_err(|source| Error::CacheEncode {
                path: path.clone(),
                source,
            })?
        };
        crate::cache::write_atomic(path, &bytes)
    }
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

/// Digest of exactly the selected entries: for each (in order) its path, type, mode, uid, gid,
/// xattrs and content digest or link target. `label` distinguishes sources in one selection.
/// Also returns each entry's line (`path\0kind\0mode\0uid\0gid\0xattrs\0content`, after a
/// length prefix), which explains a later change.
pub(crate) fn digest_entries_listed(
    entries: &[(String, WalkEntry)],
    cache: &ContentCache,
) -> Result<(String, Vec<String>)> {
    let lines: Vec<String> = entries
        .par_iter()
        .map(|(label, e)| -> Result<String> {
            let m = &e.meta;
            let (kind, payload, x) = match e.kind {
                EntryKind::File => {
                    let stamp = FileStamp::of(m);
                    let (d, x) = match cache.lookup(&e.abs, &stamp) {
                        Some(hit) => hit,
                        None => {
                            let d = file_sha256(&e.abs)?;
                            let x = xattr_string(&e.abs);
                            cache.store(&e.abs, stamp, d.clone(), x.clone());
                            (d, x)
                        }
                    };
                    ("f", d, x)
                }
                EntryKind::Dir => ("d", String::new(), xattr_string(&e.abs)),
                EntryKind::Symlink => (
                    "l",
                    fs::read_link(&e.abs)
                        .map_err(io_err("read link", &e.abs))?
                        .to_string_lossy()
                        .to_string(),
                    xattr_string(&e.abs),
                ),
                EntryKind::Other => ("o", format!("{:x}", m.rdev()), xattr_string(&e.abs)),
            };
            Ok(format!(
                "{}\0{}\0{kind}\0{:o}\0{}\0{}\0{x}\0{payload}\n",
                label.len(),
                if e.rel.is_empty() {
                    label.clone()
                } else {
                    format!("{label}/{}", e.rel)
                },
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l.as_bytes());
    }
    Ok((format!("sha256:{}", hex::encode(h.finalize())), lines))
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

/// [`digest_sources`], also returning each entry's line (see [`digest_entries_listed`]).
pub(crate) fn digest_sources_listed(
    tree: &SourceTree<'_>,
    sources: &[String],
    cache: &ContentCache,
    line: usize,
) -> Result<(String, Vec<String>)> {
    let mut all = Vec::new();
    for s in sources {
        let matches = tree.expand(s)?;
        if matches.is_empty() && !has_wildcards(s) {
            return Err(Error::SourceNotFound {
                line,
                path: s.clone(),
            });
        }
        for m in matches {
            for e in tree.walk(&m)? {
                all.push((format!("/{m}"), e));
            }
        }
    }
    digest_entries_listed(&all, cache)
}

#[cfg(test)]
mod tests {
    use super::*;

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
