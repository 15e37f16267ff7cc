//! COPY/ADD on real directories, with the semantics of BuildKit's file op copy (fsutil
//! `copy.Copy` as the Dockerfile frontend configures it): a directory source copies its contents,
//! wildcards, a trailing `/` makes the destination a directory, missing parents are created
//! (owned by `--chown`), `--chmod` octal or symbolic, `--parents`, `--exclude`, symlinks copied
//! as symlinks except a top-level source (followed), ADD of local tar archives (extracted), and
//! heredoc sources. Source mtimes are kept, as BuildKit does for copied files.
//!
//! The destination root is a mounted active snapshot; every destination path is resolved inside
//! it (symlinks scoped to the root) so nothing is written outside.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::context::{EntryKind, SourceTree, WalkEntry, has_wildcards};
use crate::dockerignore::{IgnoreMatcher, clean};
use crate::error::{Error, Result, io_err};
use crate::fsutil;

pub(crate) mod reuse;

/// A `--chmod` value: octal, or symbolic (`u+x,go-w`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Chmod {
    Octal(u32),
    Symbolic(Vec<SymbolicClause>),
}

/// One clause of a symbolic mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SymbolicClause {
    who: u32,
    op: char,
    perms: String,
}

impl Chmod {
    /// Parses a `--chmod` value.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
            return u32::from_str_radix(s, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Chmod::Octal);
        }
        let mut clauses = Vec::new();
        for part in s.split(',') {
            let idx = part.find(['+', '-', '='])?;
            let (who_s, rest) = part.split_at(idx);
            let mut who = 0;
            for c in who_s.chars() {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => return None,
                };
            }
            if who == 0 {
                who = 0o7777;
            }
            let mut chars = rest.chars();
            let op = chars.next()?;
            let perms: String = chars.collect();
            if !perms.chars().all(|c| "rwxXst".contains(c)) {
                return None;
            }
            clauses.push(SymbolicClause { who, op, perms });
        }
        Some(Chmod::Symbolic(clauses))
    }

    /// The mode bits for a file whose current mode is `mode`.
    pub(crate) fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => {
                let mut m = mode & 0o7777;
                for c in clauses {
                    let mut bits = 0;
                    for p in c.perms.chars() {
                        bits |= match p {
                            'r' => 0o444,
                            'w' => 0o222,
                            'x' => 0o111,
                            'X' if is_dir || m & 0o111 != 0 => 0o111,
                            's' => 0o6000,
                            't' => 0o1000,
                            _ => 0,
                        };
                    }
                    let bits = bits & c.who;
                    match c.op {
                        '+' => m |= bits,
                        '-' => m &= !bits,
                        _ => m = (m & !(c.who & 0o7777)) | bits,
                    }
                }
                m
            }
        }
    }
}

/// Where COPY/ADD sources come from.
pub(crate) enum CopySource<'a> {
    /// Paths in a tree (the context, or a stage/image root). `reset_owner` makes entries owned
    /// by 0:0 (context files), as BuildKit's context transfer does.
    Tree {
        tree: SourceTree<'a>,
        paths: Vec<String>,
        reset_owner: bool,
    },
    /// A heredoc: file name and content.
    Inline { name: String, content: Vec<u8> },
}

/// Options of one COPY/ADD.
pub(crate) struct CopyOptions<'a> {
    /// Absolute destination (already joined with WORKDIR), trailing `/` kept.
    pub(crate) dest: String,
    pub(crate) chown: Option<(u32, u32)>,
    pub(crate) chmod: Option<&'a Chmod>,
    pub(crate) parents: bool,
    pub(crate) exclude: Option<&'a IgnoreMatcher>,
    /// ADD: extract local tar archives.
    pub(crate) unpack_archives: bool,
    /// Dockerfile line, for errors.
    pub(crate) line: usize,
}

