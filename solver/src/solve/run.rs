//! A RUN step through kiln-executor: the process spec, the rootfs mounts of the active snapshot,
//! and every `--mount` resolved to host paths (context, stage or image views) and bytes
//! (secrets); output lines become progress events, a non-zero exit an error naming the line.

use super::*;
use crate::context::EntryKind;
use std::os::unix::fs::MetadataExt as _;

/// A RUN step's writable overlay mounted `volatile` where the kernel has it (Linux 5.10):
/// the step's fsyncs return at once (apt's dpkg syncs every file it unpacks). Nothing is lost
/// that kiln keeps: snapshots are never made durable (a power cut loses recent ones, see
/// kiln-snapshotter's crash model), and the active snapshot is mounted once, by this step,
/// then committed, so the marker `volatile` leaves in its work dir blocks no later mount.
fn with_volatile(fstype: &str, options: &[String]) -> Vec<String> {
    let mut options = options.to_vec();
    if fstype == "overlay"
        && overlay_volatile()
        && options.iter().any(|o| o.starts_with("upperdir="))
    {
        options.push("volatile".into());
    }
    options
}

/// Whether the running kernel's overlayfs knows `volatile` (5.10 and later).
fn overlay_volatile() -> bool {
    static KNOWN: OnceLock<bool> = OnceLock::new();
    *KNOWN.get_or_init(|| {
        let uname = rustix::system::uname();
        let release = uname.release().to_string_lossy();
        let mut parts = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        (major, minor) >= (5, 10)
    })
}

