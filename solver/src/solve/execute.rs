//! Executing a step that missed the cache: COPY/ADD/WORKDIR on a mounted snapshot, RUN through
//! [`super::run`], then the commit, the layer written into the content store and only then
//! the cache record.

use super::download::url_file_name;
use super::step::now_rfc3339;
use super::*;

impl BuildCtx<'_> {
    /// Runs a step that missed the cache and commits it; `true` when another process
    /// committed the same step first and its result is used (a cache hit).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn execute(
        &self,
        _s: usize,
        step: &StepPlan,
        parent: Option<&FsState>,
        inputs: &[(NodeIndex, Arc<FsState>)],
        key: &CacheKey,
        views: &[View<'_>],
        id: StepId,
    ) -> Result<(FsState, bool)> {
        let sn = self.snapshotter();
        let active = unique_key("active");
        let parent_snap = parent.and_then(|p| p.snapshot.clone());
        let mounts = sn
            .prepare(&active, parent_snap.as_deref())
            .map_err(snap_err(format!("prepare {active}")))?;
        let r = (|| -> Result<()> {
            let _span = tracing::debug_span!("execute").entered();
            match &step.op {
                Op::Mkdir { path, user } => {
                    let m = snap::MountedSnapshot::new_in(&mounts, sn.mount_root())
                        .map_err(snap_err(format!("mount {active}")))?;
                    let owner = users::resolve_user(Some(m.path()), user);
                    copy::mkdir_all(m.path(), path, Some(owner))?;
                    m.unmount().map_err(snap_err(format!("unmount {active}")))?;
                }
                Op::Copy(c) => {
                    let m = snap::MountedSnapshot::new_in(&mounts, sn.mount_root())
                        .map_err(snap_err(format!("mount {active}")))?;
                    let src_state = self.state_of(inputs, self.source_vertex(&c.from));
                    let src_snapshot = src_state.as_ref().and_then(|f| f.snapshot.as_deref());
                    self.run_copy(m.path(), c, views, src_snapshot, step.line)?;
                    m.unmount().map_err(snap_err(format!("unmount {active}")))?;
                }
                Op::Run(r) => self.run_exec(step, r, &mounts, inputs, id)?,
            }
            Ok(())
        })();
        if let Err(e) = r {
            let _ = sn.remove(&active);
            return Err(e);
        }
        self.commit_and_record(key, &active, step.no_cache, parent)
    }

    /// Commits the snapshot `active` as `key`'s result, writes its layer into the content
    /// store and only then the cache record; `true` when another process committed the same
    /// step first and its result is used. The end of every executed step.
    pub(super) fn commit_and_record(
        &self,
        key: &CacheKey,
        active: &str,
        no_cache: bool,
        parent: Option<&FsState>,
    ) -> Result<(FsState, bool)> {
        let (name, adopted) = {
            let _span = tracing::debug_span!("commit").entered();
            self.commit_step(key, active, no_cache)?
        };
        // Another process committed this step first: its record, once written, names the
        // same snapshot and layer; until then make the layer from that snapshot ourselves.
        let (layer, created) = match adopted.then(|| self.lookup(key)).flatten() {
            Some(rec) if rec.snapshot == name => (rec.layer, rec.created),
            _ => (self.write_layer(&name)?, None),
        };
        let created = Some(created.unwrap_or_else(now_rfc3339));
        self.solver.cache.put(
            key,
            &CacheRecord {
                snapshot: name.clone(),
                layer: layer.clone(),
                created: created.clone(),
            },
        )?;
        let mut layers = parent.map(|p| p.layers.clone()).unwrap_or_default();
        if let Some(l) = &layer {
            layers.push(l.clone());
        }
        Ok((
            FsState {
                key: key.clone(),
                snapshot: Some(name),
                layers,
                own_layer: layer,
                created,
                label: String::new(),
            },
            adopted,
        ))
    }

    pub(super) fn write_layer(&self, name: &str) -> Result<Option<LayerRecord>> {
        // No blob at build time: the layer tar is streamed from the snapshot only to be hashed
        // and counted, and the store records that the blob of that digest is made from the
        // snapshot (the same walk, checked against this digest) when something first reads
        // it: an export, a push, a cache export. Uncompressed, its digest is its diff_id;
        // exports that want gzip convert (once, remembered by the content store).
        let epoch = self.req.layer_epoch();
        let opts = snap::LayerOptions {
            compression: snap::CompressionOptions {
                compression: snap::Compression::Uncompressed,
                level: None,
            },
            source_date_epoch: epoch,
        };
        let _span = tracing::debug_span!("layer").entered();
        let info = snap::write_layer(self.snapshotter(), name, &opts, std::io::sink())
            .map_err(snap_err(format!("write layer of {name}")))?;
        // A step that changed nothing still has its (empty) layer, as in BuildKit, whose
        // layer chain holds every exec and file op's ref.
        let digest = Digest::parse(&info.digest).map_err(img_err("layer digest"))?;
        self.solver
            .store
            .defer_blob(&digest, info.size, &crate::deferred::source_of(name, epoch))
            .map_err(img_err(format!("layer of {name}")))?;
        Ok(Some(LayerRecord {
            digest: digest.to_string(),
            diff_id: info.diff_id,
            size: info.size,
            media_type: info.media_type.to_string(),
        }))
    }

    pub(super) fn run_copy(
        &self,
        root: &Path,
        c: &CopyOp,
        views: &[View<'_>],
        src_snapshot: Option<&str>,
        line: usize,
    ) -> Result<()> {
        let chown = match &c.chown {
            Some(spec) => Some(users::resolve_chown(Some(root), spec, line)?),
            None => None,
        };
        let chmod = match &c.chmod {
            Some(m) => Some(Chmod::parse(m).ok_or_else(|| Error::Plan {
                line,
                message: format!("invalid chmod parameter: '{m}'"),
            })?),
            None => None,
        };
        let exclude = if c.exclude.is_empty() {
            None
        } else {
            Some(IgnoreMatcher::new(&c.exclude)?)
        };
        let opts = CopyOptions {
            dest: c.dest.clone(),
            chown,
            chmod: chmod.as_ref(),
            parents: c.parents,
            exclude: exclude.as_ref(),
            unpack_archives: c.unpack && c.from == SourceRef::Context,
            line,
        };
        let mut opened: Option<View<'_>> = None;
        if !c.sources.is_empty() {
            let src = match &c.from {
                SourceRef::Context => CopySource::Tree {
                    tree: SourceTree {
                        root: &self.context_root,
                        ignore: Some(&self.ignore),
                    },
                    paths: c.sources.clone(),
                    reset_owner: true,
                },
                _ => {
                    if views.is_empty() {
                        // The key came from a remembered digest: mount the source now.
                        opened = Some(View::open(self.snapshotter(), src_snapshot)?);
                    }
                    let view = views.first().or(opened.as_ref()).ok_or(Error::Cancelled)?;
                    CopySource::Tree {
                        tree: SourceTree {
                            root: view.path(),
                            ignore: None,
                        },
                        paths: c.sources.clone(),
                        reset_owner: false,
                    }
                }
            };
            copy::copy(root, &src, &opts)?;
        }
        // Downloaded URLs follow the source-stage view (if any) in `views`.
        let skip = usize::from(c.from != SourceRef::Context && !c.sources.is_empty());
        let url_opts = CopyOptions {
            unpack_archives: false,
            ..opts
        };
        for (url, view) in c.urls.iter().zip(views.iter().skip(skip)) {
            let src = CopySource::Tree {
                tree: SourceTree {
                    root: view.path(),
                    ignore: None,
                },
                paths: vec![url_file_name(url)],
                reset_owner: true,
            };
            copy::copy(root, &src, &url_opts)?;
        }
        let opts = url_opts;
        for (name, data) in &c.inline {
            copy::copy(
                root,
                &CopySource::Inline {
                    name: name.clone(),
                    content: data.clone(),
                },
                &opts,
            )?;
        }
        Ok(())
    }
}
