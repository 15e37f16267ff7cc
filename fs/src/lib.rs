//! Paths inside a root directory, resolved by the kernel.
//!
//! A build works on directory trees that an untrusted party shaped: a base image, a build
//! context, the result of a `RUN` step. Any of them may hold symlinks (`/usr/local -> /`,
//! chains hundreds of links long, `..` climbs) meant to make the builder read or write the host.
//! [`Root`] holds a directory fd and resolves every path with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)`, so symlinks of any kind and `..` stay inside the root the way they
//! would inside a container whose `/` is that directory; the kernel refuses chains longer than
//! its own limit (40 links) with `ELOOP`, which becomes [`Error::TooManyLinks`]. Nothing here
//! ever hands a partly resolved path back to the kernel to finish.
//!
//! Prefer acting on what [`Root::open_parent`] and [`Root::mkdir_all`] return (a directory fd
//! and a final name for `*at` syscalls with `AT_SYMLINK_NOFOLLOW`): nothing can be swapped
//! between the check and the use. [`Root::resolve`] gives a host path for APIs that need one
//! (mount targets, reading a tree that no process is changing); its components hold no symlink
//! at the time of the call.
//!
//! Paths that do not exist yet resolve lexically past their last existing component; a
//! dangling symlink on the way is followed inside the root (as BuildKit's `fs.RootPath` does), so
//! `mkdir_all("/link/x")` with `link -> /tmp/victim` creates `<root>/tmp/victim/x`.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Symlinks followed while resolving one path in user space (the kernel's own limit).
pub const MAX_LINKS: u32 = 40;

/// The longest path resolved (the kernel's `PATH_MAX`); longer ones fail with `ENAMETOOLONG`
/// at once, as the kernel's own lookups do.
const PATH_MAX: usize = 4096;

/// What went wrong, naming the path as seen inside the root.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed.
    #[error("{op} `{path}`: {source}")]
    Io {
        /// What was being done (`open`, `mkdir`, ...).
        op: &'static str,
        /// The path inside the root.
        path: String,
        /// The error from the kernel.
        #[source]
        source: std::io::Error,
    },
    /// More than [`MAX_LINKS`] symlinks on the way.
    #[error("too many levels of symbolic links resolving `{path}`")]
    TooManyLinks {
        /// The path inside the root.
        path: String,
    },
    /// A component that must be a directory is something else.
    #[error("`{path}` is not a directory")]
    NotADirectory {
        /// The path inside the root.
        path: String,
    },
    /// The path cannot name what was asked (e.g. the parent of `/`).
    #[error("invalid path `{path}`: {why}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why it was refused.
        why: &'static str,
    },
}

impl Error {
    /// Whether the error means "no such file or directory".
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    /// The OS error number, for [`Error::Io`].
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    fn io(op: &'static str, path: &str, errno: Errno) -> Self {
        if errno == Errno::LOOP {
            return Error::TooManyLinks { path: path.into() };
        }
        Error::Io {
            op,
            path: path.into(),
            source: errno.into(),
        }
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// A directory that paths are resolved inside of, as if it were `/`.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    /// The host path of the root as the kernel names it (no symlinks).
    real: PathBuf,
}

impl Root {
    /// Opens the directory `dir` as a root.
    pub fn open(dir: impl AsRef<Path>) -> Result<Root> {
        let dir = dir.as_ref();
        let shown = dir.display().to_string();
        let fd = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open root", &shown, e))?;
        let real = std::fs::read_link(proc_fd_path(&fd))
            .or_else(|_| std::fs::canonicalize(dir))
            .map_err(|source| Error::Io {
                op: "resolve root",
                path: shown,
                source,
            })?;
        Ok(Root { fd, real })
    }

    /// The host path of the root.
    pub fn path(&self) -> &Path {
        &self.real
    }

