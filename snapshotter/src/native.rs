//! The native driver's mounts: every snapshot is a complete directory tree (copied from its
//! parent at `prepare`, with reflinks where the filesystem shares extents), exposed through a
//! bind mount.

use std::path::Path;

use crate::mount::Mount;

/// A bind mount of `dir`, read-only when asked.
pub(crate) fn mounts(dir: &Path, read_only: bool) -> Vec<Mount> {
    vec![Mount {
        fstype: "bind".into(),
        source: dir.to_path_buf(),
        options: vec!["rbind".into(), if read_only { "ro" } else { "rw" }.into()],
    }]
}
