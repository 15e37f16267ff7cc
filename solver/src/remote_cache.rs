//! Build cache export (`--cache-to`) and import (`--cache-from`) in kiln's own format: an OCI
//! manifest whose config blob (media type [`CONFIG_MEDIA_TYPE`]) maps each exported step cache
//! key to its parent key and its layer (the step's diff against its parent snapshot), and whose
//! layers are those blobs. It lives in a registry (`type=registry,ref=REF`) or in an OCI image
//! layout directory (`type=local,dest=DIR` / `src=DIR`).
//!
//! On import, a local cache miss whose key is in an imported map is materialised by applying
//! the layer on top of the parent snapshot (already there: steps run in DAG order), committing
//! it and only then recording it locally.
//!
//! With `cache-mounts=true` the export also carries the content of the build's
//! `RUN --mount=type=cache` directories, each as a gzip tar layer (content-addressed, listed in
//! the manifest's layers and under `mounts` in the config, by cache id); an import seeds a mount
//! that is absent or empty on this machine before the first `RUN` that uses it (see
//! [`Imported::seed_mount`]).
//!
//! `--cache-from IMAGE` naming an image in the local store (name, ID or unique ID prefix) uses
//! that image instead, the classic builder's way (see `local_image`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use kiln_image::spec::{Index, Manifest, media_type};
use kiln_image::{ContentStore, Descriptor, Digest, Reference, RegistryClient};
use serde::{Deserialize, Serialize};

use crate::cache::{LayerRecord, write_atomic};
use crate::error::{Error, Result, io_err};
use crate::request::{CacheExport, CacheLocation};

mod local_image;

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
    /// Cache mount id → its content as a gzip tar layer (`cache-mounts=true`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    mounts: BTreeMap<String, LayerRecord>,
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
    let d = Digest::parse(&l.digest).map_err(crate::solve::img_err(l.digest.clone()))?;
    Ok(Descriptor::new(l.media_type.clone(), d, l.size))
}

