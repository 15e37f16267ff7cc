//! Compose files (the compose-spec): loading and merging `-f` files, variable interpolation
//! from the environment and `.env` (the `interpolate` module), and the services' `build` and run
//! settings (with `depends_on` conditions, healthchecks and named volumes) in one normalized
//! form.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_yaml_ng::{Mapping, Value};

mod build;
mod health;
mod interpolate;

use interpolate::interpolate_value;

pub(crate) use health::{Condition, Health, Probe};

/// A loaded project: its name and services.
#[derive(Debug, Clone)]
pub(crate) struct Project {
    /// `-p`, `COMPOSE_PROJECT_NAME`, the file's `name:` or the directory's name.
    pub(crate) name: String,
    /// The services, by name.
    pub(crate) services: BTreeMap<String, Service>,
    /// The top-level named volumes: the key services use, and the volume's name
    /// (`PROJECT_KEY`, or its `name:`).
    pub(crate) volumes: BTreeMap<String, String>,
}

/// One service's build and run settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Service {
    /// The image to run (and the name a build is tagged with).
    pub(crate) image: String,
    /// How to build it, if it is built.
    pub(crate) build: Option<Build>,
    /// `command` (replaces CMD).
    pub(crate) command: Option<Vec<String>>,
    /// `entrypoint` (replaces ENTRYPOINT; empty clears it).
    pub(crate) entrypoint: Option<Vec<String>>,
    /// `env_file` then `environment`, `K=V` (or `K` to take it from the environment).
    pub(crate) environment: Vec<String>,
    /// `working_dir`.
    pub(crate) working_dir: Option<String>,
    /// `user`.
    pub(crate) user: Option<String>,
    /// Mounts in `-v` syntax: `HOST:CTR[:ro]` with HOST absolute, or `KEY:CTR[:ro]` for a
    /// top-level named volume.
    pub(crate) volumes: Vec<String>,
    /// Published ports: (host address, host port (0: an ephemeral one), container port).
    pub(crate) ports: Vec<(String, u16, u16)>,
    /// `depends_on` services.
    pub(crate) depends_on: Vec<String>,
    /// The condition of each `depends_on` service (`service_started` when not given).
    pub(crate) conditions: BTreeMap<String, Condition>,
    /// `healthcheck` (over the image's HEALTHCHECK).
    pub(crate) healthcheck: Option<Health>,
    /// `network_mode` (`host` or `none`; default: the project's network).
    pub(crate) network_mode: Option<String>,
}

/// A service's `build` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Build {
    /// The context directory (absolute).
    pub(crate) context: PathBuf,
    /// `dockerfile`, relative to the context.
    pub(crate) dockerfile: Option<String>,
    /// `dockerfile_inline`.
    pub(crate) dockerfile_inline: Option<String>,
    /// `args` (`K` alone: from the environment).
    pub(crate) args: Vec<(String, Option<String>)>,
    /// `target`.
    pub(crate) target: Option<String>,
    /// `labels`.
    pub(crate) labels: Vec<(String, String)>,
    /// `tags` (besides `image`).
    pub(crate) tags: Vec<String>,
    /// `cache_from`.
    pub(crate) cache_from: Vec<String>,
    /// `cache_to`.
    pub(crate) cache_to: Vec<String>,
    /// `secrets`: `id=ID,src=FILE` or `id=ID,env=VAR`, from the top-level `secrets`.
    pub(crate) secrets: Vec<String>,
    /// `ssh` (`default`, `ID=PATH`).
    pub(crate) ssh: Vec<String>,
    /// `network`.
    pub(crate) network: Option<String>,
    /// `platforms`.
    pub(crate) platforms: Vec<String>,
    /// `additional_contexts`.
    pub(crate) additional_contexts: Vec<(String, String)>,
}

/// Reads a `.env` file: `K=V` lines, `#` comments, optional `export `, quoted values.
pub(crate) fn read_env_file(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            bail!(
                "{}:{}: expected KEY=VALUE, found {line:?}",
                path.display(),
                n + 1
            );
        };
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            v[1..v.len() - 1].to_owned()
        } else {
            // An unquoted value ends at ` #`.
            v.split(" #").next().unwrap_or("").trim_end().to_owned()
        };
        out.push((k.trim().to_owned(), v));
    }
    Ok(out)
}

