//! `depends_on` conditions and a service's `healthcheck:` (compose-spec), the image's
//! HEALTHCHECK filling what the file leaves out, with docker's defaults.

use std::time::Duration;

use anyhow::{Context, bail};
use kiln_image::HealthConfig;
use serde_yaml_ng::{Mapping, Value};

use super::{as_str, command_of};

/// What a service waits for before it starts (`depends_on: {db: {condition: ...}}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Condition {
    /// The dependency was started (the list form's meaning).
    #[default]
    Started,
    /// The dependency's healthcheck passed.
    Healthy,
    /// The dependency exited with status 0.
    CompletedSuccessfully,
}

impl Condition {
    /// The compose-spec name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Started => "service_started",
            Self::Healthy => "service_healthy",
            Self::CompletedSuccessfully => "service_completed_successfully",
        }
    }

    pub(super) fn parse(s: &str, what: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "service_started" => Self::Started,
            "service_healthy" => Self::Healthy,
            "service_completed_successfully" => Self::CompletedSuccessfully,
            other => bail!(
                "{what}: invalid condition {other:?} (service_started, service_healthy or \
                 service_completed_successfully)"
            ),
        })
    }
}

/// A `healthcheck:` section; `None` fields come from the image's HEALTHCHECK.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Health {
    /// `test` in docker's form (`["CMD", ...]`, `["CMD-SHELL", s]`, `["NONE"]`).
    pub(crate) test: Option<Vec<String>>,
    /// `interval`.
    pub(crate) interval: Option<Duration>,
    /// `timeout`.
    pub(crate) timeout: Option<Duration>,
    /// `start_period`.
    pub(crate) start_period: Option<Duration>,
    /// `start_interval`.
    pub(crate) start_interval: Option<Duration>,
    /// `retries`.
    pub(crate) retries: Option<u32>,
    /// `disable: true`.
    pub(crate) disable: bool,
}

/// A healthcheck ready to run: the command and docker's timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Probe {
    /// The argv (`CMD-SHELL s` is `/bin/sh -c s`, as docker runs it on Linux).
    pub(crate) argv: Vec<String>,
    /// Between probes (default 30 s).
    pub(crate) interval: Duration,
    /// One probe's limit (default 30 s).
    pub(crate) timeout: Duration,
    /// Failures in this time after the start do not count (default 0).
    pub(crate) start_period: Duration,
    /// Between probes during the start period (default 5 s).
    pub(crate) start_interval: Duration,
    /// Consecutive failures that make the service unhealthy (default 3).
    pub(crate) retries: u32,
}

