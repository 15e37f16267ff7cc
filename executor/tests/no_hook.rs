//! An embedder whose `main` has no init hook (`harness = false`, so this file's `main` is the
//! whole program) and runs a RUN step with the executor re-executing this very binary. Before
//! the init shipped inside the library (an ELF constructor), the re-executed child ran this
//! `main` again, which ran the step again: an unbounded chain of processes. The supervisor
//! below runs the workload in its own process group, watches how many processes it has, and
//! pins that it builds quickly with a handful of processes.
//!
//! Also here, as they need their own `main` too: a marked child that reaches normal code fails
//! at once, and an init binary that never answers fails within the handshake time.

mod support;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_executor::{CancelToken, Error, Executor, ExecutorConfig, ProcessSpec, RootFs};

/// The workload: one RUN step in a busybox rootfs, init = this binary (the default config).
fn workload() -> i32 {
    workload_script("echo hello from RUN as $(id -u)")
}

/// [`workload`] running `script`.
fn workload_script(script: &str) -> i32 {
    // A thread of the embedder's own, running before and during the build (as a
    // `#[tokio::main]` runtime's workers would be).
    std::thread::spawn(|| {
        loop {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    match std::env::var_os("NO_HOOK_BUSYBOX") {
        Some(busybox) => support::build_busybox_rootfs_with(&root, std::path::Path::new(&busybox)),
        None => support::build_busybox_rootfs(&root),
    }
    let executor = match Executor::new(ExecutorConfig::new(dir.path().join("state"))) {
        Ok(e) => e,
        Err(e) => {
            println!("executor: {e}");
            return 3;
        }
    };
    let spec = ProcessSpec {
        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
        // The step's USER (tests of the user namespace set it).
        user: std::env::var("NO_HOOK_USER").unwrap_or_default(),
        network: match std::env::var("NO_HOOK_NETWORK").as_deref() {
            Ok("private") => kiln_executor::Network::Private,
            _ => kiln_executor::Network::Default,
        },
        ..ProcessSpec::default()
    };
    let mut out = Vec::new();
    let result = executor.run(
        &spec,
        &RootFs::Dir(root),
        &[],
        &mut |_, line| out.extend_from_slice(line),
        &CancelToken::new(),
    );
    print!("{}", String::from_utf8_lossy(&out));
    let left = std::fs::read_dir(dir.path().join("state/executor")).map_or(0, Iterator::count);
    println!("run directories left: {left}");
    match result {
        Ok(status) => {
            println!("status {}", status.code());
            0
        }
        Err(e) => {
            println!("error: {e}");
            4
        }
    }
}

/// How many live processes are in process group `pgid`.
fn processes_in_group(pgid: i32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid pgrp ...; comm may hold spaces, so split after the `)`.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(2))
                .and_then(|p| p.parse::<i32>().ok())
                == Some(pgid)
        })
        .count()
}

/// Runs this binary's workload in its own process group; kills the group on a runaway.
fn no_hook_main_runs_a_step_without_recursing() {
    const TEST: &str = "no_hook_main_runs_a_step_without_recursing";
    if support::skip_reason_for(TEST) {
        return;
    }
    let mut child = Command::new("/proc/self/exe")
        .arg("--workload")
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn workload");
    let pgid = i32::try_from(child.id()).expect("pid");
    let started = Instant::now();
    let mut most = 0;
    let status = loop {
        most = most.max(processes_in_group(pgid));
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if most > 20 || started.elapsed() > Duration::from_secs(30) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    // SAFETY: kill(2) of our own child's process group.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
    let mut out = String::new();
    let _ = child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out);
    let Some(status) = status else {
        panic!("runaway: {most} processes in the workload's group after {elapsed:?}\n{out}");
    };
    assert!(status.success(), "{status}: {out}");
    assert_eq!(
        out,
        "hello from RUN as 0\nrun directories left: 0\nstatus 0\n"
    );
    // The workload, its init, the container's PID 1 (and a short-lived `id`).
    assert!(most <= 5, "{most} processes in the workload's group");
    println!("test {TEST} ... ok ({elapsed:?}, at most {most} processes)");
}

