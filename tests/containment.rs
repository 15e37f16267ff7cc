//! Issue 10 (containment), the solver's side: symlink chains in a stage, the context or a base
//! image must never make COPY, ADD, WORKDIR, COPY --from, a bind mount or a cache-mount seed
//! read or write the host. Each test lays a bait directory on the host (a file with known
//! content, owner, mode and link count, and an empty directory), points a chain of links at it,
//! builds, and asserts the bait is untouched and no host byte reached the image.
//!
//! Chains are 300 links long with link 256 pointing at the bait, as in the issue: kiln used to
//! give up after 255 links and hand the rest to the kernel, which followed it out of the root.
//! The kernel's own limit (40) now applies inside the root, so those builds fail with "too many
//! levels of symbolic links"; short chains resolve inside the root.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{busybox_context, kiln, not_root, tempdir, text};

/// A host directory that no build may touch.
struct Bait {
    dir: tempfile::TempDir,
}

impl Bait {
    fn new() -> Bait {
        let dir = tempfile::Builder::new()
            .prefix("kiln-bait-")
            .tempdir()
            .expect("bait dir");
        let f = dir.path().join("secret");
        fs::write(&f, "host secret bytes").expect("bait file");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).expect("chmod");
        std::os::unix::fs::chown(&f, Some(123), Some(456)).expect("chown");
        fs::hard_link(&f, dir.path().join("secret-link")).expect("link");
        fs::create_dir(dir.path().join("empty")).expect("empty dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o751)).expect("chmod");
        Bait { dir }
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 temp path")
    }

    /// Everything about the bait that a write, chown, chmod or touch would change.
    fn state(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in [
            self.dir.path().to_path_buf(),
            self.dir.path().join("secret"),
            self.dir.path().join("secret-link"),
            self.dir.path().join("empty"),
        ] {
            let m = fs::symlink_metadata(&p).expect("bait entry");
            out.push(format!(
                "{} mode={:o} owner={}:{} nlink={} mtime={}.{}",
                p.display(),
                m.mode(),
                m.uid(),
                m.gid(),
                m.nlink(),
                m.mtime(),
                m.mtime_nsec()
            ));
        }
        let mut names: Vec<String> = fs::read_dir(self.dir.path())
            .expect("read bait")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        out.push(names.join(","));
        out.push(fs::read_to_string(self.dir.path().join("secret")).expect("read bait"));
        assert!(
            fs::read_dir(self.dir.path().join("empty"))
                .expect("read")
                .next()
                .is_none(),
            "the bait's empty dir got an entry"
        );
        out
    }
}

/// A shell command (for `/busybox sh -c`) making `/NAME0 -> NAME1 -> ... -> NAME299` with
/// `NAME256 -> target`.
fn long_chain(name: &str, target: &str) -> String {
    format!(
        "i=0; while [ $i -lt 300 ]; do /busybox ln -s {name}$((i+1)) /{name}$i; i=$((i+1)); done; \
         /busybox rm /{name}256; /busybox ln -s {target} /{name}256"
    )
}

/// Builds `dockerfile` (with the static busybox at `/busybox` in the context, plus `extra`
/// files) into a local directory; returns (success, stderr, output dir).
fn build(dockerfile: &str, extra: &[(&str, &[u8])]) -> Option<(bool, String, tempfile::TempDir)> {
    let ctx = busybox_context(dockerfile)?;
    for (name, data) in extra {
        fs::write(ctx.path().join(name), data).expect("write context file");
    }
    Some(build_dir(ctx.path()))
}

/// Builds the context `ctx` on a fresh state dir into `<out>/fs`; returns (success, stderr,
/// out).
fn build_dir(ctx: &Path) -> (bool, String, tempfile::TempDir) {
    let state = tempdir();
    let out = tempdir();
    let o = kiln(&state)
        .args(["build", "--progress", "plain", "-o"])
        .arg(format!(
            "type=local,dest={}",
            out.path().join("fs").display()
        ))
        .arg(ctx)
        .output()
        .expect("run kiln");
    let (_, stderr) = text(&o);
    (o.status.success(), stderr, out)
}

