//! containerd's own test tables (platforms_test.go, compare_test.go) as far as they apply to
//! a linux host, plus the normalization kiln relies on.

use super::*;

fn raw(os: &str, arch: &str, variant: &str) -> Platform {
    Platform::raw(os, arch, variant)
}

fn host_arch() -> &'static str {
    host_goarch()
}

/// TestParseSelector: (input, expected Parse result, platforms its matcher matches, Format or
/// FormatAll output, whether FormatAll is used).
#[test]
fn parse_selector_table() {
    let os = std::env::consts::OS;
    let arch = host_arch();
    let default_variant = if arch == "arm" {
        cpuinfo::cpu_variant().filter(|v| v != "v7")
    } else {
        None
    };
    let dv = default_variant.clone().unwrap_or_default();
    let with_opts = |os: &str, version: &str, features: &[&str]| {
        let mut p = raw(os, arch, &dv);
        p.os_version = (!version.is_empty()).then(|| version.to_owned());
        p.os_features = features.iter().map(|f| (*f).to_owned()).collect();
        p
    };
    let joined = |first: &str| join(&[first, arch, &dv]);
    let cases: Vec<(&str, Platform, Vec<Platform>, String, bool)> = vec![
        (
            "linux/arm64",
            raw("linux", "arm64", ""),
            vec![
                raw("linux", "aarch64", ""),
                raw("linux", "aarch64", "v8"),
                raw("linux", "arm64", "v8"),
            ],
            "linux/arm64".into(),
            false,
        ),
        (
            "linux/arm64/v8",
            raw("linux", "arm64", "v8"),
            vec![
                raw("linux", "aarch64", ""),
                raw("linux", "aarch64", "v8"),
                raw("linux", "arm64", ""),
            ],
            "linux/arm64/v8".into(),
            false,
        ),
        (
            "linux/arm",
            raw("linux", "arm", ""),
            vec![
                raw("linux", "arm", "v7"),
                raw("linux", "armhf", ""),
                raw("linux", "arm", "7"),
            ],
            "linux/arm".into(),
            false,
        ),
        (
            "linux/arm/v6",
            raw("linux", "arm", "v6"),
            vec![raw("linux", "armel", "")],
            "linux/arm/v6".into(),
            false,
        ),
        (
            "linux/arm/v7",
            raw("linux", "arm", "v7"),
            vec![raw("linux", "arm", ""), raw("linux", "armhf", "")],
            "linux/arm/v7".into(),
            false,
        ),
        (
            "arm",
            raw(os, "arm", ""),
            vec![],
            format!("{os}/arm"),
            false,
        ),
        (
            "armel",
            raw(os, "arm", "v6"),
            vec![],
            format!("{os}/arm/v6"),
            false,
        ),
        (
            "armhf",
            raw(os, "arm", ""),
            vec![],
            format!("{os}/arm"),
            false,
        ),
        (
            "Aarch64",
            raw(os, "arm64", ""),
            vec![],
            format!("{os}/arm64"),
            false,
        ),
        (
            "x86_64",
            raw(os, "amd64", ""),
            vec![],
            format!("{os}/amd64"),
            false,
        ),
        (
            "Linux/x86_64",
            raw("linux", "amd64", ""),
            vec![],
            "linux/amd64".into(),
            false,
        ),
        (
            "i386",
            raw(os, "386", ""),
            vec![],
            format!("{os}/386"),
            false,
        ),
        (
            "linux",
            raw("linux", arch, &dv),
            vec![],
            joined("linux"),
            false,
        ),
        (
            "s390x",
            raw(os, "s390x", ""),
            vec![],
            format!("{os}/s390x"),
            false,
        ),
        (
            "linux/s390x",
            raw("linux", "s390x", ""),
            vec![],
            "linux/s390x".into(),
            false,
        ),
        (
            "macOS",
            raw("darwin", arch, &dv),
            vec![],
            joined("darwin"),
            false,
        ),
        (
            "windows",
            raw("windows", arch, &dv),
            vec![],
            joined("windows"),
            false,
        ),
        (
            "windows()",
            raw("windows", arch, &dv),
            vec![],
            joined("windows"),
            true,
        ),
        (
            "windows(10.0.17763)",
            with_opts("windows", "10.0.17763", &[]),
            vec![],
            joined("windows(10.0.17763)"),
            true,
        ),
        (
            "windows(10.0.17763+win32k)",
            with_opts("windows", "10.0.17763", &["win32k"]),
            vec![],
            joined("windows(10.0.17763+win32k)"),
            true,
        ),
        (
            "linux(+gpu)",
            with_opts("linux", "", &["gpu"]),
            vec![],
            joined("linux(+gpu)"),
            true,
        ),
        (
            "linux(+gpu+simd)",
            with_opts("linux", "", &["gpu", "simd"]),
            vec![],
            joined("linux(+gpu+simd)"),
            true,
        ),
        (
            "linux(+unsorted+erofs)",
            with_opts("linux", "", &["unsorted", "erofs"]),
            vec![],
            joined("linux(+erofs+unsorted)"),
            true,
        ),
        (
            "windows(10.0.17763%2Bbuild.42)",
            with_opts("windows", "10.0.17763+build.42", &[]),
            vec![],
            joined("windows(10.0.17763%2Bbuild.42)"),
            true,
        ),
        (
            "windows(10.0.17763%2Bbuild.42+win32k)",
            with_opts("windows", "10.0.17763+build.42", &["win32k"]),
            vec![],
            joined("windows(10.0.17763%2Bbuild.42+win32k)"),
            true,
        ),
        (
            "windows(50%25done)",
            with_opts("windows", "50%done", &[]),
            vec![],
            joined("windows(50%25done)"),
            true,
        ),
    ];
    for (input, expected, matches, formatted, all) in cases {
        let p = Platform::parse_specifier(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(p, expected, "{input}");
        let m = Matcher::ordered(std::slice::from_ref(&p));
        assert!(m.matches(&expected), "{input} matches its parse");
        for mc in &matches {
            assert!(m.matches(mc), "{input} matches {mc:?}");
        }
        let got = if all { p.format_all() } else { p.format() };
        assert_eq!(got, formatted, "{input}");
        let reparsed = Platform::parse_specifier(&got).unwrap();
        let again = if all {
            reparsed.format_all()
        } else {
            reparsed.format()
        };
        assert_eq!(again, formatted, "{input} round trip");
    }
}

#[test]
fn format_all_encoding_table() {
    let with = |os: &str, version: &str, features: &[&str]| {
        let mut p = raw(os, "amd64", "");
        p.os_version = (!version.is_empty()).then(|| version.to_owned());
        p.os_features = features.iter().map(|f| (*f).to_owned()).collect();
        p
    };
    for (p, expected) in [
        (
            with("windows", "10.0.17763+build.42", &[]),
            "windows(10.0.17763%2Bbuild.42)/amd64",
        ),
        (
            with("windows", "10.0.17763+build.42", &["win32k"]),
            "windows(10.0.17763%2Bbuild.42+win32k)/amd64",
        ),
        (with("windows", "50%done", &[]), "windows(50%25done)/amd64"),
        (
            with("windows", "1.0(beta)", &[]),
            "windows(1.0%28beta%29)/amd64",
        ),
        (with("windows", "a/b", &[]), "windows(a%2Fb)/amd64"),
        (
            with("windows", "10.0.17763", &[]),
            "windows(10.0.17763)/amd64",
        ),
        (with("linux", "", &["feat+v2"]), "linux(+feat%2Bv2)/amd64"),
        (with("linux", "", &["100%gpu"]), "linux(+100%25gpu)/amd64"),
        (
            with("windows", "10.0+build", &["feat+1"]),
            "windows(10.0%2Bbuild+feat%2B1)/amd64",
        ),
        (
            with("linux", "", &["", "gpu", "", "simd"]),
            "linux(+gpu+simd)/amd64",
        ),
    ] {
        assert_eq!(p.format_all(), expected);
        if !p.os_features.iter().any(String::is_empty) {
            let reparsed = Platform::parse_specifier(expected).unwrap();
            assert_eq!(reparsed.os_version, p.os_version, "{expected}");
            assert_eq!(reparsed.os_features, p.os_features, "{expected}");
        }
    }
}

#[test]
fn parse_selector_invalid_and_messages() {
    for input in [
        "",
        "/linux/arm",
        "linux/arm/",
        "linux /arm",
        "linux/&arm",
        "linux/arm/foo/bar",
    ] {
        assert!(Platform::parse(input).is_err(), "{input:?} must fail");
    }
    let msg = |s: &str| Platform::parse(s).unwrap_err().to_string();
    assert_eq!(
        msg("linux/"),
        r#""" is an invalid component of "linux/": platform specifier component must match "^[A-Za-z0-9_.-]+$": invalid argument"#
    );
    assert_eq!(
        msg("linux /arm"),
        r#""linux " is an invalid OS component of "linux /arm": OSAndVersion specifier component must match "^([A-Za-z0-9_-]+)(?:\\(([A-Za-z0-9_.%-]*)((?:\\+[A-Za-z0-9_.%-]+)*)\\))?$": invalid argument"#
    );
    assert_eq!(
        msg("linux/arm/foo/bar"),
        r#""linux/arm/foo/bar": cannot parse platform specifier: invalid argument"#
    );
    assert_eq!(
        msg("plan10"),
        r#""plan10": unknown operating system or architecture: invalid argument"#
    );
    assert_eq!(
        msg("linux/*"),
        r#""linux/*": wildcards not yet supported: invalid argument"#
    );
    assert_eq!(
        msg("windows(1%zz)/amd64"),
        r#""windows(1%zz)/amd64" has an invalid OS version "1%zz": invalid URL escape "%zz""#
    );
    // containerd accepts any os/arch pair of valid characters.
    assert_eq!(
        Platform::parse("plan10/amd64").unwrap().to_string(),
        "plan10/amd64"
    );
}

/// TestOnly: what each platform's `Only` matcher accepts.
#[test]
fn only_table() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "linux/amd64",
            &["linux/amd64", "linux/386"],
            &[
                "linux/amd64/v2",
                "linux/arm/v7",
                "linux/arm64",
                "windows/amd64",
                "windows/arm",
            ],
        ),
        (
            "linux/amd64/v2",
            &[
                "linux/amd64",
                "linux/amd64/v1",
                "linux/amd64/v2",
                "linux/386",
            ],
            &[
                "linux/amd64/v3",
                "linux/amd64/v4",
                "linux/arm/v7",
                "linux/arm64",
                "windows/amd64",
                "windows/arm",
            ],
        ),
        (
            "linux/386",
            &["linux/386"],
            &[
                "linux/amd64",
                "linux/arm/v7",
                "linux/arm64",
                "windows/amd64",
                "windows/arm",
            ],
        ),
        (
            "windows/amd64",
            &["windows/amd64", "windows(10.0.17763)/amd64"],
            &["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/arm"],
        ),
        (
            "linux/arm/v8",
            &[
                "linux/arm",
                "linux/arm/v5",
                "linux/arm/v6",
                "linux/arm/v7",
                "linux/arm/v8",
            ],
            &[
                "linux/amd64",
                "linux/arm/v4",
                "linux/arm64",
                "windows/amd64",
                "windows/arm",
            ],
        ),
        (
            "linux/arm/v7",
            &["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7"],
            &[
                "linux/amd64",
                "linux/arm/v4",
                "linux/arm/v8",
                "linux/arm64",
                "windows/amd64",
                "windows/arm",
            ],
        ),
        (
            "linux/arm/v6",
            &["linux/arm/v5", "linux/arm/v6"],
            &[
                "linux/amd64",
                "linux/arm",
                "linux/arm/v4",
                "linux/arm/v7",
                "linux/arm/v8",
                "linux/arm64",
                "windows/amd64",
                "windows/arm",
            ],
        ),
        (
            "linux/arm/v5",
            &["linux/arm/v5"],
            &[
                "linux/amd64",
                "linux/arm",
                "linux/arm/v4",
                "linux/arm/v6",
                "linux/arm/v7",
                "linux/arm/v8",
                "linux/arm64",
                "windows/amd64",
                "windows/arm",
            ],
        ),
        (
            "linux/arm/v4",
            &["linux/arm/v4"],
            &[
                "linux/amd64",
                "linux/arm",
                "linux/arm/v5",
                "linux/arm/v6",
                "linux/arm/v7",
                "linux/arm/v8",
                "linux/arm64",
                "windows/amd64",
                "windows/arm",
            ],
        ),
        (
            "linux/arm64/v9",
            &[
                "linux/arm",
                "linux/arm/v5",
                "linux/arm/v6",
                "linux/arm/v7",
                "linux/arm/v8",
                "linux/arm64",
                "linux/arm64/v8",
                "linux/arm64/v8.1",
                "linux/arm64/v8.2",
                "linux/arm64/v8.3",
                "linux/arm64/v8.4",
                "linux/arm64/v8.5",
                "linux/arm64/v9",
                "linux/arm64/v9.0",
            ],
            &[
                "linux/amd64",
                "linux/arm/v4",
                "windows/amd64",
                "windows/arm",
                "linux/arm64/v8.6",
            ],
        ),
        (
            "linux/arm64/v8.1",
            &[
                "linux/arm",
                "linux/arm/v5",
                "linux/arm/v6",
                "linux/arm/v7",
                "linux/arm/v8",
                "linux/arm64",
                "linux/arm64/v8",
                "linux/arm64/v8.1",
            ],
            &[
                "linux/amd64",
                "linux/arm/v4",
                "linux/arm/v9",
                "linux/arm64/v9",
                "windows/amd64",
                "windows/arm",
            ],
        ),
        (
            "linux/arm64",
            &[
                "linux/arm",
                "linux/arm/v5",
                "linux/arm/v6",
                "linux/arm/v7",
                "linux/arm/v8",
                "linux/arm64",
                "linux/arm64/v8",
            ],
            &[
                "linux/amd64",
                "linux/arm/v4",
                "linux/arm/v9",
                "linux/arm64/v9",
                "windows/amd64",
                "windows/arm",
            ],
        ),
    ];
    for (platform, yes, no) in cases {
        let m = Platform::parse_specifier(platform).unwrap().matcher();
        for c in *yes {
            assert!(
                m.matches(&Platform::parse_specifier(c).unwrap()),
                "Only({platform}) matches {c}"
            );
        }
        for c in *no {
            assert!(
                !m.matches(&Platform::parse_specifier(c).unwrap()),
                "Only({platform}) refuses {c}"
            );
        }
    }
}

