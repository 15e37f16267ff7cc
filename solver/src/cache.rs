//! The cache record store under `<state_dir>/cache/`: cache key → the committed snapshot that
//! holds the step's result and the layer (blob descriptor) made from it. Records are written
//! atomically (temp file, fsync, rename), so a crash leaves either the old record or the new one,
//! and a record is only written after everything it names exists.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, io_err};
use crate::key::CacheKey;

/// A layer blob in the content store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Compressed blob digest.
    pub digest: String,
    /// Uncompressed tar digest (the config's diff_id).
    pub diff_id: String,
    /// Blob size in bytes.
    pub size: u64,
    /// Blob media type.
    pub media_type: String,
}

/// What a cached step produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// Name of the committed snapshot holding the step's filesystem.
    pub snapshot: String,
    /// The layer made from the step's diff; `None` when the step changed nothing.
    pub layer: Option<LayerRecord>,
    /// When the step really ran (RFC 3339), used for its history entry on every later hit so
    /// a cached rebuild is the same image. `None` in records of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

/// Writes `bytes` to `path` atomically. The temp file is named `.tmp-<pid>-<starttime>-…`, so
/// one a killed process leaves is removed by the next [`CacheStore::open`].
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_via_temp(path, &mut |w| w.write_all(bytes), true)
}

/// [`write_atomic`] of what `body` writes (buffered), for files too big to build in memory.
pub(crate) fn write_atomic_with(
    path: &Path,
    body: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    write_via_temp(path, body, true)
}

/// [`write_atomic`] without the fsync, for files whose loss in a crash costs only detail (why a
/// step missed the cache): the rename still never leaves a half-written file.
pub(crate) fn replace_unsynced(path: &Path, bytes: &[u8]) -> Result<()> {
    write_via_temp(path, &mut |w| w.write_all(bytes), false)
}

/// [`replace_unsynced`] of what `body` writes (buffered).
pub(crate) fn replace_unsynced_with(
    path: &Path,
    body: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    write_via_temp(path, body, false)
}

