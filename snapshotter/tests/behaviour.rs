//! The snapshotter behaviour suite, run against both drivers (as containerd's testsuite does):
//! every scenario builds a chain of snapshots by mounting and changing files, writes each
//! snapshot's layer, then checks that (1) applying the layers to an empty directory reproduces
//! the final snapshot exactly, (2) unpacking them into a second store with
//! `apply_layer_to_snapshot` does too, and (3) scenario-specific facts about the layers hold.

#![allow(clippy::semicolon_if_nothing_returned)]

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{assert_same_tree, list_layer, need_root};
use kiln_snapshotter::{
    Compression, CompressionOptions, Driver, DriverChoice, Error, Kind, LayerOptions,
    MountedSnapshot, Snapshotter, apply_layer, apply_layer_to_snapshot, open, write_layer,
    write_layer_tar,
};

type Step = Box<dyn Fn(&Path)>;

struct Built {
    _state: tempfile::TempDir,
    store: Box<dyn Snapshotter>,
    layers: Vec<Vec<u8>>,
    diff_ids: Vec<String>,
    top: String,
}

fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn build(driver: DriverChoice, steps: &[Step]) -> Built {
    // A long state path, so that deep overlay chains exceed the one-page mount option limit and
    // exercise the relative-lowerdir mount.
    let state = tempfile::tempdir().unwrap();
    let store = open(
        &state.path().join(format!("state-{}", "x".repeat(120))),
        driver,
    )
    .unwrap();
    let want = if driver == DriverChoice::Native {
        Driver::Native
    } else {
        Driver::Overlay
    };
    assert_eq!(store.driver(), want);
    let opts = LayerOptions {
        compression: CompressionOptions {
            compression: Compression::Gzip,
            level: Some(1),
        },
        source_date_epoch: None,
    };
    let mut parent: Option<String> = None;
    let (mut layers, mut diff_ids) = (Vec::new(), Vec::new());
    for (i, step) in steps.iter().enumerate() {
        let key = format!("active-{i}");
        let mounts = store.prepare(&key, parent.as_deref()).unwrap();
        let m = MountedSnapshot::new(&mounts).unwrap();
        step(m.path());
        m.unmount().unwrap();
        let mut blob = Vec::new();
        let info = write_layer(store.as_ref(), &key, &opts, &mut blob).unwrap();
        let name = format!("layer-{i}");
        store.commit(&name, &key).unwrap();
        // Same snapshot, same bytes: before and after commit.
        let mut again = Vec::new();
        let info2 = write_layer(store.as_ref(), &name, &opts, &mut again).unwrap();
        assert_eq!(info, info2, "layer {i} not reproducible");
        assert_eq!(info.size, blob.len() as u64);
        // The unhashed tar (what a deferred layer blob is written from) is this layer's
        // uncompressed tar: it hashes to the diff_id.
        let mut tar = Vec::new();
        let n = write_layer_tar(store.as_ref(), &name, None, &mut tar).unwrap();
        assert_eq!(n, tar.len() as u64);
        assert_eq!(
            kiln_image::Digest::of_bytes(&tar).to_string(),
            info.diff_id,
            "layer {i}: the unhashed tar is another stream"
        );
        diff_ids.push(info.diff_id);
        layers.push(blob);
        parent = Some(name);
    }
    Built {
        _state: state,
        store,
        layers,
        diff_ids,
        top: parent.unwrap(),
    }
}

