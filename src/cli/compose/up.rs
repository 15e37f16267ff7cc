//! `kiln compose up`: the services as `kiln run` children (each in its own process group, so a
//! terminal's Ctrl-C reaches compose only), started in `depends_on` order once each dependency's
//! condition holds (started, healthy, completed successfully). As root every service gets its
//! own network namespace on the project's bridge (the `net` module), names in /etc/hosts; as a
//! non-root user (no bridge without root) they share the host's network with names resolving to
//! 127.0.0.1, so two services cannot listen on one port. `ports:` are forwarded from the host
//! port by compose itself. Named volumes are directories under the state dir's `volumes/`.
//! SIGINT/SIGTERM stop them all (SIGTERM, a second SIGTERM after 10 s, SIGKILL after 15 s).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::health::{Monitor, State};
use super::net::{Endpoint, ProjectNet};
use super::{build, kiln, relay, select};
use crate::cli::compose_file::{Condition, Health, Project, Service};

/// Where a named volume's data lives: `STATE/volumes/NAME/_data` (docker's layout).
pub(super) fn volume_dir(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("volumes").join(name).join("_data")
}

/// How a service is networked.
pub(super) enum Net<'a> {
    /// Its own namespace on the project network: every service's name and address.
    Bridge(&'a [(String, String)]),
    /// The host's network, service names on 127.0.0.1 (no root, or `network_mode: host`).
    Host(&'a [String]),
    /// `network_mode: none`.
    None,
}

/// The `kiln run` arguments of a service; a named volume's source is its directory.
pub(super) fn run_args(
    svc: &Service,
    net: &Net<'_>,
    volumes: &dyn Fn(&str) -> Option<PathBuf>,
) -> Vec<String> {
    let mut a: Vec<String> = vec!["run".into(), "--rm".into(), "--network".into()];
    match net {
        // The namespace compose made is the `kiln run` process's own: its "host" network.
        Net::Bridge(hosts) => {
            a.push("host".into());
            for (n, ip) in *hosts {
                a.push("--add-host".into());
                a.push(format!("{n}:{ip}"));
            }
        }
        Net::Host(names) => {
            a.push("host".into());
            for n in *names {
                a.push("--add-host".into());
                a.push(format!("{n}:127.0.0.1"));
            }
        }
        Net::None => a.push("none".into()),
    }
    for e in &svc.environment {
        a.push("-e".into());
        a.push(e.clone());
    }
    if let Some(w) = &svc.working_dir {
        a.push("-w".into());
        a.push(w.clone());
    }
    if let Some(u) = &svc.user {
        a.push("-u".into());
        a.push(u.clone());
    }
    for v in &svc.volumes {
        a.push("-v".into());
        match v.split_once(':') {
            Some((src, rest)) if !src.starts_with('/') => match volumes(src) {
                Some(dir) => a.push(format!("{}:{rest}", dir.display())),
                None => a.push(v.clone()),
            },
            _ => a.push(v.clone()),
        }
    }
    let mut rest = Vec::new();
    if let Some(ep) = &svc.entrypoint {
        a.push("--entrypoint".into());
        a.push(ep.first().cloned().unwrap_or_default());
        rest.extend(ep.iter().skip(1).cloned());
    }
    a.push(svc.image.clone());
    rest.extend(svc.command.iter().flatten().cloned());
    a.extend(rest);
    a
}

/// The arguments of one healthcheck probe: the service's run without its command, the probe's
/// argv instead (entrypoint cleared).
fn probe_args(mut run: Vec<String>, svc: &Service, argv: &[String]) -> Vec<String> {
    let image_at = run
        .iter()
        .rposition(|a| *a == svc.image)
        .unwrap_or(run.len());
    run.truncate(image_at);
    if let Some(p) = run.iter().position(|a| a == "--entrypoint") {
        run.drain(p..p + 2);
    }
    run.extend(["--entrypoint".into(), String::new(), svc.image.clone()]);
    run.extend(argv.iter().cloned());
    run
}

/// Makes `cmd` enter `netns` before it runs.
fn enter(cmd: &mut Command, netns: &std::fs::File) {
    use std::os::unix::process::CommandExt as _;
    let fd = netns.as_raw_fd();
    // SAFETY: setns is async-signal-safe; `fd` outlives the spawn (the caller holds the file).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Forwards TCP connections from `listen` to `target` until the process exits.
fn forward(listen: std::net::TcpListener, target: SocketAddr) {
    std::thread::spawn(move || {
        for conn in listen.incoming() {
            let Ok(client) = conn else { continue };
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                // The service may still be starting: retry its port for a while.
                let server = loop {
                    match std::net::TcpStream::connect(target) {
                        Ok(s) => break s,
                        Err(_) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        Err(_) => return,
                    }
                };
                let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                    return;
                };
                let (mut c, mut s) = (client, server);
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut s, &mut c);
                let _ = c.shutdown(std::net::Shutdown::Write);
                let _ = up.join();
            });
        }
    });
}