/// Merges `over` into `base` as compose does for several `-f` files: mappings key by key,
/// everything else replaced.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(old) => merge(old, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Loads the compose files `files` (default: compose.yaml, compose.yml, docker-compose.yaml or
/// docker-compose.yml in the current directory) into one interpolated document.
pub(crate) fn load_document(
    files: &[PathBuf],
    env_file: Option<&Path>,
) -> anyhow::Result<(Value, PathBuf, BTreeMap<String, String>)> {
    let files: Vec<PathBuf> = if files.is_empty() {
        let found = [
            "compose.yaml",
            "compose.yml",
            "docker-compose.yaml",
            "docker-compose.yml",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
        vec![found.context(
            "no configuration file provided: not found (compose.yaml, docker-compose.yml, ...); use -f FILE",
        )?]
    } else {
        files.to_vec()
    };
    let dir = files[0]
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let dir =
        std::fs::canonicalize(&dir).with_context(|| format!("resolving {}", dir.display()))?;
    // The environment wins over `.env`.
    let mut dotenv: BTreeMap<String, String> = BTreeMap::new();
    let env_path = env_file.map_or_else(|| dir.join(".env"), Path::to_path_buf);
    if env_path.exists() {
        dotenv.extend(read_env_file(&env_path)?);
    } else if env_file.is_some() {
        bail!("env file {} not found", env_path.display());
    }
    let vars = |k: &str| std::env::var(k).ok().or_else(|| dotenv.get(k).cloned());
    let mut doc = Value::Mapping(Mapping::new());
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let mut v: Value = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("{}: invalid compose file", f.display()))?;
        interpolate_value(&mut v, &vars, &f.display().to_string())?;
        if !matches!(v, Value::Mapping(_)) {
            bail!(
                "{}: a compose file is a mapping (services: ...)",
                f.display()
            );
        }
        merge(&mut doc, v);
    }
    let mut env: BTreeMap<String, String> = dotenv.clone();
    env.extend(std::env::vars());
    Ok((doc, dir, env))
}

fn as_str(v: &Value, what: &str) -> anyhow::Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Ok(String::new()),
        _ => bail!("{what} must be a string"),
    }
}

/// A string or a list of strings; a string is split as a shell would (quotes, backslashes).
fn command_of(v: &Value, what: &str) -> anyhow::Result<Vec<String>> {
    match v {
        Value::Sequence(s) => s.iter().map(|x| as_str(x, what)).collect(),
        Value::Null => Ok(Vec::new()),
        v => Ok(shell_split(&as_str(v, what)?)),
    }
}

fn shell_split(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"') | None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                has = true;
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                has = true;
            }
            (None, c) if c.is_whitespace() => {
                if has || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                has = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if has || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A mapping `{K: V}` or a list `["K=V", "K"]` as pairs (`None`: no value).
fn pairs(v: &Value, what: &str) -> anyhow::Result<Vec<(String, Option<String>)>> {
    match v {
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                let k = as_str(k, what)?;
                Ok(match v {
                    Value::Null => (k, None),
                    v => (k, Some(as_str(v, what)?)),
                })
            })
            .collect(),
        Value::Sequence(s) => s
            .iter()
            .map(|x| {
                let x = as_str(x, what)?;
                Ok(match x.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (x, None),
                })
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        _ => bail!("{what} must be a mapping or a list"),
    }
}

fn strings(v: Option<&Value>, what: &str) -> anyhow::Result<Vec<String>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Sequence(s)) => s.iter().map(|x| as_str(x, what)).collect(),
        Some(v) => Ok(vec![as_str(v, what)?]),
    }
}