/// Runs a scenario and the generic checks; returns the built chain for extra assertions.
fn scenario(driver: DriverChoice, steps: Vec<Step>) -> Option<Built> {
    if !need_root("snapshotter behaviour suite") {
        return None;
    }
    let b = build(driver, &steps);
    let view = b.store.view("final-view", Some(&b.top)).unwrap();
    let seen = MountedSnapshot::new(&view).unwrap();

    // (1) layers applied to a plain directory.
    let plain = tempfile::tempdir().unwrap();
    for (i, l) in b.layers.iter().enumerate() {
        let applied = apply_layer(&l[..], plain.path()).unwrap();
        assert_eq!(applied.diff_id, b.diff_ids[i]);
    }
    assert_same_tree(seen.path(), plain.path(), true);

    // (2) layers unpacked into a second store of the same driver.
    let state2 = tempfile::tempdir().unwrap();
    let store2 = open(state2.path(), driver).unwrap();
    let mut parent: Option<String> = None;
    for (i, l) in b.layers.iter().enumerate() {
        let key = format!("unpack-{i}");
        store2.prepare(&key, parent.as_deref()).unwrap();
        let applied = apply_layer_to_snapshot(store2.as_ref(), &key, &l[..]).unwrap();
        assert_eq!(applied.diff_id, b.diff_ids[i]);
        let name = format!("img-{i}");
        store2.commit(&name, &key).unwrap();
        if store2.driver() == Driver::Overlay {
            // The upper dir holds exactly the layer: diffing it gives the same diff_id.
            let info = write_layer(
                store2.as_ref(),
                &name,
                &LayerOptions::default(),
                std::io::sink(),
            )
            .unwrap();
            assert_eq!(
                info.diff_id, b.diff_ids[i],
                "overlay round trip of layer {i}"
            );
        }
        parent = Some(name);
    }
    let v2 = store2.view("v2", parent.as_deref()).unwrap();
    let seen2 = MountedSnapshot::new(&v2).unwrap();
    assert_same_tree(seen.path(), seen2.path(), true);
    drop(seen2);
    drop(seen);
    b.store.remove("final-view").unwrap();
    Some(b)
}

fn create_modify_delete(driver: DriverChoice) {
    let Some(b) = scenario(
        driver,
        vec![
            Box::new(|d: &Path| {
                sh(
                    d,
                    "echo a > a; echo b > b; mkdir -p dir/sub; echo c > dir/c; echo x > dir/sub/x",
                )
            }),
            Box::new(|d: &Path| sh(d, "echo changed > a; rm b; echo d > dir/d; rm -r dir/sub")),
        ],
    ) else {
        return;
    };
    let names: Vec<String> = list_layer(&b.layers[1])
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"a".to_string()), "{names:?}");
    assert!(names.contains(&".wh.b".to_string()), "{names:?}");
    assert!(names.contains(&"dir/.wh.sub".to_string()), "{names:?}");
    assert!(names.contains(&"dir/d".to_string()), "{names:?}");
    assert!(
        !names.contains(&"dir/c".to_string()),
        "unchanged file in diff: {names:?}"
    );
    let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert!(pos("dir/") < pos("dir/d"), "parent after child: {names:?}");
}

fn file_dir_replacement(driver: DriverChoice) {
    scenario(
        driver,
        vec![
            Box::new(|d: &Path| sh(d, "echo file > x; mkdir y; echo in > y/inner")),
            Box::new(|d: &Path| {
                sh(
                    d,
                    "rm x; mkdir x; echo now-dir > x/f; rm -r y; echo now-file > y",
                )
            }),
            Box::new(|d: &Path| sh(d, "rm -r x; echo file-again > x; rm y; mkdir -p y/z")),
        ],
    );
}

fn rename_dirs(driver: DriverChoice) {
    scenario(
        driver,
        vec![
            Box::new(|d: &Path| sh(d, "mkdir -p d1/sub; echo f > d1/sub/f; echo g > d1/g")),
            Box::new(|d: &Path| sh(d, "mv d1 d2; mv d2/sub d2/renamed")),
        ],
    );
}

fn perms_and_owners(driver: DriverChoice) {
    let Some(b) = scenario(
        driver,
        vec![
            Box::new(|d: &Path| {
                sh(
                    d,
                    "echo s > suid; chmod 4755 suid; mkdir sg; chmod 2775 sg; mkdir tmp; chmod 1777 tmp; echo o > owned; chown 1234:5678 owned; ln -s owned link; chown -h 42:43 link; echo big > bigid; chown 3000000:3000001 bigid",
                )
            }),
            Box::new(|d: &Path| sh(d, "chmod 0600 owned; chown 7:8 sg; chmod 6711 suid")),
        ],
    ) else {
        return;
    };
    let plain = tempfile::tempdir().unwrap();
    for l in &b.layers {
        apply_layer(&l[..], plain.path()).unwrap();
    }
    let m = fs::metadata(plain.path().join("suid")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o6711);
    let m = fs::metadata(plain.path().join("tmp")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o1777);
    let m = fs::metadata(plain.path().join("bigid")).unwrap();
    assert_eq!((m.uid(), m.gid()), (3000000, 3000001));
    let m = fs::symlink_metadata(plain.path().join("link")).unwrap();
    assert_eq!((m.uid(), m.gid()), (42, 43));
}