/// TestOnlyStrict, the cases that differ from `Only`.
#[test]
fn only_strict_table() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "linux/amd64",
            &["linux/amd64"],
            &["linux/386", "linux/arm64"],
        ),
        (
            "windows(10.0.17763)/amd64",
            &["windows/amd64", "windows(10.0.17763)/amd64"],
            &["linux/amd64", "windows/arm"],
        ),
        (
            "linux/arm/v8",
            &["linux/arm/v8"],
            &["linux/arm", "linux/arm/v7", "linux/arm64"],
        ),
        (
            "linux/arm/v7",
            &["linux/arm", "linux/arm/v7"],
            &["linux/arm/v6", "linux/arm/v8"],
        ),
        (
            "linux/arm64/v9",
            &["linux/arm64/v9", "linux/arm64/v9.0"],
            &["linux/arm64/v8", "linux/arm/v8"],
        ),
        (
            "linux/arm64/v8.1",
            &["linux/arm64/v8.1"],
            &["linux/arm64/v8", "linux/arm64"],
        ),
        (
            "linux/arm64",
            &["linux/arm64", "linux/arm64/v8"],
            &["linux/arm", "linux/arm/v8"],
        ),
    ];
    for (platform, yes, no) in cases {
        let m = Matcher::strict(&Platform::parse_specifier(platform).unwrap());
        for c in *yes {
            assert!(
                m.matches(&Platform::parse_specifier(c).unwrap()),
                "OnlyStrict({platform}) matches {c}"
            );
        }
        for c in *no {
            assert!(
                !m.matches(&Platform::parse_specifier(c).unwrap()),
                "OnlyStrict({platform}) refuses {c}"
            );
        }
    }
}

