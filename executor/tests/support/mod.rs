//! Fixtures for the executor's integration tests: a busybox rootfs built from the system's
//! busybox-static, an overlay over it, and an executor re-executing the crate's init binary.

#![allow(dead_code, unreachable_pub, unused_macros, unused_imports)]

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_executor::{
    CancelToken, Executor, ExecutorConfig, ExitStatus, MountSpec, ProcessSpec, RootFs, RootMount,
    Stream,
};

pub const BUSYBOX: &str = "/bin/busybox";

/// Whether `test` can run here (root, busybox); else a skip message, or a panic under CI
/// (kiln-testkit's rule).
pub fn can_run(test: &str) -> bool {
    kiln_testkit::require_root(test)
        && (Path::new(BUSYBOX).exists()
            || kiln_testkit::skip(
                test,
                &format!("needs {BUSYBOX} (apt-get install busybox-static)"),
            ))
}

/// `true` (after the skip message) when `test` cannot run here.
pub fn skip_reason_for(test: &str) -> bool {
    !can_run(test)
}

macro_rules! require_env {
    () => {
        if !support::can_run(module_path!()) {
            return;
        }
    };
}
pub(crate) use require_env;

pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
    alice:x:1000:1000:Alice:/home/alice:/bin/sh\n\
    bob:x:1001:100:Bob:/home/bob:/bin/sh\n";
pub const GROUP: &str = "root:x:0:\n\
    daemon:x:1:\n\
    wheel:x:10:alice\n\
    users:x:100:bob\n\
    alice:x:1000:\n\
    docker:x:999:alice,bob\n";

/// A busybox rootfs as the lower layer plus an overlay upper/work, all in one temp dir.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub executor: Executor,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::with_busybox(Path::new(BUSYBOX))
    }

    /// A fixture whose rootfs holds `busybox` (another architecture's, say) instead of the
    /// system's.
    pub fn with_busybox(busybox: &Path) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let lower = dir.path().join("lower");
        build_busybox_rootfs_with(&lower, busybox);
        for d in ["upper", "work", "state"] {
            fs::create_dir(dir.path().join(d)).expect("mkdir");
        }
        let executor = Executor::new(ExecutorConfig {
            init_binary: PathBuf::from(env!("CARGO_BIN_EXE_kiln-executor-init")),
            state_dir: dir.path().join("state"),
        })
        .expect("executor");
        Fixture { dir, executor }
    }

    pub fn lower(&self) -> PathBuf {
        self.dir.path().join("lower")
    }

    pub fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn rootfs(&self) -> RootFs {
        RootFs::Mounts(vec![RootMount {
            fstype: "overlay".into(),
            source: "overlay".into(),
            options: vec![format!(
                "lowerdir={},upperdir={},workdir={}",
                self.lower().display(),
                self.upper().display(),
                self.dir.path().join("work").display()
            )],
        }])
    }

    /// An overlay over the same lower with its own upper (`layers/<name>/{upper,work}`), for
    /// runs that happen at the same time: an upper dir serves one mount at a time.
    pub fn other_rootfs(&self, name: &str) -> RootFs {
        let base = self.dir.path().join("layers").join(name);
        fs::create_dir_all(base.join("upper")).expect("mkdir upper");
        fs::create_dir_all(base.join("work")).expect("mkdir work");
        RootFs::Mounts(vec![RootMount {
            fstype: "overlay".into(),
            source: "overlay".into(),
            options: vec![format!(
                "lowerdir={},upperdir={},workdir={}",
                self.lower().display(),
                base.join("upper").display(),
                base.join("work").display()
            )],
        }])
    }

    /// Runs `sh -c script` with `spec` as the base, collecting output.
    pub fn sh(&self, script: &str, spec: ProcessSpec, mounts: &[MountSpec]) -> Output {
        self.sh_in(&self.rootfs(), script, spec, mounts)
    }

    /// [`Fixture::sh`] on another rootfs.
    pub fn sh_in(
        &self,
        rootfs: &RootFs,
        script: &str,
        spec: ProcessSpec,
        mounts: &[MountSpec],
    ) -> Output {
        let spec = ProcessSpec {
            args: vec!["/bin/sh".into(), "-c".into(), script.into()],
            ..spec
        };
        self.run_in(rootfs, &spec, mounts)
    }

    pub fn run(&self, spec: &ProcessSpec, mounts: &[MountSpec]) -> Output {
        self.run_in(&self.rootfs(), spec, mounts)
    }

    pub fn run_in(&self, rootfs: &RootFs, spec: &ProcessSpec, mounts: &[MountSpec]) -> Output {
        let mut out = Output::default();
        let status = self
            .executor
            .run(
                spec,
                rootfs,
                mounts,
                &mut |stream, line| match stream {
                    Stream::Stdout => out.stdout.push_str(&String::from_utf8_lossy(line)),
                    Stream::Stderr => out.stderr.push_str(&String::from_utf8_lossy(line)),
                },
                &CancelToken::new(),
            )
            .unwrap_or_else(|e| panic!("run {:?}: {e}", spec.args));
        out.status = Some(status);
        out
    }
}

