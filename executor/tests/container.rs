//! The container itself: process, identity, isolation, exit codes and output, in a real busybox
//! rootfs on a real overlay mount.

mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kiln_executor::{CancelToken, Error, Network, ProcessSpec, Stream};
use support::{Fixture, require_env, tree};

#[test]
fn exit_code_and_output_lines() {
    require_env!();
    let f = Fixture::new();
    let out = f.sh(
        "echo one; echo two >&2; echo three; exit 3",
        ProcessSpec::default(),
        &[],
    );
    assert_eq!(out.code(), 3);
    assert_eq!(out.stdout, "one\nthree\n");
    assert_eq!(out.stderr, "two\n");
    let out = f.sh("true", ProcessSpec::default(), &[]);
    assert_eq!(out.code(), 0);
}

#[test]
fn failing_command_reports_code_and_last_lines() {
    require_env!();
    let f = Fixture::new();
    let out = f.sh(
        "for i in $(seq 1 30); do echo line $i; done; echo boom >&2; exit 42",
        ProcessSpec::default(),
        &[],
    );
    let status = out.status.expect("status");
    assert!(!status.success());
    assert_eq!(status.code(), 42);
    let last = status.last_lines();
    assert_eq!(last.len(), kiln_executor::LAST_LINES);
    assert_eq!(last.last().map(String::as_str), Some("boom"));
    assert_eq!(last[last.len() - 2], "line 30");
    let args: Vec<String> = ["/bin/sh", "-c", "exit 42"].map(String::from).to_vec();
    match status.check(&args) {
        Err(e @ Error::ProcessFailed { .. }) => assert_eq!(
            e.to_string(),
            "process \"/bin/sh -c exit 42\" did not complete successfully: exit code: 42"
        ),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn env_has_default_path_home_and_given_values() {
    require_env!();
    let f = Fixture::new();
    let out = f.sh(
        "env | sort",
        ProcessSpec {
            env: vec!["FOO=bar baz".into(), "EMPTY=".into()],
            ..ProcessSpec::default()
        },
        &[],
    );
    let lines: Vec<&str> = out.ok().lines().collect();
    assert!(lines.contains(&"FOO=bar baz"), "{lines:?}");
    assert!(lines.contains(&"EMPTY="), "{lines:?}");
    assert!(lines.contains(&"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
    assert!(lines.contains(&"HOME=/root"), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.starts_with("HOSTNAME=")),
        "{lines:?}"
    );

    let out = f.sh(
        "echo $PATH; echo $HOME",
        ProcessSpec {
            env: vec!["PATH=/bin".into(), "HOME=/x".into()],
            ..ProcessSpec::default()
        },
        &[],
    );
    assert_eq!(out.ok(), "/bin\n/x\n");
}

#[test]
fn exec_form_looks_up_path_and_reports_missing_binaries() {
    require_env!();
    let f = Fixture::new();
    let out = f.run(
        &ProcessSpec {
            args: vec!["echo".into(), "a  b".into(), "$HOME".into()],
            ..ProcessSpec::default()
        },
        &[],
    );
    assert_eq!(out.ok(), "a  b $HOME\n");
    let err = f
        .executor
        .run(
            &ProcessSpec {
                args: vec!["nonexistent-tool".into()],
                ..ProcessSpec::default()
            },
            &f.rootfs(),
            &[],
            &mut |_, _| {},
            &CancelToken::new(),
        )
        .expect_err("missing binary");
    assert_eq!(
        err.to_string(),
        "exec: \"nonexistent-tool\": executable file not found in $PATH"
    );
}

#[test]
fn user_forms_resolve_like_buildkit() {
    require_env!();
    let f = Fixture::new();
    let id = |user: &str| {
        f.sh(
            "id",
            ProcessSpec {
                user: user.into(),
                ..ProcessSpec::default()
            },
            &[],
        )
        .ok()
        .trim()
        .to_owned()
    };
    assert_eq!(id(""), "uid=0(root) gid=0(root) groups=0(root)");
    assert_eq!(
        id("alice"),
        "uid=1000(alice) gid=1000(alice) groups=10(wheel),999(docker),1000(alice)"
    );
    assert_eq!(
        id("bob"),
        "uid=1001(bob) gid=100(users) groups=100(users),999(docker)"
    );
    assert_eq!(
        id("alice:users"),
        "uid=1000(alice) gid=100(users) groups=100(users)"
    );
    assert_eq!(id("1001"), "uid=1001(bob) gid=1001 groups=1001");
    assert_eq!(
        id("1000:10"),
        "uid=1000(alice) gid=10(wheel) groups=10(wheel)"
    );
    assert_eq!(id("4242:4343"), "uid=4242 gid=4343 groups=4343");
    let out = f.sh(
        "echo $HOME",
        ProcessSpec {
            user: "alice".into(),
            ..ProcessSpec::default()
        },
        &[],
    );
    assert_eq!(out.ok(), "/home/alice\n");

    let err = f
        .executor
        .run(
            &ProcessSpec {
                args: vec!["id".into()],
                user: "mallory".into(),
                ..ProcessSpec::default()
            },
            &f.rootfs(),
            &[],
            &mut |_, _| {},
            &CancelToken::new(),
        )
        .expect_err("unknown user");
    assert_eq!(
        err.to_string(),
        "unable to find user mallory: no matching entries in passwd file"
    );
}

#[test]
fn workdir_is_created_owned_by_the_user_and_kept() {
    require_env!();
    let f = Fixture::new();
    let out = f.sh(
        "pwd; touch file",
        ProcessSpec {
            cwd: "/work/deep/dir".into(),
            user: "alice".into(),
            ..ProcessSpec::default()
        },
        &[],
    );
    assert_eq!(out.ok(), "/work/deep/dir\n");
    for d in ["work", "work/deep", "work/deep/dir"] {
        let meta = fs::metadata(f.upper().join(d)).expect("workdir in the snapshot");
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (1000, 1000, 0o755),
            "{d}"
        );
    }
    let file = fs::metadata(f.upper().join("work/deep/dir/file")).expect("file");
    assert_eq!(file.uid(), 1000);
}

#[test]
fn hostname_hosts_resolv_and_no_stubs_left_behind() {
    require_env!();
    let f = Fixture::new();
    let out = f.sh(
        "hostname; cat /etc/hostname; cat /etc/hosts; test -s /etc/resolv.conf && echo resolv; \
         echo x > /etc/hosts 2>/dev/null || echo ro",
        ProcessSpec::default(),
        &[],
    );
    assert_eq!(
        out.ok(),
        "buildkitsandbox\nbuildkitsandbox\n127.0.0.1\tlocalhost buildkitsandbox\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\nresolv\nro\n"
    );
    // /etc existed but /etc/hosts, /proc, /dev, /sys did not: nothing may remain in the upper.
    assert_no_changes(&f);
    assert!(!f.lower().join("proc").exists());

    let out = f.sh(
        "hostname",
        ProcessSpec {
            hostname: Some("custom".into()),
            extra_hosts: vec![("db".into(), "10.1.2.3".into())],
            ..ProcessSpec::default()
        },
        &[],
    );
    assert_eq!(out.ok(), "custom\n");
    let out = f.sh("cat /etc/hosts", ProcessSpec::default(), &[]);
    assert!(!out.ok().contains("10.1.2.3"), "{out:?}");
}

#[test]
fn command_is_pid_1_and_sees_only_its_namespace() {
    require_env!();
    let f = Fixture::new();
    let out = f.sh(
        "echo $$; ls /proc | grep -E '^[0-9]+$' | sort -n | head -1",
        ProcessSpec::default(),
        &[],
    );
    assert_eq!(out.ok(), "1\n1\n");
    let out = f.run(
        &ProcessSpec {
            args: vec!["ps".into(), "-o".into(), "pid,comm".into()],
            ..ProcessSpec::default()
        },
        &[],
    );
    assert_eq!(out.ok(), "PID   COMMAND\n    1 ps\n");
}

#[test]
fn capabilities_are_dockers_default_set_and_no_new_privs() {
    require_env!();
    let f = Fixture::new();
    let out = f.sh(
        "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status",
        ProcessSpec::default(),
        &[],
    );
    assert_eq!(
        out.ok(),
        "CapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\n\
         CapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n"
    );
    let out = f.sh(
        "grep -E '^CapEff' /proc/self/status",
        ProcessSpec {
            user: "alice".into(),
            ..ProcessSpec::default()
        },
        &[],
    );
    assert_eq!(out.ok(), "CapEff:\t0000000000000000\n");
    // Without CAP_SYS_ADMIN, no mounts.
    let out = f.sh(
        "mount -t tmpfs t /mnt 2>&1 || echo denied",
        ProcessSpec::default(),
        &[],
    );
    assert!(out.ok().ends_with("denied\n"), "{out:?}");
}

#[test]
fn dev_proc_sys_are_set_up() {
    require_env!();
    let f = Fixture::new();
    let out = f.sh(
        "ls /dev | sort | tr '\\n' ' '; echo; \
         head -c 4 /dev/zero | wc -c; echo hi > /dev/null && echo null-ok; \
         touch /sys/x 2>/dev/null || echo sys-ro; \
         cat /proc/kcore 2>/dev/null | wc -c; \
         stat -c %a /dev/shm; grep -c ' /dev/pts ' /proc/mounts",
        ProcessSpec::default(),
        &[],
    );
    let core = if Path::new("/proc/kcore").exists() {
        "core "
    } else {
        ""
    };
    assert_eq!(
        out.ok(),
        format!(
            "{core}fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero \n\
             4\nnull-ok\nsys-ro\n0\n1777\n1\n"
        )
    );
}

#[test]
fn network_none_has_only_loopback_up() {
    require_env!();
    let f = Fixture::new();
    let out = f.sh("ls /sys/class/net; ip link show lo | grep -o 'UP' | head -1; ping -c1 -W1 127.0.0.1 >/dev/null && echo ping-ok", ProcessSpec {
        network: Network::None,
        ..ProcessSpec::default()
    }, &[]);
    assert_eq!(out.ok(), "lo\nUP\nping-ok\n");
    let host_ifaces = fs::read_dir("/sys/class/net").expect("host net").count();
    let out = f.sh(
        "ls /sys/class/net | wc -l",
        ProcessSpec {
            network: Network::Host,
            ..ProcessSpec::default()
        },
        &[],
    );
    assert_eq!(out.ok().trim(), host_ifaces.to_string());
}

#[test]
fn cancel_kills_the_whole_container() {
    require_env!();
    let f = Fixture::new();
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    let started = std::time::Instant::now();
    let mut saw = false;
    let result = f.executor.run(
        &ProcessSpec {
            args: vec![
                "/bin/sh".into(),
                "-c".into(),
                "(sleep 93; echo never) & echo started; sleep 93".into(),
            ],
            ..ProcessSpec::default()
        },
        &f.rootfs(),
        &[],
        &mut |s, line| {
            if s == Stream::Stdout && line == b"started\n" {
                saw = true;
                c2.cancel();
            }
        },
        &cancel,
    );
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert!(saw);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // No `sleep 93` of ours is left on the host.
    let out = std::process::Command::new("pgrep")
        .args(["-f", "^sleep 93$"])
        .output();
    if let Ok(out) = out {
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert_no_changes(&f);
}

#[test]
fn rootfs_dir_is_bind_mounted_read_write() {
    require_env!();
    let f = Fixture::new();
    let out = f.executor.run(
        &ProcessSpec {
            args: vec!["/bin/sh".into(), "-c".into(), "echo data > /written".into()],
            ..ProcessSpec::default()
        },
        &kiln_executor::RootFs::Dir(f.lower()),
        &[],
        &mut |_, _| {},
        &CancelToken::new(),
    );
    assert!(out.expect("run").success());
    assert_eq!(
        fs::read_to_string(f.lower().join("written")).expect("written"),
        "data\n"
    );
    assert!(!f.lower().join("dev").exists());
}

/// The upper dir holds nothing but directories overlayfs copied up for a stub, with their
/// timestamps restored (so a metadata-comparing differ sees no change).
fn assert_no_changes(f: &Fixture) {
    for path in tree(&f.upper()) {
        let upper = fs::symlink_metadata(f.upper().join(&path)).expect("upper");
        let lower = fs::symlink_metadata(f.lower().join(&path))
            .unwrap_or_else(|_| panic!("`{path}` left in the snapshot"));
        assert!(upper.is_dir() && lower.is_dir(), "{path}");
        assert_eq!(upper.mtime(), lower.mtime(), "{path} mtime");
        assert_eq!(upper.mtime_nsec(), lower.mtime_nsec(), "{path} mtime");
        assert_eq!(upper.mode(), lower.mode(), "{path} mode");
    }
}

#[test]
fn overlay_options_longer_than_a_page_still_mount() {
    require_env!();
    let f = Fixture::new();
    // 40 lower layers under a long state path, as a snapshotter lays them out: far more than
    // the 4096 bytes of mount data when absolute, well under when relative to their parent.
    let layers = f
        .dir
        .path()
        .join("a-state-directory-with-a-rather-long-name/and-more-nesting/snapshots");
    let mut lowers = Vec::new();
    for i in 0..40 {
        let dir = layers.join(format!("{i:03}-{}", "x".repeat(20))).join("fs");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("layer-{i}")), "").unwrap();
        lowers.push(dir.display().to_string());
    }
    lowers.reverse();
    let base = layers.join("busybox/fs");
    fs::create_dir_all(base.parent().unwrap()).unwrap();
    fs::rename(f.lower(), &base).unwrap();
    lowers.push(base.display().to_string());
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        f.upper().display(),
        f.dir.path().join("work").display()
    );
    assert!(options.len() > 4096);
    let rootfs = kiln_executor::RootFs::Mounts(vec![kiln_executor::RootMount {
        fstype: "overlay".into(),
        source: "overlay".into(),
        options: vec![options],
    }]);
    let out = f.executor.run(
        &ProcessSpec {
            args: vec![
                "/bin/sh".into(),
                "-c".into(),
                "ls / | grep -c layer-".into(),
            ],
            ..ProcessSpec::default()
        },
        &rootfs,
        &[],
        &mut |_, line| assert_eq!(line, b"40\n"),
        &CancelToken::new(),
    );
    assert!(out.expect("run").success());
}

