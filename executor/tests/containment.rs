//! Containment of a RUN step: what a hostile Dockerfile or base image may try from inside the
//! container (32-bit syscalls, device nodes, swapped mount-stub parents, symlink chains) must
//! not reach the host.

mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_executor::{BindMount, CacheMount, MountSpec, ProcessSpec, SecretMount, TmpfsMount};
use support::{Fixture, compile_static, mknod, require_env};

#[test]
fn seccomp_covers_the_i386_and_x32_abis() {
    require_env!();
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    let f = Fixture::new();
    let Some(binary) = compile_static("syscalls32", f.dir.path()) else {
        return;
    };
    fs::copy(&binary, f.lower().join("bin/syscalls32")).expect("copy probe");
    let out = f.run(
        &ProcessSpec {
            args: vec!["/bin/syscalls32".into()],
            ..ProcessSpec::default()
        },
        &[],
    );
    assert_eq!(
        out.ok(),
        "64 keyctl: EPERM\n64 unshare: EPERM\n64 mount: EPERM\n64 socket vsock: EPERM\n\
         64 getpid: ok\nx32 keyctl: EPERM\n32 getpid: ok\n32 keyctl: EPERM\n\
         32 socket vsock: EPERM\n32 unshare: EPERM\n32 mount: EPERM\n"
    );
    // Ordinary commands still work under the allow-list.
    let out = f.sh(
        "mkdir -p /tmp/d && echo hi > /tmp/d/f && ln -s f /tmp/d/l && cat /tmp/d/l && \
         ls /tmp/d | sort | tr '\\n' ' ' && (sleep 0 &) && wait && id -u && \
         chmod 600 /tmp/d/f && stat -c %a /tmp/d/f && date +%Y >/dev/null && echo done",
        ProcessSpec::default(),
        &[],
    );
    assert_eq!(out.ok(), "hi\nf l 0\n600\ndone\n");
}

#[test]
fn no_device_but_the_standard_ones_can_be_opened() {
    require_env!();
    let f = Fixture::new();
    // A hostile base image ships a loop device and a /dev/mem.
    fs::create_dir(f.lower().join("opt")).expect("mkdir");
    mknod(&f.lower().join("opt/loop0"), libc::S_IFBLK, 7, 0);
    mknod(&f.lower().join("opt/mem"), libc::S_IFCHR, 1, 1);
    let out = f.sh(
        "mknod /tmp/b b 7 0 && echo made; \
         mknod /tmp/c c 1 1 && echo made; \
         for d in /tmp/b /tmp/c /opt/loop0 /opt/mem; do \
           dd if=$d of=/dev/null bs=512 count=1 2>/dev/null && echo \"$d opened\" || echo \"$d refused\"; \
         done; \
         echo x > /tmp/b 2>/dev/null && echo 'wrote /tmp/b' || echo '/tmp/b not writable'; \
         mknod /dev/loopx b 7 0 && (dd if=/dev/loopx count=1 2>/dev/null && echo '/dev/loopx opened' || echo '/dev/loopx refused'); \
         head -c 4 /dev/zero | od -An -tx1; head -c 8 /dev/urandom | wc -c; head -c 8 /dev/random | wc -c; \
         echo gone > /dev/null && echo null; (echo x > /dev/full) 2>&1 | grep -c 'No space'; \
         test -c /dev/pts/ptmx && echo ptmx; ls /dev/shm && echo shm > /dev/shm/s && cat /dev/shm/s",
        ProcessSpec::default(),
        &[],
    );
    assert_eq!(
        out.ok(),
        "made\nmade\n/tmp/b refused\n/tmp/c refused\n/opt/loop0 refused\n/opt/mem refused\n\
         /tmp/b not writable\n/dev/loopx refused\n 00 00 00 00\n8\n8\nnull\n1\nptmx\nshm\n"
    );
}

#[test]
fn device_nodes_in_bind_and_cache_sources_cannot_be_opened() {
    require_env!();
    let f = Fixture::new();
    let host = f.dir.path().join("ctx");
    fs::create_dir(&host).expect("mkdir");
    mknod(&host.join("loop0"), libc::S_IFBLK, 7, 0);
    let out = f.sh(
        "dd if=/ctx/loop0 of=/dev/null count=1 2>/dev/null && echo opened || echo refused; \
         mknod /t/b b 7 0 && (dd if=/t/b of=/dev/null count=1 2>/dev/null && echo opened || echo refused)",
        ProcessSpec::default(),
        &[
            MountSpec::Bind(kiln_executor::BindMount {
                source: host.clone(),
                target: "/ctx".into(),
                rw: false,
            }),
            MountSpec::Tmpfs(TmpfsMount {
                target: "/t".into(),
                size: None,
            }),
        ],
    );
    assert_eq!(out.ok(), "refused\nrefused\n");
}

