//! One test per rule: a Dockerfile where it fires (detail and line checked) and one where it
//! must not.

use std::collections::BTreeMap;

use kiln_checks::{BaseImage, BaseImages, CheckOptions, ContextIgnore, Platform, Report, check};

fn run_with(src: &str, opts: &CheckOptions<'_>) -> Report {
    check(src.as_bytes(), opts)
}

fn all(src: &str) -> CheckOptions<'static> {
    let _ = src;
    CheckOptions {
        all_stages: true,
        ..CheckOptions::default()
    }
}

/// (line, detail) of every warning of `rule`.
fn fired_with(src: &str, rule: &str, opts: &CheckOptions<'_>) -> Vec<(usize, String)> {
    run_with(src, opts)
        .warnings
        .iter()
        .filter(|w| w.rule.name == rule)
        .map(|w| (w.line(), w.detail.clone()))
        .collect()
}

fn fired(src: &str, rule: &str) -> Vec<(usize, String)> {
    fired_with(src, rule, &all(src))
}

fn one(line: usize, detail: &str) -> Vec<(usize, String)> {
    vec![(line, detail.to_owned())]
}

#[test]
fn stage_name_casing() {
    assert_eq!(
        fired("FROM scratch AS Build\n", "StageNameCasing"),
        one(1, "Stage name 'Build' should be lowercase")
    );
    assert!(fired("FROM scratch AS build\n", "StageNameCasing").is_empty());
}

#[test]
fn from_as_casing() {
    assert_eq!(
        fired("from scratch AS base\n", "FromAsCasing"),
        one(1, "'AS' and 'from' keywords' casing do not match")
    );
    assert!(fired("FROM scratch AS base\nfrom scratch as b2\n", "FromAsCasing").is_empty());
    // Mixed-case FROM is ConsistentInstructionCasing's business, not this rule's.
    assert!(fired("From scratch as base\n", "FromAsCasing").is_empty());
}

#[test]
fn no_empty_continuation() {
    assert_eq!(
        fired("FROM scratch\nCOPY a \\\n\n  b\n", "NoEmptyContinuation"),
        one(4, "Empty continuation line")
    );
    assert!(fired("FROM scratch\nCOPY a \\\n  b\n", "NoEmptyContinuation").is_empty());
}

#[test]
fn consistent_instruction_casing() {
    assert_eq!(
        fired(
            "FROM scratch\nCOPY a /a\ncopy b /b\n",
            "ConsistentInstructionCasing"
        ),
        one(
            3,
            "Command 'copy' should match the case of the command majority (uppercase)"
        )
    );
    assert!(
        fired(
            "from scratch\ncopy a /a\nrun x\n",
            "ConsistentInstructionCasing"
        )
        .is_empty()
    );
}

#[test]
fn duplicate_stage_name() {
    assert_eq!(
        fired(
            "FROM scratch AS a\nFROM scratch AS A\n",
            "DuplicateStageName"
        ),
        one(
            2,
            "Duplicate stage name \"a\", stage names should be unique"
        )
    );
    assert!(
        fired(
            "FROM scratch AS a\nFROM scratch AS b\n",
            "DuplicateStageName"
        )
        .is_empty()
    );
}

#[test]
fn reserved_stage_name() {
    assert_eq!(
        fired("FROM scratch AS context\n", "ReservedStageName"),
        one(
            1,
            "Stage name should not use the same name as reserved stage \"context\""
        )
    );
    assert!(fired("FROM scratch AS ctx\n", "ReservedStageName").is_empty());
}

#[test]
fn json_args_recommended() {
    assert_eq!(
        fired("FROM scratch\nentrypoint run\n", "JSONArgsRecommended"),
        one(
            2,
            "JSON arguments recommended for entrypoint to prevent unintended behavior related to OS signals"
        )
    );
    assert!(fired("FROM scratch\nCMD [\"run\"]\n", "JSONArgsRecommended").is_empty());
    // A SHELL in a base stage is inherited.
    assert!(
        fired(
            "FROM scratch AS a\nSHELL [\"/bin/x\"]\nFROM a\nCMD run\n",
            "JSONArgsRecommended"
        )
        .is_empty()
    );
}

#[test]
fn maintainer_deprecated() {
    assert_eq!(
        fired("FROM scratch\nMAINTAINER me\n", "MaintainerDeprecated"),
        one(
            2,
            "Maintainer instruction is deprecated in favor of using label"
        )
    );
    assert!(
        fired(
            "FROM scratch\nLABEL maintainer=me\n",
            "MaintainerDeprecated"
        )
        .is_empty()
    );
}

