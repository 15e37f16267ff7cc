//! `kiln prune`: removing cache records and the snapshots nothing needs any more, children
//! before parents, without touching what remaining records (or running builds) use.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Result;
use crate::solve::{Solver, snap_err};
use kiln_snapshotter as snap;

impl Solver {
    /// Removes cache records and the snapshots nothing needs any more (`kiln prune`): records
    /// whose snapshot is gone, and, with [`PruneOptions::all`](crate::PruneOptions::all), every record; with
    /// [`PruneOptions::keep_storage`](crate::PruneOptions::keep_storage), the oldest records until the snapshots fit. What
    /// killed builds left (active and view snapshots, mounts, temp and run directories) goes
    /// when the state is opened; removing never needs disk space, so this works on a full disk.
    pub fn prune(&self, opts: &crate::cache::PruneOptions) -> Result<crate::cache::PruneReport> {
        let sn = self.snapshotter.as_ref();
        let mut report = crate::cache::PruneReport::default();
        // Opening the executor reaps the run directories of killed builds; prune must not
        // fail where RUN cannot work, so its error is ignored.
        let _ = self.executor();
        let infos = sn.walk().map_err(snap_err("walk"))?;
        let by_name: BTreeMap<String, snap::Info> =
            infos.iter().map(|i| (i.name.clone(), i.clone())).collect();
        let mut records = self.cache.all();
        // Dangling records first.
        records.retain(|(k, r)| {
            if by_name.contains_key(&r.snapshot) {
                return true;
            }
            if self.cache.remove(k).is_ok() {
                report.records_removed += 1;
            }
            false
        });
        if opts.all {
            // Explanations compare with earlier builds; after this there are none.
            self.cache.remove_explanations();
            for (k, _) in &records {
                if self.cache.remove(k).is_ok() {
                    report.records_removed += 1;
                }
            }
            records.clear();
        }
        let usage = |name: &str| sn.usage(name).map_or(0, |u| u.size);
        if let Some(limit) = opts.keep_storage {
            let mut total: u64 = by_name.keys().map(|n| usage(n)).sum();
            records.sort_by_key(|(k, _)| self.cache.mtime(k));
            while total > limit && !records.is_empty() {
                let (k, r) = records.remove(0);
                if self.cache.remove(&k).is_ok() {
                    report.records_removed += 1;
                }
                if !records.iter().any(|(_, o)| o.snapshot == r.snapshot) {
                    total = total.saturating_sub(usage(&r.snapshot));
                }
            }
        }
        // Snapshots still needed: those of the remaining records and their ancestors.
        let mut keep: BTreeSet<String> = BTreeSet::new();
        for (_, r) in &records {
            let mut cur = Some(r.snapshot.clone());
            while let Some(c) = cur {
                if !keep.insert(c.clone()) {
                    break;
                }
                cur = by_name.get(&c).and_then(|i| i.parent.clone());
            }
        }
        // Layers deferred to snapshots that may go: written first when an image or a remaining
        // record needs them (a snapshot whose layer cannot be written stays, and so do its
        // ancestors), their records dropped once the snapshot is really gone.
        let deferred = DeferredLayers::of(self, &records);
        // Active and view snapshots belong to running builds: those of killed ones were removed
        // when the snapshotter was opened (their owner is gone), however young.
        let removable: BTreeSet<String> = by_name
            .values()
            .filter(|i| !keep.contains(&i.name))
            .filter(|i| i.kind == snap::Kind::Committed)
            .map(|i| i.name.clone())
            .collect();
        // Children before parents: a snapshot goes once nothing remaining names it as parent.
        let mut left: BTreeSet<String> = removable;
        let mut removed: BTreeSet<String> = BTreeSet::new();
        loop {
            let parents: BTreeSet<String> = by_name
                .values()
                .filter(|i| !removed.contains(&i.name))
                .filter_map(|i| i.parent.clone())
                .collect();
            let leaves: Vec<String> = left
                .iter()
                .filter(|n| !parents.contains(*n))
                .cloned()
                .collect();
            if leaves.is_empty() {
                break;
            }
            for n in leaves {
                left.remove(&n);
                if !deferred.write_needed(self, &n) {
                    continue;
                }
                let size = usage(&n);
                if sn.remove(&n).is_ok() {
                    report.snapshots_removed += 1;
                    report.bytes_freed += size;
                    deferred.drop_unneeded(self, &n);
                }
                removed.insert(n);
            }
        }
        Ok(report)
    }
}

/// The layers deferred to each snapshot, and the digests still needed by an image (tagged or
/// dangling) or a remaining cache record. `None`s when they could not be read: then no
/// snapshot that makes a layer is removed.
struct DeferredLayers {
    by_snapshot: Option<BTreeMap<String, Vec<kiln_image::DeferredBlob>>>,
    needed: Option<BTreeSet<kiln_image::Digest>>,
}

impl DeferredLayers {
    fn of(solver: &Solver, records: &[(crate::key::CacheKey, crate::cache::CacheRecord)]) -> Self {
        let store = solver.content_store();
        let by_snapshot = store.deferred_blobs().ok().map(|all| {
            let mut map: BTreeMap<String, Vec<kiln_image::DeferredBlob>> = BTreeMap::new();
            for b in all {
                if let Some((name, _)) = crate::deferred::parse_source(&b.source) {
                    map.entry(name.to_owned()).or_default().push(b);
                }
            }
            map
        });
        let needed = store.reachable_from_images().ok().map(|mut n| {
            n.extend(
                records
                    .iter()
                    .filter_map(|(_, r)| r.layer.as_ref())
                    .filter_map(|l| kiln_image::Digest::parse(&l.digest).ok()),
            );
            n
        });
        Self {
            by_snapshot,
            needed,
        }
    }

    /// Writes the needed layers `snapshot` makes into the store; `false` when the snapshot
    /// must stay (a layer could not be written, or what is deferred or needed is unknown).
    fn write_needed(&self, solver: &Solver, snapshot: &str) -> bool {
        let Some(by_snapshot) = &self.by_snapshot else {
            return false;
        };
        let Some(layers) = by_snapshot.get(snapshot) else {
            return true;
        };
        let Some(needed) = &self.needed else {
            return false;
        };
        layers
            .iter()
            .filter(|b| needed.contains(&b.digest))
            .all(|b| solver.content_store().materialize(&b.digest).is_ok())
    }

    /// Drops the records of the unneeded layers the removed `snapshot` made, unless another
    /// build has since deferred the same digest to a snapshot of its own.
    fn drop_unneeded(&self, solver: &Solver, snapshot: &str) {
        let store = solver.content_store();
        let Some(layers) = self.by_snapshot.as_ref().and_then(|m| m.get(snapshot)) else {
            return;
        };
        for b in layers {
            let still_ours = store.deferred_blob(&b.digest).is_some_and(|now| {
                crate::deferred::parse_source(&now.source).is_some_and(|(n, _)| n == snapshot)
            });
            if still_ours {
                let _ = store.remove_blob(&b.digest);
            }
        }
    }
}