/// A process carrying the init mark that reaches `Executor::new` (as a `main` would whose
/// init constructor did not run) reports over its stdin socket and exits 125 at once.
fn marked_process_reaching_normal_code_fails_at_once() {
    const TEST: &str = "marked_process_reaching_normal_code_fails_at_once";
    let (parent, child_end) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let started = Instant::now();
    let out = Command::new("/proc/self/exe")
        .arg("--workload")
        .env("KILN_EXECUTOR_INIT_OF", std::process::id().to_string())
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(child_end)))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // Nothing of the workload ran: no output of its own.
    assert_eq!(out.stdout, b"");
    let mut report = String::new();
    (&parent).read_to_string(&mut report).expect("read report");
    assert!(report.starts_with("{\"Failed\":"), "{report}");
    assert!(
        report.contains(&format!(
            "was started as the container init of kiln process {} but ran its own main",
            std::process::id()
        )),
        "{report}"
    );
    // A mark that is not the parent's (stale, set by hand) is ignored: the workload runs.
    let out = Command::new("/proc/self/exe")
        .arg("--workload")
        .env("KILN_EXECUTOR_INIT_OF", "1")
        .output()
        .expect("run");
    assert_ne!(out.status.code(), Some(125), "{out:?}");
    assert!(report.contains("init_main_if_requested"), "{report}");
    println!("test {TEST} ... ok");
}

/// An init binary that runs but never becomes the init (here: a script that sleeps) is killed
/// and reported within the handshake time; one that exits at once is reported as such.
fn init_binary_without_handshake_fails_within_two_seconds() {
    const TEST: &str = "init_binary_without_handshake_fails_within_two_seconds";
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    for (name, body) in [("sleeper", "sleep 30"), ("quitter", "exit 0")] {
        let script = dir.path().join(name);
        std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let executor = Executor::new(ExecutorConfig {
            init_binary: script.clone(),
            state_dir: dir.path().join("state"),
        })
        .expect("executor");
        let spec = ProcessSpec {
            args: vec!["/bin/true".into()],
            ..ProcessSpec::default()
        };
        let started = Instant::now();
        let err = executor
            .run(
                &spec,
                &RootFs::Dir(root.clone()),
                &[],
                &mut |_, _| {},
                &CancelToken::new(),
            )
            .expect_err("not an init");
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(3), "{name}: {elapsed:?}");
        assert!(matches!(err, Error::InitNotStarted { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "container init `{}` did not start: ",
                script.display()
            )),
            "{text}"
        );
        if name == "sleeper" {
            assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
            assert!(
                text.contains("no handshake within 2 s, so it was killed"),
                "{text}"
            );
        } else {
            assert!(text.contains("without the kiln init handshake"), "{text}");
        }
        assert!(text.contains("init_main_if_requested()"), "{text}");
    }
    println!("test {TEST} ... ok");
}

/// Inside a fresh mount namespace, a chroot into a plain directory (host dirs bound under it,
/// its `/` not a mount point): the workload's RUN step works, and no mount of it is left in
/// that namespace afterwards. Before, every RUN failed with `mount make / rprivate: Invalid
/// argument`.
fn run_step_in_a_chroot_whose_root_is_not_a_mount_point() {
    const TEST: &str = "run_step_in_a_chroot_whose_root_is_not_a_mount_point";
    if support::skip_reason_for(TEST)
        || !kiln_testkit::require_tool(TEST, "unshare", "util-linux")
        || !kiln_testkit::require_tool(TEST, "chroot", "coreutils")
    {
        return;
    }
    let chroot = tempfile::tempdir().expect("tempdir");
    let exe = std::fs::read_link("/proc/self/exe").expect("own path");
    let script = r#"
        cd "$1"
        mkdir usr etc dev proc sys tmp
        for l in bin lib lib64 sbin; do ln -s usr/$l $l; done
        for d in usr etc dev proc sys; do mount --rbind /$d $d; done
        touch probe && mount --bind "$2" probe
        if [ "$(stat -c %m .)" = "$PWD" ]; then echo "chroot dir is a mount point"; exit 7; fi
        chroot . /probe --workload
        if grep -q /executor/run- /proc/self/mountinfo; then echo "run mount left"; exit 8; fi
    "#;
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-ec",
            script,
            "sh",
        ])
        .arg(chroot.path())
        .arg(&exe)
        .output()
        .expect("unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}: {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "hello from RUN as 0\nrun directories left: 0\nstatus 0\n"
    );
    println!("test {TEST} ... ok");
}

