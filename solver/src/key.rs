//! Cache keys: a sha256 over a canonical, length-prefixed encoding of a step's definition and
//! the keys of its inputs. Never `std::hash::Hash`, never map iteration order: callers add
//! fields in a fixed order, and lists are encoded in the order that gives them meaning (or
//! sorted by the caller when order is irrelevant).

use sha2::{Digest, Sha256};

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
