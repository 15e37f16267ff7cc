//! `kiln compose [-f FILE]... [-p NAME] build|up|down|config [SERVICE...]`: Compose files built
//! and run with kiln. Each service's build is a `kiln build` and each running service a
//! `kiln run` (this binary, as child processes): builds run in parallel, a step several
//! services share runs once (the cache's per-step claim across processes); `up` (the `up` module) runs
//! the services on a project network, every output line prefixed with the service's name.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_yaml_ng::{Mapping, Value};

use super::compose_file::{self, Project, Service};

mod health;
mod net;
mod up;

/// Flags of `kiln compose`.
#[derive(Args, Debug)]
pub(crate) struct ComposeArgs {
    /// Compose file (default: compose.yaml, docker-compose.yml, ...); repeatable, later files
    /// override earlier ones.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Project name (default: the file's `name:` or its directory's name).
    #[arg(short = 'p', long = "project-name", value_name = "NAME")]
    project: Option<String>,
    /// Variables for interpolation (default: `.env` beside the first file).
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Option<PathBuf>,
    #[command(subcommand)]
    command: ComposeCommand,
}

/// `kiln compose` subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum ComposeCommand {
    /// Build the services' images.
    Build {
        /// Build without the cache.
        #[arg(long)]
        no_cache: bool,
        /// Pull base images again.
        #[arg(long)]
        pull: bool,
        /// The services (default: all).
        services: Vec<String>,
    },
    /// Build missing images, then run the services in the foreground until they exit or
    /// Ctrl-C stops them.
    Up {
        /// Build images even when they exist.
        #[arg(long)]
        build: bool,
        /// Never build (fail when an image is missing).
        #[arg(long, conflicts_with = "build")]
        no_build: bool,
        /// The services (default: all), with the services they depend on.
        services: Vec<String>,
    },
    /// Remove what `up` leaves: with `-v`, the project's named volumes (nothing else outlives
    /// `up`).
    Down {
        /// Remove the named volumes of the file's top-level `volumes:`.
        #[arg(short = 'v', long)]
        volumes: bool,
    },
    /// Print the resolved Compose file.
    Config {
        /// Only check it.
        #[arg(short, long)]
        quiet: bool,
        /// Print the service names, one a line.
        #[arg(long)]
        services: bool,
        /// Only these services.
        #[arg(value_name = "SERVICE")]
        names: Vec<String>,
    },
}