/// The child side of [`in_user_namespace`]: unshares a user and mount namespace (this `main`
/// is single-threaded), says so on stdout, waits on stdin until the parent wrote its maps,
/// becomes uid/gid 0 there and runs `script` as the workload does.
fn userns_child(script: &str) -> i32 {
    use std::io::{BufRead, Write};
    // SAFETY: plain syscall in a single-threaded process.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
        println!("unshare: {}", std::io::Error::last_os_error());
        return 5;
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    // SAFETY: plain syscalls; ids 0 are mapped now.
    unsafe {
        if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
            println!("setresuid: {}", std::io::Error::last_os_error());
            return 6;
        }
    }
    // `NO_HOOK_TUN`: bind this node over /dev/net/tun, or (`missing`) hide /dev/net, in this
    // namespace only.
    if let Ok(tun) = std::env::var("NO_HOOK_TUN") {
        let c = |s: &str| std::ffi::CString::new(s).expect("path");
        let (source, target, fstype, flags) = if tun == "missing" {
            (c("tmpfs"), c("/dev/net"), Some(c("tmpfs")), 0)
        } else {
            (c(&tun), c("/dev/net/tun"), None, libc::MS_BIND)
        };
        // SAFETY: valid C strings; a mount namespace of this process' own.
        let ret = unsafe {
            libc::mount(
                c("none").as_ptr(),
                c("/").as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            );
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
                flags,
                std::ptr::null(),
            )
        };
        if ret != 0 {
            println!("mount {tun}: {}", std::io::Error::last_os_error());
            return 7;
        }
    }
    workload_script(script)
}

/// Runs this binary with `--userns-child SCRIPT` in a new user namespace whose maps are
/// `map` (`inside outside count`, also for gids); `deny_setgroups` as an unprivileged
/// single-id map has it. Returns the status and stdout.
fn in_user_namespace(map: &str, deny_setgroups: bool, script: &str) -> (i32, String) {
    in_user_namespace_as(map, deny_setgroups, script, "")
}

/// [`in_user_namespace`] with the step's USER.
fn in_user_namespace_as(
    map: &str,
    deny_setgroups: bool,
    script: &str,
    user: &str,
) -> (i32, String) {
    in_user_namespace_with(map, deny_setgroups, script, &[("NO_HOOK_USER", user)])
}

/// [`in_user_namespace`] with `env` for the child (`NO_HOOK_USER`, `NO_HOOK_BUSYBOX`).
fn in_user_namespace_with(
    map: &str,
    deny_setgroups: bool,
    script: &str,
    env: &[(&str, &str)],
) -> (i32, String) {
    use std::io::{BufRead, BufReader, Write};
    let mut child = Command::new("/proc/self/exe")
        .args(["--userns-child", script])
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("ready");
    assert_eq!(line, "ready\n", "child did not enter a user namespace");
    let proc_dir = format!("/proc/{}", child.id());
    if deny_setgroups {
        std::fs::write(format!("{proc_dir}/setgroups"), "deny").expect("setgroups");
    }
    std::fs::write(format!("{proc_dir}/uid_map"), map).expect("uid_map");
    std::fs::write(format!("{proc_dir}/gid_map"), map).expect("gid_map");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").expect("go");
    drop(stdin);
    let mut out = String::new();
    stdout.read_to_string(&mut out).expect("read");
    let status = child.wait().expect("wait");
    (status.code().unwrap_or(-1), out)
}

