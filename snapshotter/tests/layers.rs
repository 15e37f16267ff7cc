//! The layer format: reproducibility (same tree → same bytes, whatever the inode numbers or the
//! compressor), SOURCE_DATE_EPOCH clamping, PAX records, entry order, readability by the
//! system's GNU tar and gzip, and the store's behaviour under concurrent use.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::need_root;
use kiln_snapshotter::{
    Compression, CompressionOptions, DriverChoice, Error, LayerOptions, apply_layer, open,
    write_tree_layer,
};
use rustix::fs::{AtFlags, CWD, Timespec, Timestamps};

fn set_mtime(p: &Path, secs: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 123_456_789,
    };
    let ts = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(CWD, p, &ts, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

fn sample_tree(dir: &Path) {
    fs::create_dir_all(dir.join("b/sub")).unwrap();
    fs::create_dir_all(dir.join("a")).unwrap();
    fs::write(dir.join("b/sub/file"), b"hello\n").unwrap();
    fs::write(dir.join("a/zeta"), vec![b'z'; 100_000]).unwrap();
    fs::write(dir.join("a/alpha"), b"alpha").unwrap();
    fs::hard_link(dir.join("a/alpha"), dir.join("b/alpha-link")).unwrap();
    std::os::unix::fs::symlink("../a/zeta", dir.join("b/zlink")).unwrap();
    for p in [
        "b/sub/file",
        "a/zeta",
        "a/alpha",
        "b/zlink",
        "b/sub",
        "a",
        "b",
    ] {
        set_mtime(&dir.join(p), 1_600_000_000);
    }
    set_mtime(&dir.join("a/zeta"), 2_000_000_000);
}

fn opts(compression: CompressionOptions) -> LayerOptions {
    LayerOptions {
        compression,
        source_date_epoch: None,
    }
}

const fn with(compression: Compression, level: i32) -> CompressionOptions {
    CompressionOptions {
        compression,
        level: Some(level),
    }
}

const NONE: CompressionOptions = with(Compression::Uncompressed, 0);

const ALL: [CompressionOptions; 3] = [NONE, with(Compression::Gzip, 6), with(Compression::Zstd, 3)];

#[test]
fn same_tree_same_bytes() {
    let t1 = tempfile::tempdir().unwrap();
    sample_tree(t1.path());
    // A copy has new inodes and atimes but the same observable contents.
    let t2 = tempfile::tempdir().unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", t1.path().display()))
        .arg(t2.path())
        .status()
        .unwrap();
    assert!(st.success());
    let mut diff_ids = Vec::new();
    for c in ALL {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let i1 = write_tree_layer(t1.path(), &opts(c), &mut x).unwrap();
        let i2 = write_tree_layer(t2.path(), &opts(c), &mut y).unwrap();
        assert_eq!(i1, i2, "{c:?}");
        assert_eq!(x, y, "{c:?}");
        assert_eq!(i1.media_type, c.compression.layer_media_type(false));
        diff_ids.push(i1.diff_id);
    }
    assert!(
        diff_ids.windows(2).all(|w| w[0] == w[1]),
        "compression changed the tar: {diff_ids:?}"
    );
}

#[test]
fn entries_sorted_parents_first_hardlinks_as_links() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path());
    let mut blob = Vec::new();
    write_tree_layer(t.path(), &opts(NONE), &mut blob).unwrap();
    let entries = common::list_layer(&blob);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "a/",
            "a/alpha",
            "a/zeta",
            "b/",
            "b/alpha-link",
            "b/sub/",
            "b/sub/file",
            "b/zlink"
        ]
    );
    assert_eq!(
        entries[4].1, '1',
        "second name of an inode must be a hard link entry"
    );
    // No padding beyond the two zero blocks that end the archive.
    assert!(blob[blob.len() - 1024..].iter().all(|b| *b == 0));
    assert!(
        blob[blob.len() - 1536..blob.len() - 1024]
            .iter()
            .any(|b| *b != 0)
    );
}

