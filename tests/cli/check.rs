//! `kiln check`, `kiln build --check` and the warnings of `kiln build`, through the binary.
//! The main test runs every offline case of BuildKit's own lint tests
//! (`../shared/conformance/buildkit/derived/lint-cases.json`) through
//! `kiln check --format json` and compares rule, description, url, detail and start line.

use crate::common;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use common::{is_root, kiln, skip, tempdir, text, write_files};
use serde_json::Value;

fn cases() -> Option<Vec<Value>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/conformance/buildkit/derived/lint-cases.json");
    match std::fs::read_to_string(&path) {
        Ok(t) => Some(serde_json::from_str(&t).expect("lint-cases.json")),
        Err(_) => {
            skip(&format!("{} not found", path.display()));
            None
        }
    }
}

/// Puts BuildKit's `testbaseimageplatform` image (FROM scratch + COPY foo, linux/arm64) in
/// the store of `state`, under the name the case uses, so the case runs without a registry.
fn store_arm64_image(state: &Path, name: &str) {
    store_image(state, name, &serde_json::json!({}));
}

/// A one-layer linux/arm64 image with container config `config`, tagged `name` in the store
/// at `state`.
fn store_image(state: &Path, name: &str, config: &Value) -> kiln_image::Image {
    let store = kiln_image::ContentStore::open(state).expect("store");
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "foo", &b"test"[..]).expect("tar");
    let data = tar.into_inner().expect("tar");
    let mut w = store
        .layer_writer(kiln_image::CompressionOptions {
            compression: kiln_image::Compression::Gzip,
            level: None,
        })
        .expect("layer writer");
    w.write_all(&data).expect("layer");
    let layer = w.finish().expect("layer");
    let config = kiln_image::ImageConfig::from_json(
        serde_json::json!({
            "architecture": "arm64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id.to_string()]},
        })
        .to_string()
        .as_bytes(),
    )
    .expect("config");
    let image = kiln_image::write_image(&store, &config, &[layer.descriptor]).expect("image");
    let reference = kiln_image::Reference::parse(name).expect("reference");
    store
        .set_tag(&reference, &image.manifest_digest)
        .expect("tag");
    image
}

type Key = (String, String, String, String, u64);

fn key(v: &Value, line: u64) -> Key {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    (s("ruleName"), s("description"), s("url"), s("detail"), line)
}

#[test]
fn buildkit_lint_cases_through_kiln_check_json() {
    let Some(cases) = cases() else { return };
    let state = tempdir();
    store_arm64_image(
        state.path(),
        "127.0.0.1:5000/buildkit/testbaseimageplatform:latest",
    );
    let (mut passed, mut failures) = (0, Vec::new());
    for case in &cases {
        if case["offline"] == Value::Bool(false) {
            continue;
        }
        let name = case["name"].as_str().unwrap_or("?");
        let ctx = tempdir();
        write_files(
            ctx.path(),
            &[("Dockerfile", case["dockerfile"].as_str().unwrap_or(""))],
        );
        if let Some(ignore) = case["dockerignore"].as_str() {
            write_files(ctx.path(), &[(".dockerignore", ignore)]);
        }
        let mut cmd = kiln(&state);
        cmd.args(["check", "--format", "json"]);
        for (k, v) in case["build_args"].as_object().into_iter().flatten() {
            cmd.arg("--build-arg")
                .arg(format!("{k}={}", v.as_str().unwrap_or("")));
        }
        let out = cmd.arg(ctx.path()).output().expect("run kiln check");
        let (stdout, stderr) = text(&out);
        let json: Value = match serde_json::from_str(&stdout) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{name}: not JSON ({e}): {stdout}{stderr}"));
                continue;
            }
        };
        let mut got: Vec<Key> = json["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| {
                let line = w["location"]["ranges"][0]["start"]["line"].as_u64();
                key(w, line.unwrap_or(0))
            })
            .collect();
        // testLegacyKeyValueFormat/3: the live BuildKit result (lines 5, 6) is kept apart
        // from the upstream test's unchecked lines.
        let want_src = if case["buildkit"].is_array() {
            &case["buildkit"]
        } else {
            &case["expected"]
        };
        let mut want: Vec<Key> = want_src
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| key(w, w["line"].as_u64().unwrap_or(0)))
            .collect();
        got.sort();
        want.sort();
        let got_err = json["buildError"]["message"].as_str();
        let want_err = case["expect_error"].as_str();
        let want_code = i32::from(want_err.is_some());
        if got == want && got_err == want_err && out.status.code() == Some(want_code) {
            passed += 1;
        } else {
            failures.push(format!(
                "{name} (exit {:?}):\n  want {want:?} {want_err:?}\n  got  {got:?} {got_err:?}",
                out.status.code()
            ));
        }
    }
    eprintln!("kiln check: {passed} BuildKit lint cases pass");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(passed, 74);
}

