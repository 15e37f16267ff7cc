//! `kiln pull|push|images|inspect|tag|rmi|save|load`: the image commands, thin wrappers over
//! kiln-image's store, registry client and archive code.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

pub(crate) use super::images_list::{ImagesArgs, human_size};
use kiln_image::{
    ContentStore, Image, ImageIndex, Platform, Reference, RegistryClient, RegistryOptions,
    TransferEvent,
};

/// The image subcommands (flattened into kiln's top-level commands).
#[derive(Subcommand, Debug)]
pub(crate) enum ImageCommand {
    /// Pull an image from a registry into the local store.
    Pull {
        /// The image (`busybox`, `registry:5000/app:v1`, `app@sha256:...`).
        reference: String,
        /// Platform to pull from a multi-platform image (os/arch[/variant]).
        #[arg(long)]
        platform: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Push an image from the local store to its registry.
    Push {
        /// The image, as tagged locally.
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// List the images in the local store.
    Images(ImagesArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageSubcommand),
    /// Print an image's config as JSON.
    Inspect {
        /// The image.
        reference: String,
    },
    /// Give an image another name.
    Tag {
        /// The existing image.
        source: String,
        /// The new name.
        target: String,
    },
    /// Remove image tags.
    Rmi {
        /// The images.
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Write images to a docker-archive tar (what `docker load` reads).
    Save {
        /// Output file (`-` or none: stdout, unless it is a terminal).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The images.
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Load images from a docker-archive or OCI archive.
    Load {
        /// Input file (default stdin).
        #[arg(short, long)]
        input: Option<PathBuf>,
    },
}

/// `kiln image ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum ImageSubcommand {
    /// Remove dangling (`<none>`) images and the blobs only they use.
    Prune {
        /// Remove every image, not only dangling ones (kiln keeps no containers, so no image
        /// is in use).
        #[arg(short, long)]
        all: bool,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
        /// `until=TIMESTAMP|DURATION`: only images created before it (`24h`, `2026-01-02`,
        /// RFC 3339, unix seconds).
        #[arg(long, value_name = "FILTER")]
        filter: Vec<String>,
    },
}

/// Registry connection flags.
#[derive(Args, Debug)]
pub(crate) struct RegistryArgs {
    /// Talk plain HTTP to this registry (host[:port]); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub(crate) insecure: Vec<String>,
}

/// A client printing Docker-style per-layer lines (to stderr with `to_stderr`, as `docker run`
/// prints its pull).
pub(crate) fn client(
    args: &RegistryArgs,
    pushing: bool,
    moved: Arc<AtomicBool>,
    to_stderr: bool,
) -> RegistryClient {
    let say = move |line: String| {
        if to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let (done, present) = if pushing {
        ("Pushed", "Layer already exists")
    } else {
        ("Pull complete", "Already exists")
    };
    RegistryClient::new(RegistryOptions {
        insecure_registries: args.insecure.clone(),
        docker_config_dir: super::docker_config_dir(),
        ..Default::default()
    })
    .with_progress(move |e| match e {
        TransferEvent::Blob {
            digest,
            present: true,
            ..
        } => say(format!("{}: {present}", digest.short())),
        TransferEvent::Done { digest } => {
            moved.store(true, Ordering::Relaxed);
            say(format!("{}: {done}", digest.short()));
        }
        _ => {}
    })
}

pub(crate) fn parse_ref(s: &str) -> anyhow::Result<Reference> {
    Ok(Reference::parse(s)?)
}

/// Finds a local image as docker does: a full image ID (the config digest, with or without
/// `sha256:`), else a name, else a unique ID prefix; an ID prefix that several images share is
/// an error. Dangling (`<none>`) images are found by ID too.
pub(crate) fn find_image(
    store: &ContentStore,
    s: &str,
    platform: &Platform,
) -> anyhow::Result<Image> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    let is_hex = !hex.is_empty() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let full_id = is_hex && hex.len() == 64;
    if !full_id && !s.starts_with("sha256:") {
        let by_name = Reference::parse(s)
            .map_err(anyhow::Error::from)
            .and_then(|r| Ok(Image::resolve(store, &r, platform)?));
        if by_name.is_ok() || !is_hex {
            return by_name;
        }
    }
    if !is_hex {
        bail!("no such image: {s}");
    }
    let mut found: Vec<Image> = Vec::new();
    for (_, digest) in all_images(store)? {
        // A multi-platform image's id is its index digest (what `kiln build -q` prints).
        if let Ok(image) = Image::load(store, &digest, platform)
            && (image.config_digest.hex().starts_with(hex)
                || image
                    .index_digest
                    .as_ref()
                    .is_some_and(|d| d.hex().starts_with(hex)))
            && !found.iter().any(|f| f.config_digest == image.config_digest)
        {
            found.push(image);
        }
    }
    match found.len() {
        0 => bail!("no such image: {s}"),
        1 => Ok(found.remove(0)),
        _ => bail!(
            "multiple images found with provided prefix: {hex} ({})",
            found
                .iter()
                .map(|i| i.config_digest.short().to_owned())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Every image in the store: tagged ones with their tag, dangling ones with `None`.
pub(crate) fn all_images(
    store: &ContentStore,
) -> anyhow::Result<Vec<(Option<Reference>, kiln_image::Digest)>> {
    let mut out: Vec<(Option<Reference>, kiln_image::Digest)> = store
        .list_tags()?
        .into_iter()
        .map(|(r, d)| (Some(r), d))
        .collect();
    out.extend(store.list_dangling()?.into_iter().map(|d| (None, d.digest)));
    Ok(out)
}

/// `KILN_COMPRESS_THREADS`: how many threads compress exported and pushed layers (unset, 0 or
/// not a number: one per core). The library reads no environment; builds and image commands
/// pass this on.
pub(crate) fn compress_threads() -> usize {
    std::env::var("KILN_COMPRESS_THREADS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs one image command against the store under `root` (or the default state dir).
pub(crate) fn run(root: Option<PathBuf>, cmd: ImageCommand) -> anyhow::Result<ExitCode> {
    let root = root.unwrap_or_else(super::default_state_dir);
    let store = kiln_solver::open_content_store(&root)
        .with_context(|| format!("opening the image store in {}", root.display()))?
        .with_compress_threads(compress_threads());
    let platform = Platform::host();
    match cmd {
        ImageCommand::Pull {
            reference,
            platform: p,
            registry,
        } => {
            let r = parse_ref(&reference)?;
            let p = p
                .as_deref()
                .map(Platform::parse)
                .transpose()?
                .unwrap_or(platform);
            println!(
                "{}: Pulling from {}",
                r.tag().unwrap_or("latest"),
                r.repository()
            );
            let moved = Arc::new(AtomicBool::new(false));
            let image = client(&registry, false, moved.clone(), false).pull(&store, &r, &p)?;
            println!(
                "Digest: {}",
                image
                    .index_digest
                    .as_ref()
                    .unwrap_or(&image.manifest_digest)
            );
            unpack(&root, &[&image]);
            if moved.load(Ordering::Relaxed) {
                println!("Status: Downloaded newer image for {}", r.familiar());
            } else {
                println!("Status: Image is up to date for {}", r.familiar());
            }
        }
        ImageCommand::Push {
            reference,
            registry,
        } => {
            // A tag of a whole multi-platform image (built here) pushes its index.
            let index = tagged_index(&store, &reference);
            let (report, r) = if let Some((index, r)) = index {
                println!("The push refers to repository [{}]", r.name());
                let c = client(&registry, true, Arc::default(), false);
                (c.push_index(&store, &index, &r)?, r)
            } else {
                let image = find_image(&store, &reference, &platform)?;
                let r = push_name(&store, &reference, &image)?;
                println!("The push refers to repository [{}]", r.name());
                let c = client(&registry, true, Arc::default(), false);
                (c.push(&store, &image, &r)?, r)
            };
            println!(
                "{}: digest: {} size: {}",
                r.tag().unwrap_or("latest"),
                report.manifest_digest,
                report.manifest_size
            );
        }
        ImageCommand::Images(args) => super::images_list::list(&store, &platform, &args)?,
        ImageCommand::Inspect { reference } => {
            let image = find_image(&store, &reference, &platform)?;
            let mut text = serde_json::to_vec_pretty(&image.config)?;
            text.push(b'\n');
            // A closed pipe (`kiln inspect x | head`) is not an error.
            if let Err(e) = std::io::stdout().lock().write_all(&text)
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                return Err(e.into());
            }
        }
        ImageCommand::Tag { source, target } => {
            let image = find_image(&store, &source, &platform)?;
            let target = parse_ref(&target)?;
            if target.tag().is_none() {
                bail!("`{}` has no tag to set", target.familiar());
            }
            // The tag of a multi-platform image names its index, and so does the new one.
            store.set_tag(
                &target,
                image
                    .index_digest
                    .as_ref()
                    .unwrap_or(&image.manifest_digest),
            )?;
        }
        ImageCommand::Rmi { references } => {
            let mut failed = false;
            for s in references {
                if let Err(e) = rmi(&store, &root, &s, &platform) {
                    eprintln!("error: {e:#}");
                    failed = true;
                }
            }
            if failed {
                return Ok(ExitCode::from(1));
            }
        }
        ImageCommand::Image(ImageSubcommand::Prune { all, force, filter }) => {
            prune(&store, &root, all, force, &filter)?;
        }
        ImageCommand::Save { output, references } => {
            // One entry per image, with every name it was asked under (as `docker save`).
            let mut images: Vec<(Image, Vec<Reference>)> = Vec::new();
            for s in references {
                let image = find_image(&store, &s, &platform)?;
                // Asked for by name: saved under it; by ID: without a name (as docker).
                let name = parse_ref(&s)
                    .ok()
                    .filter(|r| store.resolve_tag(r).ok().flatten().is_some());
                match images
                    .iter_mut()
                    .find(|(i, _)| i.manifest_digest == image.manifest_digest)
                {
                    Some((_, names)) => names.extend(name),
                    None => images.push((image, name.into_iter().collect())),
                }
            }
            match output.filter(|o| o.as_os_str() != "-") {
                Some(path) => kiln_image::export_docker(&store, &images, None, &path)?,
                None => {
                    use std::io::IsTerminal as _;
                    if std::io::stdout().is_terminal() {
                        bail!(
                            "refusing to write an archive to a terminal: use `-o FILE` or redirect stdout"
                        );
                    }
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    kiln_image::write_docker_archive(&store, &images, None, &mut out)?;
                    out.flush()?;
                }
            }
        }
        ImageCommand::Load { input } => {
            let loaded = match &input {
                Some(p) => kiln_image::load_archive(&store, p, &platform)?,
                None => kiln_image::load_tar(
                    &store,
                    std::io::stdin().lock(),
                    "stdin".as_ref(),
                    &platform,
                )?,
            };
            unpack(&root, &loaded.iter().map(|l| &l.image).collect::<Vec<_>>());
            for l in loaded {
                if l.names.is_empty() {
                    println!("Loaded image ID: {}", l.image.config_digest);
                }
                for n in l.names {
                    println!("Loaded image: {}", n.familiar());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Unpacks the layers of `images` into the snapshot chain that builds and `kiln run` mount
/// under `root`, as docker's pull and load extract them: a later `FROM` of one prepares a
/// snapshot and unpacks nothing. A failure is a warning: the image is in the store, and the
/// first build from it unpacks it.
fn unpack(root: &std::path::Path, images: &[&Image]) {
    let r = kiln_solver::Solver::new(kiln_solver::SolverConfig::new(root))
        .and_then(|solver| images.iter().try_for_each(|i| solver.unpack(i).map(drop)));
    if let Err(e) = r {
        eprintln!(
            "warning: the image's layers were not unpacked (the first build from it will \
             unpack them): {:#}",
            anyhow::Error::from(e)
        );
    }
}

/// The repository `kiln push` sends `image` (found from `asked`) to: the name asked for, or
/// for an ID the image's only tag.
/// The multi-platform image a tag names, when every image of its index is in the store (an
/// index pulled for one platform is not).
fn tagged_index(store: &ContentStore, asked: &str) -> Option<(ImageIndex, Reference)> {
    let r = parse_ref(asked).ok()?;
    let digest = store.resolve_tag(&r).ok()??;
    Some((ImageIndex::load(store, &digest).ok()?, r))
}

fn push_name(store: &ContentStore, asked: &str, image: &Image) -> anyhow::Result<Reference> {
    if let Ok(r) = parse_ref(asked)
        && store.resolve_tag(&r)?.is_some()
    {
        return Ok(r);
    }
    let tags = tags_of(store, image)?;
    match tags.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("image {asked} has no name to push it under: tag it first"),
        _ => bail!(
            "image {asked} has several names ({}): push one of them",
            tags.iter()
                .map(Reference::familiar)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The tags naming `image` (its manifest, or the index it came from).
fn tags_of(store: &ContentStore, image: &Image) -> anyhow::Result<Vec<Reference>> {
    Ok(store
        .list_tags()?
        .into_iter()
        .filter(|(_, d)| *d == image.manifest_digest || image.index_digest.as_ref() == Some(d))
        .map(|(r, _)| r)
        .collect())
}

/// Blobs the build cache still uses (its records' layers): kept when images are removed.
pub(crate) fn cache_layers(root: &std::path::Path) -> Vec<kiln_image::Digest> {
    kiln_solver::cache::CacheStore::open(root)
        .map(|c| {
            c.all()
                .into_iter()
                .filter_map(|(_, r)| r.layer)
                .filter_map(|l| kiln_image::Digest::parse(&l.digest).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `kiln rmi NAME|ID`: a name is untagged; an ID (or prefix) of an image with one tag is
/// untagged, of an image with several tags refused, as docker does without `-f`. An image left
/// without a tag (or dangling) is deleted with the blobs only it used (`Deleted: ID`).
fn rmi(
    store: &ContentStore,
    root: &std::path::Path,
    s: &str,
    platform: &Platform,
) -> anyhow::Result<()> {
    if let Ok(r) = parse_ref(s)
        && untag(store, root, &r, platform)?
    {
        return Ok(());
    }
    let image = find_image(store, s, platform)?;
    let tags = tags_of(store, &image)?;
    match tags.as_slice() {
        [] => {
            store.remove_image(&image.manifest_digest, &cache_layers(root))?;
            println!("Deleted: {}", image.config_digest);
            super::system::remove_image_snapshots(store, root, std::slice::from_ref(&image))?;
        }
        [one] => {
            untag(store, root, one, platform)?;
        }
        _ => bail!(
            "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
            image.config_digest.short()
        ),
    }
    Ok(())
}

/// Removes the tag `r` (false when there is none); when no other tag names its image, the
/// image is deleted with the blobs only it used.
fn untag(
    store: &ContentStore,
    root: &std::path::Path,
    r: &Reference,
    platform: &Platform,
) -> anyhow::Result<bool> {
    let Some(digest) = store.resolve_tag(r)? else {
        return Ok(false);
    };
    let image = Image::load(store, &digest, platform).ok();
    if store.remove_tag(r)?.is_none() {
        return Ok(false);
    }
    println!("Untagged: {}", r.familiar());
    let still_named = store.list_tags()?.iter().any(|(_, d)| *d == digest);
    // Tagged again meanwhile by another process: refused, and kept.
    if !still_named
        && store.remove_image(&digest, &cache_layers(root)).is_ok()
        && let Some(image) = image
    {
        println!("Deleted: {}", image.config_digest);
        super::system::remove_image_snapshots(store, root, std::slice::from_ref(&image))?;
    }
    Ok(true)
}

/// `kiln image prune`: removes the dangling images (with `all`, every image) and the blobs
/// only they use, printing what went and the space reclaimed as `docker image prune` does.
fn prune(
    store: &ContentStore,
    root: &std::path::Path,
    all: bool,
    force: bool,
    filters: &[String],
) -> anyhow::Result<()> {
    let mut until = None;
    for f in filters {
        match f.split_once('=') {
            Some(("until", v)) => until = Some(parse_until(v)?),
            _ => bail!(super::UsageError(format!(
                "invalid filter '{f}' (supported: until=TIMESTAMP|DURATION)"
            ))),
        }
    }
    if !force {
        let what = if all {
            "WARNING! This will remove all images without at least one container associated to them."
        } else {
            "WARNING! This will remove all dangling images."
        };
        print!("{what}\nAre you sure you want to continue? [y/N] ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
            return Ok(());
        }
    }
    let (lines, total) = remove_images(store, root, all, until)?;
    let mut out = std::io::stdout().lock();
    if !lines.is_empty() {
        writeln!(out, "Deleted Images:")?;
        for l in lines {
            writeln!(out, "{l}")?;
        }
        writeln!(out)?;
    }
    writeln!(out, "Total reclaimed space: {}", human_size(total))?;
    Ok(())
}

/// `until=` of `image prune`: a unix time, an RFC 3339 time or date, or a duration before now
/// (Go's syntax: `90m`, `24h`, `1h30m`, `10s`).
fn parse_until(v: &str) -> anyhow::Result<i64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if let Ok(n) = v.parse::<i64>() {
        return Ok(n);
    }
    if let Some(t) = kiln_image::spec::parse_rfc3339(v)
        .or_else(|| kiln_image::spec::parse_rfc3339(&format!("{v}T00:00:00Z")))
    {
        return Ok(t);
    }
    let mut secs = 0f64;
    let mut rest = v;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(n);
        let u = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(u);
        let num: f64 = num.parse().map_err(|_| {
            super::UsageError(format!(
                "invalid until={v}: expected a time or a duration like 24h"
            ))
        })?;
        secs += num
            * match unit {
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "ms" => 0.001,
                _ => bail!(super::UsageError(format!(
                    "invalid until={v}: unknown unit '{unit}' (use h, m or s)"
                ))),
            };
        rest = tail;
    }
    Ok(now - secs as i64)
}

/// Removes the dangling images (with `all`, every image, untagging it first), only those
/// created before `until` when given, with the blobs only they used; returns docker's report
/// lines (`untagged: NAME`, `deleted: DIGEST`) and the bytes freed.
pub(crate) fn remove_images(
    store: &ContentStore,
    root: &std::path::Path,
    all: bool,
    until: Option<i64>,
) -> anyhow::Result<(Vec<String>, u64)> {
    let keep = cache_layers(root);
    let platform = Platform::host();
    let created = |d: &kiln_image::Digest| {
        Image::load(store, d, &platform).ok().and_then(|i| {
            i.config
                .created
                .as_deref()
                .and_then(kiln_image::spec::parse_rfc3339)
        })
    };
    let old_enough =
        |d: &kiln_image::Digest| until.is_none_or(|u| created(d).is_some_and(|c| c < u));
    let mut total = 0;
    let mut lines = Vec::new();
    let mut victims: Vec<kiln_image::Digest> = Vec::new();
    if all {
        for (r, d) in store.list_tags()? {
            if !old_enough(&d) {
                continue;
            }
            if store.remove_tag(&r)?.is_some() {
                lines.push(format!("untagged: {}", r.familiar()));
                if !victims.contains(&d) {
                    victims.push(d);
                }
            }
        }
    }
    for d in store.list_dangling()? {
        if old_enough(&d.digest) && !victims.contains(&d.digest) {
            victims.push(d.digest);
        }
    }
    let mut gone = Vec::new();
    for d in victims {
        let image = Image::load(store, &d, &platform).ok();
        // Tagged again meanwhile (or still named by another tag): kept.
        let Ok(removed) = store.remove_image(&d, &keep) else {
            continue;
        };
        gone.extend(image);
        total += removed.bytes;
        for b in removed.blobs {
            lines.push(format!("deleted: {b}"));
        }
    }
    // The snapshots their layers were unpacked into, when nothing else uses them.
    total += super::system::remove_image_snapshots(store, root, &gone)?;
    Ok((lines, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_of_a_whole_index_is_pushed_as_the_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ContentStore::open(dir.path()).expect("store");
        let images: Vec<Image> = ["linux/amd64", "linux/arm64"]
            .iter()
            .map(|p| {
                let config = kiln_image::ImageConfig::new(&Platform::parse(p).expect("platform"));
                kiln_image::write_image(&store, &config, &[]).expect("write image")
            })
            .collect();
        let index = kiln_image::write_index(&store, &images, &kiln_image::WriteOptions::default())
            .expect("index");
        let multi = Reference::parse("app:multi").expect("ref");
        store.set_tag(&multi, &index.digest).expect("tag");
        let (found, r) = tagged_index(&store, "app:multi").expect("the index");
        assert_eq!((found.digest, r), (index.digest.clone(), multi));
        // A single image's tag is not an index; an index missing an image is not whole.
        store
            .set_tag(
                &Reference::parse("app:one").expect("ref"),
                &images[0].manifest_digest,
            )
            .expect("tag");
        assert!(tagged_index(&store, "app:one").is_none());
        store
            .remove_blob(&images[1].manifest_digest)
            .expect("remove");
        assert!(tagged_index(&store, "app:multi").is_none());
        assert!(tagged_index(&store, "app:absent").is_none());
    }

    #[test]
    fn images_are_found_by_name_full_id_and_unique_prefix_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ContentStore::open(dir.path()).expect("store");
        let platform = Platform::linux_amd64();
        // Images until two IDs share their first digit (17 at most).
        let mut images: Vec<Image> = Vec::new();
        let (a, b) = loop {
            let mut config = kiln_image::ImageConfig::new(&platform);
            config.author = Some(format!("image {}", images.len()));
            let image = kiln_image::write_image(&store, &config, &[]).expect("write image");
            let r = Reference::parse(&format!("app:{}", images.len())).expect("ref");
            store.set_tag(&r, &image.manifest_digest).expect("tag");
            let first = &image.config_digest.hex()[..1];
            if let Some(other) = images
                .iter()
                .find(|i| i.config_digest.hex().starts_with(first))
            {
                break (other.clone(), image);
            }
            images.push(image);
        };
        let common = a
            .config_digest
            .hex()
            .chars()
            .zip(b.config_digest.hex().chars())
            .take_while(|(x, y)| x == y)
            .map(|(x, _)| x)
            .collect::<String>();
        let e = find_image(&store, &common, &platform).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "multiple images found with provided prefix: {common}"
            )),
            "{e}"
        );
        for id in [
            a.config_digest.hex().to_owned(),
            a.config_digest.to_string(),
            a.config_digest.hex()[..=common.len()].to_owned(),
        ] {
            assert_eq!(
                find_image(&store, &id, &platform)
                    .expect("found")
                    .config_digest,
                a.config_digest,
                "{id}"
            );
        }
        assert_eq!(
            find_image(&store, "app:0", &platform)
                .expect("by name")
                .config_digest,
            images[0].config_digest
        );
        let e = find_image(&store, "sha256:0000", &platform);
        assert!(a.config_digest.hex().starts_with("0000") || e.is_err());
        let e = find_image(&store, "nope:1", &platform).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
