//! Helpers shared by the integration tests: root/CI gating, tree comparison, tar listing.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// True when the test may run as root; prints `skipped: <why>` otherwise, and panics under CI.
pub fn need_root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: needs root and CI is set"
    );
    eprintln!("skipped: {test} needs root");
    false
}

/// One file's observable state, for comparing trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub content: Vec<u8>,
    pub rdev: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub mtime: Option<i64>,
}

pub fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(p, &mut names[..]).unwrap_or(0);
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with("trusted.overlay.") {
            continue;
        }
        let mut v = vec![0u8; 4096];
        let len = rustix::fs::lgetxattr(p, name.as_str(), &mut v[..]).unwrap();
        v.truncate(len);
        out.push((name, v));
    }
    out.sort();
    out
}

/// Observable state of every entry under `root` (mtimes of non-directories included when
/// `with_mtime`).
pub fn tree(root: &Path, with_mtime: bool) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let m = fs::symlink_metadata(e.path()).unwrap();
        let ft = m.file_type();
        if ft.is_socket() {
            // Layers never carry sockets (see the layer writer).
            continue;
        }
        let (kind, content) = if ft.is_dir() {
            ("dir", Vec::new())
        } else if ft.is_file() {
            ("file", fs::read(e.path()).unwrap())
        } else if ft.is_symlink() {
            (
                "symlink",
                fs::read_link(e.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
                    .into_bytes(),
            )
        } else if ft.is_char_device() {
            ("char", Vec::new())
        } else if ft.is_block_device() {
            ("block", Vec::new())
        } else if ft.is_fifo() {
            ("fifo", Vec::new())
        } else {
            ("socket", Vec::new())
        };
        out.insert(
            rel,
            Node {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                content,
                rdev: m.rdev(),
                xattrs: xattrs(e.path()),
                mtime: (with_mtime && !ft.is_dir()).then(|| m.mtime()),
            },
        );
    }
    out
}

/// Asserts two trees are equal, naming the first difference.
pub fn assert_same_tree(a: &Path, b: &Path, with_mtime: bool) {
    let (ta, tb) = (tree(a, with_mtime), tree(b, with_mtime));
    for (k, v) in &ta {
        match tb.get(k) {
            None => panic!("`{k}` exists in {} but not in {}", a.display(), b.display()),
            Some(w) => assert_eq!(
                v,
                w,
                "`{k}` differs between {} and {}",
                a.display(),
                b.display()
            ),
        }
    }
    for k in tb.keys() {
        assert!(
            ta.contains_key(k),
            "`{k}` exists in {} but not in {}",
            b.display(),
            a.display()
        );
    }
}

/// Entry names (PAX applied) and type flags of a (possibly compressed) layer.
pub fn list_layer(blob: &[u8]) -> Vec<(String, char)> {
    let mut raw = Vec::new();
    if blob.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(blob)
            .read_to_end(&mut raw)
            .unwrap();
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(blob)
            .unwrap()
            .read_to_end(&mut raw)
            .unwrap();
    } else {
        raw = blob.to_vec();
    }
    let mut a = tar::Archive::new(&raw[..]);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                e.header().entry_type().as_byte() as char,
            )
        })
        .collect()
}

/// A tar entry written with raw header bytes, so no library sanitises the name.
pub enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

pub fn raw_tar(entries: &[E<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let (name, flag, link, data): (&str, u8, &str, &[u8]) = match e {
            E::File(n, d) => (n, b'0', "", d),
            E::Dir(n) => (n, b'5', "", b""),
            E::Symlink(n, l) => (n, b'2', l, b""),
            E::Hardlink(n, l) => (n, b'1', l, b""),
        };
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.as_old_mut().linkflag = [flag];
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}
