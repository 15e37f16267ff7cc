//! Round trips on real layers: the base images served by `../shared/registry-up.sh`
//! (127.0.0.1:5000, fetched with curl) and a layer made by GNU tar from a real busybox tree.
//!
//! For each layer and driver: unpacking it into a snapshot yields the diff_id recorded in the
//! image config; writing that snapshot back out gives kiln's canonical layer, and unpacking and
//! writing *that* again gives the same diff_id and the same tree. (A foreign tar stream cannot be
//! reproduced byte for byte in general: Python's tarfile pads to 10 KiB records and orders
//! entries its own way; GNU tar prefixes `./`. Layers written by kiln round-trip exactly.)

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::{assert_same_tree, need_root};
use kiln_snapshotter::{
    Compression, CompressionOptions, DriverChoice, LayerOptions, MountedSnapshot, Snapshotter,
    apply_layer, apply_layer_to_snapshot, open, write_layer,
};

const REGISTRY: &str = kiln_testkit::SHARED_REGISTRY;
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json";

fn curl(url: &str) -> Option<Vec<u8>> {
    let out = Command::new("curl")
        .args([
            "-fsS",
            "--max-time",
            "120",
            "-H",
            &format!("Accept: {ACCEPT}"),
            url,
        ])
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

/// (layer blobs, diff_ids from the config) of `repo:tag`, resolving an index to linux/amd64.
fn pull(repo: &str, tag: &str) -> Option<(Vec<Vec<u8>>, Vec<String>)> {
    let base = format!("http://{REGISTRY}/v2/{repo}");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&curl(&format!("{base}/manifests/{tag}"))?).ok()?;
    if let Some(list) = manifest.get("manifests").and_then(|m| m.as_array()) {
        let digest = list
            .iter()
            .find(|m| m["platform"]["architecture"] == "amd64")?["digest"]
            .as_str()?
            .to_string();
        manifest = serde_json::from_slice(&curl(&format!("{base}/manifests/{digest}"))?).ok()?;
    }
    let config: serde_json::Value = serde_json::from_slice(&curl(&format!(
        "{base}/blobs/{}",
        manifest["config"]["digest"].as_str()?
    ))?)
    .ok()?;
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()?
        .iter()
        .map(|d| d.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()?;
    let mut blobs = Vec::new();
    for l in manifest["layers"].as_array()? {
        blobs.push(curl(&format!("{base}/blobs/{}", l["digest"].as_str()?))?);
    }
    Some((blobs, diff_ids))
}

/// Unpacks `layers` into a chain in a fresh store, checking diff_ids; returns the store.
fn unpack(
    state: &Path,
    driver: DriverChoice,
    layers: &[Vec<u8>],
    diff_ids: &[String],
) -> Box<dyn Snapshotter> {
    let s = open(state, driver).unwrap();
    let mut parent: Option<String> = None;
    for (i, l) in layers.iter().enumerate() {
        let key = format!("k{i}");
        s.prepare(&key, parent.as_deref()).unwrap();
        let applied = apply_layer_to_snapshot(s.as_ref(), &key, &l[..]).unwrap();
        assert_eq!(
            applied.diff_id, diff_ids[i],
            "diff_id of layer {i} while unpacking"
        );
        s.commit(&format!("l{i}"), &key).unwrap();
        parent = Some(format!("l{i}"));
    }
    s
}

/// The full round trip for one image on one driver; returns the first store's state dir.
fn round_trip(driver: DriverChoice, layers: &[Vec<u8>], diff_ids: &[String]) -> tempfile::TempDir {
    let opts = LayerOptions {
        compression: CompressionOptions {
            compression: Compression::Gzip,
            level: Some(1),
        },
        source_date_epoch: None,
    };
    let state1 = tempfile::tempdir().unwrap();
    let s1 = unpack(state1.path(), driver, layers, diff_ids);
    let (mut canon, mut canon_ids) = (Vec::new(), Vec::new());
    for i in 0..layers.len() {
        let mut blob = Vec::new();
        let info = write_layer(s1.as_ref(), &format!("l{i}"), &opts, &mut blob).unwrap();
        canon_ids.push(info.diff_id);
        canon.push(blob);
    }
    let state2 = tempfile::tempdir().unwrap();
    let s2 = unpack(state2.path(), driver, &canon, &canon_ids);
    for (i, id) in canon_ids.iter().enumerate() {
        let info = write_layer(s2.as_ref(), &format!("l{i}"), &opts, std::io::sink()).unwrap();
        assert_eq!(
            &info.diff_id, id,
            "layer {i}: apply then diff changed the diff_id"
        );
    }
    let top = format!("l{}", layers.len() - 1);
    let v1 = MountedSnapshot::new(&s1.view("v", Some(&top)).unwrap()).unwrap();
    let v2 = MountedSnapshot::new(&s2.view("v", Some(&top)).unwrap()).unwrap();
    assert_same_tree(v1.path(), v2.path(), true);
    // And the plain-directory applier agrees with the snapshot applier.
    let plain = tempfile::tempdir().unwrap();
    for l in layers {
        apply_layer(&l[..], plain.path()).unwrap();
    }
    assert_same_tree(v1.path(), plain.path(), true);
    state1
}

fn check_busybox_tree(root: &Path) {
    let m = fs::metadata(root.join("bin/busybox")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o755);
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        fs::metadata(root.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    let app = fs::metadata(root.join("home/app")).unwrap();
    assert_eq!((app.uid(), app.gid()), (1000, 1000));
    assert!(
        fs::read_to_string(root.join("etc/passwd"))
            .unwrap()
            .starts_with("root:x:0:0:")
    );
    assert_eq!(m.mtime(), 1_700_000_000);
}

fn registry_image(driver: DriverChoice, repo: &str, tag: &str, busybox: bool) {
    let test = format!("round trip {repo}:{tag}");
    if !need_root(&test) || !kiln_testkit::require_shared_registry(&test) {
        return;
    }
    let Some((layers, diff_ids)) = pull(repo, tag) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: image not in the registry"
        );
        eprintln!("skipped: {test}: image not in the registry (run ../shared/registry-up.sh)");
        return;
    };
    let state = round_trip(driver, &layers, &diff_ids);
    if busybox {
        let s = open(state.path(), driver).unwrap();
        let v = MountedSnapshot::new(&s.view("check", Some("l0")).unwrap()).unwrap();
        check_busybox_tree(v.path());
    }
}