    /// The root's directory fd (`O_PATH`).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens `path` (absolute or relative, both taken from the root) with `flags`, resolved by
    /// the kernel inside the root; a final symlink is followed only when `follow_last`.
    pub fn open_at(
        &self,
        path: &str,
        flags: OFlags,
        mode: Mode,
        follow_last: bool,
    ) -> Result<OwnedFd> {
        let mut flags = flags | OFlags::CLOEXEC;
        if !follow_last {
            flags |= OFlags::NOFOLLOW;
        }
        let rel = relative(path);
        loop {
            match rustix::fs::openat2(
                &self.fd,
                rel,
                flags,
                mode,
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                Err(Errno::AGAIN | Errno::INTR) => {}
                r => return r.map_err(|e| Error::io("open", path, e)),
            }
        }
    }

    /// An `O_PATH` fd of `path` inside the root (of the symlink itself when the last component
    /// is one and `follow_last` is false).
    pub fn open_path(&self, path: &str, follow_last: bool) -> Result<OwnedFd> {
        self.open_at(path, OFlags::PATH, Mode::empty(), follow_last)
    }

    /// The canonical path inside the root (`/a/b`, no symlink components, no `..`) that `path`
    /// names, following a final symlink when `follow_last`. The path need not exist: past its
    /// last existing component it is taken lexically, and dangling symlinks on the way are
    /// followed inside the root.
    pub fn canonical(&self, path: &str, follow_last: bool) -> Result<String> {
        match self.open_path(path, follow_last) {
            Ok(fd) => {
                if let Some(p) = self.in_root_path(&fd) {
                    return Ok(p);
                }
            }
            // Missing components: resolved below, lexically past the last existing one.
            Err(e)
                if e.is_not_found() || e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) => {}
            Err(e) => return Err(e),
        }
        self.walk(path, follow_last)
    }

    /// The host path for `path`: [`Root::path`] joined with [`Root::canonical`].
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<PathBuf> {
        let c = self.canonical(path, follow_last)?;
        Ok(self.host_path(&c))
    }

    /// The host path of a canonical in-root path (as [`Root::canonical`] returns).
    pub fn host_path(&self, canonical: &str) -> PathBuf {
        let rel = canonical.trim_start_matches('/');
        if rel.is_empty() {
            self.real.clone()
        } else {
            self.real.join(rel)
        }
    }

    /// The directory holding `path` (resolved inside the root, symlinks followed) and the final
    /// name, for `*at` calls with `AT_SYMLINK_NOFOLLOW`. The parent must exist.
    pub fn open_parent(&self, path: &str) -> Result<(OwnedFd, OsString)> {
        let (parent, name) = split_last(path)?;
        let fd = self.open_dir(&parent, path)?;
        Ok((fd, name))
    }

