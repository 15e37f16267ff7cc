//! One plan for several target platforms: each platform's plan is made on its own (its own
//! TARGETPLATFORM, base images resolved for it), then the plans are laid side by side in one
//! [`Plan`] so one DAG runs them all. Stage `s` of the `p`-th platform becomes stage
//! `p * stages + s`; steps and images are renumbered; an image two platforms resolved to the same
//! manifest (a `FROM --platform=$BUILDPLATFORM` base) is kept once, so its vertex runs once, and
//! identical steps meet again in the build's in-flight map by their equal keys.

use super::{BaseRef, MountPlan, Op, Plan, SourceRef};

/// The merged plan, the images of its [`Plan::images`], and each platform's target stage.
pub(crate) struct Merged<I> {
    pub(crate) plan: Plan,
    pub(crate) images: Vec<I>,
    /// Per platform, in the order given: its target stage in the merged plan.
    pub(crate) targets: Vec<usize>,
}

/// Lays `parts` (one plan per platform, each with the images its [`Plan::images`] resolved to)
/// side by side (`None` for no plans). `stages` is the Dockerfile's stage count; `same` says whether two resolved
/// images are the same one (the same manifest). With several platforms each stage's name is
/// prefixed with its platform (`linux/arm64 build`), as BuildKit names multi-platform steps.
pub(crate) fn merge<I>(
    parts: Vec<(Plan, Vec<I>)>,
    stages: usize,
    same: impl Fn(&I, &I) -> bool,
) -> Option<Merged<I>> {
    let several = parts.len() > 1;
    let mut out: Option<Plan> = None;
    let mut images: Vec<I> = Vec::new();
    let mut targets = Vec::new();
    for (p, (plan, imgs)) in parts.into_iter().enumerate() {
        let stage_off = p * stages;
        let merged = out.get_or_insert_with(|| Plan {
            stages: Vec::new(),
            target: plan.target,
            steps: Vec::new(),
            images: Vec::new(),
            image_platforms: Vec::new(),
            platform: plan.platform.clone(),
            warnings: Vec::new(),
        });
        let step_off = merged.steps.len();
        // Where each of this plan's images went.
        let mut image_at = Vec::with_capacity(imgs.len());
        for (i, img) in imgs.into_iter().enumerate() {
            let (reference, config) = plan.images[i].clone();
            let platform = plan.image_platforms[i].clone();
            if let Some(j) = images.iter().position(|seen| same(seen, &img)) {
                image_at.push(j);
                continue;
            }
            image_at.push(images.len());
            images.push(img);
            merged.images.push((reference, config));
            merged.image_platforms.push(platform);
        }
        let source = |s: &SourceRef| match s {
            SourceRef::Context => SourceRef::Context,
            SourceRef::Stage(t) => SourceRef::Stage(t + stage_off),
            SourceRef::Image(i) => SourceRef::Image(image_at[*i]),
        };
        for mut step in plan.steps {
            step.stage += stage_off;
            match &mut step.op {
                Op::Copy(c) => c.from = source(&c.from),
                Op::Run(r) => {
                    for MountPlan { source: s, .. } in &mut r.mounts {
                        if let Some(src) = s {
                            *src = source(src);
                        }
                    }
                }
                Op::Mkdir { .. } => {}
            }
            merged.steps.push(step);
        }
        for (si, st) in plan.stages.into_iter().enumerate() {
            merged.stages.push(st.map(|mut st| {
                st.base = match st.base {
                    BaseRef::Scratch => BaseRef::Scratch,
                    BaseRef::Image(i) => BaseRef::Image(image_at[i]),
                    BaseRef::Stage(b) => BaseRef::Stage(b + stage_off),
                };
                for s in &mut st.steps {
                    *s += step_off;
                }
                for h in st.history_steps.iter_mut().flatten() {
                    *h += step_off;
                }
                if several {
                    let name = if st.name.parse::<usize>().is_ok() {
                        format!("stage-{si}")
                    } else {
                        st.name.clone()
                    };
                    st.name = format!("{} {name}", st.platform);
                }
                st
            }));
        }
        for w in plan.warnings {
            if !merged.warnings.contains(&w) {
                merged.warnings.push(w);
            }
        }
        targets.push(plan.target + stage_off);
    }
    Some(Merged {
        plan: out?,
        images,
        targets,
    })
}
