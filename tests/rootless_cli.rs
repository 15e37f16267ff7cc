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