/// Every regular file's bytes in the exported rootfs, to check no host byte got in.
fn assert_no_host_bytes(out: &Path) {
    let fs_dir = out.join("fs");
    if !fs_dir.exists() {
        return;
    }
    for e in walk(&fs_dir) {
        if fs::symlink_metadata(&e).is_ok_and(|m| m.is_file()) {
            let data = fs::read(&e).expect("read exported file");
            assert!(
                !data
                    .windows(b"host secret bytes".len())
                    .any(|w| w == b"host secret bytes"),
                "host bytes in the image at {}",
                e.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

fn assert_too_many_links(ok: bool, stderr: &str) {
    assert!(!ok, "the build should fail:\n{stderr}");
    assert!(
        stderr.contains("too many levels of symbolic links"),
        "error names the symlink chain:\n{stderr}"
    );
}

#[test]
fn issue10_long_chain_copy_destination_stays_inside() {
    if not_root() {
        return;
    }
    let bait = Bait::new();
    let before = bait.state();
    let df = format!(
        "FROM scratch\nCOPY busybox /busybox\nRUN [\"/busybox\", \"sh\", \"-c\", \"{}\"]\n\
         COPY Dockerfile /c0/written-by-copy\n",
        long_chain("c", bait.path())
    );
    let Some((ok, stderr, out)) = build(&df, &[]) else {
        return;
    };
    assert_too_many_links(ok, &stderr);
    assert!(
        stderr.contains("Dockerfile:4"),
        "names the COPY line:\n{stderr}"
    );
    assert_eq!(bait.state(), before, "host bait changed");
    assert_no_host_bytes(out.path());
}

#[test]
fn issue10_long_chain_workdir_stays_inside() {
    if not_root() {
        return;
    }
    let bait = Bait::new();
    let before = bait.state();
    let df = format!(
        "FROM scratch\nCOPY busybox /busybox\nRUN [\"/busybox\", \"sh\", \"-c\", \"{}\"]\n\
         WORKDIR /c0/made-by-workdir\n",
        long_chain("c", bait.path())
    );
    let Some((ok, stderr, _out)) = build(&df, &[]) else {
        return;
    };
    assert_too_many_links(ok, &stderr);
    assert_eq!(bait.state(), before, "host bait changed");
}

#[test]
fn issue10_short_chain_resolves_inside_the_root() {
    // A chain within the limit that ends in an absolute link to the bait's host path: the
    // writes land at that path inside the image, as in a container.
    if not_root() {
        return;
    }
    let bait = Bait::new();
    let before = bait.state();
    let df = format!(
        "FROM scratch\nCOPY busybox /busybox\n\
         RUN [\"/busybox\", \"sh\", \"-c\", \"/busybox ln -s s1 /s0 && /busybox ln -s /s2 /s1 && /busybox ln -s {} /s2\"]\n\
         COPY Dockerfile /s0/written-by-copy\nWORKDIR /s0/made-by-workdir\nADD evil.tar /s0/added/\n",
        bait.path()
    );
    let tarball = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "from-tar", &b"tar!"[..])
            .expect("append");
        b.into_inner().expect("tar")
    };
    let Some((ok, stderr, out)) = build(&df, &[("evil.tar", &tarball)]) else {
        return;
    };
    assert!(ok, "{stderr}");
    assert_eq!(bait.state(), before, "host bait changed");
    let inside = out
        .path()
        .join("fs")
        .join(bait.path().trim_start_matches('/'));
    assert!(
        fs::read_to_string(inside.join("written-by-copy"))
            .expect("COPY landed inside the image")
            .starts_with("FROM scratch")
    );
    assert!(
        inside.join("made-by-workdir").is_dir(),
        "WORKDIR made inside"
    );
    assert_eq!(
        fs::read_to_string(inside.join("added/from-tar")).expect("ADD inside"),
        "tar!"
    );
    assert_no_host_bytes(out.path());
}

#[test]
fn issue10_long_chain_add_stays_inside() {
    if not_root() {
        return;
    }
    let bait = Bait::new();
    let before = bait.state();
    let df = format!(
        "FROM scratch\nCOPY busybox /busybox\nRUN [\"/busybox\", \"sh\", \"-c\", \"{}\"]\n\
         ADD Dockerfile /c0/added\n",
        long_chain("c", bait.path())
    );
    let Some((ok, stderr, _out)) = build(&df, &[]) else {
        return;
    };
    assert_too_many_links(ok, &stderr);
    assert_eq!(bait.state(), before, "host bait changed");
}

#[test]
fn issue10_add_chown_of_tar_with_absolute_names_stays_inside() {
    if not_root() {
        return;
    }
    let bait = Bait::new();
    let before = bait.state();
    let victim = format!("{}/secret", bait.path());
    let tarball = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        // An absolute member name (tar::Builder refuses to write one, so set the raw bytes).
        let gnu = h.as_gnu_mut().expect("gnu header");
        gnu.name[..victim.len()].copy_from_slice(victim.as_bytes());
        h.set_cksum();
        b.append(&h, &b"evil"[..]).expect("append");
        b.into_inner().expect("tar")
    };
    let df = "FROM scratch\nADD --chown=4321:4321 evil.tar /d/\n";
    let Some((ok, stderr, out)) = build(df, &[("evil.tar", &tarball)]) else {
        return;
    };
    assert!(ok, "{stderr}");
    assert_eq!(bait.state(), before, "host bait changed (chowned?)");
    let inside = out.path().join("fs/d").join(victim.trim_start_matches('/'));
    assert_eq!(
        fs::read_to_string(&inside).expect("member inside /d"),
        "evil"
    );
    assert_eq!(fs::metadata(&inside).expect("stat").uid(), 4321);
}

#[test]
fn issue10_long_chain_in_the_context_is_not_read() {
    if not_root() {
        return;
    }
    let bait = Bait::new();
    let before = bait.state();
    let df = "FROM scratch\nCOPY l0/secret /stolen\n";
    let Some(ctx) = busybox_context(df) else {
        return;
    };
    for i in 0..300 {
        let target = if i == 256 {
            bait.path().to_string()
        } else {
            format!("l{}", i + 1)
        };
        std::os::unix::fs::symlink(target, ctx.path().join(format!("l{i}"))).expect("symlink");
    }
    let (ok, stderr, out) = build_dir(ctx.path());
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("too many levels of symbolic links") || stderr.contains("not found"),
        "{stderr}"
    );
    assert_eq!(bait.state(), before);
    assert_no_host_bytes(out.path());
}

