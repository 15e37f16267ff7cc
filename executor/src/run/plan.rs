//! Planning a run on the host side: the caller's specs become the init's [`InitSpec`], with
//! absolute mount targets (sorted parents first), cache directories locked, secrets and /etc
//! files as bytes, ssh proxies started and the private network's prerequisites checked.

use std::path::Path;

use super::Executor;
use crate::cache::{self, CacheLease};
use crate::chroot::RunDirBind;
use crate::error::{Error, Result};
use crate::etc_files;
use crate::proto::{InitSpec, PlannedMount, RootPlan};
use crate::spec::{
    CancelToken, DEFAULT_HOSTNAME, DEFAULT_PATH, MountSpec, Network, ProcessSpec, RootFs,
};
use crate::ssh_proxy::SshProxy;

impl Executor {
    /// Resolves everything the init needs on the host side: absolute targets, cache
    /// directories (locked, held in `held`), secrets, ssh proxies, the /etc files.
    pub(super) fn plan(
        &self,
        process: &ProcessSpec,
        rootfs: &RootFs,
        mounts: &[MountSpec],
        cancel: &CancelToken,
        run_dir: &Path,
        held: &mut Held,
    ) -> Result<InitSpec> {
        let cwd = if process.cwd.is_empty() {
            "/".to_owned()
        } else {
            absolute("/", &process.cwd)
        };
        let hostname = process
            .hostname
            .clone()
            .unwrap_or_else(|| DEFAULT_HOSTNAME.to_owned());
        let mut env = process.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        let mut planned = vec![
            PlannedMount::File {
                contents: etc_files::hosts(&hostname, &process.extra_hosts),
                target: "/etc/hosts".into(),
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
            PlannedMount::File {
                contents: etc_files::resolv_conf(self.host_resolv_conf.as_deref(), process.network),
                target: "/etc/resolv.conf".into(),
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
            PlannedMount::File {
                contents: format!("{hostname}\n").into_bytes(),
                target: "/etc/hostname".into(),
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        ];
        let mut ssh_count = 0;
        for mount in mounts {
            match mount {
                MountSpec::Bind(b) => planned.push(PlannedMount::Bind {
                    source: b.source.clone(),
                    target: target_of(&cwd, &b.target)?,
                    readonly: !b.rw,
                    discard_writes: b.rw,
                }),
                MountSpec::Volume(v) => planned.push(PlannedMount::Bind {
                    source: v.source.clone(),
                    target: target_of(&cwd, &v.target)?,
                    readonly: v.readonly,
                    discard_writes: false,
                }),
                MountSpec::Cache(c) => {
                    let target = target_of(&cwd, &c.target)?;
                    let lease = cache::acquire(&self.config.state_dir, c, cancel)?;
                    planned.push(PlannedMount::Bind {
                        source: lease.dir.clone(),
                        target,
                        readonly: c.readonly,
                        discard_writes: false,
                    });
                    held.leases.push(lease);
                }
                MountSpec::Tmpfs(t) => planned.push(PlannedMount::Tmpfs {
                    target: target_of(&cwd, &t.target)?,
                    size: t.size,
                }),
                MountSpec::Secret(s) => {
                    let Some(contents) = &s.contents else {
                        if s.required {
                            return Err(Error::SecretMissing { id: s.id.clone() });
                        }
                        continue;
                    };
                    if let Some(var) = &s.env {
                        env.push(format!("{var}={}", String::from_utf8_lossy(contents)));
                    }
                    let target = match (&s.target, &s.env) {
                        (Some(t), _) => Some(target_of(&cwd, t)?),
                        (None, None) => Some(format!("/run/secrets/{}", s.id)),
                        (None, Some(_)) => None,
                    };
                    if let Some(target) = target {
                        planned.push(PlannedMount::File {
                            contents: contents.clone(),
                            target,
                            mode: s.mode,
                            uid: s.uid,
                            gid: s.gid,
                        });
                    }
                }
                MountSpec::Ssh(s) => {
                    let Some(socket) = &s.socket else {
                        if s.required {
                            return Err(Error::SshMissing { id: s.id.clone() });
                        }
                        continue;
                    };
                    let target = match &s.target {
                        Some(t) => target_of(&cwd, t)?,
                        None => format!("/run/buildkit/ssh_agent.{ssh_count}"),
                    };
                    if ssh_count == 0 && !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                        env.push(format!("SSH_AUTH_SOCK={target}"));
                    }
                    let proxy = SshProxy::start(
                        socket,
                        run_dir.join(format!("ssh-{ssh_count}.sock")),
                        s.uid,
                        s.gid,
                        s.mode,
                    )?;
                    ssh_count += 1;
                    planned.push(PlannedMount::Bind {
                        source: proxy.path().to_path_buf(),
                        target,
                        readonly: false,
                        discard_writes: false,
                    });
                    held.ssh.push(proxy);
                }
            }
        }
        // Parents before children, otherwise in the given order (containerd's sortMounts).
        planned.sort_by_key(|m| Path::new(m.target()).components().count());

        let spec = InitSpec {
            parent_pid: std::process::id() as i32,
            run_dir: run_dir.to_path_buf(),
            rootfs: match rootfs {
                RootFs::Mounts(m) => RootPlan::Mounts(m.clone()),
                RootFs::Dir(d) => RootPlan::Dir(d.clone()),
            },
            args: process.args.clone(),
            env,
            cwd,
            user: process.user.clone(),
            hostname,
            new_network: matches!(process.network, Network::None | Network::Private),
            nat: match process.network {
                Network::Private => {
                    let slirp = self
                        .slirp4netns
                        .clone()
                        .or_else(|| crate::oci::find_in("slirp4netns", std::ffi::OsStr::new("")))
                        .ok_or_else(|| {
                            Error::InvalidSpec(
                                "network mode private needs slirp4netns in /usr/bin or \
                                 /usr/sbin, or given with Executor::with_slirp4netns \
                                 (apt-get install slirp4netns)"
                                    .to_owned(),
                            )
                        })?;
                    crate::nat::check_private_network()?;
                    Some(slirp)
                }
                _ => None,
            },
            private_root: !self.root_is_mount,
            stdin: false,
            tty: None,
            publish: Vec::new(),
            mounts: planned,
            oci_runtime: self.oci_runtime.clone(),
        };
        Ok(spec)
    }
}

/// What a run holds on the host until it ends: cache locks, ssh proxies and, in a chroot, the
/// bind of the run directory.
#[derive(Debug, Default)]
pub(super) struct Held {
    leases: Vec<CacheLease>,
    ssh: Vec<SshProxy>,
    pub(super) run_dir_bind: Option<RunDirBind>,
}

/// The joined absolute form of a mount target; `/` itself is refused like BuildKit does.
fn target_of(cwd: &str, target: &str) -> Result<String> {
    let abs = absolute(cwd, target);
    if abs == "/" {
        return Err(Error::InvalidSpec(format!(
            "invalid mount target `{target}`"
        )));
    }
    Ok(abs)
}

/// `path` made absolute against `base` and cleaned lexically.
fn absolute(base: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{base}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_joined_and_cleaned() {
        assert_eq!(absolute("/src", "cache"), "/src/cache");
        assert_eq!(absolute("/src", "/a/../b/./c/"), "/b/c");
        assert!(target_of("/", "/x/..").is_err());
    }
}
