//! Snapshots in a user namespace (a rootless build) give the layers root gives. Run as root,
//! this test copies itself where an ordinary user can run it and starts itself as
//! `kiln-rootless` (a user with an /etc/subuid range); the child enters a user namespace
//! (`kiln_userns::enter_rootless`), runs the same scenario as the parent did as root, and the
//! two reports are compared: the drivers chosen, every layer entry (name, type, owner, mode)
//! and the diff_ids. A second child, a uid without a range, must fail to apply a layer with a
//! file owned by 1000, naming /etc/subuid. A plain `main`: entering needs one thread.

use std::fmt::Write as _;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use kiln_snapshotter::{
    DriverChoice, LayerOptions, MountedSnapshot, Snapshotter, apply_layer_to_snapshot, open,
    write_layer,
};

const USER: &str = "kiln-rootless";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--child") => {
            enter();
            print!("{}", scenario(Path::new(&args[2])));
        }
        Some("--child-single") => {
            enter();
            single_id(Path::new(&args[2]));
        }
        _ => parent(),
    }
}

fn enter() {
    match kiln_userns::enter_rootless().expect("enter a user namespace") {
        kiln_userns::Entry::Entered(_) => {}
        other => panic!("expected a new user namespace, got {other:?}"),
    }
}

/// A tar entry of the base layer.
struct Entry {
    name: &'static str,
    kind: tar::EntryType,
    mode: u32,
    owner: (u64, u64),
    data: &'static [u8],
    dev: (u32, u32),
}

const fn e(name: &'static str, kind: tar::EntryType, mode: u32, owner: (u64, u64)) -> Entry {
    Entry {
        name,
        kind,
        mode,
        owner,
        data: b"",
        dev: (0, 0),
    }
}

