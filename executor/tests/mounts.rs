//! Every RUN --mount kind through a real container: bind (ro, rw discarded, file), cache
//! (persistence, owner/mode, seed, shared/locked/private across concurrent runs), tmpfs (size),
//! secret (file, env, required, never in the snapshot) and ssh (socket forwarded).

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;

use kiln_executor::{
    BindMount, CacheMount, CacheSharing, CancelToken, Error, MountSpec, ProcessSpec, SecretMount,
    SshMount, TmpfsMount,
};
use support::{Fixture, require_env, tree};

fn bind(source: &Path, target: &str, rw: bool) -> MountSpec {
    MountSpec::Bind(BindMount {
        source: source.to_path_buf(),
        target: target.into(),
        rw,
    })
}

fn cache(id: &str, target: &str, sharing: CacheSharing) -> MountSpec {
    MountSpec::Cache(CacheMount {
        id: id.into(),
        target: target.into(),
        sharing,
        ..CacheMount::default()
    })
}

/// Nothing but unchanged, copied-up directories in the snapshot.
fn assert_snapshot_clean(f: &Fixture) {
    for path in tree(&f.upper()) {
        let upper = fs::symlink_metadata(f.upper().join(&path)).expect("upper");
        let lower = fs::symlink_metadata(f.lower().join(&path))
            .unwrap_or_else(|_| panic!("`{path}` left in the snapshot"));
        assert!(upper.is_dir() && lower.is_dir(), "{path}");
        assert_eq!(
            (upper.mtime(), upper.mtime_nsec()),
            (lower.mtime(), lower.mtime_nsec()),
            "{path}"
        );
    }
}

#[test]
fn bind_is_read_only_by_default_and_leaves_no_stub() {
    require_env!();
    let f = Fixture::new();
    let src = f.dir.path().join("ctx");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), "context\n").unwrap();
    let out = f.sh(
        "cat /ctx/f; touch /ctx/new 2>/dev/null || echo ro",
        ProcessSpec::default(),
        &[bind(&src, "/ctx", false)],
    );
    assert_eq!(out.ok(), "context\nro\n");
    assert_eq!(tree(&src), ["f"]);
    assert_snapshot_clean(&f);
}

#[test]
fn bind_rw_writes_are_discarded() {
    require_env!();
    let f = Fixture::new();
    let src = f.dir.path().join("ctx");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), "context\n").unwrap();
    let mounts = [bind(&src, "/ctx", true)];
    let out = f.sh(
        "echo changed > /ctx/f; echo new > /ctx/new; cat /ctx/f /ctx/new",
        ProcessSpec::default(),
        &mounts,
    );
    assert_eq!(out.ok(), "changed\nnew\n");
    assert_eq!(fs::read_to_string(src.join("f")).unwrap(), "context\n");
    assert_eq!(tree(&src), ["f"]);
    let out = f.sh("cat /ctx/f; ls /ctx", ProcessSpec::default(), &mounts);
    assert_eq!(out.ok(), "context\nf\n");
    assert_snapshot_clean(&f);
}

#[test]
fn bind_of_a_file_and_relative_target() {
    require_env!();
    let f = Fixture::new();
    let file = f.dir.path().join("config");
    fs::write(&file, "k=v\n").unwrap();
    let out = f.sh(
        "cat /app/config.ini",
        ProcessSpec {
            cwd: "/app".into(),
            ..ProcessSpec::default()
        },
        &[bind(&file, "config.ini", false)],
    );
    assert_eq!(out.ok(), "k=v\n");
    // A writable bind of a file writes to a throw-away copy.
    let out = f.sh(
        "echo changed >> /app/config.ini; cat /app/config.ini",
        ProcessSpec::default(),
        &[bind(&file, "/app/config.ini", true)],
    );
    assert_eq!(out.ok(), "k=v\nchanged\n");
    assert_eq!(fs::read_to_string(&file).unwrap(), "k=v\n");
    // The workdir stays (it is the step's), the file stub does not.
    assert!(f.upper().join("app").is_dir());
    assert_eq!(tree(&f.upper().join("app")), Vec::<String>::new());
}

