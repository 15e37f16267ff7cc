//! `kiln build` run by an ordinary user (rootless): the same image as root, byte for byte, for a
//! build whose RUN steps chown to other ids, add a user, delete a lower file and replace a
//! directory; and, for a user with no subordinate range, one id mapped: a warning, and a step
//! that needs another id fails naming /etc/subuid and the usermod command.
//!
//! Needs root (to run the binary as `kiln-rootless`, made by `scripts/rootless.sh setup`, and as
//! a bare uid through setpriv), newuidmap and the registry of ../shared/registry-up.sh.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const USER: &str = "kiln-rootless";
const REGISTRY: &str = "127.0.0.1:5000";

const DOCKERFILE: &str = "\
FROM 127.0.0.1:5000/busybox:latest
RUN mkdir -p /app && echo hi > /app/f && chown 1000:1000 /app/f \\
 && echo 'app:x:1234:1234::/home/app:/bin/sh' >> /etc/passwd \\
 && echo 'app:x:1234:' >> /etc/group && mkdir -p /home/app && chown app:app /home/app
RUN rm /bin/vi && rm -rf /etc/network && mkdir /etc/network && echo x > /etc/network/y
COPY --chown=1234:1234 Dockerfile /home/app/
RUN ls -ln /app/f /home/app/Dockerfile
";

/// A scratch directory every user may use; removed (subordinate-id files too) by root.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch() -> Scratch {
    let dir = tempfile::Builder::new()
        .prefix("kiln-rootless-cli-")
        .tempdir()
        .expect("temp dir")
        .keep();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    Scratch(dir)
}

fn can_run(test: &str) -> bool {
    if !kiln_testkit::require_root(test)
        || !kiln_testkit::require_tool(test, "newuidmap", "uidmap")
        || !kiln_testkit::require_tool(test, "setpriv", "util-linux")
    {
        return false;
    }
    if Command::new("id")
        .arg(USER)
        .output()
        .map_or(true, |o| !o.status.success())
    {
        return kiln_testkit::skip(
            test,
            &format!("needs the user {USER} (scripts/rootless.sh setup)"),
        );
    }
    let registry = Command::new("curl")
        .args([
            "-fsS",
            &format!("http://{REGISTRY}/v2/busybox/tags/list"),
            "-o",
            "/dev/null",
        ])
        .status()
        .is_ok_and(|s| s.success());
    registry || kiln_testkit::skip(test, "needs the registry of ../shared/registry-up.sh")
}

