//! `snapshots/metadata.json`: the store's settings (driver, `userxattr`, why native was
//! chosen), read once by [`crate::open`], and the migration of the format before per-snapshot
//! records (one `metadata.json` holding every record, parsed and rewritten by every
//! operation) to the [`crate::index`] layout.
//!
//! Migration runs under the store lock: every record is written to its own file (overwriting
//! those of an interrupted migration), the child markers and the id counter follow, and the
//! settings file replaces the old one last. A kill in the middle leaves the old file in place,
//! so the next open migrates again. The settings carry `"format": 2`, which versions before
//! this one refuse to parse (they would otherwise take the store for a new, empty one).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::api::{Driver, Kind};
use crate::error::{Error, IoContext, Result};
use crate::index::{Index, Record, Shelf};

/// The format this version writes.
const FORMAT: u32 = 2;

/// The store's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Settings {
    /// The on-disk format ([`FORMAT`]).
    pub(crate) format: u32,
    /// The storage driver.
    pub(crate) driver: Driver,
    /// overlay: bookkeeping in `user.overlay.*` xattrs, mounted with `userxattr` (made in a
    /// user namespace; root can use it too). Absent in root-made state directories.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) userxattr: bool,
    /// native chosen by `Auto` because overlayfs could not be mounted: the probe's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) native_fallback: Option<String>,
}

/// A record of the old single-file format.
#[derive(Debug, Deserialize)]
struct OldRecord {
    id: u64,
    kind: Kind,
    parent: Option<String>,
    created: i64,
    #[serde(default)]
    owner: Option<String>,
}

/// Either format of `metadata.json`.
#[derive(Debug, Deserialize)]
struct AnyFormat {
    #[serde(default)]
    format: u32,
    driver: Driver,
    #[serde(default)]
    userxattr: bool,
    #[serde(default)]
    native_fallback: Option<String>,
    #[serde(default)]
    next_id: u64,
    #[serde(default)]
    snapshots: BTreeMap<String, OldRecord>,
}

/// What `metadata.json` held.
pub(crate) enum Found {
    /// Nothing: a new store.
    New,
    /// This version's settings.
    Current(Settings),
    /// The old format: its settings, and the records to migrate with [`migrate`].
    Old(Settings, OldMetadata),
}

/// The records of an old-format store.
pub(crate) struct OldMetadata {
    next_id: u64,
    snapshots: BTreeMap<String, OldRecord>,
}

fn path(root: &Path) -> std::path::PathBuf {
    root.join("metadata.json")
}

/// Reads `<root>/metadata.json`.
pub(crate) fn read(root: &Path) -> Result<Found> {
    let p = path(root);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::New),
        Err(e) => return Err(e).ctx("read", p),
    };
    let any: AnyFormat = serde_json::from_slice(&bytes).map_err(|e| Error::CorruptMetadata {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    if any.format > FORMAT {
        return Err(Error::CorruptMetadata {
            path: p,
            reason: format!(
                "format {} was written by a newer kiln (this one reads {FORMAT})",
                any.format
            ),
        });
    }
    let settings = Settings {
        format: FORMAT,
        driver: any.driver,
        userxattr: any.userxattr,
        native_fallback: any.native_fallback,
    };
    Ok(if any.format == FORMAT {
        Found::Current(settings)
    } else {
        Found::Old(
            settings,
            OldMetadata {
                next_id: any.next_id,
                snapshots: any.snapshots,
            },
        )
    })
}

/// Writes the settings (temp file, fsync, rename: once per store).
pub(crate) fn write(root: &Path, settings: &Settings) -> Result<()> {
    let p = path(root);
    let data = serde_json::to_vec_pretty(settings).map_err(|e| Error::CorruptMetadata {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    crate::fsutil::write_atomic(&p, &data)
}

/// Moves an old-format store to per-snapshot records (see the module doc). Called under the
/// store lock by `open`, which then repairs the store as a whole.
pub(crate) fn migrate(
    index: &Index,
    root: &Path,
    old: OldMetadata,
    settings: &Settings,
) -> Result<()> {
    index.create_dirs()?;
    let mut max_id = 0;
    let half = old.snapshots.len() / 2;
    for (i, (name, r)) in old.snapshots.iter().enumerate() {
        max_id = max_id.max(r.id);
        let parent_id = r
            .parent
            .as_ref()
            .and_then(|p| old.snapshots.get(p))
            .map(|p| p.id);
        let rec = Record {
            id: r.id,
            kind: r.kind,
            parent: r.parent.clone(),
            parent_id,
            created: r.created,
            owner: r.owner.clone(),
        };
        let shelf = if r.kind == Kind::Committed {
            Shelf::Committed
        } else {
            Shelf::Active
        };
        index.put(shelf, name, &rec)?;
        if let Some(p) = parent_id {
            index.add_child(p, r.id)?;
        }
        if i == half {
            crate::index::crash_point("migrate-half");
        }
    }
    crate::index::crash_point("migrate-records");
    index.raise_next_id(old.next_id.max(max_id + 1))?;
    // What old versions left at the top: their temp directories and metadata temp files.
    crate::owner::remove_orphans(root, "tmp-");
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp") {
                let _ = crate::fsutil::remove_any(&e.path());
            }
        }
    }
    write(root, settings)
}
