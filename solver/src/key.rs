//! Cache keys as pure data: `step_key` computes every filesystem step's key from its plan
//! (`Op`) and the digests and keys its inputs resolved to (`KeyInputs`), with no side
//! effects (the solver mounts, hashes and downloads elsewhere, then calls it). A key is a
//! sha256 over a canonical, length-prefixed encoding (each string as its u64 LE length then
//! its bytes; lists as their u64 LE count then their items), starting with the version tag
//! `kiln-cache-key-v1`. Never `std::hash::Hash`, never map iteration order: fields go in a
//! fixed order, lists in the order that gives them meaning. The golden tests pin the encoding
//! (two of them were checked against an independent Python encoder).

use sha2::{Digest, Sha256};

use crate::plan::{MountPlan, Op};
use crate::request::NetworkMode;

/// A step's cache key, `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CacheKey(pub String);

impl CacheKey {
    /// The hex part, used as a file name.
    pub fn hex(&self) -> &str {
        self.0.strip_prefix("sha256:").unwrap_or(&self.0)
    }
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Builds a [`CacheKey`] from tagged fields.
pub(crate) struct KeyBuilder {
    h: Sha256,
    /// The named fields added, in order (list items one per entry), to explain a miss.
    fields: Vec<(String, String)>,
}

impl KeyBuilder {
    /// Starts a key for an operation kind; the version tag lets the encoding evolve.
    pub(crate) fn new(op: &str) -> Self {
        let mut k = Self {
            h: Sha256::new(),
            fields: Vec::new(),
        };
        k.str("kiln-cache-key-v1");
        k.str(op);
        k
    }

    fn raw(&mut self, b: &[u8]) {
        self.h.update((b.len() as u64).to_le_bytes());
        self.h.update(b);
    }

    /// Adds a string field.
    pub(crate) fn str(&mut self, s: &str) -> &mut Self {
        self.raw(s.as_bytes());
        self
    }

    /// Adds a named string field.
    pub(crate) fn field(&mut self, name: &str, value: &str) -> &mut Self {
        self.fields.push((name.to_owned(), value.to_owned()));
        self.str(name);
        self.str(value)
    }

    /// Adds a named list of strings (order kept).
    pub(crate) fn list<S: AsRef<str>>(&mut self, name: &str, items: &[S]) -> &mut Self {
        self.str(name);
        self.h.update((items.len() as u64).to_le_bytes());
        for i in items {
            self.fields.push((name.to_owned(), i.as_ref().to_owned()));
            self.raw(i.as_ref().as_bytes());
        }
        self
    }

    /// Adds an optional field.
    pub(crate) fn opt(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.field(name, v),
            None => self.field(name, "\u{0}none"),
        }
    }

    /// Finishes the key.
    #[cfg(test)]
    pub(crate) fn finish(self) -> CacheKey {
        self.finish_with_fields().0
    }

    /// Finishes the key, also returning its named fields.
    pub(crate) fn finish_with_fields(self) -> (CacheKey, Vec<(String, String)>) {
        (
            CacheKey(format!("sha256:{}", hex::encode(self.h.finalize()))),
            self.fields,
        )
    }
}

/// What a step's key is computed from besides its plan: the digests and keys its inputs
/// resolved to (found by mounting, hashing and downloading elsewhere).
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyInputs {
    /// The parent filesystem's key (`None`: scratch).
    pub(crate) parent: Option<String>,
    /// `rewrite-timestamp=true` with an epoch: clamped mtimes make a different layer.
    pub(crate) layer_epoch: Option<i64>,
    /// COPY/ADD with sources: the digest of exactly the files selected.
    pub(crate) source_digest: Option<String>,
    /// ADD of URLs: each URL's content digest, in the plan's order.
    pub(crate) url_digests: Vec<String>,
    /// RUN: what each `--mount`'s source resolved to, in the plan's order.
    pub(crate) mounts: Vec<MountInput>,
}

/// What one `RUN --mount` source contributes to the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MountInput {
    /// No source (tmpfs, secret, ssh, a cache mount without `from`).
    None,
    /// A bind mount of the context: the digest of the files under its source.
    ContextDigest(String),
    /// A mount from a stage or image: that vertex's key (`None` when it has no filesystem).
    SourceKey(Option<String>),
}