#[test]
fn best_prefers_the_platform_then_its_fallbacks_in_order() {
    let p = |s: &str| Platform::parse_specifier(s).unwrap();
    let (v5, v6, v7, arm64, amd64) = (
        p("linux/arm/v5"),
        p("linux/arm/v6"),
        p("linux/arm/v7"),
        p("linux/arm64"),
        p("linux/amd64"),
    );
    let m = p("linux/arm64").matcher();
    assert_eq!(m.best(&[&amd64, &v5, &v7, &v6, &arm64]), Some(4));
    assert_eq!(m.best(&[&amd64, &v5, &v6, &v7]), Some(3));
    assert_eq!(m.best(&[&amd64]), None);
    // The first of equally good entries.
    let arm64_v8 = p("linux/arm64/v8");
    assert_eq!(m.best(&[&v7, &arm64_v8, &arm64]), Some(1));
    assert!(m.less(&arm64, &v7) && !m.less(&v7, &arm64) && !m.less(&amd64, &v5));
    let order: Vec<String> = m.platforms().iter().map(|p| p.format()).collect();
    assert_eq!(
        order,
        [
            "linux/arm64",
            "linux/arm/v8",
            "linux/arm/v7",
            "linux/arm/v6",
            "linux/arm/v5"
        ]
    );
    let order: Vec<String> = p("linux/amd64/v3")
        .matcher()
        .platforms()
        .iter()
        .map(|p| p.format())
        .collect();
    assert_eq!(
        order,
        [
            "linux/amd64/v3",
            "linux/amd64/v2",
            "linux/amd64",
            "linux/386"
        ]
    );
}

