//! The build DAG's shape: stage tails, step sources, history steps, chain ids and the steps a
//! cache export holds.

use super::*;

/// The steps a cache export holds: every step built (`max`), or the final image's chain.
pub(super) fn cache_entries(
    ctx: &BuildCtx<'_>,
    g: &DiGraph<Vertex, ()>,
    results: &[Arc<FsState>],
    tail: Option<NodeIndex>,
    max: bool,
) -> std::collections::BTreeMap<String, CacheEntry> {
    let entry = |s: usize| {
        let v = ctx.vertex_of_step[s];
        let parent = ctx
            .parent_vertex(s)
            .map(|p| results[p.index()].key.0.clone());
        (
            results[v.index()].key.0.clone(),
            CacheEntry {
                parent,
                layer: results[v.index()].own_layer.clone(),
                created: results[v.index()].created.clone(),
            },
        )
    };
    if max {
        return (0..ctx.plan.steps.len())
            .filter(|s| results.len() > ctx.vertex_of_step[*s].index())
            .map(entry)
            .collect();
    }
    let mut out = std::collections::BTreeMap::new();
    let mut cur = tail;
    while let Some(v) = cur {
        let Vertex::Step(s) = g[v] else { break };
        let (k, e) = entry(s);
        out.insert(k, e);
        cur = ctx.parent_vertex(s);
    }
    out
}

impl Solver {
    /// Makes sure an imported step's layer blob is in the content store.
    pub(crate) fn imported_layer(&self, imported: &Imported, key: &str) -> Result<()> {
        imported.fetch_layer(&self.store, &self.registry, key)
    }
}

pub(super) fn tsp_history(plan: &Plan, stage: usize) -> Vec<Option<usize>> {
    plan.stages[stage]
        .as_ref()
        .map(|s| s.history_steps.clone())
        .unwrap_or_default()
}

/// The vertex holding a stage's final filesystem.
pub(super) fn stage_tail(
    plan: &Plan,
    stage: usize,
    images: &[NodeIndex],
    steps: &[NodeIndex],
) -> Option<NodeIndex> {
    let sp = plan.stages[stage].as_ref()?;
    if let Some(&last) = sp.steps.last() {
        return Some(steps[last]);
    }
    match &sp.base {
        BaseRef::Scratch => None,
        BaseRef::Image(i) => Some(images[*i]),
        BaseRef::Stage(b) => stage_tail(plan, *b, images, steps),
    }
}

pub(super) fn step_sources(step: &StepPlan) -> Vec<SourceRef> {
    match &step.op {
        Op::Copy(c) => vec![c.from.clone()],
        Op::Run(r) => r.mounts.iter().filter_map(|m| m.source.clone()).collect(),
        Op::Mkdir { .. } => Vec::new(),
    }
}

pub(crate) fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}