#[test]
fn issue10_long_chain_copy_from_stage_is_not_read() {
    if not_root() {
        return;
    }
    let bait = Bait::new();
    let before = bait.state();
    let df = format!(
        "FROM scratch AS evil\nCOPY busybox /busybox\nRUN [\"/busybox\", \"sh\", \"-c\", \"{}\"]\n\
         FROM scratch\nCOPY --from=evil /c0/secret /stolen\n",
        long_chain("c", bait.path())
    );
    let Some((ok, stderr, out)) = build(&df, &[]) else {
        return;
    };
    assert!(!ok, "{stderr}");
    assert_eq!(bait.state(), before);
    assert_no_host_bytes(out.path());
}

#[test]
fn issue10_long_chain_bind_and_cache_mount_sources_stay_inside() {
    if not_root() {
        return;
    }
    let bait = Bait::new();
    let before = bait.state();
    for mount in [
        "--mount=type=bind,from=evil,source=/c0,target=/m,rw",
        "--mount=type=cache,from=evil,source=/c0,target=/m,uid=77,mode=0777",
    ] {
        let df = format!(
            "FROM scratch AS evil\nCOPY busybox /busybox\nRUN [\"/busybox\", \"sh\", \"-c\", \"{}\"]\n\
             FROM evil\nRUN {mount} [\"/busybox\", \"sh\", \"-c\", \"/busybox cat /m/secret > /stolen; /busybox touch /m/new; true\"]\n",
            long_chain("c", bait.path())
        );
        let Some((ok, stderr, out)) = build(&df, &[]) else {
            return;
        };
        assert!(!ok, "{mount}: the source cannot be resolved:\n{stderr}");
        assert_eq!(bait.state(), before, "{mount}: host bait changed");
        assert_no_host_bytes(out.path());
    }
}

