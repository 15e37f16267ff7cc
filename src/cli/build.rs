//! `kiln build`: docker-build-compatible flags, turned into [`kiln::BuildRequest`], run through
//! [`kiln::Builder`], rendered by one of the progress renderers. The only work done here is
//! what a front end must do: read `-f -` or a tar context from stdin, and write `--iidfile` and
//! `--metadata-file` afterwards.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use kiln::{
    BuildRequest, Builder, CacheSpec, Destination, Dockerfile, NetworkMode, OutputSpec, SecretSpec,
    SshSpec,
};

use super::UsageError;
use super::progress::{self, DockerfileSource, ProgressFormat};

const BUILD_EXAMPLES: &str = "\
Examples:
  kiln build -t hello:latest examples/hello
  kiln build -f build/Dockerfile --build-arg VERSION=1.2 --target release .
  kiln build --output type=oci,dest=image.tar .
  kiln build --output type=docker,dest=image.tar,name=app:1 . && docker load -i image.tar
  kiln build -o ./rootfs .                  # the final filesystem, into a directory
  kiln build --progress=plain --no-cache .
  tar -C ctx -c . | kiln build -t app -     # a tar build context on stdin
  kiln build -f - . < Dockerfile.dev        # the Dockerfile on stdin

Exit status: 0 built, 1 the build failed, 2 the command line is wrong.";

/// Progress output formats of `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProgressArg {
    /// `tty` on a terminal, `plain` otherwise.
    Auto,
    /// Live display, one line per step.
    Tty,
    /// Line-oriented, `Step N/M : ...`.
    Plain,
    /// One JSON object per event per line.
    Json,
    /// Only the image id.
    Quiet,
}

/// `kiln build`: build an image from a Dockerfile and a context.
#[derive(Args, Debug)]
#[command(after_help = BUILD_EXAMPLES)]
#[allow(clippy::struct_field_names)] // `build_args` is the flag's name
pub(crate) struct BuildArgs {
    /// Name and optionally a tag (`name:tag`); repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub(crate) tags: Vec<String>,

    /// Dockerfile path (default: PATH/Dockerfile); `-` reads it from stdin.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub(crate) file: Option<String>,

    /// Build-time variable `KEY=VALUE`, or `KEY` to take the value from the environment.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]", value_parser = parse_build_arg)]
    pub(crate) build_args: Vec<(String, Option<String>)>,

    /// Stage to build (default: the last one).
    #[arg(long, value_name = "STAGE")]
    pub(crate) target: Option<String>,

    /// Do not use the cache.
    #[arg(long)]
    pub(crate) no_cache: bool,

    /// Show why each step that runs missed the cache (also `KILN_EXPLAIN=1`); the json
    /// progress always carries it as `reason`.
    #[arg(long, env = "KILN_EXPLAIN", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) explain: bool,

    /// Do not use the cache for the steps of this stage; repeatable.
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub(crate) no_cache_filter: Vec<String>,

    /// Always look up base images in their registry.
    #[arg(long)]
    pub(crate) pull: bool,

    /// Image label `KEY=VALUE`; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) labels: Vec<(String, String)>,

