//! Mounted views of committed snapshots and temporary directories named after this process,
//! so what a killed build leaves is recognised and removed by the next open.

use super::*;

pub(super) fn unique_key(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Mounted read-only view of a committed snapshot (or an empty directory), removed on drop.
/// Both live under the snapshotter's mount root, named after this process, so what a killed
/// build leaves there is unmounted and removed by the next process that opens the state.
pub(super) struct View<'a> {
    pub(super) snapshotter: &'a dyn Snapshotter,
    pub(super) key: Option<String>,
    pub(super) mounted: Option<snap::MountedSnapshot>,
    pub(super) empty: Option<tempfile::TempDir>,
}

impl<'a> View<'a> {
    pub(super) fn open(snapshotter: &'a dyn Snapshotter, parent: Option<&str>) -> Result<Self> {
        match parent {
            None => Ok(Self {
                snapshotter,
                key: None,
                mounted: None,
                empty: Some(owned_temp_dir(snapshotter.mount_root())?),
            }),
            Some(p) => {
                let key = unique_key("view");
                let mounts = snapshotter
                    .view(&key, Some(p))
                    .map_err(snap_err(format!("view {p}")))?;
                let mut v = Self {
                    snapshotter,
                    key: Some(key),
                    mounted: None,
                    empty: None,
                };
                v.mounted = Some(
                    snap::MountedSnapshot::new_in(&mounts, snapshotter.mount_root())
                        .map_err(snap_err(format!("mount view of {p}")))?,
                );
                Ok(v)
            }
        }
    }

    pub(super) fn path(&self) -> &Path {
        if let Some(m) = &self.mounted {
            return m.path();
        }
        self.empty
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }
}

impl Drop for View<'_> {
    fn drop(&mut self) {
        if let Some(m) = self.mounted.take() {
            let _ = m.unmount();
        }
        if let Some(k) = &self.key {
            let _ = self.snapshotter.remove(k);
        }
    }
}

/// A new directory `<dir>/<pid>-<starttime>-<random>` (removed on drop); one a killed process
/// leaves behind is recognised as orphaned by its name and removed when the state is opened.
pub(crate) fn owned_temp_dir(dir: &Path) -> Result<tempfile::TempDir> {
    std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    tempfile::Builder::new()
        .prefix(&format!("{}-", snap::Owner::current().tag()))
        .tempdir_in(dir)
        .map_err(io_err("create temp dir in", dir))
}
