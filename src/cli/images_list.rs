//! `kiln images`: docker's listing, filters (`dangling=`, `reference=`, `before=`, `since=`)
//! and `--format` (table, json, templates with docker's fields); SIZE is what docker shows.

use std::io::Write;

use anyhow::bail;
use clap::Args;
use kiln_image::{ContentStore, Image, Platform, Reference};

use super::images::{all_images, find_image, parse_ref};

/// Flags of `kiln images` (docker's).
#[derive(Args, Debug)]
pub(crate) struct ImagesArgs {
    /// Only print image ids.
    #[arg(short, long)]
    quiet: bool,
    /// Show all images (kiln keeps no intermediate images: the same as without).
    #[arg(short, long)]
    all: bool,
    /// Show the digest the tag names.
    #[arg(long)]
    digests: bool,
    /// Do not truncate IDs.
    #[arg(long)]
    no_trunc: bool,
    /// Only images of this repository (`busybox`, `registry:5000/app`), optionally `:tag`.
    repository: Option<String>,
    /// `dangling=true|false`, `reference=PATTERN` (`app*`, `*/app:v1`), `before=IMAGE`,
    /// `since=IMAGE`; repeatable.
    #[arg(short, long, value_name = "FILTER")]
    filter: Vec<String>,
    /// `table`, `json` (one object per line, docker's fields) or a template
    /// (`{{.Repository}}:{{.Tag}}\t{{.ID}}`; prefix `table ` for aligned columns with a header).
    #[arg(long)]
    format: Option<String>,
}

/// One line of `kiln images`, with docker's `--format` fields.
struct Row {
    repository: String,
    tag: String,
    id: String,
    digest: String,
    created: Option<i64>,
    created_since: String,
    size: String,
}

impl Row {
    /// The value of a `--format` field (`None`: unknown field).
    fn field(&self, name: &str) -> Option<String> {
        Some(match name {
            "Repository" => self.repository.clone(),
            "Tag" => self.tag.clone(),
            "ID" => self.id.clone(),
            "Digest" => self.digest.clone(),
            "CreatedSince" => self.created_since.clone(),
            "CreatedAt" => self.created.map_or_else(String::new, |t| {
                let s = kiln_image::spec::format_rfc3339(t, 0);
                format!(
                    "{} +0000 UTC",
                    s.trim_end_matches('Z').replacen('T', " ", 1)
                )
            }),
            "Size" | "VirtualSize" => self.size.clone(),
            "Containers" | "SharedSize" | "UniqueSize" => "N/A".to_owned(),
            _ => return None,
        })
    }
}

const FIELDS: [&str; 11] = [
    "Containers",
    "CreatedAt",
    "CreatedSince",
    "Digest",
    "ID",
    "Repository",
    "SharedSize",
    "Size",
    "Tag",
    "UniqueSize",
    "VirtualSize",
];

/// The header docker prints for a `table` column.
fn header_of(field: &str) -> String {
    match field {
        "ID" => "IMAGE ID".to_owned(),
        "CreatedSince" => "CREATED".to_owned(),
        "CreatedAt" => "CREATED AT".to_owned(),
        "VirtualSize" => "SIZE".to_owned(),
        "SharedSize" => "SHARED SIZE".to_owned(),
        "UniqueSize" => "UNIQUE SIZE".to_owned(),
        f => f.to_uppercase(),
    }
}