fn special_files(driver: DriverChoice) {
    let long = "n".repeat(150);
    let Some(b) = scenario(
        driver,
        vec![
            Box::new(move |d: &Path| {
                sh(
                    d,
                    &format!(
                        "mkfifo fifo; mknod null c 1 3; mknod loop b 7 0; echo hl > h1; ln h1 h2; ln -s h1 sym; \
                 ln -s /does/not/exist dangling; mkdir -p deep/{long}/{long}; echo deep > deep/{long}/{long}/{long}; \
                 echo x > xa; mkdir xd; \
                 ln -s {long}/{long}/{long} deep/longlink"
                    ),
                );
                let set = |p: &Path, k: &str, v: &[u8]| {
                    rustix::fs::lsetxattr(p, k, v, rustix::fs::XattrFlags::empty()).unwrap();
                };
                set(&d.join("xa"), "user.kiln", b"hello");
                set(&d.join("xa"), "trusted.kiln", &[0, 1, 2, 255]);
                set(&d.join("xd"), "user.dir", b"on a dir");
                // A daemon's leftover socket: skipped by the layer writer, not an error.
                std::os::unix::net::UnixListener::bind(d.join("daemon.sock")).unwrap();
            }),
            Box::new(|d: &Path| sh(d, "echo more >> h2")),
        ],
    ) else {
        return;
    };
    let entries = list_layer(&b.layers[0]);
    assert!(
        !entries.iter().any(|(n, _)| n == "daemon.sock"),
        "socket in layer"
    );
    let h2 = entries.iter().find(|(n, _)| n == "h2").unwrap();
    assert_eq!(h2.1, '1', "second name of a hard link must be a link entry");
    let plain = tempfile::tempdir().unwrap();
    apply_layer(&b.layers[0][..], plain.path()).unwrap();
    let (a, c) = (
        fs::metadata(plain.path().join("h1")).unwrap(),
        fs::metadata(plain.path().join("h2")).unwrap(),
    );
    assert_eq!(a.ino(), c.ino(), "hard link lost");
    assert_eq!(
        common::xattrs(&plain.path().join("xa")),
        vec![
            ("trusted.kiln".to_string(), vec![0, 1, 2, 255]),
            ("user.kiln".to_string(), b"hello".to_vec()),
        ]
    );
    assert_eq!(
        common::xattrs(&plain.path().join("xd")),
        vec![("user.dir".to_string(), b"on a dir".to_vec())]
    );
    let long = "n".repeat(150);
    assert_eq!(
        fs::read(plain.path().join(format!("deep/{long}/{long}/{long}"))).unwrap(),
        b"deep\n"
    );
    let null = fs::metadata(plain.path().join("null")).unwrap();
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    // Overlayfs (index=off) breaks a hard link when one name is copied up, as Docker's does;
    // native keeps the inode shared.
    apply_layer(&b.layers[1][..], plain.path()).unwrap();
    let h1 = fs::read(plain.path().join("h1")).unwrap();
    let want: &[u8] = if b.store.driver() == Driver::Native {
        b"hl\nmore\n"
    } else {
        b"hl\n"
    };
    assert_eq!(h1, want);
}

fn opaque_dirs(driver: DriverChoice) {
    let Some(b) = scenario(
        driver,
        vec![
            Box::new(|d: &Path| sh(d, "mkdir -p d/keep; echo a > d/a; echo b > d/b")),
            Box::new(|d: &Path| sh(d, "rm -rf d; mkdir d; echo c > d/c")),
            Box::new(|d: &Path| sh(d, "echo e > d/e")),
        ],
    ) else {
        return;
    };
    let names: Vec<String> = list_layer(&b.layers[1])
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    if b.store.driver() == Driver::Overlay {
        assert!(names.contains(&"d/.wh..wh..opq".to_string()), "{names:?}");
    } else {
        assert!(names.contains(&"d/.wh.a".to_string()), "{names:?}");
    }
}

