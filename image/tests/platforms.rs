//! Multi-platform images: a base image index resolved per platform (the shared registry's
//! `busybox:multi`, linux/amd64 + linux/arm64/v8), image indexes written, exported as an OCI
//! layout, pushed and pulled back, tagged in the store and kept by gc.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Registry, layer_tar, store};
use kiln_image::{
    Compression, CompressionOptions, ContentStore, Error, History, Image, ImageConfig, ImageIndex,
    Index, Platform, Reference, RegistryClient, RegistryOptions, WriteOptions, convert_index,
    export_oci_index, media_type, write_image, write_index,
};

/// The registry `/work/shared/registry-up.sh --multi` serves (CI runs it before the tests).
const SHARED: &str = kiln_testkit::SHARED_REGISTRY;

fn client() -> RegistryClient {
    RegistryClient::new(RegistryOptions {
        docker_config_dir: "/nonexistent".into(),
        ..Default::default()
    })
}

fn p(s: &str) -> Platform {
    Platform::parse(s).unwrap()
}

/// busybox:multi of the shared registry (skips, or fails under CI, when it is not served).
fn shared_multi() -> Option<Reference> {
    if !kiln_testkit::require_shared_registry(&common::test_name()) {
        return None;
    }
    Some(Reference::parse(&format!("{SHARED}/busybox:multi")).unwrap())
}

#[test]
fn pulls_each_platform_of_an_index_into_one_store() {
    let Some(multi) = shared_multi() else {
        return;
    };
    let (_d, s) = store();
    let c = client();
    let arm = c.pull(&s, &multi, &p("linux/arm64")).unwrap();
    assert_eq!(arm.config.architecture, "arm64");
    // Before amd64 is pulled, its image is not in the store (so a build pulls it).
    let err = Image::resolve(&s, &multi, &p("linux/amd64")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("image `{SHARED}/busybox:multi (linux/amd64)` is not in the local store")
    );
    assert_eq!(arm.config.os, "linux");
    let amd = c.pull(&s, &multi, &p("linux/amd64")).unwrap();
    assert_eq!(amd.config.architecture, "amd64");
    assert_ne!(arm.manifest_digest, amd.manifest_digest);
    assert_ne!(arm.layers, amd.layers);
    assert_eq!(arm.index_digest, amd.index_digest);
    assert!(arm.index_digest.is_some());
    // The tag names the index; each platform resolves to its own image, blobs all present.
    assert_eq!(s.resolve_tag(&multi).unwrap(), arm.index_digest);
    for (want, img) in [("linux/arm64", &arm), ("linux/amd64", &amd)] {
        let got = Image::resolve(&s, &multi, &p(want)).unwrap();
        assert_eq!(got.manifest_digest, img.manifest_digest, "{want}");
        for l in &got.layers {
            assert_eq!(s.blob_size(&l.digest).unwrap(), l.size);
        }
    }
    // arm64/v8 spelled out, and aarch64, are the arm64 entry.
    for spec in ["linux/arm64/v8", "linux/aarch64"] {
        let got = Image::resolve(&s, &multi, &p(spec)).unwrap();
        assert_eq!(got.manifest_digest, arm.manifest_digest, "{spec}");
    }
    // 386 runs on amd64 but an amd64 image does not run on 386: amd64 is not picked for it.
    let err = Image::resolve(&s, &multi, &p("linux/386")).unwrap_err();
    assert!(matches!(err, Error::PlatformNotFound { .. }), "{err}");
}

#[test]
fn a_base_image_without_the_platform_says_what_it_has() {
    let Some(multi) = shared_multi() else {
        return;
    };
    let (_d, s) = store();
    let c = client();
    for spec in ["linux/s390x", "linux/arm/v7"] {
        let err = c.pull(&s, &multi, &p(spec)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{SHARED}/busybox:multi has no image for {spec} (it has linux/amd64, linux/arm64)"
            )
        );
        let Error::PlatformNotFound { available, .. } = err else {
            panic!("not PlatformNotFound");
        };
        assert_eq!(available, ["linux/amd64", "linux/arm64"]);
    }
    // A single-platform image is used whatever the platform asked for, as BuildKit does.
    let arm_only = Reference::parse(&format!("{SHARED}/busybox:arm64")).unwrap();
    let img = c.pull(&s, &arm_only, &p("linux/amd64")).unwrap();
    assert_eq!(img.config.architecture, "arm64");
    assert_eq!(img.index_digest, None);
}

