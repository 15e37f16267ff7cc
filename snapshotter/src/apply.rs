//! The layer applier: unpacks an OCI layer (gzip, zstd or plain tar, detected from its first
//! bytes) into a directory, applying `.wh.` whiteouts and `.wh..wh..opq` opaque markers, hard
//! links, symlinks, devices, fifos, xattrs, owners, modes and mtimes, and computing the diff_id
//! of the uncompressed stream on the way.
//!
//! Containment: entry names with `..` components or a leading `/` are refused; parent paths are
//! resolved component by component without ever asking the kernel to follow a symlink, so a
//! symlink whose target climbs above the layer root is refused (absolute symlink targets are
//! taken relative to the root, as inside the container); the final component is never followed
//! (existing files are unlinked and recreated with `O_EXCL|O_NOFOLLOW`); hard link targets are
//! resolved by the same rules and must exist inside the root. `trusted.overlay.*` and
//! `user.overlay.*` xattrs from a layer are dropped so a layer cannot steer overlayfs.
//!
//! Overlay mode (used by [`apply_layer_to_snapshot`] for an overlay snapshot with parents)
//! writes into the snapshot's upper directory directly, the way containerd unpacks images: a
//! whiteout becomes a 0/0 character device, an opaque marker the `trusted.overlay.opaque=y`
//! xattr (`user.overlay.opaque=y` for a store made in a user namespace), and parent paths are
//! looked up in the upper dir first, then in the lower dirs.
//!
//! In a user namespace (a rootless build) block and character devices cannot be made: such
//! entries are skipped, as containerd and moby do there; fifos are kept.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result, stream};
use crate::fsutil;
use crate::snapshot::{Kind, Layout, Snapshotter};
use kiln_image::Compression;

/// What [`apply_layer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedLayer {
    /// `sha256:<hex>` of the uncompressed tar stream.
    pub diff_id: String,
    /// The compression detected from the stream's magic bytes.
    pub compression: Compression,
    /// Bytes of the uncompressed tar stream.
    pub uncompressed_size: u64,
    /// Number of tar entries applied (whiteouts included).
    pub entries: u64,
}

/// Applies the layer read from `reader` onto the directory `target` (which must exist).
pub fn apply_layer(reader: impl Read + Send, target: &Path) -> Result<AppliedLayer> {
    let root = fs::canonicalize(target).ctx("resolve", target)?;
    Applier::new(root, Vec::new(), None).run(reader)
}

/// Applies a layer into the active snapshot `key`, the efficient way for the driver: for
/// overlayfs straight into the upper directory (whiteouts become overlay whiteouts, no mount
/// needed), for native into the snapshot's tree.
pub fn apply_layer_to_snapshot(
    snapshotter: &dyn Snapshotter,
    key: &str,
    reader: impl Read + Send,
) -> Result<AppliedLayer> {
    let info = snapshotter.stat(key)?;
    if info.kind != Kind::Active {
        return Err(Error::WrongKind {
            key: key.to_string(),
            actual: match info.kind {
                Kind::View => "view",
                _ => "committed",
            },
            expected: "active",
        });
    }
    match snapshotter.layout(key)? {
        Layout::Overlay {
            upper,
            lowers,
            userxattr,
        } => {
            let opaque = (!lowers.is_empty()).then(|| crate::overlay::opaque_xattr(userxattr));
            Applier::new(upper, lowers, opaque).run(reader)
        }
        Layout::Native { dir, .. } => Applier::new(dir, Vec::new(), None).run(reader),
    }
}

/// Bytes of tar stream handed from the decoding thread to the applier at a time.
const CHUNK: usize = 512 * 1024;

