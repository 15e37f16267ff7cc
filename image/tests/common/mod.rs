//! Test fixtures: a real `docker-registry` on a free loopback port, test images built from
//! small tars. Missing tools are reported (or fail the run under CI) by kiln-testkit.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::path::{Path, PathBuf};

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

/// The loopback `docker-registry` of kiln-testkit, and where it keeps a blob's data.
pub struct Registry(kiln_testkit::Registry);

impl Registry {
    /// [`kiln_testkit::Registry::start`].
    pub fn start(htpasswd: Option<(&str, &str)>) -> Option<Self> {
        kiln_testkit::Registry::start(htpasswd).map(Self)
    }

    /// [`kiln_testkit::Registry::start_with`].
    pub fn start_with(htpasswd: Option<(&str, &str)>, extra_auth: &str) -> Option<Self> {
        kiln_testkit::Registry::start_with(htpasswd, extra_auth).map(Self)
    }

    /// Where the registry keeps a blob's data.
    pub fn blob_data_path(&self, digest: &kiln_image::Digest) -> PathBuf {
        let hex = digest.hex();
        self.0.dir.path().join(format!(
            "storage/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl std::ops::Deref for Registry {
    type Target = kiln_testkit::Registry;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Registry {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
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
