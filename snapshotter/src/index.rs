//! The snapshot index on disk: one small record file per snapshot, so an operation reads and
//! writes what it touches and nothing else, whatever the number of snapshots in the store.
//!
//! ```text
//! snapshots/metadata.json          store settings (driver, userxattr), `"format": 2`
//! snapshots/lock                   flock held by every change
//! snapshots/next-id                the next directory id (ids are never reused)
//! snapshots/active/<name>          record of an active or view snapshot (with its owner)
//! snapshots/committed/<name>       record of a committed snapshot
//! snapshots/children/<id>/<id>     a marker per child of a snapshot (for `remove`)
//! snapshots/tmp/<owner>-...        directories and records being made, or being deleted
//! snapshots/<id>/fs, <id>/work     the snapshot's files
//! ```
//!
//! A record file is named after its snapshot ([`file_name`]: the key, with bytes other than
//! ASCII letters, digits, `-`, `_` and `.` written `%XX`), and is created by renaming a
//! complete file into place, so a reader never sees half a record and needs no lock. Commit
//! is one `rename(active/<key>, committed/<name>)`: a record in `committed/` is committed
//! whatever its body says. Records are not fsynced (snapshot contents are not either; a power
//! cut loses recent snapshots, it never makes a half-written one valid): see
//! [`crate::snapshot`] for what repairs what.

use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::api::Kind;
use crate::error::{Error, IoContext, Result};
use crate::owner::Owner;

/// What a record file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The snapshot's directory, `<root>/<id>`.
    pub(crate) id: u64,
    /// Active or view (a record in `committed/` is committed whatever this says).
    pub(crate) kind: Kind,
    /// The parent's name.
    pub(crate) parent: Option<String>,
    /// The parent's id, for its child marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) parent_id: Option<u64>,
    /// Seconds since the epoch.
    pub(crate) created: i64,
    /// `PID-STARTTIME` of the process that made an active or view snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) owner: Option<String>,
}

impl Record {
    /// Whether this active or view snapshot's process is gone (or was never recorded).
    pub(crate) fn is_orphaned(&self) -> bool {
        !self
            .owner
            .as_deref()
            .and_then(Owner::from_tag)
            .is_some_and(Owner::is_alive)
    }
}

/// Which of the two record directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shelf {
    /// `active/`: active and view snapshots.
    Active,
    /// `committed/`.
    Committed,
}

impl Shelf {
    fn dir(self) -> &'static str {
        match self {
            Shelf::Active => "active",
            Shelf::Committed => "committed",
        }
    }
}

/// The record file name of snapshot `name`: the name itself when it is made of ASCII letters,
/// digits, `-`, `_` and (not first) `.`; other bytes as `%XX`. Names whose file name would be
/// longer than a file name may be are refused.
pub(crate) fn file_name(name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(Error::InvalidKey {
            key: name.to_string(),
            reason: "a snapshot key cannot be empty",
        });
    }
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0) {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    if out.len() > 250 {
        return Err(Error::InvalidKey {
            key: name.to_string(),
            reason: "a snapshot key is at most 250 bytes once escaped",
        });
    }
    Ok(out)
}