/// A host directory a hostile step aims at: an empty file `secret` and an empty directory
/// `target` (the names of the step's mount stubs), a file with known content, owner and a
/// second hard link, and the directory's own mtime set in the past.
struct Bait {
    dir: PathBuf,
}

impl Bait {
    fn new(base: &Path) -> Bait {
        let dir = base.join("bait");
        fs::create_dir(&dir).expect("mkdir bait");
        fs::write(dir.join("secret"), b"").expect("bait file");
        fs::create_dir(dir.join("target")).expect("bait dir");
        fs::write(dir.join("keep"), b"host data\n").expect("bait file");
        fs::hard_link(dir.join("keep"), dir.join("keep-link")).expect("link");
        std::os::unix::fs::chown(dir.join("keep"), Some(4321), Some(4321)).expect("chown");
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        for p in [dir.join("target"), dir.clone()] {
            fs::File::open(&p)
                .expect("open")
                .set_times(fs::FileTimes::new().set_accessed(old).set_modified(old))
                .expect("times");
        }
        Bait { dir }
    }

    fn assert_untouched(&self) {
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let mut names: Vec<String> = fs::read_dir(&self.dir)
            .expect("read bait")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["keep", "keep-link", "secret", "target"]);
        assert_eq!(fs::read(self.dir.join("secret")).expect("secret"), b"");
        assert_eq!(
            fs::read(self.dir.join("keep")).expect("keep"),
            b"host data\n"
        );
        let keep = fs::metadata(self.dir.join("keep")).expect("keep");
        assert_eq!((keep.uid(), keep.gid(), keep.nlink()), (4321, 4321, 2));
        assert_eq!(keep.mode() & 0o7777, 0o644);
        let target = fs::metadata(self.dir.join("target")).expect("target");
        assert!(target.is_dir());
        assert_eq!(
            fs::read_dir(self.dir.join("target")).expect("read").count(),
            0
        );
        assert_eq!(target.modified().expect("mtime"), old);
        assert_eq!(target.uid(), 0);
        assert_eq!(
            fs::metadata(&self.dir)
                .expect("bait")
                .modified()
                .expect("mtime"),
            old,
            "bait directory mtime"
        );
    }
}

#[test]
fn stub_cleanup_under_a_swapped_parent_leaves_the_host_alone() {
    require_env!();
    let f = Fixture::new();
    let bait = Bait::new(f.dir.path());
    let secret = MountSpec::Secret(SecretMount {
        id: "s".into(),
        contents: Some(b"top secret".to_vec()),
        target: Some("/parent/secret".into()),
        ..SecretMount::default()
    });
    let tmpfs = MountSpec::Tmpfs(TmpfsMount {
        target: "/parent/target".into(),
        size: None,
    });
    let out = f.sh(
        &format!(
            "cat /parent/secret; echo; mv /parent /moved && ln -s {} /parent && echo swapped",
            bait.dir.display()
        ),
        ProcessSpec::default(),
        &[secret, tmpfs],
    );
    assert_eq!(out.ok(), "top secret\nswapped\n");
    bait.assert_untouched();
    // The stubs went away from the moved directory; the step's own symlink stays.
    assert_eq!(
        fs::read_dir(f.upper().join("moved"))
            .expect("moved")
            .count(),
        0
    );
    assert_eq!(
        fs::read_link(f.upper().join("parent")).expect("link"),
        bait.dir
    );
}

/// `c0 -> c1 -> ... -> c299` in `dir`, with `c256` replaced by an absolute link to `host`.
fn symlink_chain(dir: &Path, host: &Path) {
    for i in 0..300 {
        let link = dir.join(format!("c{i}"));
        if i == 256 {
            std::os::unix::fs::symlink(host, &link).expect("link");
        } else {
            std::os::unix::fs::symlink(format!("c{}", i + 1), &link).expect("link");
        }
    }
}

/// Runs `spec` expecting the executor to refuse it; returns the error text.
fn run_fails(f: &Fixture, spec: &ProcessSpec, mounts: &[MountSpec]) -> String {
    let result = f.executor.run(
        spec,
        &f.rootfs(),
        mounts,
        &mut |_, _| {},
        &kiln_executor::CancelToken::new(),
    );
    match result {
        Err(e) => e.to_string(),
        Ok(status) => panic!("ran ({status:?}) instead of failing"),
    }
}