    /// Target platforms `os/arch[/variant]`, comma-separated, repeatable
    /// (`linux/amd64,linux/arm64`): several make an image index. Default: this machine's.
    #[arg(
        long = "platform",
        value_name = "PLATFORMS",
        value_parser = parse_platforms,
        env = "DOCKER_DEFAULT_PLATFORM"
    )]
    pub(crate) platforms: Vec<PlatformList>,

    /// Secret for `RUN --mount=type=secret`: `id=ID,src=PATH` or `id=ID,env=VAR`; repeatable.
    #[arg(long = "secret", value_name = "SPEC", value_parser = parse_spec::<SecretSpec>)]
    pub(crate) secrets: Vec<SecretSpec>,

    /// SSH agent socket or keys for `RUN --mount=type=ssh`: `default` or `ID=PATH[,PATH]`.
    #[arg(long = "ssh", value_name = "SPEC", value_parser = parse_spec::<SshSpec>)]
    pub(crate) ssh: Vec<SshSpec>,

    /// Network of RUN steps: `default` (a private network namespace with outbound access through
    /// slirp4netns; the host's network, with a warning, when slirp4netns is not installed),
    /// `none` (loopback only) or `host` (the host's network namespace).
    #[arg(long, value_name = "MODE", default_value = "default", value_parser = parse_spec::<NetworkMode>)]
    pub(crate) network: NetworkMode,

    /// Output: `type=oci|docker|local|tar|image,dest=...`, `DIR` (local) or `-` (tar on stdout).
    #[arg(short = 'o', long = "output", value_name = "SPEC", value_parser = super::load::parse_output)]
    pub(crate) outputs: Vec<OutputSpec>,

    /// Push the tagged image to its registry (like `--output type=image,push=true`).
    #[arg(long)]
    pub(crate) push: bool,

    /// Load the image into the docker daemon (`DOCKER_HOST`, else /var/run/docker.sock), as
    /// `--output type=docker` without `dest`.
    #[arg(long)]
    pub(crate) load: bool,

    /// Write the image id (config digest) to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) iidfile: Option<PathBuf>,

    /// Write build metadata (image and config digests, names) as JSON to FILE, like buildx.
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub(crate) metadata_file: Option<PathBuf>,

    /// Import cache: `type=local,src=DIR`, `type=registry,ref=REF` or `REF` (accepted; not
    /// supported yet, kiln warns and uses its local cache).
    #[arg(long = "cache-from", value_name = "SPEC", value_parser = parse_spec::<CacheSpec>)]
    pub(crate) cache_from: Vec<CacheSpec>,

    /// Export cache: `type=local,dest=DIR`, `type=registry,ref=REF`, `type=inline` (accepted;
    /// not supported yet, kiln warns).
    #[arg(long = "cache-to", value_name = "SPEC", value_parser = parse_spec::<CacheSpec>)]
    pub(crate) cache_to: Vec<CacheSpec>,

    /// Progress output format.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = ProgressArg::Auto, env = "KILN_PROGRESS")]
    pub(crate) progress: ProgressArg,

    /// Print only the image id (same as `--progress=quiet`).
    #[arg(short = 'q', long)]
    pub(crate) quiet: bool,

    /// Run at most N steps at once (default: number of cores).
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) jobs: Option<u16>,

    /// Only run the build checks and print their result, like `kiln check`; do not build.
    #[arg(long)]
    pub(crate) check: bool,

    /// Build context directory, or `-` to read a tar archive of it from stdin.
    #[arg(value_name = "PATH")]
    pub(crate) context: String,
}

fn parse_spec<T: std::str::FromStr<Err = kiln::Error>>(s: &str) -> Result<T, String> {
    s.parse::<T>().map_err(|e| match e {
        kiln::Error::InvalidOption { message, .. } => message,
        other => other.to_string(),
    })
}

fn parse_build_arg(s: &str) -> Result<(String, Option<String>), String> {
    match s.split_once('=') {
        Some(("", _)) => Err("the argument name is empty".into()),
        Some((k, v)) => Ok((k.to_owned(), Some(v.to_owned()))),
        None if s.is_empty() => Err("the argument name is empty".into()),
        None => Ok((s.to_owned(), None)),
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some(("", _)) | None => Err(format!("`{s}` is not of the form KEY=VALUE")),
        Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
    }
}

/// The platforms of one `--platform` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlatformList(pub(crate) Vec<kiln::Platform>);

fn parse_platforms(s: &str) -> Result<PlatformList, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p {
            // buildx: `local` is the machine's own platform.
            "local" => Ok(kiln::Platform::host()),
            p => kiln::Platform::parse(p).map_err(|e| format!("invalid platform `{p}`: {e}")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(PlatformList)
}

impl BuildArgs {
    /// The progress format to use, resolving `auto` and `-q`.
    fn progress_format(&self) -> ProgressFormat {
        let buildkit = std::env::var("BUILDKIT_PROGRESS").ok();
        resolve_progress(
            self.progress,
            self.quiet,
            buildkit.as_deref(),
            std::io::stderr().is_terminal(),
        )
    }

    /// Turns the flags (and the environment a docker user expects to be honoured) into the
    /// build request.
    fn to_request(&self, context: PathBuf, dockerfile: Dockerfile) -> BuildRequest {
        let mut options = BuildRequest::new(context);
        options.dockerfile = dockerfile;
        options.build_args = self
            .build_args
            .iter()
            .filter_map(|(k, v)| match v {
                Some(v) => Some((k.clone(), v.clone())),
                // docker: `--build-arg K` takes K from the environment, and is dropped when unset.
                None => std::env::var(k).ok().map(|v| (k.clone(), v)),
            })
            .collect::<BTreeMap<_, _>>();
        // As buildx: the environment's epoch (a `--build-arg` of it wins, in the solver).
        options.source_date_epoch = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|v| v.trim().parse().ok());
        // `--ssh default` forwards the agent of this shell, as docker does.
        options.ssh_auth_sock = std::env::var_os("SSH_AUTH_SOCK")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        options.target.clone_from(&self.target);
        options.platforms = self.platforms.iter().flat_map(|l| l.0.clone()).collect();
        options.tags.clone_from(&self.tags);
        options.labels = self.labels.iter().cloned().collect();
        options.no_cache = self.no_cache;
        options.no_cache_filter.clone_from(&self.no_cache_filter);
        options.pull = self.pull;
        options.network = self.network;
        options.secrets.clone_from(&self.secrets);
        options.ssh.clone_from(&self.ssh);
        options.outputs.clone_from(&self.outputs);
        if self.push {
            options.outputs.push(OutputSpec::Image {
                names: self.tags.clone(),
                push: true,
                compression: kiln::Compression::Gzip,
            });
        }
        options.cache_from.clone_from(&self.cache_from);
        options.cache_to.clone_from(&self.cache_to);
        options
    }
}

