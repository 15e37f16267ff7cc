//! Build cache export (`--cache-to`) and import (`--cache-from`) in kiln's own format: an OCI
//! manifest whose config blob (media type [`CONFIG_MEDIA_TYPE`]) maps each exported step cache
//! key to its parent key and its layer (the step's diff against its parent snapshot), and whose
//! layers are those blobs. It lives in a registry (`type=registry,ref=REF`) or in an OCI image
//! layout directory (`type=local,dest=DIR` / `src=DIR`).
//!
//! On import, a local cache miss whose key is in an imported map is materialised by applying
//! the layer on top of the parent snapshot (already there: steps run in DAG order), committing
//! it and only then recording it locally.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use kiln_image::spec::{Index, Manifest, media_type};
use kiln_image::{ContentStore, Descriptor, Digest, Reference, RegistryClient};
use serde::{Deserialize, Serialize};

use crate::cache::{LayerRecord, write_atomic};
use crate::error::{Error, Result, io_err};
use crate::request::{CacheExport, CacheLocation};

/// Media type of the cache map blob.
pub(crate) const CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.cache.config.v1+json";

/// What one exported step produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CacheEntry {
    /// The cache key of the step's parent filesystem (`None`: scratch).
    pub(crate) parent: Option<String>,
    /// The step's layer; `None` when it changed nothing.
    pub(crate) layer: Option<LayerRecord>,
    /// When the step really ran (RFC 3339): a build from this cache stamps its history with it,
    /// so it makes the same image as the exporting build. Absent in older exports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) created: Option<String>,
}

/// The config blob.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheConfig {
    version: u32,
    records: BTreeMap<String, CacheEntry>,
}

impl CacheLocation {
    fn describe(&self) -> String {
        match self {
            Self::Registry(r) => format!("build cache {r}"),
            Self::Local(p) => format!("build cache {}", p.display()),
        }
    }

    fn err(&self, message: impl std::fmt::Display) -> Error {
        Error::Image {
            what: self.describe(),
            message: message.to_string(),
        }
    }

    fn reference(&self, r: &str) -> Result<(Reference, String)> {
        let parsed = Reference::parse(r).map_err(|e| self.err(e))?;
        let target = match (parsed.digest(), parsed.tag()) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_owned(),
            (None, None) => "latest".to_owned(),
        };
        Ok((parsed, target))
    }
}

fn layout_blob(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join(d.algorithm()).join(d.hex())
}

fn layer_desc(l: &LayerRecord) -> Result<Descriptor> {
    let d = Digest::parse(&l.digest).map_err(|e| Error::Image {
        what: l.digest.clone(),
        message: e.to_string(),
    })?;
    Ok(Descriptor::new(l.media_type.clone(), d, l.size))
}

/// The imported cache maps of a build.
#[derive(Debug, Default)]
pub(crate) struct Imported {
    entries: HashMap<String, (CacheEntry, usize)>,
    sources: Vec<CacheLocation>,
}

impl Imported {
    /// Reads every `--cache-from` map. A cache that cannot be read is a warning (as in
    /// BuildKit), not an error: the build runs without it.
    pub(crate) fn load(
        store: &ContentStore,
        registry: &RegistryClient,
        locations: &[CacheLocation],
    ) -> (Self, Vec<String>) {
        let mut me = Self::default();
        let mut warnings = Vec::new();
        for loc in locations {
            match read_config(store, registry, loc) {
                Ok(cfg) => {
                    let i = me.sources.len();
                    me.sources.push(loc.clone());
                    for (k, e) in cfg.records {
                        me.entries.entry(k).or_insert((e, i));
                    }
                }
                Err(e) => warnings.push(format!("failed to import cache: {e}")),
            }
        }
        (me, warnings)
    }

    /// The imported entry for `key` whose parent is `parent`, and its source.
    pub(crate) fn get(&self, key: &str, parent: Option<&str>) -> Option<&CacheEntry> {
        let (e, _) = self.entries.get(key)?;
        // Entries of versions that dropped empty layers have none: such a step runs again.
        (e.parent.as_deref() == parent && e.layer.is_some()).then_some(e)
    }

    /// Makes sure the layer blob of `key`'s entry is in the content store.
    pub(crate) fn fetch_layer(
        &self,
        store: &ContentStore,
        registry: &RegistryClient,
        key: &str,
    ) -> Result<()> {
        let Some((CacheEntry { layer: Some(l), .. }, src)) = self.entries.get(key) else {
            return Ok(());
        };
        let desc = layer_desc(l)?;
        if store.has_blob(&desc.digest) {
            return Ok(());
        }
        let loc = &self.sources[*src];
        match loc {
            CacheLocation::Registry(r) => {
                let (parsed, _) = loc.reference(r)?;
                registry
                    .pull_blob(store, &parsed, &desc)
                    .map_err(|e| loc.err(format!("blob {}: {e}", desc.digest)))
            }
            CacheLocation::Local(dir) => {
                let p = layout_blob(dir, &desc.digest);
                let f = std::fs::File::open(&p).map_err(io_err("open cache blob", &p))?;
                store
                    .put_verified(std::io::BufReader::new(f), &desc, &p.display().to_string())
                    .map_err(|e| loc.err(format!("blob {}: {e}", desc.digest)))
            }
        }
    }
}