#[test]
fn cache_persists_between_runs_with_owner_mode_and_seed_and_stays_out_of_the_snapshot() {
    require_env!();
    let f = Fixture::new();
    let seed = f.dir.path().join("seed");
    fs::create_dir(&seed).unwrap();
    fs::write(seed.join("seeded"), "s\n").unwrap();
    let mount = MountSpec::Cache(CacheMount {
        id: "/root/.cache".into(),
        target: "/root/.cache".into(),
        uid: 1000,
        gid: 100,
        mode: 0o750,
        seed: Some(seed.clone()),
        ..CacheMount::default()
    });
    let out = f.sh(
        "stat -c '%u %g %a' /root/.cache; cat /root/.cache/seeded; echo 1 >> /root/.cache/count",
        ProcessSpec::default(),
        std::slice::from_ref(&mount),
    );
    assert_eq!(out.ok(), "1000 100 750\ns\n");
    let out = f.sh(
        "echo 2 >> /root/.cache/count; cat /root/.cache/count",
        ProcessSpec::default(),
        &[mount],
    );
    assert_eq!(out.ok(), "1\n2\n");
    let dir = f.state().join("mounts/cache/%2Froot%2F%2Ecache");
    assert_eq!(fs::read_to_string(dir.join("count")).unwrap(), "1\n2\n");
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    // /root existed; /root/.cache did not and must not appear in the layer.
    assert_snapshot_clean(&f);
}

/// Runs `script` in two containers at once, each with `mounts`.
fn run_concurrently(f: &Fixture, scripts: [&str; 2], mounts: &[MountSpec]) -> [String; 2] {
    std::thread::scope(|s| {
        let handles = [(scripts[0], "a"), (scripts[1], "b")].map(|(script, name)| {
            s.spawn(move || {
                f.sh_in(
                    &f.other_rootfs(name),
                    script,
                    ProcessSpec::default(),
                    mounts,
                )
                .ok()
                .to_owned()
            })
        });
        handles.map(|h| h.join().expect("thread"))
    })
}

#[test]
fn cache_shared_is_used_by_two_runs_at_once() {
    require_env!();
    let f = Fixture::new();
    // Each run waits (up to 10 s) for the other's marker: only possible if both see one
    // directory at the same time.
    let wait = |me: &str, other: &str| {
        format!(
            "touch /c/{me}; i=0; while [ ! -e /c/{other} ] && [ $i -lt 200 ]; do sleep 0.05; \
             i=$((i+1)); done; ls /c | tr '\\n' ' '"
        )
    };
    let (a, b) = (wait("a", "b"), wait("b", "a"));
    let outs = run_concurrently(&f, [&a, &b], &[cache("shared", "/c", CacheSharing::Shared)]);
    assert_eq!(outs, ["a b ", "a b "]);
}

