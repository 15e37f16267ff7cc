//! `kiln pull|push|images|inspect|tag|rmi|save|load`: the image commands, thin wrappers over
//! kiln-image's store, registry client and archive code.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use kiln_image::{
    ContentStore, Image, Platform, Reference, RegistryClient, RegistryOptions, TransferEvent,
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
    Images {
        /// Only print image ids.
        #[arg(short, long)]
        quiet: bool,
        /// Only images of this repository (`busybox`, `registry:5000/app`), optionally `:tag`.
        repository: Option<String>,
    },
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

/// Registry connection flags.
#[derive(Args, Debug)]
pub(crate) struct RegistryArgs {
    /// Talk plain HTTP to this registry (host[:port]); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure: Vec<String>,
}

/// A client printing Docker-style per-layer lines.
fn client(args: &RegistryArgs, pushing: bool, moved: Arc<AtomicBool>) -> RegistryClient {
    let (done, present) = if pushing {
        ("Pushed", "Layer already exists")
    } else {
        ("Pull complete", "Already exists")
    };
    RegistryClient::new(RegistryOptions {
        insecure_registries: args.insecure.clone(),
        ..Default::default()
    })
    .with_progress(move |e| match e {
        TransferEvent::Blob {
            digest,
            present: true,
            ..
        } => println!("{}: {present}", digest.short()),
        TransferEvent::Done { digest } => {
            moved.store(true, Ordering::Relaxed);
            println!("{}: {done}", digest.short());
        }
        _ => {}
    })
}

fn parse_ref(s: &str) -> anyhow::Result<Reference> {
    Ok(Reference::parse(s)?)
}

/// Finds a local image by name, or by an image id prefix (`5a254e344c43`, `sha256:5a25...`)
/// as `docker inspect` accepts.
fn resolve(store: &ContentStore, s: &str, platform: &Platform) -> anyhow::Result<Image> {
    let by_name = Reference::parse(s)
        .map_err(anyhow::Error::from)
        .and_then(|r| Ok(Image::resolve(store, &r, platform)?));
    if by_name.is_ok() {
        return by_name;
    }
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        for (_, digest) in store.list_tags()? {
            if let Ok(image) = Image::load(store, &digest, platform)
                && (image.config_digest.hex().starts_with(hex)
                    || image.manifest_digest.hex().starts_with(hex))
            {
                return Ok(image);
            }
        }
    }
    by_name
}

