//! An image's filesystem outside a build, for `kiln run`: the image's layers unpacked into the
//! same committed snapshot chain a `FROM` uses (`layer-<chain id>`, shared with builds, so a
//! base already unpacked costs nothing; an image this state directory built is its steps'
//! snapshots, not unpacked at all), a throwaway writable snapshot on top, and a process run
//! over it through the same executor (and so the same isolation) as `RUN` steps.
//!
//! ```no_run
//! use kiln_solver::{Solver, SolverConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let solver = Solver::new(SolverConfig::new("/var/lib/kiln"))?;
//! let r = kiln_image::Reference::parse("busybox")?;
//! let image =
//!     kiln_image::Image::resolve(solver.content_store(), &r, &kiln_image::Platform::host())?;
//! let rootfs = solver.container_rootfs(&image)?; // removed when dropped
//! let process = kiln_executor::ProcessSpec {
//!     args: vec!["echo".into(), "hi".into()],
//!     cwd: "/".into(),
//!     ..Default::default()
//! };
//! let status = rootfs.run(&process, &mut |_, line| print!("{}", String::from_utf8_lossy(line)),
//!     &kiln_solver::CancelHandle::new())?;
//! std::process::exit(status.code());
//! # }
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};

use kiln_executor as ex;
use kiln_image::{ContentStore, Image};
use kiln_snapshotter::{self as snap, Snapshotter};

use crate::error::{Error, Result};
use crate::scheduler::CancelHandle;
use crate::solve::chain_ids;
use crate::solve::{Solver, snap_err};

