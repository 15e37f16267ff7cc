//! Planning's entry point: the target stage, the builtin platform ARGs and the meta ARGs, then
//! the target planned (and through it every stage it needs), unused build args warned about,
//! labels and, when a platform was asked for, the target's os/architecture set on the image.

use std::collections::BTreeSet;

use kiln_image::{ImageConfig, Platform};
use kiln_parser::Instruction;
use kiln_parser::shell::Lexer;

use super::{EnvList, ImageResolver, PROXY_ARGS, Plan, PlanInput, Planner};
use crate::error::{Error, Result};

/// Plans a build. `resolve` pulls an image and returns its config.
pub(crate) fn plan<'a>(
    df: &'a kiln_parser::Dockerfile,
    input: &'a PlanInput<'a>,
    resolve: &'a mut ImageResolver<'a>,
) -> Result<Plan> {
    if df.stages.is_empty() {
        return Err(Error::Plan {
            line: 0,
            message: "dockerfile contains no stages to build".into(),
        });
    }
    let lex = Lexer::new(df.escape);
    let target = match input.target {
        Some(t) if !t.is_empty() => {
            let lower = t.to_lowercase();
            df.stages
                .iter()
                .position(|s| s.name.as_deref() == Some(lower.as_str()))
                .ok_or_else(|| Error::Plan {
                    line: 0,
                    message: format!("target stage {t:?} could not be found"),
                })?
        }
        _ => df.stages.len() - 1,
    };
    // Builtin args (BuildKit's defaultArgs: the platforms and the target stage's name, each
    // overridden by a build arg of its name), then the meta ARGs (build args override their
    // defaults).
    let mut global = EnvList::default();
    let target_name = match input.target {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => df.stages[target].name.clone().unwrap_or_default(),
    };
    let mut builtin: Vec<(String, String)> = Vec::new();
    for (prefix, p) in [
        ("BUILD", &input.platforms.build),
        ("TARGET", &input.platforms.target),
    ] {
        builtin.push((format!("{prefix}PLATFORM"), p.to_string()));
        builtin.push((format!("{prefix}OS"), p.os.clone()));
        builtin.push((format!("{prefix}ARCH"), p.architecture.clone()));
        builtin.push((
            format!("{prefix}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        ));
    }
    builtin.push(("TARGETSTAGE".into(), target_name));
    for (k, v) in &builtin {
        let over = input.build_args.iter().rev().find(|(name, _)| name == k);
        global.set(k, over.map_or(v.as_str(), |(_, v)| v.as_str()));
    }
    let mut used_args = BTreeSet::new();
    for g in &df.global {
        if let Instruction::Arg(decls) = &g.instruction {
            for d in decls {
                let v = match input.build_args.iter().rev().find(|(k, _)| *k == d.name) {
                    Some((_, v)) => Some(v.clone()),
                    None => match &d.default {
                        Some(def) => {
                            Some(lex.process_word(def, &global.0).map_err(|e| Error::Plan {
                                line: g.start_line,
                                message: e.message().to_string(),
                            })?)
                        }
                        None => None,
                    },
                };
                if let Some(v) = v {
                    global.set(&d.name, &v);
                }
                used_args.insert(d.name.clone());
            }
        }
    }
    let n = df.stages.len();
    let mut p = Planner {
        _r: std::marker::PhantomData,
        df,
        lex,
        input,
        resolve,
        global,
        used_args,
        plan: Plan {
            stages: vec![None; n],
            target,
            steps: Vec::new(),
            images: Vec::new(),
            image_platforms: Vec::new(),
            platform: input.platforms.target.clone(),
            warnings: Vec::new(),
        },
        finals: vec![None; n],
        in_progress: vec![false; n],
    };
    p.stage(target)?;
    let mut unused: Vec<String> = input
        .build_args
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| {
            !p.used_args.contains(k)
                && !PROXY_ARGS.contains(&k.as_str())
                && k != "SOURCE_DATE_EPOCH"
                && !k.starts_with("BUILDKIT_")
                && p.global.get(k).is_none()
        })
        .collect();
    unused.sort();
    unused.dedup();
    if !unused.is_empty() {
        p.plan.warnings.push(format!(
            "[Warning] One or more build-args [{}] were not consumed",
            unused.join(" ")
        ));
    }
    let mut plan = p.plan;
    if let Some(Some(t)) = plan.stages.get_mut(target) {
        if input.platforms.explicit {
            set_image_platform(&mut t.config, &input.platforms.target);
        }
        normalize_image_platform(&mut t.config);
    }
    if let Some(Some(t)) = plan.stages.get_mut(target)
        && !input.labels.is_empty()
    {
        let mut labels = t.config.config.labels.clone().unwrap_or_default();
        for (k, v) in input.labels {
            labels.insert(k.clone(), v.clone());
        }
        t.config.config.labels = Some(labels);
    }
    Ok(plan)
}

/// The image's os/architecture/variant in containerd's normal form (arm64's `v8` is no
/// variant), as BuildKit's `finalizeResultImage` leaves every result image.
fn normalize_image_platform(config: &mut ImageConfig) {
    let p = Platform::normalized(
        &config.os,
        &config.architecture,
        config.variant.as_deref().unwrap_or_default(),
    );
    config.os = p.os;
    config.architecture = p.architecture;
    config.variant = p.variant;
}

/// The target's os/architecture in the image config, as BuildKit's `finalizeResultImage`
/// writes them when a platform was asked for: the variant (and OS version) only when the
/// target has one or the os/architecture changed.
fn set_image_platform(config: &mut ImageConfig, target: &Platform) {
    let same = config.os == target.os && config.architecture == target.architecture;
    config.os.clone_from(&target.os);
    config.architecture.clone_from(&target.architecture);
    if target.variant.is_some() || !same {
        config.variant.clone_from(&target.variant);
    }
    if target.os_version.is_some() || !same {
        config.os_version.clone_from(&target.os_version);
    }
}
