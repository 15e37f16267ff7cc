//! The image of a target stage once the DAG ran: its layers (the tail vertex's), the config
//! the planner folded with the history stamped (step times from their cache records, or the
//! epoch), written to the content store. One per platform; several are then indexed.

use super::*;

impl BuildCtx<'_> {
    /// Writes the image of stage `target` (of the merged plan) and returns it with its final
    /// snapshot.
    pub(super) fn target_image(
        &self,
        results: &[Arc<FsState>],
        target: usize,
    ) -> Result<(Image, Option<String>)> {
        let plan = self.plan;
        let tail_v = stage_tail(plan, target, &self.vertex_of_image, &self.vertex_of_step);
        let fs = tail_v.map(|v| results[v.index()].clone());
        let tsp = plan.stages[target].as_ref().ok_or_else(|| Error::Plan {
            line: 0,
            message: "target not planned".into(),
        })?;
        let mut config = tsp.config.clone();
        let layers: Vec<LayerRecord> = fs.as_ref().map(|f| f.layers.clone()).unwrap_or_default();
        let epoch = self.req.epoch();
        let mut diff_ids = Vec::new();
        for l in &layers {
            diff_ids.push(Digest::parse(&l.diff_id).map_err(img_err("diff_id"))?);
        }
        config.rootfs.diff_ids = diff_ids;
        let steps_of_history = tsp_history(plan, target);
        // The base image's entries (kept as they are, as BuildKit keeps them under an epoch).
        let base_len = config
            .history
            .iter()
            .zip(steps_of_history.iter().chain(std::iter::repeat(&None)))
            .take_while(|(h, s)| s.is_none() && h.created.is_some())
            .count();
        for (h, step) in config.history.iter_mut().zip(steps_of_history) {
            if let Some(s) = step {
                let st = &results[self.vertex_of_step[s].index()];
                h.empty_layer = st.own_layer.is_none();
                // A step's time is when it really ran (its cache record's), as BuildKit takes
                // a layer's time from its ref: a cached rebuild is the same image.
                if h.created.is_none() {
                    h.created.clone_from(&st.created);
                }
            }
        }
        history::stamp_history(&mut config.history, base_len, epoch);
        // As BuildKit's exporter: the epoch, else the latest history time.
        config.created = match epoch {
            Some(secs) => Some(kiln_image::spec::format_rfc3339(secs, 0)),
            None => config
                .history
                .iter()
                .rev()
                .find_map(|h| h.created.clone())
                .or_else(|| Some(step::now_rfc3339())),
        };
        let mut descs = Vec::new();
        for l in &layers {
            descs.push(Descriptor::new(
                l.media_type.clone(),
                Digest::parse(&l.digest).map_err(img_err("layer digest"))?,
                l.size,
            ));
        }
        let image = kiln_image::write_image(&self.solver.store, &config, &descs)
            .map_err(img_err("write"))?;
        Ok((image, fs.and_then(|f| f.snapshot.clone())))
    }
}