/// Expands the `{{.Field}}` placeholders of a `--format` template (and `\t`, as docker).
fn render(template: &str, value: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<String> {
    let template = template.replace("\\t", "\t").replace("\\n", "\n");
    let mut out = String::new();
    let mut rest = template.as_str();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            bail!(super::UsageError(format!(
                "invalid --format template: unclosed action in {template:?}"
            )));
        };
        let action = rest[start + 2..start + end].trim();
        let field = action.strip_prefix('.').unwrap_or(action);
        match value(field) {
            Some(v) => out.push_str(&v),
            None => bail!(super::UsageError(format!(
                "invalid --format template: can't evaluate field {field} (fields: {})",
                FIELDS.join(", ")
            ))),
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Docker's reference filter: `path.Match` of the pattern against `name:tag`, or against the
/// name alone when the pattern has no tag (`*` does not cross `/`).
fn reference_matches(pattern: &str, r: &Reference) -> bool {
    fn glob(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => {
                glob(&p[1..], s) || (s.first().is_some_and(|&c| c != b'/') && glob(p, &s[1..]))
            }
            (Some(b'?'), Some(&c)) => c != b'/' && glob(&p[1..], &s[1..]),
            (Some(a), Some(b)) => a == b && glob(&p[1..], &s[1..]),
            _ => false,
        }
    }
    let familiar = r.familiar();
    let name = familiar
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map_or(familiar.as_str(), |(n, _)| n);
    let has_tag = pattern
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'));
    if has_tag {
        glob(pattern.as_bytes(), familiar.as_bytes())
    } else {
        glob(pattern.as_bytes(), name.as_bytes())
    }
}

pub(crate) fn list(
    store: &ContentStore,
    platform: &Platform,
    args: &ImagesArgs,
) -> anyhow::Result<()> {
    let mut sizes = super::system::LayerSizes::open(store.state_dir());
    // `-a` adds intermediate images, which kiln does not keep: nothing to add.
    let _ = args.all;
    // `busybox` means the repository (every tag); `busybox:1` one tag.
    let repository = args
        .repository
        .as_ref()
        .map(|r| {
            let has_tag = r.rsplit('/').next().is_some_and(|last| last.contains(':'));
            parse_ref(r).map(|p| {
                (
                    p.name(),
                    has_tag.then(|| p.tag().unwrap_or("latest").to_owned()),
                )
            })
        })
        .transpose()?;
    let mut dangling = None;
    let mut references: Vec<String> = Vec::new();
    let mut before: Option<i64> = None;
    let mut since: Option<i64> = None;
    let created_of = |s: &str| -> anyhow::Result<i64> {
        let image = find_image(store, s, platform)?;
        Ok(image
            .config
            .created
            .as_deref()
            .and_then(kiln_image::spec::parse_rfc3339)
            .unwrap_or(0))
    };
    for f in &args.filter {
        match f.split_once('=') {
            Some(("dangling", v)) => {
                dangling = Some(match v {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => bail!(super::UsageError(format!(
                        "invalid filter 'dangling={v}': use dangling=true or dangling=false"
                    ))),
                });
            }
            Some(("reference", v)) => references.push(v.to_owned()),
            Some(("before", v)) => before = Some(created_of(v)?),
            Some(("since", v)) => since = Some(created_of(v)?),
            _ => bail!(super::UsageError(format!(
                "invalid filter '{f}' (supported: dangling=true|false, reference=PATTERN, \
                 before=IMAGE, since=IMAGE)"
            ))),
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut rows = Vec::new();
    for (r, digest) in all_images(store)? {
        if dangling.is_some_and(|d| d != r.is_none()) {
            continue;
        }
        if let Some((name, tag)) = &repository {
            let Some(r) = &r else { continue };
            if r.name() != *name || tag.as_deref().is_some_and(|t| r.tag() != Some(t)) {
                continue;
            }
        }
        if !references.is_empty()
            && !r
                .as_ref()
                .is_some_and(|r| references.iter().any(|p| reference_matches(p, r)))
        {
            continue;
        }
        let image = match Image::load(store, &digest, platform) {
            Ok(i) => i,
            Err(e) => {
                let what = r
                    .as_ref()
                    .map_or_else(|| digest.to_string(), Reference::familiar);
                eprintln!("warning: {what}: {e}");
                continue;
            }
        };
        let created = image
            .config
            .created
            .as_deref()
            .and_then(kiln_image::spec::parse_rfc3339);
        if before.is_some_and(|b| created.is_none_or(|c| c >= b))
            || since.is_some_and(|s| created.is_none_or(|c| c <= s))
        {
            continue;
        }
        let (repository, tag) = match &r {
            Some(r) => {
                let familiar = r.familiar();
                let repo = familiar
                    .rsplit_once(':')
                    .map_or(familiar.as_str(), |(n, _)| n)
                    .to_owned();
                (repo, r.tag().unwrap_or("<none>").to_owned())
            }
            None => ("<none>".to_owned(), "<none>".to_owned()),
        };
        rows.push(Row {
            repository,
            tag,
            id: if args.no_trunc {
                image.config_digest.to_string()
            } else {
                image.config_digest.short().to_owned()
            },
            digest: if r.is_some() {
                digest.to_string()
            } else {
                "<none>".to_owned()
            },
            created,
            created_since: created.map_or_else(|| "N/A".to_owned(), |t| human_ago(now - t)),
            size: human_size(sizes.image(store, &image)),
        });
    }
    let mut out = std::io::stdout().lock();
    if args.quiet {
        for row in rows {
            writeln!(out, "{}", row.id)?;
        }
        return Ok(());
    }
    let format = args.format.as_deref().unwrap_or("table");
    if format == "json" {
        for row in &rows {
            let obj: serde_json::Map<String, serde_json::Value> = FIELDS
                .iter()
                .map(|f| ((*f).to_owned(), row.field(f).unwrap_or_default().into()))
                .collect();
            writeln!(out, "{}", serde_json::Value::Object(obj))?;
        }
        return Ok(());
    }
    let template = match format {
        "table" if args.digests => {
            "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
        }
        "table" => "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}",
        t => t,
    };
    let Some(table) = template.strip_prefix("table") else {
        for row in &rows {
            writeln!(out, "{}", render(template, &|f| row.field(f))?)?;
        }
        return Ok(());
    };
    let table = table.trim_start();
    // Aligned columns as docker's tabwriter (3 spaces of padding), a header of field names.
    let mut lines: Vec<Vec<String>> = vec![
        render(table, &|f| FIELDS.contains(&f).then(|| header_of(f)))?
            .split('\t')
            .map(str::to_owned)
            .collect(),
    ];
    for row in &rows {
        lines.push(
            render(table, &|f| row.field(f))?
                .split('\t')
                .map(str::to_owned)
                .collect(),
        );
    }
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for l in &lines {
        for (w, c) in widths.iter_mut().zip(l) {
            *w = (*w).max(c.chars().count());
        }
    }
    for l in &lines {
        let mut s = String::new();
        for (i, c) in l.iter().enumerate() {
            if i + 1 == l.len() {
                s.push_str(c);
            } else {
                use std::fmt::Write as _;
                let _ = write!(s, "{c:<w$}   ", w = widths[i]);
            }
        }
        writeln!(out, "{s}")?;
    }
    Ok(())
}

/// Docker's `units.HumanDuration` wording ("5 minutes ago").
fn human_ago(secs: i64) -> String {
    let s = secs.max(0);
    let text = match s {
        0 => "Less than a second".to_owned(),
        1 => "1 second".to_owned(),
        2..60 => format!("{s} seconds"),
        60..120 => "About a minute".to_owned(),
        120..3600 => format!("{} minutes", s / 60),
        3600..7200 => "About an hour".to_owned(),
        7200..172_800 => format!("{} hours", s / 3600),
        172_800..1_209_600 => format!("{} days", s / 86_400),
        1_209_600..5_184_000 => format!("{} weeks", s / 604_800),
        5_184_000..63_072_000 => format!("{} months", s / 2_592_000),
        _ => format!("{} years", s / 31_536_000),
    };
    format!("{text} ago")
}

/// Docker's `units.HumanSize`: decimal units, 3 significant digits ("4.26MB").
pub(crate) fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    };
    format!("{s}{}", units[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_filter_and_templates_as_docker() {
        let r = |s: &str| Reference::parse(s).expect("ref");
        assert!(reference_matches("hello*", &r("hello-uncle")));
        assert!(reference_matches("hello-uncle:latest", &r("hello-uncle")));
        assert!(!reference_matches("hello-uncle:v1", &r("hello-uncle")));
        assert!(!reference_matches("*", &r("127.0.0.1:5000/busybox:1")));
        assert!(reference_matches(
            "*/busybox",
            &r("127.0.0.1:5000/busybox:1")
        ));
        assert!(reference_matches(
            "*/busybox:?",
            &r("127.0.0.1:5000/busybox:1")
        ));
        let row = Row {
            repository: "app".into(),
            tag: "v1".into(),
            id: "0123456789ab".into(),
            digest: "<none>".into(),
            created: Some(0),
            created_since: "56 years ago".into(),
            size: "1MB".into(),
        };
        let v = |f: &str| row.field(f);
        assert_eq!(
            render("{{.Repository}}:{{ .Tag }}\\t{{.ID}}", &v).unwrap(),
            "app:v1\t0123456789ab"
        );
        assert_eq!(
            render("{{.CreatedAt}}", &v).unwrap(),
            "1970-01-01 00:00:00 +0000 UTC"
        );
        let e = render("{{.Nope}}", &v).unwrap_err();
        assert!(e.to_string().contains("can't evaluate field Nope"), "{e}");
        assert!(render("{{.ID", &v).is_err());
    }

    #[test]
    fn human_units_match_docker() {
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(12_300), "12.3kB");
        assert_eq!(human_ago(30), "30 seconds ago");
        assert_eq!(human_ago(7300), "2 hours ago");
    }
}