/// Copies the kiln binary and a context where `as_user` can read them; `owner` gets a HOME.
fn setup(dir: &Path, owner: &str) -> (PathBuf, PathBuf, PathBuf) {
    let bin = dir.join("kiln");
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &bin).expect("copy kiln");
    let ctx = dir.join("ctx");
    std::fs::create_dir(&ctx).expect("mkdir");
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).expect("write Dockerfile");
    std::fs::set_permissions(
        ctx.join("Dockerfile"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let home = dir.join("home");
    std::fs::create_dir(&home).expect("mkdir");
    let chown = Command::new("chown")
        .arg(owner)
        .arg(&home)
        .status()
        .expect("chown");
    assert!(chown.success());
    (bin, ctx, home)
}

/// `kiln build` of `ctx` to an OCI archive under `home`, reproducibly, as `prefix` (a
/// runuser/setpriv command line, empty for root) with HOME=`home` (so its state dir is the
/// default one: `~/.local/share/kiln`, or /var/lib/kiln's stand-in for root).
fn build(
    prefix: &[&str],
    bin: &Path,
    ctx: &Path,
    home: &Path,
    root_state: Option<&Path>,
) -> Output {
    let out = home.join("image.tar");
    let mut argv: Vec<String> = prefix.iter().map(|s| (*s).to_string()).collect();
    argv.extend([
        "env".into(),
        format!("HOME={}", home.display()),
        "SOURCE_DATE_EPOCH=1700000000".into(),
    ]);
    if let Some(state) = root_state {
        argv.push(format!("KILN_ROOT={}", state.display()));
    }
    argv.extend([
        bin.display().to_string(),
        "build".into(),
        "--progress=json".into(),
        "--network=none".into(),
        "--output".into(),
        format!("type=oci,dest={},rewrite-timestamp=true", out.display()),
        ctx.display().to_string(),
    ]);
    Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .expect("run kiln")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn rootless_build_gives_roots_image() {
    if !can_run("rootless_build_gives_roots_image") {
        return;
    }
    let dir = scratch();
    let (bin, ctx, home) = setup(&dir.0, USER);
    let root_home = dir.0.join("root-home");
    std::fs::create_dir(&root_home).expect("mkdir");
    let as_root = build(&[], &bin, &ctx, &root_home, Some(&dir.0.join("root-state")));
    assert!(as_root.status.success(), "root build: {}", text(&as_root));
    assert!(
        text(&as_root)
            .contains(r#"{"rootless":false,"snapshot_driver":"overlayfs","type":"environment"}"#),
        "{}",
        text(&as_root)
    );
    let as_user = build(&["runuser", "-u", USER, "--"], &bin, &ctx, &home, None);
    let log = text(&as_user);
    assert!(as_user.status.success(), "rootless build: {log}");
    assert!(
        log.contains("1000     1000") && log.contains("1234     1234"),
        "{log}"
    );
    assert!(
        !log.contains("warning"),
        "no warning for a user with a range: {log}"
    );
    assert!(
        log.contains(r#"{"rootless":true,"snapshot_driver":"overlayfs","type":"environment"}"#),
        "the driver is reported: {log}"
    );
    // The user's default state directory, with overlayfs in its user namespace.
    let meta = std::fs::read_to_string(home.join(".local/share/kiln/snapshots/metadata.json"))
        .expect("the state dir is ~/.local/share/kiln");
    assert!(
        meta.contains("\"driver\": \"overlay\"") && meta.contains("\"userxattr\": true"),
        "{meta}"
    );
    let (a, b) = (
        std::fs::read(root_home.join("image.tar")).expect("root image"),
        std::fs::read(home.join("image.tar")).expect("rootless image"),
    );
    assert!(a == b, "the rootless OCI archive differs from root's");
}

#[test]
fn single_id_user_is_told_how_to_get_a_range() {
    if !can_run("single_id_user_is_told_how_to_get_a_range") {
        return;
    }
    let dir = scratch();
    // A uid with no passwd entry and no /etc/subuid range.
    let (bin, ctx, home) = setup(&dir.0, "54321:54321");
    let o = build(
        &[
            "setpriv",
            "--reuid=54321",
            "--regid=54321",
            "--clear-groups",
        ],
        &bin,
        &ctx,
        &home,
        None,
    );
    let log = text(&o);
    assert!(!o.status.success(), "{log}");
    assert!(
        log.contains("rootless build with one id mapped"),
        "the warning: {log}"
    );
    assert!(log.contains("/etc/subuid"), "{log}");
    assert!(
        log.contains("usermod --add-subuids 100000-165535 --add-subgids 100000-165535"),
        "{log}"
    );
}

/// Every RUN mount type and an ONBUILD trigger, with ids other than 0: each step writes what it
/// saw to `/r-*`, and the last step prints it all.
const MOUNTS_DOCKERFILE: &str = "\
FROM 127.0.0.1:5000/busybox:latest AS base
ONBUILD RUN mkdir /onb && echo triggered > /onb/t && chown 1000:1000 /onb/t
FROM base
RUN --mount=type=bind,source=data,target=/b stat -c 'bind %u:%g %a' /b/f && cat /b/f > /r-bind
RUN --mount=type=cache,id=c,target=/c,uid=1000,gid=1000,mode=0750 stat -c 'cache %u:%g %a' /c > /r-cache && echo kept > /c/k
RUN --mount=type=cache,id=c,target=/c,uid=1000,gid=1000,mode=0750 cat /c/k >> /r-cache && stat -c 'cachefile %u:%g' /c/k >> /r-cache
RUN --mount=type=tmpfs,target=/t,size=64k echo x > /t/x && grep ' /t ' /proc/mounts | cut -d' ' -f3 > /r-tmpfs && stat -c 'tmpfile %u:%g' /t/x >> /r-tmpfs
RUN echo \"tmpfs left $(ls -A /t | wc -l)\" >> /r-tmpfs
RUN --mount=type=secret,id=s,uid=1000,gid=1000,mode=0440 stat -c 'secret %u:%g %a' /run/secrets/s > /r-secret && cat /run/secrets/s >> /r-secret
RUN test ! -e /run/secrets/s && echo 'secret gone' >> /r-secret
RUN --mount=type=ssh,uid=1000,mode=0600 stat -c 'ssh %u:%g %a %F' \"$SSH_AUTH_SOCK\" > /r-ssh
RUN stat -c 'onbuild %u:%g' /onb/t > /r-onbuild && cat /onb/t >> /r-onbuild
RUN cat /r-bind /r-cache /r-tmpfs /r-secret /r-ssh /r-onbuild
";

/// A build of `dockerfile` as the user (`as_user`: `runuser -u USER --`, empty for root) with
/// HOME=`home` and KILN_ROOT=`state`, plain progress; the OCI archive goes to `out`.
fn build_plain(
    as_user: &[&str],
    bin: &Path,
    ctx: &Path,
    home: &Path,
    state: &Path,
    out: &Path,
    extra: &[String],
) -> Output {
    let mut argv: Vec<String> = as_user.iter().map(|s| (*s).to_string()).collect();
    argv.extend([
        "env".into(),
        format!("HOME={}", home.display()),
        format!("KILN_ROOT={}", state.display()),
        "SOURCE_DATE_EPOCH=1700000000".into(),
        bin.display().to_string(),
        "build".into(),
        "--progress=plain".into(),
        "--network=none".into(),
        "--output".into(),
        format!("type=oci,dest={},rewrite-timestamp=true", out.display()),
    ]);
    argv.extend(extra.iter().cloned());
    argv.push(ctx.display().to_string());
    Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .expect("run kiln")
}

/// A context directory every user can read: `Dockerfile` and `files` (path, content).
fn context(dir: &Path, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).expect("mkdir");
    for (path, content) in std::iter::once(&("Dockerfile", dockerfile)).chain(files) {
        let p = ctx.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write");
    }
    let chmod = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&ctx)
        .status()
        .expect("chmod");
    assert!(chmod.success());
    ctx
}

/// A home directory owned by `owner`.
fn home_of(dir: &Path, name: &str, owner: &str) -> PathBuf {
    let home = dir.join(name);
    std::fs::create_dir(&home).expect("mkdir");
    let chown = Command::new("chown")
        .arg(owner)
        .arg(&home)
        .status()
        .expect("chown");
    assert!(chown.success());
    home
}

fn id_of(flag: &str) -> u32 {
    let o = Command::new("id").args([flag, USER]).output().expect("id");
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .expect("numeric id")
}

fn first_subuid() -> u32 {
    let text = std::fs::read_to_string("/etc/subuid").expect("/etc/subuid");
    kiln_userns::parse_subids(&text, Some(USER), u32::MAX)
        .first()
        .expect("a range for the user")
        .first
}

/// Files under `dir` (recursively) whose owner is not `uid`.
fn not_owned_by(dir: &Path, uid: u32) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut bad = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let m = e.path().symlink_metadata().expect("stat");
            if m.uid() != uid {
                bad.push(format!("{} ({})", e.path().display(), m.uid()));
            }
            if m.is_dir() {
                todo.push(e.path());
            }
        }
    }
    bad
}