/// The progress format: `-q` wins, then `--progress`/`KILN_PROGRESS`; `auto` honours docker's
/// `BUILDKIT_PROGRESS` (`plain`, `tty`, `quiet`), else picks `tty` on a terminal.
fn resolve_progress(
    arg: ProgressArg,
    quiet: bool,
    buildkit: Option<&str>,
    terminal: bool,
) -> ProgressFormat {
    if quiet {
        return ProgressFormat::Quiet;
    }
    match (arg, buildkit) {
        (ProgressArg::Auto, Some("plain")) | (ProgressArg::Plain, _) => ProgressFormat::Plain,
        (ProgressArg::Auto, Some("tty")) | (ProgressArg::Tty, _) => ProgressFormat::Tty,
        (ProgressArg::Auto, Some("quiet")) | (ProgressArg::Quiet, _) => ProgressFormat::Quiet,
        (ProgressArg::Json, _) => ProgressFormat::Json,
        (ProgressArg::Auto, _) if terminal => ProgressFormat::Tty,
        (ProgressArg::Auto, _) => ProgressFormat::Plain,
    }
}

/// Checks flag combinations clap cannot express, before anything is read.
fn validate(args: &BuildArgs) -> Result<(), UsageError> {
    if args.context == "-" && args.file.as_deref() == Some("-") {
        return Err(UsageError(
            "`-f -` and a `-` context cannot both read stdin".into(),
        ));
    }
    if args.push && args.tags.is_empty() {
        return Err(UsageError("`--push` needs at least one `-t NAME`".into()));
    }
    let is_url = ["http://", "https://", "git://", "git@", "github.com/"]
        .iter()
        .any(|p| args.context.starts_with(p));
    if is_url {
        return Err(UsageError(format!(
            "remote build contexts (`{}`) are not supported yet; clone or download it and pass the directory",
            args.context
        )));
    }
    let stdout_outputs = args
        .outputs
        .iter()
        .filter(|o| {
            matches!(
                o,
                OutputSpec::Oci {
                    dest: kiln::Destination::Stdout,
                    ..
                } | OutputSpec::Docker {
                    dest: kiln::Destination::Stdout,
                    ..
                } | OutputSpec::Tar {
                    dest: kiln::Destination::Stdout
                }
            )
        })
        .count();
    if stdout_outputs > 0 && (args.quiet || args.progress == ProgressArg::Quiet) {
        return Err(UsageError(
            "`-q` prints the image id on stdout; it cannot be combined with an output to stdout"
                .into(),
        ));
    }
    if stdout_outputs > 1 {
        return Err(UsageError("only one output can go to stdout".into()));
    }
    if stdout_outputs == 1 && std::io::stdout().is_terminal() {
        return Err(UsageError(
            "refusing to write an archive to a terminal; redirect stdout or set `dest=`".into(),
        ));
    }
    Ok(())
}

/// A directory for a tar context read from stdin: under `<state>/tmp`, named after this
/// process, so one a killed build leaves is removed by the next start; in `$TMPDIR` when the
/// state directory cannot be written.
fn stdin_context_dir(root: Option<&Path>) -> anyhow::Result<tempfile::TempDir> {
    let tmp = root
        .map_or_else(super::default_state_dir, Path::to_path_buf)
        .join("tmp");
    let prefix = format!("{}-context-", kiln_snapshotter::Owner::current().tag());
    let owned = std::fs::create_dir_all(&tmp)
        .and_then(|()| tempfile::Builder::new().prefix(&prefix).tempdir_in(&tmp));
    match owned {
        Ok(dir) => Ok(dir),
        Err(_) => tempfile::Builder::new()
            .prefix("kiln-context-")
            .tempdir()
            .context("cannot create a temporary directory for the stdin context"),
    }
}