/// The decoded tar stream, read from the thread that decompresses and hashes it
/// ([`decode`]): decompression and the sha256 run beside the applier's file writes.
struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    /// Emptied buffers go back to the decoder, so the stream allocates a few chunks only.
    back: mpsc::SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let old = std::mem::replace(&mut self.cur, chunk);
                    self.pos = 0;
                    let _ = self.back.try_send(old);
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                // The decoder finished: the stream ended.
                Err(mpsc::RecvError) => self.done = true,
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Decompresses `decoded` into chunks sent to `tx` (buffers come back on `back`), hashing and
/// counting the tar stream; returns the sha256 and the size. Stops early when the applier
/// hangs up (it failed).
fn decode(
    mut decoded: impl Read,
    tx: &mpsc::SyncSender<io::Result<Vec<u8>>>,
    back: &mpsc::Receiver<Vec<u8>>,
) -> (Sha256, u64) {
    let mut hasher = Sha256::new();
    let mut count = 0u64;
    loop {
        let mut buf = back.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let mut filled = 0;
        let r = loop {
            match decoded.read(&mut buf[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        buf.truncate(filled);
        hasher.update(&buf);
        count += filled as u64;
        let last = filled < CHUNK;
        if filled > 0 && tx.send(Ok(buf)).is_err() {
            break;
        }
        if let Err(e) = r {
            let _ = tx.send(Err(e));
            break;
        }
        if last {
            break;
        }
    }
    (hasher, count)
}

struct Applier {
    root: PathBuf,
    lowers: Vec<PathBuf>,
    /// Overlay mode: writing an upper dir over `lowers`.
    overlay: bool,
    /// The xattr marking an opaque directory, in overlay mode.
    opaque_xattr: &'static str,
    /// Whether device entries are skipped (a user namespace cannot make devices).
    skip_devices: bool,
    /// Root-relative paths written by this layer (an opaque marker keeps these).
    created: HashSet<PathBuf>,
    /// Directories whose mtime is set once all entries are in.
    dir_times: Vec<(PathBuf, i64)>,
    /// Copy buffer for file contents, allocated on first use.
    buf: Vec<u8>,
    /// Parent paths already resolved (entry name's parent components, `/`-terminated, to the
    /// root-relative directory): a layer's entries come grouped by directory, so most skip
    /// the component-by-component walk.
    dir_cache: HashMap<Vec<u8>, PathBuf>,
    /// Every directory and symlink (root-relative) those resolutions went through: an entry
    /// replacing one of them empties the cache.
    traversed: HashSet<PathBuf>,
}

/// Facts from one tar header (PAX applied).
struct Facts {
    kind: tar::EntryType,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    link: Option<Vec<u8>>,
    dev: (u32, u32),
    xattrs: Vec<(String, Vec<u8>)>,
}

fn hostile(entry: &[u8], reason: &'static str) -> Error {
    Error::HostileEntry {
        entry: String::from_utf8_lossy(entry).into_owned(),
        reason,
    }
}

fn invalid(entry: &[u8], reason: impl Into<String>) -> Error {
    Error::InvalidLayer {
        entry: String::from_utf8_lossy(entry).into_owned(),
        reason: reason.into(),
    }
}

/// Splits an entry name into components, refusing `..` and absolute names.
fn components(raw: &[u8]) -> Result<Vec<&OsStr>> {
    if raw.starts_with(b"/") {
        return Err(hostile(raw, "absolute path"));
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(hostile(raw, "path contains `..`")),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

impl Applier {
    /// An applier writing into `root`; in overlay mode (`opaque_xattr` given) over `lowers`.
    fn new(root: PathBuf, lowers: Vec<PathBuf>, opaque_xattr: Option<&'static str>) -> Self {
        Self {
            root,
            lowers,
            overlay: opaque_xattr.is_some(),
            opaque_xattr: opaque_xattr.unwrap_or(""),
            skip_devices: kiln_userns::in_user_namespace(),
            created: HashSet::new(),
            dir_times: Vec::new(),
            buf: Vec::new(),
            dir_cache: HashMap::new(),
            traversed: HashSet::new(),
        }
    }

    fn run(mut self, reader: impl Read + Send) -> Result<AppliedLayer> {
        let mut br = BufReader::with_capacity(256 * 1024, reader);
        let compression = Compression::detect(br.fill_buf().map_err(stream("read layer"))?);
        // Decompression and hashing on a thread of their own, the file writes on this one.
        let (tx, rx) = mpsc::sync_channel(4);
        let (back_tx, back_rx) = mpsc::sync_channel(8);
        std::thread::scope(|scope| {
            let decoder = std::thread::Builder::new()
                .name("kiln-unpack".into())
                .spawn_scoped(scope, move || {
                    let decoded: Box<dyn Read> = match compression {
                        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
                        Compression::Zstd => match zstd::stream::read::Decoder::with_buffer(br) {
                            Ok(d) => Box::new(d),
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                return (Sha256::new(), 0);
                            }
                        },
                        Compression::Uncompressed => Box::new(br),
                    };
                    decode(decoded, &tx, &back_rx)
                })
                .map_err(stream("start the layer decoder"))?;
            let chunks = ChunkReader {
                rx,
                back: back_tx,
                cur: Vec::new(),
                pos: 0,
                done: false,
            };
            // On an error the reader is dropped here, which stops the decoder.
            let applied = self.apply_entries(chunks);
            let (hasher, count) = match decoder.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            let entries = applied?;
            Ok(AppliedLayer {
                diff_id: format!("sha256:{}", hex::encode(hasher.finalize())),
                compression,
                uncompressed_size: count,
                entries,
            })
        })
    }

    /// Applies every entry of the tar stream `tar_stream` (read to its end) and sets the
    /// directories' times; returns the number of entries.
    fn apply_entries(&mut self, tar_stream: ChunkReader) -> Result<u64> {
        let mut archive = tar::Archive::new(tar_stream);
        let mut entries = 0u64;
        for entry in archive.entries().map_err(stream("read layer"))? {
            let mut entry = entry.map_err(|e| invalid(b"<stream>", e.to_string()))?;
            let name = entry.path_bytes().into_owned();
            let facts = facts(&mut entry, &name)?;
            if matches!(
                facts.kind,
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
            ) {
                continue;
            }
            entries += 1;
            self.entry(&name, &facts, &mut entry)?;
        }
        // The rest (the trailer's zero blocks) is part of the hashed stream.
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(stream("read layer trailer"))?;
        for (dir, mtime) in std::mem::take(&mut self.dir_times).into_iter().rev() {
            match fsutil::set_times(&dir, (mtime, 0), (mtime, 0)) {
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        Ok(entries)
    }

    /// Looks `rel` up in the (merged, for overlay mode) tree without following it.
    fn lookup(&self, rel: &Path) -> Result<Option<(PathBuf, fs::Metadata)>> {
        let layers = std::iter::once(&self.root).chain(if self.overlay {
            self.lowers.iter()
        } else {
            [].iter()
        });
        for layer in layers {
            let p = layer.join(rel);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_char_device() && m.rdev() == 0 && self.overlay => {
                    return Ok(None);
                }
                Ok(m) => return Ok(Some((p, m))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
                Err(e) => return Err(e).ctx("stat", p),
            }
        }
        Ok(None)
    }

    /// Resolves the parent directory `comps` inside the root, following symlinks as the
    /// container would see them, creating missing directories, refusing escapes. Returns the
    /// root-relative path of the directory (free of symlinks). Remembered until an entry
    /// replaces a directory or symlink on the way ([`Applier::replacing`]).
    fn resolve_dir(&mut self, entry: &[u8], comps: &[&OsStr], create: bool) -> Result<PathBuf> {
        let mut key = Vec::with_capacity(entry.len());
        for c in comps {
            key.extend_from_slice(c.as_bytes());
            key.push(b'/');
        }
        if let Some(p) = self.dir_cache.get(&key) {
            return Ok(p.clone());
        }
        let mut walked = Vec::new();
        let p = self.walk_dir(entry, comps, create, &mut walked)?;
        self.traversed.extend(walked);
        self.dir_cache.insert(key, p.clone());
        Ok(p)
    }

    /// Forgets the resolved parent paths when the entry at `rel` replaces a directory or
    /// symlink one of them went through (`keeps_dir`: a directory stays a directory).
    fn replacing(&mut self, rel: &Path, keeps_dir: bool) {
        if !keeps_dir && self.traversed.contains(rel) {
            self.dir_cache.clear();
            self.traversed.clear();
        }
    }

    /// [`Applier::resolve_dir`]'s walk, pushing each directory and symlink it goes through
    /// onto `walked`.
    fn walk_dir(
        &self,
        entry: &[u8],
        comps: &[&OsStr],
        create: bool,
        walked: &mut Vec<PathBuf>,
    ) -> Result<PathBuf> {
        let mut stack: Vec<OsString> = Vec::new();
        let mut queue: VecDeque<OsString> = comps.iter().map(|c| c.to_os_string()).collect();
        let mut hops = 0;
        while let Some(c) = queue.pop_front() {
            match c.as_bytes() {
                b"" | b"." => continue,
                b".." => {
                    if stack.pop().is_none() {
                        return Err(hostile(
                            entry,
                            "a symlink in the parent path leads outside the root",
                        ));
                    }
                    continue;
                }
                _ => {}
            }
            let mut rel: PathBuf = stack.iter().collect();
            rel.push(&c);
            match self.lookup(&rel)? {
                Some((path, m)) if m.file_type().is_symlink() => {
                    walked.push(rel.clone());
                    hops += 1;
                    if hops > 40 {
                        return Err(hostile(entry, "too many symlinks in the parent path"));
                    }
                    let target = fs::read_link(&path).ctx("readlink", &path)?;
                    let tb = target.as_os_str().as_bytes();
                    if tb.starts_with(b"/") {
                        stack.clear();
                    }
                    let mut next: VecDeque<OsString> = tb
                        .split(|b| *b == b'/')
                        .map(|s| OsString::from_vec(s.to_vec()))
                        .collect();
                    next.extend(queue);
                    queue = next;
                }
                Some((path, m)) if m.is_dir() => {
                    if self.overlay && !path.starts_with(&self.root) {
                        // Only in a lower layer: copy the directory up into the upper dir.
                        let up = self.root.join(&rel);
                        fs::create_dir(&up).ctx("mkdir", &up)?;
                        fsutil::lchown(&up, m.uid(), m.gid())?;
                        fs::set_permissions(&up, fs::Permissions::from_mode(m.mode() & 0o7777))
                            .ctx("chmod", &up)?;
                        for (k, v) in fsutil::list_xattrs(&path)? {
                            if !crate::overlay::is_overlay_xattr(&k) {
                                fsutil::set_xattr(&up, &k, &v)?;
                            }
                        }
                        fsutil::set_times(
                            &up,
                            (m.atime(), m.atime_nsec()),
                            (m.mtime(), m.mtime_nsec()),
                        )?;
                    }
                    walked.push(rel);
                    stack.push(c);
                }
                Some(_) => {
                    return Err(invalid(entry, "a parent path component is not a directory"));
                }
                None => {
                    if !create {
                        return Err(invalid(entry, "parent directory does not exist"));
                    }
                    let up = self.root.join(&rel);
                    // A whiteout (overlay mode) or nothing: make a plain directory, opaque when
                    // it replaces a whiteout so the deleted lower directory stays hidden.
                    let was_whiteout = self.overlay && fs::symlink_metadata(&up).is_ok();
                    fsutil::remove_any(&up)?;
                    fs::DirBuilder::new().create(&up).ctx("mkdir", &up)?;
                    fs::set_permissions(&up, fs::Permissions::from_mode(0o755))
                        .ctx("chmod", &up)?;
                    if was_whiteout {
                        fsutil::set_xattr(&up, self.opaque_xattr, b"y")?;
                    }
                    walked.push(rel);
                    stack.push(c);
                }
            }
        }
        Ok(stack.iter().collect())
    }

    fn entry(&mut self, name: &[u8], f: &Facts, data: &mut impl Read) -> Result<()> {
        let comps = components(name)?;
        let Some((last, parents)) = comps.split_last() else {
            // The root itself ("./"): nothing to create.
            return Ok(());
        };
        let last_b = last.as_bytes();
        if let Some(target) = last_b.strip_prefix(b".wh.") {
            if target != b".wh..opq" && (target.is_empty() || target == b"." || target == b"..") {
                return Err(hostile(name, "whiteout of `.` or `..`"));
            }
            // A whiteout under a path that is not a directory hides nothing.
            let prel = match self.resolve_dir(name, parents, false) {
                Ok(p) => p,
                Err(Error::InvalidLayer { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            if target == b".wh..opq" {
                // Removes what is under `prel` (the root included): forget every resolution.
                self.dir_cache.clear();
                self.traversed.clear();
                return self.opaque(&prel);
            }
            self.replacing(&prel.join(OsStr::from_bytes(target)), false);
            return self.whiteout(&prel, OsStr::from_bytes(target));
        }
        let prel = self.resolve_dir(name, parents, true)?;
        let pdir = self.root.join(&prel);
        let rel = prel.join(last);
        let dest = pdir.join(last);
        let existing = match fs::symlink_metadata(&dest) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).ctx("stat", &dest),
        };
        use tar::EntryType as T;
        let keeps_dir =
            f.kind == T::Directory && existing.as_ref().is_some_and(fs::Metadata::is_dir);
        self.replacing(&rel, keeps_dir);
        // What is at `dest` goes first (nothing to remove in a fresh snapshot, the common case).
        let clear = |dest: &Path| match &existing {
            Some(_) => fsutil::remove_any(dest),
            None => Ok(()),
        };
        match f.kind {
            T::Directory => {
                let was_whiteout = existing
                    .as_ref()
                    .is_some_and(|m| m.file_type().is_char_device() && m.rdev() == 0);
                if !keeps_dir {
                    clear(&dest)?;
                    fs::create_dir(&dest).ctx("mkdir", &dest)?;
                    if self.overlay && was_whiteout {
                        fsutil::set_xattr(&dest, self.opaque_xattr, b"y")?;
                    }
                }
                Self::set_meta(&dest, f, false)?;
                self.dir_times.push((dest, f.mtime));
            }
            T::Regular | T::Continuous => {
                clear(&dest)?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&dest)
                    .ctx("create", &dest)?;
                if self.buf.is_empty() {
                    self.buf = vec![0u8; 1 << 20];
                }
                // 1 MiB reads: fewer, larger reads through the decompressor and hasher.
                kiln_image::copy_with_buffer(data, &mut file, &mut self.buf).ctx("write", &dest)?;
                drop(file);
                Self::set_meta(&dest, f, true)?;
            }
            T::Symlink => {
                let link = f.link.clone().unwrap_or_default();
                clear(&dest)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&link), &dest)
                    .ctx("symlink", &dest)?;
                Self::set_meta(&dest, f, true)?;
            }
            T::Link => {
                let link = f.link.clone().unwrap_or_default();
                let lcomps = components(&link)
                    .map_err(|_| hostile(name, "hard link target is absolute or contains `..`"))?;
                let Some((llast, lparents)) = lcomps.split_last() else {
                    return Err(hostile(name, "hard link to the root"));
                };
                let lrel = self
                    .resolve_dir(name, lparents, false)
                    .map_err(|e| match e {
                        Error::InvalidLayer { .. } => {
                            invalid(name, "hard link target does not exist in the root")
                        }
                        e => e,
                    })?
                    .join(llast);
                let src = self.root.join(&lrel);
                let sm = fs::symlink_metadata(&src).map_err(|_| {
                    invalid(
                        name,
                        format!(
                            "hard link target `{}` does not exist in the root",
                            String::from_utf8_lossy(&link)
                        ),
                    )
                })?;
                if sm.is_dir() {
                    return Err(invalid(name, "hard link to a directory"));
                }
                if src != dest {
                    clear(&dest)?;
                    fs::hard_link(&src, &dest).ctx("hard link", &dest)?;
                }
            }
            T::Char | T::Block if self.skip_devices => {
                // No device can be made in a user namespace (containerd's skipFile).
                return Ok(());
            }
            T::Char | T::Block | T::Fifo => {
                clear(&dest)?;
                let kind = match f.kind {
                    T::Char => rustix::fs::FileType::CharacterDevice,
                    T::Block => rustix::fs::FileType::BlockDevice,
                    _ => rustix::fs::FileType::Fifo,
                };
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &dest,
                    kind,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    rustix::fs::makedev(f.dev.0, f.dev.1),
                )
                .ctx("mknod", &dest)?;
                Self::set_meta(&dest, f, true)?;
            }
            other => {
                return Err(invalid(name, format!("unsupported entry type {other:?}")));
            }
        }
        self.created.insert(rel);
        Ok(())
    }

    fn set_meta(dest: &Path, f: &Facts, times: bool) -> Result<()> {
        fsutil::lchown(dest, f.uid, f.gid)?;
        if f.kind != tar::EntryType::Symlink {
            // After chown, which clears setuid/setgid.
            fs::set_permissions(dest, fs::Permissions::from_mode(f.mode)).ctx("chmod", dest)?;
        }
        for (k, v) in &f.xattrs {
            if crate::overlay::is_overlay_xattr(k) {
                continue;
            }
            fsutil::set_xattr(dest, k, v)?;
        }
        if times {
            fsutil::set_times(dest, (f.mtime, 0), (f.mtime, 0))?;
        }
        Ok(())
    }

    fn whiteout(&mut self, prel: &Path, target: &OsStr) -> Result<()> {
        let dest = self.root.join(prel).join(target);
        fsutil::remove_any(&dest)?;
        self.created.remove(&prel.join(target));
        if self.overlay {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &dest,
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::empty(),
                0,
            )
            .ctx("create overlay whiteout", &dest)?;
        }
        Ok(())
    }

    fn opaque(&mut self, prel: &Path) -> Result<()> {
        let dir = self.root.join(prel);
        for e in fs::read_dir(&dir).ctx("read dir", &dir)? {
            let e = e.ctx("read dir", &dir)?;
            if !self.created.contains(&prel.join(e.file_name())) {
                fsutil::remove_any(&e.path())?;
            }
        }
        if self.overlay {
            fsutil::set_xattr(&dir, self.opaque_xattr, b"y")?;
        }
        Ok(())
    }
}

/// Reads the header facts of `entry`, with PAX records overriding the ustar fields.
fn facts<R: Read>(entry: &mut tar::Entry<'_, R>, name: &[u8]) -> Result<Facts> {
    let h = entry.header();
    let kind = h.entry_type();
    let bad = |what: &str| invalid(name, format!("bad {what} field"));
    let mut uid = h.uid().map_err(|_| bad("uid"))?;
    let mut gid = h.gid().map_err(|_| bad("gid"))?;
    let mut mtime = h.mtime().map_err(|_| bad("mtime"))? as i64;
    let mode = h.mode().map_err(|_| bad("mode"))? & 0o7777;
    let dev = if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
        (
            h.device_major().map_err(|_| bad("devmajor"))?.unwrap_or(0),
            h.device_minor().map_err(|_| bad("devminor"))?.unwrap_or(0),
        )
    } else {
        (0, 0)
    };
    let link = entry.link_name_bytes().map(|l| l.into_owned());
    let mut xattrs = Vec::new();
    if let Some(pax) = entry
        .pax_extensions()
        .map_err(|e| invalid(name, e.to_string()))?
    {
        for ext in pax {
            let ext = ext.map_err(|e| invalid(name, e.to_string()))?;
            let key = ext.key().map_err(|_| invalid(name, "non-UTF-8 PAX key"))?;
            let num =
                || -> Option<f64> { std::str::from_utf8(ext.value_bytes()).ok()?.parse().ok() };
            match key {
                "uid" => uid = num().ok_or_else(|| bad("PAX uid"))? as u64,
                "gid" => gid = num().ok_or_else(|| bad("PAX gid"))? as u64,
                "mtime" => mtime = num().ok_or_else(|| bad("PAX mtime"))?.floor() as i64,
                k => {
                    if let Some(x) = k.strip_prefix("SCHILY.xattr.") {
                        xattrs.push((x.to_string(), ext.value_bytes().to_vec()));
                    }
                }
            }
        }
    }
    Ok(Facts {
        kind,
        mode,
        uid: u32::try_from(uid).map_err(|_| bad("uid"))?,
        gid: u32::try_from(gid).map_err(|_| bad("gid"))?,
        mtime,
        link,
        dev,
        xattrs,
    })
}
