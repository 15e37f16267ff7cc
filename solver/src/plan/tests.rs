//! The planner's unit tests: ARG/ENV scoping, stages, ONBUILD, COPY sources, platforms.

use super::*;

fn base_config() -> ImageConfig {
    let mut c = ImageConfig::new(&Platform::linux_amd64());
    c.config.env = Some(vec!["PATH=/bin".into()]);
    c.config.cmd = Some(vec!["sh".into()]);
    c.config.on_build = Some(vec!["RUN echo trig".into()]);
    c
}

fn plan_of(src: &str, args: &[(&str, &str)], target: Option<&str>) -> Result<Plan> {
    plan_for(src, args, target, Platforms::default()).map(|(p, _)| p)
}

/// Plans `src` for `platforms`; also returns every (reference, platform) resolved.
fn plan_for(
    src: &str,
    args: &[(&str, &str)],
    target: Option<&str>,
    platforms: Platforms,
) -> Result<(Plan, Vec<(String, String)>)> {
    let df = kiln_parser::parse(src.as_bytes()).map_err(Error::Parse)?;
    let args: Vec<(String, String)> = args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let input = PlanInput {
        build_args: &args,
        target,
        no_cache: false,
        no_cache_filter: &[],
        network: NetworkMode::Default,
        labels: &[],
        platforms,
    };
    let mut resolved = Vec::new();
    let mut resolver = |r: &str, p: &Platform| -> Result<ImageConfig> {
        resolved.push((r.to_string(), p.to_string()));
        if r.contains("missing") {
            return Err(Error::Image {
                what: r.into(),
                message: "not found".into(),
            });
        }
        let mut c = base_config();
        // As real images: `amd64only` has no other platform; arm64 configs say `v8`.
        if !r.contains("amd64only") {
            c.architecture.clone_from(&p.architecture);
            c.variant.clone_from(&p.variant);
            if p.architecture == "arm64" {
                c.variant = Some("v8".into());
            }
        }
        if !r.contains("onbuild") {
            c.config.on_build = None;
        }
        Ok(c)
    };
    let plan = plan(&df, &input, &mut resolver)?;
    Ok((plan, resolved))
}

fn run_env(p: &Plan, step: usize) -> Vec<String> {
    match &p.steps[step].op {
        Op::Run(r) => r.env.clone(),
        other => panic!("not a run: {other:?}"),
    }
}

#[test]
fn arg_env_precedence_and_scope() {
    let p = plan_of(
        "ARG TAG=latest\nARG GLOBAL=g1\nFROM img:${TAG}\nARG GLOBAL\nARG LOCAL=l1\nARG X=arg\nENV X=env\nARG Y\nRUN echo\n",
        &[("X", "cli"), ("UNUSED", "1")],
        None,
    )
    .expect("plan");
    let env = run_env(&p, 0);
    assert!(env.contains(&"GLOBAL=g1".to_string()), "{env:?}");
    assert!(env.contains(&"LOCAL=l1".to_string()));
    assert!(env.contains(&"X=env".to_string()));
    assert!(
        !env.iter()
            .any(|e| e.starts_with("TAG=") || e.starts_with("Y="))
    );
    assert_eq!(p.images[0].0, "img:latest");
    assert_eq!(
        p.warnings,
        vec!["[Warning] One or more build-args [UNUSED] were not consumed".to_string()]
    );
}

#[test]
fn env_same_line_sees_old_value_and_config_folds() {
    let p = plan_of(
        "FROM img\nENV X=old\nENV X=new Y=$X\nLABEL a=$Y\nENTRYPOINT [\"/bin/cat\"]\n",
        &[],
        None,
    )
    .expect("plan");
    let cfg = &p.stages[0].as_ref().expect("stage").config;
    assert_eq!(
        cfg.config
            .labels
            .as_ref()
            .and_then(|l| l.get("a"))
            .map(String::as_str),
        Some("old")
    );
    assert!(
        cfg.config
            .env
            .as_ref()
            .expect("env")
            .contains(&"Y=old".to_string())
    );
    assert_eq!(cfg.config.cmd, None, "ENTRYPOINT clears the base CMD");
    assert!(cfg.history.iter().all(|h| h.empty_layer));
}