/// The imported cache maps of a build.
#[derive(Debug, Default)]
pub(crate) struct Imported {
    entries: HashMap<String, (CacheEntry, usize)>,
    mounts: HashMap<String, (LayerRecord, usize)>,
    sources: Vec<CacheLocation>,
    local: local_image::LocalImages,
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
            // A local image first, as docker's daemon resolves `--cache-from IMAGE`.
            if let CacheLocation::Registry(r) = loc
                && let Some(image) = local_image::find(store, r)
            {
                match local_image::ImageSource::of(&image) {
                    Some(src) => me.local.sources.push(src),
                    None => warnings.push(format!(
                        "failed to import cache: image {r}: its history and layers do not line up"
                    )),
                }
                continue;
            }
            match read_config(store, registry, loc) {
                Ok(cfg) => {
                    let i = me.sources.len();
                    me.sources.push(loc.clone());
                    for (k, e) in cfg.records {
                        me.entries.entry(k).or_insert((e, i));
                    }
                    for (id, l) in cfg.mounts {
                        me.mounts.entry(id).or_insert((l, i));
                    }
                }
                Err(e) => warnings.push(format!("failed to import cache: {e}")),
            }
        }
        (me, warnings)
    }

    /// The imported entry for `key` whose parent is `parent` (from a cache map, or matched in
    /// a local image by [`Imported::match_step`]).
    pub(crate) fn get(&self, key: &str, parent: Option<&str>) -> Option<CacheEntry> {
        let e = match self.entries.get(key) {
            Some((e, _)) => e.clone(),
            None => self.local.get(key)?,
        };
        // Entries of versions that dropped empty layers have none: such a step runs again.
        (e.parent.as_deref() == parent && e.layer.is_some()).then_some(e)
    }

    /// Looks for step `s` of `plan` (cache key `key`, on `parent`: its key and layers) in the
    /// local images of `--cache-from`; a match is then what [`Imported::get`] returns for `key`.
    pub(crate) fn match_step(
        &self,
        plan: &crate::plan::Plan,
        s: usize,
        key: &str,
        parent: Option<(&str, &[LayerRecord])>,
    ) {
        if !self.local.sources.is_empty() && !self.entries.contains_key(key) {
            self.local.match_step(plan, s, key, parent);
        }
    }

    /// Makes sure the layer blob of `key`'s entry is in the content store.
    pub(crate) fn fetch_layer(
        &self,
        store: &ContentStore,
        registry: &RegistryClient,
        key: &str,
    ) -> Result<()> {
        let Some((CacheEntry { layer: Some(l), .. }, src)) = self.entries.get(key) else {
            // A local image's layer is in the store already (or gone: the step fails to apply).
            if let Some(CacheEntry { layer: Some(l), .. }) = self.local.get(key) {
                let d = layer_desc(&l)?.digest;
                if !store.has_blob(&d) {
                    return Err(Error::Image {
                        what: l.digest.clone(),
                        message: "the --cache-from image's layer is not in the store".into(),
                    });
                }
            }
            return Ok(());
        };
        self.fetch_blob(store, registry, l, *src)
    }

    fn fetch_blob(
        &self,
        store: &ContentStore,
        registry: &RegistryClient,
        l: &LayerRecord,
        src: usize,
    ) -> Result<()> {
        let desc = layer_desc(l)?;
        if store.has_blob(&desc.digest) {
            return Ok(());
        }
        let loc = &self.sources[src];
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

    /// Whether an imported cache carries the content of cache mount `id`.
    pub(crate) fn has_mount(&self, id: &str) -> bool {
        self.mounts.contains_key(id)
    }

    /// Seeds cache mount `id` (its shared instance under `<state_dir>/mounts/cache/`) from the
    /// imported content when the directory is absent or empty and no build is using it.
    /// Returns whether it seeded. The directory is made as the executor makes one: under its
    /// `<name>.init.lock`, extracted into `<name>.tmp-…` (which the executor removes as a crashed
    /// creator's leftover), given the mount's owner and mode, then renamed into place.
    pub(crate) fn seed_mount(
        &self,
        store: &ContentStore,
        registry: &RegistryClient,
        state_dir: &Path,
        mount: &MountOwner,
    ) -> Result<bool> {
        let Some((layer, src)) = self.mounts.get(&mount.id) else {
            return Ok(false);
        };
        let base = kiln_executor::cache_mounts_dir(state_dir);
        let name = kiln_executor::cache_dir_name(&mount.id);
        let dir = base.join(&name);
        if !is_empty_dir(&dir) {
            return Ok(false);
        }
        self.fetch_blob(store, registry, layer, *src)?;
        std::fs::create_dir_all(&base).map_err(io_err("create directory", &base))?;
        let init = lock_file(&base.join(format!("{name}.init.lock")))?;
        init.lock().map_err(io_err("lock", &base))?;
        // A build using the mount holds `<name>.lock`: never fill a directory under it.
        let users = lock_file(&base.join(format!("{name}.lock")))?;
        if users.try_lock().is_err() || !is_empty_dir(&dir) {
            return Ok(false);
        }
        let tmp = base.join(format!("{name}.tmp-seed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).map_err(io_err("create directory", &tmp))?;
        let r = (|| -> Result<()> {
            let d = Digest::parse(&layer.digest)
                .map_err(crate::solve::img_err(layer.digest.clone()))?;
            let blob = store
                .open_blob(&d)
                .map_err(crate::solve::img_err(layer.digest.clone()))?;
            let gz = flate2::read::GzDecoder::new(std::io::BufReader::new(blob));
            crate::untar::extract(gz, &tmp, "/", None, 0)?;
            std::os::unix::fs::lchown(&tmp, Some(mount.uid), Some(mount.gid))
                .map_err(io_err("chown", &tmp))?;
            std::fs::set_permissions(
                &tmp,
                std::os::unix::fs::PermissionsExt::from_mode(mount.mode & 0o7777),
            )
            .map_err(io_err("chmod", &tmp))?;
            if dir.exists() {
                std::fs::remove_dir(&dir).map_err(io_err("remove", &dir))?;
            }
            std::fs::rename(&tmp, &dir).map_err(io_err("rename", &tmp))
        })();
        if r.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        r.map(|()| true)
    }
}

/// A cache mount as the executor makes its directory: id, owner and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountOwner {
    /// The cache id (`id=`, else the target).
    pub(crate) id: String,
    /// Owner of the directory.
    pub(crate) uid: u32,
    /// Group of the directory.
    pub(crate) gid: u32,
    /// Mode of the directory.
    pub(crate) mode: u32,
}

fn is_empty_dir(p: &Path) -> bool {
    match std::fs::symlink_metadata(p) {
        Err(_) => true,
        Ok(m) if m.is_dir() => std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none()),
        Ok(_) => false,
    }
}

fn lock_file(p: &Path) -> Result<std::fs::File> {
    std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(p)
        .map_err(io_err("open lock", p))
}

