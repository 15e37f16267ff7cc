//! `kiln load`: reads a docker-archive (`manifest.json`, old or Docker 25+ layout) or an OCI
//! image layout archive into the content store and tags the images it names.
//!
//! Loading is check, then store, then tag. Every image of the archive is checked before
//! anything of it enters the store: each blob's digest and size against its descriptor; the
//! config has a `rootfs` of type `layers` with one diff_id per layer; each layer decompresses
//! to its end (gzip, zstd or plain; a truncated stream fails) and the uncompressed bytes hash
//! to that layer's diff_id (what Docker's loader checks: moby `image/tarexport/load.go`,
//! "invalid diffID for layer"). Only when every image passes are blobs stored, then
//! manifests, then tags: a refused archive leaves no tag and no manifest, so nothing refers to
//! a blob it brought (a blob stored before a failure in the store phase itself, a full disk
//! say, is unreferenced and goes with the next `gc`).

mod check;

use check::{check_legacy, check_manifest};

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, IoContext, Result};
use crate::export::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
use crate::image::{Image, WriteOptions, parse_json, write_image_with};
use crate::spec::{Descriptor, ImageConfig, Index, Platform};
use crate::{ContentStore, Digest, Reference};

/// One image read from an archive, with the names it was tagged with.
#[derive(Clone, Debug)]
pub struct LoadedImage {
    /// The stored image.
    pub image: Image,
    /// The tags set for it (may be empty for an unnamed image).
    pub names: Vec<Reference>,
}

#[derive(Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Loads the archive at `path` (a tar, or a directory holding an OCI layout) for `platform`.
pub fn load_archive(
    store: &ContentStore,
    path: &Path,
    platform: &Platform,
) -> Result<Vec<LoadedImage>> {
    if path.is_dir() {
        return load_dir(store, path, path, platform, false);
    }
    let f = File::open(path).at(path)?;
    load_tar(store, f, path, platform)
}

/// Loads an archive streamed from `reader` (`path` only names it in errors).
pub fn load_tar(
    store: &ContentStore,
    reader: impl Read,
    path: &Path,
    platform: &Platform,
) -> Result<Vec<LoadedImage>> {
    let tmp = store.ingest_dir("load")?;
    let mut archive = tar::Archive::new(BufReader::new(reader));
    for entry in archive.entries().map_err(|e| bad(path, &e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(path, &format!("not a tar archive: {e}")))?;
        // unpack_in refuses absolute paths and `..`.
        entry
            .unpack_in(tmp.path())
            .map_err(|e| bad(path, &e.to_string()))?;
    }
    load_dir(store, tmp.path(), path, platform, true)
}

fn bad(path: &Path, reason: &str) -> Error {
    Error::InvalidArchive {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    }
}

