//! Running a COPY from the previous result of the same step ([`crate::copy::reuse`]): the
//! eligibility checks that need the build (previous inputs, cache record, snapshots), then the
//! seeded snapshot, the copy of what changed, and the commit as [`BuildCtx::execute`] does it.

use super::*;

impl BuildCtx<'_> {
    /// Incremental COPY ([`crate::copy::reuse`]): the result of a COPY from the context made
    /// from the previous result of the same step (same parent snapshot) when only some of its
    /// files changed. `None` when not eligible: the step then runs in full. `true` with the
    /// state when another process committed the step first (as [`BuildCtx::execute`]).
    pub(super) fn copy_from_previous(
        &self,
        step: &StepPlan,
        parent: Option<&FsState>,
        key: &CacheKey,
        inputs: &crate::explain::StepInputs,
        step_id: &str,
    ) -> Result<Option<(FsState, bool)>> {
        use crate::copy::reuse;
        let files = &inputs.files;
        let Op::Copy(c) = &step.op else {
            return Ok(None);
        };
        if c.from != SourceRef::Context
            || c.sources.is_empty()
            || !c.urls.is_empty()
            || !c.inline.is_empty()
            || c.add
            || c.parents
            || c.link
            || !c.exclude.is_empty()
        {
            return Ok(None);
        }
        let sn = self.snapshotter();
        if sn.driver() != snap::Driver::Overlay {
            return Ok(None);
        }
        let Some(old) = self.explain.load(step_id) else {
            return Ok(None);
        };
        if old.parent != parent.map(|p| p.key.0.clone()) || old.key == key.0 {
            return Ok(None);
        }
        // The same COPY as expanded (a build arg or ENV in `--chown`, `--chmod` or the
        // destination leaves the step's identity as written): only the sources' contents
        // may differ.
        let as_expanded = |fields: &[(String, String)]| -> Vec<(String, String)> {
            fields
                .iter()
                .filter(|(name, _)| name != "source-digest")
                .cloned()
                .collect()
        };
        if as_expanded(&old.fields) != as_expanded(&inputs.fields) {
            return Ok(None);
        }
        let Some(rec) = self.lookup(&CacheKey(old.key.clone())) else {
            return Ok(None);
        };
        let parent_snap = parent.and_then(|p| p.snapshot.clone());
        if sn.stat(&rec.snapshot).map(|i| i.parent).ok() != Some(parent_snap.clone()) {
            return Ok(None);
        }
        let Ok(snap::Layout::Overlay {
            upper: old_upper, ..
        }) = sn.layout(&rec.snapshot)
        else {
            return Ok(None);
        };
        let Some(plan) = reuse::plan(&old.files, files, &c.dest, &old_upper) else {
            return Ok(None);
        };
        // The plan reads the current lines only: the previous ones are not kept for the copy
        // and the commit.
        drop(old);
        let active = unique_key("active");
        let mounts = sn
            .prepare(&active, parent_snap.as_deref())
            .map_err(snap_err(format!("prepare {active}")))?;
        let r = (|| -> Result<bool> {
            let layout = sn
                .layout(&active)
                .map_err(snap_err(format!("layout of {active}")))?;
            let snap::Layout::Overlay { upper, .. } = layout else {
                return Err(Error::Cancelled);
            };
            let tree = SourceTree {
                root: &self.context_root,
                ignore: Some(&self.ignore),
            };
            // The parent's filesystem as the full copy sees it, before anything is written
            // (the upper directory is seeded unmounted): the owner `--chown` names, and what
            // is at the destination.
            let probe = snap::MountedSnapshot::new_in(&mounts, sn.mount_root())
                .map_err(snap_err(format!("mount {active}")))?;
            let chown = c
                .chown
                .as_ref()
                .map(|spec| users::resolve_chown(Some(probe.path()), spec, step.line));
            let dest_existed = reuse::destination_in_parent(probe.path(), &c.dest);
            probe
                .unmount()
                .map_err(snap_err(format!("unmount {active}")))?;
            let chown = chown.transpose()?;
            let Some(dest_existed) = dest_existed else {
                return Ok(false);
            };
            let chmod = match &c.chmod {
                Some(v) => Some(Chmod::parse(v).ok_or_else(|| Error::Plan {
                    line: step.line,
                    message: format!("invalid chmod parameter: '{v}'"),
                })?),
                None => None,
            };
            // The previous result may have been pruned meanwhile: then copy in full.
            let Ok(rewrite) = reuse::seed(&plan, &tree, &old_upper, &upper, chmod.as_ref()) else {
                return Ok(false);
            };
            let m = snap::MountedSnapshot::new_in(&mounts, sn.mount_root())
                .map_err(snap_err(format!("mount {active}")))?;
            let opts = CopyOptions {
                dest: c.dest.clone(),
                chown,
                chmod: chmod.as_ref(),
                parents: false,
                exclude: None,
                unpack_archives: false,
                line: step.line,
            };
            let done = reuse::finish(&plan, &tree, m.path(), dest_existed, &rewrite, &opts)?;
            m.unmount().map_err(snap_err(format!("unmount {active}")))?;
            Ok(done)
        })();
        match r {
            Ok(true) => {}
            Ok(false) => {
                let _ = sn.remove(&active);
                return Ok(None);
            }
            Err(e) => {
                let _ = sn.remove(&active);
                return Err(e);
            }
        }
        // From here as `execute`: commit, layer, record.
        self.commit_and_record(key, &active, false, parent)
            .map(Some)
    }
}
