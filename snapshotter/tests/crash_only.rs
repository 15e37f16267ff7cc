//! Crash-only state (issue 12): what a killed process leaves in the store (active and view
//! snapshots, temp directories and files, mount points) is removed by the next `open`, and
//! removing a snapshot works on a full disk. Run against both drivers where it matters.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use kiln_snapshotter::{DriverChoice, Kind, MountedSnapshot, Owner, open};

fn drivers() -> Vec<DriverChoice> {
    vec![DriverChoice::Overlay, DriverChoice::Native]
}

/// Rewrites the owner of snapshot `key` in the metadata, as if a dead process had made it.
fn set_owner(state: &Path, key: &str, owner: Option<&str>) {
    let p = state.join("snapshots/metadata.json");
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    let rec = &mut v["snapshots"][key];
    match owner {
        Some(o) => rec["owner"] = o.into(),
        None => {
            rec.as_object_mut().unwrap().remove("owner");
        }
    }
    fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
}

fn snapshot_dirs(state: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(state.join("snapshots"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn open_removes_active_and_view_snapshots_of_dead_processes() {
    if !common::need_root("open_removes_active_and_view_snapshots_of_dead_processes") {
        return;
    }
    for d in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), d).unwrap();
        s.prepare("a", None).unwrap();
        s.commit("base", "a").unwrap();
        s.prepare("mine", Some("base")).unwrap();
        s.prepare("dead", Some("base")).unwrap();
        s.view("dead-view", Some("base")).unwrap();
        s.prepare("legacy", Some("base")).unwrap();
        let big = match s.layout("dead").unwrap() {
            kiln_snapshotter::Layout::Overlay { upper, .. } => upper,
            kiln_snapshotter::Layout::Native { dir, .. } => dir,
        };
        fs::write(big.join("blob"), vec![7u8; 1 << 20]).unwrap();
        set_owner(dir.path(), "dead", Some("999999999-1"));
        set_owner(dir.path(), "dead-view", Some("999999999-1"));
        set_owner(dir.path(), "legacy", None);
        assert_eq!(snapshot_dirs(dir.path()).len(), 5);

        let s = open(dir.path(), d).unwrap();
        let names: Vec<(String, Kind)> = s
            .walk()
            .unwrap()
            .into_iter()
            .map(|i| (i.name, i.kind))
            .collect();
        assert_eq!(
            names,
            vec![
                ("base".to_string(), Kind::Committed),
                ("mine".to_string(), Kind::Active)
            ],
            "{d:?}"
        );
        assert_eq!(snapshot_dirs(dir.path()).len(), 2, "{d:?}");
        assert!(!big.exists());
    }
}

#[test]
fn open_removes_temp_entries_of_dead_processes_and_records_without_directories() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), DriverChoice::Native).unwrap();
    s.prepare("a", None).unwrap();
    s.commit("base", "a").unwrap();
    s.prepare("b", Some("base")).unwrap();
    s.commit("child", "b").unwrap();
    s.prepare("c", None).unwrap();
    s.commit("lost", "c").unwrap();
    let root = dir.path().join("snapshots");
    let me = Owner::current().tag();
    fs::create_dir_all(root.join("tmp-999999999-1-3/fs/deep")).unwrap();
    fs::write(root.join("tmp-999999999-1-w4"), b"{").unwrap();
    fs::write(root.join(".tmpAbC123"), b"{").unwrap();
    fs::create_dir(root.join(format!("tmp-{me}-9"))).unwrap();
    // A crash between deleting a snapshot's files and writing the metadata.
    let lost = match s.layout("lost").unwrap() {
        kiln_snapshotter::Layout::Native { dir, .. } => dir,
        kiln_snapshotter::Layout::Overlay { upper, .. } => upper,
    };
    fs::remove_dir_all(lost.parent().unwrap()).unwrap();

    let s = open(dir.path(), DriverChoice::Native).unwrap();
    let mut left: Vec<String> = fs::read_dir(&root)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tmp") || n.starts_with(".tmp"))
        .collect();
    left.sort();
    assert_eq!(left, vec![format!("tmp-{me}-9")]);
    let names: Vec<String> = s.walk().unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, vec!["base", "child"]);
}

