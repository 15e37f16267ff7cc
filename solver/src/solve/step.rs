//! Running one vertex: a base image unpacked into a snapshot chain, or a filesystem step keyed
//! (its inputs gathered here, the key computed by [`crate::key::step_key`]), looked up in the
//! local or an imported cache, or executed ([`super::execute`]).

use super::*;

mod incremental;

impl BuildCtx<'_> {
    pub(super) fn snapshotter(&self) -> &dyn Snapshotter {
        self.solver.snapshotter.as_ref()
    }

    pub(super) fn started(
        &self,
        idx: NodeIndex,
        instruction: String,
        stage: String,
        line: usize,
        reason: Option<String>,
    ) -> StepId {
        let (n, id) = self.step_ids[idx.index()];
        self.progress.event(&ProgressEvent::StepStarted {
            step: id,
            index: n,
            total: self.total,
            stage,
            instruction,
            line,
            reason,
        });
        id
    }

    #[allow(clippy::unused_self)]
    pub(super) fn state_of(
        &self,
        inputs: &[(NodeIndex, Arc<FsState>)],
        v: Option<NodeIndex>,
    ) -> Option<Arc<FsState>> {
        let v = v?;
        inputs.iter().find(|(i, _)| *i == v).map(|(_, s)| s.clone())
    }

    pub(super) fn source_vertex(&self, src: &SourceRef) -> Option<NodeIndex> {
        match src {
            SourceRef::Context => None,
            SourceRef::Stage(t) => {
                stage_tail(self.plan, *t, &self.vertex_of_image, &self.vertex_of_step)
            }
            SourceRef::Image(i) => Some(self.vertex_of_image[*i]),
        }
    }

    pub(super) fn parent_vertex(&self, step: usize) -> Option<NodeIndex> {
        let sp = self.plan.stages[self.plan.steps[step].stage].as_ref()?;
        let pos = sp.steps.iter().position(|&s| s == step)?;
        if pos > 0 {
            return Some(self.vertex_of_step[sp.steps[pos - 1]]);
        }
        match &sp.base {
            BaseRef::Scratch => None,
            BaseRef::Image(i) => Some(self.vertex_of_image[*i]),
            BaseRef::Stage(b) => {
                stage_tail(self.plan, *b, &self.vertex_of_image, &self.vertex_of_step)
            }
        }
    }

    pub(super) fn vertex(
        &self,
        idx: NodeIndex,
        v: Vertex,
        inputs: &[(NodeIndex, Arc<FsState>)],
    ) -> Result<FsState> {
        match v {
            Vertex::Image(i) => self.image_vertex(idx, i),
            Vertex::Step(s) => self.step_vertex(idx, s, inputs),
        }
    }

    pub(super) fn image_vertex(&self, idx: NodeIndex, i: usize) -> Result<FsState> {
        let img = &self.images[i];
        let reference = &self.plan.images[i].0;
        let _span = tracing::info_span!(
            parent: &self.span,
            "step",
            id = self.step_ids[idx.index()].0,
            name = %format_args!("FROM {reference}"),
        )
        .entered();
        let id = self.started(idx, format!("FROM {reference}"), String::new(), 0, None);
        let t0 = Instant::now();
        // Checks that the config has one diff_id per layer before unpacking anything.
        let (parent, unpacked) =
            crate::rootfs::unpack_image(self.snapshotter(), &self.solver.store, img, reference)?;
        let layers: Vec<LayerRecord> = img
            .layers
            .iter()
            .zip(&img.config.rootfs.diff_ids)
            .map(|(d, diff)| LayerRecord {
                digest: d.digest.to_string(),
                diff_id: diff.to_string(),
                size: d.size,
                media_type: d.media_type.clone(),
            })
            .collect();
        if unpacked {
            self.progress.event(&ProgressEvent::StepDone {
                step: id,
                elapsed: t0.elapsed(),
            });
        } else {
            self.progress.event(&ProgressEvent::StepCached { step: id });
        }
        Ok(FsState {
            key: CacheKey(format!("image:{}", img.manifest_digest)),
            snapshot: parent,
            own_layer: layers.last().cloned(),
            layers,
            created: None,
            label: format!("the base image {reference}"),
        })
    }

    pub(super) fn step_vertex(
        &self,
        idx: NodeIndex,
        s: usize,
        inputs: &[(NodeIndex, Arc<FsState>)],
    ) -> Result<FsState> {
        let step = &self.plan.steps[s];
        let stage_name = self.plan.stages[step.stage]
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let id = self.step_ids[idx.index()].1;
        let _span = tracing::info_span!(
            parent: &self.span,
            "step",
            id = self.step_ids[idx.index()].0,
            name = %step.instruction,
        )
        .entered();
        // Started once the key is known: a step that will run says why it missed the cache.
        let was_started = std::cell::Cell::new(false);
        let start = |reason: Option<String>| {
            if !was_started.replace(true) {
                self.started(
                    idx,
                    step.instruction.clone(),
                    stage_name.clone(),
                    step.line,
                    reason,
                );
            }
        };
        let t0 = Instant::now();
        let parent = self.state_of(inputs, self.parent_vertex(s));
        let r = self.step_inner(s, step, parent.as_deref(), inputs, id, &start);
        start(None);
        match &r {
            Ok((_, true)) => self.progress.event(&ProgressEvent::StepCached { step: id }),
            Ok((_, false)) => self.progress.event(&ProgressEvent::StepDone {
                step: id,
                elapsed: t0.elapsed(),
            }),
            Err(Error::Cancelled) => {}
            // Killed because the build is being cancelled: shown as cancelled, not failed.
            Err(_) if self.cancelled.load(Ordering::SeqCst) => {}
            Err(e) => self.progress.event(&ProgressEvent::StepFailed {
                step: id,
                error: e.report(),
            }),
        }
        r.map(|(f, _)| f)
    }

    /// Returns the state and whether it came from the cache.
    pub(super) fn step_inner(
        &self,
        s: usize,
        step: &StepPlan,
        parent: Option<&FsState>,
        inputs: &[(NodeIndex, Arc<FsState>)],
        id: StepId,
        start: &dyn Fn(Option<String>),
    ) -> Result<(FsState, bool)> {
        let mut files = crate::context::Listing::default();
        // What the key is computed from besides the plan: digests found by hashing the
        // context or a mounted source, downloading URLs, and the inputs' keys. Source views
        // stay mounted while the key is computed and the step runs.
        let mut key_inputs = crate::key::KeyInputs {
            parent: parent.map(|p| p.key.0.clone()),
            // Clamped mtimes make a different layer: the epoch is part of the key.
            layer_epoch: self.req.layer_epoch(),
            ..Default::default()
        };
        let mut views: Vec<View<'_>> = Vec::new();
        match &step.op {
            Op::Mkdir { .. } => {}
            Op::Copy(c) => {
                if !c.sources.is_empty() {
                    let digest = match &c.from {
                        SourceRef::Context => {
                            let tree = SourceTree {
                                root: &self.context_root,
                                ignore: Some(&self.ignore),
                            };
                            let (d, lines) = crate::context::digest_sources_listed(
                                &tree,
                                &c.sources,
                                &self.content_cache,
                                step.line,
                            )?;
                            files = lines;
                            d
                        }
                        other => {
                            let src_state = self.state_of(inputs, self.source_vertex(other));
                            let src_snap = src_state.as_ref().and_then(|f| f.snapshot.clone());
                            // Committed snapshots never change: their selection digests are
                            // remembered, so a warm build mounts nothing.
                            let memo = src_snap
                                .as_deref()
                                .and_then(|sn| self.solver.cache.get_digest(sn, &c.sources));
                            if let Some(d) = memo {
                                d
                            } else {
                                let view = View::open(self.snapshotter(), src_snap.as_deref())?;
                                let tree = SourceTree {
                                    root: view.path(),
                                    ignore: None,
                                };
                                let d = digest_sources(
                                    &tree,
                                    &c.sources,
                                    &ContentCache::ephemeral(),
                                    step.line,
                                )?;
                                if let Some(sn) = &src_snap {
                                    let _ = self.solver.cache.put_digest(sn, &c.sources, &d);
                                }
                                views.push(view);
                                d
                            }
                        }
                    };
                    key_inputs.source_digest = Some(digest);
                }
                for url in &c.urls {
                    let (view, digest) = self.download(url, c.checksum.as_deref(), step.line)?;
                    key_inputs.url_digests.push(digest);
                    views.push(view);
                }
            }
            Op::Run(r) => {
                for m in &r.mounts {
                    key_inputs
                        .mounts
                        .push(self.mount_input(m, inputs, step.line)?);
                }
            }
        }
        let (key, mut fields) = crate::key::step_key(&step.op, &key_inputs);
        fields.retain(|(n, _)| n != "parent");
        let no_cache = step.no_cache;
        let found = if no_cache { None } else { self.lookup(&key) };
        if found.is_none() && !no_cache {
            // `--cache-from` of a local image: matched by history (remote_cache/local_image.rs).
            let p = parent.map(|p| (p.key.0.as_str(), p.layers.as_slice()));
            self.imported.match_step(self.plan, s, &key.0, p);
        }
        let will_run = found.is_none()
            && (no_cache
                || self
                    .imported
                    .get(&key.0, parent.map(|p| p.key.0.as_str()))
                    .is_none());
        let step_id = self.step_identity(s, step);
        let new_inputs = explain::StepInputs {
            key: key.0.clone(),
            parent: parent.map(|p| p.key.0.clone()),
            fields,
            files,
        };
        let previous = self.explain.last_key(&step_id);
        if will_run {
            let reason = if no_cache {
                "the cache is disabled for this step (--no-cache or --no-cache-filter)".to_string()
            } else {
                let old = self.explain.load(&step_id);
                let parent_label =
                    parent.map_or_else(|| "scratch".to_string(), |p| p.label.clone());
                explain::explain(old.as_ref(), &new_inputs, &parent_label)
            };
            start(Some(reason));
        } else {
            start(None);
        }
        let compute = || -> Result<(FsState, bool)> {
            // Another build of this step (other process or thread) runs it once: wait for it.
            let mut found = found;
            let _claim = if found.is_none() && !no_cache {
                let claim = self.claim_step(&key, id)?;
                found = self.lookup(&key);
                Some(claim)
            } else {
                None
            };
            if let Some(rec) = found {
                self.cached.fetch_add(1, Ordering::SeqCst);
                let mut layers = parent.map(|p| p.layers.clone()).unwrap_or_default();
                if let Some(l) = &rec.layer {
                    layers.push(l.clone());
                }
                // Records of older versions have no time: their file's mtime is as stable.
                let created = rec.created.or_else(|| {
                    Some(kiln_image::spec::format_rfc3339(
                        self.solver.cache.mtime(&key),
                        0,
                    ))
                });
                return Ok((
                    FsState {
                        key: key.clone(),
                        snapshot: Some(rec.snapshot),
                        layers,
                        own_layer: rec.layer,
                        created,
                        label: String::new(),
                    },
                    true,
                ));
            }
            if !no_cache && let Some(f) = self.materialise(&key, parent)? {
                self.cached.fetch_add(1, Ordering::SeqCst);
                return Ok((f, true));
            }
            if !no_cache
                && let Some((f, hit)) =
                    self.copy_from_previous(step, parent, &key, &new_inputs, &step_id)?
            {
                if hit {
                    self.cached.fetch_add(1, Ordering::SeqCst);
                } else {
                    self.ran.fetch_add(1, Ordering::SeqCst);
                }
                return Ok((f, hit));
            }
            let (f, hit) = self.execute(s, step, parent, inputs, &key, &views, id)?;
            // A step another process committed first is a cache hit.
            if hit {
                self.cached.fetch_add(1, Ordering::SeqCst);
            } else {
                self.ran.fetch_add(1, Ordering::SeqCst);
            }
            Ok((f, hit))
        };
        // Identical steps in flight run once (same key ⇒ same result).
        // A step that waited for an identical one counts as cached: it did no work.
        let mut was_cached = true;
        let st = self.once.get_or_run(&key, || {
            let (mut f, c) = compute()?;
            was_cached = c;
            f.label = step_label(step);
            Ok(f)
        })?;
        drop(views);
        // The comparison base of the next miss is this build (written only when it changed).
        if previous.as_deref() != Some(key.0.as_str()) {
            let _ = self.explain.save(&step_id, &new_inputs);
        }
        Ok((st, was_cached))
    }

    /// The identity of a Dockerfile step across builds: its context, Dockerfile, stage,
    /// position in the stage and text.
    fn step_identity(&self, s: usize, step: &StepPlan) -> String {
        // As the old request model named it: `Dockerfile` in the context, the path given, or
        // the display name of a text (explanations recorded before stay comparable).
        let dockerfile = match &self.req.dockerfile {
            Dockerfile::InContext => "Dockerfile".to_string(),
            Dockerfile::Path(p) => p.display().to_string(),
            Dockerfile::Text(_) => "Dockerfile".to_string(),
            Dockerfile::Read(t) => match &t.path {
                Some(p)
                    if std::fs::canonicalize(p).ok()
                        != Some(self.context_root.join("Dockerfile")) =>
                {
                    p.display().to_string()
                }
                _ => "Dockerfile".to_string(),
            },
        };
        let pos = self.plan.stages[step.stage]
            .as_ref()
            .and_then(|st| st.steps.iter().position(|&x| x == s))
            .unwrap_or(s);
        // The Dockerfile's stage (not the merged plan's) and, off the host platform, the
        // platform the stage runs as: the same step of the same platform keeps its identity
        // whatever `--platform` lists around it.
        let mut parts = vec![
            self.context_root.display().to_string(),
            dockerfile,
            step.file_stage.to_string(),
            pos.to_string(),
            step.instruction.clone(),
        ];
        if let Some(st) = self.plan.stages[step.stage].as_ref()
            && st.platform != Platform::host()
        {
            parts.push(st.platform.to_string());
        }
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        explain::ExplainStore::identity(&parts)
    }

    /// What a `RUN --mount`'s source contributes to the step's key: the digest of the
    /// context files of a bind mount, or the key of the stage or image it comes from.
    pub(super) fn mount_input(
        &self,
        m: &MountPlan,
        inputs: &[(NodeIndex, Arc<FsState>)],
        line: usize,
    ) -> Result<crate::key::MountInput> {
        use crate::key::MountInput;
        let rm = &m.mount;
        Ok(match &m.source {
            Some(SourceRef::Context) if rm.kind == kiln_parser::MountType::Bind => {
                let tree = SourceTree {
                    root: &self.context_root,
                    ignore: Some(&self.ignore),
                };
                let src = rm.source.clone().unwrap_or_else(|| "/".into());
                MountInput::ContextDigest(digest_sources(&tree, &[src], &self.content_cache, line)?)
            }
            Some(other) => {
                let st = self.state_of(inputs, self.source_vertex(other));
                MountInput::SourceKey(st.map(|s| s.key.0.clone()))
            }
            None => MountInput::None,
        })
    }

    pub(super) fn lookup(&self, key: &CacheKey) -> Option<CacheRecord> {
        let rec = self.solver.cache.get(key)?;
        // Only trust a record whose snapshot and blob still exist. Records of versions that
        // dropped empty layers have none: the step runs again to get its (empty) layer.
        self.snapshotter().stat(&rec.snapshot).ok()?;
        let d = Digest::parse(&rec.layer.as_ref()?.digest).ok()?;
        self.solver.store.has_blob(&d).then_some(rec)
    }

    /// A local cache miss found in an imported cache: the step's layer applied on top of the
    /// parent snapshot, committed, and only then recorded locally. `None` when not imported.
    pub(super) fn materialise(
        &self,
        key: &CacheKey,
        parent: Option<&FsState>,
    ) -> Result<Option<FsState>> {
        let Some(entry) = self.imported.get(&key.0, parent.map(|p| p.key.0.as_str())) else {
            return Ok(None);
        };
        let solver = self.solver;
        solver.imported_layer(&self.imported, &key.0)?;
        let sn = self.snapshotter();
        let active = unique_key("import");
        let parent_snap = parent.and_then(|p| p.snapshot.clone());
        sn.prepare(&active, parent_snap.as_deref())
            .map_err(snap_err(format!("prepare {active}")))?;
        let r = (|| -> Result<()> {
            let Some(l) = &entry.layer else {
                return Ok(());
            };
            let d = Digest::parse(&l.digest).map_err(img_err(l.digest.clone()))?;
            let blob = solver
                .store
                .open_blob(&d)
                .map_err(img_err(l.digest.clone()))?;
            let applied = snap::apply_layer_to_snapshot(sn, &active, std::io::BufReader::new(blob))
                .map_err(snap_err(format!("apply cached layer {}", l.digest)))?;
            if applied.diff_id != l.diff_id {
                return Err(Error::Image {
                    what: l.digest.clone(),
                    message: format!(
                        "diff_id {} does not match the imported cache's {}",
                        applied.diff_id, l.diff_id
                    ),
                });
            }
            Ok(())
        })();
        if let Err(e) = r {
            let _ = sn.remove(&active);
            return Err(e);
        }
        let (name, _) = self.commit_step(key, &active, false)?;
        let created = Some(entry.created.clone().unwrap_or_else(now_rfc3339));
        solver.cache.put(
            key,
            &CacheRecord {
                snapshot: name.clone(),
                layer: entry.layer.clone(),
                created: created.clone(),
            },
        )?;
        let mut layers = parent.map(|p| p.layers.clone()).unwrap_or_default();
        if let Some(l) = &entry.layer {
            layers.push(l.clone());
        }
        Ok(Some(FsState {
            key: key.clone(),
            snapshot: Some(name),
            layers,
            own_layer: entry.layer.clone(),
            created,
            label: String::new(),
        }))
    }
}

/// How a step is named in an explanation: its instruction and line.
pub(super) fn step_label(step: &StepPlan) -> String {
    format!("`{}` (line {})", step.instruction, step.line)
}

/// The current time in RFC 3339 (a step's creation time, kept in its cache record).
pub(super) fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    #[allow(clippy::cast_possible_wrap)]
    kiln_image::spec::format_rfc3339(now.as_secs() as i64, now.subsec_nanos())
}