/// A layer made by GNU tar (GNU format, `./` names, long-name records) from a real tree.
fn gnu_tar_layer(driver: DriverChoice) {
    if !need_root("gnu tar round trip") {
        return;
    }
    if !Path::new("/bin/busybox").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "gnu tar round trip: /bin/busybox missing"
        );
        eprintln!(
            "skipped: gnu tar round trip: /bin/busybox missing (apt-get install busybox-static)"
        );
        return;
    }
    let tree = tempfile::tempdir().unwrap();
    let long = "l".repeat(120);
    let script = format!(
        "mkdir -p bin etc tmp home/app {long}/{long} && cp /bin/busybox bin/busybox && \
         for a in $(/bin/busybox --list); do [ $a = busybox ] || ln -sf busybox bin/$a; done && \
         echo root:x:0:0:root:/root:/bin/sh > etc/passwd && chmod 1777 tmp && \
         chown 1000:1000 home/app && ln bin/busybox bin/hardlinked && echo deep > {long}/{long}/{long} && \
         tar --sort=name --numeric-owner --xattrs -cf ../layer.tar ."
    );
    let out = Command::new("sh")
        .arg("-ec")
        .arg(&script)
        .current_dir(tree.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layer = fs::read(tree.path().parent().unwrap().join("layer.tar")).unwrap();
    fs::remove_file(tree.path().parent().unwrap().join("layer.tar")).unwrap();
    let diff_id = {
        use sha2::Digest;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&layer)))
    };
    let state = round_trip(driver, &[layer], &[diff_id]);
    let s = open(state.path(), driver).unwrap();
    let v = MountedSnapshot::new(&s.view("check", Some("l0")).unwrap()).unwrap();
    let a = fs::metadata(v.path().join("bin/busybox")).unwrap();
    let b = fs::metadata(v.path().join("bin/hardlinked")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(
        fs::read(v.path().join(format!("{long}/{long}/{long}"))).unwrap(),
        b"deep\n"
    );
    assert_same_tree(tree.path(), v.path(), true);
}

macro_rules! per_driver {
    ($($driver:ident => $choice:expr),*) => { $(
        mod $driver {
            use super::*;
            #[test] fn busybox_latest() { registry_image($choice, "busybox", "latest", true) }
            // `busybox:index` and `busybox:docker` carry the very same layer (kiln-image tests
            // the manifest flavours); one tag is enough here.
            #[test] fn debian_bookworm() {
                // About 150 MB unpacked: minutes in a debug build, so opt-in.
                if std::env::var_os("KILN_TEST_DEBIAN").is_some() {
                    registry_image($choice, "debian", "bookworm", false);
                } else {
                    eprintln!("skipped: debian:bookworm round trip needs KILN_TEST_DEBIAN=1 (and registry-up.sh --debian)");
                }
            }
            #[test] fn gnu_tar() { gnu_tar_layer($choice) }
        }
    )* };
}

per_driver!(overlay => DriverChoice::Overlay, native => DriverChoice::Native);
