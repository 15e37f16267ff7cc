//! `kiln run`: an image from the local store (pulled first when missing, as docker does) run in
//! kiln's own container, the isolation of `RUN` steps, over a throwaway writable snapshot that
//! is removed when the container exits. The command line, environment, working directory and
//! user follow docker's rules for merging `docker run` flags with the image config.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use kiln_executor as ex;
use kiln_image::{ContainerConfig, Image, Platform, Reference};

use super::UsageError;
use super::images::{RegistryArgs, client, find_image};

/// Flags of `kiln run`.
#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// Remove the container when it exits (always the case: kiln keeps no containers).
    #[arg(long)]
    rm: bool,
    /// Set an environment variable (`K=V`, or `K` to take it from kiln's environment).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Read environment variables from a file (`K=V` lines, `#` comments).
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container (absolute).
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// User to run as (`name|uid[:group|gid]`).
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Bind a host path into the container: `HOST:CTR[:ro]` (HOST absolute; writes under a
    /// writable one are discarded when the container exits).
    #[arg(short = 'v', long = "volume", value_name = "HOST:CTR[:ro]")]
    volumes: Vec<String>,
    /// A mount: `type=bind,source=HOST,target=CTR[,readonly]` or `type=tmpfs,target=CTR[,tmpfs-size=BYTES]`.
    #[arg(long = "mount", value_name = "SPEC")]
    mounts: Vec<String>,
    /// Keep stdin open: kiln's stdin is the container's.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Give the command a terminal (a pty of the terminal's size; raw output).
    #[arg(short = 't', long)]
    tty: bool,
    /// Publish a container port on the host: `[IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp]`
    /// (the private network only); without a host port, a free one is picked and printed.
    #[arg(short = 'p', long = "publish", value_name = "HOST:CTR")]
    publish: Vec<String>,
    /// Publish every port the image EXPOSEs on free host ports (printed as `docker port` does).
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// Add an `/etc/hosts` entry: `HOST:IP` (or `HOST=IP`).
    #[arg(long = "add-host", value_name = "HOST:IP")]
    add_hosts: Vec<String>,
    /// A name for the container (kiln keeps no containers: only shown in messages).
    #[arg(long)]
    name: Option<String>,
    /// Overwrite the image's ENTRYPOINT (`''` clears it); the image's CMD is not used either.
    #[arg(long, value_name = "CMD")]
    entrypoint: Option<String>,
    /// Network: `default` (a private namespace with outbound access), `none` or `host`.
    #[arg(long, value_enum, default_value_t = RunNetwork::Default)]
    network: RunNetwork,
    /// Pull the image: `missing` (when not in the store), `always` or `never`.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pull: PullPolicy,
    /// Platform of the image (`linux/arm64`, ...): that platform's image of a multi-platform
    /// tag; another CPU's image runs through qemu-user (binfmt_misc).
    #[arg(long)]
    platform: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// The image (name, ID or unique ID prefix).
    image: String,
    /// The command and its arguments (replace the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// `--network` of `kiln run`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum RunNetwork {
    /// A private network namespace with outbound access (docker's bridge).
    #[value(alias = "bridge")]
    Default,
    /// Only a loopback interface.
    None,
    /// The host's network.
    Host,
}

/// `--pull` of `kiln run`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum PullPolicy {
    /// Pull when the image is not in the local store.
    Missing,
    /// Always pull.
    Always,
    /// Never pull.
    Never,
}

/// The process docker would start for `config` with these flags: argv, env, cwd and user.
fn process_spec(
    config: &ContainerConfig,
    args: &RunArgs,
    user_env: Vec<String>,
) -> anyhow::Result<ex::ProcessSpec> {
    // moby's merge(): an --entrypoint (even '') drops the image's CMD; an empty one is then
    // reset, so `--entrypoint ''` without arguments has no command.
    let (entrypoint, cmd) = match &args.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), args.command.clone()),
        Some(e) => (vec![e.clone()], args.command.clone()),
        None if args.command.is_empty() => (
            config.entrypoint.clone().unwrap_or_default(),
            config.cmd.clone().unwrap_or_default(),
        ),
        None => (
            config.entrypoint.clone().unwrap_or_default(),
            args.command.clone(),
        ),
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        bail!("no command specified");
    }
    let cwd = match &args.workdir {
        Some(w) if !w.starts_with('/') => bail!(UsageError(format!(
            "the working directory '{w}' is invalid, it needs to be an absolute path"
        ))),
        Some(w) => w.clone(),
        None => config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
    };
    let user = args
        .user
        .clone()
        .or_else(|| config.user.clone())
        .unwrap_or_default();
    Ok(ex::ProcessSpec {
        args: argv,
        env: merge_env(config.env.as_deref().unwrap_or_default(), &user_env),
        cwd,
        user,
        network: ex::Network::None,
        hostname: None,
        extra_hosts: Vec::new(),
    })
}