/// Runs `script` in `d`, then puts back the mtimes (with nanoseconds) that `dirs` had before.
fn keeping_mtime(d: &Path, dirs: &[&str], script: &str) {
    let saved: Vec<_> = dirs
        .iter()
        .map(|p| fs::symlink_metadata(d.join(p)).unwrap())
        .collect();
    sh(d, script);
    for (p, m) in dirs.iter().zip(saved).rev() {
        let t = rustix::fs::Timespec {
            tv_sec: m.mtime(),
            tv_nsec: m.mtime_nsec(),
        };
        let ts = rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            d.join(p),
            &ts,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }
}

/// Entry names of a layer, without the trailing `/` of directories.
fn layer_names(blob: &[u8]) -> Vec<String> {
    list_layer(blob)
        .into_iter()
        .map(|(n, _)| n.trim_end_matches('/').to_string())
        .collect()
}

/// A directory copied up (a mount stub created and removed, its mtime put back) but otherwise
/// unchanged is not a layer entry, as with BuildKit's overlay differ; a changed mode or a new
/// child makes it one again, and parents of new entries are still written.
fn unchanged_dirs(driver: DriverChoice) {
    let Some(b) = scenario(
        driver,
        vec![
            Box::new(|d: &Path| sh(d, "mkdir -p etc a/b; echo x > etc/x")),
            Box::new(|d: &Path| {
                keeping_mtime(d, &["etc"], "touch etc/hosts; rm etc/hosts");
                keeping_mtime(d, &["a", "a/b"], "echo n > a/b/new");
            }),
            Box::new(|d: &Path| sh(d, "chmod 0750 etc")),
            Box::new(|d: &Path| sh(d, "echo y > etc/y")),
        ],
    ) else {
        return;
    };
    let l1 = layer_names(&b.layers[1]);
    assert!(!l1.iter().any(|n| n == "etc"), "{l1:?}");
    assert!(l1.contains(&"a/b/new".to_string()), "{l1:?}");
    if b.store.driver() == Driver::Overlay {
        assert_eq!(l1, ["a", "a/b", "a/b/new"]);
    }
    let l2 = layer_names(&b.layers[2]);
    assert!(l2.contains(&"etc".to_string()), "{l2:?}");
    let l3 = layer_names(&b.layers[3]);
    assert!(
        l3.contains(&"etc".to_string()) && l3.contains(&"etc/y".to_string()),
        "{l3:?}"
    );
}

fn deep_chain(driver: DriverChoice) {
    let steps: Vec<Step> = (0..100)
        .map(|i| -> Step {
            Box::new(move |d: &Path| {
                fs::write(d.join(format!("file-{i:03}")), format!("{i}\n")).unwrap();
                fs::write(d.join("counter"), format!("{i}\n")).unwrap();
                if i > 0 {
                    fs::remove_file(d.join(format!("file-{:03}", i - 1))).unwrap();
                }
            })
        })
        .collect();
    let Some(b) = scenario(driver, steps) else {
        return;
    };
    let view = b.store.view("deep", Some(&b.top)).unwrap();
    if b.store.driver() == Driver::Overlay {
        let len: usize = view[0].options.iter().map(|o| o.len() + 1).sum();
        assert!(
            len > 4096,
            "options only {len} bytes: the long-option path is not exercised"
        );
    }
    let m = MountedSnapshot::new(&view).unwrap();
    assert_eq!(
        fs::read_to_string(m.path().join("counter")).unwrap(),
        "99\n"
    );
    assert!(m.path().join("file-099").exists());
    assert!(!m.path().join("file-098").exists());
    // A writable snapshot on top of the deep chain mounts too.
    drop(m);
    let active = b.store.prepare("on-top", Some(&b.top)).unwrap();
    let m = MountedSnapshot::new(&active).unwrap();
    fs::write(m.path().join("top"), b"t").unwrap();
    assert_eq!(
        fs::read_to_string(m.path().join("counter")).unwrap(),
        "99\n"
    );
}

