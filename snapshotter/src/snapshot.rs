//! The [`Snapshotter`] trait, its value types, and [`open`], which returns the store of
//! snapshots under `<state_dir>/snapshots/` driven by overlayfs or by plain directory copies.
//! Metadata (one JSON file) is read and rewritten under an exclusive `flock` for every operation,
//! so several processes (and threads) can share one state directory; snapshot directories are
//! built under a `tmp-<pid>-<starttime>-…` name and renamed into place, so a crash never leaves
//! a half-made snapshot behind a valid record.
//!
//! Crash-only: active and view snapshots record their [`Owner`] (pid and start time); [`open`]
//! removes those whose owner is gone, temporary directories of dead processes, directories no
//! record names, records whose directory is gone, and unmounts the mount points dead processes
//! left under `<state_dir>/mounts/`. Removing a snapshot frees its space before anything needs
//! to be written when the disk is full, so `kiln prune` always makes room.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::mount::Mount;
use crate::owner::{self, Owner};
use crate::{native, overlay};

/// A store of filesystem snapshots, modelled on containerd's `snapshots.Snapshotter`.
///
/// # Lifecycle
///
/// A snapshot is identified by a *key* (a free-form string chosen by the caller). There are three
/// kinds:
///
/// - **Committed** snapshots are immutable filesystem states. They are made by [`commit`]ting an
///   active snapshot and may be the parent of other snapshots. An empty chain starts from
///   `parent = None`.
/// - **Active** snapshots are made by [`prepare`]: a writable filesystem on top of a committed
///   parent (or empty). `prepare` returns the [`Mount`]s that make it visible; mount them (with
///   [`crate::MountedSnapshot`] or [`crate::mount_all`]), change files, unmount, then
///   [`commit`] the active key under a new name. The active key ceases to exist on commit.
/// - **View** snapshots are made by [`view`]: a read-only mount of a committed parent, for
///   reading a snapshot's contents. Views cannot be committed; [`remove`] them when done.
///
/// ```text
///   prepare(a, None) ──mount, write, unmount──> commit(base, a)
///   prepare(b, Some(base)) ──> commit(step1, b)          view(v, Some(step1)) ──> remove(v)
/// ```
///
/// Parents chain: a committed snapshot cannot be removed while any snapshot names it as parent;
/// remove children first. [`mounts`] returns the mounts of an active or view snapshot again (and,
/// as a kiln extension, read-only mounts of a committed one). [`stat`] and [`usage`] inspect a
/// snapshot; [`walk`] lists all of them. [`layout`] exposes where the driver keeps the files, for
/// the layer writer and applier of this crate.
///
/// Keys and names share one namespace. Callers never mount a snapshot's directories themselves:
/// only the returned mounts are stable across drivers.
///
/// [`commit`]: Snapshotter::commit
/// [`prepare`]: Snapshotter::prepare
/// [`view`]: Snapshotter::view
/// [`remove`]: Snapshotter::remove
/// [`mounts`]: Snapshotter::mounts
/// [`stat`]: Snapshotter::stat
/// [`usage`]: Snapshotter::usage
/// [`walk`]: Snapshotter::walk
/// [`layout`]: Snapshotter::layout
pub trait Snapshotter: Send + Sync {
    /// Which driver stores the snapshots.
    fn driver(&self) -> Driver;
    /// Creates an active (writable) snapshot `key` on top of the committed `parent` and returns
    /// the mounts that make it visible.
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>>;
    /// Creates a read-only view `key` of the committed `parent` and returns its mounts.
    fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>>;
    /// The mounts of an existing snapshot (read-only ones for a committed snapshot).
    fn mounts(&self, key: &str) -> Result<Vec<Mount>>;
    /// Turns the active snapshot `key` into the immutable committed snapshot `name`.
    fn commit(&self, name: &str, key: &str) -> Result<()>;
    /// Removes a snapshot that no other snapshot uses as parent.
    fn remove(&self, key: &str) -> Result<()>;
    /// Metadata of one snapshot.
    fn stat(&self, key: &str) -> Result<Info>;
    /// Disk space used by the snapshot itself (not its parents).
    fn usage(&self, key: &str) -> Result<Usage>;
    /// All snapshots, sorted by key.
    fn walk(&self) -> Result<Vec<Info>>;
    /// Where the driver keeps this snapshot's files (used by the layer writer and applier).
    fn layout(&self, key: &str) -> Result<Layout>;
    /// Why this store uses the native driver although it was left to choose
    /// ([`DriverChoice::Auto`]): the overlayfs probe's error when the state directory was
    /// made. `None` with overlayfs, or when native was asked for. Native copies every parent
    /// tree per step: callers report this so a slow build is never silent.
    fn native_fallback(&self) -> Option<&str> {
        None
    }
    /// The directory under which mount points of this store's snapshots belong (see
    /// [`crate::MountedSnapshot::new_in`]): `<state_dir>/mounts`. Mount points there that a dead
    /// process left are unmounted by the next [`open`].
    fn mount_root(&self) -> &Path;
}

