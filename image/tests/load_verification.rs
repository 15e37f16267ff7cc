//! Issue 12, "nothing lost, nothing leaked": `kiln load` checks an archive before it tags
//! anything. Each archive is built here by hand (OCI layout in a tar, or Docker's pre-25
//! layout) so that its blobs agree with their descriptors and only the checked property is
//! wrong: a layer that is not its diff_id, a gzip layer cut short, a config without `rootfs`.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use common::{layer_tar, store};
use kiln_image::{
    Compression, CompressionOptions, ContentStore, Digest, Image, Platform, Reference, load_archive,
};

const NAME: &str = "kiln/loaded:1";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn config_with(diff_ids: &[Digest]) -> Vec<u8> {
    let ids: Vec<String> = diff_ids.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        ids.join(",")
    )
    .into_bytes()
}

fn append(b: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    b.append_data(&mut h, name, data).unwrap();
}

/// An OCI layout tar holding one image: `config` and gzip `layers` (blob bytes as given),
/// every descriptor true to its blob, named [`NAME`].
fn oci_archive(dir: &Path, file: &str, config: &[u8], layers: &[Vec<u8>]) -> PathBuf {
    oci_archive_of(dir, file, &[(NAME, config, layers)])
}

/// An OCI layout tar holding several images (name, config, layer blobs).
fn oci_archive_of(dir: &Path, file: &str, images: &[(&str, &[u8], &[Vec<u8>])]) -> PathBuf {
    let desc = |mt: &str, data: &[u8]| {
        format!(
            r#"{{"mediaType":"{mt}","digest":"{}","size":{}}}"#,
            Digest::of_bytes(data),
            data.len()
        )
    };
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    let mut entries = Vec::new();
    for (name, config, layers) in images {
        let layer_descs: Vec<String> = layers
            .iter()
            .map(|l| desc("application/vnd.oci.image.layer.v1.tar+gzip", l))
            .collect();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[{}]}}"#,
            desc("application/vnd.oci.image.config.v1+json", config),
            layer_descs.join(",")
        );
        entries.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"annotations":{{"io.containerd.image.name":"docker.io/{name}"}}}}"#,
            Digest::of_bytes(manifest.as_bytes()),
            manifest.len()
        ));
        blobs.push(config.to_vec());
        blobs.push(manifest.into_bytes());
        blobs.extend(layers.iter().cloned());
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        entries.join(",")
    );
    let path = dir.join(file);
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    append(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    append(&mut b, "index.json", index.as_bytes());
    blobs.sort();
    blobs.dedup();
    for blob in &blobs {
        let name = format!("blobs/sha256/{}", Digest::of_bytes(blob).hex());
        append(&mut b, &name, blob);
    }
    b.finish().unwrap();
    path
}

/// Docker's layout before 25: `<id>/layer.tar` and a config named in manifest.json.
fn legacy_archive(dir: &Path, file: &str, config: &[u8], layer: &[u8]) -> PathBuf {
    let config_name = format!("{}.json", Digest::of_bytes(config).hex());
    let manifest = format!(
        r#"[{{"Config":"{config_name}","RepoTags":["{NAME}"],"Layers":["l0/layer.tar"]}}]"#
    );
    let path = dir.join(file);
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    append(&mut b, &config_name, config);
    append(&mut b, "l0/layer.tar", layer);
    append(&mut b, "manifest.json", manifest.as_bytes());
    b.finish().unwrap();
    path
}

/// The load failed with all of `parts` in its message, and left nothing behind: no tag, no
/// blob, no temp file.
fn assert_refused(store: &ContentStore, archive: &Path, parts: &[&str]) {
    let err = load_archive(store, archive, &Platform::linux_amd64())
        .expect_err("a corrupt archive was loaded")
        .to_string();
    println!("{}: {err}", archive.display());
    for part in parts {
        assert!(err.contains(part), "`{part}` missing from: {err}");
    }
    assert!(store.list_tags().unwrap().is_empty(), "a tag was set");
    assert_eq!(
        store.list_blobs().unwrap(),
        Vec::<Digest>::new(),
        "blobs of a refused archive were stored"
    );
    let ingest = store.state_dir().join("content/ingest");
    assert_eq!(std::fs::read_dir(&ingest).unwrap().count(), 0);
}

fn layers() -> (Vec<u8>, Vec<u8>) {
    let base = layer_tar(&[("bin/hello", b"#!/bin/sh\necho hi\n", 0o755)]);
    let top = layer_tar(&[("etc/motd", b"loaded\n", 0o644)]);
    (base, top)
}

#[test]
fn issue12_load_refuses_a_layer_that_is_not_its_diff_id() {
    let out = tempfile::tempdir().unwrap();
    let (base, top) = layers();
    let other = layer_tar(&[("etc/motd", b"something else\n", 0o644)]);
    // The config promises `top`; the archive carries `other` (true to its own descriptor).
    let config = config_with(&[Digest::of_bytes(&base), Digest::of_bytes(&top)]);
    let archive = oci_archive(
        out.path(),
        "diff.tar",
        &config,
        &[gzip(&base), gzip(&other)],
    );
    let (_d, s) = store();
    assert_refused(
        &s,
        &archive,
        &[
            "layer 1",
            &Digest::of_bytes(&gzip(&other)).to_string(),
            "diff_id",
            &Digest::of_bytes(&top).to_string(),
            &Digest::of_bytes(&other).to_string(),
        ],
    );
}