/// A base image layer with several owners, a device node (made by root, skipped in a user
/// namespace, as containerd does) and a fifo.
fn base_layer() -> Vec<u8> {
    use tar::EntryType as T;
    let entries = [
        e("etc/", T::Directory, 0o755, (0, 0)),
        Entry {
            data: b"root:x:0:0::/root:/bin/sh\n",
            ..e("etc/passwd", T::Regular, 0o644, (0, 0))
        },
        Entry {
            data: b"root:*::\n",
            ..e("etc/shadow", T::Regular, 0o640, (0, 42))
        },
        e("home/", T::Directory, 0o755, (0, 0)),
        e("home/app/", T::Directory, 0o750, (1000, 1000)),
        Entry {
            data: b"export A=1\n",
            ..e("home/app/.profile", T::Regular, 0o644, (1000, 1000))
        },
        e("var/", T::Directory, 0o755, (0, 0)),
        e("var/lib/", T::Directory, 0o755, (0, 0)),
        e("var/lib/data/", T::Directory, 0o755, (0, 0)),
        Entry {
            data: b"old\n",
            ..e("var/lib/data/old", T::Regular, 0o644, (0, 0))
        },
        e("dev/", T::Directory, 0o755, (0, 0)),
        Entry {
            dev: (1, 3),
            ..e("dev/null", T::Char, 0o666, (0, 0))
        },
        e("run/", T::Directory, 0o755, (0, 0)),
        e("run/fifo", T::Fifo, 0o600, (0, 0)),
    ];
    let mut b = tar::Builder::new(Vec::new());
    for x in &entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(x.kind);
        h.set_mode(x.mode);
        h.set_uid(x.owner.0);
        h.set_gid(x.owner.1);
        h.set_mtime(1_000);
        h.set_size(x.data.len() as u64);
        if x.kind == T::Char {
            h.set_device_major(x.dev.0).unwrap();
            h.set_device_minor(x.dev.1).unwrap();
        }
        b.append_data(&mut h, x.name, x.data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Entry names, types, owners and modes of a layer (gzip, the default, or plain).
fn listing(blob: &[u8]) -> String {
    let mut raw = Vec::new();
    if blob.starts_with(&[0x1f, 0x8b]) {
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(blob), &mut raw).unwrap();
    } else {
        raw = blob.to_vec();
    }
    let mut out = String::new();
    let mut a = tar::Archive::new(&raw[..]);
    for x in a.entries().unwrap() {
        let x = x.unwrap();
        let h = x.header();
        let _ = writeln!(
            out,
            "  {} {} {}:{} {:o}",
            String::from_utf8_lossy(&x.path_bytes()),
            h.entry_type().as_byte() as char,
            h.uid().unwrap(),
            h.gid().unwrap(),
            h.mode().unwrap()
        );
    }
    out
}

fn layer(store: &dyn Snapshotter, key: &str) -> (String, Vec<u8>) {
    let opts = LayerOptions {
        // Clamps every mtime, so runs at different times give the same bytes.
        source_date_epoch: Some(1),
        ..LayerOptions::default()
    };
    let mut blob = Vec::new();
    let info = write_layer(store, key, &opts, &mut blob).unwrap();
    (info.diff_id, blob)
}

/// Base layer, a step (remove a lower file, replace a directory, chown to other ids), its
/// layer applied again on the base: a report of everything that must not depend on root.
fn scenario(dir: &Path) -> String {
    let mut report = String::new();
    for choice in [DriverChoice::Overlay, DriverChoice::Native] {
        let state = dir.join(format!("{choice:?}"));
        let store = open(&state, choice).unwrap();
        let _ = writeln!(report, "driver {}", store.driver().name());
        store.prepare("unpack", None).unwrap();
        let applied = apply_layer_to_snapshot(store.as_ref(), "unpack", &base_layer()[..]).unwrap();
        store.commit("base", "unpack").unwrap();
        let _ = writeln!(report, "base diff_id {}", applied.diff_id);

        let m = MountedSnapshot::new_in(
            &store.prepare("step", Some("base")).unwrap(),
            store.mount_root(),
        )
        .unwrap();
        let root = m.path();
        let dev = std::fs::symlink_metadata(root.join("dev/null"));
        let _ = writeln!(
            report,
            "dev/null is a device: {}",
            dev.is_ok_and(|d| d.file_type().is_char_device())
        );
        assert!(
            std::fs::symlink_metadata(root.join("run/fifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::fs::remove_dir_all(root.join("var/lib/data")).unwrap();
        std::fs::create_dir(root.join("var/lib/data")).unwrap();
        std::fs::write(root.join("var/lib/data/new"), b"new\n").unwrap();
        std::fs::write(root.join("home/app/notes"), b"n\n").unwrap();
        std::os::unix::fs::chown(root.join("home/app/notes"), Some(1000), Some(1000)).unwrap();
        std::fs::create_dir(root.join("srv")).unwrap();
        std::os::unix::fs::chown(root.join("srv"), Some(1000), Some(1001)).unwrap();
        std::fs::set_permissions(root.join("srv"), std::fs::Permissions::from_mode(0o2775))
            .unwrap();
        std::os::unix::fs::chown(root.join("etc/shadow"), Some(0), Some(0)).unwrap();
        m.unmount().unwrap();
        store.commit("step-1", "step").unwrap();
        let (diff_id, blob) = layer(store.as_ref(), "step-1");
        let _ = write!(report, "step diff_id {diff_id}\n{}", listing(&blob));

        // The step's layer applied on the base (overlay: whiteout devices, opaque xattr in the
        // upper dir written by the applier) gives the same layer back.
        store.prepare("again", Some("base")).unwrap();
        apply_layer_to_snapshot(store.as_ref(), "again", &blob[..]).unwrap();
        store.commit("step-2", "again").unwrap();
        let (again, _) = layer(store.as_ref(), "step-2");
        let _ = writeln!(report, "applied again: same layer {}", again == diff_id);
        let v = MountedSnapshot::new(&store.mounts("step-2").unwrap()).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(v.path().join("var/lib/data"))
            .unwrap()
            .map(|x| x.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let _ = writeln!(
            report,
            "seen: var/lib/data = {names:?}, etc/passwd exists {}, home/app/notes owner {}",
            v.path().join("etc/passwd").exists(),
            std::fs::metadata(v.path().join("home/app/notes"))
                .unwrap()
                .uid()
        );
        v.unmount().unwrap();
    }
    report
}

/// A single-id namespace: a layer entry owned by 1000 cannot be applied; the error says how
/// to get a range.
fn single_id(dir: &Path) {
    let store = open(&dir.join("state"), DriverChoice::Native).unwrap();
    store.prepare("unpack", None).unwrap();
    let err = apply_layer_to_snapshot(store.as_ref(), "unpack", &base_layer()[..]).unwrap_err();
    println!("error={err}");
}

/// Runs `argv`, which must succeed; its stdout.
fn run(argv: &[&str]) -> String {
    kiln_testkit::run_ok(argv)
}

fn parent() {
    let test = "rootless_snapshots";
    if !kiln_testkit::require_root(test)
        || !kiln_testkit::require_tool(test, "newuidmap", "uidmap")
        || !kiln_testkit::require_tool(test, "setpriv", "util-linux")
    {
        return;
    }
    let has_user = std::fs::read_to_string("/etc/subuid")
        .is_ok_and(|t| !kiln_userns::parse_subids(&t, Some(USER), u32::MAX).is_empty());
    if !has_user {
        kiln_testkit::skip(
            test,
            &format!("needs the user {USER} with an /etc/subuid range (useradd -m {USER})"),
        );
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("kiln-snap-rootless-")
        .tempdir()
        .unwrap();
    let bin = dir.path().join("rootless-test");
    std::fs::copy(std::env::current_exe().unwrap(), &bin).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (as_root, as_user, lone) = (
        dir.path().join("root"),
        dir.path().join("user"),
        dir.path().join("lone"),
    );
    for d in [&as_root, &as_user, &lone] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::set_permissions(&as_user, std::fs::Permissions::from_mode(0o777)).unwrap();
    rustix::fs::chown(&lone, Some(rustix::process::Uid::from_raw(54321)), None).unwrap();
    let b = bin.to_str().unwrap();

    let want = scenario(&as_root);
    assert!(
        want.contains("driver overlayfs") && want.contains("dev/null is a device: true"),
        "{want}"
    );
    let got = run(&[
        "runuser",
        "-u",
        USER,
        "--",
        b,
        "--child",
        as_user.to_str().unwrap(),
    ]);
    // The one expected difference: no device node can be made in a user namespace.
    let got_cmp = got.replace("dev/null is a device: false", "dev/null is a device: true");
    assert!(got.contains("dev/null is a device: false"), "{got}");
    assert_eq!(got_cmp, want, "rootless:\n{got}\nroot:\n{want}");
    assert!(want.contains("applied again: same layer true"), "{want}");
    assert!(
        want.contains(
            r#"var/lib/data = ["new"], etc/passwd exists false, home/app/notes owner 1000"#
        ),
        "{want}"
    );
    assert!(
        want.contains(".wh..wh..opq") && want.contains("etc/.wh.passwd"),
        "{want}"
    );
    assert!(
        want.contains("home/app/notes 0 1000:1000") && want.contains("srv/ 5 1000:1001 2775"),
        "{want}"
    );

    // The rootless overlay store marks opaque directories with user.overlay.opaque.
    let upper_opaque = walkdir::WalkDir::new(as_user.join("Overlay/snapshots"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|x| x.path().ends_with("fs/var/lib/data"))
        .any(|x| xattr(x.path(), "user.overlay.opaque").as_deref() == Some(b"y"));
    assert!(
        upper_opaque,
        "no user.overlay.opaque on an upper var/lib/data"
    );

    let out = run(&[
        "setpriv",
        "--reuid=54321",
        "--regid=54321",
        "--clear-groups",
        b,
        "--child-single",
        lone.to_str().unwrap(),
    ]);
    assert!(
        out.contains("error=chown `") && out.contains("/etc/shadow` to 0:42: id not mapped"),
        "{out}"
    );
    assert!(
        out.contains("/etc/subuid")
            && out.contains("usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER"),
        "{out}"
    );
    println!("rootless_snapshots: ok");
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut v = vec![0u8; 64];
    let n = rustix::fs::lgetxattr(p, name, &mut v[..]).ok()?;
    v.truncate(n);
    Some(v)
}