/// A one-layer image for `platform` whose file `/arch` names it (gzip layer).
fn platform_image(s: &ContentStore, platform: &str) -> Image {
    let platform = p(platform);
    let mut config = ImageConfig::new(&platform);
    if platform.architecture == "arm64" {
        // Configs of arm64 images usually spell the variant out.
        config.variant = Some("v8".into());
    }
    config.created = Some("2023-11-14T22:13:20Z".into());
    let mut w = s
        .layer_writer(CompressionOptions {
            compression: Compression::Gzip,
            level: None,
        })
        .unwrap();
    w.write_all(&layer_tar(&[(
        "arch",
        platform.architecture.as_bytes(),
        0o644,
    )]))
    .unwrap();
    let layer = w.finish().unwrap();
    config.rootfs.diff_ids.push(layer.diff_id);
    config.history.push(History {
        created_by: Some("COPY arch /arch".into()),
        ..Default::default()
    });
    write_image(s, &config, &[layer.descriptor]).unwrap()
}

/// The amd64 and arm64 images and their index, in a fresh store.
fn two_platforms() -> (tempfile::TempDir, ContentStore, ImageIndex) {
    let (d, s) = store();
    let images = [
        platform_image(&s, "linux/amd64"),
        platform_image(&s, "linux/arm64"),
    ];
    let index = write_index(&s, &images, &WriteOptions::default()).unwrap();
    (d, s, index)
}

/// Every blob of an index: itself, then each image's manifest, config and layers, sorted.
fn blobs_of(index: &ImageIndex) -> Vec<String> {
    let mut all = vec![index.digest.hex().to_owned()];
    for i in &index.images {
        all.push(i.manifest_digest.hex().to_owned());
        all.push(i.config_digest.hex().to_owned());
        all.extend(i.layers.iter().map(|l| l.digest.hex().to_owned()));
    }
    all.sort();
    all
}

#[test]
fn write_index_lists_each_image_with_its_platform() {
    let (_d, s, index) = two_platforms();
    assert_eq!(index.media_type, media_type::OCI_INDEX);
    let amd = &index.images[0];
    let arm = &index.images[1];
    let stored = s.read_blob(&index.digest).unwrap();
    assert_eq!(stored.len() as u64, index.size);
    assert_eq!(
        String::from_utf8(stored).unwrap(),
        format!(
            concat!(
                r#"{{"manifests":["#,
                r#"{{"digest":"{}","mediaType":"application/vnd.oci.image.manifest.v1+json","platform":{{"architecture":"amd64","os":"linux"}},"size":{}}},"#,
                r#"{{"digest":"{}","mediaType":"application/vnd.oci.image.manifest.v1+json","platform":{{"architecture":"arm64","os":"linux","variant":"v8"}},"size":{}}}"#,
                r#"],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}}"#
            ),
            amd.manifest_digest, amd.manifest_size, arm.manifest_digest, arm.manifest_size
        )
    );
    assert!(
        index
            .images
            .iter()
            .all(|i| i.index_digest == Some(index.digest.clone()))
    );
    // Reproducible, and loaded back whole.
    let again = write_index(&s, &[amd.clone(), arm.clone()], &WriteOptions::default()).unwrap();
    assert_eq!(again.digest, index.digest);
    assert_eq!(ImageIndex::load(&s, &index.digest).unwrap(), index);
    assert_eq!(index.descriptor().media_type, media_type::OCI_INDEX);
    assert_eq!(index.descriptor().size, index.size);
    // oci-spec reads it.
    let parsed =
        oci_spec::image::ImageIndex::from_reader(&s.read_blob(&index.digest).unwrap()[..]).unwrap();
    assert_eq!(parsed.manifests().len(), 2);
    // A Docker manifest list with Docker media types; the order is the caller's.
    let docker_opts = WriteOptions {
        docker_media_types: true,
        ..Default::default()
    };
    let list = write_index(&s, &[arm.clone(), amd.clone()], &docker_opts).unwrap();
    assert_eq!(list.media_type, media_type::DOCKER_MANIFEST_LIST);
    let doc: Index = serde_json::from_slice(&s.read_blob(&list.digest).unwrap()).unwrap();
    assert_eq!(
        doc.media_type.as_deref(),
        Some(media_type::DOCKER_MANIFEST_LIST)
    );
    assert_eq!(doc.manifests[0].digest, arm.manifest_digest);
    // Nothing to index, or an image that is not stored, is refused.
    assert!(write_index(&s, &[], &WriteOptions::default()).is_err());
    let (_d2, other) = store();
    let err = write_index(&other, std::slice::from_ref(amd), &WriteOptions::default()).unwrap_err();
    assert!(matches!(err, Error::BlobNotFound { .. }), "{err}");
    // A manifest is not an index.
    assert!(ImageIndex::load(&s, &amd.manifest_digest).is_err());
}

