//! `kiln check` (and `kiln build --check`): BuildKit's build checks over a Dockerfile, without
//! building. The checks live in kiln-checks; this module reads the Dockerfile and the
//! context's `.dockerignore`, looks base images up (local store, then registry: manifest and
//! config only) and prints the result as `docker build --check` text or BuildKit's
//! LintResults JSON. It also gives `kiln build` the warnings to show before a build.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Mutex, PoisonError};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use kiln::{Progress, ProgressEvent};
use kiln_checks::{BaseImage, BaseImages, CheckOptions, ContextIgnore, Platform, Report};
use kiln_image::{ContentStore, Image, ImageConfig, Reference, RegistryClient, RegistryOptions};
use kiln_solver::dockerignore::{IgnoreMatcher, parse_ignore_file};

use super::UsageError;
use super::progress::Renderer;

const CHECK_EXAMPLES: &str = "\
Examples:
  kiln check .                              check ./Dockerfile, all stages
  kiln check -f build/Dockerfile --target release .
  kiln check --format json . | jq '.warnings[].ruleName'
  kiln check --build-arg BUILDKIT_DOCKERFILE_CHECK=skip=all .

Exit status: 0 checked (warnings or not), 1 the Dockerfile cannot be built (does not parse,
or `# check=error=true` and a check fired), 2 the command line is wrong.";

/// Output formats of `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CheckFormat {
    /// `docker build --check` text: each warning with the Dockerfile excerpt.
    Text,
    /// BuildKit's LintResults JSON (`docker buildx build --call=check,format=json`).
    Json,
}

/// `kiln check`: run BuildKit's Dockerfile checks without building.
#[derive(Args, Debug)]
#[command(after_help = CHECK_EXAMPLES)]
pub(crate) struct CheckArgs {
    /// Dockerfile path (default: PATH/Dockerfile); `-` reads it from stdin.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub(crate) file: Option<String>,

    /// Build-time variable `KEY=VALUE`, or `KEY` to take the value from the environment.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]", value_parser = parse_build_arg)]
    pub(crate) build_args: Vec<(String, Option<String>)>,

    /// Check only the stages this stage needs (default: every stage).
    #[arg(long, value_name = "STAGE")]
    pub(crate) target: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
    pub(crate) format: CheckFormat,

    /// Build context directory (for `.dockerignore`).
    #[arg(value_name = "PATH", default_value = ".")]
    pub(crate) context: String,
}

fn parse_build_arg(s: &str) -> Result<(String, Option<String>), String> {
    match s.split_once('=') {
        Some(("", _)) => Err("the argument name is empty".into()),
        Some((k, v)) => Ok((k.to_owned(), Some(v.to_owned()))),
        None if s.is_empty() => Err("the argument name is empty".into()),
        None => Ok((s.to_owned(), None)),
    }
}

/// `--build-arg` values; `K` alone takes K from the environment (dropped when unset).
pub(crate) fn resolve_build_args(args: &[(String, Option<String>)]) -> BTreeMap<String, String> {
    args.iter()
        .filter_map(|(k, v)| match v {
            Some(v) => Some((k.clone(), v.clone())),
            None => std::env::var(k).ok().map(|v| (k.clone(), v)),
        })
        .collect()
}