#[test]
fn cache_locked_serialises_two_runs() {
    require_env!();
    let f = Fixture::new();
    let script =
        |me: &str| format!("echo start-{me} >> /c/log; sleep 0.3; echo end-{me} >> /c/log");
    let (a, b) = (script("a"), script("b"));
    run_concurrently(&f, [&a, &b], &[cache("locked", "/c", CacheSharing::Locked)]);
    let log = fs::read_to_string(f.state().join("mounts/cache/locked/log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 4, "{log}");
    for pair in lines.chunks(2) {
        assert_eq!(
            pair[0].strip_prefix("start-"),
            pair[1].strip_prefix("end-"),
            "{log}"
        );
    }
}

#[test]
fn cache_private_gives_a_busy_cache_its_own_copy() {
    require_env!();
    let f = Fixture::new();
    // The shared `sync` cache only orders the runs: b starts once a holds `/c`.
    let a = "touch /c/a; touch /sync/a-in; i=0; while [ ! -e /sync/b-done ] && [ $i -lt 200 ]; \
             do sleep 0.05; i=$((i+1)); done; ls /c";
    let b = "i=0; while [ ! -e /sync/a-in ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; \
             touch /c/b; ls /c; touch /sync/b-done";
    let outs = std::thread::scope(|s| {
        let run = |script: &'static str, id: &'static str| {
            let f = &f;
            s.spawn(move || {
                f.sh_in(
                    &f.other_rootfs(id),
                    script,
                    ProcessSpec::default(),
                    &[
                        cache("private", "/c", CacheSharing::Private),
                        cache("sync", "/sync", CacheSharing::Shared),
                    ],
                )
                .ok()
                .to_owned()
            })
        };
        let ha = run(a, "a");
        let hb = run(b, "b");
        [ha.join().unwrap(), hb.join().unwrap()]
    });
    assert_eq!(outs, ["a\n", "b\n"]);
    // Whichever run came first kept the main instance; the other got `.private-1`.
    let (main, second) = (
        f.state().join("mounts/cache/private"),
        f.state().join("mounts/cache/private.private-1"),
    );
    let names = |d: &Path| tree(d).join(" ");
    let mut got = [names(&main), names(&second)];
    got.sort();
    assert_eq!(got, ["a", "b"]);
}

#[test]
fn tmpfs_has_its_size_and_vanishes() {
    require_env!();
    let f = Fixture::new();
    let out = f.sh(
        "echo x > /scratch/x; cat /scratch/x; \
         dd if=/dev/zero of=/scratch/big bs=1024 count=2048 2>/dev/null || echo full; \
         grep ' /scratch ' /proc/mounts | cut -d' ' -f3,4",
        ProcessSpec::default(),
        &[MountSpec::Tmpfs(TmpfsMount {
            target: "/scratch".into(),
            size: Some(1024 * 1024),
        })],
    );
    assert_eq!(
        out.ok(),
        "x\nfull\ntmpfs rw,nosuid,nodev,relatime,size=1024k\n"
    );
    assert_snapshot_clean(&f);
}

const SECRET: &[u8] = b"s3cr3t-value-9f2c";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether any regular file under `dir` holds the secret.
fn secret_on_disk(dir: &Path) -> bool {
    tree(dir).iter().any(|p| {
        let p = dir.join(p);
        fs::symlink_metadata(&p).is_ok_and(|m| m.is_file())
            && fs::read(&p).is_ok_and(|d| contains(&d, SECRET))
    })
}

#[test]
fn secret_file_and_env_never_reach_the_snapshot() {
    require_env!();
    let f = Fixture::new();
    let mounts = [
        MountSpec::Secret(SecretMount {
            id: "token".into(),
            contents: Some(SECRET.to_vec()),
            ..SecretMount::default()
        }),
        MountSpec::Secret(SecretMount {
            id: "npmrc".into(),
            contents: Some(SECRET.to_vec()),
            target: Some("/home/alice/.npmrc".into()),
            uid: 1000,
            gid: 1000,
            mode: 0o440,
            ..SecretMount::default()
        }),
        MountSpec::Secret(SecretMount {
            id: "envonly".into(),
            contents: Some(SECRET.to_vec()),
            env: Some("API_TOKEN".into()),
            ..SecretMount::default()
        }),
    ];
    let out = f.sh(
        "cat /run/secrets/token; echo; stat -c '%a %u %g' /run/secrets/token /home/alice/.npmrc; \
         echo $API_TOKEN; ls /run/secrets; echo x > /run/secrets/token 2>/dev/null || echo ro; \
         cp /run/secrets/token /tmp/leak",
        ProcessSpec::default(),
        &mounts,
    );
    assert_eq!(
        out.ok(),
        "s3cr3t-value-9f2c\n400 0 0\n440 1000 1000\ns3cr3t-value-9f2c\ntoken\nro\n"
    );
    // The command copied it on purpose: that copy is the user's doing and stays.
    assert!(contains(
        &fs::read(f.upper().join("tmp/leak")).unwrap(),
        SECRET
    ));
    fs::remove_file(f.upper().join("tmp/leak")).unwrap();
    assert!(!f.upper().join("run").exists());
    assert!(!f.upper().join("home/alice/.npmrc").exists());
    assert!(!secret_on_disk(&f.upper()));
    assert!(!secret_on_disk(&f.state()));
}

#[test]
fn secret_required_or_skipped() {
    require_env!();
    let f = Fixture::new();
    let missing = SecretMount {
        id: "absent".into(),
        ..SecretMount::default()
    };
    let out = f.sh(
        "ls /run/secrets 2>&1 || echo none",
        ProcessSpec::default(),
        &[MountSpec::Secret(missing.clone())],
    );
    assert!(out.ok().ends_with("none\n"), "{out:?}");
    let err = f
        .executor
        .run(
            &ProcessSpec {
                args: vec!["true".into()],
                ..ProcessSpec::default()
            },
            &f.rootfs(),
            &[MountSpec::Secret(SecretMount {
                required: true,
                ..missing
            })],
            &mut |_, _| {},
            &CancelToken::new(),
        )
        .expect_err("required secret");
    assert!(matches!(err, Error::SecretMissing { ref id } if id == "absent"));
    assert_eq!(
        err.to_string(),
        "secret absent is required but not provided"
    );
}

#[test]
fn ssh_agent_socket_is_forwarded() {
    require_env!();
    let f = Fixture::new();
    let sock = f.dir.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let out = f.sh(
        "echo $SSH_AUTH_SOCK; test -S /run/buildkit/ssh_agent.0 && echo socket",
        ProcessSpec::default(),
        &[MountSpec::Ssh(SshMount {
            socket: Some(sock.clone()),
            ..SshMount::default()
        })],
    );
    assert_eq!(out.ok(), "/run/buildkit/ssh_agent.0\nsocket\n");
    // A proxy socket with the mount's owner and mode, not the host socket's.
    let out = f.sh(
        "stat -c '%a %u %g' /tmp/agent; test -w /tmp/agent && echo writable; echo $SSH_AUTH_SOCK",
        ProcessSpec {
            user: "alice".into(),
            env: vec!["SSH_AUTH_SOCK=/custom".into()],
            ..ProcessSpec::default()
        },
        &[MountSpec::Ssh(SshMount {
            socket: Some(sock.clone()),
            target: Some("/tmp/agent".into()),
            uid: 1000,
            gid: 1000,
            mode: 0o600,
            ..SshMount::default()
        })],
    );
    assert_eq!(out.ok(), "600 1000 1000\nwritable\n/custom\n");
    let host = fs::metadata(&sock).unwrap();
    assert_eq!(host.uid(), 0);
    assert!(!f.upper().join("run").exists());
    let err = f
        .executor
        .run(
            &ProcessSpec {
                args: vec!["true".into()],
                ..ProcessSpec::default()
            },
            &f.rootfs(),
            &[MountSpec::Ssh(SshMount {
                required: true,
                ..SshMount::default()
            })],
            &mut |_, _| {},
            &CancelToken::new(),
        )
        .expect_err("required ssh");
    assert_eq!(
        err.to_string(),
        "ssh agent default is required but not provided"
    );
}

#[test]
fn mounts_below_dev_land_in_the_fresh_dev() {
    require_env!();
    let f = Fixture::new();
    let script = f.dir.path().join("script");
    fs::write(&script, "#!/bin/sh\necho \"running $0\"\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let out = f.run(
        &ProcessSpec {
            args: vec!["/dev/pipes/script".into()],
            ..ProcessSpec::default()
        },
        &[bind(&script, "/dev/pipes/script", false)],
    );
    assert_eq!(out.ok(), "running /dev/pipes/script\n");
    assert_snapshot_clean(&f);
}

#[test]
fn cache_locks_hold_across_processes() {
    require_env!();
    let f = Fixture::new();
    let base = f.state().join("mounts/cache");
    fs::create_dir_all(&base).unwrap();
    let lock = base.join("xproc.lock");
    let wait_for = |marker: &Path| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !marker.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "flock(1) never took the lock"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    // Another process (util-linux flock(1)) holds the cache's lock exclusively, as a `locked`
    // user in another kiln would: a `shared` run must wait until it is gone.
    let ready = f.dir.path().join("exclusive-held");
    let mut holder = std::process::Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .arg("-c")
        .arg(format!("touch {}; sleep 1", ready.display()))
        .spawn()
        .expect("flock(1) from util-linux");
    wait_for(&ready);
    f.sh(
        "true",
        ProcessSpec::default(),
        &[cache("xproc", "/c", CacheSharing::Shared)],
    )
    .ok();
    assert!(
        holder.try_wait().unwrap().is_some(),
        "the run did not wait for the other process's exclusive lock"
    );

    // A shared holder elsewhere does not stop a shared user.
    let ready = f.dir.path().join("shared-held");
    let mut holder = std::process::Command::new("flock")
        .args(["--shared", "-o"])
        .arg(&lock)
        .arg("-c")
        .arg(format!("touch {}; sleep 30", ready.display()))
        .process_group(0)
        .spawn()
        .unwrap();
    wait_for(&ready);
    f.sh(
        "true",
        ProcessSpec::default(),
        &[cache("xproc", "/c", CacheSharing::Shared)],
    )
    .ok();
    assert!(
        holder.try_wait().unwrap().is_none(),
        "waited for a shared holder"
    );
    // SAFETY: killing the process group we created (flock and its sleep).
    unsafe { libc::kill(-(holder.id() as i32), libc::SIGKILL) };
    holder.wait().unwrap();
}