#[test]
fn text_output_and_exit_status() {
    let state = tempdir();
    let ctx = tempdir();
    write_files(
        ctx.path(),
        &[("Dockerfile", "FROM scratch as base\nCOPY a /a\n")],
    );
    let out = kiln(&state)
        .args(["check"])
        .arg(ctx.path())
        .output()
        .expect("run");
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(0), "warnings alone exit 0");
    assert_eq!(
        stdout,
        "Check complete, 1 warning has been found!\n\
         \nWARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n\
         'as' and 'FROM' keywords' casing do not match\n\
         Dockerfile:1\n--------------------\n   1 | >>> FROM scratch as base\n   2 |     COPY a /a\n   3 |     \n--------------------\n"
    );

    write_files(
        ctx.path(),
        &[("Dockerfile", "# check=error=true\nFROM scratch as base\n")],
    );
    let out = kiln(&state)
        .args(["check"])
        .arg(ctx.path())
        .output()
        .expect("run");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.ends_with("error: lint violation found for rules: FromAsCasing\n"),
        "{stderr}"
    );

    write_files(ctx.path(), &[("Dockerfile", "FROM scratch\nNOPE x\n")]);
    let out = kiln(&state)
        .args(["check", "--format=json"])
        .arg(ctx.path())
        .output()
        .expect("run");
    let (stdout, _) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unparseable Dockerfile exits 1"
    );
    let v: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(
        v["buildError"]["message"],
        "dockerfile parse error on line 2: unknown instruction: NOPE (did you mean COPY?)"
    );
    assert_eq!(v["buildError"]["location"]["ranges"][0]["start"]["line"], 2);

    write_files(ctx.path(), &[("Dockerfile", "FROM scratch\n")]);
    let out = kiln(&state)
        .args(["check"])
        .arg(ctx.path())
        .output()
        .expect("run");
    assert_eq!(text(&out).0, "Check complete, no warnings found.\n");
}

#[test]
fn check_flags_file_target_and_build_args() {
    let state = tempdir();
    let ctx = tempdir();
    write_files(
        ctx.path(),
        &[(
            "other.Dockerfile",
            "FROM scratch AS a\nCOPY $x /\nFROM scratch AS b\nCOPY $y /\n",
        )],
    );
    let file = ctx.path().join("other.Dockerfile");
    let rules = |args: &[&str]| -> Vec<(String, u64)> {
        let out = kiln(&state)
            .args(["check", "--format", "json", "-f"])
            .arg(&file)
            .args(args)
            .arg(ctx.path())
            .output()
            .expect("run");
        let v: Value = serde_json::from_str(&text(&out).0).expect("json");
        assert_eq!(v["sources"][0]["filename"], "other.Dockerfile");
        v["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| {
                (
                    w["detail"].as_str().unwrap_or("").to_owned(),
                    w["location"]["ranges"][0]["start"]["line"]
                        .as_u64()
                        .unwrap_or(0),
                )
            })
            .collect()
    };
    assert_eq!(rules(&[]).len(), 2, "every stage without --target");
    assert_eq!(
        rules(&["--target", "b"]),
        [("Usage of undefined variable '$y'".to_owned(), 4)]
    );
    assert!(rules(&["--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=UndefinedVar"]).is_empty());
}