#[test]
fn issue10_hostile_base_image_chain_stays_inside() {
    // A base image whose /usr/local is a long chain ending at a host path: an innocent
    // `FROM it` + `COPY app /usr/local/bin/` used to write to the host.
    if not_root() {
        return;
    }
    let Some(registry) = common::registry::Registry::start(None) else {
        return;
    };
    let bait = Bait::new();
    let before = bait.state();
    let name = format!("{}/kiln-test/hostile:1", registry.addr);
    let df = format!(
        "FROM scratch\nCOPY busybox /busybox\n\
         RUN [\"/busybox\", \"sh\", \"-c\", \"{}; /busybox mkdir /usr && /busybox ln -s /u0 /usr/local\"]\n",
        long_chain("u", bait.path())
    );
    let Some(ctx) = busybox_context(&df) else {
        return;
    };
    let state = tempdir();
    let o = kiln(&state)
        .args(["build", "--progress", "plain", "-t", &name, "--push"])
        .arg(ctx.path())
        .output()
        .expect("run kiln");
    assert!(o.status.success(), "publish: {}", text(&o).1);

    let app = tempdir();
    common::write_files(
        app.path(),
        &[
            (
                "Dockerfile",
                &format!("FROM {name}\nCOPY app /usr/local/bin/\n"),
            ),
            ("app", "#!/bin/sh\n"),
        ],
    );
    let fresh = tempdir();
    let o = kiln(&fresh)
        .args(["build", "--progress", "plain", "-t", "app:1"])
        .arg(app.path())
        .output()
        .expect("run kiln");
    let (_, stderr) = text(&o);
    assert_too_many_links(o.status.success(), &stderr);
    assert_eq!(bait.state(), before, "host bait changed");
}

#[test]
fn issue12_megabyte_copy_source_path_is_not_found_quickly() {
    // A 1 MiB COPY source path took 41 s to report "not found" (quadratic resolution).
    if not_root() {
        return;
    }
    let ctx = tempdir();
    let path = "a/".repeat(1 << 19);
    let path = path.trim_end_matches('/');
    common::write_files(
        ctx.path(),
        &[("Dockerfile", &format!("FROM scratch\nCOPY {path} /\n"))],
    );
    let state = tempdir();
    let started = std::time::Instant::now();
    let o = kiln(&state)
        .args(["build", "--progress", "plain"])
        .arg(ctx.path())
        .output()
        .expect("run kiln");
    let took = started.elapsed();
    let (_, stderr) = text(&o);
    assert!(!o.status.success());
    assert!(
        stderr.contains("error: Dockerfile:2: failed to compute cache key"),
        "{}",
        &stderr[stderr.len().saturating_sub(300)..]
    );
    assert!(stderr.trim_end().ends_with("a/a\": not found"), "not found");
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
}

