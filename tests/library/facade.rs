//! The embeddable facade: `Builder` + `BuildRequest` + an embedder's own `Progress`, without the
//! command line. Checks the events an embedder receives, the result against the exported image,
//! spec parsing through `FromStr`, and pushing with `Credentials`.

use crate::{Recorder, common};

use common::oci::oci_image;
use common::registry::Registry;
use common::{hello_context, tempdir};
use kiln::{
    BuildRequest, Builder, Credentials, Destination, Dockerfile, OutputSpec, ProgressEvent,
};

#[test]
fn build_through_the_facade_reports_events_and_returns_the_image() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let out = tempdir();
    let builder = Builder::new(state.path()).jobs(2);
    let mut options = BuildRequest::new(hello_context());
    options
        .build_args
        .insert("GREETING".into(), "from-the-library".into());
    options.tags.push("lib/hello:1".into());
    options.outputs.push(OutputSpec::Oci {
        dest: Destination::Path(out.path().join("layout")),
        tar: false,
        names: Vec::new(),
        compression: kiln::Compression::Gzip,
        rewrite_timestamp: false,
    });
    let progress = Recorder::default();
    let image = builder.build(&options, &progress).expect("build");

    let events = progress.0.into_inner().unwrap();
    assert!(
        matches!(events.first(), Some(ProgressEvent::BuildStarted { .. })),
        "{events:?}"
    );
    assert!(
        matches!(
            events.last(),
            Some(ProgressEvent::BuildFinished { success: true, .. })
        ),
        "{events:?}"
    );
    let started = events
        .iter()
        .filter(|e| matches!(e, ProgressEvent::StepStarted { .. }))
        .count();
    let done = events
        .iter()
        .filter(|e| matches!(e, ProgressEvent::StepDone { .. }))
        .count();
    assert!(started >= 2 && started == done, "{events:?}");
    let Some(ProgressEvent::ImageWritten {
        config_digest,
        manifest_digest,
        ..
    }) = events
        .iter()
        .find(|e| matches!(e, ProgressEvent::ImageWritten { .. }))
    else {
        panic!("no ImageWritten in {events:?}")
    };
    assert_eq!(config_digest, &image.config_digest);
    assert_eq!(manifest_digest, &image.manifest_digest);
    assert_eq!(image.names, vec!["lib/hello:1".to_owned()]);

    // The returned config is the stored bytes: they hash to the config digest.
    assert_eq!(
        image.config_digest,
        format!("sha256:{}", sha256_hex(&image.config))
    );
    // The returned config is the exported one.
    let (config, files) = oci_image(&out.path().join("layout"));
    let returned: serde_json::Value = serde_json::from_slice(&image.config).unwrap();
    assert_eq!(returned["config"], config["config"]);
    assert!(
        returned["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "GREETING=from-the-library")
    );
    assert_eq!(files["hello.txt"], b"hello from kiln\n");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .fold(String::new(), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The config's `created` of a build of `FROM scratch / COPY` with `epoch` as the option.
fn created_of(state: &std::path::Path, epoch: Option<i64>) -> String {
    let mut request = BuildRequest::new(hello_context());
    request.dockerfile = Dockerfile::Text("FROM scratch\nCOPY hello.txt /\n".into());
    request.no_cache = true;
    request.source_date_epoch = epoch;
    let image = Builder::new(state)
        .build(&request, &kiln::NoProgress)
        .expect("build");
    let config: serde_json::Value = serde_json::from_slice(&image.config).unwrap();
    config["created"].as_str().expect("created").to_owned()
}

/// Set in the child that runs [`the_library_ignores_source_date_epoch_in_the_environment`]
/// with `SOURCE_DATE_EPOCH` in its environment from the start.
const SOURCE_DATE_EPOCH_CHILD: &str = "KILN_TEST_SOURCE_DATE_EPOCH_CHILD";

#[test]
fn the_library_ignores_source_date_epoch_in_the_environment() {
    if common::not_root() {
        return;
    }
    if std::env::var_os(SOURCE_DATE_EPOCH_CHILD).is_none() {
        // Setting the variable here, while other tests of this binary build, would be unsound
        // (`std::env::set_var`): run this test again, alone, in a child that starts with it.
        let out = std::process::Command::new(std::env::current_exe().expect("own path"))
            .args([
                "--exact",
                "facade::the_library_ignores_source_date_epoch_in_the_environment",
                "--test-threads=1",
            ])
            .env(SOURCE_DATE_EPOCH_CHILD, "1")
            .env("SOURCE_DATE_EPOCH", "1000")
            .output()
            .expect("run the test in a child");
        let (stdout, stderr) = common::text(&out);
        assert!(
            out.status.success() && stdout.contains("test result: ok. 1 passed"),
            "{stdout}{stderr}"
        );
        return;
    }
    assert_eq!(std::env::var("SOURCE_DATE_EPOCH").as_deref(), Ok("1000"));
    let state = tempdir();
    let from_env = created_of(state.path(), None);
    let from_option = created_of(state.path(), Some(1000));
    assert_ne!(from_env, "1970-01-01T00:16:40Z", "the env was read");
    assert_eq!(from_option, "1970-01-01T00:16:40Z");
}

#[test]
fn dockerfile_text_and_parsed_specs() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let out = tempdir();
    let mut options = BuildRequest::new(hello_context());
    options.dockerfile = Dockerfile::Text("FROM scratch\nCOPY hello.txt /greeting\n".into());
    let dest = format!("type=local,dest={}", out.path().display());
    options.outputs.push(dest.parse().expect("buildx syntax"));
    Builder::new(state.path())
        .build(&options, &kiln::NoProgress)
        .expect("build");
    assert_eq!(
        std::fs::read(out.path().join("greeting")).unwrap(),
        b"hello from kiln\n"
    );

    // A syntax error names its line, before anything runs.
    options.dockerfile = Dockerfile::Text("FROM scratch\nCOPPY a /\n".into());
    let err = Builder::new(state.path())
        .build(&options, &kiln::NoProgress)
        .unwrap_err();
    assert_eq!(err.dockerfile_lines(), Some((2, 2)));
    assert!(
        err.to_string()
            .starts_with("Dockerfile:2: unknown instruction: COPPY"),
        "{err}"
    );
}

#[test]
fn push_with_credentials() {
    if common::not_root() {
        return;
    }
    let Some(registry) = Registry::start(Some(("kiln", "s3cret"))) else {
        return;
    };
    let state = tempdir();
    let name = format!("{}/lib/pushed:1", registry.addr);
    let mut options = BuildRequest::new(hello_context());
    options.tags.push(name.clone());
    options.outputs.push(OutputSpec::Image {
        names: Vec::new(),
        push: true,
        compression: kiln::Compression::Gzip,
    });

    // Wrong password: the error names the image.
    let wrong = Builder::new(state.path()).credentials(Credentials {
        registry: registry.addr.clone(),
        username: "kiln".into(),
        password: "nope".into(),
    });
    let err = wrong.build(&options, &kiln::NoProgress).unwrap_err();
    // The registry's error is the cause, kept (not a string) and printed once.
    assert_eq!(err.to_string(), format!("cannot push `{name}`"));
    let cause = std::error::Error::source(&err)
        .expect("a cause")
        .to_string();
    let report = err.report();
    assert_eq!(report, format!("cannot push `{name}`: {cause}"));
    assert_eq!(report.matches(&cause).count(), 1, "{report}");

    let right = Builder::new(state.path()).credentials(Credentials {
        registry: registry.addr.clone(),
        username: "kiln".into(),
        password: "s3cret".into(),
    });
    right.build(&options, &kiln::NoProgress).expect("push");
    assert!(
        registry
            .get("/v2/lib/pushed/manifests/1", Some(("kiln", "s3cret")))
            .is_some()
    );
    // Credentials never show in Debug output.
    assert!(!format!("{right:?}").contains("s3cret"));
}
