//! Why a step missed the cache. Each step's inputs (the fields of its cache key, its parent's
//! key and the entries of its COPY sources) are kept under `<state_dir>/cache/explain/`, keyed by
//! a stable step identity (context, Dockerfile, stage, position in the stage, instruction text),
//! and a step that will run is compared with the last build of the same step.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cache::{TMP_PREFIX, replace_unsynced, replace_unsynced_with};
use crate::context::Listing;
use crate::error::Result;

/// What one build of a step was made from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StepInputs {
    /// The step's cache key.
    pub(crate) key: String,
    /// The parent's key (`None` on scratch).
    pub(crate) parent: Option<String>,
    /// The key's named fields, in order (list items one per entry).
    pub(crate) fields: Vec<(String, String)>,
    /// The COPY sources' entries (see `context::digest_sources_listed`).
    #[serde(default)]
    pub(crate) files: Listing,
}

/// The store of the last inputs of each step.
#[derive(Debug, Clone)]
pub(crate) struct ExplainStore {
    dir: PathBuf,
}

/// Most changes one explanation lists.
const MAX_LISTED: usize = 3;

impl ExplainStore {
    /// Opens `<state_dir>/cache/explain` (created on the first write).
    pub(crate) fn open(state_dir: &Path) -> Self {
        let dir = state_dir.join("cache").join("explain");
        kiln_snapshotter::remove_orphans(&dir, TMP_PREFIX);
        Self { dir }
    }

    /// The identity of a step: the same Dockerfile step of the same context in any build.
    pub(crate) fn identity(parts: &[&str]) -> String {
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// The key of the step's last recorded build (a small file, read on every hit).
    pub(crate) fn last_key(&self, id: &str) -> Option<String> {
        fs::read_to_string(self.dir.join(format!("{id}.key"))).ok()
    }

    /// The step's last recorded inputs.
    pub(crate) fn load(&self, id: &str) -> Option<StepInputs> {
        // Streamed: a listing of many files is never held twice (as JSON and as lines).
        let f = fs::File::open(self.dir.join(format!("{id}.json"))).ok()?;
        serde_json::from_reader(std::io::BufReader::with_capacity(64 * 1024, f)).ok()
    }

    /// Records the step's inputs (then its key, so the key never names missing inputs).
    pub(crate) fn save(&self, id: &str, inputs: &StepInputs) -> Result<()> {
        let p = self.dir.join(format!("{id}.json"));
        // Without fsync: an explanation lost in a crash only makes the next one say less.
        replace_unsynced_with(&p, &mut |w| {
            serde_json::to_writer(w, inputs).map_err(std::io::Error::other)
        })?;
        replace_unsynced(&self.dir.join(format!("{id}.key")), inputs.key.as_bytes())
    }
}

fn short(v: &str) -> String {
    if v.chars().count() > 80 {
        let s: String = v.chars().take(77).collect();
        format!("{s}...")
    } else {
        v.to_string()
    }
}

/// The fields of one entry line that an explanation compares.
#[derive(Debug, Clone, Copy)]
struct Entry<'a> {
    path: &'a str,
    kind: &'a str,
    mode: &'a str,
    uid: &'a str,
    gid: &'a str,
    payload: &'a str,
}

impl Entry<'_> {
    /// The content as shown: a file's digest with its `sha256:` prefix.
    fn content(&self) -> String {
        if self.kind == "f" && !self.payload.starts_with("sha256:") {
            format!("sha256:{}", self.payload)
        } else {
            self.payload.to_string()
        }
    }

    fn owner(&self) -> String {
        format!("{}:{}", self.uid, self.gid)
    }

    /// Whether the content is the same (a file's digest with or without its prefix).
    fn same_content(&self, o: &Entry<'_>) -> bool {
        let strip = |e: &Entry<'_>| {
            if e.kind == "f" {
                e.payload
                    .strip_prefix("sha256:")
                    .unwrap_or(e.payload)
                    .to_string()
            } else {
                e.payload.to_string()
            }
        };
        self.payload == o.payload || strip(self) == strip(o)
    }
}

