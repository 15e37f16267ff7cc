//! The second backend against the built-in container: the same steps through runc (or crun)
//! from an OCI runtime spec must print the same output, exit with the same code and leave the
//! same layer (upper dir) behind. Skipped when no OCI runtime is installed.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use kiln_executor::{
    CacheMount, CancelToken, Executor, ExecutorConfig, MountSpec, Network, ProcessSpec,
    SecretMount, Stream, TmpfsMount, find_oci_runtime,
};
use support::{Fixture, require_env, tree};

/// What a layer holds, minus timestamps: type, mode, owner, size, device, link target, bytes.
fn layer(upper: &Path) -> BTreeMap<String, String> {
    tree(upper)
        .into_iter()
        .map(|rel| {
            let path = upper.join(&rel);
            let m = fs::symlink_metadata(&path).expect("stat");
            let ft = m.file_type();
            let what = if ft.is_symlink() {
                format!("link {}", fs::read_link(&path).expect("readlink").display())
            } else if ft.is_char_device() {
                format!("char {}", m.rdev())
            } else if ft.is_dir() {
                "dir".to_owned()
            } else {
                format!(
                    "file {:?}",
                    String::from_utf8_lossy(&fs::read(&path).expect("read"))
                )
            };
            (
                rel,
                format!("{what} {:o} {}:{}", m.mode(), m.uid(), m.gid()),
            )
        })
        .collect()
}

fn runtime() -> Option<std::path::PathBuf> {
    let found = find_oci_runtime("runc").or_else(|| find_oci_runtime("crun"));
    if found.is_none() {
        eprintln!("skipped: no OCI runtime (apt-get install runc)");
    }
    found
}

/// Runs `spec` with `mounts` once per backend, each on its own upper over the same lower,
/// and asserts identical results; returns the built-in's stdout and layer.
fn same_on_both(
    f: &Fixture,
    runtime: &Path,
    spec: &ProcessSpec,
    mounts: &[MountSpec],
) -> (String, BTreeMap<String, String>) {
    let oci = Executor::new(ExecutorConfig {
        init_binary: env!("CARGO_BIN_EXE_kiln-executor-init").into(),
        state_dir: f.state(),
    })
    .expect("executor")
    .with_oci_runtime(runtime);
    let mut results = Vec::new();
    for (name, executor) in [("builtin", &f.executor), ("oci", &oci)] {
        let rootfs = f.other_rootfs(name);
        // Each stream on its own: their relative order is up to the scheduler.
        let (mut out, mut err) = (String::new(), String::new());
        let status = executor
            .run(
                spec,
                &rootfs,
                mounts,
                &mut |stream, line| match stream {
                    Stream::Stdout => out.push_str(&String::from_utf8_lossy(line)),
                    Stream::Stderr => err.push_str(&String::from_utf8_lossy(line)),
                },
                &CancelToken::new(),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let upper = f.dir.path().join("layers").join(name).join("upper");
        results.push((out, err, status.code(), layer(&upper)));
        fs::remove_dir_all(f.dir.path().join("layers").join(name)).expect("clean layer");
        assert_eq!(
            tree(&f.state().join("executor")),
            Vec::<String>::new(),
            "{name} left files"
        );
        // Both start from empty caches.
        let caches = f.state().join("mounts");
        if caches.exists() {
            fs::remove_dir_all(&caches).expect("clean caches");
        }
    }
    assert_eq!(results[0].0, results[1].0, "stdout differs");
    assert_eq!(results[0].1, results[1].1, "stderr differs");
    assert_eq!(results[0].2, results[1].2, "exit code differs");
    assert_eq!(results[0].3, results[1].3, "layer differs");
    let (out, _, _, layer) = results.swap_remove(0);
    (out, layer)
}

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec {
        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..ProcessSpec::default()
    }
}

/// The mount tables differ in /dev only: the built-in backend mounts it nodev with the host's
/// standard nodes bound one by one, runc keeps its nodes and a device cgroup (both refuse
/// other devices, see `devices_and_32bit_syscalls_match`).
#[test]
fn identity_and_isolation_match() {
    require_env!();
    let Some(runtime) = runtime() else { return };
    let f = Fixture::new();
    let script = "id; hostname; echo $$; pwd; grep -E '^(CapEff|CapBnd|NoNewPrivs|SigIgn|SigBlk|Seccomp)' /proc/self/status; \
                  cat /etc/hosts /etc/hostname; cut -d' ' -f6,7 /proc/$$/stat; umask; cat /proc/self/limits; \
                  stat -c '%n %F %a %u:%g %t,%T' /dev/* /dev/pts/*; \
                  cut -d' ' -f5- /proc/self/mountinfo | sed 's/ - / | /; s/upperdir=[^,]*,workdir=[^,]*//' | \
                  grep -vE '^/dev |devtmpfs|^/proc/(interrupts|keys|timer_list|kcore|latency_stats|timer_stats|sched_debug) '; \
                  ls /dev | sort | tr '\\n' ' '; echo; env | sort";
    for user in ["", "alice", "bob:wheel"] {
        let (out, _) = same_on_both(
            &f,
            &runtime,
            &ProcessSpec {
                user: user.into(),
                cwd: "/work/dir".into(),
                env: vec!["A=1".into()],
                ..sh(script)
            },
            &[],
        );
        assert!(out.contains("\n1\n/work/dir\n"), "{out}");
    }
    let (out, _) = same_on_both(
        &f,
        &runtime,
        &ProcessSpec {
            network: Network::None,
            ..sh("ls /sys/class/net; ping -c1 -W1 127.0.0.1 >/dev/null && echo ping-ok")
        },
        &[],
    );
    assert_eq!(out, "lo\nping-ok\n");
}