/// Runs `kiln build`.
pub(crate) fn run(root: Option<PathBuf>, mut args: BuildArgs) -> anyhow::Result<ExitCode> {
    validate(&args)?;
    if args.check {
        return super::check::run_for_build(root, &args);
    }
    let platforms: Vec<kiln::Platform> = args.platforms.iter().flat_map(|l| l.0.clone()).collect();
    let load =
        super::load::take_daemon_outputs(&mut args.outputs, args.load, &args.tags, &platforms)?;
    // The build context: a directory, or a tar archive on stdin extracted to a temporary one.
    let mut _stdin_context = None;
    let context = if args.context == "-" {
        let dir = stdin_context_dir(root.as_deref())?;
        let stdin = std::io::stdin().lock();
        let mut archive = tar::Archive::new(stdin);
        // Modes are part of what COPY copies: keep them exactly, without the umask.
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive
            .unpack(dir.path())
            .context("cannot read the build context tar archive from stdin")?;
        let path = dir.path().to_path_buf();
        _stdin_context = Some(dir);
        path
    } else {
        let path = PathBuf::from(&args.context);
        if !path.is_dir() {
            return Err(UsageError(format!(
                "build context `{}` is not a directory",
                args.context
            ))
            .into());
        }
        path
    };
    // With a tar context, a relative `-f` names a file inside it, as with docker.
    let file = match args.file.as_deref() {
        Some(f) if args.context == "-" && f != "-" && Path::new(f).is_relative() => {
            Some(context.join(f).to_string_lossy().into_owned())
        }
        other => other.map(str::to_owned),
    };
    // Read once: the checks and the error excerpts use this text, and the build takes it as
    // it is.
    let (dockerfile, source) = read_dockerfile(file.as_deref(), &context)?;
    let checks = super::check::before_build(
        &source.text,
        file.as_deref(),
        &context,
        &args,
        root.as_deref(),
    );
    let mut options = args.to_request(context, dockerfile);

    let state_dir = root.unwrap_or_else(super::default_state_dir);
    // An output to stdout is written to a file under `<state>/tmp` (named after this process,
    // so one a killed build leaves is removed by the next start), then copied: the library
    // writes no standard output.
    let staged = stage_stdout_output(&mut options.outputs, &state_dir)?;
    let mut builder = Builder::new(&state_dir)
        .docker_config_dir(super::docker_config_dir())
        .compress_threads(super::images::compress_threads());
    if let Some(jobs) = args.jobs {
        builder = builder.jobs(usize::from(jobs));
    }
    let format = args.progress_format();
    let renderer = progress::renderer(format, Some(Arc::new(source)), args.explain);
    let renderer = match super::check::with_warnings(&checks, renderer) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    // SIGINT/SIGTERM cancel the build cleanly; kiln then exits 130/143 (a second one at once).
    let cancel = kiln::CancelHandle::new();
    if let Err(e) = super::signals::cancel_on_signals(cancel.clone()) {
        eprintln!("warning: cannot handle SIGINT/SIGTERM: {e}");
    }
    progress::diag::set_hook(renderer.diagnostics());
    let result = builder.build_cancellable(&options, renderer.as_progress(), &cancel);
    progress::diag::set_hook(None);
    renderer.finish(result.as_ref().err());
    if let Some(code) = super::signals::exit_status() {
        return Ok(ExitCode::from(code));
    }
    let image = match result {
        Ok(image) => image,
        Err(_) => return Ok(ExitCode::from(1)),
    };
    if let Some((_dir, path)) = &staged {
        let mut f = std::fs::File::open(path)
            .with_context(|| format!("cannot open `{}`", path.display()))?;
        let mut stdout = std::io::stdout().lock();
        std::io::copy(&mut f, &mut stdout)
            .and_then(|_| std::io::Write::flush(&mut stdout))
            .context("cannot write the output to stdout")?;
    }
    // A multi-platform image is known by its index digest (as buildx's --iidfile writes it).
    let image_id = image.index_digest.as_ref().unwrap_or(&image.config_digest);
    if format == ProgressFormat::Quiet {
        println!("{image_id}");
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, image_id)
            .with_context(|| format!("cannot write --iidfile `{}`", path.display()))?;
    }
    if let Some(path) = &args.metadata_file {
        let metadata = metadata_json(&image);
        let text = serde_json::to_string_pretty(&metadata).context("cannot encode metadata")?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write --metadata-file `{}`", path.display()))?;
    }
    if let Some(load) = load {
        load.run(&state_dir, &image)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The `--metadata-file` document, with buildx's key names.
fn metadata_json(image: &kiln::BuildResult) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    // buildx: an index has no one config; its digest is the image's.
    if let Some(index) = &image.index_digest {
        m.insert("containerimage.digest".into(), index.clone().into());
    } else {
        m.insert(
            "containerimage.config.digest".into(),
            image.config_digest.clone().into(),
        );
        m.insert(
            "containerimage.digest".into(),
            image.manifest_digest.clone().into(),
        );
    }
    if !image.names.is_empty() {
        m.insert("image.name".into(), image.names.join(",").into());
    }
    serde_json::Value::Object(m)
}

