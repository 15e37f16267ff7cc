//! The ordered environment of a stage (llb's `EnvList`).

use std::collections::BTreeMap;

/// An ordered environment where setting a key replaces it in place (llb's `AddEnv`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EnvList(pub(crate) Vec<(String, String)>);

impl EnvList {
    pub(crate) fn set(&mut self, k: &str, v: &str) {
        if let Some(e) = self.0.iter_mut().find(|(key, _)| key == k) {
            e.1 = v.to_string();
        } else {
            self.0.push((k.to_string(), v.to_string()));
        }
    }

    /// `set` for every pair in order, in time linear in both lists (ENV with many pairs).
    pub(crate) fn set_all(&mut self, pairs: &[(String, String)]) {
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        for (i, (k, _)) in self.0.iter().enumerate() {
            index.entry(k.clone()).or_insert(i);
        }
        for (k, v) in pairs {
            if let Some(&i) = index.get(k) {
                self.0[i].1.clone_from(v);
            } else {
                index.insert(k.clone(), self.0.len());
                self.0.push((k.clone(), v.clone()));
            }
        }
    }

    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    pub(crate) fn from_strings(list: &[String]) -> Self {
        let mut e = Self::default();
        for s in list {
            let (k, v) = s.split_once('=').unwrap_or((s.as_str(), ""));
            e.set(k, v);
        }
        e
    }
}