#[test]
fn source_date_epoch_clamps_mtimes() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path());
    let mut blob = Vec::new();
    let o = LayerOptions {
        compression: NONE,
        source_date_epoch: Some(1_700_000_000),
    };
    write_tree_layer(t.path(), &o, &mut blob).unwrap();
    let mut a = tar::Archive::new(&blob[..]);
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let want = if name == "a/zeta" {
            1_700_000_000
        } else {
            1_600_000_000
        };
        assert_eq!(e.header().mtime().unwrap(), want, "{name}");
    }
    // Without the option the newer mtime stays.
    let mut plain = Vec::new();
    write_tree_layer(t.path(), &opts(NONE), &mut plain).unwrap();
    assert_ne!(plain, blob);
}

#[test]
fn pax_records_for_long_names_links_ids_and_xattrs() {
    if !need_root("pax records") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let long = format!("{}/{}", "d".repeat(200), "f".repeat(200));
    fs::create_dir(t.path().join("d".repeat(200))).unwrap();
    fs::write(t.path().join(&long), b"x").unwrap();
    std::os::unix::fs::chown(t.path().join(&long), Some(5_000_000), Some(6_000_000)).unwrap();
    std::os::unix::fs::symlink(&long, t.path().join("ln")).unwrap();
    rustix::fs::lsetxattr(
        t.path().join(&long),
        "user.k",
        b"v\0binary",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let mut blob = Vec::new();
    write_tree_layer(t.path(), &opts(NONE), &mut blob).unwrap();
    let mut a = tar::Archive::new(&blob[..]);
    let mut seen = 0;
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let pax: Vec<(String, Vec<u8>)> = e
            .pax_extensions()
            .unwrap()
            .map(|p| {
                p.map(|x| {
                    let x = x.unwrap();
                    (x.key().unwrap().to_string(), x.value_bytes().to_vec())
                })
                .collect()
            })
            .unwrap_or_default();
        if name == long {
            seen += 1;
            assert!(
                pax.contains(&("uid".into(), b"5000000".to_vec())),
                "{pax:?}"
            );
            assert!(
                pax.contains(&("gid".into(), b"6000000".to_vec())),
                "{pax:?}"
            );
            assert!(
                pax.contains(&("SCHILY.xattr.user.k".into(), b"v\0binary".to_vec())),
                "{pax:?}"
            );
            assert!(pax.iter().any(|(k, _)| k == "path"));
        }
        if name == "ln" {
            seen += 1;
            assert_eq!(e.link_name_bytes().unwrap().as_ref(), long.as_bytes());
        }
    }
    assert_eq!(seen, 2);
    // And back.
    let back = tempfile::tempdir().unwrap();
    apply_layer(&blob[..], back.path()).unwrap();
    common::assert_same_tree(t.path(), back.path(), true);
}

