//! `kiln system df|prune`, and the image sizes `kiln images` shows: docker's SIZE is the
//! uncompressed size of an image's layers (what its graph driver's directory walk counts:
//! regular files and symlinks, a hard-linked inode once, directories not at all), so each
//! layer's is read from its tar once and remembered in `<state>/cli/layer-sizes.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use kiln_image::{ContentStore, Digest, Image, Platform};

use super::images::{cache_layers, human_size, remove_images};

/// `kiln system ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum SystemCommand {
    /// Show disk usage: images, build cache and cache mounts (as `docker system df`).
    Df(DfArgs),
    /// Remove dangling images and build cache (as `docker system prune`).
    Prune(SystemPruneArgs),
}

/// Flags of `kiln system df`.
#[derive(Args, Debug)]
pub(crate) struct DfArgs {
    /// Show every image and cache mount.
    #[arg(short, long)]
    verbose: bool,
}

/// Flags of `kiln system prune`.
#[derive(Args, Debug)]
pub(crate) struct SystemPruneArgs {
    /// Remove every untagged image and all build cache, not only dangling ones.
    #[arg(short, long)]
    all: bool,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    force: bool,
}

/// The uncompressed size of a layer tar as docker counts it: regular files and symlinks (the
/// length of their target), hard links not again.
fn tar_content_size(r: impl Read) -> std::io::Result<u64> {
    let mut archive = tar::Archive::new(r);
    let mut total = 0;
    for entry in archive.entries()? {
        let entry = entry?;
        let h = entry.header();
        total += match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => entry.size(),
            tar::EntryType::Symlink => entry.link_name_bytes().map_or(0, |l| l.len() as u64),
            _ => 0,
        };
    }
    Ok(total)
}

/// Layer sizes already read, by blob digest.
pub(crate) struct LayerSizes {
    path: PathBuf,
    known: BTreeMap<String, u64>,
    changed: bool,
}

impl LayerSizes {
    /// The remembered sizes of the store under `state_dir`.
    pub(crate) fn open(state_dir: &Path) -> Self {
        let path = state_dir.join("cli/layer-sizes.json");
        let known = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            path,
            known,
            changed: false,
        }
    }

    /// The uncompressed content size of layer blob `d` (0 when the blob is missing or unreadable).
    pub(crate) fn layer(&mut self, store: &ContentStore, d: &Digest) -> u64 {
        if let Some(s) = self.known.get(&d.to_string()) {
            return *s;
        }
        // A deferred layer (kept as a snapshot) is read as it is made, not written.
        let size = store
            .open_blob_unstored(d)
            .ok()
            .and_then(|f| kiln_image::decompress(f).ok())
            .and_then(|r| tar_content_size(r).ok());
        let Some(size) = size else { return 0 };
        self.known.insert(d.to_string(), size);
        self.changed = true;
        size
    }

    /// The image's size as docker shows it: its layers, uncompressed.
    pub(crate) fn image(&mut self, store: &ContentStore, image: &Image) -> u64 {
        image
            .layers
            .iter()
            .map(|l| self.layer(store, &l.digest))
            .sum()
    }

    /// Writes the sizes learnt (best effort: they are only a cache).
    pub(crate) fn save(&self) {
        if !self.changed {
            return;
        }
        let Some(dir) = self.path.parent() else {
            return;
        };
        let _ = std::fs::create_dir_all(dir);
        if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir)
            && let Ok(data) = serde_json::to_vec(&self.known)
            && tmp.write_all(&data).is_ok()
        {
            let _ = tmp.persist(&self.path);
        }
    }
}

impl Drop for LayerSizes {
    fn drop(&mut self) {
        self.save();
    }
}

/// The layer blobs images and cache records use now: candidates for
/// [`remove_orphan_layers`] once some of them are removed.
pub(crate) fn used_layers(store: &ContentStore, state_dir: &Path) -> BTreeSet<Digest> {
    let mut out: BTreeSet<Digest> = cache_layers(state_dir).into_iter().collect();
    out.extend(image_layers(store));
    out
}

