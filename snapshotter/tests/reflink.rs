//! The native driver shares extents (FICLONE) on filesystems that can: a snapshot prepared from
//! a parent on XFS holds reflinked copies, checked with `filefrag` (FIEMAP's shared flag). On
//! ext4 the ordinary copy fallback is exercised by the behaviour suite.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::need_root;
use kiln_snapshotter::{DriverChoice, Layout, MountedSnapshot, open};

struct LoopMount {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

fn xfs_or_skip() -> Option<LoopMount> {
    if !need_root("reflink test") {
        return None;
    }
    let have = |tool: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("mkfs.xfs") || !have("filefrag") {
        assert!(
            std::env::var_os("CI").is_none(),
            "reflink test needs mkfs.xfs (xfsprogs) and filefrag (e2fsprogs)"
        );
        eprintln!("skipped: reflink test needs mkfs.xfs (apt-get install xfsprogs) and filefrag");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("xfs.img");
    fs::File::create(&img).unwrap().set_len(400 << 20).unwrap();
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("mkfs.xfs").arg("-q").arg(&img));
    let dir = tmp.path().join("mnt");
    fs::create_dir(&dir).unwrap();
    run(Command::new("mount")
        .arg("-o")
        .arg("loop")
        .arg(&img)
        .arg(&dir));
    Some(LoopMount { dir, _tmp: tmp })
}

fn shared(p: &Path) -> bool {
    let out = Command::new("filefrag").arg("-v").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains("shared")
}

#[test]
fn native_prepare_reflinks_on_xfs() {
    let Some(m) = xfs_or_skip() else { return };
    let s = open(&m.dir.join("state"), DriverChoice::Native).unwrap();
    let mounts = s.prepare("base", None).unwrap();
    let data: Vec<u8> = (0..4_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    {
        let mnt = MountedSnapshot::new(&mounts).unwrap();
        fs::write(mnt.path().join("blob"), &data).unwrap();
    }
    s.commit("base-c", "base").unwrap();
    s.prepare("child", Some("base-c")).unwrap();
    let Layout::Native { dir, parent } = s.layout("child").unwrap() else {
        panic!("native layout expected")
    };
    let copy = dir.join("blob");
    assert_eq!(fs::read(&copy).unwrap(), data);
    assert!(shared(&copy), "child copy does not share extents");
    assert!(shared(&parent.unwrap().join("blob")));
    // Writing to the child leaves the parent intact.
    let mounts = s.mounts("child").unwrap();
    let mnt = MountedSnapshot::new(&mounts).unwrap();
    fs::write(mnt.path().join("blob"), b"changed").unwrap();
    drop(mnt);
    let v = MountedSnapshot::new(&s.mounts("base-c").unwrap()).unwrap();
    assert_eq!(fs::read(v.path().join("blob")).unwrap(), data);
}