/// Redirects the one output to stdout (`dest=-`) into a file in a new directory under
/// `<state>/tmp`; returns the directory (removed when dropped) and the file to copy.
fn stage_stdout_output(
    outputs: &mut [OutputSpec],
    state_dir: &Path,
) -> anyhow::Result<Option<(tempfile::TempDir, PathBuf)>> {
    let Some(dest) = outputs.iter_mut().find_map(|o| match o {
        OutputSpec::Oci { dest, .. }
        | OutputSpec::Docker { dest, .. }
        | OutputSpec::Tar { dest }
            if *dest == Destination::Stdout =>
        {
            Some(dest)
        }
        _ => None,
    }) else {
        return Ok(None);
    };
    let tmp = state_dir.join("tmp");
    let dir = std::fs::create_dir_all(&tmp)
        .and_then(|()| {
            tempfile::Builder::new()
                .prefix(&format!(
                    "{}-out-",
                    kiln_snapshotter::Owner::current().tag()
                ))
                .tempdir_in(&tmp)
        })
        .with_context(|| format!("cannot create a temporary directory in `{}`", tmp.display()))?;
    let path = dir.path().join("stdout");
    *dest = Destination::Path(path.clone());
    Ok(Some((dir, path)))
}

/// Reads the Dockerfile named by `-f` (or the context's `Dockerfile`) once: the build takes it
/// as read, and errors show excerpts of it.
fn read_dockerfile(
    file: Option<&str>,
    context: &Path,
) -> anyhow::Result<(Dockerfile, DockerfileSource)> {
    let wanted = match file {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .lock()
                .read_to_string(&mut text)
                .context("cannot read the Dockerfile from stdin")?;
            Dockerfile::Text(text)
        }
        Some(path) => Dockerfile::Path(path.into()),
        None => Dockerfile::InContext,
    };
    let read = wanted.read(context)?;
    let source = DockerfileSource {
        name: read.name.clone(),
        text: read.text.clone(),
    };
    Ok((Dockerfile::Read(read), source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_arg_forms() {
        assert_eq!(
            parse_build_arg("A=1=2").unwrap(),
            ("A".into(), Some("1=2".into()))
        );
        assert_eq!(
            parse_build_arg("A=").unwrap(),
            ("A".into(), Some(String::new()))
        );
        assert_eq!(parse_build_arg("A").unwrap(), ("A".into(), None));
        assert!(parse_build_arg("=x").is_err());
    }

    #[test]
    fn progress_resolution() {
        use ProgressFormat as F;
        assert_eq!(
            resolve_progress(ProgressArg::Auto, false, None, true),
            F::Tty
        );
        assert_eq!(
            resolve_progress(ProgressArg::Auto, false, None, false),
            F::Plain
        );
        assert_eq!(
            resolve_progress(ProgressArg::Auto, false, Some("plain"), true),
            F::Plain
        );
        assert_eq!(
            resolve_progress(ProgressArg::Auto, false, Some("rawjson"), false),
            F::Plain
        );
        assert_eq!(
            resolve_progress(ProgressArg::Json, false, Some("plain"), true),
            F::Json
        );
        assert_eq!(
            resolve_progress(ProgressArg::Tty, true, None, true),
            F::Quiet
        );
    }

    #[test]
    fn platforms_are_comma_lists_normalised() {
        let l = parse_platforms("linux/amd64, linux/aarch64,linux/arm/v7").expect("parse");
        let shown: Vec<String> = l.0.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["linux/amd64", "linux/arm64", "linux/arm/v7"]);
        let e = parse_platforms("linux/amd64,linux//x").expect_err("invalid");
        assert!(e.starts_with("invalid platform `linux//x`: "), "{e}");
    }

    #[test]
    fn metadata_uses_buildx_keys() {
        let m = metadata_json(&kiln::BuildResult {
            manifest_digest: "sha256:m".into(),
            config_digest: "sha256:c".into(),
            config: Vec::new(),
            names: vec!["a:1".into(), "b:2".into()],
            index_digest: None,
        });
        assert_eq!(
            m.to_string(),
            r#"{"containerimage.config.digest":"sha256:c","containerimage.digest":"sha256:m","image.name":"a:1,b:2"}"#
        );
    }
}
