//! A service's `build` section (compose-spec build: context, dockerfile, args, secrets, ...).

use std::path::Path;

use anyhow::{Context, bail};
use serde_yaml_ng::{Mapping, Value};

use super::{Build, absolute, as_str, pairs, strings};

/// The `build` mapping of service `what`, paths relative to `dir`, secrets from the top level.
pub(super) fn build_of(
    b: &Mapping,
    dir: &Path,
    secrets_top: Option<&Mapping>,
    what: &str,
) -> anyhow::Result<Build> {
    let what = format!("{what}.build");
    let get = |k: &str| b.get(k);
    let s = |k: &str| {
        get(k)
            .map(|v| as_str(v, &format!("{what}.{k}")))
            .transpose()
    };
    let context = absolute(dir, &s("context")?.unwrap_or_else(|| ".".into()));
    let mut secrets = Vec::new();
    for sec in strings(get("secrets"), &format!("{what}.secrets")).or_else(|_| {
        // The long form: `- source: ID`.
        get("secrets").and_then(Value::as_sequence).map_or_else(
            || Ok(Vec::new()),
            |l| {
                l.iter()
                    .map(|x| {
                        x.get("source")
                            .map_or_else(|| Ok(String::new()), |v| as_str(v, "secrets"))
                    })
                    .collect()
            },
        )
    })? {
        let def = secrets_top
            .and_then(|t| t.get(sec.as_str()))
            .and_then(Value::as_mapping)
            .with_context(|| {
                format!("{what}.secrets: secret {sec:?} is not defined at the top level")
            })?;
        if let Some(f) = def.get("file") {
            let f = absolute(dir, &as_str(f, "secrets.file")?);
            secrets.push(format!("id={sec},src={}", f.display()));
        } else if let Some(e) = def.get("environment") {
            secrets.push(format!(
                "id={sec},env={}",
                as_str(e, "secrets.environment")?
            ));
        } else {
            bail!("secret {sec:?}: only `file:` and `environment:` secrets are supported");
        }
    }
    Ok(Build {
        context,
        dockerfile: s("dockerfile")?,
        dockerfile_inline: s("dockerfile_inline")?,
        args: get("args")
            .map(|v| pairs(v, &format!("{what}.args")))
            .transpose()?
            .unwrap_or_default(),
        target: s("target")?,
        labels: get("labels")
            .map(|v| pairs(v, &format!("{what}.labels")))
            .transpose()?
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect(),
        tags: strings(get("tags"), &format!("{what}.tags"))?,
        cache_from: strings(get("cache_from"), &format!("{what}.cache_from"))?,
        cache_to: strings(get("cache_to"), &format!("{what}.cache_to"))?,
        secrets,
        ssh: match get("ssh") {
            Some(Value::Mapping(m)) => m
                .iter()
                .map(|(k, v)| Ok(format!("{}={}", as_str(k, "ssh")?, as_str(v, "ssh")?)))
                .collect::<anyhow::Result<_>>()?,
            other => strings(other, &format!("{what}.ssh"))?,
        },
        network: s("network")?,
        platforms: strings(get("platforms"), &format!("{what}.platforms"))?,
        additional_contexts: get("additional_contexts")
            .map(|v| pairs(v, &format!("{what}.additional_contexts")))
            .transpose()?
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect(),
    })
}
