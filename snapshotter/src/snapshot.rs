//! [`open`], which returns the one [`Snapshotter`] implementation: the store of snapshots under
//! `<state_dir>/snapshots/` driven by overlayfs or by plain directory copies, indexed by one
//! small record file per snapshot ([`crate::index`]), so no operation's cost grows with the
//! number of snapshots the store holds (only [`Snapshotter::walk`] reads them all). Changes
//! hold an exclusive `flock`, so several processes (and threads) can share one state
//! directory; reads need none (records are renamed into place whole). Snapshot directories are
//! built under `tmp/` and renamed into place under the lock.
//!
//! Crash-only: every step of a change leaves a state the next process repairs, without a
//! journal.
//! - prepare/view: id taken from `next-id`, record written to `active/` (with the owner),
//!   child marker written, directory renamed into place. [`open`] removes active and view
//!   records whose owner is gone (and whatever of their directory and marker exists).
//! - commit: one rename `active/<key>` → `committed/<name>`.
//! - remove: directory moved to `tmp/`, marker and record deleted, files deleted outside the
//!   lock. A committed record whose directory is gone counts as absent ([`Snapshotter::stat`]
//!   says not found) and a marker whose child directory is gone as no child.
//! - [`open`] deletes what dead processes left under `tmp/` and unmounts the mount points they
//!   left under `<state_dir>/mounts/`; [`Snapshotter::walk`], which reads every record anyway,
//!   also drops records without directory (and, transitively, their children), unreadable
//!   records, and directories no record names.
//!
//! Removing frees the space before anything is written and needs no space itself (renames and
//! unlinks), so `kiln prune` always makes room on a full disk.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub use crate::api::{Driver, DriverChoice, Info, Kind, Layout, Snapshotter, Usage};
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::index::{Index, Record, Shelf, crash_point};
use crate::mount::Mount;
use crate::owner::{self, Owner};
use crate::settings::{self, Found, Settings};
use crate::{native, overlay};

/// Opens (creating if needed) the snapshot store under `<state_dir>/snapshots/`.
pub fn open(state_dir: &Path, driver: DriverChoice) -> Result<Box<dyn Snapshotter>> {
    Ok(Box::new(Store::open(state_dir, driver)?))
}