/// `owned`: `dir` is our own unpacked copy, so blobs may be moved out of it.
fn load_dir(
    store: &ContentStore,
    dir: &Path,
    origin: &Path,
    platform: &Platform,
    owned: bool,
) -> Result<Vec<LoadedImage>> {
    let src = Source { dir, origin, owned };
    let manifest_json = dir.join("manifest.json");
    let repo_tags = if manifest_json.is_file() {
        let data = fs::read(&manifest_json).at(&manifest_json)?;
        let entries: Vec<DockerManifestEntry> =
            parse_json(&data, &format!("{} manifest.json", origin.display()))?;
        Some(entries)
    } else {
        None
    };
    let index_json = dir.join("index.json");
    // Check every image first; nothing is stored until all of them pass.
    let mut checked: Vec<(Checked, Vec<Reference>)> = Vec::new();
    if index_json.is_file() {
        let data = fs::read(&index_json).at(&index_json)?;
        let index: Index = parse_json(&data, &format!("{} index.json", origin.display()))?;
        let mut tags_by_config: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in repo_tags.iter().flatten() {
            tags_by_config
                .entry(e.config.clone())
                .or_default()
                .extend(e.repo_tags.clone().unwrap_or_default());
        }
        for desc in &index.manifests {
            let image = check_manifest(store, &src, desc, platform)?;
            let mut names = Vec::new();
            if let Some(n) = desc.annotations.get(ANNOTATION_IMAGE_NAME)
                && let Ok(r) = Reference::parse(n)
            {
                names.push(r);
            } else if let Some(n) = desc.annotations.get(ANNOTATION_REF_NAME)
                && n.contains(['/', ':'])
                && let Ok(r) = Reference::parse(n)
            {
                names.push(r);
            }
            if names.is_empty() {
                let key = format!("blobs/sha256/{}", image.config.digest.hex());
                names.extend(
                    tags_by_config
                        .get(&key)
                        .into_iter()
                        .flatten()
                        .filter_map(|t| Reference::parse(t).ok()),
                );
            }
            checked.push((image, names));
        }
    } else {
        let Some(entries) = repo_tags else {
            return Err(bad(
                origin,
                "neither index.json (OCI layout) nor manifest.json (docker-archive) found",
            ));
        };
        for e in entries {
            let image = check_legacy(store, &src, &e)?;
            let names = e
                .repo_tags
                .unwrap_or_default()
                .iter()
                .filter_map(|t| Reference::parse(t).ok())
                .collect();
            checked.push((image, names));
        }
    }
    let mut out: Vec<LoadedImage> = Vec::new();
    for (image, names) in checked {
        let image = image.store(store, &src)?;
        // One image may appear once per name; merge them.
        if let Some(prev) = out
            .iter_mut()
            .find(|l| l.image.manifest_digest == image.manifest_digest)
        {
            prev.names.extend(names);
        } else {
            out.push(LoadedImage { image, names });
        }
    }
    tag_all(store, out)
}

/// Tags each image's names. A name of a multi-platform image (an index in the layout) names
/// the index, as a pull tags it (and as the layout's `index.json` does): each platform loaded
/// into the store resolves from the tag, and one not loaded yet is not found (instead of the
/// tag giving the last loaded platform's image whatever the platform asked).
fn tag_all(store: &ContentStore, images: Vec<LoadedImage>) -> Result<Vec<LoadedImage>> {
    for l in &images {
        let tagged = l
            .image
            .index_digest
            .as_ref()
            .unwrap_or(&l.image.manifest_digest);
        for n in &l.names {
            if n.tag().is_some() {
                store.set_tag(n, tagged)?;
            }
        }
    }
    Ok(images)
}

/// Where an archive's files are, and whether they may be moved into the store.
struct Source<'a> {
    dir: &'a Path,
    origin: &'a Path,
    owned: bool,
}

impl Source<'_> {
    /// `rel` inside the archive, refusing paths (or symlinks) that lead outside it.
    fn path(&self, rel: &str, what: &str) -> Result<PathBuf> {
        let root = self.dir.canonicalize().at(self.dir)?;
        let p = self
            .dir
            .join(rel)
            .canonicalize()
            .map_err(|_| bad(self.origin, &format!("{what} `{rel}` is missing")))?;
        if !p.starts_with(&root) {
            return Err(bad(
                self.origin,
                &format!("{what} `{rel}` points outside the archive"),
            ));
        }
        Ok(p)
    }

    fn blob(&self, digest: &Digest) -> Result<PathBuf> {
        self.path(&format!("blobs/sha256/{}", digest.hex()), "blob")
    }

    fn what(&self, digest: &Digest) -> String {
        format!("blob {digest} in {}", self.origin.display())
    }
}

/// An image of the archive that passed every check, and what storing it takes.
struct Checked {
    /// The config blob.
    config: Descriptor,
    /// Blobs to bring into the store (config and layers), each with the archive file holding
    /// it (`None`: already in the store).
    blobs: Vec<(Descriptor, Option<PathBuf>)>,
    kind: CheckedKind,
}

enum CheckedKind {
    /// An OCI layout image: its manifest (and the index it was chosen from), stored as is
    /// after the blobs.
    Layout {
        manifest: (Digest, Vec<u8>),
        index: Option<(Digest, Vec<u8>)>,
        platform: Platform,
    },
    /// A Docker archive before 25: a manifest is written for it.
    Legacy {
        config_bytes: Vec<u8>,
        config: Box<ImageConfig>,
        layers: Vec<Descriptor>,
    },
}