/// The storage driver behind a [`Snapshotter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// overlayfs: one upper dir per snapshot, parents as lower dirs.
    Overlay,
    /// A full directory tree per snapshot, copied (reflinked where possible) from its parent.
    Native,
}

impl Driver {
    /// The driver's name: `overlayfs` or `native`.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Overlay => "overlayfs",
            Driver::Native => "native",
        }
    }
}

/// Driver selection for [`open`]. In a user namespace (a rootless build) overlayfs is
/// mounted with `userxattr`; where that fails, `Auto` picks native.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DriverChoice {
    /// The driver the state directory already uses; for a new one overlayfs if a probe mount
    /// succeeds, native otherwise.
    #[default]
    Auto,
    /// overlayfs; fails if it cannot be mounted.
    Overlay,
    /// Directory copies.
    Native,
}

/// Kind of a snapshot (see the [`Snapshotter`] lifecycle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Writable, made by `prepare`.
    Active,
    /// Read-only, made by `view`.
    View,
    /// Immutable, made by `commit`.
    Committed,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Active => "active",
            Kind::View => "view",
            Kind::Committed => "committed",
        }
    }
}

/// Metadata of a snapshot, as returned by [`Snapshotter::stat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The key (or committed name).
    pub name: String,
    /// Active, view or committed.
    pub kind: Kind,
    /// The parent's name, `None` for a snapshot on an empty base.
    pub parent: Option<String>,
    /// Creation time, seconds since the Unix epoch.
    pub created: i64,
}

/// Disk usage of a snapshot's own files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes allocated on disk.
    pub size: u64,
    /// Number of inodes (files, directories, links, whiteouts).
    pub inodes: u64,
}