#[test]
fn os_features_must_be_a_subset_and_windows_builds_compatible() {
    let mut host = raw("linux", "amd64", "");
    host.os_features = vec!["gpu".into(), "simd".into()];
    let m = Matcher::strict(&host);
    let mut c = raw("linux", "amd64", "");
    assert!(m.matches(&c));
    c.os_features = vec!["simd".into()];
    assert!(m.matches(&c));
    c.os_features = vec!["erofs".into()];
    assert!(!m.matches(&c));
    let win = |v: &str| {
        let mut p = raw("windows", "amd64", "");
        p.os_version = Some(v.into());
        p
    };
    let m = Matcher::strict(&win("10.0.20348.1"));
    assert!(m.matches(&win("10.0.20348.2")));
    assert!(!m.matches(&win("10.0.17763.1")));
    let m = Matcher::strict(&win("10.0.26100.1"));
    assert!(
        m.matches(&win("10.0.20348.1")),
        "ltsc2022 images run on later hosts"
    );
    let m = Matcher::strict(&win("10.0.17763.1"));
    assert!(!m.matches(&win("10.0.17764.1")));
}

#[test]
fn kiln_normalization_display_and_serde() {
    let s = |spec: &str| Platform::parse(spec).unwrap().to_string();
    assert_eq!(s("linux/aarch64"), "linux/arm64");
    assert_eq!(s("linux/arm64/v8"), "linux/arm64");
    assert_eq!(s("linux/arm"), "linux/arm/v7");
    assert_eq!(s("linux/armhf"), "linux/arm/v7");
    assert_eq!(s("amd64"), "linux/amd64");
    assert_eq!(s("linux/x86_64/v1"), "linux/amd64");
    assert_eq!(Platform::parse("linux/arm64/v8").unwrap().variant, None);
    assert_eq!(
        Platform::parse("linux/amd64").unwrap(),
        Platform::linux_amd64()
    );
    assert_eq!(
        Platform::normalized("Linux", "aarch64", "v8"),
        Platform::parse("linux/arm64").unwrap()
    );
    // An index entry with arm64's v8 spelled out is the same platform.
    let entry: Platform =
        serde_json::from_str(r#"{"architecture":"arm64","os":"linux","variant":"v8"}"#).unwrap();
    assert!(Platform::parse("linux/arm64").unwrap().matches(&entry));
    assert_eq!(entry.to_string(), "linux/arm64");
    let mut w = raw("windows", "amd64", "");
    w.os_version = Some("10.0.17763".into());
    w.os_features = vec!["win32k".into()];
    assert_eq!(
        serde_json::to_string(&w).unwrap(),
        r#"{"architecture":"amd64","os":"windows","os.version":"10.0.17763","os.features":["win32k"]}"#
    );
    assert_eq!(
        serde_json::from_str::<Platform>(&serde_json::to_string(&w).unwrap()).unwrap(),
        w
    );
    assert_eq!(
        serde_json::to_string(&Platform::parse("linux/arm/v6").unwrap()).unwrap(),
        r#"{"architecture":"arm","os":"linux","variant":"v6"}"#
    );
}

#[test]
fn host_and_qemu_names() {
    let host = Platform::host();
    assert_eq!(host, host.normalize());
    if cfg!(target_arch = "x86_64") {
        assert_eq!(host.to_string(), "linux/amd64");
        assert_eq!(host.qemu_arch(), Some("x86_64"));
    }
    if cfg!(target_arch = "aarch64") {
        assert_eq!(host.to_string(), "linux/arm64");
    }
    for (spec, qemu) in [
        ("linux/amd64", Some("x86_64")),
        ("linux/arm64", Some("aarch64")),
        ("linux/arm/v7", Some("arm")),
        ("linux/arm/v6", Some("arm")),
        ("linux/386", Some("i386")),
        ("linux/ppc64le", Some("ppc64le")),
        ("linux/s390x", Some("s390x")),
        ("linux/riscv64", Some("riscv64")),
        ("linux/mips64le", Some("mips64el")),
        ("windows/amd64", None),
        ("linux/wasm", None),
    ] {
        assert_eq!(Platform::parse(spec).unwrap().qemu_arch(), qemu, "{spec}");
    }
}
