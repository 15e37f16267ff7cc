//! BuildKit's own lint test cases (`../shared/conformance/buildkit/derived/lint-cases.json`,
//! from its `dockerfile_lint_test.go`), all 78 (the 4 online ones without their docker.io
//! image, as `verified_without_image` allows) run through the library and the
//! LintResults JSON the CLI prints: warnings must match on (rule, description, url, detail,
//! start line) as a multiset, and the error on its message. Skips when the shared data is
//! absent, except under CI (`kiln_testkit::skip`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_checks::{BaseImage, BaseImages, CheckOptions, ContextIgnore, Platform, check};
use serde_json::Value;

fn cases_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/buildkit/derived/lint-cases.json")
}

/// The base images the cases name, as the case notes describe them: the shared busybox
/// (PATH only, linux/amd64) and BuildKit's linux/arm64 `testbaseimageplatform`.
struct CaseImages;

impl BaseImages for CaseImages {
    fn resolve(&self, name: &str, _platform: &Platform) -> Option<BaseImage> {
        if name.starts_with("127.0.0.1:5000/busybox") {
            return Some(BaseImage {
                env: vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ],
                shell: Vec::new(),
                onbuild: Vec::new(),
                platform: Platform::linux_amd64(),
                has_layers: true,
            });
        }
        if name == "127.0.0.1:5000/buildkit/testbaseimageplatform:latest" {
            return Some(BaseImage {
                env: Vec::new(),
                shell: Vec::new(),
                onbuild: Vec::new(),
                platform: Platform::normalized("linux", "arm64", ""),
                has_layers: true,
            });
        }
        None
    }
}

/// Exact-path `.dockerignore` patterns (all the cases use).
struct Patterns(Vec<String>);

impl ContextIgnore for Patterns {
    fn is_excluded(&self, path: &str) -> bool {
        let mut p = path.to_owned();
        loop {
            if self.0.contains(&p) {
                return true;
            }
            match p.rfind('/') {
                Some(i) => p.truncate(i),
                None => return false,
            }
        }
    }
    fn has_exclusions(&self) -> bool {
        self.0.iter().any(|p| p.starts_with('!'))
    }
    fn ignores_root(&self) -> bool {
        self.0
            .iter()
            .any(|p| matches!(p.as_str(), "*" | "**" | "**/*"))
    }
}

type Key = (String, String, String, String, u64);

fn key(v: &Value, line: u64) -> Key {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    (s("ruleName"), s("description"), s("url"), s("detail"), line)
}

#[test]
fn buildkit_lint_cases() {
    let path = cases_path();
    let Ok(text) = std::fs::read_to_string(&path) else {
        kiln_testkit::skip(
            "buildkit_lint_cases",
            &format!("{} not found", path.display()),
        );
        return;
    };
    let cases: Vec<Value> = serde_json::from_str(&text).expect("lint-cases.json");
    let (mut passed, mut failures) = (0, Vec::new());
    for case in &cases {
        // The online cases name images only docker.io has; their warnings are decided before
        // the image is resolved, which `verified_without_image` says BuildKit confirms with
        // an empty config: run them with no image at all.
        let online = case["offline"] == Value::Bool(false);
        if online && case["verified_without_image"] != Value::Bool(true) {
            continue;
        }
        let name = case["name"].as_str().unwrap_or("?");
        let dockerfile = case["dockerfile"].as_str().unwrap_or("").as_bytes();
        let build_args: BTreeMap<String, String> = case["build_args"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let ignore = case["dockerignore"].as_str().map(|t| {
            Patterns(
                t.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned)
                    .collect(),
            )
        });
        let opts = CheckOptions {
            build_args,
            target: case["target"].as_str().map(str::to_owned),
            all_stages: case["target"].is_null(),
            base_images: if online { None } else { Some(&CaseImages) },
            ignore: ignore.as_ref().map(|i| i as &dyn ContextIgnore),
        };
        let report = check(dockerfile, &opts);
        let json = kiln_checks::lint_results_json(&report, "Dockerfile", dockerfile);
        let mut got: Vec<Key> = json["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                key(
                    w,
                    w["location"]["ranges"][0]["start"]["line"]
                        .as_u64()
                        .unwrap_or(0),
                )
            })
            .collect();
        // Where the live BuildKit disagrees with the upstream test, the live result is kept
        // in `buildkit` (testLegacyKeyValueFormat/3): compare with what BuildKit does.
        let expected_src = if case["buildkit"].is_array() {
            &case["buildkit"]
        } else {
            &case["expected"]
        };
        let mut want: Vec<Key> = expected_src
            .as_array()
            .unwrap()
            .iter()
            .map(|w| key(w, w["line"].as_u64().unwrap_or(0)))
            .collect();
        got.sort();
        want.sort();
        let got_err = json["buildError"]["message"].as_str().map(str::to_owned);
        let want_err = case["expect_error"].as_str().map(str::to_owned);
        let want_err = if online { None } else { want_err };
        if got == want && got_err == want_err {
            passed += 1;
        } else {
            failures.push(format!(
                "{name}:\n  want {want:?} err {want_err:?}\n  got  {got:?} err {got_err:?}"
            ));
        }
    }
    eprintln!("lint cases: {passed} passed, {} failed", failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(passed, 78, "74 offline and 4 online cases");
}