fn key_of(e: &str) -> &str {
    e.split_once('=').map_or(e, |(k, _)| k)
}

/// Docker's environment: the user's variables (a later one replacing an earlier one of the same
/// name, `K` without `=` unsetting K), then the image's that the user did not name.
fn merge_env(image: &[String], user: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in user {
        match out.iter_mut().find(|o| key_of(o) == key_of(e)) {
            Some(o) => o.clone_from(e),
            None => out.push(e.clone()),
        }
    }
    for e in image {
        if !user.iter().any(|u| key_of(u) == key_of(e)) {
            out.push(e.clone());
        }
    }
    out.retain(|e| e.contains('='));
    out
}

/// One `-e` value or env-file line as docker reads it: `K=V` as is, `K` from kiln's own
/// environment (or `K` alone, which unsets it, when kiln has no such variable).
fn env_entry(s: &str, what: &str) -> anyhow::Result<String> {
    let key = key_of(s);
    if key.is_empty() {
        bail!(UsageError(format!("invalid environment variable: {s}")));
    }
    if key.chars().any(char::is_whitespace) {
        bail!(UsageError(format!(
            "{what}: variable '{key}' contains whitespaces"
        )));
    }
    if s.contains('=') {
        return Ok(s.to_owned());
    }
    Ok(std::env::var(s).map_or_else(|_| s.to_owned(), |v| format!("{s}={v}")))
}

/// The `--env-file` files, then the `-e` flags, as docker orders them.
fn user_env(args: &RunArgs) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for f in &args.env_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading env file {}", f.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            out.push(env_entry(line, &format!("{}:{}", f.display(), n + 1))?);
        }
    }
    for e in &args.env {
        out.push(env_entry(e, "-e")?);
    }
    Ok(out)
}

/// The `-v` and `--mount` flags as executor mounts, in docker's syntax.
fn mounts(args: &RunArgs) -> anyhow::Result<Vec<ex::MountSpec>> {
    let usage = |m: String| anyhow::Error::from(UsageError(m));
    let target_ok = |t: &str, flag: &str| -> anyhow::Result<()> {
        if t.starts_with('/') {
            Ok(())
        } else {
            Err(usage(format!(
                "{flag}: the container path '{t}' is invalid, it needs to be an absolute path"
            )))
        }
    };
    let mut out = Vec::new();
    for v in &args.volumes {
        let parts: Vec<&str> = v.split(':').collect();
        let (host, target, mode) = match parts.as_slice() {
            [h, t] => (*h, *t, ""),
            [h, t, m] => (*h, *t, *m),
            _ => return Err(usage(format!("invalid volume specification: '{v}'"))),
        };
        if !host.starts_with('/') {
            return Err(usage(format!(
                "-v {v}: named volumes are not supported; give an absolute host path"
            )));
        }
        target_ok(target, "-v")?;
        let rw = match mode {
            "" | "rw" => true,
            "ro" => false,
            m => return Err(usage(format!("-v {v}: invalid mode '{m}' (use ro or rw)"))),
        };
        // As docker: a missing host directory is created.
        if !std::path::Path::new(host).exists() {
            std::fs::create_dir_all(host)
                .with_context(|| format!("-v {v}: creating the host directory {host}"))?;
        }
        // As docker, a symbolic link names what it points to; the executor binds what it
        // opens and refuses a link.
        let source = std::fs::canonicalize(host)
            .with_context(|| format!("-v {v}: resolving the host path {host}"))?;
        out.push(ex::MountSpec::Volume(ex::VolumeMount {
            source,
            target: target.to_owned(),
            readonly: !rw,
        }));
    }
    for m in &args.mounts {
        let mut kind = "volume";
        let (mut source, mut target, mut readonly, mut size) = (None, None, false, None);
        for field in m.split(',') {
            let (k, v) = field.split_once('=').unwrap_or((field, "true"));
            match k {
                "type" => kind = v,
                "source" | "src" => source = Some(v),
                "target" | "destination" | "dst" => target = Some(v),
                "readonly" | "ro" => readonly = v != "false" && v != "0",
                "tmpfs-size" => {
                    size = Some(
                        super::prune::parse_size(v)
                            .map_err(|e| usage(format!("--mount {m}: {e}")))?,
                    );
                }
                "bind-propagation" | "consistency" => {}
                other => return Err(usage(format!("--mount {m}: unknown option '{other}'"))),
            }
        }
        let Some(target) = target else {
            return Err(usage(format!("--mount {m}: target is required")));
        };
        target_ok(target, "--mount")?;
        match kind {
            "bind" => {
                let Some(source) = source.filter(|s| s.starts_with('/')) else {
                    return Err(usage(format!(
                        "--mount {m}: a bind needs an absolute source"
                    )));
                };
                // As docker: --mount does not create the source.
                if !std::path::Path::new(source).exists() {
                    bail!("--mount {m}: bind source path does not exist: {source}");
                }
                let source = std::fs::canonicalize(source)
                    .with_context(|| format!("--mount {m}: resolving the source {source}"))?;
                out.push(ex::MountSpec::Volume(ex::VolumeMount {
                    source,
                    target: target.to_owned(),
                    readonly,
                }));
            }
            "tmpfs" => out.push(ex::MountSpec::Tmpfs(ex::TmpfsMount {
                target: target.to_owned(),
                size,
            })),
            other => {
                return Err(usage(format!(
                    "--mount {m}: type '{other}' is not supported (bind or tmpfs)"
                )));
            }
        }
    }
    Ok(out)
}

