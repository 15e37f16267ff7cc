//! Reading what `kiln build --output` wrote: OCI layouts (directories or tars), docker
//! archives and plain tars, so tests can assert on the image config and the files.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// Entries of a tar archive: path (without a leading `./`) → contents.
pub fn tar_entries(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let path = entry
            .path()
            .expect("path")
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read entry");
        out.insert(path, data);
    }
    out
}

/// Decompresses a layer (gzip or zstd or none) and lists it.
pub fn layer_entries(blob: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let data = if blob.starts_with(&[0x1f, 0x8b]) {
        let mut d = Vec::new();
        flate2::read::GzDecoder::new(blob)
            .read_to_end(&mut d)
            .expect("gunzip");
        d
    } else {
        blob.to_vec()
    };
    tar_entries(&data)
}

/// An OCI layout (directory or tar) as a map of its files.
pub fn layout_files(path: &Path) -> BTreeMap<String, Vec<u8>> {
    if path.is_dir() {
        let mut out = BTreeMap::new();
        for e in walk(path) {
            let rel = e
                .strip_prefix(path)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            out.insert(rel, std::fs::read(&e).expect("read"));
        }
        out
    } else {
        tar_entries(&std::fs::read(path).expect("read archive"))
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The image in an OCI layout: (config JSON, every file of every layer, merged).
pub fn oci_image(path: &Path) -> (serde_json::Value, BTreeMap<String, Vec<u8>>) {
    let files = layout_files(path);
    let blob = |digest: &str| -> &Vec<u8> {
        let name = format!("blobs/{}", digest.replacen(':', "/", 1));
        files
            .get(&name)
            .unwrap_or_else(|| panic!("{name} missing from {:?}", files.keys()))
    };
    assert!(
        files.contains_key("oci-layout"),
        "no oci-layout in {:?}",
        files.keys()
    );
    let index: serde_json::Value =
        serde_json::from_slice(&files["index.json"]).expect("index.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(blob(
        index["manifests"][0]["digest"].as_str().expect("digest"),
    ))
    .expect("manifest");
    if manifest.get("manifests").is_some() {
        // A nested index: take its first manifest.
        manifest = serde_json::from_slice(blob(
            manifest["manifests"][0]["digest"].as_str().expect("digest"),
        ))
        .expect("manifest");
    }
    let config: serde_json::Value = serde_json::from_slice(blob(
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    ))
    .expect("config");
    let mut merged = BTreeMap::new();
    for layer in manifest["layers"].as_array().expect("layers") {
        merged.extend(layer_entries(blob(
            layer["digest"].as_str().expect("layer digest"),
        )));
    }
    (config, merged)
}