    fn open_dir(&self, dir: &str, shown: &str) -> Result<OwnedFd> {
        match self.open_at(dir, OFlags::PATH | OFlags::DIRECTORY, Mode::empty(), true) {
            Err(Error::Io { source, .. })
                if source.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) =>
            {
                Err(Error::NotADirectory { path: shown.into() })
            }
            r => r,
        }
    }

    /// Creates the missing directories of `path` (like `mkdir -p`, following symlinks inside the
    /// root, dangling ones included) with permission bits `mode` (umask ignored) and, when
    /// given, owner `owner`; existing directories are left as they are. Returns the directory.
    pub fn mkdir_all(&self, path: &str, mode: u32, owner: Option<(u32, u32)>) -> Result<OwnedFd> {
        self.mkdir_all_depth(path, mode, owner, 0)
    }

    fn mkdir_all_depth(
        &self,
        path: &str,
        mode: u32,
        owner: Option<(u32, u32)>,
        depth: u32,
    ) -> Result<OwnedFd> {
        if depth > MAX_LINKS {
            return Err(Error::TooManyLinks { path: path.into() });
        }
        let mut cur = String::from("/");
        let mut dir = self.open_dir("/", "/")?;
        for comp in components(path) {
            if comp == ".." {
                cur = parent_of(&cur);
                dir = self.open_dir(&cur, path)?;
                continue;
            }
            let next = join(&cur, &comp);
            match self.open_dir(&next, &next) {
                Ok(fd) => {
                    cur = match self.in_root_path(&fd) {
                        Some(p) => p,
                        None => self.walk(&next, true)?,
                    };
                    dir = fd;
                }
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    let name = comp.as_os_str();
                    match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                            // A dangling symlink: create its target, inside the root.
                            let target = self.canonical(&next, true)?;
                            dir = self.mkdir_all_depth(&target, mode, owner, depth + 1)?;
                            cur = target;
                        }
                        Ok(_) => return Err(Error::NotADirectory { path: next }),
                        Err(Errno::NOENT) => {
                            dir = make_dir(&dir, name, mode, owner, &next)?;
                            cur = next;
                        }
                        Err(e) => return Err(Error::io("stat", &next, e)),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(dir)
    }

    /// The canonical in-root path of an fd opened inside this root, read from
    /// `/proc/self/fd`; `None` when /proc cannot tell (not mounted, or the file is gone).
    pub fn in_root_path(&self, fd: &impl AsFd) -> Option<String> {
        let p = std::fs::read_link(proc_fd_path(fd)).ok()?;
        let rest = p.strip_prefix(&self.real).ok()?;
        let bytes = rest.as_os_str().as_bytes();
        if bytes.ends_with(b" (deleted)") {
            return None;
        }
        let mut s = String::from("/");
        s.push_str(std::str::from_utf8(bytes).ok()?);
        Some(s)
    }

    /// User-space resolution, one component at a time, each looked up by the kernel inside the
    /// root; used for paths with missing components (and when /proc is not there).
    fn walk(&self, path: &str, follow_last: bool) -> Result<String> {
        if path.len() > PATH_MAX {
            return Err(Error::io("resolve", path, Errno::NAMETOOLONG));
        }
        let mut pending: VecDeque<OsString> = components(path).into();
        let mut resolved: Vec<OsString> = Vec::new();
        let mut links = 0;
        while let Some(part) = pending.pop_front() {
            if part == ".." {
                resolved.pop();
                continue;
            }
            let is_last = pending.is_empty();
            let candidate = to_path(resolved.iter().chain(std::iter::once(&part)));
            let Ok(fd) = self.open_path(&candidate, false) else {
                // Missing (or not a directory): the rest is lexical.
                resolved.push(part);
                continue;
            };
            let st = rustix::fs::fstat(&fd).map_err(|e| Error::io("stat", &candidate, e))?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Symlink && (!is_last || follow_last)
            {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Error::TooManyLinks { path: path.into() });
                }
                let target = rustix::fs::readlinkat(&fd, "", Vec::new())
                    .map_err(|e| Error::io("read link", &candidate, e))?;
                let target = OsString::from_vec(target.into_bytes());
                if target.as_bytes().starts_with(b"/") {
                    resolved.clear();
                }
                for c in components_os(&target).into_iter().rev() {
                    pending.push_front(c);
                }
            } else {
                resolved.push(part);
            }
        }
        Ok(to_path(resolved.iter()))
    }
}

fn make_dir(
    parent: &OwnedFd,
    name: &OsStr,
    mode: u32,
    owner: Option<(u32, u32)>,
    shown: &str,
) -> Result<OwnedFd> {
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(mode)) {
        Ok(()) => {
            rustix::fs::chmodat(parent, name, Mode::from_raw_mode(mode), AtFlags::empty())
                .map_err(|e| Error::io("chmod", shown, e))?;
            if let Some((uid, gid)) = owner {
                rustix::fs::chownat(
                    parent,
                    name,
                    Some(rustix::fs::Uid::from_raw(uid)),
                    Some(rustix::fs::Gid::from_raw(gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| Error::io("chown", shown, e))?;
            }
        }
        // Another process made it meanwhile: fine if it is a directory (checked by the open).
        Err(Errno::EXIST) => {}
        Err(e) => return Err(Error::io("mkdir", shown, e)),
    }
    rustix::fs::openat(
        parent,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::NOTDIR | Errno::LOOP => Error::NotADirectory { path: shown.into() },
        e => Error::io("open", shown, e),
    })
}