/// Whether slirp4netns (the private network's NAT) is on PATH.
fn have_slirp() -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            std::fs::metadata(d.join("slirp4netns"))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// A random 12-hex-digit id, the container's hostname (as docker's short container id).
fn container_id() -> String {
    use std::io::Read as _;
    let mut b = [0u8; 6];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        b.copy_from_slice(&u64::from(std::process::id()).to_be_bytes()[2..]);
    }
    b.iter().fold(String::new(), |mut s, x| {
        use std::fmt::Write as _;
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// The platform an image's config names.
fn image_platform(image: &Image) -> Platform {
    let c = &image.config;
    Platform::normalized(
        &c.os,
        &c.architecture,
        c.variant.as_deref().unwrap_or_default(),
    )
}

/// Finds the image in the store or pulls it, according to `--pull`.
fn image(
    solver: &kiln_solver::Solver,
    args: &RunArgs,
    platform: &Platform,
) -> anyhow::Result<Image> {
    let store = solver.content_store();
    if args.pull != PullPolicy::Always {
        match find_image(store, &args.image, platform) {
            // As docker: an image of another platform than `--platform` is not the one asked
            // for (a pull may bring it); without `--platform` it is used, with a warning.
            Ok(image) => match image_platform(&image) {
                p if platform.matches(&p) => return Ok(image),
                p if args.platform.is_none() => {
                    eprintln!(
                        "WARNING: The requested image's platform ({p}) does not match the \
                         detected host platform ({platform}) and no specific platform was requested"
                    );
                    return Ok(image);
                }
                p if args.pull == PullPolicy::Never => bail!(
                    "image with reference {} was found but does not match the specified \
                     platform: wanted {platform}, actual: {p}",
                    args.image
                ),
                _ => {}
            },
            Err(e) if args.pull == PullPolicy::Never => return Err(e),
            Err(_) => {}
        }
    }
    let r = Reference::parse(&args.image)?;
    if args.pull == PullPolicy::Missing {
        eprintln!("Unable to find image '{}' locally", r.familiar());
    }
    eprintln!(
        "{}: Pulling from {}",
        r.tag().unwrap_or("latest"),
        r.repository()
    );
    let image = client(&args.registry, false, Arc::default(), true).pull(store, &r, platform)?;
    eprintln!(
        "Digest: {}",
        image
            .index_digest
            .as_ref()
            .unwrap_or(&image.manifest_digest)
    );
    eprintln!("Status: Downloaded newer image for {}", r.familiar());
    Ok(image)
}

/// Runs `kiln run`: the container's exit status is kiln's; 125 when kiln itself fails (no such
/// image, pull or snapshot error), as docker (usage errors stay 2).
pub(crate) fn run(root: Option<PathBuf>, args: RunArgs) -> anyhow::Result<ExitCode> {
    match run_container(root, args) {
        Err(e) if e.downcast_ref::<UsageError>().is_none() => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(125))
        }
        r => r,
    }
}

