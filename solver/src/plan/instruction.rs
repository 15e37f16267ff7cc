//! One instruction at a time: how each Dockerfile instruction changes a stage's environment and
//! image config, or adds a filesystem step (RUN, COPY/ADD, WORKDIR), with BuildKit's expansion
//! rules and history wording.

use super::*;

fn go_duration_ns(s: &str) -> i64 {
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..n].parse().unwrap_or(0.0);
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..u];
        rest = &rest[u..];
        let mult = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => 0.0,
        };
        total += num * mult;
    }
    total as i64
}

/// Go's `%q` for a string slice: `["a" "b"]`.
fn go_q(args: &[String]) -> String {
    let parts: Vec<String> = args
        .iter()
        .map(|a| serde_json::to_string(a).unwrap_or_default())
        .collect();
    format!("[{}]", parts.join(" "))
}

fn ports(spec: &str) -> Vec<String> {
    let (range, proto) = match spec.split_once('/') {
        Some((r, p)) => (r, p.to_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if let Some((a, b)) = range.split_once('-')
        && let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>())
        && a <= b
    {
        return (a..=b).map(|p| format!("{p}/{proto}")).collect();
    }
    vec![format!("{range}/{proto}")]
}

impl Planner<'_, '_> {
    pub(super) fn instruction(
        &mut self,
        stage: usize,
        _name: &str,
        loc: &Located,
        onbuild: bool,
        state: &mut StageState,
        cmd_set: &mut bool,
        no_cache: bool,
    ) -> Result<()> {
        let line = loc.start_line;
        let env = state.env.clone();
        match &loc.instruction {
            Instruction::From(_) => {}
            Instruction::Maintainer(m) => {
                state.config.author = Some(m.clone());
                Self::history(state, format!("MAINTAINER {m}"), None);
            }
            Instruction::Env(kvs) => {
                let mut msg = String::from("ENV");
                let mut pairs = Vec::new();
                for kv in kvs {
                    pairs.push((
                        self.word(&kv.key, &env, line)?,
                        self.word(&kv.value, &env, line)?,
                    ));
                }
                // One pass with an index: a clone of the config list and a linear search
                // per pair made `ENV K0=v ... Kn=v` quadratic (issue 12).
                state.env.set_all(&pairs);
                if !pairs.is_empty() {
                    let mut list = state.config.config.env.take().unwrap_or_default();
                    let mut index: BTreeMap<String, usize> = BTreeMap::new();
                    for (i, e) in list.iter().enumerate() {
                        let key = e.split_once('=').map_or(e.as_str(), |(a, _)| a);
                        index.entry(key.to_owned()).or_insert(i);
                    }
                    for (k, v) in &pairs {
                        let _ = write!(msg, " {k}={v}");
                        if let Some(&i) = index.get(k) {
                            list[i] = format!("{k}={v}");
                        } else {
                            index.insert(k.clone(), list.len());
                            list.push(format!("{k}={v}"));
                        }
                    }
                    state.config.config.env = Some(list);
                }
                Self::history(state, msg, None);
            }
            Instruction::Label(kvs) => {
                let mut msg = String::from("LABEL");
                let mut labels = state.config.config.labels.clone().unwrap_or_default();
                for kv in kvs {
                    let k = self.word(&kv.key, &env, line)?;
                    let v = self.word(&kv.value, &env, line)?;
                    let _ = write!(msg, " {k}={v}");
                    labels.insert(k, v);
                }
                state.config.config.labels = Some(labels);
                Self::history(state, msg, None);
            }
            Instruction::Arg(decls) => {
                let mut strs = Vec::new();
                for d in decls {
                    let key = d.name.clone();
                    let has_value = self.build_arg(&key).is_some();
                    let mut value: Option<String> = None;
                    if d.default.is_none() && !has_value {
                        value = self.global.get(&key).map(String::from);
                    }
                    if let Some(v) = self.build_arg(&key) {
                        value = Some(v.to_string());
                    } else if let Some(def) = &d.default {
                        value = Some(self.word(def, &state.env, line)?);
                    }
                    if let Some(v) = &value {
                        state.env.set(&key, v);
                    }
                    self.used_args.insert(key.clone());
                    strs.push(match &value {
                        Some(v) => format!("{key}={v}"),
                        None => key.clone(),
                    });
                    state.build_args.push((key, value));
                }
                Self::history(state, format!("ARG {}", strs.join(" ")), None);
            }
            Instruction::Workdir(p) => {
                let p = self.word(p, &env, line)?;
                let wd = if p.starts_with('/') {
                    clean(&p)
                } else {
                    clean(&format!("{}/{p}", Self::workdir(state)))
                };
                state.config.config.working_dir = Some(wd.clone());
                if wd == "/" {
                    Self::history(state, format!("WORKDIR {wd}"), None);
                } else {
                    let user = state.config.config.user.clone().unwrap_or_default();
                    let idx = self.add_step(
                        state,
                        stage,
                        loc,
                        onbuild,
                        Op::Mkdir {
                            path: wd.clone(),
                            user,
                        },
                        no_cache,
                    );
                    Self::history(state, format!("WORKDIR {wd}"), Some(idx));
                    // BuildKit's WORKDIR history carries no `# buildkit` suffix.
                    if let Some(h) = state.config.history.last_mut() {
                        h.created_by = Some(format!("WORKDIR {wd}"));
                    }
                }
            }
            Instruction::User(u) => {
                let u = self.word(u, &env, line)?;
                state.config.config.user = Some(u.clone());
                Self::history(state, format!("USER {u}"), None);
            }
            Instruction::Volume(vols) => {
                let mut set = state.config.config.volumes.clone().unwrap_or_default();
                let mut list = Vec::new();
                for v in vols {
                    let v = self.word(v, &env, line)?;
                    if v.is_empty() {
                        return Err(Error::Plan {
                            line,
                            message: "VOLUME specified can not be an empty string".into(),
                        });
                    }
                    set.insert(v.clone());
                    list.push(v);
                }
                state.config.config.volumes = Some(set);
                Self::history(state, format!("VOLUME [{}]", list.join(" ")), None);
            }
            Instruction::Expose(specs) => {
                let mut set = state
                    .config
                    .config
                    .exposed_ports
                    .clone()
                    .unwrap_or_default();
                let mut all = Vec::new();
                for s in specs {
                    for w in self.words(s, &env, line)? {
                        for p in ports(&w) {
                            all.push(p.clone());
                            set.insert(p);
                        }
                    }
                }
                state.config.config.exposed_ports = Some(set);
                let m: Vec<String> = all.iter().map(|p| format!("{p}:{{}}")).collect();
                Self::history(state, format!("EXPOSE map[{}]", m.join(" ")), None);
            }
            Instruction::StopSignal(s) => {
                let s = self.word(s, &env, line)?;
                state.config.config.stop_signal = Some(s.clone());
                Self::history(state, format!("STOPSIGNAL {s}"), None);
            }
            Instruction::Healthcheck(h) => {
                let hc = match h {
                    Healthcheck::None => HealthConfig {
                        test: vec!["NONE".into()],
                        ..HealthConfig::default()
                    },
                    Healthcheck::Check {
                        command,
                        interval,
                        timeout,
                        start_period,
                        start_interval,
                        retries,
                    } => {
                        let test = match command {
                            Command::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
                            Command::Exec(a) => std::iter::once("CMD".to_string())
                                .chain(a.iter().cloned())
                                .collect(),
                        };
                        let d = |o: &Option<String>| o.as_deref().map_or(0, go_duration_ns);
                        HealthConfig {
                            test,
                            interval: d(interval),
                            timeout: d(timeout),
                            start_period: d(start_period),
                            start_interval: d(start_interval),
                            retries: retries.unwrap_or(0) as i32,
                        }
                    }
                };
                let msg = format!("HEALTHCHECK &{{{} {:?}}}", go_q(&hc.test), hc.interval);
                state.config.config.healthcheck = Some(hc);
                Self::history(state, msg, None);
            }
            Instruction::Shell(s) => {
                state.config.config.shell = Some(s.clone());
                Self::history(state, format!("SHELL [{}]", s.join(" ")), None);
            }
            Instruction::Cmd(c) | Instruction::Entrypoint(c) => {
                let args = match c {
                    Command::Exec(a) => a.clone(),
                    Command::Shell(s) => {
                        let mut sh = Self::shell(state);
                        sh.push(s.clone());
                        sh
                    }
                };
                if matches!(loc.instruction, Instruction::Cmd(_)) {
                    state.config.config.cmd = Some(args.clone());
                    state.config.config.args_escaped = true;
                    *cmd_set = true;
                    Self::history(state, format!("CMD {}", go_q(&args)), None);
                } else {
                    state.config.config.entrypoint = Some(args.clone());
                    if !*cmd_set {
                        state.config.config.cmd = None;
                    }
                    Self::history(state, format!("ENTRYPOINT {}", go_q(&args)), None);
                }
            }
            Instruction::Onbuild(o) => {
                let mut list = state.config.config.on_build.clone().unwrap_or_default();
                list.push(o.expression.clone());
                state.config.config.on_build = Some(list);
            }
            Instruction::Run(r) => {
                let idx = self.plan_run(stage, loc, onbuild, r, state, no_cache)?;
                let args = match &self.plan.steps[idx].op {
                    Op::Run(op) => op.args.clone(),
                    _ => Vec::new(),
                };
                let mut pre: Vec<String> = Vec::new();
                let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                for (k, v) in &state.build_args {
                    let val = state
                        .env
                        .get(k)
                        .map(String::from)
                        .or_else(|| v.clone())
                        .unwrap_or_default();
                    if let Some(&i) = seen.get(k) {
                        pre[i] = format!("{k}={val}");
                    } else {
                        seen.insert(k.clone(), pre.len());
                        pre.push(format!("{k}={val}"));
                    }
                }
                if !pre.is_empty() {
                    pre.insert(0, format!("|{}", pre.len()));
                }
                pre.extend(args);
                Self::history(state, format!("RUN {}", pre.join(" ")), Some(idx));
            }
            Instruction::Copy(c) => {
                let from = match &c.from {
                    Some(f) => {
                        let expanded = self.word(f, &EnvList::default(), line)?;
                        if &expanded != f {
                            return Err(Error::Plan {
                                line,
                                message: "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround".into(),
                            });
                        }
                        self.source_ref(f, stage, line)?
                    }
                    None => SourceRef::Context,
                };
                let op = self.copy_op(
                    false,
                    from,
                    &c.sources,
                    &c.source_contents,
                    &c.dest,
                    c.chown.as_deref(),
                    c.chmod.as_deref(),
                    c.parents,
                    &c.exclude,
                    c.link,
                    None,
                    state,
                    line,
                )?;
                let msg = copy_message("COPY", &op, &c.sources, &c.source_contents, &c.dest);
                let idx = self.add_step(state, stage, loc, onbuild, Op::Copy(op), no_cache);
                Self::history(state, msg, Some(idx));
            }
            Instruction::Add(a) => {
                let is_url = |s: &&String| s.starts_with("http://") || s.starts_with("https://");
                if a.sources
                    .iter()
                    .any(|s| s.starts_with("git@") || s.to_ascii_lowercase().ends_with(".git"))
                {
                    return Err(Error::Plan {
                        line,
                        message: "ADD from a git repository is not supported yet".into(),
                    });
                }
                let local: Vec<String> = a.sources.iter().filter(|s| !is_url(s)).cloned().collect();
                let mut urls = Vec::new();
                for u in a.sources.iter().filter(is_url) {
                    urls.push(self.word(u, &env, line)?);
                }
                let checksum = a
                    .checksum
                    .as_ref()
                    .map(|c| self.word(c, &env, line))
                    .transpose()?;
                if checksum.is_some() && (urls.len() != 1 || !local.is_empty()) {
                    return Err(Error::Plan {
                        line,
                        message: "checksum requires HTTP(S) or Git sources".into(),
                    });
                }
                if a.sources.len() + a.source_contents.len() > 1 && !a.dest.ends_with('/') {
                    return Err(Error::Plan {
                        line,
                        message: "When using COPY with more than one source file, the destination must be a directory and end with a /".into(),
                    });
                }
                let mut op = self.copy_op(
                    true,
                    SourceRef::Context,
                    &local,
                    &a.source_contents,
                    &a.dest,
                    a.chown.as_deref(),
                    a.chmod.as_deref(),
                    false,
                    &a.exclude,
                    a.link,
                    a.unpack,
                    state,
                    line,
                )?;
                op.urls = urls;
                op.checksum = checksum;
                let msg = copy_message("ADD", &op, &a.sources, &a.source_contents, &a.dest);
                let idx = self.add_step(state, stage, loc, onbuild, Op::Copy(op), no_cache);
                Self::history(state, msg, Some(idx));
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_op(
        &mut self,
        add: bool,
        from: SourceRef,
        sources: &[String],
        contents: &[kiln_parser::SourceContent],
        dest: &str,
        chown: Option<&str>,
        chmod: Option<&str>,
        parents: bool,
        exclude: &[String],
        link: bool,
        unpack: Option<bool>,
        state: &StageState,
        line: usize,
    ) -> Result<CopyOp> {
        let env = &state.env;
        let mut srcs = Vec::new();
        for s in sources {
            srcs.push(self.word(s, env, line)?);
        }
        let mut inline = Vec::new();
        for c in contents {
            let data = if c.expand {
                let mut l = Lexer::new(self.df.escape);
                l.skip_process_quotes = true;
                l.process_word(&c.data, &env.0).map_err(|e| Error::Plan {
                    line,
                    message: e.message().to_string(),
                })?
            } else {
                c.data.clone()
            };
            inline.push((c.path.clone(), data.into_bytes()));
        }
        let dest_raw = self.word(dest, env, line)?;
        if srcs.len() + inline.len() > 1 && !dest_raw.ends_with('/') {
            return Err(Error::Plan {
                line,
                message: "When using COPY with more than one source file, the destination must be a directory and end with a /".into(),
            });
        }
        let dest = dest_path(&Self::workdir(state), &dest_raw);
        let chown = chown.map(|c| self.word(c, env, line)).transpose()?;
        let chmod = chmod.map(|c| self.word(c, env, line)).transpose()?;
        if let Some(m) = &chmod
            && crate::copy::Chmod::parse(m).is_none()
        {
            return Err(Error::Plan {
                line,
                message: format!(
                    "invalid chmod parameter: '{m}'. it should be octal string and between 0 and 07777"
                ),
            });
        }
        let mut ex = Vec::new();
        for e in exclude {
            ex.push(self.word(e, env, line)?);
        }
        Ok(CopyOp {
            add,
            from,
            sources: srcs,
            inline,
            dest,
            chown,
            chmod,
            parents,
            exclude: ex,
            link,
            unpack: unpack.unwrap_or(add),
            urls: Vec::new(),
            checksum: None,
        })
    }

    fn plan_run(
        &mut self,
        stage: usize,
        loc: &Located,
        onbuild: bool,
        r: &kiln_parser::Run,
        state: &mut StageState,
        no_cache: bool,
    ) -> Result<usize> {
        let line = loc.start_line;
        let mut script = None;
        let args = match &r.command {
            Command::Exec(a) => a.clone(),
            Command::Shell(cmdline) => {
                let body = if r.heredocs.is_empty() {
                    cmdline.clone()
                } else if let Ok(Some(_)) = kiln_parser::ast::parse_heredoc(cmdline) {
                    let h = &r.heredocs[0];
                    let data = h.chomped();
                    if data.starts_with("#!") {
                        script = Some((h.name.clone(), data.into_bytes()));
                        format!("/dev/pipes/{}", h.name)
                    } else {
                        data
                    }
                } else {
                    let mut b = cmdline.clone();
                    for h in &r.heredocs {
                        b.push('\n');
                        b.push_str(&h.content);
                        b.push_str(&h.name);
                    }
                    b
                };
                let mut sh = Self::shell(state);
                sh.push(body);
                sh
            }
        };
        let mut mounts = Vec::new();
        for raw in &r.mounts {
            let expanded = self.word(raw, &state.env, line)?;
            let m = RunMount::parse(&expanded).map_err(|e| Error::Plan {
                line,
                message: e.message().to_string(),
            })?;
            let source = match (m.kind, &m.from) {
                (MountType::Bind, None) => Some(SourceRef::Context),
                (MountType::Bind | MountType::Cache, Some(f)) => {
                    Some(self.source_ref(f, stage, line)?)
                }
                _ => None,
            };
            mounts.push(MountPlan { mount: m, source });
        }
        let network = match r.network.as_deref() {
            Some("none") => NetworkMode::None,
            Some("host") => NetworkMode::Host,
            _ => self.input.network,
        };
        let mut proxy_env = Vec::new();
        for (k, v) in self.input.build_args {
            if PROXY_ARGS.contains(&k.as_str()) && state.env.get(k).is_none() {
                proxy_env.push(format!("{k}={v}"));
            }
        }
        let op = RunOp {
            args,
            env: state.env.to_strings(),
            proxy_env,
            user: state.config.config.user.clone().unwrap_or_default(),
            cwd: Self::workdir(state),
            network,
            mounts,
            script,
            platform: state.platform.clone(),
        };
        Ok(self.add_step(state, stage, loc, onbuild, Op::Run(op), no_cache))
    }
}

fn copy_message(
    cmd: &str,
    op: &CopyOp,
    sources: &[String],
    contents: &[kiln_parser::SourceContent],
    dest: &str,
) -> String {
    let mut m = String::from(cmd);
    if op.parents {
        m.push_str(" --parents");
    }
    if let Some(c) = &op.chown {
        let _ = write!(m, " --chown={c}");
    }
    if let Some(c) = &op.chmod {
        let _ = write!(m, " --chmod={c}");
    }
    for s in sources {
        m.push(' ');
        m.push_str(s);
    }
    for c in contents {
        m.push_str(" <<");
        m.push_str(&c.path);
    }
    m.push(' ');
    m.push_str(dest);
    m
}