/// Reads the file at `path` with symlinks resolved inside the directory that holds it, the way
/// BuildKit reads a Dockerfile from the directory it was sent (`-f dir/Dockerfile` sends `dir`):
/// a `Dockerfile` that links out of its directory (`Dockerfile -> /etc/shadow`) reads as missing
/// instead of reading the host file.
pub fn read_in_dir(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let to_io = |e: Error| match e {
        Error::Io { source, .. } => source,
        Error::TooManyLinks { .. } => std::io::Error::from_raw_os_error(Errno::LOOP.raw_os_error()),
        Error::NotADirectory { .. } => {
            std::io::Error::from_raw_os_error(Errno::NOTDIR.raw_os_error())
        }
        e @ Error::InvalidPath { .. } => std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    };
    let root = Root::open(dir).map_err(to_io)?;
    let fd = root
        .open_at(&name.to_string_lossy(), OFlags::RDONLY, Mode::empty(), true)
        .map_err(to_io)?;
    let mut data = Vec::new();
    std::fs::File::from(fd).read_to_end(&mut data)?;
    Ok(data)
}

/// `/proc/self/fd/N` for `fd`: a path the kernel resolves to exactly that file (for APIs such
/// as `mount(2)` that take paths, so that nothing can be swapped in between).
pub fn proc_fd_path(fd: &impl AsFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// `path` relative to the root for `openat2`: leading slashes dropped, `.` for the root.
fn relative(path: &str) -> &str {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() { "." } else { rel }
}

/// The normal and `..` components of `path`.
fn components(path: &str) -> Vec<OsString> {
    components_os(OsStr::new(path))
}

fn components_os(path: &OsStr) -> Vec<OsString> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn to_path<'a>(parts: impl Iterator<Item = &'a OsString>) -> String {
    let mut s = String::new();
    for p in parts {
        s.push('/');
        s.push_str(&p.to_string_lossy());
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

fn join(dir: &str, name: &OsStr) -> String {
    let mut s = dir.trim_end_matches('/').to_string();
    s.push('/');
    s.push_str(&name.to_string_lossy());
    s
}

fn parent_of(canonical: &str) -> String {
    match canonical.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/".into(),
        Some((p, _)) => p.into(),
    }
}

/// `(parent, name)` of `path`, with `.` components dropped; a final `..` or the root itself has
/// no name.
fn split_last(path: &str) -> Result<(String, OsString)> {
    let mut comps = components(path);
    let name = comps.pop().ok_or_else(|| Error::InvalidPath {
        path: path.into(),
        why: "the root has no parent",
    })?;
    if name == ".." {
        return Err(Error::InvalidPath {
            path: path.into(),
            why: "ends in `..`",
        });
    }
    Ok((to_path(comps.iter()), name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, symlink};

    fn setup() -> (tempfile::TempDir, tempfile::TempDir) {
        (
            tempfile::tempdir().expect("root"),
            tempfile::tempdir().expect("outside"),
        )
    }

    #[test]
    fn absolute_and_relative_symlinks_stay_inside() {
        let (root, out) = setup();
        let r = root.path();
        fs::create_dir_all(r.join("usr/lib")).expect("mkdir");
        symlink(out.path(), r.join("abs")).expect("symlink");
        symlink("../../../../../..", r.join("usr/lib/up")).expect("symlink");
        symlink("usr/lib", r.join("rel")).expect("symlink");
        let root = Root::open(r).expect("open");
        // `abs` points at a host directory: inside the root it is <root><host path>.
        let outside = out.path().to_str().expect("utf8");
        assert_eq!(
            root.canonical("/abs/x", true).expect("resolve"),
            format!("{outside}/x")
        );
        assert_eq!(
            root.canonical("/usr/lib/up/etc", true).expect("resolve"),
            "/etc"
        );
        assert_eq!(
            root.canonical("rel/x", true).expect("resolve"),
            "/usr/lib/x"
        );
        assert_eq!(root.canonical("/rel", false).expect("resolve"), "/rel");
        assert_eq!(root.canonical("/rel", true).expect("resolve"), "/usr/lib");
        assert_eq!(root.canonical("/../../..", true).expect("resolve"), "/");
    }

    #[test]
    fn long_chains_are_refused_not_handed_to_the_kernel() {
        // The issue-10 reproduction: c0 -> c1 -> ... -> c299, with c256 -> a host directory.
        let (root, out) = setup();
        let r = root.path();
        for i in 0..300 {
            symlink(format!("c{}", i + 1), r.join(format!("c{i}"))).expect("symlink");
        }
        fs::remove_file(r.join("c256")).expect("rm");
        symlink(out.path(), r.join("c256")).expect("symlink");
        let root = Root::open(r).expect("open");
        for follow in [true, false] {
            let err = root.canonical("/c0/x", follow).expect_err("too many links");
            assert!(matches!(err, Error::TooManyLinks { .. }), "{err}");
        }
        let err = root
            .mkdir_all("/c0/made", 0o755, None)
            .expect_err("too many links");
        assert!(matches!(err, Error::TooManyLinks { .. }), "{err}");
        assert!(root.open_parent("/c0/x").is_err());
        assert_eq!(
            fs::read_dir(out.path()).expect("read").count(),
            0,
            "host untouched"
        );
    }

    #[test]
    fn mkdir_all_follows_dangling_links_inside_and_sets_mode_and_owner() {
        let (root, out) = setup();
        let r = root.path();
        let victim = out.path().join("victim");
        symlink(&victim, r.join("d")).expect("symlink");
        let root = Root::open(r).expect("open");
        let fd = root
            .mkdir_all("/d/a/b", 0o750, Some((1234, 4321)))
            .expect("mkdir");
        assert!(!victim.exists(), "nothing made on the host");
        let made = r.join(victim.strip_prefix("/").expect("abs")).join("a/b");
        let m = fs::metadata(&made).expect("made inside the root");
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o750, 1234, 4321));
        assert_eq!(
            root.in_root_path(&fd).expect("path"),
            root.canonical("/d/a/b", true).expect("c")
        );
        fs::write(r.join("file"), "x").expect("write");
        let err = root
            .mkdir_all("/file/sub", 0o755, None)
            .expect_err("not a dir");
        assert!(matches!(err, Error::NotADirectory { .. }), "{err}");
    }

    #[test]
    fn read_in_dir_keeps_links_inside_the_directory() {
        let (root, out) = setup();
        let r = root.path();
        fs::write(out.path().join("shadow"), "host secret").expect("write");
        fs::write(r.join("real"), "FROM scratch").expect("write");
        symlink(out.path().join("shadow"), r.join("Dockerfile")).expect("symlink");
        symlink("real", r.join("Dockerfile.rel")).expect("symlink");
        let err = read_in_dir(&r.join("Dockerfile")).expect_err("link out of the dir");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(
            read_in_dir(&r.join("Dockerfile.rel")).expect("read"),
            b"FROM scratch"
        );
    }

    #[test]
    fn open_parent_gives_a_directory_fd_and_name() {
        let (root, out) = setup();
        let r = root.path();
        symlink(out.path(), r.join("p")).expect("symlink");
        let root = Root::open(r).expect("open");
        let err = root
            .open_parent("/p/x")
            .expect_err("parent is missing inside the root");
        assert!(err.is_not_found(), "{err}");
        root.mkdir_all("/p", 0o755, None).expect("mkdir");
        let (dir, name) = root.open_parent("/p/x").expect("parent");
        assert_eq!(name, "x");
        rustix::fs::mkdirat(&dir, &name, Mode::from_raw_mode(0o755)).expect("mkdirat");
        assert_eq!(
            fs::read_dir(out.path()).expect("read").count(),
            0,
            "host untouched"
        );
        assert!(root.open_parent("/").is_err());
        assert!(root.open_parent("/a/..").is_err());
    }
}
