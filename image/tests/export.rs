//! Exports checked by independent tools (skopeo, umoci) and by layout, and archive loads.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::{store, tar_entries, test_image};
use kiln_image::{
    Compression, CompressionOptions, Digest, Image, Platform, Reference, export_docker, export_oci,
    load_archive, media_type,
};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn oci_archive_is_accepted_by_skopeo() {
    if !kiln_testkit::require_tool("oci_archive_is_accepted_by_skopeo", "skopeo", "skopeo") {
        return;
    }
    let (_d, s) = store();
    let image = test_image(&s, "sk", [Compression::Gzip, Compression::Zstd]);
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("img.tar");
    let name = Reference::parse("example.com/kiln/sk:v1").unwrap();
    export_oci(&s, &image, std::slice::from_ref(&name), &tar, true).unwrap();
    let j: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", tar.display()))))
    .unwrap();
    assert_eq!(j["Digest"], image.manifest_digest.as_str());
    assert_eq!(j["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(j["Labels"]["tag"], "sk");
    // Addressed by its ref name, as BuildKit's archives are.
    let raw = run(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}:v1", tar.display())));
    assert_eq!(Digest::of_bytes(raw.as_bytes()), image.manifest_digest);

    let entries = tar_entries(&tar);
    let index: serde_json::Value =
        serde_json::from_slice(&entries.iter().find(|(n, _)| n == "index.json").unwrap().1)
            .unwrap();
    let ann = &index["manifests"][0]["annotations"];
    assert_eq!(ann["io.containerd.image.name"], "example.com/kiln/sk:v1");
    assert_eq!(ann["org.opencontainers.image.ref.name"], "v1");
    // Reproducible: the same export twice is byte-identical.
    let tar2 = out.path().join("img2.tar");
    export_oci(&s, &image, &[name], &tar2, true).unwrap();
    assert_eq!(std::fs::read(&tar).unwrap(), std::fs::read(&tar2).unwrap());
}

#[test]
fn oci_layout_dir_unpacks_with_umoci() {
    if !kiln_testkit::require_tool("oci_layout_dir_unpacks_with_umoci", "umoci", "umoci") {
        return;
    }
    let (_d, s) = store();
    let image = test_image(&s, "um", [Compression::Gzip, Compression::Uncompressed]);
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    export_oci(
        &s,
        &image,
        &[Reference::parse("kiln/um:v2").unwrap()],
        &layout,
        false,
    )
    .unwrap();
    let bundle = out.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:v2", layout.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("bin/hello")).unwrap(),
        "#!/bin/sh\necho hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/motd")).unwrap(),
        "tag um\n",
        "upper layer wins"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(rootfs.join("etc/motd"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(rootfs.join("bin/hello"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["process"]["args"][0], "/bin/hello");
}

/// The layout Docker 25+ `docker save` writes (moby image/tarexport/save.go): blobs/sha256/ with
/// uncompressed layers named by diff_id, the config and an OCI manifest; index.json whose entries
/// carry `io.containerd.image.name` (full name) and `org.opencontainers.image.ref.name` (tag);
/// manifest.json with Config / RepoTags (familiar names) / Layers paths into blobs/; oci-layout.
#[test]
fn docker_archive_matches_docker_save_layout() {
    let (_d, s) = store();
    let image = test_image(&s, "dk", [Compression::Gzip, Compression::Zstd]);
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("docker.tar");
    let names = vec![
        Reference::parse("busybox:dk").unwrap(),
        Reference::parse("localhost:5000/x/y:1").unwrap(),
    ];
    export_docker(&s, &[(image.clone(), names)], None, &tar).unwrap();
    let entries: BTreeMap<String, Vec<u8>> = tar_entries(&tar).into_iter().collect();
    let mut top: Vec<&str> = entries
        .keys()
        .filter(|k| !k.starts_with("blobs/sha256/") || k.len() == 13)
        .map(String::as_str)
        .collect();
    top.sort_unstable();
    assert_eq!(
        top,
        [
            "blobs/",
            "blobs/sha256/",
            "index.json",
            "manifest.json",
            "oci-layout"
        ]
    );
    assert_eq!(entries["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);

    let mj: serde_json::Value = serde_json::from_slice(&entries["manifest.json"]).unwrap();
    let m = &mj[0];
    assert_eq!(
        m["Config"],
        format!("blobs/sha256/{}", image.config_digest.hex())
    );
    assert_eq!(
        m["RepoTags"],
        serde_json::json!(["busybox:dk", "localhost:5000/x/y:1"])
    );
    let layers: Vec<String> = m["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    // Layers are the uncompressed tars, named by their diff_ids, as docker save writes them.
    let expected: Vec<String> = image
        .config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| format!("blobs/sha256/{}", d.hex()))
        .collect();
    assert_eq!(layers, expected);
    for (path, diff_id) in layers.iter().zip(&image.config.rootfs.diff_ids) {
        assert_eq!(&Digest::of_bytes(&entries[path]), diff_id);
        assert!(
            tar::Archive::new(&entries[path][..])
                .entries()
                .unwrap()
                .count()
                > 0
        );
    }
    let index: serde_json::Value = serde_json::from_slice(&entries["index.json"]).unwrap();
    assert_eq!(index["mediaType"], media_type::OCI_INDEX);
    let ms = index["manifests"].as_array().unwrap();
    assert_eq!(ms.len(), 2);
    assert_eq!(
        ms[0]["annotations"]["io.containerd.image.name"],
        "docker.io/library/busybox:dk"
    );
    assert_eq!(
        ms[0]["annotations"]["org.opencontainers.image.ref.name"],
        "dk"
    );
    let mdigest = Digest::parse(ms[0]["digest"].as_str().unwrap()).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&entries[&format!("blobs/sha256/{}", mdigest.hex())]).unwrap();
    assert_eq!(manifest["layers"][0]["mediaType"], media_type::OCI_LAYER);
    assert_eq!(manifest["config"]["digest"], image.config_digest.as_str());

    let test = common::test_name();
    if kiln_testkit::require_tool(&test, "skopeo", "skopeo") {
        let j: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo")
            .arg("inspect")
            .arg(format!("docker-archive:{}:busybox:dk", tar.display()))))
        .unwrap();
        assert_eq!(j["Layers"].as_array().unwrap().len(), 2);
        // skopeo reads every layer (checking digests) when it copies the archive elsewhere;
        // umoci then unpacks the copy, so the content went through two independent readers.
        if kiln_testkit::require_tool(&test, "umoci", "umoci") {
            let layout = out.path().join("copied");
            run(Command::new("skopeo")
                .arg("copy")
                .arg(format!("docker-archive:{}:busybox:dk", tar.display()))
                .arg(format!("oci:{}:dk", layout.display())));
            let bundle = out.path().join("bundle");
            run(Command::new("umoci")
                .args(["unpack", "--image"])
                .arg(format!("{}:dk", layout.display()))
                .arg(&bundle));
            assert_eq!(
                std::fs::read_to_string(bundle.join("rootfs/etc/motd")).unwrap(),
                "tag dk\n"
            );
            assert_eq!(
                std::fs::read_to_string(bundle.join("rootfs/bin/hello")).unwrap(),
                "#!/bin/sh\necho hello\n"
            );
        }
    }
}

#[test]
fn save_and_load_round_trip_docker_and_oci_archives() {
    let (_d, s) = store();
    let image = test_image(&s, "ld", [Compression::Gzip, Compression::Gzip]);
    let out = tempfile::tempdir().unwrap();
    let name = Reference::parse("kiln/ld:1").unwrap();

    let docker = out.path().join("d.tar");
    export_docker(&s, &[(image.clone(), vec![name.clone()])], None, &docker).unwrap();
    let (_d2, s2) = store();
    let loaded = load_archive(&s2, &docker, &Platform::linux_amd64()).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].names, vec![name.clone()]);
    assert_eq!(
        loaded[0].image.config_digest, image.config_digest,
        "same image id after save/load"
    );
    let back = Image::resolve(&s2, &name, &Platform::linux_amd64()).unwrap();
    assert_eq!(back.config, image.config);

    let oci = out.path().join("o.tar");
    export_oci(&s, &image, std::slice::from_ref(&name), &oci, true).unwrap();
    let (_d3, s3) = store();
    let loaded = load_archive(&s3, &oci, &Platform::linux_amd64()).unwrap();
    assert_eq!(
        loaded[0].image.manifest_digest, image.manifest_digest,
        "OCI load keeps the manifest digest"
    );
    assert_eq!(
        s3.resolve_tag(&name).unwrap(),
        Some(image.manifest_digest.clone())
    );
}