fn flag(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The cache key of a filesystem step: pure data in, key (and its named fields, to explain a
/// miss) out. The encoding is pinned by the golden tests below; changing it must change the
/// `kiln-cache-key-v1` version string, or existing caches would hit wrongly.
pub(crate) fn step_key(op: &Op, inputs: &KeyInputs) -> (CacheKey, Vec<(String, String)>) {
    let mut key = KeyBuilder::new(match op {
        Op::Run(_) => "run",
        Op::Copy(_) => "copy",
        Op::Mkdir { .. } => "mkdir",
    });
    key.opt("parent", inputs.parent.as_deref());
    if let Some(e) = inputs.layer_epoch {
        key.field("rewrite-timestamp", &e.to_string());
    }
    match op {
        Op::Mkdir { path, user } => {
            key.field("path", path).field("user", user);
        }
        Op::Copy(c) => {
            key.field("add", flag(c.add))
                .list("sources", &c.sources)
                .field("dest", &c.dest)
                .opt("chown", c.chown.as_deref())
                .opt("chmod", c.chmod.as_deref())
                .field("parents", flag(c.parents))
                .list("exclude", &c.exclude)
                .field("unpack", flag(c.unpack))
                .field("link", flag(c.link));
            for (name, data) in &c.inline {
                key.field("inline", name)
                    .field("inline-sha256", &sha256_hex(data));
            }
            if let Some(d) = &inputs.source_digest {
                key.field("source-digest", d);
            }
            for (url, digest) in c.urls.iter().zip(&inputs.url_digests) {
                key.field("url", url).field("url-digest", digest);
            }
        }
        Op::Run(r) => {
            key.list("args", &r.args)
                .list("env", &r.env)
                .field("user", &r.user)
                .field("cwd", &r.cwd)
                .field(
                    "network",
                    match r.network {
                        NetworkMode::Default => "default",
                        NetworkMode::Host => "host",
                        NetworkMode::None => "none",
                    },
                )
                .field("platform", &r.platform.to_string());
            if let Some((name, data)) = &r.script {
                key.field("script", name)
                    .field("script-sha256", &sha256_hex(data));
            }
            for (m, input) in r.mounts.iter().zip(&inputs.mounts) {
                mount_key(&mut key, m, input);
            }
        }
    }
    key.finish_with_fields()
}

fn mount_key(key: &mut KeyBuilder, m: &MountPlan, input: &MountInput) {
    let rm = &m.mount;
    key.field("mount", rm.kind.as_str())
        .opt("target", rm.target.as_deref())
        .opt("source", rm.source.as_deref())
        .opt("from", rm.from.as_deref())
        .field("ro", flag(rm.read_only))
        .opt("id", rm.id.as_deref())
        .opt("env", rm.env.as_deref())
        .opt("mode", rm.mode.map(|x| format!("{x:o}")).as_deref())
        .opt("uid", rm.uid.map(|x| x.to_string()).as_deref())
        .opt("gid", rm.gid.map(|x| x.to_string()).as_deref())
        .opt("size", rm.size.map(|x| x.to_string()).as_deref());
    match input {
        MountInput::None => {}
        MountInput::ContextDigest(d) => {
            key.field("source-digest", d);
        }
        MountInput::SourceKey(k) => {
            key.opt("source-key", k.as_deref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_unambiguous() {
        let mut a = KeyBuilder::new("run");
        a.field("cmd", "ab").field("env", "c");
        let mut b = KeyBuilder::new("run");
        b.field("cmd", "a").field("env", "bc");
        assert_ne!(a.finish(), b.finish());
        let mut c = KeyBuilder::new("run");
        c.list("x", &["a", "b"]);
        let mut d = KeyBuilder::new("run");
        d.list("x", &["ab"]);
        assert_ne!(c.finish(), d.finish());
    }

    use crate::plan::{CopyOp, RunOp, SourceRef};

    fn hex_of(op: &Op, inputs: &KeyInputs) -> String {
        step_key(op, inputs).0.hex().to_owned()
    }

    fn copy_op() -> CopyOp {
        CopyOp {
            add: false,
            from: SourceRef::Context,
            sources: vec!["app/".into(), "go.mod".into()],
            inline: vec![("note".into(), b"hi\n".to_vec())],
            dest: "/src/".into(),
            chown: Some("1000:1000".into()),
            chmod: None,
            parents: false,
            exclude: vec!["*.md".into()],
            link: true,
            unpack: false,
            urls: vec!["https://example.invalid/a.tgz".into()],
            checksum: None,
        }
    }

    fn run_op() -> RunOp {
        let mount = |csv: &str, source| MountPlan {
            mount: kiln_parser::RunMount::parse(csv).expect("mount"),
            source,
        };
        RunOp {
            args: vec!["/bin/sh".into(), "-c".into(), "make".into()],
            env: vec!["PATH=/usr/bin:/bin".into(), "A=1".into()],
            proxy_env: vec!["HTTP_PROXY=http://p".into()],
            user: "0:0".into(),
            cwd: "/src".into(),
            network: NetworkMode::None,
            mounts: vec![
                mount("type=bind,source=.,target=/ctx", Some(SourceRef::Context)),
                mount("type=cache,target=/root/.cache,id=go,mode=0755,uid=1", None),
                mount(
                    "type=bind,from=build,target=/out",
                    Some(SourceRef::Stage(0)),
                ),
            ],
            script: None,
            platform: kiln_image::Platform::linux_amd64(),
        }
    }

    /// The encoding of every step kind, pinned (the first two values were also computed by an
    /// independent encoder: `sha256(le64(17) "kiln-cache-key-v1" le64(5) "mkdir")`...): these hex values are the keys of existing
    /// caches. A change here must come with a new `kiln-cache-key-vN` (else old records would
    /// be hits for different steps), never by updating the expected values alone.
    #[test]
    fn golden_keys_pin_the_encoding() {
        assert_eq!(
            KeyBuilder::new("mkdir").finish().hex(),
            "647dfa413607e247891868607c9264485915a270e33b2150d2b9bf6be9f64b34",
            "the version string and op tag alone"
        );
        let mkdir = Op::Mkdir {
            path: "/app".into(),
            user: "1000".into(),
        };
        assert_eq!(
            hex_of(&mkdir, &KeyInputs::default()),
            "9b668985fb5a06874e55bff5cec841692b9a8a4fc8c9432ea8d7f62b514124ca"
        );
        let parent = KeyInputs {
            parent: Some(format!("sha256:{}", "ab".repeat(32))),
            layer_epoch: Some(1_700_000_000),
            ..KeyInputs::default()
        };
        assert_eq!(
            hex_of(&mkdir, &parent),
            "ac5fdbb60c4bb85af6d37acc7edc21cb98bc818e8610970d764a6fdd12683206"
        );
        let copy = KeyInputs {
            source_digest: Some(format!("sha256:{}", "cd".repeat(32))),
            url_digests: vec![format!("sha256:{}", "ef".repeat(32))],
            ..parent.clone()
        };
        assert_eq!(
            hex_of(&Op::Copy(copy_op()), &copy),
            "e72a6df2377cfb96285f674dcfff6037156e69690d9f17aa36ff11345832cbee"
        );
        let run = KeyInputs {
            mounts: vec![
                MountInput::ContextDigest(format!("sha256:{}", "01".repeat(32))),
                MountInput::None,
                MountInput::SourceKey(Some(format!("sha256:{}", "02".repeat(32)))),
            ],
            ..parent
        };
        // RUN keys gained the `platform` field (multi-platform builds): a field no earlier
        // record has, so no old record can hit; mkdir and copy keys are unchanged.
        assert_eq!(
            hex_of(&Op::Run(run_op()), &run),
            "0d2473d6a37e379de81a31f17f096bc70fabb033d02a1dc266843e8358254cfa"
        );
        // Proxy variables never enter the key.
        let mut no_proxy = run_op();
        no_proxy.proxy_env.clear();
        assert_eq!(
            hex_of(&Op::Run(no_proxy), &run),
            "0d2473d6a37e379de81a31f17f096bc70fabb033d02a1dc266843e8358254cfa"
        );
    }

    #[test]
    fn every_input_changes_the_key() {
        let base = KeyInputs {
            parent: Some("sha256:p".into()),
            source_digest: Some("sha256:s".into()),
            url_digests: vec!["sha256:u".into()],
            ..KeyInputs::default()
        };
        let k = |op: &Op, i: &KeyInputs| step_key(op, i).0;
        let copy = Op::Copy(copy_op());
        let reference = k(&copy, &base);
        for changed in [
            KeyInputs {
                parent: None,
                ..base.clone()
            },
            KeyInputs {
                layer_epoch: Some(1),
                ..base.clone()
            },
            KeyInputs {
                source_digest: Some("sha256:t".into()),
                ..base.clone()
            },
            KeyInputs {
                url_digests: vec!["sha256:v".into()],
                ..base.clone()
            },
        ] {
            assert_ne!(k(&copy, &changed), reference, "{changed:?}");
        }
        let mut c = copy_op();
        c.dest = "/other/".into();
        assert_ne!(k(&Op::Copy(c), &base), reference);
    }

    #[test]
    fn the_platform_a_run_step_runs_as_is_in_its_key() {
        let amd64 = step_key(&Op::Run(run_op()), &KeyInputs::default()).0;
        let mut arm = run_op();
        arm.platform = kiln_image::Platform::parse("linux/arm64").expect("platform");
        assert_ne!(step_key(&Op::Run(arm), &KeyInputs::default()).0, amd64);
    }

    #[test]
    fn stable_across_runs() {
        let mut a = KeyBuilder::new("copy");
        a.field("dest", "/x");
        assert_eq!(a.finish().0, {
            let mut b = KeyBuilder::new("copy");
            b.field("dest", "/x");
            b.finish().0
        });
    }
}