#[test]
fn signals_start_with_default_dispositions() {
    require_env!();
    let f = Fixture::new();
    // Rust ignores SIGPIPE in its own processes; the command must not inherit that.
    let out = f.run(
        &ProcessSpec {
            args: vec![
                "grep".into(),
                "-E".into(),
                "^Sig(Ign|Blk)".into(),
                "/proc/self/status".into(),
            ],
            ..ProcessSpec::default()
        },
        &[],
    );
    assert_eq!(
        out.ok(),
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
    let out = f.sh("yes | head -n1", ProcessSpec::default(), &[]);
    assert_eq!((out.ok(), out.stderr.as_str()), ("y\n", ""));
}

#[test]
fn bind_rootfs_mounts_like_the_native_snapshotter() {
    require_env!();
    let f = Fixture::new();
    for (fstype, options) in [
        ("bind", vec!["rbind".to_owned(), "rw".to_owned()]),
        ("rbind", vec![]),
    ] {
        let rootfs = kiln_executor::RootFs::Mounts(vec![kiln_executor::RootMount {
            fstype: fstype.into(),
            source: f.lower().display().to_string(),
            options,
        }]);
        let out = f.executor.run(
            &ProcessSpec {
                args: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    format!("echo {fstype} > /via-{fstype}"),
                ],
                ..ProcessSpec::default()
            },
            &rootfs,
            &[],
            &mut |_, _| {},
            &CancelToken::new(),
        );
        assert!(out.expect("run").success());
        assert_eq!(
            fs::read_to_string(f.lower().join(format!("via-{fstype}"))).expect("written"),
            format!("{fstype}\n")
        );
    }
    assert!(!f.lower().join("proc").exists() && !f.lower().join("etc/hosts").exists());
}