#[test]
fn loads_a_pre_25_docker_archive() {
    // The older layout: <id>/layer.tar, <config-hex>.json, manifest.json.
    let layer = common::layer_tar(&[("hello.txt", b"hi\n", 0o644)]);
    let diff_id = Digest::of_bytes(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    );
    let config_digest = Digest::of_bytes(config.as_bytes());
    let manifest = format!(
        r#"[{{"Config":"{}.json","RepoTags":["old:style"],"Layers":["abc/layer.tar"]}}]"#,
        config_digest.hex()
    );
    let out = tempfile::tempdir().unwrap();
    let tar_path = out.path().join("old.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
    for (name, data) in [
        (format!("{}.json", config_digest.hex()), config.as_bytes()),
        ("abc/layer.tar".to_owned(), &layer[..]),
        ("manifest.json".to_owned(), manifest.as_bytes()),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    }
    b.finish().unwrap();
    drop(b);
    let (_d, s) = store();
    let loaded = load_archive(&s, &tar_path, &Platform::linux_amd64()).unwrap();
    assert_eq!(
        loaded[0].image.config_digest, config_digest,
        "the archive's config bytes are kept"
    );
    assert_eq!(loaded[0].image.layers[0].digest, diff_id);
    assert_eq!(
        loaded[0].image.manifest_media_type,
        media_type::DOCKER_MANIFEST
    );
    assert!(
        s.resolve_tag(&Reference::parse("old:style").unwrap())
            .unwrap()
            .is_some()
    );

    // A layer whose bytes do not match the config's diff_id is refused, nothing tagged.
    let bad = out.path().join("bad.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&bad).unwrap());
    let other = common::layer_tar(&[("x", b"y", 0o644)]);
    let manifest2 = manifest.replace("old:style", "old:bad");
    for (name, data) in [
        (format!("{}.json", config_digest.hex()), config.as_bytes()),
        ("abc/layer.tar".to_owned(), &other[..]),
        ("manifest.json".to_owned(), manifest2.as_bytes()),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    }
    b.finish().unwrap();
    drop(b);
    let err = load_archive(&s, &bad, &Platform::linux_amd64())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("digest mismatch") && err.contains("abc/layer.tar"),
        "{err}"
    );
    assert_eq!(
        s.resolve_tag(&Reference::parse("old:bad").unwrap())
            .unwrap(),
        None
    );
    assert!(load_archive(&s, Path::new("/nonexistent.tar"), &Platform::linux_amd64()).is_err());
}

#[test]
fn export_recompresses_layers_on_request() {
    let (_d, s) = store();
    let image = test_image(&s, "cz", [Compression::Gzip, Compression::Gzip]);
    let zstd = kiln_image::convert_image(
        &s,
        &image,
        CompressionOptions {
            compression: Compression::Zstd,
            level: Some(19),
        },
        false,
    )
    .unwrap();
    assert_ne!(zstd.manifest_digest, image.manifest_digest);
    assert_eq!(
        zstd.config_digest, image.config_digest,
        "diff_ids and config unchanged"
    );
    for (a, b) in image.layers.iter().zip(&zstd.layers) {
        assert_eq!(b.media_type, media_type::OCI_LAYER_ZSTD);
        let blob = s.read_blob(&b.digest).unwrap();
        assert_eq!(Compression::detect(&blob), Compression::Zstd);
        let mut plain_a = Vec::new();
        std::io::Read::read_to_end(
            &mut kiln_image::decompress(s.open_blob(&a.digest).unwrap()).unwrap(),
            &mut plain_a,
        )
        .unwrap();
        assert_eq!(zstd::decode_all(&blob[..]).unwrap(), plain_a);
    }
    // The conversion is remembered: a second one writes nothing new.
    let before = s.list_blobs().unwrap().len();
    let again = kiln_image::convert_image(
        &s,
        &image,
        CompressionOptions {
            compression: Compression::Zstd,
            level: Some(19),
        },
        false,
    )
    .unwrap();
    assert_eq!(again.manifest_digest, zstd.manifest_digest);
    assert_eq!(s.list_blobs().unwrap().len(), before);
}

#[test]
fn what_we_write_parses_with_oci_spec() {
    let (_d, s) = store();
    let image = test_image(&s, "os", [Compression::Gzip, Compression::Zstd]);
    let m: oci_spec::image::ImageManifest =
        serde_json::from_slice(&s.read_blob(&image.manifest_digest).unwrap()).unwrap();
    assert_eq!(m.layers().len(), 2);
    let c: oci_spec::image::ImageConfiguration =
        serde_json::from_slice(&s.read_blob(&image.config_digest).unwrap()).unwrap();
    assert_eq!(c.rootfs().diff_ids().len(), 2);
    assert_eq!(
        c.config().as_ref().unwrap().cmd().as_ref().unwrap(),
        &vec!["/bin/hello".to_owned()]
    );
}

#[test]
fn rootfs_tar_is_sorted_and_keeps_modes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("b/sub")).unwrap();
    std::fs::write(root.join("b/sub/f"), b"data").unwrap();
    std::fs::write(root.join("a"), b"x").unwrap();
    std::os::unix::fs::symlink("a", root.join("c")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("a"), std::fs::Permissions::from_mode(0o4711)).unwrap();
    let mut out = Vec::new();
    kiln_image::write_rootfs_tar(root, None, &mut out).unwrap();
    // Without an epoch the mtimes are the files' (written just now).
    let mut a = tar::Archive::new(&out[..]);
    for e in a.entries().unwrap() {
        assert!(e.unwrap().header().mtime().unwrap() > 1_700_000_000);
    }
    // With the build's SOURCE_DATE_EPOCH (the caller's, not the environment's) they are clamped.
    let mut clamped = Vec::new();
    kiln_image::write_rootfs_tar(root, Some(1_000), &mut clamped).unwrap();
    let mut a = tar::Archive::new(&clamped[..]);
    for e in a.entries().unwrap() {
        assert_eq!(e.unwrap().header().mtime().unwrap(), 1_000);
    }
    let mut a = tar::Archive::new(&out[..]);
    let mut seen = Vec::new();
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        if p == "a" {
            assert_eq!(e.header().mode().unwrap(), 0o4711);
        }
        if p == "c" {
            assert_eq!(e.link_name().unwrap().unwrap().to_str(), Some("a"));
        }
        seen.push(p);
    }
    assert_eq!(seen, ["a", "b", "b/sub", "b/sub/f", "c"]);
}