fn read_config(
    store: &ContentStore,
    registry: &RegistryClient,
    loc: &CacheLocation,
) -> Result<CacheConfig> {
    let (manifest_bytes, config_bytes) = match loc {
        CacheLocation::Registry(r) => {
            let (parsed, target) = loc.reference(r)?;
            let (bytes, _, _) = registry
                .fetch_manifest(&parsed, &target)
                .map_err(|e| loc.err(e))?;
            let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| loc.err(e))?;
            registry
                .pull_blob(store, &parsed, &m.config)
                .map_err(|e| loc.err(format!("config {}: {e}", m.config.digest)))?;
            let cfg = store
                .read_blob(&m.config.digest)
                .map_err(|e| loc.err(format!("config {}: {e}", m.config.digest)))?;
            (bytes, cfg)
        }
        CacheLocation::Local(dir) => {
            let ip = dir.join("index.json");
            let index: Index =
                serde_json::from_slice(&std::fs::read(&ip).map_err(io_err("read", &ip))?)
                    .map_err(|e| loc.err(format!("{}: {e}", ip.display())))?;
            let md = index
                .manifests
                .iter()
                .find(|d| d.media_type == media_type::OCI_MANIFEST)
                .ok_or_else(|| loc.err("index.json names no manifest"))?;
            let mp = layout_blob(dir, &md.digest);
            let bytes = std::fs::read(&mp).map_err(io_err("read", &mp))?;
            if Digest::of_bytes(&bytes) != md.digest {
                return Err(loc.err(format!("manifest {} does not match its digest", md.digest)));
            }
            let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| loc.err(e))?;
            let cp = layout_blob(dir, &m.config.digest);
            let cfg = std::fs::read(&cp).map_err(io_err("read", &cp))?;
            (bytes, cfg)
        }
    };
    let m: Manifest = serde_json::from_slice(&manifest_bytes).map_err(|e| loc.err(e))?;
    if m.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(loc.err(format!(
            "config media type {} is not {CONFIG_MEDIA_TYPE}",
            m.config.media_type
        )));
    }
    if Digest::of_bytes(&config_bytes) != m.config.digest {
        return Err(loc.err(format!(
            "config {} does not match its digest",
            m.config.digest
        )));
    }
    serde_json::from_slice(&config_bytes).map_err(|e| loc.err(format!("config: {e}")))
}

/// Writes `records` (their layer blobs from `store`) to `exp`'s location.
pub(crate) fn export(
    store: &ContentStore,
    registry: &RegistryClient,
    exp: &CacheExport,
    records: BTreeMap<String, CacheEntry>,
) -> Result<()> {
    let loc = &exp.location;
    let mut layers: Vec<Descriptor> = Vec::new();
    for e in records.values() {
        if let Some(l) = &e.layer {
            let d = layer_desc(l)?;
            if !layers.iter().any(|x| x.digest == d.digest) {
                layers.push(d);
            }
        }
    }
    let config = serde_json::to_vec(&CacheConfig {
        version: 1,
        records,
    })
    .map_err(|e| loc.err(e))?;
    let config_desc = Descriptor::new(
        CONFIG_MEDIA_TYPE,
        Digest::of_bytes(&config),
        config.len() as u64,
    );
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_owned()),
        artifact_type: None,
        config: config_desc.clone(),
        layers,
        subject: None,
        annotations: BTreeMap::new(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| loc.err(e))?;
    match loc {
        CacheLocation::Registry(r) => {
            let (parsed, target) = loc.reference(r)?;
            store.put_bytes(&config).map_err(|e| loc.err(e))?;
            for d in manifest.layers.iter().chain([&config_desc]) {
                registry
                    .push_blob(store, &parsed, d)
                    .map_err(|e| loc.err(format!("blob {}: {e}", d.digest)))?;
            }
            registry
                .push_manifest(&parsed, &target, media_type::OCI_MANIFEST, &manifest_bytes)
                .map_err(|e| loc.err(e))?;
        }
        CacheLocation::Local(dir) => {
            let blobs = dir.join("blobs").join("sha256");
            std::fs::create_dir_all(&blobs).map_err(io_err("create directory", &blobs))?;
            for d in &manifest.layers {
                let dest = layout_blob(dir, &d.digest);
                if dest.is_file() {
                    continue;
                }
                let src = store.blob_path(&d.digest);
                let tmp = dest.with_extension("tmp");
                std::fs::copy(&src, &tmp).map_err(io_err("copy cache blob", &src))?;
                std::fs::rename(&tmp, &dest).map_err(io_err("rename", &tmp))?;
            }
            write_atomic(&layout_blob(dir, &config_desc.digest), &config)?;
            let md = Descriptor::new(
                media_type::OCI_MANIFEST,
                Digest::of_bytes(&manifest_bytes),
                manifest_bytes.len() as u64,
            );
            write_atomic(&layout_blob(dir, &md.digest), &manifest_bytes)?;
            write_atomic(
                &dir.join("oci-layout"),
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            )?;
            let index = Index {
                schema_version: 2,
                media_type: Some(media_type::OCI_INDEX.to_owned()),
                manifests: vec![md],
                annotations: BTreeMap::new(),
            };
            let bytes = serde_json::to_vec(&index).map_err(|e| loc.err(e))?;
            write_atomic(&dir.join("index.json"), &bytes)?;
        }
    }
    Ok(())
}
