//! [`open`], which returns the one [`Snapshotter`] implementation: the store of
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

pub use crate::api::{Driver, DriverChoice, Info, Kind, Layout, Snapshotter, Usage};
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::mount::Mount;
use crate::owner::{self, Owner};
use crate::{native, overlay};

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