/// Resolves an absolute in-rootfs path to a host path under `root`, following symlinks in the
/// parent components (inside the root, by the kernel) but not in the last one.
pub(crate) fn scoped(root: &Path, path: &str) -> Result<PathBuf> {
    let c = clean(&format!("/{path}"));
    let rel = c.trim_start_matches('/');
    if rel.is_empty() {
        return Ok(root.to_path_buf());
    }
    let r = kiln_fs::Root::open(root)?;
    let (parent, name) = match rel.rsplit_once('/') {
        Some((parent, name)) => (r.canonical(parent, true)?, name),
        None => (String::from("/"), rel),
    };
    Ok(root.join(parent.trim_start_matches('/')).join(name))
}

/// The host path of `path` when it is a directory inside the root (a final symlink followed,
/// inside the root), else `None`.
fn dir_in_root(root: &Path, path: &str) -> Result<Option<PathBuf>> {
    let p = SourceTree { root, ignore: None }.resolve(path, true)?;
    Ok(fs::symlink_metadata(&p)
        .is_ok_and(|m| m.is_dir())
        .then_some(p))
}

/// `MkdirAll` of fsutil: creates missing directories (mode 0755) owned by `owner`, resolving
/// every component inside the root (see `kiln_fs::Root::mkdir_all`).
pub(crate) fn mkdir_all(root: &Path, path: &str, owner: Option<(u32, u32)>) -> Result<PathBuf> {
    let r = kiln_fs::Root::open(root)?;
    let c = clean(&format!("/{path}"));
    let dir = r.mkdir_all(&c, 0o755, owner)?;
    let canonical = match r.in_root_path(&dir) {
        Some(p) => p,
        None => r.canonical(&c, true)?,
    };
    Ok(root.join(canonical.trim_start_matches('/')))
}

fn remove_existing(path: &Path, keep_dir: bool) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && keep_dir => Ok(()),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(io_err("remove", path)),
        Ok(_) => fs::remove_file(path).map_err(io_err("remove", path)),
        Err(_) => Ok(()),
    }
}

fn copy_meta(
    e: &WalkEntry,
    target: &Path,
    opts: &CopyOptions<'_>,
    reset_owner: bool,
) -> Result<()> {
    let m = &e.meta;
    let (uid, gid) = opts.chown.unwrap_or(if reset_owner {
        (0, 0)
    } else {
        (m.uid(), m.gid())
    });
    fsutil::lchown(target, uid, gid)?;
    if e.kind != EntryKind::Symlink {
        let mut mode = m.mode() & 0o7777;
        if let Some(c) = opts.chmod {
            mode = c.apply(mode, e.kind == EntryKind::Dir);
        }
        fs::set_permissions(target, fs::Permissions::from_mode(mode))
            .map_err(io_err("chmod", target))?;
        for (k, v) in fsutil::list_xattrs(&e.abs).unwrap_or_default() {
            // Security/system xattrs may be refused; BuildKit ignores those errors too.
            let _ = fsutil::set_xattr(target, &k, &v);
        }
    }
    fsutil::set_times(
        target,
        (m.atime(), m.atime_nsec()),
        (m.mtime(), m.mtime_nsec()),
    )
}

/// Copies one entry to `target`. Returns whether a directory's metadata was applied (its times
/// are set again once its children are in place: see [`copy_one`]).
pub(crate) fn copy_entry(
    e: &WalkEntry,
    target: &Path,
    opts: &CopyOptions<'_>,
    reset_owner: bool,
    overwrite_dir_meta: bool,
) -> Result<bool> {
    match e.kind {
        EntryKind::Dir => {
            let existed = match fs::symlink_metadata(target) {
                Ok(m) if m.is_dir() => true,
                Ok(_) => {
                    remove_existing(target, false)?;
                    false
                }
                Err(_) => false,
            };
            if !existed {
                fs::create_dir(target).map_err(io_err("mkdir", target))?;
            }
            if !existed || overwrite_dir_meta {
                copy_meta(e, target, opts, reset_owner)?;
                return Ok(true);
            }
        }
        EntryKind::File => {
            remove_existing(target, false)?;
            fs::copy(&e.abs, target).map_err(io_err("copy", &e.abs))?;
            copy_meta(e, target, opts, reset_owner)?;
        }
        EntryKind::Symlink => {
            remove_existing(target, false)?;
            let link = fs::read_link(&e.abs).map_err(io_err("read link", &e.abs))?;
            std::os::unix::fs::symlink(&link, target).map_err(io_err("symlink", target))?;
            copy_meta(e, target, opts, reset_owner)?;
        }
        EntryKind::Other => {
            remove_existing(target, false)?;
            fsutil::mknod(target, e.meta.mode(), e.meta.rdev())?;
            copy_meta(e, target, opts, reset_owner)?;
        }
    }
    Ok(false)
}