#[test]
fn issue10_dockerfile_symlink_out_of_its_directory_is_not_read() {
    // BuildKit reads the Dockerfile from the directory it was sent, so a `Dockerfile` linking out
    // of it is missing; kiln used to read the host file and print it in the syntax error.
    let bait = Bait::new();
    let ctx = tempdir();
    let secret = format!("{}/secret", bait.path());
    std::os::unix::fs::symlink(&secret, ctx.path().join("Dockerfile")).expect("symlink");
    std::os::unix::fs::symlink(&secret, ctx.path().join("other.Dockerfile")).expect("symlink");
    common::write_files(ctx.path(), &[("real", "FROM scratch\nCOPY real /\n")]);
    std::os::unix::fs::symlink("real", ctx.path().join("inside.Dockerfile")).expect("symlink");
    let state = tempdir();
    let file = ctx.path().join("other.Dockerfile");
    for extra in [vec![], vec!["-f".to_string(), file.display().to_string()]] {
        let o = kiln(&state)
            .args(["build", "--progress", "plain"])
            .args(&extra)
            .arg(ctx.path())
            .output()
            .expect("run kiln");
        let (stdout, stderr) = text(&o);
        assert!(!o.status.success(), "{stderr}");
        assert!(
            !stderr.contains("host secret") && !stdout.contains("host secret"),
            "{stderr}"
        );
        assert!(stderr.contains("No such file or directory"), "{stderr}");
    }
    if not_root() {
        return;
    }
    // A link that stays inside the directory is followed.
    let inside = ctx.path().join("inside.Dockerfile");
    let o = kiln(&state)
        .args(["build", "--progress", "plain", "-f"])
        .arg(&inside)
        .arg(ctx.path())
        .output()
        .expect("run kiln");
    assert!(o.status.success(), "{}", text(&o).1);
}

#[test]
fn issue10_default_network_cannot_reach_the_hosts_loopback() {
    // `--network default` was the host's namespace: a RUN reached every 127.0.0.1 service.
    if not_root() {
        return;
    }
    if !std::process::Command::new("sh")
        .args(["-c", "command -v slirp4netns"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        common::skip("slirp4netns is not installed");
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = {
        let (served, stop) = (served.clone(), stop.clone());
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        c.set_nonblocking(false).ok();
                        let mut buf = [0u8; 1024];
                        let _ = c.read(&mut buf);
                        let _ = c
                            .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nhost-only\n");
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        })
    };
    for (mode, reachable) in [("default", false), ("none", false), ("host", true)] {
        let df = format!(
            "FROM scratch\nCOPY busybox /busybox\n\
             RUN [\"/busybox\", \"sh\", \"-c\", \"echo GET | /busybox nc -w 5 127.0.0.1 {port} > /got; echo $? > /rc; /busybox ls /sys/class/net > /ifaces\"]\n"
        );
        let Some(ctx) = busybox_context(&df) else {
            return;
        };
        let state = tempdir();
        let out = tempdir();
        let before = served.load(std::sync::atomic::Ordering::SeqCst);
        let o = kiln(&state)
            .args(["build", "--progress", "plain", "--network", mode, "-o"])
            .arg(format!("type=local,dest={}", out.path().display()))
            .arg(ctx.path())
            .output()
            .expect("run kiln");
        let (_, stderr) = text(&o);
        assert!(o.status.success(), "{mode}: {stderr}");
        let rc = fs::read_to_string(out.path().join("rc")).expect("rc");
        let hits = served.load(std::sync::atomic::Ordering::SeqCst) - before;
        let ifaces = fs::read_to_string(out.path().join("ifaces")).expect("ifaces");
        if reachable {
            assert_eq!(rc.trim(), "0", "{mode}: the host's service is reachable");
            assert!(
                fs::read_to_string(out.path().join("got"))
                    .expect("got")
                    .ends_with("host-only\n")
            );
            assert_eq!(hits, 1);
        } else {
            assert_ne!(rc.trim(), "0", "{mode}: reached the host's loopback");
            assert_eq!(hits, 0, "{mode}: the host's service saw a connection");
            assert!(!stderr.contains("slirp4netns is not installed"), "{stderr}");
            let want = if mode == "none" { "lo\n" } else { "lo\ntap0\n" };
            assert_eq!(ifaces, want, "{mode}: interfaces");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    server.join().expect("server");
}