/// A snapshot key unique to this process (the snapshotter records the owner, so one a killed
/// process leaves is removed by the next kiln process that opens the state).
fn unique_key(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        snap::Owner::current().tag(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Unpacks `img`'s layers into committed snapshots `layer-<chain id>` (each parent of the
/// next; layers already unpacked, by a build or an earlier run, are reused) and returns the
/// top one (`None` for an image without layers) and whether any layer had to be unpacked.
/// Each layer's diff_id is checked against the config. `what` names the image in errors.
///
/// A layer a build deferred to its step's snapshot is not unpacked at all when that snapshot
/// sits on the chain reached so far: the snapshot is that layer applied there (the layer is
/// its diff, written without clamped mtimes), so `FROM` an image this state directory built
/// costs no copy.
pub(crate) fn unpack_image(
    sn: &dyn Snapshotter,
    store: &ContentStore,
    img: &Image,
    what: &str,
) -> Result<(Option<String>, bool)> {
    let diff_ids: Vec<String> = img
        .config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| d.to_string())
        .collect();
    if diff_ids.len() != img.layers.len() {
        return Err(Error::Image {
            what: what.to_owned(),
            message: "layer count does not match the config's diff_ids".into(),
        });
    }
    let chains = chain_ids(&diff_ids);
    let mut parent: Option<String> = None;
    let mut unpacked = false;
    for (k, chain) in chains.iter().enumerate() {
        if let Some(step) =
            step_snapshot_of(sn, store, &img.layers[k], &diff_ids[k], parent.as_deref())
        {
            parent = Some(step);
            continue;
        }
        // An empty layer a build deferred changes nothing: the chain stays where it is (its
        // record may name another build's empty step by now, every empty layer being one).
        if diff_ids[k] == crate::solve::EMPTY_TAR_DIFF_ID
            && store.deferred_blob(&img.layers[k].digest).is_some()
        {
            continue;
        }
        let name = format!("layer-{}", chain.trim_start_matches("sha256:"));
        if sn.stat(&name).is_err() {
            unpacked = true;
            let active = unique_key("unpack");
            sn.prepare(&active, parent.as_deref())
                .map_err(snap_err(format!("prepare {active}")))?;
            let r = (|| -> Result<()> {
                let digest = &img.layers[k].digest;
                // A layer a build deferred is made from its snapshot as it is applied (not
                // stored first), checked against the diff_id below as any layer is.
                let blob = store
                    .open_blob_unstored(digest)
                    .map_err(crate::solve::img_err(digest.to_string()))?;
                let applied =
                    snap::apply_layer_to_snapshot(sn, &active, std::io::BufReader::new(blob))
                        .map_err(snap_err(format!("apply layer {digest}")))?;
                if applied.diff_id != diff_ids[k] {
                    return Err(Error::Image {
                        what: digest.to_string(),
                        message: format!(
                            "diff_id {} does not match the config's {}",
                            applied.diff_id, diff_ids[k]
                        ),
                    });
                }
                Ok(())
            })();
            if let Err(e) = r {
                let _ = sn.remove(&active);
                return Err(e);
            }
            if let Err(e) = sn.commit(&name, &active) {
                // Another process committed the same layer meanwhile.
                let _ = sn.remove(&active);
                if sn.stat(&name).is_err() {
                    return Err(snap_err(format!("commit {name}"))(e));
                }
            }
        }
        parent = Some(name);
    }
    Ok((parent, unpacked))
}

/// The committed step snapshot a build deferred `layer` to, when its layer is the snapshot's
/// diff as is (no clamped mtimes) and it sits on `parent` (directly, or over snapshots that
/// changed nothing): then that snapshot is the filesystem of the image's layers up to this
/// one, as the build that made it saw it. Overlay only: a native snapshot is a full copy of
/// its parent, whose hard links to earlier layers' files its layer writes as plain files.
///
/// The snapshot is trusted as a cache hit is, not hashed against the diff_id again; what
/// the layer cannot hold (sub-second mtimes, sockets) is as the build left it.
fn step_snapshot_of(
    sn: &dyn Snapshotter,
    store: &ContentStore,
    layer: &kiln_image::Descriptor,
    diff_id: &str,
    parent: Option<&str>,
) -> Option<String> {
    // Deferred layers are uncompressed: their digest is their diff_id.
    if sn.driver() != snap::Driver::Overlay || layer.digest.as_str() != diff_id {
        return None;
    }
    let record = store.deferred_blob(&layer.digest)?;
    let (name, None) = crate::deferred::parse_source(&record.source)? else {
        return None;
    };
    let info = sn.stat(name).ok()?;
    if info.kind != snap::Kind::Committed {
        return None;
    }
    // Up from the snapshot's parent through snapshots with nothing in their upper directory.
    let mut at = info.parent;
    for _ in 0..MAX_EMPTY_STEPS {
        if at.as_deref() == parent {
            return Some(name.to_owned());
        }
        let below = at?;
        let Ok(snap::Layout::Overlay { upper, .. }) = sn.layout(&below) else {
            return None;
        };
        if std::fs::read_dir(&upper).ok()?.next().is_some() {
            return None;
        }
        at = sn.stat(&below).ok()?.parent;
    }
    None
}

/// How many snapshots that changed nothing [`step_snapshot_of`] looks through.
const MAX_EMPTY_STEPS: usize = 64;

/// A writable snapshot (`active-run-…`) over an image's filesystem, for one container. It is
/// removed when dropped, with everything the container wrote; nothing of it is mounted in the
/// caller's namespace (the executor mounts it inside the container's own mount namespace).
pub struct ContainerRootfs<'a> {
    solver: &'a Solver,
    key: String,
    mounts: Vec<snap::Mount>,
}