/// One entry line split into its fields.
fn entry(line: &str) -> Option<Entry<'_>> {
    let mut f = line.trim_end_matches('\n').splitn(8, '\0');
    let _len = f.next()?;
    let (path, kind, mode, uid, gid, _x, payload) = (
        f.next()?,
        f.next()?,
        f.next()?,
        f.next()?,
        f.next()?,
        f.next()?,
        f.next()?,
    );
    Some(Entry {
        path,
        kind,
        mode,
        uid,
        gid,
        payload,
    })
}

/// The path field of an entry line, `""` when it does not parse.
fn path_of(line: &str) -> &str {
    line.split('\0').nth(1).unwrap_or_default()
}

/// The lines of `l` that parse, by path (of two lines with one path, the later), as line
/// numbers: four bytes a line, the lines themselves are neither copied nor kept parsed.
fn by_path(l: &Listing) -> Vec<u32> {
    let mut v: Vec<u32> = (0..l.len())
        .filter(|&i| entry(l.get(i)).is_some())
        .filter_map(|i| u32::try_from(i).ok())
        .collect();
    // Stable: equal paths stay in line order, and the last of each run is kept.
    v.sort_by(|&a, &b| path_of(l.get(a as usize)).cmp(path_of(l.get(b as usize))));
    let mut out: Vec<u32> = Vec::with_capacity(v.len());
    for i in v {
        match out.last_mut() {
            Some(last) if path_of(l.get(*last as usize)) == path_of(l.get(i as usize)) => {
                *last = i;
            }
            _ => out.push(i),
        }
    }
    out
}

/// Line `i` of `l`, parsed.
fn at(l: &Listing, i: u32) -> Option<Entry<'_>> {
    entry(l.get(i as usize))
}

/// The first `limit` file changes between `old` and `new` (added and changed ones by path,
/// then removed ones by path) and how many there are in all.
fn file_changes(old: &Listing, new: &Listing, limit: usize) -> (Vec<String>, usize) {
    let o = by_path(old);
    let n = by_path(new);
    let find = |p: &str| {
        o.binary_search_by(|&i| path_of(old.get(i as usize)).cmp(p))
            .ok()
            .and_then(|k| at(old, o[k]))
    };
    let mut out = Vec::new();
    let mut total = 0;
    let mut put = |s: &dyn Fn() -> String| {
        if out.len() < limit {
            out.push(s());
        }
        total += 1;
    };
    for nv in n.iter().filter_map(|&i| at(new, i)) {
        let path = nv.path;
        match find(path) {
            None => put(&|| format!("file {path} was added")),
            Some(ov)
                if ov.kind != nv.kind
                    || !ov.same_content(&nv)
                    || ov.mode != nv.mode
                    || ov.uid != nv.uid
                    || ov.gid != nv.gid =>
            {
                put(&|| {
                    let mut what = Vec::new();
                    if ov.kind != nv.kind {
                        what.push(format!("type {} -> {}", ov.kind, nv.kind));
                    }
                    if !ov.same_content(&nv) {
                        what.push(format!("content {} -> {}", ov.content(), nv.content()));
                    }
                    if ov.mode != nv.mode {
                        what.push(format!("mode {} -> {}", ov.mode, nv.mode));
                    }
                    if ov.owner() != nv.owner() {
                        what.push(format!("owner {} -> {}", ov.owner(), nv.owner()));
                    }
                    format!("file {path} changed: {}", what.join(", "))
                });
            }
            Some(_) => {}
        }
    }
    for ov in o.iter().filter_map(|&i| at(old, i)) {
        let path = ov.path;
        if n.binary_search_by(|&i| path_of(new.get(i as usize)).cmp(path))
            .is_err()
        {
            put(&|| format!("file {path} was removed"));
        }
    }
    (out, total)
}

fn kv(item: &str) -> (&str, &str) {
    item.split_once('=').unwrap_or((item, ""))
}