impl BuildCtx<'_> {
    pub(super) fn run_exec(
        &self,
        step: &StepPlan,
        r: &RunOp,
        mounts: &[snap::Mount],
        inputs: &[(NodeIndex, Arc<FsState>)],
        id: StepId,
    ) -> Result<()> {
        let executor = self.solver.executor()?;
        let rootfs = ex::RootFs::Mounts(
            mounts
                .iter()
                .map(|m| ex::RootMount {
                    fstype: m.fstype.clone(),
                    source: m.source.to_string_lossy().to_string(),
                    options: with_volatile(&m.fstype, &m.options),
                })
                .collect(),
        );
        let mut specs: Vec<ex::MountSpec> = Vec::new();
        let mut keep_views: Vec<View<'_>> = Vec::new();
        let _scratch;
        let mut ssh_index = 0;
        for m in &r.mounts {
            let rm = &m.mount;
            match rm.kind {
                kiln_parser::MountType::Bind => {
                    let target = rm.target.clone().unwrap_or_default();
                    let src_rel = rm.source.clone().unwrap_or_else(|| "/".into());
                    let base: PathBuf = match &m.source {
                        Some(SourceRef::Context) | None => self.context_root.clone(),
                        Some(other) => {
                            let st = self.state_of(inputs, self.source_vertex(other));
                            let view = View::open(
                                self.snapshotter(),
                                st.as_ref().and_then(|f| f.snapshot.as_deref()),
                            )?;
                            let p = view.path().to_path_buf();
                            keep_views.push(view);
                            p
                        }
                    };
                    let source = SourceTree {
                        root: &base,
                        ignore: None,
                    }
                    .resolve(&src_rel, true)?;
                    if std::fs::symlink_metadata(&source).is_err() {
                        return Err(Error::Plan {
                            line: step.line,
                            message: format!(
                                "failed to compute cache key: \"{src_rel}\": not found"
                            ),
                        });
                    }
                    // A context bind shows the context as BuildKit sends it: without the
                    // files .dockerignore excludes.
                    let mut source = source;
                    if matches!(m.source, Some(SourceRef::Context) | None)
                        && let Some(dir) = self.filtered_context(&src_rel)?
                    {
                        source = dir.path().to_path_buf();
                        keep_views.push(View {
                            snapshotter: self.snapshotter(),
                            key: None,
                            mounted: None,
                            empty: Some(dir),
                        });
                    }
                    specs.push(ex::MountSpec::Bind(ex::BindMount {
                        source,
                        target,
                        rw: !rm.read_only,
                    }));
                }
                kiln_parser::MountType::Cache => {
                    let target = rm.target.clone().unwrap_or_default();
                    let seed = match &m.source {
                        Some(other) if rm.from.is_some() => {
                            let st = self.state_of(inputs, self.source_vertex(other));
                            let view = View::open(
                                self.snapshotter(),
                                st.as_ref().and_then(|f| f.snapshot.as_deref()),
                            )?;
                            let p = SourceTree {
                                root: view.path(),
                                ignore: None,
                            }
                            .resolve(rm.source.as_deref().unwrap_or("/"), true)?;
                            keep_views.push(view);
                            Some(p)
                        }
                        _ => None,
                    };
                    let cache_id = rm.effective_id().unwrap_or_else(|| target.clone());
                    if seed.is_none() {
                        self.seed_cache_mount(step.line, &cache_id, rm);
                    }
                    specs.push(ex::MountSpec::Cache(ex::CacheMount {
                        id: cache_id,
                        target,
                        sharing: match rm.sharing {
                            Some(kiln_parser::CacheSharing::Private) => ex::CacheSharing::Private,
                            Some(kiln_parser::CacheSharing::Locked) => ex::CacheSharing::Locked,
                            _ => ex::CacheSharing::Shared,
                        },
                        readonly: rm.read_only,
                        uid: rm.uid.unwrap_or(0),
                        gid: rm.gid.unwrap_or(0),
                        mode: rm.mode.unwrap_or(0o755),
                        seed,
                    }));
                }
                kiln_parser::MountType::Tmpfs => {
                    specs.push(ex::MountSpec::Tmpfs(ex::TmpfsMount {
                        target: rm.target.clone().unwrap_or_default(),
                        size: rm.size,
                    }));
                }
                kiln_parser::MountType::Secret => {
                    let sid = rm.effective_id().unwrap_or_default();
                    let contents = self
                        .secrets
                        .iter()
                        .find(|(i, _)| *i == sid)
                        .map(|(_, b)| b.clone());
                    if contents.is_none() && rm.required {
                        return Err(Error::Plan {
                            line: step.line,
                            message: format!("secret {sid}: not found"),
                        });
                    }
                    specs.push(ex::MountSpec::Secret(ex::SecretMount {
                        id: sid,
                        contents,
                        target: if rm.env.is_some() && rm.target.is_none() {
                            None
                        } else {
                            rm.effective_target(0)
                        },
                        env: rm.env.clone(),
                        required: rm.required,
                        mode: rm.effective_mode().unwrap_or(0o400),
                        uid: rm.uid.unwrap_or(0),
                        gid: rm.gid.unwrap_or(0),
                    }));
                }
                kiln_parser::MountType::Ssh => {
                    let sid = rm.id.clone().unwrap_or_else(|| "default".into());
                    let socket = self
                        .req
                        .ssh
                        .iter()
                        .find(|s| s.id == sid)
                        .and_then(|s| s.paths.first().cloned());
                    if socket.is_none() && rm.required {
                        return Err(Error::Plan {
                            line: step.line,
                            message: format!("no SSH key {sid:?} forwarded from the client"),
                        });
                    }
                    specs.push(ex::MountSpec::Ssh(ex::SshMount {
                        id: sid,
                        socket,
                        target: rm.effective_target(ssh_index),
                        required: rm.required,
                        mode: rm.effective_mode().unwrap_or(0o600),
                        uid: rm.uid.unwrap_or(0),
                        gid: rm.gid.unwrap_or(0),
                    }));
                    ssh_index += 1;
                }
            }
        }
        if let Some((name, data)) = &r.script {
            let dir = self.solver.temp_dir()?;
            let p = dir.path().join(name);
            std::fs::write(&p, data).map_err(io_err("write", &p))?;
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(io_err("chmod", &p))?;
            // The container's /dev is a fresh tmpfs set up after the mounts, so the script is
            // mounted outside /dev (a stub the executor removes afterwards) and put in place at
            // BuildKit's path, /dev/pipes/NAME, before it runs (its `$0` must be that path).
            specs.push(ex::MountSpec::Bind(ex::BindMount {
                source: p,
                target: format!("/.kiln-pipes/{name}"),
                rw: false,
            }));
            _scratch = dir;
        }
        let mut args = r.args.clone();
        if let Some((name, _)) = &r.script
            && let Some(last) = args.last_mut()
        {
            *last = format!(
                "mkdir -p /dev/pipes && cat /.kiln-pipes/{name} > /dev/pipes/{name} && chmod 0755 /dev/pipes/{name} && exec /dev/pipes/{name}"
            );
        }
        let mut env = r.env.clone();
        env.extend(r.proxy_env.iter().cloned());
        let process = ex::ProcessSpec {
            args,
            env,
            cwd: r.cwd.clone(),
            user: r.user.clone(),
            network: match r.network {
                NetworkMode::Default => self.default_network(),
                NetworkMode::Host => ex::Network::Host,
                NetworkMode::None => ex::Network::None,
            },
            hostname: None,
            extra_hosts: Vec::new(),
        };
        let token = ex::CancelToken::new();
        self.register_cancel(&token);
        let mut on_output = |stream: ex::Stream, line: &[u8]| {
            let text = String::from_utf8_lossy(line);
            let text = text.strip_suffix('\n').unwrap_or(&text).to_string();
            self.progress.event(&ProgressEvent::StepLog {
                step: id,
                stream: if matches!(stream, ex::Stream::Stderr) {
                    LogStream::Stderr
                } else {
                    LogStream::Stdout
                },
                line: text,
            });
        };
        let status = executor.run(&process, &rootfs, &specs, &mut on_output, &token);
        drop(keep_views);
        let status = match status {
            Ok(s) => s,
            Err(ex::Error::Cancelled) => return Err(Error::Cancelled),
            Err(source) => {
                return Err(Error::Executor {
                    line: step.line,
                    command: r.args.join(" "),
                    source,
                });
            }
        };
        if !status.success() {
            return Err(Error::ProcessFailed {
                line: step.line,
                command: r.args.join(" "),
                exit_code: status.code(),
                tail: status.last_lines().to_vec(),
            });
        }
        Ok(())
    }
}