/// The snapshot name a record file name stands for (see [`file_name`]).
pub(crate) fn name_of(file: &str) -> Option<String> {
    let b = file.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The on-disk index rooted at `<state_dir>/snapshots`.
#[derive(Debug, Clone)]
pub(crate) struct Index {
    root: PathBuf,
}

impl Index {
    pub(crate) fn new(root: &Path) -> Self {
        Index {
            root: root.to_path_buf(),
        }
    }

    /// Creates the record, marker and temp directories (present in every store made or
    /// migrated by this version; cheap when they exist).
    pub(crate) fn create_dirs(&self) -> Result<()> {
        for d in ["active", "committed", "children", "tmp"] {
            let p = self.root.join(d);
            match fs::create_dir(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).ctx("create", p),
            }
        }
        Ok(())
    }

    /// `<root>/<id>`.
    pub(crate) fn dir(&self, id: u64) -> PathBuf {
        self.root.join(id.to_string())
    }

    /// Where temporary things are made: `<root>/tmp`.
    pub(crate) fn tmp_root(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A fresh path under `tmp/` owned by this process: `tmp/<owner>-<what><n>`.
    pub(crate) fn tmp_path(&self, what: &str) -> PathBuf {
        self.tmp_root().join(format!(
            "{}-{what}{}",
            Owner::current().tag(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }

    fn record_path(&self, shelf: Shelf, name: &str) -> Result<PathBuf> {
        Ok(self.root.join(shelf.dir()).join(file_name(name)?))
    }

    /// The record of `name` and the kind it has, `None` when there is none.
    pub(crate) fn get(&self, name: &str) -> Result<Option<(Kind, Record)>> {
        for shelf in [Shelf::Committed, Shelf::Active] {
            let path = self.record_path(shelf, name)?;
            if let Some(rec) = read_record(&path)? {
                let kind = match shelf {
                    Shelf::Committed => Kind::Committed,
                    Shelf::Active => rec.kind,
                };
                return Ok(Some((kind, rec)));
            }
        }
        Ok(None)
    }

    /// Whether a record named `name` exists on either shelf.
    pub(crate) fn exists(&self, name: &str) -> Result<bool> {
        for shelf in [Shelf::Committed, Shelf::Active] {
            if fs::symlink_metadata(self.record_path(shelf, name)?).is_ok() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Writes a new record `name` on `shelf`; [`Error::AlreadyExists`] when there is one.
    pub(crate) fn create(&self, shelf: Shelf, name: &str, rec: &Record) -> Result<()> {
        let path = self.record_path(shelf, name)?;
        let tmp = self.tmp_path("rec");
        let body = serde_json::to_vec(rec).map_err(|e| Error::CorruptMetadata {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let written = fs::write(&tmp, &body).ctx("write", &tmp).and_then(|()| {
            rename_noreplace(&tmp, &path).map_err(|e| match e {
                Error::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
                    Error::AlreadyExists(name.to_string())
                }
                e => e,
            })
        });
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// Writes the record `name` on `shelf`, replacing one that exists (migration).
    pub(crate) fn put(&self, shelf: Shelf, name: &str, rec: &Record) -> Result<()> {
        let path = self.record_path(shelf, name)?;
        let tmp = self.tmp_path("rec");
        let body = serde_json::to_vec(rec).map_err(|e| Error::CorruptMetadata {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let written = fs::write(&tmp, &body)
            .ctx("write", &tmp)
            .and_then(|()| fs::rename(&tmp, &path).ctx("rename", &path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// Moves the active record `key` to the committed record `name` (one rename).
    pub(crate) fn commit(&self, key: &str, name: &str) -> Result<()> {
        let from = self.record_path(Shelf::Active, key)?;
        let to = self.record_path(Shelf::Committed, name)?;
        rename_noreplace(&from, &to).map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
                Error::AlreadyExists(name.to_string())
            }
            e => e,
        })
    }

    /// Deletes the record of `name` from `shelf` (absent is fine).
    pub(crate) fn delete(&self, shelf: Shelf, name: &str) -> Result<()> {
        let path = self.record_path(shelf, name)?;
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).ctx("remove", path),
            _ => Ok(()),
        }
    }

    /// Every record on `shelf` by name: records that cannot be read come with their error.
    pub(crate) fn list(&self, shelf: Shelf) -> Result<Vec<(String, Result<Record>)>> {
        let dir = self.root.join(shelf.dir());
        let mut out = Vec::new();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).ctx("read", dir),
        };
        for e in rd {
            let e = e.ctx("read", &dir)?;
            let file = e.file_name();
            let Some(name) = file.to_str().and_then(name_of) else {
                continue;
            };
            let rec =
                read_record(&e.path()).and_then(|r| r.ok_or_else(|| Error::NotFound(name.clone())));
            out.push((name, rec));
        }
        Ok(out)
    }

    fn children_dir(&self, parent: u64) -> PathBuf {
        self.root.join("children").join(parent.to_string())
    }

    /// Records that snapshot `child` names `parent` as its parent.
    pub(crate) fn add_child(&self, parent: u64, child: u64) -> Result<()> {
        let dir = self.children_dir(parent);
        match fs::create_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(e).ctx("create", dir);
            }
            _ => {}
        }
        let p = dir.join(child.to_string());
        fs::write(&p, b"").ctx("create", p)
    }

    /// Drops the marker of `child` under `parent` (absent is fine).
    pub(crate) fn remove_child(&self, parent: u64, child: u64) {
        let _ = fs::remove_file(self.children_dir(parent).join(child.to_string()));
    }

    /// How many children `parent` has: markers whose snapshot directory exists. Markers of
    /// snapshots that are gone (a crash in the middle of a remove) are deleted.
    /// Called under the lock, where every child's directory is in place.
    pub(crate) fn live_children(&self, parent: u64) -> Result<usize> {
        let dir = self.children_dir(parent);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e).ctx("read", dir),
        };
        let mut n = 0;
        for e in rd.flatten() {
            let id = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok());
            match id {
                Some(id) if self.dir(id).is_dir() => n += 1,
                _ => {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(n)
    }

    /// Removes the (stale) markers of a removed snapshot's children.
    pub(crate) fn drop_children(&self, parent: u64) {
        let _ = crate::fsutil::remove_any(&self.children_dir(parent));
    }

    /// The counter in `next-id`, bumped (called under the lock). The counter is bumped before
    /// the id is used, so a crash can only skip ids, never hand one out twice.
    pub(crate) fn alloc_id(&self) -> Result<u64> {
        let path = self.root.join("next-id");
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ctx("open", &path)?;
        let mut s = String::new();
        f.read_to_string(&mut s).ctx("read", &path)?;
        let id = s.trim().parse::<u64>().unwrap_or(1).max(1);
        self.set_next_id_in(&f, &path, id + 1)?;
        Ok(id)
    }

    /// Raises the counter to at least `next` (migration).
    pub(crate) fn raise_next_id(&self, next: u64) -> Result<()> {
        let path = self.root.join("next-id");
        let cur = fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(1);
        if cur >= next {
            return Ok(());
        }
        let f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ctx("open", &path)?;
        self.set_next_id_in(&f, &path, next)
    }

    #[allow(clippy::unused_self)]
    fn set_next_id_in(&self, f: &fs::File, path: &Path, next: u64) -> Result<()> {
        // Fixed width: an in-place write of one block never leaves a shorter number behind.
        let text = format!("{next:020}\n");
        f.write_all_at(text.as_bytes(), 0).ctx("write", path)
    }

    /// A fresh id whose directory does not exist (called under the lock): the counter never
    /// hands out an id twice, but a store restored from a copy may hold higher ids.
    pub(crate) fn free_id(&self) -> Result<u64> {
        loop {
            let id = self.alloc_id()?;
            if fs::symlink_metadata(self.dir(id)).is_err() {
                return Ok(id);
            }
        }
    }
}

/// A named step of a change where a test may make the process die (`KILN_CRASH_AT=<name>`,
/// debug builds only): the crash tests abort there and check what the next open repairs.
#[cfg(debug_assertions)]
pub(crate) fn crash_point(name: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT
        .get_or_init(|| std::env::var("KILN_CRASH_AT").ok())
        .as_deref()
        == Some(name)
    {
        std::process::abort();
    }
}

/// Compiled out of release builds.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub(crate) fn crash_point(_name: &str) {}

/// Reads one record; `None` when the file does not exist.
fn read_record(path: &Path) -> Result<Option<Record>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::CorruptMetadata {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).ctx("read", path),
    }
}

/// `rename(from, to)` failing with `AlreadyExists` when `to` exists. Filesystems without
/// `RENAME_NOREPLACE` get a check then a plain rename (every caller holds the store lock).
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
                    .ctx("rename", to);
            }
            fs::rename(from, to).ctx("rename", to)
        }
        Err(e) => Err(e).ctx("rename", to),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_stay_plain_for_plain_keys() {
        for k in [
            "step-0a1b",
            "layer-sha256.x",
            "a/b c",
            ".hidden",
            "..",
            "é%:",
        ] {
            let f = file_name(k).expect("valid key");
            assert!(!f.contains('/') && f != "." && f != ".." && !f.starts_with('.'));
            assert_eq!(name_of(&f).as_deref(), Some(k));
        }
        assert_eq!(file_name("step-0a1b_c.d").expect("plain"), "step-0a1b_c.d");
        assert_eq!(file_name("a:b/c").expect("escaped"), "a%3Ab%2Fc");
        assert!(file_name("").is_err());
        assert!(file_name(&"x".repeat(251)).is_err());
        assert!(file_name(&"x".repeat(250)).is_ok());
    }

    #[test]
    fn ids_count_up_and_a_taken_id_is_skipped() {
        let d = tempfile::tempdir().expect("tempdir");
        let ix = Index::new(d.path());
        ix.create_dirs().expect("dirs");
        assert_eq!(ix.alloc_id().expect("id"), 1);
        assert_eq!(ix.alloc_id().expect("id"), 2);
        fs::create_dir_all(d.path().join("3/fs")).expect("taken");
        assert_eq!(ix.free_id().expect("free"), 4);
        ix.raise_next_id(10).expect("raise");
        ix.raise_next_id(5).expect("never lowers");
        assert_eq!(ix.alloc_id().expect("id"), 10);
    }
}