#[test]
fn undefined_arg_in_from() {
    assert_eq!(
        fired("ARG VERSION=1\nFROM alpine:$VERSON\n", "UndefinedArgInFrom"),
        one(
            2,
            "FROM argument 'VERSON' is not declared (did you mean VERSION?)"
        )
    );
    // Declared without a value, and the automatic platform ARGs, are fine.
    assert!(
        fired(
            "ARG V\nFROM --platform=$BUILDPLATFORM alpine${V}\n",
            "UndefinedArgInFrom"
        )
        .is_empty()
    );
}

#[test]
fn workdir_relative_path() {
    assert_eq!(
        fired("FROM scratch\nWORKDIR app\n", "WorkdirRelativePath"),
        one(
            2,
            "Relative workdir \"app\" can have unexpected results if the base image changes"
        )
    );
    // Only the first WORKDIR of a stage chain counts.
    assert!(
        fired(
            "FROM scratch AS a\nWORKDIR /app\nFROM a\nWORKDIR sub\n",
            "WorkdirRelativePath"
        )
        .is_empty()
    );
}

#[test]
fn undefined_var() {
    assert_eq!(
        fired(
            "FROM scratch\nARG DIR_ASSETS=a\nCOPY $DIR_ASSET /\n",
            "UndefinedVar"
        ),
        one(
            3,
            "Usage of undefined variable '$DIR_ASSET' (did you mean $DIR_ASSETS?)"
        )
    );
    // RUN is not expanded by BuildKit; ARG without value and PATH are known.
    assert!(
        fired(
            "FROM scratch\nARG foo\nRUN echo $nope\nCOPY $foo$PATH /\n",
            "UndefinedVar"
        )
        .is_empty()
    );
}

#[test]
fn undefined_var_sees_base_image_env() {
    struct Img;
    impl BaseImages for Img {
        fn resolve(&self, _name: &str, _p: &Platform) -> Option<BaseImage> {
            Some(BaseImage {
                env: vec!["GOPATH=/go".into()],
                shell: Vec::new(),
                onbuild: Vec::new(),
                platform: Platform::linux_amd64(),
                has_layers: true,
            })
        }
    }
    let src = "FROM golang\nWORKDIR $GOPATH\nCOPY $GOPTH /\n";
    let opts = CheckOptions {
        all_stages: true,
        base_images: Some(&Img),
        ..CheckOptions::default()
    };
    assert_eq!(
        fired_with(src, "UndefinedVar", &opts),
        one(
            3,
            "Usage of undefined variable '$GOPTH' (did you mean $GOPATH?)"
        )
    );
}

#[test]
fn multiple_instructions_disallowed() {
    assert_eq!(
        fired(
            "FROM scratch\nCMD [\"a\"]\nCMD [\"b\"]\n",
            "MultipleInstructionsDisallowed"
        ),
        one(
            2,
            "Multiple CMD instructions should not be used in the same stage because only the last one will be used"
        )
    );
    assert!(
        fired(
            "FROM scratch AS a\nCMD [\"a\"]\nFROM a\nCMD [\"b\"]\n",
            "MultipleInstructionsDisallowed"
        )
        .is_empty()
    );
}

#[test]
fn legacy_key_value_format() {
    assert_eq!(
        fired("FROM scratch\nenv a b\n", "LegacyKeyValueFormat"),
        one(
            2,
            "\"env key=value\" should be used instead of legacy \"env key value\" format"
        )
    );
    assert!(fired("FROM scratch\nENV a=b\nLABEL c=d\n", "LegacyKeyValueFormat").is_empty());
}

struct Arm64;
impl BaseImages for Arm64 {
    fn resolve(&self, _name: &str, _p: &Platform) -> Option<BaseImage> {
        Some(BaseImage {
            env: Vec::new(),
            shell: Vec::new(),
            onbuild: Vec::new(),
            platform: Platform::normalized("linux", "aarch64", "v8"),
            has_layers: true,
        })
    }
}

#[test]
fn invalid_base_image_platform() {
    let opts = CheckOptions {
        all_stages: true,
        base_images: Some(&Arm64),
        ..CheckOptions::default()
    };
    assert_eq!(
        fired_with("FROM img\n", "InvalidBaseImagePlatform", &opts),
        one(
            1,
            "Base image img was pulled with platform \"linux/arm64\", expected \"linux/amd64\" for current build"
        )
    );
    assert!(
        fired_with(
            "FROM --platform=linux/arm64 img AS arm64\n",
            "InvalidBaseImagePlatform",
            &opts
        )
        .is_empty()
    );
    // Without a resolver the image is unknown: no warning.
    assert!(fired("FROM img\n", "InvalidBaseImagePlatform").is_empty());
}