fn absolute(dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// A published port: `8080:80`, `127.0.0.1:8080:80`, `8080:80/tcp`, `80` or `IP::80` (host
/// port 0: an ephemeral one, as compose picks), or the long form `{target, published, host_ip}`.
fn port_of(v: &Value, what: &str) -> anyhow::Result<(String, u16, u16)> {
    let num = |s: &str| -> anyhow::Result<u16> {
        s.parse()
            .with_context(|| format!("{what}: invalid port {s:?}"))
    };
    if let Value::Mapping(m) = v {
        let get = |k: &str| m.get(k).map(|v| as_str(v, what)).transpose();
        let target = num(&get("target")?.context("ports: target is required")?)?;
        let published = get("published")?.map_or(Ok(0), |p: String| num(&p))?;
        let ip = get("host_ip")?.unwrap_or_else(|| "0.0.0.0".into());
        return Ok((ip, published, target));
    }
    let s = as_str(v, what)?;
    let s = s.strip_suffix("/tcp").unwrap_or(&s);
    if s.ends_with("/udp") {
        bail!("{what}: udp ports are not supported: {s}");
    }
    let parts: Vec<&str> = s.rsplitn(3, ':').collect();
    let host = |h: &str| if h.is_empty() { Ok(0) } else { num(h) };
    match parts.as_slice() {
        [c] => Ok(("0.0.0.0".into(), 0, num(c)?)),
        [c, h] => Ok(("0.0.0.0".into(), host(h)?, num(c)?)),
        [c, h, ip] => Ok((ip.trim_matches(['[', ']']).to_owned(), host(h)?, num(c)?)),
        _ => bail!("{what}: invalid port {s:?}"),
    }
}

/// A compose-spec project name: lowercase letters, digits, `-` and `_`.
fn project_name(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// The project in `doc` (from [`load_document`]), named `name` when given.
pub(crate) fn project(
    doc: &Value,
    dir: &Path,
    name: Option<&str>,
    env: &BTreeMap<String, String>,
) -> anyhow::Result<Project> {
    let top = doc.as_mapping().context("a compose file is a mapping")?;
    let name = name
        .map(str::to_owned)
        .or_else(|| env.get("COMPOSE_PROJECT_NAME").cloned())
        .or_else(|| top.get("name").and_then(Value::as_str).map(str::to_owned))
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .map(|n| project_name(&n))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    let secrets_top = top.get("secrets").and_then(Value::as_mapping);
    let mut named = BTreeMap::new();
    if let Some(vols) = top.get("volumes").and_then(Value::as_mapping) {
        for (k, v) in vols {
            let key = as_str(k, "volumes")?;
            if v.get("external").and_then(Value::as_bool) == Some(true) {
                bail!("volumes.{key}: external volumes are not supported");
            }
            let vname = match v.get("name") {
                Some(n) => as_str(n, &format!("volumes.{key}.name"))?,
                None => format!("{name}_{key}"),
            };
            if vname.is_empty() || vname.contains('/') || vname.starts_with('.') {
                bail!("volumes.{key}: invalid volume name {vname:?}");
            }
            named.insert(key, vname);
        }
    }
    let mut services = BTreeMap::new();
    let Some(list) = top.get("services").and_then(Value::as_mapping) else {
        bail!("no services in the compose file");
    };
    for (k, v) in list {
        let sname = as_str(k, "service name")?;
        let what = format!("services.{sname}");
        let m = v
            .as_mapping()
            .with_context(|| format!("{what} must be a mapping"))?;
        let get = |k: &str| m.get(k);
        let build = match get("build") {
            None | Some(Value::Null) => None,
            Some(Value::String(ctx)) => Some(Build {
                context: absolute(dir, ctx),
                ..Build::default()
            }),
            Some(Value::Mapping(b)) => Some(build::build_of(b, dir, secrets_top, &what)?),
            Some(_) => bail!("{what}.build must be a path or a mapping"),
        };
        let image = match get("image") {
            Some(v) => as_str(v, &format!("{what}.image"))?,
            None if build.is_some() => format!("{name}-{sname}"),
            None => bail!("{what}: has neither an image nor a build context specified"),
        };
        let mut environment = Vec::new();
        for f in strings(get("env_file"), &format!("{what}.env_file"))? {
            for (k, v) in read_env_file(&absolute(dir, &f))? {
                environment.push(format!("{k}={v}"));
            }
        }
        if let Some(e) = get("environment") {
            for (k, v) in pairs(e, &format!("{what}.environment"))? {
                environment.push(match v {
                    Some(v) => format!("{k}={v}"),
                    None => k,
                });
            }
        }
        let mut volumes = Vec::new();
        for v in strings(get("volumes"), &format!("{what}.volumes"))? {
            let mut parts: Vec<String> = v.split(':').map(str::to_owned).collect();
            if parts.len() < 2 {
                bail!("{what}.volumes: anonymous volumes are not supported: {v}");
            }
            if parts[0].starts_with('.') || parts[0].starts_with('~') {
                let p = parts[0].replacen('~', &env.get("HOME").cloned().unwrap_or_default(), 1);
                parts[0] = absolute(dir, &p).to_string_lossy().into_owned();
            } else if !parts[0].starts_with('/') && !named.contains_key(&parts[0]) {
                // compose's words.
                bail!(
                    "service {sname:?} refers to undefined volume {}: invalid compose project",
                    parts[0]
                );
            }
            volumes.push(parts.join(":"));
        }
        let ports = match get("ports") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(s)) => s
                .iter()
                .map(|p| port_of(p, &format!("{what}.ports")))
                .collect::<anyhow::Result<_>>()?,
            Some(_) => bail!("{what}.ports must be a list"),
        };
        let mut conditions = BTreeMap::new();
        let depends_on = match get("depends_on") {
            Some(Value::Mapping(d)) => {
                let mut names = Vec::new();
                for (k, v) in d {
                    let dep = as_str(k, "depends_on")?;
                    let c = match v.get("condition") {
                        Some(c) => Condition::parse(
                            &as_str(c, "depends_on")?,
                            &format!("{what}.depends_on.{dep}"),
                        )?,
                        None => Condition::Started,
                    };
                    conditions.insert(dep.clone(), c);
                    names.push(dep);
                }
                names
            }
            other => strings(other, &format!("{what}.depends_on"))?,
        };
        let healthcheck = match get("healthcheck") {
            None | Some(Value::Null) => None,
            Some(Value::Mapping(h)) => Some(health::health_of(h, &what)?),
            Some(_) => bail!("{what}.healthcheck must be a mapping"),
        };
        let opt = |k: &str| {
            get(k)
                .map(|v| as_str(v, &format!("{what}.{k}")))
                .transpose()
        };
        services.insert(
            sname.clone(),
            Service {
                image,
                build,
                command: get("command")
                    .map(|v| command_of(v, &format!("{what}.command")))
                    .transpose()?,
                entrypoint: get("entrypoint")
                    .map(|v| command_of(v, &format!("{what}.entrypoint")))
                    .transpose()?,
                environment,
                working_dir: opt("working_dir")?,
                user: opt("user")?,
                volumes,
                ports,
                depends_on,
                conditions,
                healthcheck,
                network_mode: match opt("network_mode")? {
                    None => None,
                    Some(m) if m == "host" || m == "none" => Some(m),
                    Some(m) => bail!("{what}.network_mode: {m:?} is not supported (host or none)"),
                },
            },
        );
    }
    for (n, s) in &services {
        for d in &s.depends_on {
            if !services.contains_key(d) {
                bail!("service {n:?} depends on undefined service {d:?}");
            }
        }
    }
    Ok(Project {
        name,
        services,
        volumes: named,
    })
}