#[test]
fn only_needed_stages_and_target() {
    let src = "FROM img AS broken\nRUN exit 7\nFROM img AS a\nRUN echo a\nFROM a AS b\nRUN echo b\nFROM img\nCOPY --from=b /x /x\n";
    let p = plan_of(src, &[], None).expect("plan");
    assert!(p.stages[0].is_none(), "unused stage not planned");
    assert!(p.stages[1].is_some() && p.stages[2].is_some());
    let p = plan_of(src, &[], Some("a")).expect("plan");
    assert_eq!(p.target, 1);
    assert!(p.stages[2].is_none() && p.stages[3].is_none());
    assert!(
        plan_of(src, &[], Some("nope"))
            .expect_err("unknown target")
            .to_string()
            .contains("could not be found")
    );
}

#[test]
fn workdir_and_copy_dest_paths() {
    let p = plan_of("FROM img\nWORKDIR /a\nWORKDIR b\nWORKDIR ../c\nCOPY x rel.txt\nCOPY x .\nCOPY x y /multi/\n", &[], None).expect("plan");
    let cfg = &p.stages[0].as_ref().expect("stage").config;
    assert_eq!(cfg.config.working_dir.as_deref(), Some("/a/c"));
    let dests: Vec<String> = p
        .steps
        .iter()
        .filter_map(|s| match &s.op {
            Op::Copy(c) => Some(c.dest.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(dests, vec!["/a/c/rel.txt", "/a/c/", "/multi/"]);
    let err = plan_of("FROM img\nCOPY a b /notdir\n", &[], None).expect_err("multi to file");
    assert!(err.to_string().contains("Dockerfile:2"), "{err}");
}

#[test]
fn onbuild_triggers_run_first() {
    let p = plan_of("FROM img-onbuild\nRUN echo mine\n", &[], None).expect("plan");
    assert_eq!(p.steps.len(), 2);
    assert!(p.steps[0].instruction.starts_with("ONBUILD RUN echo trig"));
    assert!(
        p.stages[0]
            .as_ref()
            .expect("stage")
            .config
            .config
            .on_build
            .is_none()
    );
}

#[test]
fn shell_form_uses_shell_and_heredocs() {
    let p = plan_of(
        "FROM img\nSHELL [\"/bin/sh\", \"-ec\"]\nRUN echo $0\nRUN <<EOF\necho hi\nEOF\n",
        &[],
        None,
    )
    .expect("plan");
    match &p.steps[0].op {
        Op::Run(r) => assert_eq!(r.args, vec!["/bin/sh", "-ec", "echo $0"]),
        _ => panic!("run"),
    }
    match &p.steps[1].op {
        Op::Run(r) => assert_eq!(r.args, vec!["/bin/sh", "-ec", "echo hi\n"]),
        _ => panic!("run"),
    }
}

#[test]
fn expose_ranges_and_healthcheck() {
    let p = plan_of(
        "FROM img\nEXPOSE 80 53/udp 8000-8001\nHEALTHCHECK --interval=5s --retries=2 CMD true\n",
        &[],
        None,
    )
    .expect("plan");
    let cfg = &p.stages[0].as_ref().expect("stage").config.config;
    let ports: Vec<&str> = cfg
        .exposed_ports
        .as_ref()
        .expect("ports")
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(ports, vec!["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
    let hc = cfg.healthcheck.as_ref().expect("hc");
    assert_eq!(hc.test, vec!["CMD-SHELL", "true"]);
    assert_eq!((hc.interval, hc.retries), (5_000_000_000, 2));
}

#[test]
fn meta_args_in_from_and_copy_from_rules() {
    let p = plan_of(
        "ARG TAG=1\nFROM img:$TAG AS a\nRUN echo $TAG\nFROM img\nCOPY --from=0 /x /x\n",
        &[("TAG", "2")],
        None,
    )
    .expect("plan");
    assert!(
        p.images.iter().any(|(r, _)| r == "img:2"),
        "build arg overrides the meta ARG in FROM: {:?}",
        p.images.iter().map(|i| &i.0).collect::<Vec<_>>()
    );
    assert!(
        !run_env(&p, 0).iter().any(|e| e.starts_with("TAG=")),
        "meta ARG not in scope unless re-declared"
    );
    let copy_from = p.steps.iter().find_map(|s| match &s.op {
        Op::Copy(c) => Some(c.from.clone()),
        _ => None,
    });
    assert_eq!(copy_from, Some(SourceRef::Stage(0)), "--from by index");
    let err = plan_of("FROM img AS a\nARG S=a\nCOPY --from=$S /x /x\n", &[], None)
        .expect_err("expansion in --from");
    assert!(
        err.to_string()
            .contains("variable expansion is not supported for --from"),
        "{err}"
    );
    let err = plan_of(
        "FROM img AS first\nCOPY --from=later /x /x\nFROM img AS later\nFROM img\nCOPY --from=first /y /y\n",
        &[],
        None,
    )
    .expect_err("later stage");
    assert!(err.to_string().contains("Dockerfile:2"), "{err}");
}

#[test]
fn stage_inherits_env_args_and_onbuild_of_base_stage() {
    let p = plan_of(
        "FROM img AS base\nARG A=1\nENV E=2\nONBUILD RUN echo trig\nFROM base\nRUN echo $A $E\n",
        &[],
        None,
    )
    .expect("plan");
    assert_eq!(
        p.steps.len(),
        2,
        "the ONBUILD trigger runs in the child stage"
    );
    assert!(p.steps[0].instruction.starts_with("ONBUILD RUN echo trig"));
    let env = run_env(&p, 1);
    assert!(
        env.contains(&"A=1".to_string()) && env.contains(&"E=2".to_string()),
        "{env:?}"
    );
    assert!(
        p.stages[1]
            .as_ref()
            .expect("stage")
            .config
            .config
            .on_build
            .is_none()
    );
}

fn arm64_target() -> Platforms {
    Platforms {
        build: Platform::linux_amd64(),
        target: Platform::parse("linux/arm64").expect("platform"),
        explicit: true,
    }
}

fn stage_platform(p: &Plan, i: usize) -> String {
    p.stages[i].as_ref().expect("stage").platform.to_string()
}

#[test]
fn platform_args_are_global_and_need_redeclaring_in_a_stage() {
    let src = "FROM img\nRUN echo $TARGETARCH\nARG TARGETARCH\nARG BUILDPLATFORM\nRUN echo\n";
    let (p, _) = plan_for(src, &[], None, arm64_target()).expect("plan");
    let before = run_env(&p, 0);
    assert!(
        !before.iter().any(|e| e.starts_with("TARGETARCH=")),
        "not in the stage before ARG: {before:?}"
    );
    let after = run_env(&p, 1);
    assert!(after.contains(&"TARGETARCH=arm64".to_string()), "{after:?}");
    assert!(
        after.contains(&"BUILDPLATFORM=linux/amd64".to_string()),
        "{after:?}"
    );
}

#[test]
fn a_redeclared_platform_arg_takes_its_default_or_a_build_arg() {
    let src = "FROM img\nARG TARGETOS=plan9\nARG TARGETVARIANT\nRUN echo\n";
    let (p, _) = plan_for(src, &[], None, arm64_target()).expect("plan");
    let env = run_env(&p, 0);
    assert!(env.contains(&"TARGETOS=plan9".to_string()), "{env:?}");
    assert!(env.contains(&"TARGETVARIANT=".to_string()), "{env:?}");
    let (p, _) = plan_for(src, &[("TARGETOS", "fromarg")], None, arm64_target()).expect("plan");
    assert!(run_env(&p, 0).contains(&"TARGETOS=fromarg".to_string()));
}

#[test]
fn from_expands_platform_args_in_the_name_and_in_platform() {
    let src = "FROM --platform=$BUILDPLATFORM img:$TARGETARCH AS build\nRUN echo\n\
               FROM img:${TARGETOS}-x\nCOPY --from=build /a /a\n";
    let (p, resolved) = plan_for(src, &[], None, arm64_target()).expect("plan");
    assert_eq!(
        resolved,
        vec![
            ("img:linux-x".to_string(), "linux/arm64".to_string()),
            ("img:arm64".to_string(), "linux/amd64".to_string()),
        ]
    );
    assert_eq!(stage_platform(&p, 0), "linux/amd64");
    assert_eq!(stage_platform(&p, 1), "linux/arm64");
    let Op::Run(r) = &p.steps[0].op else {
        panic!("not a run")
    };
    assert_eq!(
        r.platform.to_string(),
        "linux/amd64",
        "runs as the build platform"
    );
    let target = p.stages[1].as_ref().expect("stage");
    assert_eq!(target.config.architecture, "arm64");
}

#[test]
fn a_meta_arg_can_name_the_platform_and_bad_values_name_the_line() {
    let src = "ARG P=linux/arm/v7\nFROM --platform=$P img\nRUN echo\n";
    let (p, resolved) = plan_for(src, &[], None, Platforms::default()).expect("plan");
    assert_eq!(resolved[0].1, "linux/arm/v7");
    assert_eq!(stage_platform(&p, 0), "linux/arm/v7");
    let err = plan_for(
        "FROM --platform=$NOPE img\n",
        &[],
        None,
        Platforms::default(),
    )
    .expect_err("empty");
    assert_eq!(
        err.to_string(),
        "Dockerfile:1: empty platform value from expression $NOPE"
    );
    let err = plan_for(
        "\nFROM --platform=linux/a/b/c img\n",
        &[],
        None,
        Platforms::default(),
    )
    .expect_err("invalid");
    assert!(
        err.to_string()
            .starts_with("Dockerfile:2: failed to parse platform linux/a/b/c: "),
        "{err}"
    );
}

#[test]
fn scratch_is_the_target_platform_and_the_image_says_the_target() {
    let src = "FROM --platform=linux/amd64 scratch\nCOPY a /a\n";
    let (p, _) = plan_for(src, &[], None, arm64_target()).expect("plan");
    let st = p.stages[0].as_ref().expect("stage");
    assert_eq!(st.platform.to_string(), "linux/arm64");
    assert_eq!(st.config.architecture, "arm64");
    // A base image of another architecture is relabelled when a platform was asked for
    // (BuildKit's finalizeResultImage), and kept when none was.
    let src = "FROM --platform=linux/amd64 img\n";
    let (p, _) = plan_for(src, &[], None, arm64_target()).expect("plan");
    let cfg = &p.stages[0].as_ref().expect("stage").config;
    assert_eq!(
        (cfg.os.as_str(), cfg.architecture.as_str()),
        ("linux", "arm64")
    );
    let implicit = Platforms {
        explicit: false,
        ..arm64_target()
    };
    let (p, _) = plan_for(src, &[], None, implicit).expect("plan");
    assert_eq!(
        p.stages[0].as_ref().expect("stage").config.architecture,
        "amd64"
    );
}

#[test]
fn copy_from_an_image_resolves_it_for_the_target() {
    let src = "FROM --platform=linux/amd64 img\nCOPY --from=other:1 /a /a\n";
    let (_, resolved) = plan_for(src, &[], None, arm64_target()).expect("plan");
    assert_eq!(
        resolved[1],
        ("other:1".to_string(), "linux/arm64".to_string())
    );
}

#[test]
fn merged_plans_renumber_share_the_native_base_and_name_stages_by_platform() {
    let src = "FROM --platform=$BUILDPLATFORM img AS build\nRUN echo\nFROM img\nCOPY --from=build /a /a\n";
    let mut parts = Vec::new();
    for target in ["linux/amd64", "linux/arm64"] {
        let platforms = Platforms {
            build: Platform::linux_amd64(),
            target: Platform::parse(target).expect("platform"),
            explicit: true,
        };
        let (p, resolved) = plan_for(src, &[], None, platforms).expect("plan");
        // The "manifest" of each resolved image: its reference and platform.
        let images: Vec<String> = resolved.iter().map(|(r, p)| format!("{r}@{p}")).collect();
        parts.push((p, images));
    }
    let m = merge(parts, 2, |a: &String, b: &String| a == b).expect("merged");
    assert_eq!(m.targets, vec![1, 3]);
    // img@amd64 once (both platforms' build stage and amd64's target), img@arm64 once.
    assert_eq!(
        m.images,
        vec!["img@linux/amd64".to_string(), "img@linux/arm64".to_string()]
    );
    let stage = |i: usize| m.plan.stages[i].as_ref().expect("stage");
    assert_eq!(stage(0).name, "linux/amd64 build");
    assert_eq!(
        stage(2).name,
        "linux/amd64 build",
        "the build stage runs as the build platform"
    );
    assert_eq!(stage(3).name, "linux/arm64 stage-1");
    assert_eq!(
        stage(2).base,
        BaseRef::Image(0),
        "the arm64 plan's build stage shares amd64's base"
    );
    assert_eq!(stage(3).base, BaseRef::Image(1));
    // The second plan's COPY points at its own build stage (2), and its steps follow the first's.
    assert_eq!(stage(3).steps, vec![3]);
    let Op::Copy(c) = &m.plan.steps[3].op else {
        panic!("not a copy")
    };
    assert_eq!(c.from, SourceRef::Stage(2));
    assert_eq!(m.plan.steps[3].stage, 3);
}

#[test]
fn build_args_override_the_platform_args_and_targetstage_names_the_target() {
    let src = "FROM img:$TARGETARCH AS first\nARG TARGETSTAGE\nRUN echo\nFROM img AS last\nARG TARGETSTAGE\nRUN echo\n";
    let (p, resolved) =
        plan_for(src, &[("TARGETARCH", "riscv64")], None, arm64_target()).expect("plan");
    assert_eq!(resolved[0].0, "img", "the target stage's base first");
    assert!(
        resolved.iter().all(|(r, _)| r != "img:arm64"),
        "{resolved:?}"
    );
    assert!(run_env(&p, 0).contains(&"TARGETSTAGE=last".to_string()));
    let (p, resolved) = plan_for(
        src,
        &[("TARGETARCH", "riscv64")],
        Some("first"),
        arm64_target(),
    )
    .expect("plan");
    assert_eq!(
        resolved,
        vec![("img:riscv64".to_string(), "linux/arm64".to_string())]
    );
    assert!(run_env(&p, 0).contains(&"TARGETSTAGE=first".to_string()));
}

#[test]
fn the_image_platform_is_normalised_as_buildkit_leaves_it() {
    // An arm64 base says `variant: v8`; BuildKit's result says arm64 with no variant.
    let (p, _) = plan_for("FROM img\nRUN echo\n", &[], None, arm64_target()).expect("plan");
    let cfg = &p.stages[0].as_ref().expect("stage").config;
    assert_eq!(
        (cfg.architecture.as_str(), cfg.variant.as_deref()),
        ("arm64", None)
    );
    let implicit = Platforms {
        explicit: false,
        ..arm64_target()
    };
    let (p, _) = plan_for("FROM img\n", &[], None, implicit).expect("plan");
    assert_eq!(p.stages[0].as_ref().expect("stage").config.variant, None);
}

#[test]
fn a_base_image_of_another_platform_warns_as_buildkit_does() {
    let (p, _) = plan_for(
        "FROM amd64only:1\nCOPY --from=amd64only:2 /a /a\n",
        &[],
        None,
        arm64_target(),
    )
    .expect("plan");
    assert_eq!(
        p.warnings,
        vec![
            "InvalidBaseImagePlatform: Base image amd64only:1 was pulled with platform \"linux/amd64\", expected \"linux/arm64\" for current build (line 1)".to_string(),
            "InvalidBaseImagePlatform: Base image amd64only:2 was pulled with platform \"linux/amd64\", expected \"linux/arm64\" for current build (line 2)".to_string(),
        ]
    );
    let (p, _) = plan_for("FROM img\n", &[], None, arm64_target()).expect("plan");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}