fn image_layers(store: &ContentStore) -> BTreeSet<Digest> {
    let platform = Platform::host();
    let mut out = BTreeSet::new();
    for (_, d) in super::images::all_images(store).unwrap_or_default() {
        if let Ok(image) = Image::load(store, &d, &platform) {
            out.extend(image.layers.into_iter().map(|l| l.digest));
        }
    }
    out
}

/// Deletes the layer blobs among `candidates` that no image and no cache record uses any more
/// (a layer kept for the cache when its image went, whose cache record went later); returns
/// the bytes freed.
pub(crate) fn remove_orphan_layers(
    store: &ContentStore,
    state_dir: &Path,
    candidates: &BTreeSet<Digest>,
) -> anyhow::Result<u64> {
    let mut still: BTreeSet<Digest> = cache_layers(state_dir).into_iter().collect();
    still.extend(image_layers(store));
    let mut freed = 0;
    for d in candidates.difference(&still) {
        // A deferred layer's record goes with its snapshot (`Builder::prune` drops it then);
        // one left has a snapshot a running build may be using.
        if store.deferred_blob(d).is_some() {
            continue;
        }
        if store.has_blob(d) {
            freed += store.stored_size(d);
            store.remove_blob(d)?;
        }
    }
    Ok(freed)
}

/// The `layer-<chain id>` snapshots `FROM` and `kiln run` unpack `image` into, base first.
fn layer_snapshots(image: &Image) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut chain: Option<String> = None;
    for d in &image.config.rootfs.diff_ids {
        let next = match &chain {
            None => d.to_string(),
            Some(prev) => Digest::of_bytes(format!("{prev} {d}").as_bytes()).to_string(),
        };
        out.push(format!("layer-{}", next.trim_start_matches("sha256:")));
        chain = Some(next);
    }
    out
}

/// Removes the unpacked-layer snapshots of the `gone` images that no remaining image, no
/// cache record and no other snapshot (as its parent) uses, top layer first; returns the bytes
/// freed.
pub(crate) fn remove_image_snapshots(
    store: &ContentStore,
    state_dir: &Path,
    gone: &[Image],
) -> anyhow::Result<u64> {
    if gone.is_empty() || !state_dir.join("snapshots").exists() {
        return Ok(0);
    }
    let platform = Platform::host();
    let mut keep: BTreeSet<String> = BTreeSet::new();
    for (_, d) in super::images::all_images(store)? {
        if let Ok(image) = Image::load(store, &d, &platform) {
            keep.extend(layer_snapshots(&image));
        }
    }
    if let Ok(cache) = kiln_solver::cache::CacheStore::open(state_dir) {
        keep.extend(cache.all().into_iter().map(|(_, r)| r.snapshot));
    }
    let sn = kiln_snapshotter::open(state_dir, kiln_snapshotter::DriverChoice::Auto)
        .with_context(|| format!("opening the snapshots in {}", state_dir.display()))?;
    let mut freed = 0;
    for image in gone {
        for name in layer_snapshots(image).iter().rev() {
            if keep.contains(name) || sn.stat(name).is_err() {
                break;
            }
            let infos = sn.walk()?;
            if infos
                .iter()
                .any(|i| i.parent.as_deref() == Some(name.as_str()))
            {
                break;
            }
            let size = sn.usage(name).map_or(0, |u| u.size);
            if sn.remove(name).is_err() {
                break;
            }
            freed += size;
        }
    }
    Ok(freed)
}

/// Disk usage of a directory tree (allocated blocks, a hard-linked inode once).
fn du(dir: &Path) -> u64 {
    let mut seen = BTreeSet::new();
    walkdir_sum(dir, &mut seen)
}