/// Runs `kiln compose`.
pub(crate) fn run(root: Option<PathBuf>, args: ComposeArgs) -> anyhow::Result<ExitCode> {
    let (doc, dir, env) = compose_file::load_document(&args.files, args.env_file.as_deref())?;
    let project = compose_file::project(&doc, &dir, args.project.as_deref(), &env)?;
    match args.command {
        ComposeCommand::Config {
            quiet,
            services,
            names,
        } => {
            let selected = select(&project, &names, false)?;
            if quiet {
                return Ok(ExitCode::SUCCESS);
            }
            if services {
                for s in &selected {
                    println!("{s}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            print!(
                "{}",
                serde_yaml_ng::to_string(&resolved(&project, &selected))?
            );
            Ok(ExitCode::SUCCESS)
        }
        ComposeCommand::Build {
            no_cache,
            pull,
            services,
        } => {
            let selected = select(&project, &services, false)?;
            let extra: Vec<&str> = [no_cache.then_some("--no-cache"), pull.then_some("--pull")]
                .into_iter()
                .flatten()
                .collect();
            build(root.as_ref(), &project, &selected, &extra)
        }
        ComposeCommand::Up {
            build: force,
            no_build,
            services,
        } => up::up(root.as_ref(), &project, &services, force, no_build),
        ComposeCommand::Down { volumes } => Ok(up::down(root.as_ref(), &project, volumes)),
    }
}

/// The services named (all when none), with what they depend on when `with_deps`, in
/// `depends_on` order (dependencies first).
fn select(project: &Project, names: &[String], with_deps: bool) -> anyhow::Result<Vec<String>> {
    for n in names {
        if !project.services.contains_key(n) {
            bail!("no such service: {n}");
        }
    }
    let wanted: Vec<String> = if names.is_empty() {
        project.services.keys().cloned().collect()
    } else {
        names.to_vec()
    };
    let mut order = Vec::new();
    let mut visiting = BTreeSet::new();
    fn visit(
        p: &Project,
        n: &str,
        deps: bool,
        order: &mut Vec<String>,
        visiting: &mut BTreeSet<String>,
    ) -> anyhow::Result<()> {
        if order.iter().any(|o| o == n) {
            return Ok(());
        }
        if !visiting.insert(n.to_owned()) {
            bail!("dependency cycle through service {n:?}");
        }
        for d in &p.services[n].depends_on {
            if deps || p.services.contains_key(d) {
                visit(p, d, deps, order, visiting)?;
            }
        }
        visiting.remove(n);
        order.push(n.to_owned());
        Ok(())
    }
    for n in &wanted {
        visit(project, n, true, &mut order, &mut visiting)?;
    }
    if !with_deps {
        order.retain(|o| wanted.contains(o));
    }
    Ok(order)
}

/// The project in compose's normalized form (`docker compose config`).
fn resolved(project: &Project, selected: &[String]) -> Value {
    let s = |v: &str| Value::String(v.to_owned());
    let list = |v: &[String]| Value::Sequence(v.iter().map(|x| s(x)).collect());
    let mut services = Mapping::new();
    for name in selected {
        let svc = &project.services[name];
        let mut m = Mapping::new();
        if let Some(b) = &svc.build {
            let mut bm = Mapping::new();
            bm.insert(s("context"), s(&b.context.to_string_lossy()));
            match &b.dockerfile_inline {
                Some(i) => bm.insert(s("dockerfile_inline"), s(i)),
                None => bm.insert(
                    s("dockerfile"),
                    s(b.dockerfile.as_deref().unwrap_or("Dockerfile")),
                ),
            };
            let map = |pairs: &[(String, String)]| {
                Value::Mapping(pairs.iter().map(|(k, v)| (s(k), s(v))).collect())
            };
            if !b.args.is_empty() {
                bm.insert(
                    s("args"),
                    Value::Mapping(
                        b.args
                            .iter()
                            .map(|(k, v)| (s(k), v.as_deref().map_or(Value::Null, s)))
                            .collect(),
                    ),
                );
            }
            if let Some(t) = &b.target {
                bm.insert(s("target"), s(t));
            }
            for (key, v) in [
                ("tags", &b.tags),
                ("cache_from", &b.cache_from),
                ("cache_to", &b.cache_to),
                ("secrets", &b.secrets),
                ("ssh", &b.ssh),
                ("platforms", &b.platforms),
            ] {
                if !v.is_empty() {
                    bm.insert(s(key), list(v));
                }
            }
            if !b.labels.is_empty() {
                bm.insert(s("labels"), map(&b.labels));
            }
            if !b.additional_contexts.is_empty() {
                bm.insert(s("additional_contexts"), map(&b.additional_contexts));
            }
            if let Some(n) = &b.network {
                bm.insert(s("network"), s(n));
            }
            m.insert(s("build"), Value::Mapping(bm));
        }
        if let Some(c) = &svc.command {
            m.insert(s("command"), list(c));
        }
        if !svc.depends_on.is_empty() {
            let mut d = Mapping::new();
            for dep in &svc.depends_on {
                let mut c = Mapping::new();
                let cond = svc.conditions.get(dep).copied().unwrap_or_default();
                c.insert(s("condition"), s(cond.name()));
                d.insert(s(dep), Value::Mapping(c));
            }
            m.insert(s("depends_on"), Value::Mapping(d));
        }
        if let Some(e) = &svc.entrypoint {
            m.insert(s("entrypoint"), list(e));
        }
        if !svc.environment.is_empty() {
            let mut env = Mapping::new();
            for e in &svc.environment {
                match e.split_once('=') {
                    Some((k, v)) => env.insert(s(k), s(v)),
                    None => env.insert(s(e), Value::Null),
                };
            }
            m.insert(s("environment"), Value::Mapping(env));
        }
        m.insert(s("image"), s(&svc.image));
        if !svc.ports.is_empty() {
            let ports = svc
                .ports
                .iter()
                .map(|(ip, host, ctr)| {
                    let mut p = Mapping::new();
                    p.insert(s("mode"), s("ingress"));
                    if ip != "0.0.0.0" {
                        p.insert(s("host_ip"), s(ip));
                    }
                    p.insert(s("target"), Value::Number((*ctr).into()));
                    if *host != 0 {
                        p.insert(s("published"), s(&host.to_string()));
                    }
                    p.insert(s("protocol"), s("tcp"));
                    Value::Mapping(p)
                })
                .collect();
            m.insert(s("ports"), Value::Sequence(ports));
        }
        if let Some(u) = &svc.user {
            m.insert(s("user"), s(u));
        }
        if !svc.volumes.is_empty() {
            m.insert(s("volumes"), list(&svc.volumes));
        }
        if let Some(w) = &svc.working_dir {
            m.insert(s("working_dir"), s(w));
        }
        services.insert(s(name), Value::Mapping(m));
    }
    let mut top = Mapping::new();
    top.insert(s("name"), s(&project.name));
    top.insert(s("services"), Value::Mapping(services));
    if !project.volumes.is_empty() {
        let mut v = Mapping::new();
        for (key, name) in &project.volumes {
            let mut m = Mapping::new();
            m.insert(s("name"), s(name));
            v.insert(s(key), Value::Mapping(m));
        }
        top.insert(s("volumes"), Value::Mapping(v));
    }
    Value::Mapping(top)
}

/// This binary, with `--root` when one was given; the child gets SIGTERM if compose dies.
fn kiln(root: Option<&PathBuf>) -> anyhow::Result<Command> {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(std::env::current_exe().context("finding the kiln binary")?);
    // Its own process group: a terminal's Ctrl-C reaches compose, which stops the services.
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    if let Some(r) = root {
        cmd.arg("--root").arg(r);
    }
    Ok(cmd)
}

/// The `kiln build` arguments of a service.
fn build_args(svc: &Service) -> anyhow::Result<(Vec<String>, Option<String>)> {
    let b = svc.build.as_ref().context("no build section")?;
    if !b.additional_contexts.is_empty() {
        bail!("build.additional_contexts is not supported by kiln yet");
    }
    let mut a: Vec<String> = vec!["build".into(), "--progress=plain".into()];
    let mut push = |flag: &str, v: &str| {
        a.push(flag.to_owned());
        a.push(v.to_owned());
    };
    push("-t", &svc.image);
    for t in &b.tags {
        push("-t", t);
    }
    let stdin = b.dockerfile_inline.clone();
    if stdin.is_some() {
        push("-f", "-");
    } else if let Some(f) = &b.dockerfile {
        push("-f", &b.context.join(f).to_string_lossy());
    }
    for (k, v) in &b.args {
        match v {
            Some(v) => push("--build-arg", &format!("{k}={v}")),
            None => push("--build-arg", k),
        }
    }
    if let Some(t) = &b.target {
        push("--target", t);
    }
    for (k, v) in &b.labels {
        push("--label", &format!("{k}={v}"));
    }
    for c in &b.cache_from {
        push("--cache-from", c);
    }
    for c in &b.cache_to {
        push("--cache-to", c);
    }
    for s in &b.secrets {
        push("--secret", s);
    }
    for s in &b.ssh {
        push("--ssh", s);
    }
    if let Some(n) = &b.network {
        push("--network", n);
    }
    if !b.platforms.is_empty() {
        push("--platform", &b.platforms.join(","));
    }
    a.push(b.context.to_string_lossy().into_owned());
    Ok((a, stdin))
}

/// Prints a child's output lines prefixed with `name`, as compose does.
fn relay(
    name: &str,
    width: usize,
    r: impl std::io::Read + Send + 'static,
    to_stderr: bool,
) -> std::thread::JoinHandle<()> {
    let prefix = format!("{name:<width$} | ");
    std::thread::spawn(move || {
        for line in BufReader::new(r).split(b'\n') {
            let Ok(line) = line else { break };
            let mut l = prefix.clone().into_bytes();
            l.extend_from_slice(&line);
            l.push(b'\n');
            let _ = if to_stderr {
                std::io::stderr().lock().write_all(&l)
            } else {
                std::io::stdout().lock().write_all(&l)
            };
        }
    })
}

/// Builds the selected services that have a `build` section, all at once.
fn build(
    root: Option<&PathBuf>,
    project: &Project,
    selected: &[String],
    extra: &[&str],
) -> anyhow::Result<ExitCode> {
    let to_build: Vec<&String> = selected
        .iter()
        .filter(|s| project.services[*s].build.is_some())
        .collect();
    let width = to_build.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut running = Vec::new();
    for name in &to_build {
        let svc = &project.services[*name];
        let (args, inline) = build_args(svc).with_context(|| format!("service {name}"))?;
        let mut cmd = kiln(root)?;
        cmd.args(&args[..2]).args(extra).args(&args[2..]);
        cmd.stdin(if inline.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("starting kiln build")?;
        if let (Some(text), Some(mut stdin)) = (inline, child.stdin.take()) {
            stdin.write_all(text.as_bytes())?;
        }
        let out = child.stdout.take().map(|o| relay(name, width, o, false));
        let err = child.stderr.take().map(|e| relay(name, width, e, true));
        running.push(((*name).clone(), child, out, err));
    }
    let mut failed = Vec::new();
    for (name, mut child, out, err) in running {
        let status = child.wait()?;
        for t in [out, err].into_iter().flatten() {
            let _ = t.join();
        }
        if !status.success() {
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        eprintln!("error: building {} failed", failed.join(", "));
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(yaml: &str) -> Project {
        let doc: Value = serde_yaml_ng::from_str(yaml).unwrap();
        compose_file::project(
            &doc,
            std::path::Path::new("/p"),
            None,
            &std::collections::BTreeMap::new(),
        )
        .unwrap()
    }

    #[test]
    fn services_start_after_what_they_depend_on() {
        let p = project(
            "services: {web: {image: w, depends_on: [api]}, api: {image: a, depends_on: [db]}, db: {image: d}, x: {image: x}}",
        );
        assert_eq!(select(&p, &[], true).unwrap(), ["db", "api", "web", "x"]);
        assert_eq!(
            select(&p, &["web".into()], true).unwrap(),
            ["db", "api", "web"]
        );
        assert_eq!(select(&p, &["web".into()], false).unwrap(), ["web"]);
        assert!(select(&p, &["nope".into()], true).is_err());
        let cyc =
            project("services: {a: {image: a, depends_on: [b]}, b: {image: b, depends_on: [a]}}");
        assert!(
            select(&cyc, &[], true)
                .unwrap_err()
                .to_string()
                .contains("cycle")
        );
    }

    #[test]
    fn build_and_run_flags_of_a_service() {
        let p = project(
            "services:\n  web:\n    build: {context: ./web, dockerfile: D, args: {V: '1'}, target: t, labels: {a: b}}\n    entrypoint: [sh, -c]\n    command: [echo hi]\n    environment: [A=1]\n    working_dir: /w\n    user: '1000'\n",
        );
        let (b, inline) = build_args(&p.services["web"]).unwrap();
        assert_eq!(
            b,
            [
                "build",
                "--progress=plain",
                "-t",
                "p-web",
                "-f",
                "/p/./web/D",
                "--build-arg",
                "V=1",
                "--target",
                "t",
                "--label",
                "a=b",
                "/p/./web"
            ]
        );
        assert!(inline.is_none());
        let r = up::run_args(&p.services["web"], &up::Net::Host(&["web".into()]), &|_| {
            None
        });
        assert_eq!(
            r,
            [
                "run",
                "--rm",
                "--network",
                "host",
                "--add-host",
                "web:127.0.0.1",
                "-e",
                "A=1",
                "-w",
                "/w",
                "-u",
                "1000",
                "--entrypoint",
                "sh",
                "p-web",
                "-c",
                "echo hi"
            ]
        );
    }
}