#[test]
fn rootless_run_mounts_and_onbuild_work_as_with_root() {
    let test = "rootless_run_mounts_and_onbuild_work_as_with_root";
    if !can_run(test) {
        return;
    }
    let dir = scratch();
    let bin = dir.0.join("kiln");
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &bin).expect("copy kiln");
    let ctx = context(&dir.0, MOUNTS_DOCKERFILE, &[("data/f", "bound\n")]);
    // The user's own context, as a user builds: its files are the namespace's root's, 0:0 as
    // BuildKit shows a context. (The bind shows the owners on the host, so root sees the
    // user's uid there: printed only, not kept in the image.)
    let chown = Command::new("chown")
        .args(["-R", &format!("{USER}:")])
        .arg(&ctx)
        .status()
        .expect("chown");
    assert!(chown.success());
    let secret = dir.0.join("secret");
    std::fs::write(&secret, "s3cret\n").expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    // An agent socket anyone may connect to (the step only looks at its proxy).
    let agent = dir.0.join("agent.sock");
    let _agent = std::os::unix::net::UnixListener::bind(&agent).expect("bind agent");
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let extra = [
        "--secret".to_owned(),
        format!("id=s,src={}", secret.display()),
        "--ssh".to_owned(),
        format!("default={}", agent.display()),
    ];
    let root_home = home_of(&dir.0, "root-home", "root");
    let user_home = home_of(&dir.0, "home", USER);
    let runuser = ["runuser", "-u", USER, "--"];
    let mut images = Vec::new();
    for (who, home) in [(&[][..], &root_home), (&runuser[..], &user_home)] {
        let (state, out) = (home.join("state"), home.join("image.tar"));
        let o = build_plain(who, &bin, &ctx, home, &state, &out, &extra);
        let log = text(&o);
        assert!(o.status.success(), "{who:?}: {log}");
        let bind = if who.is_empty() {
            format!("bind {}:{} 644", id_of("-u"), id_of("-g"))
        } else {
            "bind 0:0 644".to_owned()
        };
        for want in [
            bind.as_str(),
            "bound",
            "cache 1000:1000 750",
            "kept",
            "cachefile 0:0",
            "tmpfs",
            "tmpfile 0:0",
            "tmpfs left 0",
            "secret 1000:1000 440",
            "s3cret",
            "secret gone",
            "ssh 1000:0 600 socket",
            "onbuild 1000:1000",
            "triggered",
        ] {
            assert!(
                log.lines().any(|l| l.ends_with(&format!(" {want}"))),
                "{who:?}: no `{want}` line in:\n{log}"
            );
        }
        images.push(std::fs::read(&out).expect("image"));
    }
    assert!(
        images[0] == images[1],
        "the rootless OCI archive differs from root's"
    );
    // The cache mount lives in the user's state dir: the directory as uid 1000 of the
    // namespace (a subordinate id outside), the file the step wrote as its root (the user).
    use std::os::unix::fs::MetadataExt;
    let state = user_home.join("state");
    let mut todo = vec![state.clone()];
    let mut kept = None;
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == "k") && p.parent().is_some_and(|d| d != state) {
                kept = Some(p.clone());
            }
            if p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                todo.push(p);
            }
        }
    }
    let kept = kept.expect("the cache mount's file in the state dir");
    let cache_dir = kept.parent().expect("parent").metadata().expect("stat");
    assert_eq!(cache_dir.uid(), first_subuid() + 999, "{}", kept.display());
    assert_eq!(
        kept.metadata().expect("stat").uid(),
        id_of("-u"),
        "{}",
        kept.display()
    );
}