/// Where a driver keeps a snapshot's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// overlayfs: the snapshot's own changes live in `upper` (with overlay whiteouts); `lowers`
    /// are the parent chain, nearest first. A view has no upper: `upper` is then an empty dir.
    Overlay {
        /// The snapshot's upper directory.
        upper: PathBuf,
        /// The parents' directories, nearest parent first.
        lowers: Vec<PathBuf>,
        /// Whether opaque directories are marked with `user.overlay.opaque` (a state directory
        /// made in a user namespace, mounted with `userxattr`) rather than
        /// `trusted.overlay.opaque`.
        userxattr: bool,
    },
    /// native: `dir` is the complete tree; `parent` the parent's complete tree, if any.
    Native {
        /// The snapshot's tree.
        dir: PathBuf,
        /// The parent's tree.
        parent: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: u64,
    kind: Kind,
    parent: Option<String>,
    created: i64,
    /// `PID-STARTTIME` of the process that made an active or view snapshot; `None` once
    /// committed (and in records written before owners were recorded: treated as orphaned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

impl Record {
    /// Whether this is an active or view snapshot whose process is gone.
    fn is_orphaned(&self) -> bool {
        self.kind != Kind::Committed
            && !self
                .owner
                .as_deref()
                .and_then(Owner::from_tag)
                .is_some_and(Owner::is_alive)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Metadata {
    driver: Driver,
    /// overlay: bookkeeping in `user.overlay.*` xattrs, mounted with `userxattr` (made in a
    /// user namespace; root can use it too). Absent in older and root-made state directories.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    userxattr: bool,
    /// native chosen by `Auto` because overlayfs could not be mounted: the probe's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    native_fallback: Option<String>,
    next_id: u64,
    snapshots: BTreeMap<String, Record>,
}

/// Opens (creating if needed) the snapshot store under `<state_dir>/snapshots/`.
pub fn open(state_dir: &Path, driver: DriverChoice) -> Result<Box<dyn Snapshotter>> {
    Ok(Box::new(Store::open(state_dir, driver)?))
}

/// The one implementation of [`Snapshotter`]; driver-specific parts live in `overlay`/`native`.
struct Store {
    root: PathBuf,
    mount_root: PathBuf,
    driver: Driver,
    /// See [`Metadata::userxattr`].
    userxattr: bool,
    /// See [`Metadata::native_fallback`].
    native_fallback: Option<String>,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    fn open(state_dir: &Path, choice: DriverChoice) -> Result<Self> {
        let root = state_dir.join("snapshots");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .ctx("create", &root)?;
        let root = fs::canonicalize(&root).ctx("resolve", &root)?;
        let meta_path = root.join("metadata.json");
        let mount_root = root
            .parent()
            .map_or_else(|| state_dir.join("mounts"), |p| p.join("mounts"));
        // Mount points first: an orphaned mount may sit on a snapshot removed below.
        owner::unmount_orphans(&mount_root);
        let mut store = Store {
            root: root.clone(),
            mount_root,
            driver: Driver::Native,
            userxattr: kiln_userns::in_user_namespace(),
            native_fallback: None,
        };
        let lock = store.lock()?;
        let existing = store.read_meta()?;
        if let Some(meta) = &existing {
            if meta.driver == Driver::Overlay && !meta.userxattr && store.userxattr {
                return Err(Error::NeedsRealRoot { path: root });
            }
            store.userxattr = meta.userxattr;
            store.native_fallback.clone_from(&meta.native_fallback);
        }
        let driver = match (existing.as_ref().map(|m| m.driver), choice) {
            (Some(d), DriverChoice::Auto) => d,
            (Some(d), DriverChoice::Overlay) if d != Driver::Overlay => {
                return Err(Error::CorruptMetadata {
                    path: meta_path,
                    reason: format!(
                        "state directory uses the {} driver, not overlayfs",
                        d.name()
                    ),
                });
            }
            (Some(d), DriverChoice::Native) if d != Driver::Native => {
                return Err(Error::CorruptMetadata {
                    path: meta_path,
                    reason: format!("state directory uses the {} driver, not native", d.name()),
                });
            }
            (Some(d), _) => d,
            (None, DriverChoice::Native) => Driver::Native,
            (None, DriverChoice::Overlay) => {
                overlay::probe(&root, store.userxattr)?;
                Driver::Overlay
            }
            (None, DriverChoice::Auto) => match overlay::probe(&root, store.userxattr) {
                Ok(()) => Driver::Overlay,
                Err(e) => {
                    store.native_fallback = Some(e.to_string());
                    Driver::Native
                }
            },
        };
        store.driver = driver;
        if driver != Driver::Overlay {
            store.userxattr = false;
        }
        if existing.is_none() {
            store.write_meta(&Metadata {
                driver,
                userxattr: store.userxattr,
                native_fallback: store.native_fallback.clone(),
                next_id: 1,
                snapshots: BTreeMap::new(),
            })?;
        }
        store.clean_stale_tmp();
        if let Some(meta) = existing {
            store.reconcile(meta);
        }
        drop(lock);
        Ok(store)
    }

    /// Removes `tmp-<pid>-<starttime>-*` entries left by dead processes, and `.tmp*` files (the
    /// metadata temp files of older versions: only ever made under the lock, which we hold).
    fn clean_stale_tmp(&self) {
        owner::remove_orphans(&self.root, "tmp-");
        let Ok(rd) = fs::read_dir(&self.root) else {
            return;
        };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp") {
                let _ = fsutil::remove_any(&e.path());
            }
        }
    }

    /// Called under the lock by `open`: drops active and view snapshots whose process is gone,
    /// records whose directory is missing (and, transitively, their children), then directories
    /// no record names. The space is freed before the metadata is rewritten, so this works on a
    /// full disk; a crash in between leaves records without directories, dropped next time.
    fn reconcile(&self, mut meta: Metadata) {
        let mut doomed: Vec<u64> = Vec::new();
        meta.snapshots.retain(|_, r| {
            let keep = !r.is_orphaned();
            if !keep {
                doomed.push(r.id);
            }
            keep
        });
        loop {
            let names: std::collections::HashSet<String> = meta.snapshots.keys().cloned().collect();
            let before = meta.snapshots.len();
            meta.snapshots.retain(|_, r| {
                let keep =
                    self.dir(r.id).is_dir() && r.parent.as_ref().is_none_or(|p| names.contains(p));
                if !keep {
                    doomed.push(r.id);
                }
                keep
            });
            if meta.snapshots.len() == before {
                break;
            }
        }
        for id in &doomed {
            let _ = fsutil::remove_any(&self.dir(*id));
        }
        if !doomed.is_empty() {
            let _ = self.write_meta(&meta);
        }
        self.clean_orphans(&meta);
    }

    /// Removes snapshot directories no record points at (left by a crash between renaming a
    /// directory and writing the metadata). Called under the lock; ids are never reused.
    fn clean_orphans(&self, meta: &Metadata) {
        let ids: std::collections::HashSet<u64> = meta.snapshots.values().map(|r| r.id).collect();
        let Ok(rd) = fs::read_dir(&self.root) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.parse::<u64>().ok())
                && !ids.contains(&id)
            {
                let _ = fsutil::remove_any(&e.path());
            }
        }
    }

    fn lock(&self) -> Result<fs::File> {
        let path = self.root.join("lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx("open lock", &path)?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).ctx("lock", &path)?;
        Ok(f)
    }

    fn read_meta(&self) -> Result<Option<Metadata>> {
        let path = self.root.join("metadata.json");
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::CorruptMetadata {
                    path,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).ctx("read", path),
        }
    }

    fn write_meta(&self, meta: &Metadata) -> Result<()> {
        let path = self.root.join("metadata.json");
        let data = serde_json::to_vec_pretty(meta).map_err(|e| Error::CorruptMetadata {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        fsutil::write_atomic(&path, &data)
    }

    /// Runs `f` on the metadata under the lock; writes it back when `f` returns `true`.
    fn with_meta<T>(&self, f: impl FnOnce(&mut Metadata) -> Result<(T, bool)>) -> Result<T> {
        let _lock = self.lock()?;
        let mut meta = self.read_meta()?.ok_or_else(|| Error::CorruptMetadata {
            path: self.root.join("metadata.json"),
            reason: "missing".into(),
        })?;
        let (out, dirty) = f(&mut meta)?;
        if dirty {
            self.write_meta(&meta)?;
        }
        Ok(out)
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.join(id.to_string())
    }

    fn fs_dir(&self, id: u64) -> PathBuf {
        self.dir(id).join("fs")
    }

    /// Directories of `parent` and its ancestors, nearest first.
    fn chain(&self, meta: &Metadata, parent: Option<&str>) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let mut cur = parent;
        while let Some(name) = cur {
            let rec = meta
                .snapshots
                .get(name)
                .ok_or_else(|| Error::NotFound(name.to_string()))?;
            out.push(self.fs_dir(rec.id));
            cur = rec.parent.as_deref();
        }
        Ok(out)
    }

    fn committed_parent<'a>(
        meta: &'a Metadata,
        parent: Option<&str>,
    ) -> Result<Option<&'a Record>> {
        let Some(p) = parent else { return Ok(None) };
        let rec = meta
            .snapshots
            .get(p)
            .ok_or_else(|| Error::NotFound(p.to_string()))?;
        if rec.kind != Kind::Committed {
            return Err(Error::WrongKind {
                key: p.to_string(),
                actual: rec.kind.name(),
                expected: "committed",
            });
        }
        Ok(Some(rec))
    }

    fn create(&self, key: &str, parent: Option<&str>, kind: Kind) -> Result<Vec<Mount>> {
        // Validate first (cheap), build the directory outside the lock, then publish.
        let parent_dir = self.with_meta(|meta| {
            if meta.snapshots.contains_key(key) {
                return Err(Error::AlreadyExists(key.to_string()));
            }
            let p = Self::committed_parent(meta, parent)?;
            Ok((p.map(|r| self.fs_dir(r.id)), false))
        })?;
        let tmp = self.root.join(format!(
            "tmp-{}-{}",
            Owner::current().tag(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&tmp).ctx("create", &tmp)?;
        let built = (|| -> Result<()> {
            match (self.driver, kind, &parent_dir) {
                (Driver::Native, Kind::Active, Some(p)) => fsutil::copy_tree(p, &tmp.join("fs")),
                (Driver::Overlay, Kind::Active, Some(_)) => {
                    fs::create_dir(tmp.join("fs")).ctx("create", tmp.join("fs"))?;
                    fs::create_dir(tmp.join("work")).ctx("create", tmp.join("work"))
                }
                _ => fs::DirBuilder::new()
                    .mode(0o755)
                    .create(tmp.join("fs"))
                    .ctx("create", tmp.join("fs")),
            }
        })();
        if let Err(e) = built {
            let _ = fsutil::remove_any(&tmp);
            return Err(e);
        }
        let placed = std::cell::Cell::new(None);
        let published = self.with_meta(|meta| {
            if meta.snapshots.contains_key(key) {
                return Err(Error::AlreadyExists(key.to_string()));
            }
            Self::committed_parent(meta, parent)?;
            let id = meta.next_id;
            meta.next_id += 1;
            fs::rename(&tmp, self.dir(id)).ctx("rename", self.dir(id))?;
            placed.set(Some(id));
            let rec = Record {
                id,
                kind,
                parent: parent.map(str::to_string),
                created: now(),
                owner: Some(Owner::current().tag()),
            };
            meta.snapshots.insert(key.to_string(), rec.clone());
            let mounts = self.mounts_of(meta, &rec)?;
            Ok((mounts, true))
        });
        if published.is_err() {
            let _ = fsutil::remove_any(&tmp);
            // Renamed into place but the metadata could not be written (a full disk).
            if let Some(id) = placed.get() {
                let _ = fsutil::remove_any(&self.dir(id));
            }
        }
        published
    }

    fn mounts_of(&self, meta: &Metadata, rec: &Record) -> Result<Vec<Mount>> {
        let own = self.fs_dir(rec.id);
        let parents = self.chain(meta, rec.parent.as_deref())?;
        Ok(match (self.driver, rec.kind) {
            (Driver::Overlay, Kind::Active) => overlay::active_mounts(
                &own,
                &self.dir(rec.id).join("work"),
                &parents,
                self.userxattr,
            ),
            (Driver::Overlay, Kind::View) => overlay::view_mounts(&own, &parents, self.userxattr),
            (Driver::Overlay, Kind::Committed) => {
                let mut all = vec![own.clone()];
                all.extend(parents);
                overlay::view_mounts(&own, &all, self.userxattr)
            }
            (Driver::Native, Kind::Active) => native::mounts(&own, false),
            (Driver::Native, Kind::View) => native::mounts(parents.first().unwrap_or(&own), true),
            (Driver::Native, Kind::Committed) => native::mounts(&own, true),
        })
    }

    fn get<'a>(meta: &'a Metadata, key: &str) -> Result<&'a Record> {
        meta.snapshots
            .get(key)
            .ok_or_else(|| Error::NotFound(key.to_string()))
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn info(name: &str, rec: &Record) -> Info {
    Info {
        name: name.to_string(),
        kind: rec.kind,
        parent: rec.parent.clone(),
        created: rec.created,
    }
}

impl Snapshotter for Store {
    fn driver(&self) -> Driver {
        self.driver
    }

    fn mount_root(&self) -> &Path {
        &self.mount_root
    }

    fn native_fallback(&self) -> Option<&str> {
        self.native_fallback.as_deref()
    }

    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::Active)
    }

    fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::View)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        self.with_meta(|meta| {
            let rec = Self::get(meta, key)?;
            Ok((self.mounts_of(meta, rec)?, false))
        })
    }

    fn commit(&self, name: &str, key: &str) -> Result<()> {
        self.with_meta(|meta| {
            let rec = Self::get(meta, key)?;
            if rec.kind != Kind::Active {
                return Err(Error::WrongKind {
                    key: key.to_string(),
                    actual: rec.kind.name(),
                    expected: "active",
                });
            }
            if meta.snapshots.contains_key(name) {
                return Err(Error::AlreadyExists(name.to_string()));
            }
            let mut rec = meta
                .snapshots
                .remove(key)
                .ok_or_else(|| Error::NotFound(key.to_string()))?;
            rec.kind = Kind::Committed;
            rec.owner = None;
            if self.driver == Driver::Overlay {
                // The work dir is only needed while mounted read-write.
                let _ = fsutil::remove_any(&self.dir(rec.id).join("work"));
            }
            meta.snapshots.insert(name.to_string(), rec);
            Ok(((), true))
        })
    }

    fn remove(&self, key: &str) -> Result<()> {
        // Under the lock the directory is renamed to an owner-stamped `tmp-` name and the record
        // dropped; the files are deleted after, outside it. When the metadata cannot be written
        // (a full disk) the files go first, then the write is retried: removing never needs
        // space. A crash leaves a `tmp-` directory or a record without directory, both cleaned
        // by the next `open`.
        let lock = self.lock()?;
        let mut meta = self.read_meta()?.ok_or_else(|| Error::CorruptMetadata {
            path: self.root.join("metadata.json"),
            reason: "missing".into(),
        })?;
        let id = Self::get(&meta, key)?.id;
        let children = meta
            .snapshots
            .values()
            .filter(|r| r.parent.as_deref() == Some(key))
            .count();
        if children > 0 {
            return Err(Error::HasChildren {
                key: key.to_string(),
                children,
            });
        }
        let doomed = self
            .root
            .join(format!("tmp-{}-rm-{id}", Owner::current().tag()));
        match fs::rename(self.dir(id), &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx("rename", self.dir(id)),
        }
        meta.snapshots.remove(key);
        if let Err(e) = self.write_meta(&meta) {
            fsutil::remove_any(&doomed)?;
            return self.write_meta(&meta).map_err(|_| e);
        }
        drop(lock);
        fsutil::remove_any(&doomed)
    }

    fn stat(&self, key: &str) -> Result<Info> {
        self.with_meta(|meta| Ok((info(key, Self::get(meta, key)?), false)))
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let id = self.with_meta(|meta| Ok((Self::get(meta, key)?.id, false)))?;
        let (size, inodes) = fsutil::disk_usage(&self.dir(id))?;
        Ok(Usage { size, inodes })
    }

    fn walk(&self) -> Result<Vec<Info>> {
        self.with_meta(|meta| {
            Ok((
                meta.snapshots.iter().map(|(k, r)| info(k, r)).collect(),
                false,
            ))
        })
    }

    fn layout(&self, key: &str) -> Result<Layout> {
        self.with_meta(|meta| {
            let rec = Self::get(meta, key)?;
            let parents = self.chain(meta, rec.parent.as_deref())?;
            let own = self.fs_dir(rec.id);
            let layout = match self.driver {
                Driver::Overlay => Layout::Overlay {
                    upper: own,
                    lowers: parents,
                    userxattr: self.userxattr,
                },
                Driver::Native => Layout::Native {
                    dir: if rec.kind == Kind::View {
                        parents.first().cloned().unwrap_or(own)
                    } else {
                        own
                    },
                    parent: if rec.kind == Kind::View {
                        parents.get(1).cloned()
                    } else {
                        parents.first().cloned()
                    },
                },
            };
            Ok((layout, false))
        })
    }
}