impl BuildCtx<'_> {
    /// Seeds cache mount `id` from an imported cache (`--cache-from` of a `cache-mounts=true`
    /// export) when it is absent or empty here; a failure is a warning, as an unreadable
    /// imported cache is.
    fn seed_cache_mount(&self, line: usize, id: &str, rm: &kiln_parser::RunMount) {
        if !self.imported.has_mount(id) {
            return;
        }
        let owner = crate::remote_cache::MountOwner {
            id: id.to_owned(),
            uid: rm.uid.unwrap_or(0),
            gid: rm.gid.unwrap_or(0),
            mode: rm.mode.unwrap_or(0o755),
        };
        let solver = self.solver;
        if let Err(e) = self.imported.seed_mount(
            &solver.store,
            &solver.registry,
            &solver.config.state_dir,
            &owner,
        ) {
            self.progress.event(&ProgressEvent::Warning {
                message: format!(
                    "Dockerfile:{line}: cache mount {id}: not seeded from the imported cache: {e}"
                ),
            });
        }
    }

    /// Claims the step of `key` across builds sharing the state dir (see
    /// [`CacheStore::claim`]), saying in the step's log when it waits for another build.
    pub(super) fn claim_step(&self, key: &CacheKey, id: StepId) -> Result<crate::cache::StepClaim> {
        self.solver.cache.claim(key, &self.cancelled, &mut || {
            self.progress.event(&ProgressEvent::StepLog {
                step: id,
                stream: LogStream::Stderr,
                line: "waiting for another build of this step".into(),
            });
        })
    }
}

impl BuildCtx<'_> {
    /// For a context directory that `.dockerignore` filters, a hard-linked copy (plain copies
    /// across filesystems) of exactly the kept entries under `<state_dir>/tmp/`; `None` when
    /// nothing below `src_rel` is excluded, so the context itself can be bound.
    pub(super) fn filtered_context(&self, src_rel: &str) -> Result<Option<tempfile::TempDir>> {
        if self.ignore.is_empty() {
            return Ok(None);
        }
        let kept = SourceTree {
            root: &self.context_root,
            ignore: Some(&self.ignore),
        }
        .walk(src_rel)?;
        if kept.first().is_none_or(|t| t.kind != EntryKind::Dir) {
            return Ok(None);
        }
        let all = SourceTree {
            root: &self.context_root,
            ignore: None,
        }
        .walk(src_rel)?;
        if all.len() == kept.len() {
            return Ok(None);
        }
        let dir = self.solver.temp_dir()?;
        for e in &kept {
            let target = if e.rel.is_empty() {
                dir.path().to_path_buf()
            } else {
                dir.path().join(&e.rel)
            };
            match e.kind {
                EntryKind::Dir => {
                    std::fs::create_dir_all(&target).map_err(io_err("mkdir", &target))?;
                    std::fs::set_permissions(
                        &target,
                        std::os::unix::fs::PermissionsExt::from_mode(e.meta.mode() & 0o7777),
                    )
                    .map_err(io_err("chmod", &target))?;
                }
                EntryKind::File => {
                    if std::fs::hard_link(&e.abs, &target).is_err() {
                        std::fs::copy(&e.abs, &target).map_err(io_err("copy", &e.abs))?;
                    }
                }
                EntryKind::Symlink => {
                    let link = std::fs::read_link(&e.abs).map_err(io_err("read link", &e.abs))?;
                    std::os::unix::fs::symlink(&link, &target)
                        .map_err(io_err("symlink", &target))?;
                }
                EntryKind::Other => {}
            }
        }
        Ok(Some(dir))
    }
}

impl BuildCtx<'_> {
    /// The network of a `RUN` without `--network`: like docker's default bridge, a private
    /// network namespace with outbound access (through slirp4netns, user-mode NAT), so a step
    /// cannot reach the host's loopback services, sockets or traffic. Without slirp4netns on
    /// PATH, the host's network, with one warning per build naming the package.
    fn default_network(&self) -> ex::Network {
        static HAVE_SLIRP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let have = *HAVE_SLIRP.get_or_init(|| {
            std::env::var_os("PATH").is_some_and(|paths| {
                std::env::split_paths(&paths).any(|d| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::metadata(d.join("slirp4netns"))
                        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                })
            })
        });
        if have {
            return ex::Network::Private;
        }
        if !self
            .warned_host_network
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            self.progress.event(&ProgressEvent::Warning {
                message: "slirp4netns is not installed, so RUN steps use the host's network \
                          (install the `slirp4netns` package for a private network per step)"
                    .into(),
            });
        }
        ex::Network::Host
    }
}