#[test]
fn seccomp_refuses_what_dockers_profile_refuses() {
    require_env!();
    let f = Fixture::new();
    let out = f.sh(
        "grep -E '^Seccomp' /proc/self/status",
        ProcessSpec::default(),
        &[],
    );
    assert_eq!(out.ok(), "Seccomp:\t2\nSeccomp_filters:\t1\n");
    let mounts = support::host_binary_mounts(Path::new(env!("CARGO_BIN_EXE_kiln-executor-init")));
    let out = f.run(
        &ProcessSpec {
            args: vec!["/probe".into(), "--probe-syscalls".into()],
            ..ProcessSpec::default()
        },
        &mounts,
    );
    assert_eq!(
        out.ok(),
        "keyctl: EPERM\nbpf: EPERM\nperf_event_open: EPERM\nio_uring_setup: EPERM\n\
         clone3: errno 38\nclone(CLONE_NEWUSER): EPERM\n"
    );
    // The library stubs (/lib64, /lib/x86_64-linux-gnu/...) are gone again.
    assert_no_changes(&f);
}

#[test]
fn no_descriptor_of_the_caller_leaks_into_the_container() {
    require_env!();
    let f = Fixture::new();
    // A descriptor without close-on-exec, as a careless C library in the caller might hold.
    let path = std::ffi::CString::new(f.dir.path().join("leak").to_string_lossy().as_bytes())
        .expect("path");
    // SAFETY: plain open(2) of a fresh file; closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o600) };
    assert!(fd > 2);
    let out = f.run(
        &ProcessSpec {
            args: vec!["ls".into(), "/proc/self/fd".into()],
            ..ProcessSpec::default()
        },
        &[],
    );
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    // 0-2 and the directory `ls` is reading.
    assert_eq!(out.ok(), "0\n1\n2\n3\n");
}