/// Runs one image command against the store under `root` (or the default state dir).
pub(crate) fn run(root: Option<PathBuf>, cmd: ImageCommand) -> anyhow::Result<ExitCode> {
    let root = root.unwrap_or_else(kiln_image::default_state_dir);
    let store = ContentStore::open(&root)
        .with_context(|| format!("opening the image store in {}", root.display()))?;
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
            let image = client(&registry, false, moved.clone()).pull(&store, &r, &p)?;
            println!(
                "Digest: {}",
                image
                    .index_digest
                    .as_ref()
                    .unwrap_or(&image.manifest_digest)
            );
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
            let r = parse_ref(&reference)?;
            let image = Image::resolve(&store, &r, &platform)?;
            println!("The push refers to repository [{}]", r.name());
            let report = client(&registry, true, Arc::default()).push(&store, &image, &r)?;
            println!(
                "{}: digest: {} size: {}",
                r.tag().unwrap_or("latest"),
                report.manifest_digest,
                report.manifest_size
            );
        }
        ImageCommand::Images { quiet, repository } => {
            // `busybox` means the repository (every tag); `busybox:1` one tag.
            let filter = repository
                .map(|r| {
                    let has_tag = r.rsplit('/').next().is_some_and(|last| last.contains(':'));
                    parse_ref(&r).map(|p| {
                        (
                            p.name(),
                            has_tag.then(|| p.tag().unwrap_or("latest").to_owned()),
                        )
                    })
                })
                .transpose()?;
            list(&store, &platform, quiet, filter.as_ref())?;
        }
        ImageCommand::Inspect { reference } => {
            let image = resolve(&store, &reference, &platform)?;
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
            let image = resolve(&store, &source, &platform)?;
            let target = parse_ref(&target)?;
            if target.tag().is_none() {
                bail!("`{}` has no tag to set", target.familiar());
            }
            store.set_tag(&target, &image.manifest_digest)?;
        }
        ImageCommand::Rmi { references } => {
            let mut failed = false;
            for s in references {
                let r = parse_ref(&s)?;
                if store.remove_tag(&r)?.is_some() {
                    println!("Untagged: {}", r.familiar());
                } else {
                    eprintln!("error: no such image: {}", r.familiar());
                    failed = true;
                }
            }
            if failed {
                return Ok(ExitCode::from(1));
            }
        }
        ImageCommand::Save { output, references } => {
            // One entry per image, with every name it was asked under (as `docker save`).
            let mut images: Vec<(Image, Vec<Reference>)> = Vec::new();
            for s in references {
                let r = parse_ref(&s)?;
                let image = Image::resolve(&store, &r, &platform)?;
                match images
                    .iter_mut()
                    .find(|(i, _)| i.manifest_digest == image.manifest_digest)
                {
                    Some((_, names)) => names.push(r),
                    None => images.push((image, vec![r])),
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

fn list(
    store: &ContentStore,
    platform: &Platform,
    quiet: bool,
    filter: Option<&(String, Option<String>)>,
) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut rows = Vec::new();
    for (r, digest) in store.list_tags()? {
        if let Some((name, tag)) = filter
            && (r.name() != *name || tag.as_deref().is_some_and(|t| r.tag() != Some(t)))
        {
            continue;
        }
        let image = match Image::load(store, &digest, platform) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("warning: {}: {e}", r.familiar());
                continue;
            }
        };
        let created = image
            .config
            .created
            .as_deref()
            .and_then(kiln_image::spec::parse_rfc3339)
            .map_or_else(|| "N/A".to_owned(), |t| human_ago(now - t));
        let familiar = r.familiar();
        let repo = familiar
            .rsplit_once(':')
            .map_or(familiar.as_str(), |(n, _)| n)
            .to_owned();
        rows.push([
            repo,
            r.tag().unwrap_or("<none>").to_owned(),
            image.config_digest.short().to_owned(),
            created,
            human_size(image.content_size()),
        ]);
    }
    let mut out = std::io::stdout().lock();
    if quiet {
        for row in rows {
            writeln!(out, "{}", row[2])?;
        }
        return Ok(());
    }
    let header = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: [&str; 5]| {
        use std::fmt::Write as _;
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 4 {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}   ", w = widths[i]);
            }
        }
        s
    };
    writeln!(out, "{}", line(header))?;
    for row in &rows {
        writeln!(
            out,
            "{}",
            line([&row[0], &row[1], &row[2], &row[3], &row[4]])
        )?;
    }
    Ok(())
}

/// Docker's `units.HumanDuration` wording ("5 minutes ago").
fn human_ago(secs: i64) -> String {
    let s = secs.max(0);
    let text = match s {
        0 => "Less than a second".to_owned(),
        1 => "1 second".to_owned(),
        2..60 => format!("{s} seconds"),
        60..120 => "About a minute".to_owned(),
        120..3600 => format!("{} minutes", s / 60),
        3600..7200 => "About an hour".to_owned(),
        7200..172_800 => format!("{} hours", s / 3600),
        172_800..1_209_600 => format!("{} days", s / 86_400),
        1_209_600..5_184_000 => format!("{} weeks", s / 604_800),
        5_184_000..63_072_000 => format!("{} months", s / 2_592_000),
        _ => format!("{} years", s / 31_536_000),
    };
    format!("{text} ago")
}

/// Docker's `units.HumanSize`: decimal units, 3 significant digits ("4.26MB").
fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    };
    format!("{s}{}", units[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units_match_docker() {
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(12_300), "12.3kB");
        assert_eq!(human_ago(30), "30 seconds ago");
        assert_eq!(human_ago(7300), "2 hours ago");
    }
}