#[test]
fn issue12_load_refuses_a_truncated_gzip_layer() {
    let out = tempfile::tempdir().unwrap();
    let (base, top) = layers();
    let config = config_with(&[Digest::of_bytes(&base), Digest::of_bytes(&top)]);
    let full = gzip(&top);
    let cut = full[..full.len() - 12].to_vec();
    let archive = oci_archive(out.path(), "cut.tar", &config, &[gzip(&base), cut.clone()]);
    let (_d, s) = store();
    assert_refused(
        &s,
        &archive,
        &[
            "layer 1",
            &Digest::of_bytes(&cut).to_string(),
            "gzip layer does not decompress",
        ],
    );
    // The same in Docker's older layout.
    let config = config_with(&[Digest::of_bytes(&top)]);
    let archive = legacy_archive(out.path(), "cut-legacy.tar", &config, &cut);
    assert_refused(
        &s,
        &archive,
        &["layer 0 `l0/layer.tar`", "gzip layer does not decompress"],
    );
}

#[test]
fn issue12_load_refuses_a_config_without_rootfs() {
    let out = tempfile::tempdir().unwrap();
    let (base, _) = layers();
    let config = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]}}"#;
    let archive = oci_archive(out.path(), "norootfs.tar", config, &[gzip(&base)]);
    let (_d, s) = store();
    assert_refused(
        &s,
        &archive,
        &[&Digest::of_bytes(config).to_string(), "no `rootfs`"],
    );
    // A rootfs listing fewer diff_ids than there are layers is refused too.
    let short = config_with(&[Digest::of_bytes(&base)]);
    let archive = oci_archive(out.path(), "short.tar", &short, &[gzip(&base), gzip(&base)]);
    assert_refused(&s, &archive, &["2 layers but 1 diff_ids"]);
}

#[test]
fn issue12_a_good_archive_still_loads() {
    let out = tempfile::tempdir().unwrap();
    let (base, top) = layers();
    let config = config_with(&[Digest::of_bytes(&base), Digest::of_bytes(&top)]);
    // One gzip, one zstd, to cover both decoders.
    let mut z = kiln_image::ContentStore::open(out.path().join("scratch"))
        .unwrap()
        .layer_writer(CompressionOptions {
            compression: Compression::Zstd,
            level: None,
        })
        .unwrap();
    z.write_all(&top).unwrap();
    let z = z.finish().unwrap();
    let zstd_blob = std::fs::read(
        out.path()
            .join("scratch/content/blobs/sha256")
            .join(z.descriptor.digest.hex()),
    )
    .unwrap();
    let archive = oci_archive(out.path(), "good.tar", &config, &[gzip(&base), zstd_blob]);
    let (_d, s) = store();
    let loaded = load_archive(&s, &archive, &Platform::linux_amd64()).unwrap();
    assert_eq!(loaded.len(), 1);
    let name = Reference::parse(NAME).unwrap();
    assert_eq!(loaded[0].names, vec![name.clone()]);
    let image = Image::resolve(&s, &name, &Platform::linux_amd64()).unwrap();
    assert_eq!(image.manifest_digest, loaded[0].image.manifest_digest);
    assert_eq!(
        image.config.rootfs.diff_ids,
        vec![Digest::of_bytes(&base), Digest::of_bytes(&top)]
    );
    assert_eq!(
        s.read_blob(&image.layers[1].digest).unwrap().len() as u64,
        image.layers[1].size
    );

    // And in the older Docker layout, an uncompressed layer.
    let config = config_with(&[Digest::of_bytes(&top)]);
    let archive = legacy_archive(out.path(), "good-legacy.tar", &config, &top);
    let (_d2, s2) = store();
    let loaded = load_archive(&s2, &archive, &Platform::linux_amd64()).unwrap();
    assert_eq!(loaded[0].image.layers[0].digest, Digest::of_bytes(&top));
    assert!(s2.resolve_tag(&name).unwrap().is_some());
}

#[test]
fn issue12_one_bad_image_keeps_the_whole_archive_out() {
    // The first image is sound, the second's layer is not its diff_id: neither is loaded.
    let out = tempfile::tempdir().unwrap();
    let (base, top) = layers();
    let good = config_with(&[Digest::of_bytes(&base)]);
    let bad = config_with(&[Digest::of_bytes(&top)]);
    let archive = oci_archive_of(
        out.path(),
        "two.tar",
        &[
            ("kiln/first:1", &good, &[gzip(&base)]),
            ("kiln/second:1", &bad, &[gzip(&base)]),
        ],
    );
    let (_d, s) = store();
    assert_refused(&s, &archive, &["layer 0", "diff_id"]);
}