#[test]
fn command_leads_its_own_session_without_a_terminal() {
    require_env!();
    let f = Fixture::new();
    // Fields 6 and 7 of /proc/PID/stat: session id and controlling terminal.
    let out = f.sh(
        "cut -d' ' -f6,7 /proc/$$/stat; echo x > /dev/tty 2>/dev/null || echo no-tty",
        ProcessSpec::default(),
        &[],
    );
    assert_eq!(out.ok(), "1 0\nno-tty\n");
}

#[test]
fn a_panicking_output_callback_leaves_no_container_running() {
    require_env!();
    let f = Fixture::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        f.executor.run(
            &ProcessSpec {
                args: vec!["/bin/sh".into(), "-c".into(), "echo go; sleep 77".into()],
                ..ProcessSpec::default()
            },
            &f.rootfs(),
            &[],
            &mut |_, _| panic!("a bug in the caller's callback"),
            &CancelToken::new(),
        )
    }));
    assert!(result.is_err());
    // The init was killed and reaped; its PID 1 followed through the parent-death signal.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let out = std::process::Command::new("pgrep")
            .args(["-f", "^sleep 77$"])
            .output();
        match out {
            Ok(out) if !out.stdout.is_empty() => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "container still running"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            _ => break,
        }
    }
}

/// The libtest harness (its threads running) as its own container init: the default config
/// re-executes this test binary, whose init starts from the executor's constructor before
/// libtest's `main`. Before, the re-executed binary ran libtest (which matched no test) and
/// the run failed with "exited without reporting the command's status".
#[test]
fn libtest_binary_is_its_own_init_with_the_default_config() {
    require_env!();
    let f = Fixture::new();
    let executor = kiln_executor::Executor::new(kiln_executor::ExecutorConfig::new(
        f.dir.path().join("own-state"),
    ))
    .expect("executor");
    let mut out = String::new();
    let status = executor
        .run(
            &ProcessSpec {
                args: vec!["/bin/sh".into(), "-c".into(), "echo from-libtest".into()],
                ..ProcessSpec::default()
            },
            &f.rootfs(),
            &[],
            &mut |_, line| out.push_str(&String::from_utf8_lossy(line)),
            &CancelToken::new(),
        )
        .expect("run");
    assert_eq!((status.code(), out.as_str()), (0, "from-libtest\n"));
}