/// The executor inside a user namespace, as a rootless build runs it: with a subordinate range
/// mapped (uid 0 is 100000 outside, 65536 ids) steps run as root and as other users; with a
/// single id mapped, a step as root works and one needing another id fails naming
/// /etc/subuid and the command that adds a range.
fn run_steps_in_a_user_namespace() {
    const TEST: &str = "run_steps_in_a_user_namespace";
    if support::skip_reason_for(TEST) {
        return;
    }
    let ids = "echo uid $(id -u) gid $(id -g); touch /f; chown 1000:1000 /f; stat -c '%u:%g' /f; \
               ls /sys/kernel >/dev/null && echo sys ok; cat /proc/self/uid_map | tr -s ' '";
    let (code, out) = in_user_namespace("0 100000 65536", false, ids);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "uid 0 gid 0\n1000:1000\nsys ok\n 0 100000 65536\nrun directories left: 0\nstatus 0\n"
    );
    let (code, out) = in_user_namespace("0 100000 1", true, "echo uid $(id -u); ls /dev/pts");
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "uid 0\nptmx\nrun directories left: 0\nstatus 0\n");
    // A step that chowns to an unmapped id fails, and the output says why and what to do.
    // USER 1000 cannot exist with one id: the step fails before it starts, saying why.
    let (code, out) = in_user_namespace_as("0 100000 1", true, "id", "1000");
    assert_eq!(code, 4, "{out}");
    assert!(
        out.starts_with("run directories left: 0\nerror: user `1000` needs uid 1000, which kiln's user namespace does not map: kiln runs rootless with only one id mapped"),
        "{out}"
    );
    assert!(out.contains("/etc/subuid"), "{out}");
    // With the range, USER 1000 runs as 1000.
    let (code, out) = in_user_namespace_as("0 100000 65536", false, "id -u", "1000");
    assert_eq!(
        (code, out.as_str()),
        (0, "1000\nrun directories left: 0\nstatus 0\n")
    );
    let (_, out) = in_user_namespace("0 100000 1", true, "touch /f && chown 1000 /f");
    assert!(out.ends_with("status 1\n"), "{out}");
    assert!(out.contains("only one id mapped"), "{out}");
    assert!(out.contains("/etc/subuid"), "{out}");
    assert!(
        out.contains("usermod --add-subuids 100000-165535 --add-subgids 100000-165535"),
        "{out}"
    );
    println!("test {TEST} ... ok");
}

/// A step of an arm64 rootfs in a user namespace (as rootless builds run): the host's F
/// binfmt handler serves it there too.
fn arm64_step_in_a_user_namespace() {
    const TEST: &str = "arm64_step_in_a_user_namespace";
    if support::skip_reason_for(TEST) {
        return;
    }
    match kiln_executor::emulation("arm64", None) {
        Ok(kiln_executor::Emulation::Binfmt { .. }) => {}
        Ok(kiln_executor::Emulation::Native) => {
            kiln_testkit::skip(TEST, "this machine is arm64: nothing to emulate");
            return;
        }
        Err(e) => {
            kiln_testkit::skip(TEST, &e.to_string());
            return;
        }
    }
    let Some(busybox) = support::arm64_busybox(TEST) else {
        return;
    };
    let busybox = busybox.to_string_lossy().into_owned();
    for (map, deny_setgroups) in [("0 100000 65536", false), ("0 100000 1", true)] {
        let (code, out) = in_user_namespace_with(
            map,
            deny_setgroups,
            "uname -m; id -u; cat /proc/self/uid_map | tr -s ' '",
            &[("NO_HOOK_BUSYBOX", &busybox)],
        );
        assert_eq!(
            (code, out),
            (
                0,
                format!("aarch64\n0\n {map}\nrun directories left: 0\nstatus 0\n")
            ),
            "{map}"
        );
    }
    println!("test {TEST} ... ok");
}