#[test]
fn symlink_chains_in_the_rootfs_stay_inside_it() {
    require_env!();
    let f = Fixture::new();
    let bait = Bait::new(f.dir.path());
    symlink_chain(&f.lower(), &bait.dir);
    let sh = |script: &str| ProcessSpec {
        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..ProcessSpec::default()
    };
    let tmpfs = |target: &str| {
        MountSpec::Tmpfs(TmpfsMount {
            target: target.into(),
            size: None,
        })
    };
    let bind = |target: &str| {
        MountSpec::Bind(BindMount {
            source: f.dir.path().join("state"),
            target: target.into(),
            rw: true,
        })
    };
    // Too long for the kernel: refused, naming the path.
    for (spec, mounts) in [
        (sh("true"), vec![tmpfs("/c0/target")]),
        (sh("true"), vec![bind("/c0/target")]),
        (
            ProcessSpec {
                cwd: "/c0/made-by-workdir".into(),
                ..sh("true")
            },
            vec![],
        ),
    ] {
        let err = run_fails(&f, &spec, &mounts);
        assert!(err.contains("too many levels of symbolic links"), "{err}");
        assert!(err.contains("/c0"), "{err}");
    }
    bait.assert_untouched();
    // A short tail of the chain (c250 .. c256 -> host path) resolves inside the rootfs.
    let inside = f
        .upper()
        .join(bait.dir.strip_prefix("/").expect("absolute"));
    let out = f.run(
        &ProcessSpec {
            cwd: "/c250/made-by-workdir".into(),
            ..sh("pwd; echo in-tmpfs > /c251/target/f; cat /c252/target/f")
        },
        &[tmpfs("/c250/target"), bind("/c253/bound")],
    );
    assert_eq!(
        out.ok(),
        format!("{}/made-by-workdir\nin-tmpfs\n", bait.dir.display())
    );
    bait.assert_untouched();
    assert!(inside.join("made-by-workdir").is_dir());
    // The tmpfs and bind stubs are gone again, the working directory stays.
    assert_eq!(support::tree(&inside), ["made-by-workdir"]);
}

#[test]
fn cache_seeds_and_bind_sources_that_are_symlinks_are_refused() {
    require_env!();
    let f = Fixture::new();
    let bait = Bait::new(f.dir.path());
    let stage = f.dir.path().join("stage");
    fs::create_dir(&stage).expect("mkdir stage");
    symlink_chain(&stage, &bait.dir);
    // What a resolver that gives up part-way hands over: a link in the chain, or its end.
    for (i, seed) in ["c256", "c0"].iter().enumerate() {
        let cache = MountSpec::Cache(CacheMount {
            id: format!("seeded-{i}"),
            target: "/cache".into(),
            uid: 1000,
            gid: 1000,
            mode: 0o777,
            seed: Some(stage.join(seed)),
            ..CacheMount::default()
        });
        let err = run_fails(
            &f,
            &ProcessSpec {
                args: vec!["/bin/sh".into(), "-c".into(), "touch /cache/x".into()],
                ..ProcessSpec::default()
            },
            &[cache],
        );
        assert!(err.contains("is not a directory"), "{err}");
        assert!(err.contains(seed), "{err}");
        bait.assert_untouched();
        let mode = fs::metadata(&bait.dir).expect("bait").mode();
        assert_eq!(mode & 0o7777, 0o755);
    }
    // The same for a bind source handed over as a link.
    let bind = MountSpec::Bind(BindMount {
        source: stage.join("c256"),
        target: "/bound".into(),
        rw: false,
    });
    let err = run_fails(
        &f,
        &ProcessSpec {
            args: vec!["/bin/ls".into(), "/bound".into()],
            ..ProcessSpec::default()
        },
        &[bind],
    );
    assert!(
        err.contains("is a symbolic link") && err.contains("c256"),
        "{err}"
    );
    bait.assert_untouched();
}

/// The host's address on its default route, if it has one (no packet is sent).
fn host_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("10.255.255.254:9").ok()?;
    Some(socket.local_addr().ok()?.ip())
}