#[test]
fn a_tagged_index_resolves_per_platform_and_gc_keeps_what_it_reaches() {
    let (_d, s, index) = two_platforms();
    let r = Reference::parse("example.com/app:multi").unwrap();
    s.set_tag(&r, &index.digest).unwrap();
    for (spec, want) in [
        ("linux/amd64", &index.images[0]),
        ("linux/arm64", &index.images[1]),
        ("linux/arm64/v8", &index.images[1]),
    ] {
        let got = Image::resolve(&s, &r, &p(spec)).unwrap();
        assert_eq!(got.manifest_digest, want.manifest_digest, "{spec}");
        assert_eq!(got.index_digest, Some(index.digest.clone()));
    }
    let err = Image::resolve(&s, &r, &p("linux/riscv64")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "example.com/app:multi has no image for linux/riscv64 (it has linux/amd64, linux/arm64)"
    );
    let report = s.collect_garbage(&[], Duration::ZERO).unwrap();
    assert!(report.removed.is_empty(), "{report:?}");
    for d in blobs_of(&index) {
        assert!(s.has_blob(&kiln_image::Digest::parse(&format!("sha256:{d}")).unwrap()));
    }
    s.remove_tag(&r).unwrap();
    let report = s.collect_garbage(&[], Duration::ZERO).unwrap();
    let mut removed: Vec<String> = report.removed.iter().map(|d| d.hex().to_owned()).collect();
    removed.sort();
    assert_eq!(removed, blobs_of(&index));
}