/// The ids of the cache mounts of every `RUN` in `plan` (each once, in step order).
pub(crate) fn cache_mount_ids(plan: &crate::plan::Plan) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for step in &plan.steps {
        if let crate::plan::Op::Run(r) = &step.op {
            for m in &r.mounts {
                let rm = &m.mount;
                if rm.kind == kiln_parser::MountType::Cache {
                    let id = rm
                        .effective_id()
                        .unwrap_or_else(|| rm.target.clone().unwrap_or_default());
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
        }
    }
    ids
}

/// Packs the shared instance of each cache mount in `ids` that has content into a gzip tar
/// layer in `store` (while holding the mount's shared lock, so no `sharing=locked` user is
/// writing it). `tmp` is a scratch directory.
pub(crate) fn pack_mounts(
    store: &ContentStore,
    state_dir: &Path,
    ids: &[String],
    tmp: &Path,
) -> Result<BTreeMap<String, LayerRecord>> {
    let base = kiln_executor::cache_mounts_dir(state_dir);
    let mut out = BTreeMap::new();
    for id in ids {
        let name = kiln_executor::cache_dir_name(id);
        let dir = base.join(&name);
        if is_empty_dir(&dir) || !dir.is_dir() {
            continue;
        }
        let lock = lock_file(&base.join(format!("{name}.lock")))?;
        lock.lock_shared().map_err(io_err("lock", &dir))?;
        let path = tmp.join(format!("mount-{name}.tar.gz"));
        let file = std::fs::File::create(&path).map_err(io_err("create", &path))?;
        // Parallel gzip (the same bytes for any thread count), hashing tar and blob on the way.
        let gzip = kiln_image::CompressionOptions {
            compression: kiln_image::Compression::Gzip,
            level: Some(1),
        };
        let mut tar = kiln_image::Compressor::hashing(
            std::io::BufWriter::new(file),
            gzip,
            kiln_image::default_threads(),
        )
        .map_err(io_err("compress", &path))?;
        kiln_image::write_rootfs_tar(&dir, None, &mut tar)
            .map_err(crate::solve::img_err(format!("cache mount {id}")))?;
        drop(lock);
        let done = tar.finish_hashed().map_err(io_err("write", &path))?;
        let mut compressed = done.inner;
        std::io::Write::flush(&mut compressed).map_err(io_err("write", &path))?;
        drop(compressed);
        let diff_id = done.input_digest.to_string();
        let digest = done.output_digest.to_string();
        let size = done.output_size;
        let desc = Descriptor::new(
            media_type::OCI_LAYER_GZIP,
            Digest::parse(&digest).map_err(crate::solve::img_err(digest.clone()))?,
            size,
        );
        let f = std::fs::File::open(&path).map_err(io_err("open", &path))?;
        store
            .put_verified(
                std::io::BufReader::new(f),
                &desc,
                &path.display().to_string(),
            )
            .map_err(crate::solve::img_err(format!("cache mount {id}")))?;
        let _ = std::fs::remove_file(&path);
        out.insert(
            id.clone(),
            LayerRecord {
                digest,
                diff_id,
                size,
                media_type: media_type::OCI_LAYER_GZIP.to_owned(),
            },
        );
    }
    Ok(out)
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
    mounts: BTreeMap<String, LayerRecord>,
) -> Result<()> {
    let loc = &exp.location;
    let mut layers: Vec<Descriptor> = Vec::new();
    for l in records
        .values()
        .filter_map(|e| e.layer.as_ref())
        .chain(mounts.values())
    {
        let d = layer_desc(l)?;
        if !layers.iter().any(|x| x.digest == d.digest) {
            layers.push(d);
        }
    }
    let config = serde_json::to_vec(&CacheConfig {
        version: 1,
        records,
        mounts,
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
                store
                    .materialize(&d.digest)
                    .map_err(crate::solve::img_err(format!("cache layer {}", d.digest)))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_configs_read_and_empty_dirs_are_found() {
        let old: CacheConfig =
            serde_json::from_str(r#"{"version":1,"records":{}}"#).expect("older config");
        assert!(old.mounts.is_empty());
        let d = tempfile::tempdir().expect("tempdir");
        assert!(is_empty_dir(&d.path().join("absent")) && is_empty_dir(d.path()));
        std::fs::write(d.path().join("f"), b"x").expect("write");
        assert!(!is_empty_dir(d.path()));
    }
}