/// Rootless, slirp4netns (the private network of RUN) must open /dev/net/tun: when it is mode
/// 0600 or missing, the run fails before it starts, saying what to do. Before, it failed with
/// `slirp4netns exited before the network was up`.
fn private_network_without_a_usable_tun_says_what_to_do() {
    const TEST: &str = "private_network_without_a_usable_tun_says_what_to_do";
    if support::skip_reason_for(TEST)
        || !kiln_testkit::require_tool(TEST, "slirp4netns", "slirp4netns")
    {
        return;
    }
    if !std::path::Path::new(kiln_executor::TUN_DEVICE).exists() {
        kiln_testkit::skip(TEST, "needs /dev/net/tun");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let tun = dir.path().join("tun");
    support::mknod(&tun, libc::S_IFCHR, 10, 200);
    std::fs::set_permissions(&tun, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let tun = tun.to_string_lossy().into_owned();
    let map = "0 100000 65536";
    let (code, out) = in_user_namespace_with(
        map,
        false,
        "echo reached",
        &[("NO_HOOK_NETWORK", "private"), ("NO_HOOK_TUN", &tun)],
    );
    assert_eq!(
        (code, out.as_str()),
        (
            4,
            "run directories left: 0\nerror: the private network of RUN steps (slirp4netns) \
             needs /dev/net/tun, but this user cannot open /dev/net/tun (mode 0600): run \
             `chmod 0666 /dev/net/tun` as root (Debian's default mode; containers often leave \
             it 0600); or build with --network=host or --network=none\n"
        )
    );
    let (code, out) = in_user_namespace_with(
        map,
        false,
        "echo reached",
        &[("NO_HOOK_NETWORK", "private"), ("NO_HOOK_TUN", "missing")],
    );
    assert_eq!(
        (code, out.as_str()),
        (
            4,
            "run directories left: 0\nerror: the private network of RUN steps (slirp4netns) \
             needs /dev/net/tun, but /dev/net/tun does not exist here: create it as root \
             (mkdir -p /dev/net && mknod -m 0666 /dev/net/tun c 10 200); or build with \
             --network=host or --network=none\n"
        )
    );
    // A device this user may open (0666, as Debian and scripts/rootless.sh leave it): the step
    // runs on its own network.
    std::fs::set_permissions(
        dir.path().join("tun"),
        std::fs::Permissions::from_mode(0o666),
    )
    .expect("chmod");
    let (code, out) = in_user_namespace_with(
        map,
        false,
        "ls /sys/class/net | sort | tr '\\n' ' '",
        &[("NO_HOOK_NETWORK", "private"), ("NO_HOOK_TUN", &tun)],
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "lo tap0 run directories left: 0\nstatus 0\n")
    );
    println!("test {TEST} ... ok");
}

fn main() {
    // Deliberately no `kiln_executor::init_main_if_requested()` here.
    match std::env::args().nth(1).as_deref() {
        // Run as the supervisor by `cargo test` (maybe with harness flags such as --nocapture).
        None => {}
        Some("--userns-child") => {
            let script = std::env::args().nth(2).unwrap_or_default();
            std::process::exit(userns_child(&script));
        }
        Some(flag) if flag.starts_with('-') && flag != "--workload" => {}
        // The workload, or (before the fix) this main re-executed as the init: the embedder's
        // main does its build again.
        Some(_) => std::process::exit(workload()),
    }
    marked_process_reaching_normal_code_fails_at_once();
    init_binary_without_handshake_fails_within_two_seconds();
    no_hook_main_runs_a_step_without_recursing();
    run_step_in_a_chroot_whose_root_is_not_a_mount_point();
    run_steps_in_a_user_namespace();
    arm64_step_in_a_user_namespace();
    private_network_without_a_usable_tun_says_what_to_do();
}
