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

/// Rewrites the owner in the record of active snapshot `key`, as if a dead process had made it.
fn set_owner(state: &Path, key: &str, owner: Option<&str>) {
    let p = state.join("snapshots/active").join(key);
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    match owner {
        Some(o) => v["owner"] = o.into(),
        None => {
            v.as_object_mut().unwrap().remove("owner");
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
        .filter(|n| n.parse::<u64>().is_ok())
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
    let tmp = root.join("tmp");
    let me = Owner::current().tag();
    fs::create_dir_all(tmp.join("999999999-1-3/fs/deep")).unwrap();
    fs::write(tmp.join("999999999-1-rec4"), b"{").unwrap();
    fs::create_dir(tmp.join(format!("{me}-9"))).unwrap();
    // A crash between moving a snapshot's directory away and deleting its record.
    let lost = match s.layout("lost").unwrap() {
        kiln_snapshotter::Layout::Native { dir, .. } => dir,
        kiln_snapshotter::Layout::Overlay { upper, .. } => upper,
    };
    fs::remove_dir_all(lost.parent().unwrap()).unwrap();
    assert!(
        s.stat("lost").is_err(),
        "a record without directory is absent"
    );

    let s = open(dir.path(), DriverChoice::Native).unwrap();
    let left: Vec<String> = fs::read_dir(&tmp)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![format!("{me}-9")]);
    let names: Vec<String> = s.walk().unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, vec!["base", "child"]);
    assert!(
        !root.join("committed/lost").exists(),
        "walk drops the record"
    );
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

/// A store in the format before per-snapshot records: one `metadata.json` holding every
/// record (`n` committed snapshots in a chain of 10, plus a dead process's active one).
fn old_format_store(state: &Path, n: u64) {
    let root = state.join("snapshots");
    let mut snaps = serde_json::Map::new();
    for id in 1..=n {
        fs::create_dir_all(root.join(format!("{id}/fs"))).unwrap();
        fs::write(root.join(format!("{id}/fs/f{id}")), id.to_string()).unwrap();
        let parent = (id % 10 != 1).then(|| format!("s{}", id - 1));
        snaps.insert(
            format!("s{id}"),
            serde_json::json!({"id": id, "kind": "committed", "parent": parent, "created": 7}),
        );
    }
    fs::create_dir_all(root.join(format!("{}/fs", n + 1))).unwrap();
    snaps.insert(
        "active-dead".into(),
        serde_json::json!({"id": n + 1, "kind": "active", "parent": "s1", "created": 7,
            "owner": "999999999-1"}),
    );
    // A directory no record names, and an old-style temp directory of a dead process.
    fs::create_dir_all(root.join(format!("{}/fs", n + 7))).unwrap();
    fs::create_dir_all(root.join("tmp-999999999-1-5/fs")).unwrap();
    let meta = serde_json::json!({"driver": "native", "next_id": n + 8, "snapshots": snaps});
    fs::write(
        root.join("metadata.json"),
        serde_json::to_vec(&meta).unwrap(),
    )
    .unwrap();
}

/// Checks a migrated store of [`old_format_store`]`(n)`.
fn assert_migrated(state: &Path, n: u64) {
    let s = open(state, DriverChoice::Auto).unwrap();
    let meta = fs::read_to_string(state.join("snapshots/metadata.json")).unwrap();
    assert!(
        meta.contains("\"format\": 2") && !meta.contains("snapshots"),
        "{meta}"
    );
    let all = s.walk().unwrap();
    assert_eq!(
        all.len() as u64,
        n,
        "every committed snapshot, no active one"
    );
    let i = s.stat("s12").unwrap();
    assert_eq!(
        (i.kind, i.parent.as_deref(), i.created),
        (Kind::Committed, Some("s11"), 7)
    );
    match s.layout("s12").unwrap() {
        kiln_snapshotter::Layout::Native { dir, parent } => {
            assert_eq!(fs::read_to_string(dir.join("f12")).unwrap(), "12");
            assert!(parent.unwrap().join("f11").is_file());
        }
        l @ kiln_snapshotter::Layout::Overlay { .. } => panic!("{l:?}"),
    }
    // Parents keep their children; new ids never reuse an old one.
    assert!(matches!(
        s.remove("s11"),
        Err(kiln_snapshotter::Error::HasChildren { children: 1, .. })
    ));
    s.prepare("new", Some("s12")).unwrap();
    let kiln_snapshotter::Layout::Native { dir, .. } = s.layout("new").unwrap() else {
        panic!("native")
    };
    let id: u64 = dir
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(id >= n + 8, "id {id} reused");
    s.remove("new").unwrap();
    assert!(
        !state.join(format!("snapshots/{}", n + 1)).exists(),
        "dead active removed"
    );
    assert!(
        !state.join(format!("snapshots/{}", n + 7)).exists(),
        "orphan dir removed"
    );
    assert!(!state.join("snapshots/tmp-999999999-1-5").exists());
}

#[test]
fn an_old_single_file_store_is_migrated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    old_format_store(dir.path(), 30);
    assert_migrated(dir.path(), 30);
}