/// Runs `kiln check`.
pub(crate) fn run(root: Option<PathBuf>, args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let context = PathBuf::from(&args.context);
    if !context.is_dir() {
        return Err(UsageError(format!(
            "build context `{}` is not a directory",
            args.context
        ))
        .into());
    }
    let (name, path, source) = read_dockerfile(args.file.as_deref(), &context)?;
    let ignore = DockerIgnore::read(&context, path.as_deref())?;
    let images = StoreImages::new(root, true);
    let opts = CheckOptions {
        build_args: resolve_build_args(&args.build_args),
        target: args.target.clone(),
        all_stages: args.target.is_none(),
        base_images: Some(&images),
        ignore: ignore.as_ref().map(|i| i as &dyn ContextIgnore),
    };
    let report = kiln_checks::check(&source, &opts);
    match args.format {
        CheckFormat::Json => {
            let doc = kiln_checks::lint_results_json(&report, &name, &source);
            let text = serde_json::to_string_pretty(&doc).context("cannot encode the results")?;
            println!("{text}");
        }
        CheckFormat::Text => {
            // buildx prints the count first, then each warning.
            if !(report.warnings.is_empty() && report.error.is_some()) {
                println!("{}", kiln_checks::summary_line(&report));
            }
            let warnings_only = Report {
                warnings: report.warnings.clone(),
                error: None,
            };
            print!(
                "{}",
                kiln_checks::render_text(&warnings_only, &name, &source)
            );
            if let Some(e) = &report.error {
                let located = Report {
                    warnings: Vec::new(),
                    error: Some(e.clone()),
                };
                let excerpt = kiln_checks::render_text(&located, &name, &source);
                let excerpt = excerpt
                    .strip_prefix(&format!("\n{}\n", e.message))
                    .unwrap_or("");
                eprint!("{excerpt}");
                eprintln!("error: {}", e.message);
            }
        }
    }
    Ok(if report.error.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `kiln build --check`: the same as `kiln check` with the build's flags.
pub(crate) fn run_for_build(
    root: Option<PathBuf>,
    build: &super::build::BuildArgs,
) -> anyhow::Result<ExitCode> {
    if build.context == "-" {
        return Err(UsageError("`--check` needs a context directory, not `-`".into()).into());
    }
    let args = CheckArgs {
        file: build.file.clone(),
        build_args: build.build_args.clone(),
        target: build.target.clone(),
        format: CheckFormat::Text,
        context: build.context.clone(),
    };
    run(root, &args)
}

/// The checks a build reports: only the stages the target needs, base images from the local
/// store only (the build resolves them itself).
pub(crate) fn before_build(
    source: &str,
    file: Option<&str>,
    context: &Path,
    build: &super::build::BuildArgs,
    root: Option<&Path>,
) -> Report {
    let dockerfile = file.filter(|f| *f != "-").map(Path::new);
    let ignore = DockerIgnore::read(context, dockerfile).ok().flatten();
    let images = StoreImages::new(root.map(Path::to_path_buf), false);
    let opts = CheckOptions {
        build_args: resolve_build_args(&build.build_args),
        target: build.target.clone(),
        all_stages: false,
        base_images: Some(&images),
        ignore: ignore.as_ref().map(|i| i as &dyn ContextIgnore),
    };
    kiln_checks::check(source.as_bytes(), &opts)
}

/// Puts the checks' warnings into the build's progress (BuildKit's short form,
/// `Rule: detail (line N)`), sent right after `BuildStarted` so that event streams still begin
/// with it. With `check=error=true` and a warning, the build ends before it starts: the
/// warnings and the error are shown and the exit status is 1, as BuildKit does. Other check
/// errors (a Dockerfile that does not parse...) are left to the build to report.
pub(crate) fn with_warnings(
    report: &Report,
    renderer: Box<dyn Renderer>,
) -> Result<Box<dyn Renderer>, ExitCode> {
    let messages: Vec<String> = report
        .warnings
        .iter()
        .map(kiln_checks::Warning::short)
        .collect();
    if let Some(e) = &report.error
        && e.message.starts_with("lint violation found for rules:")
    {
        for message in messages {
            renderer
                .as_progress()
                .event(&ProgressEvent::Warning { message });
        }
        renderer.finish(None);
        eprintln!("error: {}", e.message);
        return Err(ExitCode::from(1));
    }
    Ok(Box::new(LintWarnings {
        inner: renderer,
        pending: Mutex::new(messages),
    }))
}

/// A renderer that sends the lint warnings after `BuildStarted` (or at the end, if the build
/// failed before starting).
struct LintWarnings {
    inner: Box<dyn Renderer>,
    pending: Mutex<Vec<String>>,
}

impl LintWarnings {
    fn flush(&self) {
        let pending =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        for message in pending {
            self.inner
                .as_progress()
                .event(&ProgressEvent::Warning { message });
        }
    }
}

impl Progress for LintWarnings {
    fn event(&self, event: &ProgressEvent) {
        self.inner.as_progress().event(event);
        if matches!(event, ProgressEvent::BuildStarted { .. }) {
            self.flush();
        }
    }
}

impl Renderer for LintWarnings {
    fn as_progress(&self) -> &dyn Progress {
        self
    }

    fn finish(&self, error: Option<&kiln::Error>) {
        self.flush();
        self.inner.finish(error);
    }

    fn diagnostics(&self) -> Option<super::progress::diag::Hook> {
        self.inner.diagnostics()
    }
}

/// (name shown in output, path if it is a file, bytes).
fn read_dockerfile(
    file: Option<&str>,
    context: &Path,
) -> anyhow::Result<(String, Option<PathBuf>, Vec<u8>)> {
    match file {
        Some("-") => {
            let mut data = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut data)
                .context("cannot read the Dockerfile from stdin")?;
            Ok(("Dockerfile".into(), None, data))
        }
        Some(f) => {
            let path = PathBuf::from(f);
            let data = kiln::read_dockerfile_text(&path)?.into_bytes();
            let name = path
                .file_name()
                .map_or_else(|| f.to_owned(), |n| n.to_string_lossy().into_owned());
            Ok((name, Some(path), data))
        }
        None => {
            let path = context.join("Dockerfile");
            let data = kiln::read_dockerfile_text(&path)?.into_bytes();
            Ok(("Dockerfile".into(), Some(path), data))
        }
    }
}

/// The context's `.dockerignore` (or `<Dockerfile>.dockerignore`), with kiln-solver's
/// patternmatcher-exact matching.
struct DockerIgnore {
    matcher: IgnoreMatcher,
    ignores_root: bool,
}

impl DockerIgnore {
    fn read(context: &Path, dockerfile: Option<&Path>) -> anyhow::Result<Option<Self>> {
        let mut candidates = Vec::new();
        if let Some(name) = dockerfile.and_then(Path::file_name) {
            let mut n = name.to_os_string();
            n.push(".dockerignore");
            candidates.extend(dockerfile.map(|d| d.with_file_name(n)));
        }
        candidates.push(context.join(".dockerignore"));
        for c in candidates {
            // Symlinks resolved inside the directory, as for the Dockerfile itself.
            match kiln_fs::read_in_dir(&c) {
                Ok(bytes) => {
                    let patterns = parse_ignore_file(&String::from_utf8_lossy(&bytes));
                    if patterns.is_empty() {
                        return Ok(None);
                    }
                    let ignores_root = patterns
                        .iter()
                        .any(|p| matches!(p.as_str(), "*" | "**" | "**/*"));
                    let matcher = IgnoreMatcher::new(&patterns)
                        .with_context(|| format!("cannot read `{}`", c.display()))?;
                    return Ok(Some(DockerIgnore {
                        matcher,
                        ignores_root,
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot read `{}`", c.display()));
                }
            }
        }
        Ok(None)
    }
}

impl ContextIgnore for DockerIgnore {
    fn is_excluded(&self, path: &str) -> bool {
        self.matcher.is_excluded(path)
    }
    fn has_exclusions(&self) -> bool {
        self.matcher.has_exclusions()
    }
    fn ignores_root(&self) -> bool {
        self.ignores_root
    }
}

/// Base images from kiln's content store, else (for `kiln check`) from their registry:
/// manifest and config only, the config kept in the store.
struct StoreImages {
    store: Option<ContentStore>,
    registry: bool,
    /// Lookups already made (stages often share a base image).
    seen: std::cell::RefCell<BTreeMap<(String, String), Option<BaseImage>>>,
    /// Keeps the temporary store alive.
    _scratch: Option<tempfile::TempDir>,
}

impl StoreImages {
    fn new(root: Option<PathBuf>, registry: bool) -> Self {
        let root = root.unwrap_or_else(super::default_state_dir);
        // Do not create a state directory just to look into it.
        let mut scratch = None;
        let store = if root.join("content").is_dir() || registry {
            ContentStore::open(&root).ok().or_else(|| {
                // A state directory we cannot create (not root): configs fetched from a
                // registry go to a temporary store instead.
                let dir = tempfile::Builder::new()
                    .prefix("kiln-check-")
                    .tempdir()
                    .ok()?;
                let store = ContentStore::open(dir.path()).ok();
                scratch = Some(dir);
                store.filter(|_| registry)
            })
        } else {
            None
        };
        StoreImages {
            store,
            registry,
            seen: std::cell::RefCell::default(),
            _scratch: scratch,
        }
    }
}

impl BaseImages for StoreImages {
    fn resolve(&self, name: &str, platform: &Platform) -> Option<BaseImage> {
        let key = (name.to_owned(), platform.format());
        if let Some(found) = self.seen.borrow().get(&key) {
            return found.clone();
        }
        let found = self.lookup(name, platform);
        self.seen.borrow_mut().insert(key, found.clone());
        found
    }
}

impl StoreImages {
    fn lookup(&self, name: &str, platform: &Platform) -> Option<BaseImage> {
        let store = self.store.as_ref()?;
        let reference = Reference::parse(name).ok()?;
        let wanted = kiln_image::Platform::parse(&platform.format()).ok()?;
        let config = match Image::resolve(store, &reference, &wanted) {
            Ok(img) => img.config,
            Err(_) if self.registry => config_from_registry(store, &reference, &wanted)?,
            Err(_) => return None,
        };
        let c = &config.config;
        Some(BaseImage {
            env: c.env.clone().unwrap_or_default(),
            shell: c.shell.clone().unwrap_or_default(),
            onbuild: c.on_build.clone().unwrap_or_default(),
            platform: Platform::normalized(
                &config.os,
                &config.architecture,
                config.variant.as_deref().unwrap_or(""),
            ),
            has_layers: !config.rootfs.diff_ids.is_empty(),
        })
    }
}

/// A base image's config straight from its registry: the manifest (for `platform` when it is
/// an index) and the config blob, which is kept in the store.
fn config_from_registry(
    store: &ContentStore,
    reference: &Reference,
    platform: &kiln_image::Platform,
) -> Option<ImageConfig> {
    let client = RegistryClient::new(RegistryOptions {
        docker_config_dir: super::docker_config_dir(),
        ..RegistryOptions::default()
    });
    let target = reference.digest().map_or_else(
        || reference.tag().unwrap_or("latest").to_owned(),
        ToString::to_string,
    );
    let (bytes, media_type, _) = client.fetch_manifest(reference, &target).ok()?;
    let manifest_bytes = if kiln_image::spec::is_index(&media_type) {
        let index: kiln_image::Index = serde_json::from_slice(&bytes).ok()?;
        let desc = index.manifests.iter().find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == platform.os && p.architecture == platform.architecture)
        })?;
        client
            .fetch_manifest(reference, desc.digest.as_str())
            .ok()?
            .0
    } else {
        bytes
    };
    let manifest: kiln_image::Manifest = serde_json::from_slice(&manifest_bytes).ok()?;
    client.pull_blob(store, reference, &manifest.config).ok()?;
    let config = ImageConfig::from_json(&store.read_blob(&manifest.config.digest).ok()?).ok()?;
    Some(config)
}