fn write_via_temp(
    path: &Path,
    body: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
    sync: bool,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(
            "{TMP_PREFIX}{}-",
            kiln_snapshotter::Owner::current().tag()
        ))
        .tempfile_in(dir)
        .map_err(io_err("create temp file in", dir))?;
    let tmp_path = tmp.path().to_path_buf();
    {
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, tmp.as_file_mut());
        body(&mut w)
            .and_then(|()| w.flush())
            .map_err(io_err("write", tmp_path))?;
    }
    if sync {
        tmp.as_file()
            .sync_all()
            .map_err(io_err("fsync", tmp.path().to_path_buf()))?;
    }
    tmp.persist(path).map_err(|e| Error::Io {
        op: "rename",
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// Prefix of the temp files [`write_atomic`] makes (then the owner's tag).
pub(crate) const TMP_PREFIX: &str = ".tmp-";

/// The record store.
#[derive(Debug, Clone)]
pub struct CacheStore {
    dir: PathBuf,
}

impl CacheStore {
    /// Opens (creating) `<state_dir>/cache`, removing the temp files of killed processes.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let dir = state_dir.join("cache");
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        kiln_snapshotter::remove_orphans(&dir, TMP_PREFIX);
        kiln_snapshotter::remove_orphans(&dir.join("digests"), TMP_PREFIX);
        Ok(Self { dir })
    }

    fn path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{}.json", key.hex()))
    }

    /// Looks a key up; a missing record is `None`, a corrupt one is ignored (treated as missing).
    pub fn get(&self, key: &CacheKey) -> Option<CacheRecord> {
        let bytes = fs::read(self.path(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Stores a record atomically.
    pub fn put(&self, key: &CacheKey, rec: &CacheRecord) -> Result<()> {
        let p = self.path(key);
        let bytes = serde_json::to_vec(rec).map_err(|source| Error::CacheEncode {
            path: p.clone(),
            source,
        })?;
        write_atomic(&p, &bytes)
    }

    /// Every stored record (for prune).
    pub fn all(&self) -> Vec<(CacheKey, CacheRecord)> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(hex) = name.strip_suffix(".json")
                && let Ok(b) = fs::read(e.path())
                && let Ok(r) = serde_json::from_slice(&b)
            {
                out.push((CacheKey(format!("sha256:{hex}")), r));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Removes one record.
    pub fn remove(&self, key: &CacheKey) -> Result<()> {
        let p = self.path(key);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io {
                op: "remove",
                path: p,
                source: e,
            }),
        }
    }
}

/// The right to run the step of one cache key, held across threads and kiln processes sharing
/// the state directory: an exclusive `flock(2)` on `cache/locks/<hex>`, which the kernel
/// releases when the holder ends or dies, so a killed build never leaves a step claimed.
#[derive(Debug)]
pub(crate) struct StepClaim {
    _file: fs::File,
}

/// How often a waiting build looks whether the claim was released (or the build cancelled).
const CLAIM_POLL: Duration = Duration::from_millis(20);

impl CacheStore {
    /// Claims the step of `key`, waiting while another build (thread or process) holds it.
    /// `on_wait` is called once if the claim is busy (to show that the build waits). The wait
    /// ends when the holder releases it (done, failed or killed) or, with [`Error::Cancelled`],
    /// when `cancelled` is set. The caller looks the key up again once it holds the claim.
    pub(crate) fn claim(
        &self,
        key: &CacheKey,
        cancelled: &AtomicBool,
        on_wait: &mut dyn FnMut(),
    ) -> Result<StepClaim> {
        let dir = self.dir.join("locks");
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let path = dir.join(key.hex());
        let file = fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open lock", &path))?;
        let mut waited = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(StepClaim { _file: file }),
                Err(fs::TryLockError::WouldBlock) => {}
                Err(fs::TryLockError::Error(e)) => {
                    return Err(Error::Io {
                        op: "lock",
                        path,
                        source: e,
                    });
                }
            }
            if cancelled.load(Ordering::SeqCst) {
                return Err(Error::Cancelled);
            }
            if !waited {
                waited = true;
                on_wait();
            }
            std::thread::sleep(CLAIM_POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_waits_for_its_holder_and_ends_on_cancel() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = CacheStore::open(d.path()).expect("open");
        let k = CacheKey("sha256:cd".into());
        let no = AtomicBool::new(false);
        let mut waits = 0;
        let held = s.claim(&k, &no, &mut || waits += 1).expect("claim");
        assert_eq!(waits, 0);
        // Another open file description (as another process has) waits until it is released.
        let released = std::thread::scope(|sc| {
            let t = sc.spawn(|| {
                let mut w = 0;
                let c = s.claim(&k, &AtomicBool::new(false), &mut || w += 1);
                (c.is_ok(), w)
            });
            std::thread::sleep(Duration::from_millis(150));
            assert!(!t.is_finished(), "the second claim did not wait");
            drop(held);
            t.join().expect("join")
        });
        assert_eq!(released, (true, 1));
        // A cancelled waiter stops waiting.
        let _held = s.claim(&k, &no, &mut || {}).expect("claim");
        let yes = AtomicBool::new(true);
        assert!(matches!(
            s.claim(&k, &yes, &mut || {}),
            Err(Error::Cancelled)
        ));
    }

    #[test]
    fn roundtrip_and_corrupt_records() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = CacheStore::open(d.path()).expect("open");
        let k = CacheKey("sha256:ab".into());
        assert!(s.get(&k).is_none());
        let r = CacheRecord {
            snapshot: "snap".into(),
            layer: None,
            created: Some("2026-01-01T00:00:00Z".into()),
        };
        s.put(&k, &r).expect("put");
        assert_eq!(s.get(&k), Some(r));
        // A record of an older version (no `created`) still reads.
        fs::write(
            d.path().join("cache/ab.json"),
            br#"{"snapshot":"snap","layer":null}"#,
        )
        .expect("write");
        assert_eq!(s.get(&k).map(|r| r.created), Some(None));
        fs::write(d.path().join("cache/ab.json"), b"{trunc").expect("write");
        assert!(s.get(&k).is_none());
        assert_eq!(s.all().len(), 0);
    }

    #[test]
    fn open_removes_temp_files_of_dead_processes_only() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = CacheStore::open(d.path()).expect("open");
        s.put_digest("snap", &["a".into()], "sha256:00")
            .expect("put");
        let dead = d.path().join("cache/.tmp-999999999-1-abc");
        let dead_digest = d.path().join("cache/digests/.tmp-999999999-1-abc");
        let mine = d.path().join(format!(
            "cache/.tmp-{}-abc",
            kiln_snapshotter::Owner::current().tag()
        ));
        for p in [&dead, &dead_digest, &mine] {
            fs::write(p, b"{").expect("write");
        }
        CacheStore::open(d.path()).expect("open");
        assert!(!dead.exists() && !dead_digest.exists());
        assert!(mine.exists());
    }
}

/// What [`crate::Solver::prune`] should remove.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// Remove every cache record (and every snapshot no longer needed), not only dangling ones.
    pub all: bool,
    /// Remove the oldest records until the snapshots use at most this many bytes.
    pub keep_storage: Option<u64>,
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Cache records removed.
    pub records_removed: usize,
    /// Snapshots removed.
    pub snapshots_removed: usize,
    /// Disk space of the removed snapshots, in bytes.
    pub bytes_freed: u64,
}

impl CacheStore {
    /// Removes every step's remembered inputs (`cache/explain`, see `crate::explain`).
    pub(crate) fn remove_explanations(&self) {
        let _ = fs::remove_dir_all(self.dir.join("explain"));
    }

    /// Modification time of a record (seconds), for oldest-first pruning.
    pub(crate) fn mtime(&self, key: &CacheKey) -> i64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(self.path(key)).map_or(0, |m| m.mtime())
    }
}

impl CacheStore {
    fn digest_path(&self, snapshot: &str, sources: &[String]) -> PathBuf {
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        sha2::Digest::update(&mut h, snapshot.as_bytes());
        for s in sources {
            sha2::Digest::update(&mut h, b"\0");
            sha2::Digest::update(&mut h, s.as_bytes());
        }
        self.dir
            .join("digests")
            .join(hex::encode(sha2::Digest::finalize(h)))
    }

    /// The remembered digest of `sources` selected in the committed (immutable) `snapshot`.
    pub(crate) fn get_digest(&self, snapshot: &str, sources: &[String]) -> Option<String> {
        let s = fs::read_to_string(self.digest_path(snapshot, sources)).ok()?;
        s.starts_with("sha256:").then_some(s)
    }

    /// Remembers the digest of `sources` in `snapshot`.
    pub(crate) fn put_digest(
        &self,
        snapshot: &str,
        sources: &[String],
        digest: &str,
    ) -> Result<()> {
        write_atomic(&self.digest_path(snapshot, sources), digest.as_bytes())
    }
}
