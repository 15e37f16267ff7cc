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
        // A layer deferred to a snapshot about to go is written first when an image or a
        // remaining record needs it; a snapshot whose layer cannot be written (a full disk)
        // stays, with its ancestors, which make it.
        let going: BTreeSet<String> = by_name
            .values()
            .filter(|i| !keep.contains(&i.name) && i.kind == snap::Kind::Committed)
            .map(|i| i.name.clone())
            .collect();
        for stay in self.settle_deferred_layers(&going, &records) {
            let mut cur = Some(stay);
            while let Some(c) = cur {
                if !keep.insert(c.clone()) {
                    break;
                }
                cur = by_name.get(&c).and_then(|i| i.parent.clone());
            }
        }
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
                let size = usage(&n);
                if sn.remove(&n).is_ok() {
                    report.snapshots_removed += 1;
                    report.bytes_freed += size;
                }
                left.remove(&n);
                removed.insert(n);
            }
        }
        Ok(report)
    }

    /// For each layer deferred to one of the `going` snapshots: written into the store when an
    /// image (tagged or dangling) or one of the remaining `records` names it, else its record
    /// dropped.
    /// Returns the snapshots that must stay because their layer could not be written.
    fn settle_deferred_layers(
        &self,
        going: &BTreeSet<String>,
        records: &[(crate::key::CacheKey, crate::cache::CacheRecord)],
    ) -> Vec<String> {
        let deferred: Vec<(kiln_image::DeferredBlob, String)> = self
            .content_store()
            .deferred_blobs()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|b| {
                let (name, _) = crate::deferred::parse_source(&b.source)?;
                let name = name.to_owned();
                going.contains(&name).then_some((b, name))
            })
            .collect();
        if deferred.is_empty() {
            return Vec::new();
        }
        let Ok(mut needed) = self.content_store().reachable_from_images() else {
            // Unknown which are needed: keep them all.
            return deferred.into_iter().map(|(_, n)| n).collect();
        };
        needed.extend(
            records
                .iter()
                .filter_map(|(_, r)| r.layer.as_ref())
                .filter_map(|l| kiln_image::Digest::parse(&l.digest).ok()),
        );
        let mut stay = Vec::new();
        for (b, name) in deferred {
            if !needed.contains(&b.digest) {
                let _ = self.content_store().remove_blob(&b.digest);
            } else if self.content_store().materialize(&b.digest).is_err() {
                stay.push(name);
            }
        }
        stay
    }
}