/// The system's GNU tar and gzip read what kiln writes (parallel gzip included).
#[test]
fn system_tools_read_our_layers() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path());
    // Enough data for several parallel-gzip blocks.
    fs::write(
        t.path().join("big"),
        (0..5_000_000u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    for c in [with(Compression::Gzip, 6), with(Compression::Gzip, 1)] {
        let mut blob = Vec::new();
        let info = write_tree_layer(t.path(), &opts(c), &mut blob).unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("gzip -dc | sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&blob).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let sum = String::from_utf8_lossy(&out.stdout);
        assert_eq!(format!("sha256:{}", &sum[..64]), info.diff_id, "{c:?}");
    }
    let mut blob = Vec::new();
    write_tree_layer(t.path(), &opts(NONE), &mut blob).unwrap();
    let path = t.path().join("../layer-for-gnu-tar.tar");
    fs::write(&path, &blob).unwrap();
    let out = Command::new("tar").arg("-tf").arg(&path).output().unwrap();
    fs::remove_file(&path).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.lines().any(|l| l == "b/sub/file"), "{listed}");
}

#[test]
fn concurrent_stores_share_one_state_dir() {
    if !need_root("concurrent stores") {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    open(state.path(), DriverChoice::Native).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let dir = state.path().to_path_buf();
            s.spawn(move || {
                // Each thread opens its own store, as a separate process would.
                let store = open(&dir, DriverChoice::Auto).unwrap();
                for i in 0..10 {
                    let key = format!("t{t}-{i}");
                    store.prepare(&key, None).unwrap();
                    store.commit(&format!("{key}-c"), &key).unwrap();
                    // Everyone races for one key: exactly one wins (checked below).
                    match store.prepare("contended", None) {
                        Ok(_) | Err(Error::AlreadyExists(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            });
        }
    });
    let store = open(state.path(), DriverChoice::Auto).unwrap();
    let all = store.walk().unwrap();
    assert_eq!(all.len(), 41, "{all:?}");
    let dirs = fs::read_dir(state.path().join("snapshots"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().parse::<u64>().is_ok())
        })
        .count();
    assert_eq!(dirs, 41, "one dir per snapshot");
    let records = ["committed", "active"]
        .iter()
        .map(|d| {
            fs::read_dir(state.path().join("snapshots").join(d))
                .unwrap()
                .count()
        })
        .collect::<Vec<_>>();
    assert_eq!(records, [40, 1], "one record per snapshot");
}

#[test]
fn stale_temporary_and_orphan_dirs_are_removed_on_open() {
    let state = tempfile::tempdir().unwrap();
    open(state.path(), DriverChoice::Native).unwrap();
    // pid_max is at most 2^22, so this pid cannot be alive.
    let stale = state.path().join("snapshots/tmp/4194305-7-new1");
    fs::create_dir_all(stale.join("fs/deep")).unwrap();
    let mine = state.path().join(format!(
        "snapshots/tmp/{}-new99",
        kiln_snapshotter::Owner::current().tag()
    ));
    fs::create_dir_all(&mine).unwrap();
    open(state.path(), DriverChoice::Auto).unwrap();
    assert!(!stale.exists(), "stale temp dir survived");
    assert!(mine.exists(), "a live process's temp dir was removed");
}

#[test]
fn corrupt_metadata_is_reported_with_its_path() {
    let state = tempfile::tempdir().unwrap();
    open(state.path(), DriverChoice::Native).unwrap();
    fs::write(state.path().join("snapshots/metadata.json"), b"{ not json").unwrap();
    match open(state.path(), DriverChoice::Auto) {
        Err(e @ Error::CorruptMetadata { .. }) => {
            assert!(e.to_string().contains("metadata.json"), "{e}");
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("corrupt metadata accepted"),
    }
}

/// A layer that adds `d/f` without an entry for `d/` itself: unpacked into an overlay upper dir,
/// `d` is copied up from the lower layer with its owner, mode and xattrs, so the merged view
/// keeps them.
#[test]
fn implicit_parent_copied_up_with_its_metadata() {
    if !need_root("implicit parent copy-up") {
        return;
    }
    let tree = tempfile::tempdir().unwrap();
    let d = tree.path().join("d");
    fs::create_dir(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(1234), Some(4321)).unwrap();
    fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o2750)).unwrap();
    rustix::fs::lsetxattr(&d, "user.keep", b"me", rustix::fs::XattrFlags::empty()).unwrap();
    let mut base = Vec::new();
    write_tree_layer(tree.path(), &opts(NONE), &mut base).unwrap();
    let top = common::raw_tar(&[common::E::File("d/f", b"new")]);
    for driver in [DriverChoice::Overlay, DriverChoice::Native] {
        let state = tempfile::tempdir().unwrap();
        let s = open(state.path(), driver).unwrap();
        s.prepare("a", None).unwrap();
        kiln_snapshotter::apply_layer_to_snapshot(s.as_ref(), "a", &base[..]).unwrap();
        s.commit("base", "a").unwrap();
        s.prepare("b", Some("base")).unwrap();
        kiln_snapshotter::apply_layer_to_snapshot(s.as_ref(), "b", &top[..]).unwrap();
        s.commit("top", "b").unwrap();
        let v = kiln_snapshotter::MountedSnapshot::new(&s.mounts("top").unwrap()).unwrap();
        let m = fs::metadata(v.path().join("d")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (1234, 4321, 0o2750),
            "{driver:?}"
        );
        assert_eq!(
            common::xattrs(&v.path().join("d")),
            vec![("user.keep".to_string(), b"me".to_vec())],
            "{driver:?}"
        );
        assert_eq!(fs::read(v.path().join("d/f")).unwrap(), b"new");
    }
}