/// Runs as a child process of the kill tests (the test binary re-executed with
/// `KILN_CRASH_CHILD` set): works the store in `KILN_CRASH_CHILD` until killed.
#[test]
fn crash_child() {
    let Some(state) = std::env::var_os("KILN_CRASH_CHILD") else {
        return;
    };
    let state = Path::new(&state);
    let s = open(state, DriverChoice::Native).unwrap();
    if std::env::var_os("KILN_CRASH_MIGRATE").is_some() {
        return;
    }
    if let Some(ready) = std::env::var_os("KILN_CRASH_READY") {
        fs::write(ready, b"").unwrap();
    }
    let pid = std::process::id();
    let mut n: u64 = 0;
    // Chains of at most two (a few roots, many leaves), so every round stays fast.
    let (mut roots, mut leaves): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for i in s.walk().unwrap() {
        if i.parent.is_some() {
            leaves.push(i.name);
        } else {
            roots.push(i.name);
        }
    }
    let bounded = std::env::var_os("KILN_CRASH_AT").is_some();
    loop {
        n += 1;
        // Dying at a crash point is the point: a child that never gets there ends.
        if bounded && n > 200 {
            return;
        }
        let parent = if n.is_multiple_of(2) && roots.len() < 4 || roots.is_empty() {
            None
        } else {
            Some(roots[usize::try_from(n).unwrap() % roots.len()].clone())
        };
        let key = format!("a{pid}-{n}");
        s.prepare(&key, parent.as_deref()).unwrap();
        if let kiln_snapshotter::Layout::Native { dir, .. } = s.layout(&key).unwrap() {
            fs::write(dir.join(format!("f{pid}-{n}")), vec![b'x'; 3000]).unwrap();
        }
        if n.is_multiple_of(5) {
            s.remove(&key).unwrap();
        } else {
            s.commit(&format!("c{pid}-{n}"), &key).unwrap();
            if parent.is_some() {
                leaves.push(format!("c{pid}-{n}"));
            } else {
                roots.push(format!("c{pid}-{n}"));
            }
        }
        let v = format!("v{pid}-{n}");
        s.view(&v, parent.as_deref()).unwrap();
        s.remove(&v).unwrap();
        if leaves.len() > 12 {
            s.remove(&leaves.remove(0)).unwrap();
        }
    }
}

/// Re-runs this test binary as [`crash_child`] on `state`; killed with SIGKILL `ms` after it
/// is working (or after it started, for a migration).
fn run_and_kill(state: &Path, ms: u64, migrate: bool) {
    run_child(state, Some(ms), migrate, None);
}

/// [`run_and_kill`], or (`kill` = `None`) let the child run until it aborts at `crash_at`.
fn run_child(state: &Path, kill: Option<u64>, migrate: bool, crash_at: Option<&str>) {
    let ready = state.join("crash-ready");
    let _ = fs::remove_file(&ready);
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("KILN_CRASH_CHILD", state)
        .env("KILN_CRASH_READY", &ready)
        .stdout(std::process::Stdio::null());
    if migrate {
        cmd.env("KILN_CRASH_MIGRATE", "1");
    }
    if let Some(at) = crash_at {
        cmd.env("KILN_CRASH_AT", at);
    }
    let mut child = cmd.spawn().unwrap();
    let Some(ms) = kill else {
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(6),
            "aborted at {crash_at:?}, not exited: {status:?}"
        );
        return;
    };
    let t0 = std::time::Instant::now();
    while !migrate && !ready.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the child died");
        assert!(t0.elapsed().as_secs() < 120, "the child never got ready");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    std::thread::sleep(std::time::Duration::from_millis(ms));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed, not exited: {status:?}"
    );
}