fn field_changes(old: &[(String, String)], new: &[(String, String)]) -> Vec<String> {
    let group = |v: &[(String, String)]| {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, x) in v {
            m.entry(k.clone()).or_default().push(x.clone());
        }
        m
    };
    let (o, n) = (group(old), group(new));
    let mut out = Vec::new();
    for (name, nv) in &n {
        let ov = o.get(name).cloned().unwrap_or_default();
        if &ov == nv {
            continue;
        }
        match name.as_str() {
            // Files are compared one by one when their entries were kept.
            "source-digest" => out.push(format!(
                "the sources' digest changed: {} -> {}",
                ov.join(","),
                nv.join(",")
            )),
            "env" => {
                let om: BTreeMap<&str, &str> = ov.iter().map(|i| kv(i)).collect();
                let nm: BTreeMap<&str, &str> = nv.iter().map(|i| kv(i)).collect();
                for (k, v) in &nm {
                    match om.get(k) {
                        Some(o) if o == v => {}
                        Some(o) => out.push(format!(
                            "build arg or env {k} changed: \"{}\" -> \"{}\"",
                            short(o),
                            short(v)
                        )),
                        None => {
                            out.push(format!("build arg or env {k}=\"{}\" was added", short(v)));
                        }
                    }
                }
                for k in om.keys() {
                    if !nm.contains_key(k) {
                        out.push(format!("build arg or env {k} was removed"));
                    }
                }
            }
            _ => out.push(format!(
                "{name} changed: \"{}\" -> \"{}\"",
                short(&ov.join(" ")),
                short(&nv.join(" "))
            )),
        }
    }
    for name in o.keys() {
        if !n.contains_key(name) {
            out.push(format!("{name} was removed"));
        }
    }
    out
}

/// Why `new` misses the cache, compared with the step's last build `old`. `parent` describes
/// the parent step (its instruction and line, or the base image).
pub(crate) fn explain(old: Option<&StepInputs>, new: &StepInputs, parent: &str) -> String {
    let Some(old) = old else {
        return "no earlier build of this step".into();
    };
    let mut why = Vec::new();
    if old.parent != new.parent {
        why.push(format!("the parent step missed the cache: {parent}"));
    }
    let (mut own, file_count) = if !old.files.is_empty() || !new.files.is_empty() {
        file_changes(&old.files, &new.files, MAX_LISTED)
    } else {
        (Vec::new(), 0)
    };
    let fields = field_changes(&old.fields, &new.fields);
    // The digest line only says more when the entries were not kept.
    let files_told = file_count > 0;
    let fields: Vec<String> = fields
        .into_iter()
        .filter(|f| !(files_told && f.starts_with("the sources' digest")))
        .collect();
    let all = file_count + fields.len();
    own.extend(fields);
    let more = all.saturating_sub(MAX_LISTED);
    own.truncate(MAX_LISTED);
    if more > 0 {
        own.push(format!("and {more} more"));
    }
    why.extend(own);
    if why.is_empty() {
        if old.key == new.key {
            "its earlier result is no longer in the cache".into()
        } else {
            "the step's inputs changed".into()
        }
    } else {
        why.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(parent: &str, env: &[&str], files: &[&str]) -> StepInputs {
        StepInputs {
            key: format!("k{parent}{env:?}{files:?}"),
            parent: Some(parent.into()),
            fields: env.iter().map(|e| ("env".into(), (*e).into())).collect(),
            files: files
                .iter()
                .map(|f| {
                    let (p, d) = f.split_once(' ').expect("path digest");
                    format!("4\0{p}\0f\0644\00\00\0\0{d}\n")
                })
                .collect(),
        }
    }

    #[test]
    fn names_the_changed_file_arg_and_parent() {
        let a = inputs("p", &["A=1"], &["/app/a sha256:01", "/app/b sha256:02"]);
        assert_eq!(explain(None, &a, "x"), "no earlier build of this step");
        let b = inputs("p", &["A=1"], &["/app/a sha256:03", "/app/b sha256:02"]);
        assert_eq!(
            explain(Some(&a), &b, "x"),
            "file /app/a changed: content sha256:01 -> sha256:03"
        );
        let c = inputs("p", &["A=2"], &["/app/a sha256:01", "/app/b sha256:02"]);
        assert_eq!(
            explain(Some(&a), &c, "x"),
            "build arg or env A changed: \"1\" -> \"2\""
        );
        let d = inputs("q", &["A=1"], &["/app/a sha256:01", "/app/b sha256:02"]);
        assert_eq!(
            explain(Some(&a), &d, "COPY x / (line 2)"),
            "the parent step missed the cache: COPY x / (line 2)"
        );
    }
}