#[test]
fn redundant_target_platform() {
    assert_eq!(
        fired(
            "FROM --platform=${TARGETPLATFORM} scratch\n",
            "RedundantTargetPlatform"
        ),
        one(
            1,
            "Setting platform to predefined ${TARGETPLATFORM} in FROM is redundant as this is the default behavior"
        )
    );
    assert!(
        fired(
            "FROM --platform=$BUILDPLATFORM scratch\n",
            "RedundantTargetPlatform"
        )
        .is_empty()
    );
}

#[test]
fn secrets_used_in_arg_or_env() {
    assert_eq!(
        fired("FROM scratch\nARG GITHUB_TOKEN\n", "SecretsUsedInArgOrEnv"),
        one(
            2,
            "Do not use ARG or ENV instructions for sensitive data (ARG \"GITHUB_TOKEN\")"
        )
    );
    assert!(
        fired(
            "FROM scratch\nARG PUBLIC_KEY\nENV tokenizer=1 KEY_FILE=x\n",
            "SecretsUsedInArgOrEnv"
        )
        .is_empty()
    );
}

#[test]
fn invalid_default_arg_in_from() {
    assert_eq!(
        fired("ARG TAG\nFROM alpine:${TAG}\n", "InvalidDefaultArgInFrom"),
        one(
            2,
            "Default value for ARG alpine:${TAG} results in empty or invalid base image name"
        )
    );
    assert!(fired("ARG TAG=3\nFROM alpine:${TAG}\n", "InvalidDefaultArgInFrom").is_empty());
}

#[test]
fn from_platform_flag_const_disallowed() {
    assert_eq!(
        fired(
            "FROM --platform=linux/arm64 scratch AS build\n",
            "FromPlatformFlagConstDisallowed"
        ),
        one(
            1,
            "FROM --platform flag should not use constant value \"linux/arm64\""
        )
    );
    assert!(
        fired(
            "FROM --platform=linux/arm64 scratch AS build-arm64\n",
            "FromPlatformFlagConstDisallowed"
        )
        .is_empty()
    );
}

struct Ignore(&'static [&'static str]);
impl ContextIgnore for Ignore {
    fn is_excluded(&self, path: &str) -> bool {
        self.0.contains(&path) || path.split('/').next().is_some_and(|d| self.0.contains(&d))
    }
    fn has_exclusions(&self) -> bool {
        self.0.iter().any(|p| p.starts_with('!'))
    }
    fn ignores_root(&self) -> bool {
        false
    }
}

#[test]
fn copy_ignored_file() {
    let src = "# check=experimental=CopyIgnoredFile\nFROM scratch\nCOPY ./secret/a.txt /\n";
    let ignore = Ignore(&["secret"]);
    let opts = CheckOptions {
        all_stages: true,
        ignore: Some(&ignore),
        ..CheckOptions::default()
    };
    assert_eq!(
        fired_with(src, "CopyIgnoredFile", &opts),
        one(
            3,
            "Attempting to Copy file \"secret/a.txt\" that is excluded by .dockerignore"
        )
    );
    // Experimental: off unless enabled.
    let plain = src.replace("# check=experimental=CopyIgnoredFile\n", "\n");
    assert!(fired_with(&plain, "CopyIgnoredFile", &opts).is_empty());
    // A re-include pattern disables the rule.
    let with_exclusion = Ignore(&["secret", "!secret/keep"]);
    let opts = CheckOptions {
        all_stages: true,
        ignore: Some(&with_exclusion),
        ..CheckOptions::default()
    };
    assert!(fired_with(src, "CopyIgnoredFile", &opts).is_empty());
}

#[test]
fn invalid_definition_description() {
    let src = "# check=experimental=InvalidDefinitionDescription\n\n# the version\nARG VERSION=1\n";
    assert_eq!(
        fired(src, "InvalidDefinitionDescription"),
        one(
            4,
            "Comment for ARG should follow the format: `# VERSION <description>`"
        )
    );
    let good = "# check=experimental=InvalidDefinitionDescription\n\n# VERSION of the app\nARG VERSION=1\n";
    assert!(fired(good, "InvalidDefinitionDescription").is_empty());
    // Experimental: off by default.
    assert!(
        fired(
            &src.replace("# check=experimental=InvalidDefinitionDescription\n", ""),
            "InvalidDefinitionDescription"
        )
        .is_empty()
    );
}