fn walkdir_sum(dir: &Path, seen: &mut BTreeSet<(u64, u64)>) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for e in entries.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if seen.insert((m.dev(), m.ino())) {
            total += m.blocks() * 512;
        }
        if m.is_dir() {
            total += walkdir_sum(&e.path(), seen);
        }
    }
    total
}

/// One row of `kiln system df`.
struct DfRow {
    kind: &'static str,
    total: usize,
    active: usize,
    size: u64,
    reclaimable: u64,
}

fn df(state_dir: &Path, store: &ContentStore, args: &DfArgs) -> anyhow::Result<()> {
    let platform = Platform::host();
    let mut sizes = LayerSizes::open(state_dir);
    // Images: each layer counted once however many images share it (as docker).
    let mut images = Vec::new();
    for (r, d) in super::images::all_images(store)? {
        if let Ok(image) = Image::load(store, &d, &platform) {
            images.push((r, image));
        }
    }
    images.dedup_by(|a, b| a.1.manifest_digest == b.1.manifest_digest);
    let mut layers: BTreeMap<Digest, u64> = BTreeMap::new();
    let mut dangling_layers: BTreeSet<Digest> = BTreeSet::new();
    let mut tagged_layers: BTreeSet<Digest> = BTreeSet::new();
    for (r, image) in &images {
        for l in &image.layers {
            let s = sizes.layer(store, &l.digest);
            layers.insert(l.digest.clone(), s);
            if r.is_some() {
                tagged_layers.insert(l.digest.clone());
            } else {
                dangling_layers.insert(l.digest.clone());
            }
        }
    }
    let image_size: u64 = layers.values().sum();
    let reclaimable: u64 = dangling_layers
        .difference(&tagged_layers)
        .map(|d| layers.get(d).copied().unwrap_or(0))
        .sum();
    // Build cache: committed snapshots.
    let snapshotter = kiln_snapshotter::open(state_dir, kiln_snapshotter::DriverChoice::Auto)
        .with_context(|| format!("opening the snapshots in {}", state_dir.display()))?;
    let snaps = snapshotter.walk()?;
    let cache_size: u64 = snaps
        .iter()
        .map(|i| snapshotter.usage(&i.name).map_or(0, |u| u.size))
        .sum();
    let records = kiln_solver::cache::CacheStore::open(state_dir).map_or(0, |c| c.all().len());
    // Cache mounts (`RUN --mount=type=cache`).
    let mounts_dir = state_dir.join("mounts/cache");
    let mut mounts: Vec<(String, u64)> = std::fs::read_dir(&mounts_dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| (e.file_name().to_string_lossy().into_owned(), du(&e.path())))
                .collect()
        })
        .unwrap_or_default();
    mounts.sort();
    let rows = [
        DfRow {
            kind: "Images",
            total: images.len(),
            active: images.iter().filter(|(r, _)| r.is_some()).count(),
            size: image_size,
            reclaimable,
        },
        DfRow {
            kind: "Build Cache",
            total: records,
            active: 0,
            size: cache_size,
            reclaimable: cache_size,
        },
        DfRow {
            kind: "Cache Mounts",
            total: mounts.len(),
            active: 0,
            size: mounts.iter().map(|m| m.1).sum(),
            reclaimable: 0,
        },
    ];
    let mut out = std::io::stdout().lock();
    let table: Vec<[String; 5]> =
        std::iter::once(["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"].map(str::to_owned))
            .chain(rows.iter().map(|r| {
                let pct = (r.reclaimable * 100)
                    .checked_div(r.size)
                    .map_or_else(String::new, |p| format!(" ({p}%)"));
                [
                    r.kind.to_owned(),
                    r.total.to_string(),
                    r.active.to_string(),
                    human_size(r.size),
                    format!("{}{pct}", human_size(r.reclaimable)),
                ]
            }))
            .collect();
    write_table(&mut out, &table)?;
    if args.verbose {
        writeln!(out, "\nImages space usage:\n")?;
        let mut t = vec![["REPOSITORY", "TAG", "IMAGE ID", "SIZE", "LAYERS"].map(str::to_owned)];
        for (r, image) in &images {
            let (repo, tag) = r.as_ref().map_or_else(
                || ("<none>".to_owned(), "<none>".to_owned()),
                |r| (r.name(), r.tag().unwrap_or("<none>").to_owned()),
            );
            t.push([
                repo,
                tag,
                image.config_digest.short().to_owned(),
                human_size(sizes.image(store, image)),
                image.layers.len().to_string(),
            ]);
        }
        write_table(&mut out, &t)?;
        writeln!(out, "\nCache mounts space usage:\n")?;
        let mut t = vec![["ID".to_owned(), "SIZE".to_owned()]];
        for (id, size) in &mounts {
            t.push([id.clone(), human_size(*size)]);
        }
        write_table(&mut out, &t)?;
    }
    Ok(())
}