impl std::fmt::Debug for ContainerRootfs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerRootfs")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Solver {
    /// Unpacks `image` (from this solver's content store) into the committed snapshot chain
    /// that a build's `FROM` and `kiln run` mount (`layer-<chain id>`), as `kiln pull` and
    /// `kiln load` do once the blobs are in: a later `FROM` of the image only prepares a
    /// snapshot over it. Layers already unpacked are kept; returns whether any layer had to
    /// be unpacked.
    pub fn unpack(&self, image: &Image) -> Result<bool> {
        let what = image.config_digest.to_string();
        let (_, unpacked) = unpack_image(
            self.snapshotter.as_ref(),
            self.content_store(),
            image,
            &what,
        )?;
        Ok(unpacked)
    }

    /// Unpacks `image` (from this solver's content store) into its committed snapshot chain,
    /// as a build's `FROM` does, and prepares a throwaway writable snapshot on top.
    pub fn container_rootfs(&self, image: &Image) -> Result<ContainerRootfs<'_>> {
        let sn = self.snapshotter.as_ref();
        let what = image.config_digest.to_string();
        let (top, _) = unpack_image(sn, self.content_store(), image, &what)?;
        let key = unique_key("active-run");
        let mounts = sn
            .prepare(&key, top.as_deref())
            .map_err(snap_err(format!("prepare {key}")))?;
        Ok(ContainerRootfs {
            solver: self,
            key,
            mounts,
        })
    }
}

impl ContainerRootfs<'_> {
    /// The writable snapshot's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Runs `process` in a container over this filesystem with kiln's executor (the isolation
    /// of `RUN` steps: namespaces, Docker's capabilities and seccomp profile), passing each
    /// output line to `on_output` as it arrives. [`CancelHandle::cancel`] kills the container
    /// (every process in it) and `run` returns [`Error::Cancelled`].
    pub fn run(
        &self,
        process: &ex::ProcessSpec,
        on_output: &mut dyn FnMut(ex::Stream, &[u8]),
        cancel: &CancelHandle,
    ) -> Result<ex::ExitStatus> {
        self.run_with_mounts(process, &[], on_output, cancel)
    }

    /// [`ContainerRootfs::run`] with `mounts` (binds, tmpfs) over the root filesystem.
    pub fn run_with_mounts(
        &self,
        process: &ex::ProcessSpec,
        mounts: &[ex::MountSpec],
        on_output: &mut dyn FnMut(ex::Stream, &[u8]),
        cancel: &CancelHandle,
    ) -> Result<ex::ExitStatus> {
        let executor = self.solver.executor()?;
        let token = ex::CancelToken::new();
        let for_hook = token.clone();
        let _hook = cancel.on_cancel(move || for_hook.cancel());
        let rootfs = ex::RootFs::Mounts(
            self.mounts
                .iter()
                .map(|m| ex::RootMount {
                    fstype: m.fstype.clone(),
                    source: m.source.to_string_lossy().to_string(),
                    options: m.options.clone(),
                })
                .collect(),
        );
        match executor.run(process, &rootfs, mounts, on_output, &token) {
            Ok(s) => Ok(s),
            Err(ex::Error::Cancelled) => Err(Error::Cancelled),
            Err(source) => Err(Error::Executor {
                line: 0,
                command: process.args.join(" "),
                source,
            }),
        }
    }
}

impl ContainerRootfs<'_> {
    /// [`ContainerRootfs::run_with_mounts`] with `kiln run`'s stdin, pty and published ports
    /// (`io`); `control` forwards signals to PID 1, kills or cancels the container.
    pub fn run_interactive(
        &self,
        process: &ex::ProcessSpec,
        mounts: &[ex::MountSpec],
        io: ex::Interactive,
        on_output: &mut dyn FnMut(ex::Stream, &[u8]),
        control: &ex::RunControl,
    ) -> Result<ex::ExitStatus> {
        let executor = self.solver.executor()?;
        let rootfs = ex::RootFs::Mounts(
            self.mounts
                .iter()
                .map(|m| ex::RootMount {
                    fstype: m.fstype.clone(),
                    source: m.source.to_string_lossy().to_string(),
                    options: m.options.clone(),
                })
                .collect(),
        );
        match executor.run_interactive(process, &rootfs, mounts, io, on_output, control) {
            Ok(s) => Ok(s),
            Err(ex::Error::Cancelled) => Err(Error::Cancelled),
            Err(source) => Err(Error::Executor {
                line: 0,
                command: process.args.join(" "),
                source,
            }),
        }
    }
}

impl Drop for ContainerRootfs<'_> {
    fn drop(&mut self) {
        let _ = self.solver.snapshotter.remove(&self.key);
    }
}