#[test]
fn build_check_is_kiln_check() {
    let state = tempdir();
    let ctx = tempdir();
    write_files(ctx.path(), &[("Dockerfile", "FROM scratch\nCMD run\n")]);
    let check = kiln(&state)
        .arg("check")
        .arg(ctx.path())
        .output()
        .expect("run");
    let build = kiln(&state)
        .args(["build", "--check"])
        .arg(ctx.path())
        .output()
        .expect("run");
    assert_eq!(build.status.code(), Some(0));
    assert_eq!(text(&build).0, text(&check).0);
    assert!(text(&build).0.contains("WARNING: JSONArgsRecommended"));
}

#[test]
fn build_fails_before_building_with_check_error_true() {
    let state = tempdir();
    let ctx = tempdir();
    write_files(
        ctx.path(),
        &[
            (
                "Dockerfile",
                "# check=error=true\nFROM scratch as base\nCOPY a /a\n",
            ),
            ("a", "a"),
        ],
    );
    let out = kiln(&state)
        .args(["build", "--progress=plain"])
        .arg(ctx.path())
        .output()
        .expect("run");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "warning: FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 2)\n"
        ),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("error: lint violation found for rules: FromAsCasing\n"),
        "{stderr}"
    );
    assert!(!stderr.contains("Step 1/1"), "nothing was built: {stderr}");

    let out = kiln(&state)
        .args(["build", "--progress=json"])
        .arg(ctx.path())
        .output()
        .expect("run");
    let events: Vec<Value> = text(&out)
        .1
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        events.iter().any(|e| e["type"] == "warning"
            && e["message"]
                == "FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 2)"),
        "{events:?}"
    );
}

#[test]
fn build_prints_warnings_of_the_target_stages_only() {
    if !is_root() && skip("kiln builds need root (mounts, namespaces)") {
        return;
    }
    let state = tempdir();
    let ctx = tempdir();
    write_files(
        ctx.path(),
        &[
            (
                "Dockerfile",
                "FROM scratch AS unused\nCOPY $nope /\nFROM scratch as final\nCOPY a /a\n",
            ),
            ("a", "a"),
        ],
    );
    let out = kiln(&state)
        .args(["build", "--progress=plain"])
        .arg(ctx.path())
        .output()
        .expect("run");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "warning: FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 3)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("UndefinedVar"), "{stderr}");

    // JSON progress: the stream still begins with build_started, the warning follows.
    let out = kiln(&state)
        .args(["build", "--progress=json"])
        .arg(ctx.path())
        .output()
        .expect("run");
    let events: Vec<Value> = text(&out)
        .1
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(events[0]["type"], "build_started", "{events:?}");
    assert_eq!(events[1]["type"], "warning", "{events:?}");
    assert_eq!(
        events[1]["message"],
        "FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 3)"
    );
}

#[test]
fn base_image_config_and_platform_come_from_the_registry() {
    let Some(registry) = common::registry::Registry::start(None) else {
        return;
    };
    let name = format!("{}/kiln-check-test/arm64:latest", registry.addr);
    let scratch = tempdir();
    let image = store_image(
        scratch.path(),
        &name,
        &serde_json::json!({"Env": ["GOPATH=/go"], "Shell": ["/bin/bash", "-c"]}),
    );
    let store = kiln_image::ContentStore::open(scratch.path()).expect("store");
    let reference = kiln_image::Reference::parse(&name).expect("reference");
    kiln_image::RegistryClient::new(kiln_image::RegistryOptions::default())
        .push(&store, &image, &reference)
        .expect("push");

    // A fresh state: the image is only in the registry.
    let state = tempdir();
    let ctx = tempdir();
    write_files(
        ctx.path(),
        &[(
            "Dockerfile",
            &format!("FROM {name}\nCOPY $GOPTH /\nCMD run\n"),
        )],
    );
    let out = kiln(&state)
        .args(["check", "--format", "json"])
        .arg(ctx.path())
        .output()
        .expect("run");
    let v: Value = serde_json::from_str(&text(&out).0).expect("json");
    let details: Vec<&str> = v["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["detail"].as_str())
        .collect();
    assert_eq!(
        details,
        [
            format!(
                "Base image {name} was pulled with platform \"linux/arm64\", expected \"linux/amd64\" for current build"
            )
            .as_str(),
            // The image's Env names GOPATH; its Shell makes a shell-form CMD fine.
            "Usage of undefined variable '$GOPTH' (did you mean $GOPATH?)",
        ]
    );
}