#[test]
fn rootless_cache_export_is_imported_by_a_fresh_state_dir() {
    let test = "rootless_cache_export_is_imported_by_a_fresh_state_dir";
    if !can_run(test) {
        return;
    }
    let dir = scratch();
    let bin = dir.0.join("kiln");
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &bin).expect("copy kiln");
    // Random bytes: a step that ran again would not give the same file.
    let ctx = context(
        &dir.0,
        "FROM 127.0.0.1:5000/busybox:latest\n\
         RUN od -An -tx1 -N16 /dev/urandom > /stamp && chown 1000:1000 /stamp && ls -ln /stamp\n",
        &[],
    );
    let home = home_of(&dir.0, "home", USER);
    let cache = home.join("cache");
    let runuser = ["runuser", "-u", USER, "--"];
    let (a, b) = (home.join("a.tar"), home.join("b.tar"));
    let to = [
        "--cache-to".to_owned(),
        format!("type=local,dest={},mode=max", cache.display()),
    ];
    let o = build_plain(&runuser, &bin, &ctx, &home, &home.join("state-a"), &a, &to);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(!log.contains("Using cache (step 2/2)"), "{log}");
    assert!(log.contains("1000     1000"), "{log}");
    // The export is the user's own: no file of a subordinate id.
    assert_eq!(not_owned_by(&cache, id_of("-u")), Vec::<String>::new());
    assert!(
        cache.join("index.json").exists(),
        "an OCI layout in {}",
        cache.display()
    );
    let from = [
        "--cache-from".to_owned(),
        format!("type=local,src={}", cache.display()),
    ];
    let o = build_plain(
        &runuser,
        &bin,
        &ctx,
        &home,
        &home.join("state-b"),
        &b,
        &from,
    );
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains(" ---> Using cache"),
        "the imported step ran again: {log}"
    );
    assert!(
        std::fs::read(&a).expect("a") == std::fs::read(&b).expect("b"),
        "the image built from the imported cache differs (the RUN step ran again)"
    );
}