/// The one implementation of [`Snapshotter`]; driver-specific parts live in `overlay`/`native`.
struct Store {
    root: PathBuf,
    index: Index,
    mount_root: PathBuf,
    driver: Driver,
    /// See [`Settings::userxattr`].
    userxattr: bool,
    /// See [`Settings::native_fallback`].
    native_fallback: Option<String>,
}

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
            index: Index::new(&root),
            root: root.clone(),
            mount_root,
            driver: Driver::Native,
            userxattr: kiln_userns::in_user_namespace(),
            native_fallback: None,
        };
        let lock = store.lock()?;
        let (existing, old) = match settings::read(&root)? {
            Found::New => (None, None),
            Found::Current(s) => (Some(s), None),
            Found::Old(s, old) => (Some(s), Some(old)),
        };
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
        let settings = Settings {
            format: 2,
            driver,
            userxattr: store.userxattr,
            native_fallback: store.native_fallback.clone(),
        };
        match (existing, old) {
            (None, _) => {
                // What a probe killed before the settings were written left.
                owner::remove_orphans(&root, "tmp-");
                store.index.create_dirs()?;
                settings::write(&root, &settings)?;
            }
            (Some(_), Some(old)) => {
                settings::migrate(&store.index, &root, old, &settings)?;
                owner::remove_orphans(&store.index.tmp_root(), "");
                store.sweep()?;
            }
            (Some(_), None) => store.index.create_dirs()?,
        }
        owner::remove_orphans(&store.index.tmp_root(), "");
        store.reap_orphaned_active()?;
        drop(lock);
        Ok(store)
    }

    /// Removes the active and view snapshots whose process is gone (called under the lock).
    fn reap_orphaned_active(&self) -> Result<()> {
        for (name, rec) in self.index.list(Shelf::Active)? {
            match rec {
                Ok(rec) if !rec.is_orphaned() => {}
                Ok(rec) => self.drop_snapshot(Shelf::Active, &name, &rec)?,
                // An unreadable active record is no live build's: its directory (if any) is
                // found by the next walk.
                Err(_) => self.index.delete(Shelf::Active, &name)?,
            }
        }
        Ok(())
    }

    /// Under the lock: moves the snapshot's directory out of the way, drops its child marker,
    /// its own (stale) markers and its record, then deletes the files.
    fn drop_snapshot(&self, shelf: Shelf, name: &str, rec: &Record) -> Result<()> {
        let doomed = self.unlink_snapshot(shelf, name, rec)?;
        fsutil::remove_any(&doomed)
    }

    /// The part of [`Store::drop_snapshot`] that must hold the lock; returns the moved
    /// directory to delete.
    fn unlink_snapshot(&self, shelf: Shelf, name: &str, rec: &Record) -> Result<PathBuf> {
        let doomed = self.index.tmp_path(&format!("rm{}-", rec.id));
        match fs::rename(self.index.dir(rec.id), &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx("rename", self.index.dir(rec.id)),
        }
        crash_point("remove-dir");
        if let Some(p) = rec.parent_id {
            self.index.remove_child(p, rec.id);
            crash_point("remove-marker");
        }
        self.index.drop_children(rec.id);
        self.index.delete(shelf, name)?;
        crash_point("remove-record");
        Ok(doomed)
    }

    /// The whole-store repair [`Snapshotter::walk`] does under the lock (see the module doc);
    /// returns the valid snapshots.
    fn sweep(&self) -> Result<BTreeMap<String, (Kind, Record)>> {
        self.reap_orphaned_active()?;
        let mut all: BTreeMap<String, (Kind, Shelf, Record)> = BTreeMap::new();
        for shelf in [Shelf::Committed, Shelf::Active] {
            for (name, rec) in self.index.list(shelf)? {
                match rec {
                    Ok(rec) => {
                        let kind = if shelf == Shelf::Committed {
                            Kind::Committed
                        } else {
                            rec.kind
                        };
                        all.insert(name, (kind, shelf, rec));
                    }
                    Err(_) => self.index.delete(shelf, &name)?,
                }
            }
        }
        // Records without directory, then (transitively) those whose parent is gone.
        loop {
            let names: HashSet<String> = all.keys().cloned().collect();
            let doomed: Vec<String> = all
                .iter()
                .filter(|(_, (_, _, r))| {
                    !self.index.dir(r.id).is_dir()
                        || r.parent.as_ref().is_some_and(|p| {
                            !names.contains(p)
                                || all.get(p).is_some_and(|(k, _, _)| *k != Kind::Committed)
                        })
                })
                .map(|(n, _)| n.clone())
                .collect();
            if doomed.is_empty() {
                break;
            }
            for n in doomed {
                if let Some((_, shelf, rec)) = all.remove(&n) {
                    self.drop_snapshot(shelf, &n, &rec)?;
                }
            }
        }
        // Directories no record names (ids are never reused).
        let ids: HashSet<u64> = all.values().map(|(_, _, r)| r.id).collect();
        for e in fs::read_dir(&self.root).ctx("read", &self.root)?.flatten() {
            let name = e.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.parse::<u64>().ok())
                && !ids.contains(&id)
            {
                let doomed = self.index.tmp_path(&format!("rm{id}-"));
                if fs::rename(e.path(), &doomed).is_ok() {
                    let _ = fsutil::remove_any(&doomed);
                }
                self.index.drop_children(id);
            }
        }
        Ok(all.into_iter().map(|(n, (k, _, r))| (n, (k, r))).collect())
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

    fn fs_dir(&self, id: u64) -> PathBuf {
        self.index.dir(id).join("fs")
    }

    /// The record of `key` when its directory exists.
    fn get(&self, key: &str) -> Result<(Kind, Record)> {
        match self.index.get(key)? {
            Some((kind, rec)) if self.index.dir(rec.id).is_dir() => Ok((kind, rec)),
            _ => Err(Error::NotFound(key.to_string())),
        }
    }

    /// Directories of `parent` and its ancestors, nearest first.
    fn chain(&self, parent: Option<&str>) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let mut cur = parent.map(str::to_string);
        while let Some(name) = cur {
            let (_, rec) = self
                .index
                .get(&name)?
                .ok_or_else(|| Error::NotFound(name.clone()))?;
            out.push(self.fs_dir(rec.id));
            cur = rec.parent;
        }
        Ok(out)
    }

    /// The committed snapshot `parent` (its record), `None` for no parent.
    fn committed_parent(&self, parent: Option<&str>) -> Result<Option<Record>> {
        let Some(p) = parent else { return Ok(None) };
        let (kind, rec) = self.get(p)?;
        if kind != Kind::Committed {
            return Err(Error::WrongKind {
                key: p.to_string(),
                actual: kind.name(),
                expected: "committed",
            });
        }
        Ok(Some(rec))
    }

    fn create(&self, key: &str, parent: Option<&str>, kind: Kind) -> Result<Vec<Mount>> {
        // Validate first (cheap), build the directory outside the lock, then publish.
        crate::index::file_name(key)?;
        if self.index.exists(key)? {
            return Err(Error::AlreadyExists(key.to_string()));
        }
        let parent_dir = self.committed_parent(parent)?.map(|r| self.fs_dir(r.id));
        let tmp = self.index.tmp_path("new");
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
        let lock = self.lock()?;
        let published = (|| -> Result<Record> {
            let parent_rec = self.committed_parent(parent)?;
            let id = self.index.free_id()?;
            let rec = Record {
                id,
                kind,
                parent: parent.map(str::to_string),
                parent_id: parent_rec.map(|r| r.id),
                created: now(),
                owner: Some(Owner::current().tag()),
            };
            // Record, marker, directory: a crash after any of them leaves an active record
            // of a dead process, which the next open removes with what exists of the rest.
            self.index.create(Shelf::Active, key, &rec)?;
            crash_point("create-record");
            let placed = (|| -> Result<()> {
                if let Some(p) = rec.parent_id {
                    self.index.add_child(p, id)?;
                    crash_point("create-marker");
                }
                crate::index::rename_noreplace(&tmp, &self.index.dir(id))?;
                crash_point("create-dir");
                Ok(())
            })();
            if let Err(e) = placed {
                if let Some(p) = rec.parent_id {
                    self.index.remove_child(p, id);
                }
                let _ = self.index.delete(Shelf::Active, key);
                return Err(e);
            }
            Ok(rec)
        })();
        drop(lock);
        match published {
            Ok(rec) => self.mounts_of(kind, &rec),
            Err(e) => {
                let _ = fsutil::remove_any(&tmp);
                Err(e)
            }
        }
    }

    fn mounts_of(&self, kind: Kind, rec: &Record) -> Result<Vec<Mount>> {
        let own = self.fs_dir(rec.id);
        let parents = self.chain(rec.parent.as_deref())?;
        Ok(match (self.driver, kind) {
            (Driver::Overlay, Kind::Active) => overlay::active_mounts(
                &own,
                &self.index.dir(rec.id).join("work"),
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
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn info(name: &str, kind: Kind, rec: &Record) -> Info {
    Info {
        name: name.to_string(),
        kind,
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
        let (kind, rec) = self.get(key)?;
        self.mounts_of(kind, &rec)
    }

    fn commit(&self, name: &str, key: &str) -> Result<()> {
        crate::index::file_name(name)?;
        let _lock = self.lock()?;
        let (kind, rec) = self.get(key)?;
        if kind != Kind::Active {
            return Err(Error::WrongKind {
                key: key.to_string(),
                actual: kind.name(),
                expected: "active",
            });
        }
        if self.index.exists(name)? {
            return Err(Error::AlreadyExists(name.to_string()));
        }
        self.index.commit(key, name)?;
        crash_point("commit");
        if self.driver == Driver::Overlay {
            // The work dir is only needed while mounted read-write.
            let _ = fsutil::remove_any(&self.index.dir(rec.id).join("work"));
        }
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<()> {
        // Under the lock the directory is moved to an owner-stamped `tmp/` name and the marker
        // and record dropped; the files are deleted after, outside it. Nothing here needs disk
        // space. A crash leaves a `tmp/` directory (removed by the next open) or a record
        // without directory (absent to every reader, dropped by the next walk).
        let lock = self.lock()?;
        let Some((kind, rec)) = self.index.get(key)? else {
            return Err(Error::NotFound(key.to_string()));
        };
        if kind == Kind::Committed {
            let children = self.index.live_children(rec.id)?;
            if children > 0 {
                return Err(Error::HasChildren {
                    key: key.to_string(),
                    children,
                });
            }
        }
        let shelf = if kind == Kind::Committed {
            Shelf::Committed
        } else {
            Shelf::Active
        };
        let doomed = self.unlink_snapshot(shelf, key, &rec)?;
        drop(lock);
        fsutil::remove_any(&doomed)
    }

    fn stat(&self, key: &str) -> Result<Info> {
        let (kind, rec) = self.get(key)?;
        Ok(info(key, kind, &rec))
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let (_, rec) = self.get(key)?;
        let (size, inodes) = fsutil::disk_usage(&self.index.dir(rec.id))?;
        Ok(Usage { size, inodes })
    }

    fn walk(&self) -> Result<Vec<Info>> {
        let _lock = self.lock()?;
        Ok(self
            .sweep()?
            .iter()
            .map(|(n, (k, r))| info(n, *k, r))
            .collect())
    }

    fn layout(&self, key: &str) -> Result<Layout> {
        let (kind, rec) = self.get(key)?;
        let parents = self.chain(rec.parent.as_deref())?;
        let own = self.fs_dir(rec.id);
        Ok(match self.driver {
            Driver::Overlay => Layout::Overlay {
                upper: own,
                lowers: parents,
                userxattr: self.userxattr,
            },
            Driver::Native => Layout::Native {
                dir: if kind == Kind::View {
                    parents.first().cloned().unwrap_or(own)
                } else {
                    own
                },
                parent: if kind == Kind::View {
                    parents.get(1).cloned()
                } else {
                    parents.first().cloned()
                },
            },
        })
    }
}