/// What a repaired store looks like: no active snapshot or temp entry, every listed snapshot
/// usable, and everything removable children first, leaving nothing behind.
fn assert_repaired(state: &Path, round: u64) {
    let s = open(state, DriverChoice::Native).unwrap();
    let root = state.join("snapshots");
    let tmp: Vec<_> = fs::read_dir(root.join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "round {round}: {tmp:?}");
    let all = s.walk().unwrap();
    for i in &all {
        assert_eq!(i.kind, Kind::Committed, "round {round}: {i:?}");
        s.mounts(&i.name).unwrap();
        if let Some(p) = &i.parent {
            assert!(all.iter().any(|o| &o.name == p), "round {round}: {i:?}");
        }
    }
    // A new snapshot on the newest one works.
    if let Some(top) = all.last() {
        s.prepare("after", Some(&top.name)).unwrap();
        s.remove("after").unwrap();
    }
    assert_eq!(s.walk().unwrap().len(), all.len(), "round {round}");
}

/// Removes everything, leaves first; nothing may be left on disk.
fn assert_removable(state: &Path) {
    let s = open(state, DriverChoice::Native).unwrap();
    loop {
        let all = s.walk().unwrap();
        if all.is_empty() {
            break;
        }
        let leaves: Vec<_> = all
            .iter()
            .filter(|i| {
                !all.iter()
                    .any(|o| o.parent.as_deref() == Some(i.name.as_str()))
            })
            .collect();
        for l in leaves {
            s.remove(&l.name)
                .unwrap_or_else(|e| panic!("remove leaf {}: {e}", l.name));
        }
    }
    let root = state.join("snapshots");
    let mut left: Vec<String> = snapshot_dirs(state);
    for d in ["active", "committed", "children", "tmp"] {
        left.extend(
            fs::read_dir(root.join(d))
                .unwrap()
                .map(|e| format!("{d}/{}", e.unwrap().file_name().to_string_lossy())),
        );
    }
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_process_killed_at_any_point_leaves_a_store_the_next_open_repairs() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path(), DriverChoice::Native).unwrap();
    // Kill points spread over the child's loop (each round is a few hundred operations).
    for round in 0..12u64 {
        run_and_kill(dir.path(), 3 + round * 7 % 40, false);
        assert_repaired(dir.path(), round);
    }
    assert_removable(dir.path());
}

/// Every step of every change, the process dying right after it (`KILN_CRASH_AT`, an abort as
/// abrupt as SIGKILL): the next open (and walk) repairs the store.
#[test]
fn a_process_dying_after_any_step_of_a_change_leaves_a_store_the_next_open_repairs() {
    for at in [
        "create-record",
        "create-marker",
        "create-dir",
        "commit",
        "remove-dir",
        "remove-marker",
        "remove-record",
    ] {
        let dir = tempfile::tempdir().unwrap();
        // The first change of the child has a parent (and so a child marker).
        let s = open(dir.path(), DriverChoice::Native).unwrap();
        s.prepare("b", None).unwrap();
        s.commit("base", "b").unwrap();
        run_child(dir.path(), None, false, Some(at));
        assert_repaired(dir.path(), 0);
        assert_removable(dir.path());
    }
    for at in ["migrate-half", "migrate-records"] {
        let dir = tempfile::tempdir().unwrap();
        old_format_store(dir.path(), 40);
        run_child(dir.path(), None, true, Some(at));
        assert!(
            fs::read_to_string(dir.path().join("snapshots/metadata.json"))
                .unwrap()
                .contains("next_id"),
            "{at}: the old file stays until the migration is complete"
        );
        assert_migrated(dir.path(), 40);
        assert_removable(dir.path());
    }
}

#[test]
fn a_migration_killed_in_the_middle_is_finished_by_the_next_open() {
    for ms in [5, 40, 120] {
        let dir = tempfile::tempdir().unwrap();
        old_format_store(dir.path(), 2000);
        let t = std::time::Instant::now();
        run_and_kill(dir.path(), ms, true);
        eprintln!("killed {:?}", t.elapsed());
        assert_migrated(dir.path(), 2000);
        eprintln!("migrated {:?}", t.elapsed());
        assert_removable(dir.path());
        eprintln!("removed {:?}", t.elapsed());
    }
}