/// A Go duration (`1m30s`, `500ms`, `2h`, `1.5s`), as compose reads them.
pub(crate) fn duration(s: &str, what: &str) -> anyhow::Result<Duration> {
    let bad = || anyhow::anyhow!("{what}: invalid duration {s:?}");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * unit;
        rest = &rest[u..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// The `healthcheck` mapping of service `what`.
pub(super) fn health_of(m: &Mapping, what: &str) -> anyhow::Result<Health> {
    let what = format!("{what}.healthcheck");
    let get = |k: &str| m.get(k);
    let dur = |k: &str| {
        get(k)
            .map(|v| duration(&as_str(v, &what)?, &format!("{what}.{k}")))
            .transpose()
    };
    let test = match get("test") {
        None | Some(Value::Null) => None,
        // A string is CMD-SHELL; a list starts with NONE, CMD or CMD-SHELL.
        Some(Value::String(s)) => Some(vec!["CMD-SHELL".to_owned(), s.clone()]),
        Some(v) => {
            let t = command_of(v, &format!("{what}.test"))?;
            match t.first().map(String::as_str) {
                Some("NONE" | "CMD" | "CMD-SHELL") => Some(t),
                _ => bail!("{what}.test must start with NONE, CMD or CMD-SHELL"),
            }
        }
    };
    Ok(Health {
        test,
        interval: dur("interval")?,
        timeout: dur("timeout")?,
        start_period: dur("start_period")?,
        start_interval: dur("start_interval")?,
        retries: get("retries")
            .map(|v| {
                as_str(v, &what)?
                    .parse()
                    .with_context(|| format!("{what}.retries must be a number"))
            })
            .transpose()?,
        disable: matches!(get("disable"), Some(Value::Bool(true))),
    })
}

impl Health {
    /// The probe of a service with this section (`None`: no section) and image HEALTHCHECK;
    /// `None` when there is no test or it is disabled (`NONE`, `disable: true`).
    pub(crate) fn probe(this: Option<&Health>, image: Option<&HealthConfig>) -> Option<Probe> {
        let ns = |v: i64| (v > 0).then(|| Duration::from_nanos(v.unsigned_abs()));
        let default = Health::default();
        let h = this.unwrap_or(&default);
        if h.disable {
            return None;
        }
        let test = h
            .test
            .clone()
            .or_else(|| image.map(|i| i.test.clone()).filter(|t| !t.is_empty()))?;
        let argv = match test.split_first() {
            Some((c, rest)) if c == "CMD" => rest.to_vec(),
            Some((c, rest)) if c == "CMD-SHELL" => {
                vec!["/bin/sh".into(), "-c".into(), rest.join(" ")]
            }
            _ => return None,
        };
        if argv.is_empty() {
            return None;
        }
        let img = |f: fn(&HealthConfig) -> i64| image.and_then(|i| ns(f(i)));
        Some(Probe {
            argv,
            interval: h
                .interval
                .or_else(|| img(|i| i.interval))
                .unwrap_or(Duration::from_secs(30)),
            timeout: h
                .timeout
                .or_else(|| img(|i| i.timeout))
                .unwrap_or(Duration::from_secs(30)),
            start_period: h
                .start_period
                .or_else(|| img(|i| i.start_period))
                .unwrap_or_default(),
            start_interval: h
                .start_interval
                .or_else(|| img(|i| i.start_interval))
                .unwrap_or(Duration::from_secs(5)),
            retries: h
                .retries
                .or_else(|| {
                    image
                        .and_then(|i| u32::try_from(i.retries).ok())
                        .filter(|r| *r > 0)
                })
                .unwrap_or(3),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_go() {
        let d = |s: &str| duration(s, "t").unwrap();
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d("0"), Duration::ZERO);
        assert!(duration("10", "t").is_err());
        assert!(duration("1x", "t").is_err());
        assert!(duration("", "t").is_err());
    }

    #[test]
    fn probe_merges_the_file_over_the_image() {
        let image = HealthConfig {
            test: vec!["CMD".into(), "pg_isready".into()],
            interval: 2_000_000_000,
            retries: 5,
            ..HealthConfig::default()
        };
        let p = Health::probe(None, Some(&image)).unwrap();
        assert_eq!(p.argv, ["pg_isready"]);
        assert_eq!(
            (p.interval, p.timeout, p.retries),
            (Duration::from_secs(2), Duration::from_secs(30), 5)
        );
        let file = Health {
            test: Some(vec!["CMD-SHELL".into(), "wget -q localhost".into()]),
            retries: Some(1),
            ..Health::default()
        };
        let p = Health::probe(Some(&file), Some(&image)).unwrap();
        assert_eq!(p.argv, ["/bin/sh", "-c", "wget -q localhost"]);
        assert_eq!((p.interval, p.retries), (Duration::from_secs(2), 1));
        let none = Health {
            test: Some(vec!["NONE".into()]),
            ..Health::default()
        };
        assert_eq!(Health::probe(Some(&none), Some(&image)), None);
        let off = Health {
            disable: true,
            ..Health::default()
        };
        assert_eq!(Health::probe(Some(&off), Some(&image)), None);
        assert_eq!(Health::probe(None, None), None);
    }
}