#[test]
fn private_network_reaches_out_but_not_the_hosts_loopback_or_sockets() {
    require_env!();
    let _serial = PRIVATE_NETWORK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !kiln_testkit::require_tool(module_path!(), "slirp4netns", "slirp4netns") {
        return;
    }
    let f = Fixture::new();
    let Some(binary) = compile_static("netprobe", f.dir.path()) else {
        return;
    };
    fs::copy(&binary, f.lower().join("bin/netprobe")).expect("copy probe");
    // Host services: a loopback TCP port, one on every address, an abstract unix socket.
    let loopback = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let everywhere = std::net::TcpListener::bind("0.0.0.0:0").expect("listen");
    let name = format!("kiln-test-{}", std::process::id());
    let abstract_addr = {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name")
    };
    let _unix = std::os::unix::net::UnixListener::bind_addr(&abstract_addr).expect("bind");
    let lo_port = loopback.local_addr().expect("addr").port();
    let any_port = everywhere.local_addr().expect("addr").port();
    let script = format!(
        "ls /sys/class/net | tr '\\n' ' '; echo; \
         netprobe tcp 127.0.0.1 {lo_port}; netprobe tcp 10.0.2.2 {lo_port}; \
         netprobe tcp 10.0.2.2 {any_port}; netprobe abstract {name}; cat /etc/resolv.conf | grep nameserver"
    );
    let spec = |network| ProcessSpec {
        args: vec!["/bin/sh".into(), "-c".into(), script.clone()],
        network,
        ..ProcessSpec::default()
    };
    // The host network, for contrast: everything is reachable.
    let host = f.run(&spec(kiln_executor::Network::Host), &[]);
    let host = host.ok();
    assert!(host.contains("reached\n"), "{host}");
    assert!(
        host.lines().nth(4) == Some("reached"),
        "abstract socket on the host network: {host}"
    );
    let private = f.run(&spec(kiln_executor::Network::Private), &[]);
    assert_eq!(
        private.ok(),
        "lo tap0 \nrefused: ECONNREFUSED\nrefused: ENETUNREACH\nrefused: ENETUNREACH\n\
         refused: ECONNREFUSED\nnameserver 10.0.2.3\n"
    );
    let none = f.run(&spec(kiln_executor::Network::None), &[]);
    assert!(
        none.ok()
            .starts_with("lo \nrefused: ECONNREFUSED\nrefused: ENETUNREACH\n"),
        "{}",
        none.stdout
    );
    assert!(
        none.stdout.contains("refused: ECONNREFUSED\nnameserver"),
        "{}",
        none.stdout
    );
    // The way out works: the host's own address on its default route, through the NAT.
    if let Some(ip) = host_address() {
        let out = f.sh(
            &format!("netprobe tcp {ip} {any_port}"),
            ProcessSpec {
                network: kiln_executor::Network::Private,
                ..ProcessSpec::default()
            },
            &[],
        );
        assert_eq!(out.ok(), "reached\n", "{ip}");
    }
}

/// Held by the tests that run private networks: their slirp4netns helpers are children of
/// this process, which `private_network_helpers_are_reaped` counts.
static PRIVATE_NETWORK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// This process's children named `comm` and their states (`S`, `Z`, ...).
fn children_named(comm: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|stat| {
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let ppid = fields.next()?;
            (name == comm && ppid == me).then(|| state.to_owned())
        })
        .collect()
}

/// slirp4netns, started by the init as a child of this process so that its slow exit (the tap
/// device's teardown) delays no run, is reaped by the executor: at most the last run's is left
/// while the executor lives, none after it is dropped.
#[test]
fn private_network_helpers_are_reaped() {
    require_env!();
    if !kiln_testkit::require_tool(module_path!(), "slirp4netns", "slirp4netns") {
        return;
    }
    let _serial = PRIVATE_NETWORK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let f = Fixture::new();
    let executor = kiln_executor::Executor::new(kiln_executor::ExecutorConfig {
        init_binary: std::path::PathBuf::from(env!("CARGO_BIN_EXE_kiln-executor-init")),
        state_dir: f.state(),
    })
    .expect("executor");
    let spec = ProcessSpec {
        args: vec![
            "/bin/sh".into(),
            "-c".into(),
            "ls /sys/class/net | tr '\\n' ' '".into(),
        ],
        network: kiln_executor::Network::Private,
        ..ProcessSpec::default()
    };
    for _ in 0..3 {
        let mut out = Vec::new();
        let status = executor
            .run(
                &spec,
                &f.rootfs(),
                &[],
                &mut |_, line| out.extend_from_slice(line),
                &kiln_executor::CancelToken::new(),
            )
            .expect("run");
        assert_eq!((status.code(), out.as_slice()), (0, &b"lo tap0 "[..]));
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            children_named("slirp4netns").len() <= 1,
            "{:?}",
            children_named("slirp4netns")
        );
    }
    drop(executor);
    assert_eq!(children_named("slirp4netns"), Vec::<String>::new());
}