#[test]
fn convert_index_recompresses_every_image() {
    let (_d, s, index) = two_platforms();
    let zstd = CompressionOptions {
        compression: Compression::Zstd,
        level: None,
    };
    let converted = convert_index(&s, &index, zstd, false).unwrap();
    assert_ne!(converted.digest, index.digest);
    assert_eq!(converted.media_type, media_type::OCI_INDEX);
    assert_eq!(converted.images.len(), 2);
    for (c, o) in converted.images.iter().zip(&index.images) {
        assert_eq!(c.config.architecture, o.config.architecture);
        assert!(
            c.layers
                .iter()
                .all(|l| l.media_type == media_type::OCI_LAYER_ZSTD)
        );
        assert_eq!(c.config.rootfs.diff_ids, o.config.rootfs.diff_ids);
    }
    assert_eq!(ImageIndex::load(&s, &converted.digest).unwrap(), converted);
    // Nothing to change: the same index.
    assert_eq!(
        convert_index(&s, &converted, zstd, false).unwrap(),
        converted
    );
    // Docker media types: a manifest list of Docker manifests.
    let gzip = CompressionOptions::default();
    let docker = convert_index(&s, &index, gzip, true).unwrap();
    assert_eq!(docker.media_type, media_type::DOCKER_MANIFEST_LIST);
    assert!(
        docker
            .images
            .iter()
            .all(|i| i.manifest_media_type == media_type::DOCKER_MANIFEST)
    );
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sorted_blob_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn oci_layout_of_an_index_holds_one_index_descriptor_and_every_blob() {
    let (d, s, index) = two_platforms();
    let name = Reference::parse("example.com/app:v1").unwrap();
    let dir = d.path().join("layout");
    export_oci_index(&s, &index, std::slice::from_ref(&name), &dir, false).unwrap();
    let top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        top,
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_INDEX,
            "manifests": [{
                "mediaType": media_type::OCI_INDEX,
                "digest": index.digest.to_string(),
                "size": index.size,
                "annotations": {
                    "io.containerd.image.name": "example.com/app:v1",
                    "org.opencontainers.image.ref.name": "v1",
                },
            }],
        })
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    assert_eq!(sorted_blob_names(&dir), blobs_of(&index));

    let tar = d.path().join("multi.tar");
    export_oci_index(&s, &index, &[name], &tar, true).unwrap();
    let entries = common::tar_entries(&tar);
    let mut blob_names: Vec<String> = entries
        .iter()
        .filter_map(|(n, data)| {
            n.strip_prefix("blobs/sha256/")
                .filter(|h| !h.is_empty() && !data.is_empty())
                .map(str::to_owned)
        })
        .collect();
    blob_names.sort();
    assert_eq!(blob_names, blobs_of(&index));
    let json = |n: &str| {
        entries
            .iter()
            .find(|(e, _)| e == n)
            .map(|(_, d)| d.clone())
            .unwrap()
    };
    assert_eq!(
        json("index.json"),
        std::fs::read(dir.join("index.json")).unwrap()
    );

    // kiln load of the layout picks the platform asked for out of the index.
    let (_d2, s2) = store();
    let loaded = kiln_image::load_archive(&s2, &tar, &p("linux/arm64")).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(
        loaded[0].image.manifest_digest,
        index.images[1].manifest_digest
    );
    assert_eq!(loaded[0].image.index_digest, Some(index.digest.clone()));
    assert_eq!(
        loaded[0].names,
        [Reference::parse("example.com/app:v1").unwrap()]
    );

    if !kiln_testkit::require_tool(&common::test_name(), "skopeo", "skopeo") {
        return;
    }
    let archive = format!("oci-archive:{}", tar.display());
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", &archive]));
    assert_eq!(raw, s.read_blob(&index.digest).unwrap());
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
        let mut cmd = Command::new("skopeo");
        cmd.args(["--override-os", "linux", "--override-arch", arch]);
        if let Some(v) = variant {
            cmd.args(["--override-variant", v]);
        }
        let out = run(cmd.args(["inspect", "--config", &archive]));
        let config: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(config["architecture"], arch);
    }
    // skopeo copies the whole index out of the layout (every platform's blobs read).
    let copy = d.path().join("copied");
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        &format!("oci:{}", dir.display()),
        &format!("oci:{}:copy", copy.display()),
    ]));
    assert_eq!(sorted_blob_names(&copy), blobs_of(&index));
}