#[test]
fn expose_proto_casing() {
    assert_eq!(
        fired("FROM scratch\nEXPOSE 53/UDP\n", "ExposeProtoCasing"),
        one(
            2,
            "Defined protocol '53/UDP' in EXPOSE instruction should be lowercase"
        )
    );
    assert!(fired("FROM scratch\nEXPOSE 53/udp 80\n", "ExposeProtoCasing").is_empty());
}

#[test]
fn expose_invalid_format() {
    assert_eq!(
        fired("FROM scratch\nEXPOSE 8080:80\n", "ExposeInvalidFormat"),
        one(
            2,
            "EXPOSE instruction should not define an IP address or host-port mapping, found '8080:80'"
        )
    );
    assert!(fired("FROM scratch\nEXPOSE 80 443/tcp\n", "ExposeInvalidFormat").is_empty());
}

#[test]
fn every_rule_is_covered_here() {
    // A new rule added to the set needs its own test in this file.
    assert_eq!(kiln_checks::rules::ALL.len(), 22);
}

#[test]
fn target_limits_dispatched_stages() {
    let src = "FROM scratch AS a\nCOPY $x /\nFROM scratch AS b\nCOPY $y /\n";
    let opts = CheckOptions {
        target: Some("b".into()),
        ..CheckOptions::default()
    };
    assert_eq!(
        fired_with(src, "UndefinedVar", &opts),
        one(4, "Usage of undefined variable '$y'")
    );
    assert_eq!(fired(src, "UndefinedVar").len(), 2);
}

#[test]
fn check_directive_and_build_arg() {
    let src = "# check=skip=FromAsCasing;error=true\nFROM scratch as base\nMAINTAINER me\n";
    let r = run_with(src, &all(src));
    assert_eq!(r.warnings.len(), 1);
    assert_eq!(
        r.error.map(|e| e.message).as_deref(),
        Some("lint violation found for rules: MaintainerDeprecated")
    );
    let opts = CheckOptions {
        build_args: BTreeMap::from([("BUILDKIT_DOCKERFILE_CHECK".into(), "skip=all".into())]),
        all_stages: true,
        ..CheckOptions::default()
    };
    let r = run_with(src, &opts);
    assert!(r.warnings.is_empty() && r.error.is_none());
}

#[test]
fn warnings_before_a_parse_error_are_kept() {
    let src = "FROM scratch AS Bad\nNOPE x\n";
    let r = run_with(src, &all(src));
    assert_eq!(r.warnings.len(), 1);
    assert_eq!(
        r.error.map(|e| e.message).as_deref(),
        Some("dockerfile parse error on line 2: unknown instruction: NOPE (did you mean COPY?)")
    );
}

#[test]
fn onbuild_triggers_of_a_base_stage_run_in_the_child() {
    let src = "FROM scratch AS base\nONBUILD COPY $nope /\nFROM base\n";
    assert_eq!(
        fired(src, "UndefinedVar"),
        one(3, "Usage of undefined variable '$nope'")
    );
    // Not for a stage the target does not need, even when every stage is checked.
    let src = "FROM scratch AS base\nONBUILD COPY $nope /\nFROM base AS child\nFROM scratch\n";
    assert!(fired(src, "UndefinedVar").is_empty());
}

#[test]
fn undefined_var_in_run_mount_options_only() {
    let src = "FROM scratch\nARG CACHE=c\nRUN --mount=type=cache,id=$CACHE,target=$TGT echo $NOT_EXPANDED\n";
    assert_eq!(
        fired(src, "UndefinedVar"),
        one(3, "Usage of undefined variable '$TGT'")
    );
}

#[test]
fn issue12_env_with_100k_pairs_is_checked_in_linear_time() {
    // Each ENV pair was a linear search of the environment: 100k pairs took 28 s.
    let mut df = String::from("FROM scratch\nENV");
    for i in 0..100_000 {
        use std::fmt::Write as _;
        let _ = write!(df, " K{i}=v{i}");
    }
    df.push_str("\nRUN echo $K99999\n");
    let started = std::time::Instant::now();
    let report = kiln_checks::check(df.as_bytes(), &kiln_checks::CheckOptions::default());
    let took = started.elapsed();
    assert!(
        report
            .warnings
            .iter()
            .all(|w| w.rule.name != "UndefinedVar"),
        "{:?}",
        report.warnings
    );
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
}
