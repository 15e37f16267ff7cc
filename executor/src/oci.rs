//! The optional second backend: the same container described as an OCI runtime spec
//! (`config.json`, through the oci-spec crate) and run by an external runtime such as runc or
//! crun. The container init still mounts the rootfs, the RUN mounts and the /etc files (and
//! removes the stubs afterwards); the runtime creates the PID, IPC, UTS and mount namespaces,
//! /proc, /dev, /sys, credentials and capabilities. A differential test runs the same steps
//! through both backends and compares the resulting layers.

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde_json::json;

use crate::error::{Error, Result};
use crate::pid1::{DEFAULT_CAPS, MASKED_PATHS, READONLY_PATHS};
use crate::proto::{InitSpec, PlannedMount};
use crate::step_mounts::under_dev;
use crate::sys;
use crate::user::ExecUser;

/// Capability names of [`DEFAULT_CAPS`], by bit number.
const CAP_NAMES: &[(u32, &str)] = &[
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (3, "CAP_FOWNER"),
    (4, "CAP_FSETID"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (10, "CAP_NET_BIND_SERVICE"),
    (13, "CAP_NET_RAW"),
    (18, "CAP_SYS_CHROOT"),
    (27, "CAP_MKNOD"),
    (29, "CAP_AUDIT_WRITE"),
    (31, "CAP_SETFCAP"),
];

/// The runtime spec of one step. `env` is final (with HOME); `scratch` holds the files of
/// mounts below /dev.
pub(crate) fn runtime_spec(
    spec: &InitSpec,
    root: &Path,
    scratch: &Path,
    user: &ExecUser,
    env: &[String],
    cwd: &str,
) -> Result<Spec> {
    let caps: Vec<&str> = CAP_NAMES
        .iter()
        .filter(|(bit, _)| DEFAULT_CAPS & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect();
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    for (index, mount) in spec.mounts.iter().enumerate() {
        if !under_dev(mount.target()) {
            continue;
        }
        mounts.push(match mount {
            PlannedMount::Bind {
                source,
                target,
                readonly,
                discard_writes,
            } => {
                let ro = if *readonly || *discard_writes {
                    "ro"
                } else {
                    "rw"
                };
                json!({"destination": target, "type": "bind", "source": source,
                       "options": ["rbind", ro, "nodev"]})
            }
            PlannedMount::Tmpfs { target, size } => {
                let mut options = vec!["nosuid".to_owned(), "nodev".to_owned()];
                options.extend(size.map(|s| format!("size={s}")));
                json!({"destination": target, "type": "tmpfs", "source": "tmpfs",
                       "options": options})
            }
            PlannedMount::File {
                contents,
                target,
                mode,
                uid,
                gid,
            } => {
                let file = scratch.join(format!("file-{index}"));
                fs::write(&file, contents).map_err(|e| Error::io("write mount file", &file, e))?;
                std::os::unix::fs::chown(&file, Some(*uid), Some(*gid))
                    .map_err(|e| Error::io("chown mount file", &file, e))?;
                std::fs::set_permissions(
                    &file,
                    std::os::unix::fs::PermissionsExt::from_mode(*mode & 0o7777),
                )
                .map_err(|e| Error::io("chmod mount file", &file, e))?;
                json!({"destination": target, "type": "bind", "source": file,
                       "options": ["bind", "ro", "nodev"]})
            }
        });
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if spec.new_network {
        // The init's own namespace, where loopback is already up.
        namespaces.push(
            json!({"type": "network", "path": format!("/proc/{}/ns/net", std::process::id())}),
        );
    }
    let value = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.groups},
            "args": spec.args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": true,
        },
        "root": {"path": root, "readonly": false},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "maskedPaths": MASKED_PATHS.iter().map(|p| format!("/{p}")).collect::<Vec<_>>(),
            "readonlyPaths": READONLY_PATHS.iter().map(|p| format!("/{p}")).collect::<Vec<_>>(),
            "seccomp": crate::seccomp::oci_profile(),
            // Like Docker: no device but the standard ones (and mknod, whose nodes then cannot
            // be opened), enforced by the runtime's device cgroup.
            "resources": {"devices": [
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "access": "m"},
                {"allow": true, "type": "b", "access": "m"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 7, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
                {"allow": true, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
                {"allow": true, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
                {"allow": true, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
                {"allow": true, "type": "c", "major": 136, "access": "rwm"},
            ]},
        },
    });
    serde_json::from_value(value).map_err(|e| Error::InvalidSpec(format!("OCI runtime spec: {e}")))
}

/// Writes the bundle and runs `<runtime> --root <state> run --bundle <bundle> <id>`, waiting for
/// it; a SIGTERM to the init becomes `<runtime> kill <id> KILL`.
pub(crate) fn run(runtime: &Path, spec: &InitSpec, config: &Spec) -> Result<sys::WaitStatus> {
    let bundle = spec.run_dir.join("bundle");
    fs::create_dir_all(&bundle).map_err(|e| Error::io("create bundle", &bundle, e))?;
    let config_path = bundle.join("config.json");
    config.save(&config_path).map_err(|e| {
        Error::io(
            "write OCI config",
            &config_path,
            std::io::Error::other(e.to_string()),
        )
    })?;
    let state = spec.run_dir.join("oci-state");
    let id = format!(
        "kiln-{}",
        spec.run_dir.file_name().map_or_else(
            || std::process::id().to_string(),
            |n| n.to_string_lossy().into_owned()
        )
    );
    let program = cstring(runtime.as_os_str().as_encoded_bytes())?;
    let args = |rest: &[&[u8]]| -> Result<Vec<CString>> {
        let mut all: Vec<&[u8]> = vec![
            runtime.as_os_str().as_encoded_bytes(),
            b"--root",
            state.as_os_str().as_encoded_bytes(),
        ];
        all.extend_from_slice(rest);
        all.into_iter().map(cstring).collect()
    };
    let run_args = args(&[
        b"run",
        b"--bundle",
        bundle.as_os_str().as_encoded_bytes(),
        id.as_bytes(),
    ])?;
    let kill_args = args(&[b"kill", id.as_bytes(), b"KILL"])?;
    let env = [cstring(
        b"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    )?];

    sys::sigterm_sets_flag().map_err(|e| Error::sys("sigaction", "SIGTERM", e))?;
    if sys::sigterm_received() {
        return Err(Error::Cancelled);
    }
    let pid = spawn(&program, &run_args, &env)?;
    let mut killed = false;
    loop {
        match sys::wait_exited_or_interrupted(pid) {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Err(Error::sys("waitid", pid.to_string(), e)),
        }
        if sys::sigterm_received() && !killed {
            killed = true;
            if let Ok(killer) = spawn(&program, &kill_args, &env) {
                let _ = sys::waitpid(killer);
            }
        }
    }
    let status = sys::waitpid(pid).map_err(|e| Error::sys("waitpid", pid.to_string(), e));
    // Only our own files (the runtime removed its container on exit; the rootfs is elsewhere).
    for dir in [&bundle, &state] {
        let _ = fs::remove_dir_all(dir);
    }
    status
}

fn spawn(program: &CString, args: &[CString], env: &[CString]) -> Result<libc::pid_t> {
    let pid = sys::fork().map_err(|e| Error::sys("fork", "", e))?;
    if pid == 0 {
        let _ = sys::execve(program, args, env);
        sys::exit_now(127);
    }
    Ok(pid)
}

fn cstring(bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::InvalidSpec("NUL byte in a runtime argument".into()))
}

/// Finds an OCI runtime binary (`runc`, `crun`, or a path) in the caller's `PATH` and the
/// system's bin and sbin directories. (The executor itself never reads `PATH`: it is the
/// caller's choice to look there.)
pub fn find_oci_runtime(name: &str) -> Option<PathBuf> {
    find_in(name, &std::env::var_os("PATH").unwrap_or_default())
}

/// Finds `name` (or a path) in the directories of `path` (a `PATH`-style list), then the
/// system's bin and sbin directories.
pub(crate) fn find_in(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    std::env::split_paths(path)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/sbin",
                "/sbin",
                "/usr/local/bin",
                "/usr/bin",
                "/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::RootPlan;

    #[test]
    fn spec_has_dockers_caps_user_and_namespaces() {
        let init = InitSpec {
            parent_pid: 1,
            run_dir: PathBuf::from("/state/executor/run-1"),
            rootfs: RootPlan::Dir(PathBuf::from("/r")),
            args: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/w".into(),
            user: String::new(),
            hostname: "buildkitsandbox".into(),
            new_network: true,
            nat: None,
            private_root: false,
            stdin: false,
            tty: None,
            publish: Vec::new(),
            mounts: Vec::new(),
            oci_runtime: None,
        };
        let user = ExecUser {
            uid: 1000,
            gid: 100,
            groups: vec![100, 10],
            home: "/home/u".into(),
        };
        let spec = runtime_spec(
            &init,
            Path::new("/r"),
            Path::new("/s"),
            &user,
            &init.env,
            "/w",
        )
        .unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["process"]["user"]["additionalGids"], json!([100, 10]));
        assert_eq!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        assert_eq!(v["process"]["noNewPrivileges"], json!(true));
        assert_eq!(v["root"]["path"], json!("/r"));
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        assert_eq!(ns.len(), 5);
        assert!(ns[4]["path"].as_str().unwrap().ends_with("/ns/net"));
    }
}