#[test]
fn loading_a_multi_platform_layout_tags_the_index() {
    let (d, s, index) = two_platforms();
    let name = Reference::parse("example.com/app:v1").unwrap();
    let tar = d.path().join("multi.tar");
    export_oci_index(&s, &index, std::slice::from_ref(&name), &tar, true).unwrap();
    let (_d2, s2) = store();
    let arm = kiln_image::load_archive(&s2, &tar, &p("linux/arm64")).unwrap();
    assert_eq!(
        arm[0].image.manifest_digest,
        index.images[1].manifest_digest
    );
    // The tag names the index, as a pull tags it: the platform loaded resolves from it, the
    // other one is not in the store yet (instead of the tag giving arm64 for amd64).
    assert_eq!(s2.resolve_tag(&name).unwrap(), Some(index.digest.clone()));
    let got = Image::resolve(&s2, &name, &p("linux/arm64")).unwrap();
    assert_eq!(got.manifest_digest, index.images[1].manifest_digest);
    assert_eq!(got.index_digest, Some(index.digest.clone()));
    let err = Image::resolve(&s2, &name, &p("linux/amd64")).unwrap_err();
    assert!(matches!(err, Error::ImageNotFound { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "image `example.com/app:v1 (linux/amd64)` is not in the local store"
    );
    // Loading the other platform from the same layout: both resolve from the one tag.
    let amd = kiln_image::load_archive(&s2, &tar, &p("linux/amd64")).unwrap();
    assert_eq!(
        amd[0].image.manifest_digest,
        index.images[0].manifest_digest
    );
    assert_eq!(s2.resolve_tag(&name).unwrap(), Some(index.digest.clone()));
    for (spec, want) in [
        ("linux/amd64", &index.images[0]),
        ("linux/arm64", &index.images[1]),
    ] {
        let got = Image::resolve(&s2, &name, &p(spec)).unwrap();
        assert_eq!(got.manifest_digest, want.manifest_digest, "{spec}");
        assert_eq!(got.config.architecture, want.config.architecture, "{spec}");
    }

    // A single-platform layout still tags its manifest.
    let one = d.path().join("one.tar");
    kiln_image::export_oci(
        &s,
        &index.images[0],
        std::slice::from_ref(&name),
        &one,
        true,
    )
    .unwrap();
    let (_d3, s3) = store();
    let loaded = kiln_image::load_archive(&s3, &one, &p("linux/amd64")).unwrap();
    assert_eq!(loaded[0].image.index_digest, None);
    assert_eq!(
        s3.resolve_tag(&name).unwrap(),
        Some(index.images[0].manifest_digest.clone())
    );
}

#[test]
fn push_index_then_pull_each_platform_back() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let (_d, s, index) = two_platforms();
    let r = Reference::parse(&format!("{}/kiln/multi:v1", reg.addr)).unwrap();
    let c = client();
    let report = c.push_index(&s, &index, &r).unwrap();
    assert_eq!(report.manifest_digest, index.digest);
    assert_eq!(report.manifest_size, index.size);
    // Two configs and two layers.
    assert_eq!(report.uploaded.len(), 4, "{report:?}");
    let again = c.push_index(&s, &index, &r).unwrap();
    assert!(
        again.uploaded.is_empty() && again.skipped.len() == 4,
        "{again:?}"
    );

    let (_d2, dst) = store();
    for (spec, want) in [
        ("linux/amd64", &index.images[0]),
        ("linux/arm64", &index.images[1]),
    ] {
        let got = c.pull(&dst, &r, &p(spec)).unwrap();
        assert_eq!(got.manifest_digest, want.manifest_digest, "{spec}");
        assert_eq!(got.config, want.config, "{spec}");
        assert_eq!(got.index_digest, Some(index.digest.clone()));
        for l in &got.layers {
            assert_eq!(
                dst.read_blob(&l.digest).unwrap(),
                s.read_blob(&l.digest).unwrap()
            );
        }
    }
    assert_eq!(dst.resolve_tag(&r).unwrap(), Some(index.digest.clone()));
    // Everything pulled: the whole index loads from the pulled store.
    assert_eq!(
        ImageIndex::load(&dst, &index.digest).unwrap().images,
        index.images
    );

    if kiln_testkit::require_tool(&common::test_name(), "skopeo", "skopeo") {
        let raw = run(Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{r}"),
        ]));
        assert_eq!(raw, s.read_blob(&index.digest).unwrap());
    }
}

#[test]
fn push_index_compresses_uncompressed_layers_under_a_new_index() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let (_d, s, index) = two_platforms();
    let raw = CompressionOptions {
        compression: Compression::Uncompressed,
        level: None,
    };
    let uncompressed = convert_index(&s, &index, raw, false).unwrap();
    let r = Reference::parse(&format!("{}/kiln/multi:raw", reg.addr)).unwrap();
    let c = RegistryClient::new(RegistryOptions {
        docker_config_dir: "/nonexistent".into(),
        push_compression: Some(CompressionOptions::default()),
        ..Default::default()
    });
    let report = c.push_index(&s, &uncompressed, &r).unwrap();
    assert_ne!(report.manifest_digest, uncompressed.digest);
    let pushed = ImageIndex::load(&s, &report.manifest_digest).unwrap();
    assert!(
        pushed
            .images
            .iter()
            .flat_map(|i| &i.layers)
            .all(|l| l.media_type == media_type::OCI_LAYER_GZIP)
    );
    let (_d2, dst) = store();
    let got = c.pull(&dst, &r, &p("linux/arm64")).unwrap();
    assert_eq!(got.index_digest, Some(report.manifest_digest));
    assert_eq!(got.config.architecture, "arm64");
}
