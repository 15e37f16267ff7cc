//! Compose variable interpolation: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?error}`, `${VAR?error}`, `${VAR:+other}`, `${VAR+other}`, `$$`.

use anyhow::bail;
use serde_yaml_ng::Value;

/// Substitutes variables in `s` (`what` names it in errors).
pub(crate) fn interpolate(
    s: &str,
    vars: &dyn Fn(&str) -> Option<String>,
    what: &str,
) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(body) = after.strip_prefix('{') {
            // Nested `${...}` in defaults: find the matching brace.
            let mut depth = 1;
            let mut end = None;
            for (j, c) in body.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(j);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let Some(end) = end else {
                bail!("{what}: invalid interpolation format for {s:?}: unclosed ${{");
            };
            out.push_str(&substitute(&body[..end], vars, what)?);
            rest = &body[end + 1..];
        } else {
            let n = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if n == 0 {
                out.push('$');
            } else {
                out.push_str(&vars(&after[..n]).unwrap_or_default());
            }
            rest = &after[n..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn substitute(
    body: &str,
    vars: &dyn Fn(&str) -> Option<String>,
    what: &str,
) -> anyhow::Result<String> {
    let n = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let (name, op) = body.split_at(n);
    if name.is_empty() {
        bail!("{what}: invalid interpolation format: ${{{body}}}");
    }
    let value = vars(name);
    let set_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
    let arg = |skip: usize| interpolate(&op[skip..], vars, what);
    Ok(match op {
        "" => value.unwrap_or_default(),
        _ if op.starts_with(":-") => {
            if set_nonempty {
                value.unwrap_or_default()
            } else {
                arg(2)?
            }
        }
        _ if op.starts_with('-') => value.map_or_else(|| arg(1), Ok)?,
        _ if op.starts_with(":?") => {
            if !set_nonempty {
                bail!(
                    "{what}: required variable {name} is missing a value: {}",
                    arg(2)?
                );
            }
            value.unwrap_or_default()
        }
        _ if op.starts_with('?') => match value {
            Some(v) => v,
            None => bail!(
                "{what}: required variable {name} is missing a value: {}",
                arg(1)?
            ),
        },
        _ if op.starts_with(":+") => {
            if set_nonempty {
                arg(2)?
            } else {
                String::new()
            }
        }
        _ if op.starts_with('+') => {
            if value.is_some() {
                arg(1)?
            } else {
                String::new()
            }
        }
        _ => bail!("{what}: invalid interpolation format: ${{{body}}}"),
    })
}

/// Interpolates every string (and mapping key) of `v` in place.
pub(super) fn interpolate_value(
    v: &mut Value,
    vars: &dyn Fn(&str) -> Option<String>,
    path: &str,
) -> anyhow::Result<()> {
    match v {
        Value::String(s) => *s = interpolate(s, vars, path)?,
        Value::Sequence(seq) => {
            for (i, x) in seq.iter_mut().enumerate() {
                interpolate_value(x, vars, &format!("{path}[{i}]"))?;
            }
        }
        Value::Mapping(m) => {
            let old = std::mem::take(m);
            for (k, mut x) in old {
                let key = match k {
                    Value::String(s) => Value::String(interpolate(&s, vars, path)?),
                    k => k,
                };
                let name = key.as_str().unwrap_or("?").to_owned();
                interpolate_value(&mut x, vars, &format!("{path}.{name}"))?;
                m.insert(key, x);
            }
        }
        Value::Tagged(t) => interpolate_value(&mut t.value, vars, path)?,
        _ => {}
    }
    Ok(())
}