#[test]
fn an_arm64_rootfs_runs_through_the_binfmt_handler() {
    require_env!();
    let test = "an_arm64_rootfs_runs_through_the_binfmt_handler";
    match kiln_executor::emulation("arm64", None) {
        Ok(kiln_executor::Emulation::Binfmt { .. }) => {}
        Ok(kiln_executor::Emulation::Native) => {
            kiln_testkit::skip(test, "this machine is arm64: nothing to emulate");
            return;
        }
        Err(e) => {
            kiln_testkit::skip(test, &e.to_string());
            return;
        }
    }
    let Some(busybox) = support::arm64_busybox(test) else {
        return;
    };
    let f = Fixture::with_busybox(&busybox);
    // The rootfs holds no qemu: the F handler's interpreter was opened at registration.
    assert!(!f.lower().join("usr/bin/qemu-aarch64-static").exists());
    let out = f.sh(
        "uname -m; echo $$; id -u; echo data > /written; cat /written",
        ProcessSpec::default(),
        &[],
    );
    assert_eq!(out.ok(), "aarch64\n1\n0\ndata\n", "stderr: {}", out.stderr);
    assert_eq!(
        fs::read_to_string(f.upper().join("written")).expect("written"),
        "data\n"
    );
    // A failing command's exit code comes through the emulator unchanged.
    assert_eq!(f.sh("exit 7", ProcessSpec::default(), &[]).code(), 7);
}

