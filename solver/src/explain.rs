//! Why a step missed the cache. Each step's inputs (the fields of its cache key, its parent's
//! key and the entries of its COPY sources) are kept under `<state_dir>/cache/explain/`, keyed by
//! a stable step identity (context, Dockerfile, stage, position in the stage, instruction text),
//! and a step that will run is compared with the last build of the same step.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cache::{TMP_PREFIX, replace_unsynced};
use crate::error::{Error, Result};

/// What one build of a step was made from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StepInputs {
    /// The step's cache key.
    pub(crate) key: String,
    /// The parent's key (`None` on scratch).
    pub(crate) parent: Option<String>,
    /// The key's named fields, in order (list items one per entry).
    pub(crate) fields: Vec<(String, String)>,
    /// The COPY sources' entries (see `context::digest_entries_listed`).
    #[serde(default)]
    pub(crate) files: Vec<String>,
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
        let b = fs::read(self.dir.join(format!("{id}.json"))).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// Records the step's inputs (then its key, so the key never names missing inputs).
    pub(crate) fn save(&self, id: &str, inputs: &StepInputs) -> Result<()> {
        let p = self.dir.join(format!("{id}.json"));
        let bytes = serde_json::to_vec(inputs).map_err(|source| Error::CacheEncode {
            path: p.clone(),
            source,
        })?;
        // Without fsync: an explanation lost in a crash only makes the next one say less.
        replace_unsynced(&p, &bytes)?;
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

/// One entry line split into (path, (kind, mode, owner, content)).
fn entry(line: &str) -> Option<(String, [String; 4])> {
    let f: Vec<&str> = line.trim_end_matches('\n').splitn(8, '\0').collect();
    let [_, path, kind, mode, uid, gid, _x, payload] = f.as_slice() else {
        return None;
    };
    let payload = if *kind == "f" && !payload.starts_with("sha256:") {
        format!("sha256:{payload}")
    } else {
        (*payload).to_string()
    };
    Some((
        (*path).to_string(),
        [
            (*kind).to_string(),
            (*mode).to_string(),
            format!("{uid}:{gid}"),
            payload,
        ],
    ))
}

fn file_changes(old: &[String], new: &[String]) -> Vec<String> {
    let o: BTreeMap<String, [String; 4]> = old.iter().filter_map(|l| entry(l)).collect();
    let n: BTreeMap<String, [String; 4]> = new.iter().filter_map(|l| entry(l)).collect();
    let mut out = Vec::new();
    for (path, nv) in &n {
        match o.get(path) {
            None => out.push(format!("file {path} was added")),
            Some(ov) if ov != nv => {
                let mut what = Vec::new();
                if ov[0] != nv[0] {
                    what.push(format!("type {} -> {}", ov[0], nv[0]));
                }
                if ov[3] != nv[3] {
                    what.push(format!("content {} -> {}", ov[3], nv[3]));
                }
                if ov[1] != nv[1] {
                    what.push(format!("mode {} -> {}", ov[1], nv[1]));
                }
                if ov[2] != nv[2] {
                    what.push(format!("owner {} -> {}", ov[2], nv[2]));
                }
                out.push(format!("file {path} changed: {}", what.join(", ")));
            }
            Some(_) => {}
        }
    }
    for path in o.keys() {
        if !n.contains_key(path) {
            out.push(format!("file {path} was removed"));
        }
    }
    out
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
    let mut own = Vec::new();
    if !old.files.is_empty() || !new.files.is_empty() {
        own.extend(file_changes(&old.files, &new.files));
    }
    let fields = field_changes(&old.fields, &new.fields);
    // The digest line only says more when the entries were not kept.
    let files_told = !own.is_empty();
    own.extend(
        fields
            .into_iter()
            .filter(|f| !(files_told && f.starts_with("the sources' digest"))),
    );
    let more = own.len().saturating_sub(MAX_LISTED);
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
