//! Crash-only ingest: a process killed with SIGKILL in the middle of a layer write leaves
//! nothing in the content store that the next open does not remove; every file left under
//! `content/` is then a complete blob whose bytes hash to its name.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_image::{Compression, CompressionOptions, ContentStore, Digest};

const CHILD_ENV: &str = "KILN_INGEST_CRASH_CHILD";

/// Not a test of its own: the body the parent runs in a child process (and kills).
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = ContentStore::open(&dir).unwrap();
    // One finished blob, then a gzip layer and a raw blob that never finish.
    store.put_bytes(b"a complete blob").unwrap();
    let mut layer = store
        .layer_writer(CompressionOptions {
            compression: Compression::Gzip,
            level: Some(1),
        })
        .unwrap();
    let mut blob = store.blob_writer().unwrap();
    let mut chunk = vec![0u8; 1 << 20];
    let mut x = 0x2545_f491_u32;
    for i in 0.. {
        for b in &mut chunk {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = (x % 11) as u8;
        }
        layer.write_all(&chunk).unwrap();
        blob.write_all(&chunk).unwrap();
        blob.flush().unwrap();
        if i == 8 {
            std::fs::write(Path::new(&dir).join("ready"), b"").unwrap();
        }
        if i > 8 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn kill_9_during_a_layer_write_leaves_only_verified_blobs_after_open() {
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, state.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let ready = state.path().join("ready");
    let start = Instant::now();
    while !ready.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "child never got going"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("child exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    std::fs::remove_file(&ready).unwrap();

    let ingest = state.path().join("content/ingest");
    let left = std::fs::read_dir(&ingest).unwrap().count();
    assert_eq!(
        left, 2,
        "the killed writers' ingest files are there before open"
    );

    let store = ContentStore::open(state.path()).unwrap();
    let mut files = Vec::new();
    files_under(&state.path().join("content"), &mut files);
    assert!(!files.is_empty());
    for f in &files {
        let rel = f.strip_prefix(state.path()).unwrap();
        assert!(
            rel.starts_with("content/blobs/sha256"),
            "not a blob after open: {}",
            rel.display()
        );
        let name = f.file_name().unwrap().to_str().unwrap();
        let digest = Digest::parse(&format!("sha256:{name}")).unwrap();
        store.read_blob(&digest).unwrap(); // verifies the bytes against the name
    }
    assert_eq!(
        store.list_blobs().unwrap(),
        vec![Digest::of_bytes(b"a complete blob")]
    );
}