/// The figure: a CPU-bound RUN natively and under qemu-user, median of 5 runs each, in
/// wall time and in CPU time (user + system of the whole container, from this process's
/// reaped children: steady on a loaded machine).
/// `cargo test -p kiln-executor --test container -- --ignored --nocapture slowdown`
#[test]
#[ignore = "a measurement, not a check"]
fn emulation_slowdown_of_a_cpu_bound_run() {
    require_env!();
    let Some(busybox) = support::arm64_busybox("emulation_slowdown_of_a_cpu_bound_run") else {
        return;
    };
    fn children_cpu() -> f64 {
        // SAFETY: a zeroed rusage is a valid out-parameter.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid out pointer.
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut usage) };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        secs(usage.ru_utime) + secs(usage.ru_stime)
    }
    let median = |f: &Fixture, script: &str| {
        let (mut wall, mut cpu): (Vec<f64>, Vec<f64>) = (0..5)
            .map(|_| {
                let (start, cpu) = (std::time::Instant::now(), children_cpu());
                f.sh(script, ProcessSpec::default(), &[]).ok();
                (start.elapsed().as_secs_f64(), children_cpu() - cpu)
            })
            .unzip();
        wall.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        (wall[2], cpu[2])
    };
    let fixtures = [Fixture::new(), Fixture::with_busybox(&busybox)];
    let start = fixtures.each_ref().map(|f| median(f, "true"));
    println!(
        "container start (`true`): amd64 {:.0} ms ({:.0} ms cpu), arm64 {:.0} ms ({:.0} ms cpu)",
        start[0].0 * 1e3,
        start[0].1 * 1e3,
        start[1].0 * 1e3,
        start[1].1 * 1e3
    );
    for (name, script) in [
        (
            "sha256sum of 32 MiB",
            "head -c 33554432 /dev/zero | sha256sum",
        ),
        (
            "shell loop, 200000 iterations",
            "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo $i",
        ),
    ] {
        let [native, arm64] = fixtures.each_ref().map(|f| median(f, script));
        println!(
            "{name}: wall amd64 {:.3} s, arm64 {:.3} s: {:.1}x; cpu amd64 {:.3} s, arm64 {:.3} s: \
             {:.1}x",
            native.0,
            arm64.0,
            arm64.0 / native.0,
            native.1,
            arm64.1,
            arm64.1 / native.1
        );
    }
}

/// Issue 11's figure: what the private network (slirp4netns) adds to a RUN, the median of 20
/// `true` runs with `Network::Private` against `Network::None`.
/// `cargo test -p kiln-executor --test container -- --ignored --nocapture network_start`
#[test]
#[ignore = "a measurement, not a check"]
fn private_network_start_cost() {
    require_env!();
    let f = Fixture::new();
    let median = |network| {
        let spec = ProcessSpec {
            network,
            ..ProcessSpec::default()
        };
        let mut times: Vec<f64> = (0..20)
            .map(|_| {
                let start = std::time::Instant::now();
                f.sh("true", spec.clone(), &[]).ok();
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        times[10]
    };
    let _ = median(Network::Private);
    let (none, private) = (median(Network::None), median(Network::Private));
    println!(
        "RUN true: none {none:.1} ms, private {private:.1} ms: slirp4netns adds {:.1} ms",
        private - none
    );
}