/// A status line on stderr; a closed stderr is no reason to stop (services keep running).
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id().cast_signed()) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// The running services and what they exited with.
#[derive(Default)]
struct Services {
    running: Vec<(String, Child)>,
    codes: BTreeMap<String, i32>,
    health: BTreeMap<String, Monitor>,
}

impl Services {
    /// Notes the services that exited.
    fn reap(&mut self) {
        let codes = &mut self.codes;
        self.running
            .retain_mut(|(name, child)| match child.try_wait() {
                Ok(Some(status)) => {
                    let code = status.code().unwrap_or(137);
                    say(&format!("{name} exited with code {code}"));
                    codes.insert(name.clone(), code);
                    false
                }
                Ok(None) => true,
                Err(_) => false,
            });
    }

    /// Waits until `svc`'s dependencies meet their conditions; the error is compose's message.
    fn wait_for(&mut self, project: &Project, svc: &Service) -> Result<(), String> {
        loop {
            self.reap();
            if super::super::signals::exit_status().is_some() {
                return Ok(());
            }
            let mut ready = true;
            for dep in &svc.depends_on {
                let container = format!("{}-{dep}-1", project.name);
                let cond = svc.conditions.get(dep).copied().unwrap_or_default();
                let exited = self.codes.get(dep).copied();
                match cond {
                    Condition::Started => {}
                    Condition::CompletedSuccessfully => match exited {
                        Some(0) => {}
                        Some(code) => {
                            return Err(format!(
                                "service {dep:?} didn't complete successfully: exit {code}"
                            ));
                        }
                        None => ready = false,
                    },
                    Condition::Healthy => match self.health.get(dep).map(Monitor::state) {
                        None => {
                            return Err(format!(
                                "dependency failed to start: container {container} has no healthcheck configured"
                            ));
                        }
                        Some(State::Healthy) => {}
                        Some(State::Unhealthy) => {
                            return Err(format!(
                                "dependency failed to start: container {container} is unhealthy"
                            ));
                        }
                        Some(State::Starting) => match exited {
                            Some(code) => {
                                return Err(format!(
                                    "dependency failed to start: container {container} exited ({code})"
                                ));
                            }
                            None => ready = false,
                        },
                    },
                }
            }
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops every running service: SIGTERM, again after 10 s (`kiln run` then kills its
    /// container), SIGKILL after 15 s; waits for all.
    fn stop(&mut self) {
        self.health.clear();
        self.reap();
        if self.running.is_empty() {
            return;
        }
        say("Gracefully stopping... (press Ctrl+C again to force)");
        for (_, c) in &self.running {
            signal(c, rustix::process::Signal::TERM);
        }
        let t0 = Instant::now();
        let mut again = false;
        while !self.running.is_empty() {
            if t0.elapsed() > Duration::from_secs(15) {
                for (_, c) in &mut self.running {
                    let _ = c.kill();
                }
            } else if (t0.elapsed() > Duration::from_secs(10)) && !again {
                for (_, c) in &self.running {
                    signal(c, rustix::process::Signal::TERM);
                }
                again = true;
            }
            std::thread::sleep(Duration::from_millis(100));
            self.reap();
        }
    }
}

/// `kiln compose up`.
pub(super) fn up(
    root: Option<&PathBuf>,
    project: &Project,
    names: &[String],
    force_build: bool,
    no_build: bool,
) -> anyhow::Result<ExitCode> {
    let selected = select(project, names, true)?;
    // Build what has a build section and is missing (or everything with --build).
    let state_dir = root
        .cloned()
        .unwrap_or_else(super::super::default_state_dir);
    let store = kiln_solver::open_content_store(&state_dir)
        .with_context(|| format!("opening the image store in {}", state_dir.display()))?;
    let platform = kiln_image::Platform::host();
    let find = |svc: &Service| super::super::images::find_image(&store, &svc.image, &platform);
    let missing: Vec<String> = selected
        .iter()
        .filter(|s| {
            let svc = &project.services[*s];
            svc.build.is_some() && (force_build || find(svc).is_err())
        })
        .cloned()
        .collect();
    if !missing.is_empty() {
        if no_build {
            bail!("images to build with --no-build: {}", missing.join(", "));
        }
        let code = build(root, project, &missing, &[])?;
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
    }
    let cancel = kiln::CancelHandle::new();
    super::super::signals::cancel_on_signals(cancel).context("installing signal handlers")?;

    // The project network (as root) and each service's place on it.
    let bridged: Vec<&String> = selected
        .iter()
        .filter(|s| project.services[*s].network_mode.is_none())
        .collect();
    // Real root: a rootless kiln is uid 0 in its user namespace, without the host's network.
    let root_user = rustix::process::geteuid().is_root() && !kiln_userns::in_user_namespace();
    let mut net = None;
    let mut endpoints: BTreeMap<String, Endpoint> = BTreeMap::new();
    if root_user && !bridged.is_empty() {
        let n = net.insert(ProjectNet::create()?);
        for (i, name) in bridged.iter().enumerate() {
            endpoints.insert((*name).clone(), n.add(i)?);
        }
    } else if !bridged.is_empty() {
        say(
            "warning: rootless: the services share the host's network (a bridge on the host \
             needs root), each service name resolves to 127.0.0.1 and two services cannot use \
             the same port",
        );
    }
    let mut hosts: Vec<(String, String)> = Vec::new();
    for (name, e) in &endpoints {
        hosts.push((name.clone(), e.ip.to_string()));
        hosts.push((format!("{}-{name}-1", project.name), e.ip.to_string()));
    }
    let all: Vec<String> = project.services.keys().cloned().collect();
    for name in project.volumes.values() {
        let dir = volume_dir(&state_dir, name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating volume {name} in {}", dir.display()))?;
    }
    let volumes = |key: &str| project.volumes.get(key).map(|n| volume_dir(&state_dir, n));

    let width = selected.iter().map(String::len).max().unwrap_or(0);
    let mut services = Services::default();
    let mut relays = Vec::new();
    let mut failure = None;
    for name in &selected {
        let svc = &project.services[name];
        if let Err(message) = services.wait_for(project, svc) {
            failure = Some(message);
            break;
        }
        if super::super::signals::exit_status().is_some() {
            break;
        }
        let endpoint = endpoints.get(name);
        let net_mode = match (svc.network_mode.as_deref(), endpoint) {
            (Some("none"), _) => Net::None,
            (None, Some(_)) => Net::Bridge(&hosts),
            _ => Net::Host(&all),
        };
        for (ip, host, ctr) in &svc.ports {
            let target = match endpoint {
                Some(e) => SocketAddr::from((e.ip, *ctr)),
                // On the host's network the service's own port is already the host's.
                None if host == ctr || *host == 0 => continue,
                None => SocketAddr::from(([127, 0, 0, 1], *ctr)),
            };
            let l = std::net::TcpListener::bind((ip.as_str(), *host))
                .with_context(|| format!("service {name}: publishing port {ip}:{host}"))?;
            if *host == 0 {
                // An ephemeral port, shown as `docker compose port` shows it.
                let at = l.local_addr().context("the published port")?;
                say(&format!("{}-{name}-1 {ctr}/tcp -> {at}", project.name));
            }
            forward(l, target);
        }
        say(&format!("Starting {}-{name}-1", project.name));
        let args = run_args(svc, &net_mode, &volumes);
        let mut cmd = kiln(root)?;
        cmd.args(&args);
        if let Some(e) = endpoint {
            enter(&mut cmd, &e.netns);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting kiln run")?;
        relays.extend(child.stdout.take().map(|o| relay(name, width, o, false)));
        relays.extend(child.stderr.take().map(|e| relay(name, width, e, true)));
        services.running.push((name.clone(), child));
        // A healthcheck runs when a service waits on it.
        let image_health = find(svc)
            .ok()
            .and_then(|i| i.config.config.healthcheck.clone());
        let waited_on = project
            .services
            .values()
            .any(|s| s.conditions.get(name) == Some(&Condition::Healthy));
        if waited_on
            && let Some(probe) = Health::probe(svc.healthcheck.as_ref(), image_health.as_ref())
        {
            let probe_run = probe_args(args.clone(), svc, &probe.argv);
            let netns = endpoint.map(|e| e.netns.try_clone()).transpose()?;
            let root = root.cloned();
            services.health.insert(
                name.clone(),
                Monitor::start(probe, move || {
                    let mut c = kiln(root.as_ref()).ok()?;
                    c.args(&probe_run);
                    if let Some(ns) = &netns {
                        enter(&mut c, ns);
                    }
                    Some(c)
                }),
            );
        }
    }
    // Wait for every service to exit, or for a signal or a failed dependency to stop them.
    if failure.is_none() {
        loop {
            services.reap();
            if services.running.is_empty() || super::super::signals::exit_status().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    services.stop();
    for r in relays {
        let _ = r.join();
    }
    drop(endpoints);
    drop(net);
    if let Some(message) = failure {
        say(&format!("error: {message}"));
        return Ok(ExitCode::from(1));
    }
    if let Some(code) = super::super::signals::exit_status() {
        return Ok(ExitCode::from(code));
    }
    Ok(if services.codes.values().all(|c| *c == 0) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `kiln compose down [-v]`: nothing outlives `up` but named volumes (and what a killed `up`
/// left on the network, removed by the next `up`); `-v` removes the project's volumes.
pub(super) fn down(root: Option<&PathBuf>, project: &Project, volumes: bool) -> ExitCode {
    if !volumes {
        return ExitCode::SUCCESS;
    }
    let state_dir = root
        .cloned()
        .unwrap_or_else(super::super::default_state_dir);
    let mut code = ExitCode::SUCCESS;
    for name in project.volumes.values() {
        let dir = state_dir.join("volumes").join(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => say(&format!("Volume {name} Removed")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                say(&format!(
                    "error: removing volume {name} ({}): {e}",
                    dir.display()
                ));
                code = ExitCode::from(1);
            }
        }
    }
    code
}
