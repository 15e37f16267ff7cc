//! Test fixtures: a real `docker-registry` on a free loopback port, test images built from
//! small tars. Missing tools are reported (or fail the run under CI) by kiln-testkit.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use kiln_image::{
    Compression, CompressionOptions, ContentStore, Descriptor, History, Image, ImageConfig,
    Platform, write_image,
};

/// The running test's name (libtest names each test's thread after it), for skip messages.
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("kiln-image test")
        .to_owned()
}

/// A running registry, killed on drop.
pub struct Registry {
    child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
}

impl Registry {
    /// Starts `docker-registry` on 127.0.0.1:<free port>; with `htpasswd`, basic auth for
    /// that user. `None` if the tool is missing (outside CI).
    pub fn start(htpasswd: Option<(&str, &str)>) -> Option<Self> {
        Self::start_with(htpasswd, "")
    }

    /// Like [`start`](Self::start) with an extra `auth:` YAML section (token auth).
    pub fn start_with(htpasswd: Option<(&str, &str)>, extra_auth: &str) -> Option<Self> {
        if !kiln_testkit::require_tool(&test_name(), "docker-registry", "docker-registry") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut auth = extra_auth.to_owned();
        if let Some((user, pass)) = htpasswd {
            if !kiln_testkit::require_tool(&test_name(), "htpasswd", "apache2-utils") {
                return None;
            }
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .unwrap();
            assert!(out.status.success());
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, out.stdout).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                file.display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
            dir.path().join("storage").display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let child = spawn(dir.path());
        let reg = Self { child, addr, dir };
        reg.wait_ready();
        Some(reg)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(&self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the registry (its storage stays).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and storage, without waiting.
    pub fn restart(&mut self) {
        self.child = spawn(self.dir.path());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Where the registry keeps a blob's data.
    pub fn blob_data_path(&self, digest: &kiln_image::Digest) -> PathBuf {
        let hex = digest.hex();
        self.dir.path().join(format!(
            "storage/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

fn spawn(dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("registry.log"))
        .unwrap();
    Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A layer tar with the given files (path, contents, mode).
pub fn layer_tar(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, mode) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Stores a two-layer test image (layer compressions as given) and returns it.
pub fn test_image(store: &ContentStore, tag: &str, compressions: [Compression; 2]) -> Image {
    let mut config = ImageConfig::new(&Platform::linux_amd64());
    config.created = Some("2023-11-14T22:13:20Z".into());
    config.config.env = Some(vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    ]);
    config.config.cmd = Some(vec!["/bin/hello".into()]);
    config.config.labels = Some([("tag".to_owned(), tag.to_owned())].into());
    let mut layers: Vec<Descriptor> = Vec::new();
    let contents = [
        layer_tar(&[
            ("bin/hello", b"#!/bin/sh\necho hello\n", 0o755),
            ("etc/motd", b"base\n", 0o644),
        ]),
        layer_tar(&[("etc/motd", format!("tag {tag}\n").as_bytes(), 0o600)]),
    ];
    for (tar, c) in contents.iter().zip(compressions) {
        let mut w = store
            .layer_writer(CompressionOptions {
                compression: c,
                level: None,
            })
            .unwrap();
        w.write_all(tar).unwrap();
        let layer = w.finish().unwrap();
        config.rootfs.diff_ids.push(layer.diff_id);
        config.history.push(History {
            created: config.created.clone(),
            created_by: Some("COPY . / # buildkit".into()),
            comment: Some("buildkit.dockerfile.v0".into()),
            ..Default::default()
        });
        layers.push(layer.descriptor);
    }
    write_image(store, &config, &layers).unwrap()
}

/// A fresh store in a temp dir.
pub fn store() -> (tempfile::TempDir, ContentStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    (dir, store)
}

/// Reads every file of a tar into (path, bytes).
pub fn tar_entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        out.push((name, data));
    }
    out
}