fn lifecycle(driver: DriverChoice) {
    if !need_root("snapshotter lifecycle") {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let s = open(state.path(), driver).unwrap();
    let mounts = s.prepare("a", None).unwrap();
    assert!(matches!(s.prepare("a", None), Err(Error::AlreadyExists(k)) if k == "a"));
    assert!(matches!(
        s.prepare("b", Some("a")),
        Err(Error::WrongKind { .. })
    ));
    assert!(matches!(
        s.prepare("b", Some("nope")),
        Err(Error::NotFound(_))
    ));
    let m = MountedSnapshot::new(&mounts).unwrap();
    fs::write(m.path().join("f"), vec![7u8; 100_000]).unwrap();
    drop(m);
    assert_eq!(s.stat("a").unwrap().kind, Kind::Active);
    s.commit("base", "a").unwrap();
    assert!(matches!(s.stat("a"), Err(Error::NotFound(_))));
    let info = s.stat("base").unwrap();
    assert_eq!((info.kind, info.parent), (Kind::Committed, None));
    assert!(s.usage("base").unwrap().size >= 100_000);
    s.prepare("child", Some("base")).unwrap();
    assert_eq!(s.stat("child").unwrap().parent.as_deref(), Some("base"));
    let v = s.view("look", Some("base")).unwrap();
    assert!(v.iter().all(|m| m.is_read_only()));
    let mv = MountedSnapshot::new(&v).unwrap();
    assert_eq!(fs::read(mv.path().join("f")).unwrap().len(), 100_000);
    assert!(
        fs::write(mv.path().join("g"), b"x").is_err(),
        "view must be read-only"
    );
    drop(mv);
    assert!(matches!(
        s.commit("x", "look"),
        Err(Error::WrongKind { .. })
    ));
    assert!(matches!(
        s.remove("base"),
        Err(Error::HasChildren { children: 2, .. })
    ));
    assert_eq!(s.walk().unwrap().len(), 3);
    s.remove("look").unwrap();
    s.remove("child").unwrap();
    // Survives reopening (another process would see the same).
    drop(s);
    let s = open(state.path(), DriverChoice::Auto).unwrap();
    let want = if driver == DriverChoice::Native {
        Driver::Native
    } else {
        Driver::Overlay
    };
    assert_eq!(s.driver(), want, "auto must reuse the recorded driver");
    assert_eq!(s.walk().unwrap().len(), 1);
    s.remove("base").unwrap();
    assert!(s.walk().unwrap().is_empty());
    let root = state.path().join("snapshots");
    let mut left: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !["metadata.json", "lock", "next-id"].contains(&n.as_str()))
        .filter(|n| !["active", "committed", "children", "tmp"].contains(&n.as_str()))
        .collect();
    for d in ["active", "committed", "children", "tmp"] {
        left.extend(
            fs::read_dir(root.join(d))
                .unwrap()
                .map(|e| format!("{d}/{}", e.unwrap().file_name().to_string_lossy())),
        );
    }
    assert!(left.is_empty(), "left behind: {left:?}");
    let m = fs::metadata(state.path().join("snapshots")).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o700);
}

macro_rules! suite {
    ($($driver:ident => $choice:expr),*) => { $(
        mod $driver {
            use super::*;
            #[test] fn lifecycle() { super::lifecycle($choice) }
            #[test] fn create_modify_delete() { super::create_modify_delete($choice) }
            #[test] fn file_dir_replacement() { super::file_dir_replacement($choice) }
            #[test] fn rename_dirs() { super::rename_dirs($choice) }
            #[test] fn perms_and_owners() { super::perms_and_owners($choice) }
            #[test] fn special_files() { super::special_files($choice) }
            #[test] fn opaque_dirs() { super::opaque_dirs($choice) }
            #[test] fn deep_chain() { super::deep_chain($choice) }
            #[test] fn unchanged_dirs() { super::unchanged_dirs($choice) }
        }
    )* };
}

suite!(overlay => DriverChoice::Overlay, native => DriverChoice::Native);