#[test]
fn the_same_run_gives_the_same_layer() {
    require_env!();
    let Some(runtime) = runtime() else { return };
    let f = Fixture::new();
    let script = "mkdir -p /a/b && echo data > /a/b/f && ln -s f /a/b/l && chown 1000:100 /a/b/f && \
                  chmod 640 /a/b/f && rm /etc/group && echo root:x:0:0::/root:/bin/sh >> /etc/passwd && \
                  mknod /a/null c 1 3 && cat /run/secrets/tok && ls /cache /scratch && \
                  echo cached > /cache/c && echo tmp > /scratch/t; exit 7";
    let mounts = [
        MountSpec::Secret(SecretMount {
            id: "tok".into(),
            contents: Some(b"token-value\n".to_vec()),
            ..SecretMount::default()
        }),
        MountSpec::Cache(CacheMount {
            id: "diff".into(),
            target: "/cache".into(),
            ..CacheMount::default()
        }),
        MountSpec::Tmpfs(TmpfsMount {
            target: "/scratch".into(),
            size: None,
        }),
    ];
    let (out, layer) = same_on_both(&f, &runtime, &sh(script), &mounts);
    assert_eq!(out, "token-value\n/cache:\n\n/scratch:\n");
    assert_eq!(layer["a/b/f"], "file \"data\\n\" 100640 1000:100");
    assert_eq!(layer["a/b/l"], "link f 120777 0:0");
    assert_eq!(layer["etc/group"], "char 0 20000 0:0");
    assert!(layer.contains_key("etc/passwd") && layer.contains_key("a/null"));
    assert!(
        !layer
            .keys()
            .any(|k| k.starts_with("run") || k.starts_with("cache") || k.starts_with("scratch")),
        "{layer:?}"
    );
}

#[test]
fn failures_match() {
    require_env!();
    let Some(runtime) = runtime() else { return };
    let f = Fixture::new();
    same_on_both(&f, &runtime, &sh("echo out; echo err >&2; exit 42"), &[]);
}

#[test]
fn cancel_kills_the_runtime_container() {
    require_env!();
    let Some(runtime) = runtime() else { return };
    let f = Fixture::new();
    let oci = Executor::new(ExecutorConfig {
        init_binary: env!("CARGO_BIN_EXE_kiln-executor-init").into(),
        state_dir: f.state(),
    })
    .expect("executor")
    .with_oci_runtime(runtime);
    let cancel = CancelToken::new();
    let trigger = cancel.clone();
    let started = std::time::Instant::now();
    let result = oci.run(
        &sh("echo started; sleep 100"),
        &f.rootfs(),
        &[],
        &mut |_, line| {
            if line == b"started\n" {
                trigger.cancel();
            }
        },
        &cancel,
    );
    assert!(
        matches!(result, Err(kiln_executor::Error::Cancelled)),
        "{result:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(tree(&f.state().join("executor")), Vec::<String>::new());
}

#[test]
fn seccomp_matches() {
    require_env!();
    let Some(runtime) = runtime() else { return };
    let f = Fixture::new();
    let mounts = support::host_binary_mounts(Path::new(env!("CARGO_BIN_EXE_kiln-executor-init")));
    let (out, _) = same_on_both(
        &f,
        &runtime,
        &ProcessSpec {
            args: vec!["/probe".into(), "--probe-syscalls".into()],
            ..ProcessSpec::default()
        },
        &mounts,
    );
    assert!(out.contains("clone(CLONE_NEWUSER): EPERM"), "{out}");
}

#[test]
fn devices_and_32bit_syscalls_match() {
    require_env!();
    let Some(runtime) = runtime() else { return };
    let f = Fixture::new();
    let Some(binary) = support::compile_static("syscalls32", f.dir.path()) else {
        return;
    };
    fs::copy(&binary, f.lower().join("bin/syscalls32")).expect("copy probe");
    fs::create_dir(f.lower().join("opt")).expect("mkdir");
    support::mknod(&f.lower().join("opt/loop0"), libc::S_IFBLK, 7, 0);
    let (out, _) = same_on_both(
        &f,
        &runtime,
        &ProcessSpec {
            args: vec![
                "/bin/sh".into(),
                "-c".into(),
                "/bin/syscalls32 | grep '^32'; mknod /tmp/b b 7 0; \
                 for d in /tmp/b /opt/loop0; do \
                   dd if=$d of=/dev/null count=1 2>/dev/null && echo \"$d opened\" || echo \"$d refused\"; \
                 done; head -c 2 /dev/zero | wc -c; rm /tmp/b"
                    .into(),
            ],
            ..ProcessSpec::default()
        },
        &[],
    );
    assert_eq!(
        out,
        "32 getpid: ok\n32 keyctl: EPERM\n32 socket vsock: EPERM\n32 unshare: EPERM\n\
         32 mount: EPERM\n/tmp/b refused\n/opt/loop0 refused\n2\n"
    );
}

#[test]
fn private_network_matches() {
    require_env!();
    let Some(runtime) = runtime() else { return };
    if !kiln_testkit::require_tool(module_path!(), "slirp4netns", "slirp4netns") {
        return;
    }
    let f = Fixture::new();
    let (out, _) = same_on_both(
        &f,
        &runtime,
        &ProcessSpec {
            network: kiln_executor::Network::Private,
            ..sh("ls /sys/class/net | tr '\\n' ' '; ip -4 addr show tap0 | grep -o 'inet [0-9./]*'")
        },
        &[],
    );
    assert_eq!(out, "lo tap0 inet 10.0.2.100/24\n");
}
