//! The build DAG's shape: its vertices and edges, their progress numbering, stage tails, step
//! sources, history steps, chain ids and the steps a cache export holds.

use super::*;

/// The build's DAG: one vertex per base image and per step, an edge from each vertex to the
/// steps that read it (parent, `COPY --from`, `RUN --mount` source).
pub(super) struct Dag {
    pub(super) graph: DiGraph<Vertex, ()>,
    pub(super) vertex_of_image: Vec<NodeIndex>,
    pub(super) vertex_of_step: Vec<NodeIndex>,
    /// Per vertex: its 1-based position in progress order, and its step id.
    pub(super) step_ids: Vec<(usize, StepId)>,
}

impl Dag {
    /// The DAG of `plan` over `images` base images, numbered for progress in Dockerfile order
    /// (FROM images first, then steps by line) of `df`.
    pub(super) fn of(plan: &Plan, images: usize, df: &kiln_parser::Dockerfile) -> Self {
        let mut g: DiGraph<Vertex, ()> = DiGraph::new();
        let vertex_of_image: Vec<NodeIndex> =
            (0..images).map(|i| g.add_node(Vertex::Image(i))).collect();
        let vertex_of_step: Vec<NodeIndex> = (0..plan.steps.len())
            .map(|s| g.add_node(Vertex::Step(s)))
            .collect();
        let tail = |stage: usize| stage_tail(plan, stage, &vertex_of_image, &vertex_of_step);
        for sp in plan.stages.iter().flatten() {
            let mut prev = match &sp.base {
                BaseRef::Scratch => None,
                BaseRef::Image(i) => Some(vertex_of_image[*i]),
                BaseRef::Stage(b) => tail(*b),
            };
            for &s in &sp.steps {
                let v = vertex_of_step[s];
                if let Some(p) = prev {
                    g.add_edge(p, v, ());
                }
                for src in step_sources(&plan.steps[s]) {
                    let sv = match src {
                        SourceRef::Context => None,
                        SourceRef::Stage(t) => tail(t),
                        SourceRef::Image(i) => Some(vertex_of_image[i]),
                    };
                    if let Some(sv) = sv
                        && Some(sv) != prev
                    {
                        g.add_edge(sv, v, ());
                    }
                }
                prev = Some(v);
            }
        }
        // Stage `s` of a merged plan is the Dockerfile's stage `s % stages`.
        let stages = df.stages.len().max(1);
        let mut order: Vec<(usize, usize, NodeIndex)> = Vec::new();
        for (i, v) in vertex_of_image.iter().enumerate() {
            let line = plan
                .stages
                .iter()
                .enumerate()
                .find_map(|(si, s)| {
                    s.as_ref()
                        .filter(|s| s.base == BaseRef::Image(i))
                        .map(|_| df.stages[si % stages].start_line)
                })
                .unwrap_or(0);
            order.push((line, 0, *v));
        }
        for (s, v) in vertex_of_step.iter().enumerate() {
            order.push((plan.steps[s].line, 1 + s, *v));
        }
        order.sort();
        let mut step_ids = vec![(0, StepId(0)); g.node_count()];
        for (n, (_, _, v)) in order.iter().enumerate() {
            step_ids[v.index()] = (n + 1, StepId(n));
        }
        Self {
            graph: g,
            vertex_of_image,
            vertex_of_step,
            step_ids,
        }
    }
}

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