fn run_container(root: Option<PathBuf>, args: RunArgs) -> anyhow::Result<ExitCode> {
    let root = root.unwrap_or_else(super::default_state_dir);
    let mut config = kiln_solver::SolverConfig::new(&root);
    config
        .insecure_registries
        .clone_from(&args.registry.insecure);
    let solver = kiln_solver::Solver::new(config)
        .with_context(|| format!("opening the state in {}", root.display()))?;
    let platform = args
        .platform
        .as_deref()
        .map(Platform::parse)
        .transpose()?
        .unwrap_or_else(Platform::host);
    let mounts = mounts(&args)?;
    let image = image(&solver, &args, &platform)?;
    // Another CPU's binaries run through a binfmt_misc handler (qemu-user), as in RUN steps.
    let running = image_platform(&image);
    if !Platform::host().matches(&running) {
        ex::emulation(&running.architecture, running.variant.as_deref())?;
    }
    let env = user_env(&args)?;
    let mut process = process_spec(&image.config.config, &args, env)?;
    let id = container_id();
    if !process.env.iter().any(|e| key_of(e) == "HOSTNAME") {
        process.env.insert(0, format!("HOSTNAME={id}"));
    }
    process.hostname = Some(id);
    for h in &args.add_hosts {
        let Some((host, ip)) = h.split_once('=').or_else(|| h.split_once(':')) else {
            bail!(UsageError(format!("invalid --add-host {h:?}: use HOST:IP")));
        };
        if host.is_empty() || ip.parse::<std::net::IpAddr>().is_err() {
            bail!(UsageError(format!("invalid --add-host {h:?}: use HOST:IP")));
        }
        process.extra_hosts.push((host.to_owned(), ip.to_owned()));
    }
    process.network = match args.network {
        RunNetwork::Default if have_slirp() => ex::Network::Private,
        RunNetwork::Default => {
            eprintln!(
                "warning: slirp4netns is not installed, so the container uses the host's network \
                 (install the `slirp4netns` package for a private network)"
            );
            ex::Network::Host
        }
        RunNetwork::None => ex::Network::None,
        RunNetwork::Host => ex::Network::Host,
    };
    let mut io = ex::Interactive::new();
    for p in &args.publish {
        io.publish.push(super::run_io::parse_publish(p)?);
    }
    if args.publish_all {
        let exposed: Vec<String> = image
            .config
            .config
            .exposed_ports
            .iter()
            .flatten()
            .cloned()
            .collect();
        for p in super::run_io::publish_all(&exposed)? {
            // As docker: an explicit -p of the same port wins.
            if !io
                .publish
                .iter()
                .any(|q| (q.container_port, q.protocol) == (p.container_port, p.protocol))
            {
                io.publish.push(p);
            }
        }
    }
    if !io.publish.is_empty() && process.network != ex::Network::Private {
        bail!(UsageError(
            "-p needs the private network (`--network default` with slirp4netns installed); \
             with --network host the container's ports are the host's"
                .into()
        ));
    }
    // Ports docker would pick (`-p 80`, `-P`), shown as `docker port` shows them, since kiln
    // keeps no container to ask afterwards.
    for line in super::run_io::pick_host_ports(&mut io.publish)? {
        eprintln!("{line}");
    }
    if args.interactive {
        io.stdin = Some(rustix::io::dup(std::io::stdin()).context("duplicating stdin")?);
    }
    let size = super::run_io::window_size().unwrap_or(ex::WindowSize { rows: 24, cols: 80 });
    if args.tty {
        io.tty = Some(size);
    }
    let rootfs = solver.container_rootfs(&image)?;
    let mut on_output = |stream: ex::Stream, line: &[u8]| {
        // Each line as it arrives; a closed stdout (`kiln run img | head`) is not an error.
        let _ = if matches!(stream, ex::Stream::Stderr) {
            let mut e = std::io::stderr().lock();
            e.write_all(line).and_then(|()| e.flush())
        } else {
            let mut o = std::io::stdout().lock();
            o.write_all(line).and_then(|()| o.flush())
        };
    };
    // SIGINT/SIGTERM go to the container's PID 1, a second one kills it (as docker); the exit
    // status is the container's, and its snapshot is removed.
    let control = ex::RunControl::new();
    super::run_io::forward_signals(control.clone()).context("installing signal handlers")?;
    let status = {
        let _raw = (args.tty && args.interactive)
            .then(super::run_io::RawMode::enter)
            .flatten();
        let _resize = args
            .tty
            .then(|| super::run_io::ResizeWatch::start(control.clone(), size));
        rootfs.run_interactive(&process, &mounts, io, &mut on_output, &control)
    };
    drop(rootfs);
    match status {
        Ok(s) => Ok(ExitCode::from(u8::try_from(s.code()).unwrap_or(255))),
        Err(kiln_solver::Error::Executor { source, .. }) => {
            let mut message = source.to_string();
            let mut cause = std::error::Error::source(&source);
            while let Some(c) = cause {
                message.push_str(": ");
                message.push_str(&c.to_string());
                cause = c.source();
            }
            eprintln!("error: running `{}`: {message}", process.args.join(" "));
            // Docker's codes: 127 for a command not found, 126 for one that cannot run.
            let m = message.to_lowercase();
            Ok(ExitCode::from(
                if m.contains("executable file not found") || m.contains("no such file") {
                    127
                } else if m.contains("permission denied") {
                    126
                } else {
                    125
                },
            ))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn args(cli: &[&str]) -> RunArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        Cli::try_parse_from(std::iter::once("run").chain(cli.iter().copied()))
            .expect("valid flags")
            .run
    }

    fn config(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ContainerConfig {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect();
        ContainerConfig {
            entrypoint: entrypoint.map(v),
            cmd: cmd.map(v),
            env: Some(vec!["PATH=/bin".into(), "NAME=Bob".into()]),
            working_dir: Some("/app".into()),
            user: Some("nobody".into()),
            ..ContainerConfig::default()
        }
    }

    fn argv(c: &ContainerConfig, cli: &[&str]) -> anyhow::Result<Vec<String>> {
        Ok(process_spec(c, &args(cli), Vec::new())?.args)
    }

    #[test]
    fn entrypoint_and_cmd_merge_as_docker() {
        let both = config(Some(&["/ep", "x"]), Some(&["c1", "c2"]));
        assert_eq!(argv(&both, &["img"]).unwrap(), ["/ep", "x", "c1", "c2"]);
        // Arguments replace CMD, and flags after IMAGE are the command's.
        assert_eq!(
            argv(&both, &["img", "-c", "exit 7"]).unwrap(),
            ["/ep", "x", "-c", "exit 7"]
        );
        // --entrypoint resets CMD.
        assert_eq!(argv(&both, &["--entrypoint", "sh", "img"]).unwrap(), ["sh"]);
        assert_eq!(
            argv(&both, &["--entrypoint", "sh", "img", "-c", "exit 7"]).unwrap(),
            ["sh", "-c", "exit 7"]
        );
        // --entrypoint '' clears it: the arguments alone, and without them no command.
        assert_eq!(
            argv(&both, &["--entrypoint", "", "img", "ls", "-l"]).unwrap(),
            ["ls", "-l"]
        );
        let e = argv(&both, &["--entrypoint", "", "img"]).unwrap_err();
        assert_eq!(e.to_string(), "no command specified");
        // Shell-form ENTRYPOINT: CMD and arguments land after `-c STRING`, where sh ignores them.
        let shell = config(Some(&["/bin/sh", "-c", "echo hi"]), Some(&["ignored"]));
        assert_eq!(
            argv(&shell, &["img", "a"]).unwrap(),
            ["/bin/sh", "-c", "echo hi", "a"]
        );
        let cmd_only = config(None, Some(&["sh"]));
        assert_eq!(argv(&cmd_only, &["img", "true"]).unwrap(), ["true"]);
        assert!(argv(&config(None, None), &["img"]).is_err());
    }

    #[test]
    fn env_workdir_user_as_docker() {
        let c = config(None, Some(&["sh"]));
        let p = process_spec(
            &c,
            &args(&["img"]),
            vec!["NAME=Sam".into(), "X=1".into(), "X=2".into()],
        )
        .unwrap();
        assert_eq!(p.env, ["NAME=Sam", "X=2", "PATH=/bin"]);
        assert_eq!(p.cwd, "/app");
        assert_eq!(p.user, "nobody");
        let p = process_spec(
            &c,
            &args(&["-w", "/tmp", "-u", "0:0", "img"]),
            vec!["PATH".into()],
        )
        .unwrap();
        assert_eq!(p.env, ["NAME=Bob"], "`K` alone unsets K");
        assert_eq!((p.cwd.as_str(), p.user.as_str()), ("/tmp", "0:0"));
        let e = process_spec(&c, &args(&["-w", "rel", "img"]), Vec::new()).unwrap_err();
        assert!(
            e.to_string().contains("needs to be an absolute path"),
            "{e}"
        );
        assert!(env_entry("=x", "-e").is_err());
        assert!(env_entry("A B=x", "-e").is_err());
    }
}
