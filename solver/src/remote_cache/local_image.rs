//! `--cache-from IMAGE` where IMAGE is in the local store (a name, a full image ID or a unique
//! ID prefix), as docker's daemon looks at a local image before the registry. kiln images carry
//! no cache map, so the image is used the classic builder's way (moby's `image/cache`): a RUN
//! step takes the image's layer when the image's history up to that step is the build's (same
//! instructions, `created` aside), its layers up to there are the step's parent's, and the
//! next history entry is this RUN (`created_by`, which holds the command and the build args it
//! uses). Steps whose result the history cannot vouch for always run: COPY/ADD (kiln's
//! `created_by` has no content digest, unlike the classic builder's), RUN with a bind or seeded
//! cache mount or a heredoc script; when they make the same layer as before, the later RUNs
//! still match.

use std::collections::HashMap;
use std::sync::Mutex;

use kiln_image::{ContentStore, Digest, History, Image, Platform, Reference};

use super::CacheEntry;
use crate::cache::LayerRecord;
use crate::plan::{Op, Plan};

/// One local image used as a cache source.
#[derive(Debug)]
pub(super) struct ImageSource {
    history: Vec<History>,
    /// Each history entry's layer (`None`: an empty layer).
    layers: Vec<Option<LayerRecord>>,
    os: String,
    architecture: String,
    variant: Option<String>,
}

/// The local image `name` names (a reference, an image ID or a unique ID prefix), if any.
pub(super) fn find(store: &ContentStore, name: &str) -> Option<Image> {
    let platform = Platform::host();
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    let is_hex = !hex.is_empty() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let by_id = name.starts_with("sha256:") || is_hex && hex.len() == 64;
    if !by_id
        && let Ok(r) = Reference::parse(name)
        && let Ok(image) = Image::resolve(store, &r, &platform)
    {
        return Some(image);
    }
    if !is_hex {
        return None;
    }
    let mut digests: Vec<Digest> = store
        .list_tags()
        .ok()?
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    digests.extend(store.list_dangling().ok()?.into_iter().map(|d| d.digest));
    let mut found: Vec<Image> = Vec::new();
    for d in digests {
        if let Ok(image) = Image::load(store, &d, &platform)
            && image.config_digest.hex().starts_with(hex)
            && !found.iter().any(|f| f.config_digest == image.config_digest)
        {
            found.push(image);
        }
    }
    // An ambiguous prefix names no image.
    (found.len() == 1).then(|| found.remove(0))
}

impl ImageSource {
    /// The image's history with each entry's layer; `None` when they do not line up.
    pub(super) fn of(image: &Image) -> Option<Self> {
        let diff_ids = &image.config.rootfs.diff_ids;
        if diff_ids.len() != image.layers.len() {
            return None;
        }
        let mut next = 0;
        let mut layers = Vec::new();
        for h in &image.config.history {
            if h.empty_layer {
                layers.push(None);
                continue;
            }
            let (desc, diff_id) = (image.layers.get(next)?, diff_ids.get(next)?);
            layers.push(Some(LayerRecord {
                digest: desc.digest.to_string(),
                diff_id: diff_id.to_string(),
                size: desc.size,
                media_type: desc.media_type.clone(),
            }));
            next += 1;
        }
        (next == diff_ids.len()).then(|| ImageSource {
            history: image.config.history.clone(),
            layers,
            os: image.config.os.clone(),
            architecture: image.config.architecture.clone(),
            variant: image.config.variant.clone(),
        })
    }

    /// This image's entry for step `s` of `plan` on top of `parent` (its key and layers), when
    /// the history matches.
    fn entry_for(
        &self,
        plan: &Plan,
        s: usize,
        parent: Option<(&str, &[LayerRecord])>,
    ) -> Option<CacheEntry> {
        let step = plan.steps.get(s)?;
        let Op::Run(run) = &step.op else {
            return None;
        };
        if run.script.is_some() || run.mounts.iter().any(|m| m.source.is_some()) {
            return None;
        }
        let stage = plan.stages.get(step.stage)?.as_ref()?;
        // The stage's platform (its image config's).
        let c = &stage.config;
        if (&c.os, &c.architecture, &c.variant) != (&self.os, &self.architecture, &self.variant) {
            return None;
        }
        let h = stage.history_steps.iter().position(|x| *x == Some(s))?;
        let ours = stage.config.history.get(..=h)?;
        let theirs = self.history.get(..=h)?;
        let same = |a: &History, b: &History| {
            (&a.created_by, &a.author, &a.comment) == (&b.created_by, &b.author, &b.comment)
        };
        // The step itself: the same instruction (whether it left a layer is what it made).
        if !same(&ours[h], &theirs[h])
            || !ours[..h]
                .iter()
                .zip(&theirs[..h])
                .all(|(a, b)| same(a, b) && a.empty_layer == b.empty_layer)
        {
            return None;
        }
        let below: Vec<&str> = self.layers[..h]
            .iter()
            .flatten()
            .map(|l| l.diff_id.as_str())
            .collect();
        let parent_layers: Vec<&str> = parent
            .map(|(_, l)| l.iter().map(|x| x.diff_id.as_str()).collect())
            .unwrap_or_default();
        if below != parent_layers {
            return None;
        }
        // An empty layer has no record to apply: such a step runs again (as for imports).
        let layer = self.layers[h].clone()?;
        Some(CacheEntry {
            parent: parent.map(|(k, _)| k.to_owned()),
            layer: Some(layer),
            created: theirs[h].created.clone(),
        })
    }
}

/// The local images of a build's `--cache-from`, and the steps matched so far.
#[derive(Debug, Default)]
pub(super) struct LocalImages {
    pub(super) sources: Vec<ImageSource>,
    pub(super) matched: Mutex<HashMap<String, CacheEntry>>,
}

impl LocalImages {
    /// Records the first source's entry for step `s` under its cache `key`.
    pub(super) fn match_step(
        &self,
        plan: &Plan,
        s: usize,
        key: &str,
        parent: Option<(&str, &[LayerRecord])>,
    ) {
        if let Some(e) = self
            .sources
            .iter()
            .find_map(|i| i.entry_for(plan, s, parent))
            && let Ok(mut m) = self.matched.lock()
        {
            m.insert(key.to_owned(), e);
        }
    }

    /// The matched entry for `key`.
    pub(super) fn get(&self, key: &str) -> Option<CacheEntry> {
        self.matched.lock().ok()?.get(key).cloned()
    }
}