#[test]
fn open_unmounts_mount_points_of_dead_processes_without_deleting_through_them() {
    if !common::need_root("open_unmounts_mount_points_of_dead_processes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), DriverChoice::Auto).unwrap();
    let mount_root = s.mount_root().to_path_buf();
    assert_eq!(
        mount_root,
        fs::canonicalize(dir.path()).unwrap().join("mounts")
    );
    s.prepare("a", None).unwrap();
    let m = MountedSnapshot::new_in(&s.mounts("a").unwrap(), &mount_root).unwrap();
    fs::write(m.path().join("kept"), b"data").unwrap();
    assert!(m.path().starts_with(&mount_root));
    // A dead process's mount of the same snapshot, and a cache dir that is not a mount point.
    let orphan = mount_root.join("999999999-1-xyz");
    fs::create_dir(&orphan).unwrap();
    kiln_snapshotter::mount_all(&s.mounts("a").unwrap(), &orphan).unwrap();
    fs::create_dir_all(mount_root.join("cache/id")).unwrap();
    let mounted = |p: &Path| {
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(p.to_str().unwrap()))
    };
    assert!(mounted(&orphan));

    let _s2 = open(dir.path(), DriverChoice::Auto).unwrap();
    assert!(!mounted(&orphan));
    assert!(!orphan.exists());
    assert!(mounted(m.path()), "a live process's mount stays");
    assert!(mount_root.join("cache/id").is_dir());
    assert_eq!(fs::read(m.path().join("kept")).unwrap(), b"data");
    m.unmount().unwrap();
}

/// A tmpfs of `size` on a fresh directory, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

fn free(p: &Path) -> u64 {
    let st = rustix::fs::statvfs(p).unwrap();
    st.f_bavail * st.f_frsize
}

#[test]
fn remove_frees_space_on_a_full_disk() {
    if !common::need_root("remove_frees_space_on_a_full_disk") {
        return;
    }
    for d in drivers() {
        let fs_dir = Tmpfs(tempfile::tempdir().unwrap());
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(fs_dir.0.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs");
        let state = fs_dir.0.path();
        let s = open(state, d).unwrap();
        s.prepare("base-a", None).unwrap();
        s.commit("base", "base-a").unwrap();
        let before = free(state);
        s.prepare("fill", Some("base")).unwrap();
        let m = MountedSnapshot::new_in(&s.mounts("fill").unwrap(), s.mount_root()).unwrap();
        let mut f = fs::File::create(m.path().join("fill")).unwrap();
        let chunk = vec![1u8; 1 << 16];
        while f.write_all(&chunk).is_ok() {}
        drop(f);
        m.unmount().unwrap();
        assert!(free(state) < 64 * 1024, "{d:?}: the disk is full");
        s.remove("fill")
            .unwrap_or_else(|e| panic!("{d:?}: remove on a full disk: {e}"));
        assert!(free(state) + 64 * 1024 >= before, "{d:?}");
        assert!(s.stat("fill").is_err());
        // And a store opened on a full disk cleans up without writing first.
        s.prepare("fill2", Some("base")).unwrap();
        let m = MountedSnapshot::new_in(&s.mounts("fill2").unwrap(), s.mount_root()).unwrap();
        let mut f = fs::File::create(m.path().join("fill")).unwrap();
        while f.write_all(&chunk).is_ok() {}
        drop(f);
        m.unmount().unwrap();
        set_owner(state, "fill2", Some("999999999-1"));
        let s = open(state, d).unwrap();
        assert!(s.stat("fill2").is_err(), "{d:?}");
        assert!(free(state) + 64 * 1024 >= before, "{d:?}");
    }
}
