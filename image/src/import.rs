//! `kiln load`: reads a docker-archive (`manifest.json`, old or Docker 25+ layout) or an OCI
//! image layout archive into the content store and tags the images it names. Every blob is
//! verified against its descriptor on the way in; tags are set only after all blobs of an image
//! are stored.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::compression::Compression;
use crate::error::{Error, IoContext, Result};
use crate::export::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
use crate::image::{Image, WriteOptions, parse_json, write_image_with};
use crate::spec::{self, Descriptor, ImageConfig, Index, Platform};
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
    let tmp = tempfile::Builder::new()
        .prefix("load-")
        .tempdir_in(store.state_dir().join("content/ingest"))
        .at(store.state_dir())?;
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
        let mut out: Vec<LoadedImage> = Vec::new();
        for desc in &index.manifests {
            let image = import_manifest(store, &src, desc, platform)?;
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
                let key = format!("blobs/sha256/{}", image.config_digest.hex());
                names.extend(
                    tags_by_config
                        .get(&key)
                        .into_iter()
                        .flatten()
                        .filter_map(|t| Reference::parse(t).ok()),
                );
            }
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
        return tag_all(store, out);
    }
    let Some(entries) = repo_tags else {
        return Err(bad(
            origin,
            "neither index.json (OCI layout) nor manifest.json (docker-archive) found",
        ));
    };
    let mut out = Vec::new();
    for e in entries {
        let image = import_legacy(store, &src, &e)?;
        let names = e
            .repo_tags
            .unwrap_or_default()
            .iter()
            .filter_map(|t| Reference::parse(t).ok())
            .collect();
        out.push(LoadedImage { image, names });
    }
    tag_all(store, out)
}

fn tag_all(store: &ContentStore, images: Vec<LoadedImage>) -> Result<Vec<LoadedImage>> {
    for l in &images {
        for n in &l.names {
            if n.tag().is_some() {
                store.set_tag(n, &l.image.manifest_digest)?;
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

fn copy_blob(store: &ContentStore, src: &Source<'_>, desc: &Descriptor) -> Result<()> {
    if store.has_blob(&desc.digest) {
        return Ok(());
    }
    let p = src.blob(&desc.digest)?;
    if src.owned {
        return store.adopt_file(&p, desc, &src.what(&desc.digest));
    }
    let f = File::open(&p).at(&p)?;
    store.put_verified(f, desc, &src.what(&desc.digest))
}

fn import_manifest(
    store: &ContentStore,
    src: &Source<'_>,
    desc: &Descriptor,
    platform: &Platform,
) -> Result<Image> {
    let what = format!("manifest {} in {}", desc.digest, src.origin.display());
    if spec::is_index(&desc.media_type) {
        let bytes = read_verified(src, desc)?;
        let index: Index = parse_json(&bytes, &what)?;
        let child = crate::image::select_platform(&index, platform, &what)?.clone();
        let mut image = import_manifest(store, src, &child, platform)?;
        store.put_bytes(&bytes)?;
        image.index_digest = Some(desc.digest.clone());
        return Ok(image);
    }
    if !spec::is_manifest(&desc.media_type) {
        return Err(Error::UnsupportedMediaType {
            media_type: desc.media_type.clone(),
            what,
        });
    }
    let bytes = read_verified(src, desc)?;
    let manifest = crate::image::parse_manifest(&bytes, &what)?;
    copy_blob(store, src, &manifest.config)?;
    for l in &manifest.layers {
        copy_blob(store, src, l)?;
    }
    // The manifest last, so the store never holds one whose blobs are missing.
    store.put_bytes(&bytes)?;
    Image::load(store, &desc.digest, platform)
}

fn read_verified(src: &Source<'_>, desc: &Descriptor) -> Result<Vec<u8>> {
    let p = src.blob(&desc.digest)?;
    let bytes = fs::read(&p).at(&p)?;
    let actual = Digest::of_bytes(&bytes);
    if actual != desc.digest {
        return Err(Error::DigestMismatch {
            what: src.what(&desc.digest),
            expected: desc.digest.clone(),
            actual,
        });
    }
    Ok(bytes)
}

/// A docker-archive without index.json (Docker before 25): `<id>/layer.tar` files and a config
/// JSON named in manifest.json. A manifest is written for it (Docker media types).
fn import_legacy(store: &ContentStore, src: &Source<'_>, e: &DockerManifestEntry) -> Result<Image> {
    let config_path = src.path(&e.config, "config")?;
    let config_bytes = fs::read(&config_path).at(&config_path)?;
    let config = ImageConfig::from_json(&config_bytes)?;
    if config.rootfs.diff_ids.len() != e.layers.len() {
        return Err(bad(
            src.origin,
            &format!(
                "{} layers listed but the config has {} diff_ids",
                e.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    let mut layers = Vec::new();
    for (rel, diff_id) in e.layers.iter().zip(&config.rootfs.diff_ids) {
        let p = src.path(rel, "layer")?;
        let mut f = File::open(&p).at(&p)?;
        let mut head = [0u8; 4];
        let n = f.read(&mut head).at(&p)?;
        let compression = Compression::detect(&head[..n]);
        let f = File::open(&p).at(&p)?;
        let expected = (compression == Compression::Uncompressed).then_some(diff_id);
        let (digest, size) = store.put_blob(f, expected).map_err(|err| match err {
            Error::DigestMismatch {
                expected, actual, ..
            } => Error::DigestMismatch {
                what: format!("layer `{rel}` in {} (its diff_id)", src.origin.display()),
                expected,
                actual,
            },
            other => other,
        })?;
        layers.push(Descriptor::new(
            compression.layer_media_type(compression != Compression::Zstd),
            digest,
            size,
        ));
    }
    // Keep the archive's config bytes (and so its image id) rather than re-serialising.
    let config_digest = store.put_bytes(&config_bytes)?;
    let image = write_image_with(
        store,
        &config,
        &layers,
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
    manifest.config.size = config_bytes.len() as u64;
    let bytes = crate::json::to_canonical_json(&manifest)?;
    let digest = store.put_bytes(&bytes)?;
    Image::load(store, &digest, &config.platform())
}