impl Checked {
    /// Stores the blobs, then the documents that refer to them, and returns the image.
    fn store(self, store: &ContentStore, src: &Source<'_>) -> Result<Image> {
        for (desc, path) in &self.blobs {
            if let Some(p) = path {
                copy_blob(store, src, p, desc)?;
            }
        }
        match self.kind {
            CheckedKind::Layout {
                manifest,
                index,
                platform,
            } => {
                // The manifest last, so the store never holds one whose blobs are missing.
                store.put_bytes(&manifest.1)?;
                let mut image = Image::load(store, &manifest.0, &platform)?;
                if let Some((digest, bytes)) = index {
                    store.put_bytes(&bytes)?;
                    image.index_digest = Some(digest);
                }
                Ok(image)
            }
            CheckedKind::Legacy {
                config_bytes,
                config,
                layers,
            } => write_legacy(store, &self.config, &config_bytes, &config, &layers),
        }
    }
}

fn copy_blob(store: &ContentStore, src: &Source<'_>, p: &Path, desc: &Descriptor) -> Result<()> {
    if store.has_blob(&desc.digest) {
        return Ok(());
    }
    if src.owned {
        return store.adopt_file(p, desc, &src.what(&desc.digest));
    }
    let f = File::open(p).at(p)?;
    store.put_verified(f, desc, &src.what(&desc.digest))
}

/// Stores the config of a legacy archive (its own bytes, so its image id) and writes a
/// manifest for it; its layers are already stored.
fn write_legacy(
    store: &ContentStore,
    config_desc: &Descriptor,
    config_bytes: &[u8],
    config: &ImageConfig,
    layers: &[Descriptor],
) -> Result<Image> {
    let config_digest = store.put_bytes(config_bytes)?;
    let image = write_image_with(
        store,
        config,
        layers,
        &WriteOptions {
            docker_media_types: true,
            ..Default::default()
        },
    )?;
    if image.config_digest == config_digest {
        return Ok(image);
    }
    // write_image canonicalised the config; point a manifest at the original bytes instead.
    let mut manifest = image.manifest.clone();
    manifest.config.digest = config_digest;
    manifest.config.size = config_desc.size;
    let bytes = crate::json::to_canonical_json(&manifest)?;
    let digest = store.put_bytes(&bytes)?;
    Image::load(store, &digest, &config.platform())
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::check::{check_config, check_layer};
    use super::*;
    use crate::compression::Compression;

    fn compressed(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut w = crate::compression::Compressor::new(
            Vec::new(),
            crate::CompressionOptions {
                compression: c,
                level: Some(1),
            },
        )
        .unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn layers_must_decompress_to_their_end() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for c in [
            Compression::Uncompressed,
            Compression::Gzip,
            Compression::Zstd,
        ] {
            let blob = compressed(c, &data);
            let ok = check_layer(&blob[..], "layer").unwrap();
            assert_eq!(ok.diff_id, Digest::of_bytes(&data), "{c:?}");
            assert_eq!(ok.digest, Digest::of_bytes(&blob));
            assert_eq!(ok.size, blob.len() as u64);
            assert_eq!(ok.compression, c);
            if c == Compression::Uncompressed {
                continue;
            }
            let truncated = &blob[..blob.len() * 2 / 3];
            let err = check_layer(truncated, "layer 3 of x").err();
            let err = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(
                err.contains("layer 3 of x") && err.contains("does not decompress"),
                "{c:?}: {err}"
            );
        }
    }

    #[test]
    fn configs_need_a_rootfs_matching_the_layers() {
        let good = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"]}}"#;
        assert!(check_config(good, 1, "c").is_ok());
        let err = check_config(good, 2, "config c").unwrap_err().to_string();
        assert!(
            err.contains("config c") && err.contains("2 layers but 1 diff_ids"),
            "{err}"
        );
        let none = br#"{"architecture":"amd64","os":"linux"}"#;
        let err = check_config(none, 0, "config c").unwrap_err().to_string();
        assert!(err.contains("no `rootfs`"), "{err}");
        let wrong = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"x","diff_ids":[]}}"#;
        assert!(check_config(wrong, 0, "c").is_err());
    }
}