#[derive(Debug, Default)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub status: Option<ExitStatus>,
}

impl Output {
    pub fn code(&self) -> i32 {
        self.status.as_ref().map_or(-1, ExitStatus::code)
    }

    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code(),
            0,
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        &self.stdout
    }
}

/// Copies the system busybox into `root` with a symlink per applet and minimal /etc files.
pub fn build_busybox_rootfs(root: &Path) {
    build_busybox_rootfs_with(root, Path::new(BUSYBOX));
}

/// [`build_busybox_rootfs`] with `busybox` as /bin/busybox (the applets are the system
/// busybox's).
pub fn build_busybox_rootfs_with(root: &Path, busybox: &Path) {
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "tmp",
        "root",
        "home/alice",
        "var",
    ] {
        fs::create_dir_all(root.join(d)).expect("mkdir rootfs");
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod");
    fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = root.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            symlink("busybox", &link).expect("applet symlink");
        }
    }
    fs::write(root.join("etc/passwd"), PASSWD).expect("passwd");
    fs::write(root.join("etc/group"), GROUP).expect("group");
}

/// Every path under `dir`, relative, sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(base, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Bind mounts that make the host's dynamically linked `binary` runnable in the busybox rootfs
/// (its libraries and loader at their own paths, per `ldd`), with the binary at `/probe`.
pub fn host_binary_mounts(binary: &Path) -> Vec<kiln_executor::MountSpec> {
    let ldd = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .expect("ldd");
    let mut mounts = vec![kiln_executor::MountSpec::Bind(kiln_executor::BindMount {
        source: binary.to_path_buf(),
        target: "/probe".into(),
        rw: false,
    })];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        mounts.push(kiln_executor::MountSpec::Bind(kiln_executor::BindMount {
            source: fs::canonicalize(path).expect("library"),
            target: path.into(),
            rw: false,
        }));
    }
    mounts
}

/// Compiles `tests/fixtures/<name>.c` statically into `out`; `None` (skip) without gcc or a
/// static libc, a panic under CI.
pub fn compile_static(name: &str, out: &Path) -> Option<PathBuf> {
    compile_static_with(name, out, &[])
}

/// [`compile_static`] with more gcc flags (`-m32 -nostdlib`).
pub fn compile_static_with(name: &str, out: &Path, flags: &[&str]) -> Option<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.c"));
    let binary = out.join(name);
    let result = Command::new("gcc")
        .args(flags)
        .args(["-static", "-no-pie", "-O1", "-o"])
        .arg(&binary)
        .arg(&source)
        .output();
    match result {
        Ok(o) if o.status.success() => Some(binary),
        other => {
            let reason = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            kiln_testkit::skip(
                name,
                &format!(
                    "needs gcc and a static libc (libc6-dev): gcc -static {}: {reason}",
                    source.display()
                ),
            );
            None
        }
    }
}

/// `mknod(2)` of `path` in the test's own namespace (the lower dir of the rootfs).
pub fn mknod(path: &Path, kind: libc::mode_t, major: u32, minor: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid C string.
    let ret = unsafe { libc::mknod(c.as_ptr(), kind | 0o666, libc::makedev(major, minor)) };
    assert_eq!(
        ret,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Debian's static arm64 busybox as `../shared/registry-up.sh --multi` fetches it
/// (`$PEERS_STATE/busybox-arm64`, default /tmp/peers; the script runs when it is missing), or
/// `$KILN_ARM64_BUSYBOX`; `None` after a skip message (a panic under CI).
pub fn arm64_busybox(test: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KILN_ARM64_BUSYBOX") {
        return Some(PathBuf::from(path));
    }
    let state =
        std::env::var_os("PEERS_STATE").map_or_else(|| PathBuf::from("/tmp/peers"), PathBuf::from);
    let busybox = state.join("busybox-arm64/bin/busybox");
    if !busybox.exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/registry-up.sh");
        if script.exists() {
            let _ = Command::new("timeout")
                .arg("300")
                .arg("bash")
                .arg(&script)
                .arg("--multi")
                .stdout(std::process::Stdio::null())
                .status();
        }
    }
    if busybox.exists() {
        Some(busybox)
    } else {
        kiln_testkit::skip(
            test,
            &format!(
                "needs an arm64 busybox at {} (../shared/registry-up.sh --multi) or \
                 KILN_ARM64_BUSYBOX",
                busybox.display()
            ),
        );
        None
    }
}