/// Whether a file starts like a tar archive (plain or gzip-compressed).
fn tar_reader(path: &Path) -> Option<Box<dyn Read>> {
    let mut f = fs::File::open(path).ok()?;
    let mut magic = [0u8; 2];
    f.read_exact(&mut magic).ok()?;
    let f = fs::File::open(path).ok()?;
    let mut reader: Box<dyn Read> = if magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut header = [0u8; 512];
    reader.read_exact(&mut header).ok()?;
    let sum: u32 = header
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    let stored = std::str::from_utf8(&header[148..156])
        .ok()?
        .trim_matches(|c: char| c == '\0' || c == ' ');
    if u32::from_str_radix(stored, 8).ok()? != sum {
        return None;
    }
    let f = fs::File::open(path).ok()?;
    Some(if magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    })
}

/// Runs one COPY/ADD into the rootfs at `root`.
pub(crate) fn copy(root: &Path, source: &CopySource<'_>, opts: &CopyOptions<'_>) -> Result<()> {
    let dest_is_dir_hint = opts.dest.ends_with('/') || opts.dest.ends_with("/.");
    let dest_clean = clean(&format!("/{}", opts.dest));
    // fsutil: ensure the destination (trailing slash) or its parent exists.
    if dest_is_dir_hint {
        mkdir_all(root, &dest_clean, opts.chown)?;
    } else if let Some((parent, _)) = dest_clean.rsplit_once('/') {
        mkdir_all(root, parent, opts.chown)?;
    }
    let dest_host = scoped(root, &dest_clean)?;
    match source {
        CopySource::Inline { name, content } => {
            let target = match dir_in_root(root, &dest_clean)? {
                Some(dir) => dir.join(name),
                None => dest_host.clone(),
            };
            remove_existing(&target, false)?;
            fs::write(&target, content).map_err(io_err("write", &target))?;
            let mode = opts.chmod.map_or(0o644, |c| c.apply(0o644, false));
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                .map_err(io_err("chmod", &target))?;
            let (u, g) = opts.chown.unwrap_or((0, 0));
            fsutil::lchown(&target, u, g)?;
        }
        CopySource::Tree {
            tree,
            paths,
            reset_owner,
        } => {
            let mut matched_any = false;
            for src in paths {
                // `COPY --parents a/./b/c` keeps only `b/c` below the destination.
                let pivot = if opts.parents {
                    src.split_once("/./")
                        .map(|(p, _)| clean(&format!("/{p}")).trim_start_matches('/').to_string())
                } else {
                    None
                };
                let matches = tree.expand(src)?;
                if matches.is_empty() {
                    if has_wildcards(src) {
                        continue;
                    }
                    return Err(Error::SourceNotFound {
                        line: opts.line,
                        path: src.clone(),
                    });
                }
                matched_any = true;
                for m in matches {
                    // --exclude also filters what a wildcard matched.
                    if has_wildcards(src)
                        && let Some(ex) = opts.exclude
                        && ex.is_excluded(&m)
                    {
                        continue;
                    }
                    // --parents keeps the path below the `/./` pivot (or the whole path).
                    let keep = match pivot.as_deref() {
                        Some(p) if !p.is_empty() => m
                            .strip_prefix(p)
                            .map_or(m.as_str(), |r| r.trim_start_matches('/')),
                        _ => &m,
                    };
                    copy_one(
                        root,
                        tree,
                        &m,
                        keep,
                        &dest_clean,
                        &dest_host,
                        opts,
                        *reset_owner,
                    )?;
                }
            }
            let _ = matched_any;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn copy_one(
    root: &Path,
    tree: &SourceTree<'_>,
    src_rel: &str,
    keep_rel: &str,
    dest_clean: &str,
    dest_host: &Path,
    opts: &CopyOptions<'_>,
    reset_owner: bool,
) -> Result<()> {
    let top = tree.top(src_rel)?;
    let top = &top;
    let base = src_rel.rsplit('/').next().unwrap_or(src_rel).to_string();
    let mut dest_host = dest_host.to_path_buf();
    let mut dest_path = dest_clean.to_string();
    if opts.parents && !keep_rel.is_empty() {
        // --parents: keep the source's path below the destination.
        let full = format!("{}/{}", dest_clean.trim_end_matches('/'), keep_rel);
        let parent = full.rsplit_once('/').map_or("/", |(p, _)| p).to_string();
        mkdir_all(root, &parent, opts.chown)?;
        dest_host = scoped(root, &full)?;
        dest_path.clone_from(&full);
        if top.kind == EntryKind::Dir {
            dest_host = mkdir_all(root, &full, opts.chown)?;
        }
    } else if top.kind != EntryKind::Dir {
        // A file into an existing directory (or a symlink to one, inside the root) keeps its
        // name.
        if let Some(dir) = dir_in_root(root, dest_clean)? {
            dest_host = dir.join(&base);
            dest_path = format!("{}/{base}", dest_clean.trim_end_matches('/'));
        }
    } else if let Some(dir) = dir_in_root(root, dest_clean)? {
        // Directory contents into an existing directory, or a symlink to one inside the root.
        dest_host = dir;
    }
    if top.kind != EntryKind::Dir {
        if opts.unpack_archives
            && top.kind == EntryKind::File
            && let Some(reader) = tar_reader(&top.abs)
        {
            let d = if opts.parents {
                dest_path
            } else {
                dest_clean.to_string()
            };
            return crate::untar::extract(reader, root, &d, opts.chown, opts.line);
        }
        return copy_entry(top, &dest_host, opts, reset_owner, true).map(|_| ());
    }
    // Directory: its contents go into the destination. Directory times are set again after
    // their children, as BuildKit's copier does (copyFileInfo after copyDirectory): a copied
    // directory keeps its source's mtime, so the same context makes the same layer. Entries are
    // copied as the walk finds them; only directories are remembered.
    let mut dir_times: Vec<(PathBuf, Times)> = Vec::new();
    if copy_entry(top, &dest_host, opts, reset_owner, false)? {
        dir_times.push((dest_host.clone(), times(&top.meta)));
    }
    // Directories left out by --exclude whose descendants are kept: those descendants' parents
    // are made inside the root (they may be symlinks in the destination).
    let mut skipped_dirs: Vec<String> = Vec::new();
    tree.walk_below(top, src_rel, &mut |e| {
        if let Some(ex) = opts.exclude
            && ex.is_excluded(&e.rel)
        {
            if e.kind == EntryKind::Dir {
                skipped_dirs.push(e.rel);
            }
            return Ok(());
        }
        let mut target = dest_host.join(&e.rel);
        if skipped_dirs.iter().any(|d| {
            e.rel
                .strip_prefix(d.as_str())
                .is_some_and(|r| r.starts_with('/'))
        }) {
            let (parent, name) = e.rel.rsplit_once('/').unwrap_or(("", &e.rel));
            let in_root = dest_host.strip_prefix(root).unwrap_or(Path::new(""));
            let parent = format!("/{}/{parent}", in_root.display());
            target = mkdir_all(root, &parent, opts.chown)?.join(name);
        }
        if copy_entry(&e, &target, opts, reset_owner, true)? {
            dir_times.push((target, times(&e.meta)));
        }
        Ok(())
    })?;
    for (target, (atime, mtime)) in dir_times.iter().rev() {
        fsutil::set_times(target, *atime, *mtime)?;
    }
    Ok(())
}

/// (atime, mtime) as (seconds, nanoseconds).
type Times = ((i64, i64), (i64, i64));

fn times(m: &fs::Metadata) -> Times {
    ((m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, data: &str, mode: u32) {
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, data).expect("write");
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn opts(dest: &str) -> CopyOptions<'static> {
        CopyOptions {
            dest: dest.into(),
            chown: None,
            chmod: None,
            parents: false,
            exclude: None,
            unpack_archives: false,
            line: 1,
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).expect("stat").mode() & 0o7777
    }

    fn ctx_copy(ctx: &Path, root: &Path, paths: &[&str], o: &CopyOptions<'_>) -> Result<()> {
        let src = CopySource::Tree {
            tree: SourceTree {
                root: ctx,
                ignore: None,
            },
            paths: paths.iter().map(|s| s.to_string()).collect(),
            reset_owner: true,
        };
        copy(root, &src, o)
    }

    #[test]
    fn chmod_parse_and_apply() {
        assert_eq!(Chmod::parse("0600"), Some(Chmod::Octal(0o600)));
        assert_eq!(Chmod::parse("9"), None);
        let s = Chmod::parse("u+x,go-r").expect("symbolic");
        assert_eq!(s.apply(0o644, false), 0o700);
        let s = Chmod::parse("a=rX").expect("symbolic");
        assert_eq!(s.apply(0o600, true), 0o555);
        assert_eq!(s.apply(0o600, false), 0o444);
    }

    #[test]
    fn directory_contents_files_and_rename() {
        let ctx = tempfile::tempdir().expect("tempdir");
        let root = tempfile::tempdir().expect("tempdir");
        write(&ctx.path().join("dir/a.txt"), "a", 0o640);
        write(&ctx.path().join("dir/sub/b.txt"), "b", 0o755);
        write(&ctx.path().join("f"), "f", 0o600);
        std::os::unix::fs::symlink("a.txt", ctx.path().join("dir/link")).expect("symlink");
        std::os::unix::fs::symlink("f", ctx.path().join("toplink")).expect("symlink");

        ctx_copy(ctx.path(), root.path(), &["dir"], &opts("/dst/")).expect("copy dir/");
        assert_eq!(
            fs::read_to_string(root.path().join("dst/a.txt")).expect("read"),
            "a"
        );
        assert_eq!(mode(&root.path().join("dst/a.txt")), 0o640);
        assert_eq!(mode(&root.path().join("dst/sub/b.txt")), 0o755);
        assert!(
            !root.path().join("dst/dir").exists(),
            "contents are copied, not the directory"
        );
        assert_eq!(
            fs::read_link(root.path().join("dst/link"))
                .expect("link")
                .to_str(),
            Some("a.txt")
        );

        ctx_copy(ctx.path(), root.path(), &["f"], &opts("/renamed")).expect("copy rename");
        assert_eq!(mode(&root.path().join("renamed")), 0o600);
        ctx_copy(ctx.path(), root.path(), &["f"], &opts("/into/")).expect("copy into");
        assert!(root.path().join("into/f").is_file());
        ctx_copy(ctx.path(), root.path(), &["toplink"], &opts("/followed")).expect("copy link");
        assert!(
            fs::symlink_metadata(root.path().join("followed"))
                .expect("stat")
                .is_file(),
            "top-level symlink followed"
        );

        let err =
            ctx_copy(ctx.path(), root.path(), &["missing"], &opts("/x")).expect_err("missing");
        assert!(err.to_string().contains("\"/missing\": not found"), "{err}");
        ctx_copy(ctx.path(), root.path(), &["*.nomatch"], &opts("/x/"))
            .expect("empty wildcard is fine");
    }

    /// Issue 15: a copied directory keeps its source's mtime (set after its children, as
    /// BuildKit does), so copying the same tree twice gives the same times.
    #[test]
    fn copied_directories_keep_their_source_mtime() {
        let ctx = tempfile::tempdir().expect("tempdir");
        let root = tempfile::tempdir().expect("tempdir");
        write(&ctx.path().join("dir/sub/a.txt"), "a", 0o644);
        write(&ctx.path().join("dir/b.txt"), "b", 0o644);
        let old = (1_600_000_000, 123);
        for d in ["dir/sub", "dir"] {
            fsutil::set_times(&ctx.path().join(d), old, old).expect("set times");
        }
        ctx_copy(ctx.path(), root.path(), &["dir"], &opts("/x/dir")).expect("copy");
        for d in ["x/dir", "x/dir/sub"] {
            let m = fs::symlink_metadata(root.path().join(d)).expect("stat");
            assert_eq!((m.mtime(), m.mtime_nsec()), old, "{d}");
        }
    }

    #[test]
    fn chown_chmod_and_owner_of_created_dirs() {
        let ctx = tempfile::tempdir().expect("tempdir");
        let root = tempfile::tempdir().expect("tempdir");
        write(&ctx.path().join("dir/x"), "x", 0o644);
        let mut o = opts("/d2/");
        o.chown = Some((1000, 1000));
        ctx_copy(ctx.path(), root.path(), &["dir"], &o).expect("copy");
        let m = fs::metadata(root.path().join("d2")).expect("stat");
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1000, 0o755));
        assert_eq!(
            fs::metadata(root.path().join("d2/x")).expect("stat").uid(),
            1000
        );
        let c = Chmod::Octal(0o600);
        let mut o = opts("/f3");
        o.chmod = Some(&c);
        ctx_copy(ctx.path(), root.path(), &["dir/x"], &o).expect("copy");
        assert_eq!(mode(&root.path().join("f3")), 0o600);
    }

    #[test]
    fn exclude_and_parents() {
        let ctx = tempfile::tempdir().expect("tempdir");
        let root = tempfile::tempdir().expect("tempdir");
        write(&ctx.path().join("a/b/keep.txt"), "k", 0o644);
        write(&ctx.path().join("a/b/skip.md"), "s", 0o644);
        write(&ctx.path().join("top.md"), "t", 0o644);
        write(&ctx.path().join("top.txt"), "t", 0o644);
        let ex = IgnoreMatcher::new(&["*.md", "**/*.md"]).expect("patterns");
        let mut o = opts("/x/");
        o.exclude = Some(&ex);
        ctx_copy(ctx.path(), root.path(), &["a", "top.*"], &o).expect("copy");
        assert!(root.path().join("x/b/keep.txt").is_file());
        assert!(
            !root.path().join("x/b/skip.md").exists(),
            "excluded inside a directory"
        );
        assert!(root.path().join("x/top.txt").is_file());
        assert!(
            !root.path().join("x/top.md").exists(),
            "excluded wildcard match"
        );
        let mut o = opts("/p/");
        o.parents = true;
        ctx_copy(ctx.path(), root.path(), &["a/b/keep.txt"], &o).expect("copy --parents");
        assert!(
            root.path().join("p/a/b/keep.txt").is_file(),
            "--parents keeps the source path"
        );
    }

    #[test]
    fn add_extracts_tar() {
        let ctx = tempfile::tempdir().expect("tempdir");
        let root = tempfile::tempdir().expect("tempdir");
        let tarpath = ctx.path().join("a.tar.gz");
        {
            let f = fs::File::create(&tarpath).expect("create");
            let gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
            let mut b = tar::Builder::new(gz);
            let mut h = tar::Header::new_gnu();
            h.set_size(4);
            h.set_mode(0o750);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append_data(&mut h, "bin/tool", &b"tool"[..])
                .expect("append");
            b.into_inner().expect("finish").finish().expect("gz");
        }
        let mut o = opts("/y.tar.gz/");
        o.unpack_archives = true;
        ctx_copy(ctx.path(), root.path(), &["a.tar.gz"], &o).expect("add");
        assert_eq!(
            fs::read_to_string(root.path().join("y.tar.gz/bin/tool")).expect("read"),
            "tool"
        );
        assert_eq!(mode(&root.path().join("y.tar.gz/bin/tool")), 0o750);
    }
}