#[cfg(test)]
mod tests {
    use super::interpolate::interpolate;
    use super::*;

    fn vars(k: &str) -> Option<String> {
        match k {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn i(s: &str) -> anyhow::Result<String> {
        interpolate(s, &vars, "compose.yaml")
    }

    #[test]
    fn interpolation_as_compose() {
        assert_eq!(i("a $SET b ${SET}c").unwrap(), "a value b valuec");
        assert_eq!(
            i("${UNSET:-def} ${EMPTY:-def} ${EMPTY-def}").unwrap(),
            "def def "
        );
        assert_eq!(i("${UNSET-def} ${SET:-def}").unwrap(), "def value");
        assert_eq!(
            i("${SET:+alt}|${EMPTY:+alt}|${EMPTY+alt}").unwrap(),
            "alt||alt"
        );
        assert_eq!(i("$$SET costs $$5").unwrap(), "$SET costs $5");
        assert_eq!(i("${UNSET:-${SET}}").unwrap(), "value");
        assert_eq!(i("$UNSET.").unwrap(), ".");
        let e = i("${UNSET:?need it}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "compose.yaml: required variable UNSET is missing a value: need it"
        );
        assert!(i("${EMPTY?x}").is_ok());
        assert!(i("${SET").is_err());
        assert!(i("${SET!x}").is_err());
    }

    #[test]
    fn services_normalize() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.env"), "FROM_FILE=1\n# c\n").unwrap();
        let yaml = r#"
name: My_App
services:
  web:
    build:
      context: ./web
      dockerfile: Dockerfile.web
      args: [VERSION=1, FROM_ENV]
      labels: {a: b}
      target: prod
    ports: ["8080:80", "127.0.0.1:9000:90/tcp", 70, {target: 60, published: 6000}]
    environment: {K: v, EMPTY: }
    env_file: app.env
    command: httpd -f -p "80 81"
    depends_on: {db: {condition: service_started}}
  db:
    image: busybox
    entrypoint: [sh, -c]
    volumes: ["./data:/data:ro", "/abs:/x"]
"#;
        let doc: Value = serde_yaml_ng::from_str(yaml).unwrap();
        let p = project(&doc, dir.path(), None, &BTreeMap::new()).unwrap();
        assert_eq!(p.name, "my_app");
        let web = &p.services["web"];
        assert_eq!(web.image, "my_app-web");
        let b = web.build.as_ref().unwrap();
        assert_eq!(b.context, dir.path().join("./web"));
        assert_eq!(b.dockerfile.as_deref(), Some("Dockerfile.web"));
        assert_eq!(
            b.args,
            [
                ("VERSION".into(), Some("1".into())),
                ("FROM_ENV".into(), None)
            ]
        );
        assert_eq!(b.target.as_deref(), Some("prod"));
        assert_eq!(
            web.ports,
            [
                ("0.0.0.0".into(), 8080, 80),
                ("127.0.0.1".into(), 9000, 90),
                ("0.0.0.0".into(), 0, 70),
                ("0.0.0.0".into(), 6000, 60)
            ]
        );
        assert_eq!(web.environment, ["FROM_FILE=1", "K=v", "EMPTY"]);
        assert_eq!(
            web.command.as_deref().unwrap(),
            ["httpd", "-f", "-p", "80 81"]
        );
        assert_eq!(web.depends_on, ["db"]);
        let db = &p.services["db"];
        assert_eq!(db.entrypoint.as_deref().unwrap(), ["sh", "-c"]);
        assert_eq!(
            db.volumes,
            [
                format!("{}:/data:ro", dir.path().join("./data").display()),
                "/abs:/x".to_owned()
            ]
        );
        let bad: Value =
            serde_yaml_ng::from_str("services: {a: {image: x, depends_on: [b]}}").unwrap();
        let e = project(&bad, dir.path(), None, &BTreeMap::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "service \"a\" depends on undefined service \"b\""
        );
    }

    #[test]
    fn env_files_and_merging() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".env");
        std::fs::write(&p, "A=1\nexport B=\"two words\"\nC=x # comment\n").unwrap();
        assert_eq!(
            read_env_file(&p).unwrap(),
            [
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x".into())
            ]
        );
        let mut a: Value =
            serde_yaml_ng::from_str("services: {w: {image: a, ports: [1]}}").unwrap();
        let b: Value =
            serde_yaml_ng::from_str("services: {w: {ports: [2]}, v: {image: b}}").unwrap();
        merge(&mut a, b);
        let expect: Value =
            serde_yaml_ng::from_str("services: {w: {image: a, ports: [2]}, v: {image: b}}")
                .unwrap();
        assert_eq!(a, expect);
    }
}