fn write_table<const N: usize>(
    out: &mut impl std::io::Write,
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = [0; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == N {
                line.push_str(c);
            } else {
                use std::fmt::Write as _;
                let _ = write!(line, "{c:<w$}   ", w = widths[i]);
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn confirm(warning: &str) -> anyhow::Result<bool> {
    print!("{warning}\nAre you sure you want to continue? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

/// Runs `kiln system ...`.
pub(crate) fn run(root: Option<PathBuf>, cmd: SystemCommand) -> anyhow::Result<ExitCode> {
    let state_dir = root.unwrap_or_else(super::default_state_dir);
    let store = kiln_solver::open_content_store(&state_dir)
        .with_context(|| format!("opening the image store in {}", state_dir.display()))?;
    match cmd {
        SystemCommand::Df(args) => df(&state_dir, &store, &args)?,
        SystemCommand::Prune(args) => {
            let what = if args.all {
                "WARNING! This will remove:\n  - all images without at least one tag\n  - all build cache"
            } else {
                "WARNING! This will remove:\n  - all dangling images\n  - unused build cache"
            };
            if !args.force && !confirm(what)? {
                return Ok(ExitCode::SUCCESS);
            }
            let candidates = used_layers(&store, &state_dir);
            // Images first: the cache prune writes the deferred layers of images that remain
            // before their snapshots go, so it must not see the images about to be removed.
            // The layers the removed images share with cache records are kept by the image
            // removal and go with those records below (they are among the candidates).
            let (lines, image_bytes) = remove_images(&store, &state_dir, args.all, None)?;
            let report = kiln::Builder::new(&state_dir).prune(&kiln::PruneOptions {
                all: args.all,
                keep_storage: None,
            })?;
            let orphans = remove_orphan_layers(&store, &state_dir, &candidates)?;
            let mut out = std::io::stdout().lock();
            if !lines.is_empty() {
                writeln!(out, "Deleted Images:")?;
                for l in &lines {
                    writeln!(out, "{l}")?;
                }
                writeln!(out)?;
            }
            if report.snapshots_removed > 0 {
                writeln!(
                    out,
                    "Deleted build cache objects: {} records, {} snapshots\n",
                    report.records_removed, report.snapshots_removed
                )?;
            }
            writeln!(
                out,
                "Total reclaimed space: {}",
                human_size(image_bytes + orphans + report.bytes_freed)
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_size_counts_files_and_symlinks_as_docker() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        b.append_data(&mut h, "bin/", std::io::empty()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(1000);
        h.set_mode(0o755);
        b.append_data(&mut h, "bin/busybox", &[0u8; 1000][..])
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "bin/sh", "busybox").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        b.append_link(&mut h, "bin/bb", "bin/busybox").unwrap();
        let data = b.into_inner().unwrap();
        assert_eq!(tar_content_size(&data[..]).unwrap(), 1000 + 7);
    }
}