#[test]
fn export_refuses_a_blob_corrupted_in_the_store() {
    let (_d, s) = store();
    let image = test_image(&s, "cor", [Compression::Gzip, Compression::Gzip]);
    let p = s.blob_path(&image.layers[0].digest);
    let mut data = std::fs::read(&p).unwrap();
    data[10] ^= 0x55;
    std::fs::write(&p, &data).unwrap();
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("x.tar");
    let err = export_oci(&s, &image, &[], &tar, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("digest mismatch") && err.contains(image.layers[0].digest.as_str()),
        "{err}"
    );
    assert!(!tar.exists(), "no half-written archive");
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "temp file removed"
    );
}

#[test]
fn load_refuses_paths_leaving_the_archive() {
    let out = tempfile::tempdir().unwrap();
    let tar_path = out.path().join("evil.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "cfg.json", "/etc/passwd").unwrap();
    let manifest = br#"[{"Config":"cfg.json","RepoTags":["evil:1"],"Layers":[]}]"#;
    let mut h = tar::Header::new_ustar();
    h.set_size(manifest.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "manifest.json", &manifest[..])
        .unwrap();
    b.finish().unwrap();
    drop(b);
    let (_d, s) = store();
    let err = load_archive(&s, &tar_path, &Platform::linux_amd64())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`cfg.json` points outside the archive"),
        "{err}"
    );
    assert!(s.list_tags().unwrap().is_empty());
    // Nothing of the unpacked archive stays behind.
    assert_eq!(
        std::fs::read_dir(s.state_dir().join("content/ingest"))
            .unwrap()
            .count(),
        0
    );
}
