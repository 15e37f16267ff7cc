//! `.dockerignore` files: reading them and matching context paths against them, with the exact
//! semantics of moby/patternmatcher (`ignorefile.ReadAll` + `PatternMatcher`): comments only at
//! line start, patterns cleaned like Go's `filepath.Clean` with a leading `/` dropped, `!`
//! exclusions where the last matching pattern wins, `**` for any number of directories, and a
//! path that is excluded when it or any of its parent directories matches.
//!
//! This module knows nothing of walking a context; `context.rs` asks it one path at a time.

use std::path::{Path, PathBuf};

/// Go's `path.Clean` (the one copy, in kiln-parser), for the solver's other modules too.
pub(crate) use kiln_parser::clean_path as clean;
use regex::Regex;

use crate::error::{Error, Result};

/// How one pattern is matched (patternmatcher's `matchType`).
#[derive(Debug, Clone)]
enum MatchKind {
    Exact,
    Prefix,
    Suffix,
    Regex(Regex),
}

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Pattern {
    cleaned: String,
    exclusion: bool,
    kind: MatchKind,
}

/// A compiled list of `.dockerignore` patterns.
#[derive(Debug, Clone, Default)]
pub struct IgnoreMatcher {
    patterns: Vec<Pattern>,
    has_exclusions: bool,
}

/// Reads the lines of a `.dockerignore` file the way `ignorefile.ReadAll` does.
pub fn parse_ignore_file(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = if i == 0 {
            line.strip_prefix('\u{feff}').unwrap_or(line)
        } else {
            line
        };
        // Go's bufio.Scanner drops a trailing \r.
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut p = String::new();
        if !pattern.is_empty() {
            p = clean(pattern);
            if p.len() > 1 && p.starts_with('/') {
                p.remove(0);
            }
        }
        if invert {
            p.insert(0, '!');
        }
        out.push(p);
    }
    out
}

/// Checks a pattern the way Go's `filepath.Match(p, ".")` reports `ErrBadPattern`.
fn validate(pattern: &str) -> Result<(), String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                if i + 1 >= chars.len() {
                    return Err("trailing backslash".into());
                }
                i += 2;
            }
            '[' => {
                let mut j = i + 1;
                if j < chars.len() && chars[j] == '^' {
                    j += 1;
                }
                let start = j;
                loop {
                    if j >= chars.len() {
                        return Err("unterminated character class".into());
                    }
                    if chars[j] == ']' && j > start {
                        break;
                    }
                    if chars[j] == ']' {
                        return Err("empty character class".into());
                    }
                    if chars[j] == '\\' {
                        j += 1;
                    }
                    j += 1;
                }
                i = j + 1;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

fn compile(cleaned: &str) -> Result<MatchKind, String> {
    const SHOULD_ESCAPE: &str = ".+()|{}$";
    let mut re = String::from("^");
    let chars: Vec<char> = cleaned.chars().collect();
    let mut kind = 0u8; // 0 exact, 1 prefix, 2 suffix, 3 regex
    let mut i = 0;
    let mut idx = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        if ch == '*' {
            if chars.get(i) == Some(&'*') {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if kind == 0 {
                        kind = 1;
                    } else {
                        re.push_str(".*");
                        kind = 3;
                    }
                } else {
                    re.push_str("(.*/)?");
                    kind = 3;
                }
                if idx == 0 {
                    kind = 2;
                }
            } else {
                re.push_str("[^/]*");
                kind = 3;
            }
        } else if ch == '?' {
            re.push_str("[^/]");
            kind = 3;
        } else if SHOULD_ESCAPE.contains(ch) {
            re.push('\\');
            re.push(ch);
        } else if ch == '\\' {
            if i < chars.len() {
                re.push('\\');
                re.push(chars[i]);
                i += 1;
                kind = 3;
            } else {
                re.push_str("\\\\");
            }
        } else if ch == '[' || ch == ']' {
            re.push(ch);
            kind = 3;
        } else {
            re.push(ch);
        }
        idx += 1;
    }
    Ok(match kind {
        0 => MatchKind::Exact,
        1 => MatchKind::Prefix,
        2 => MatchKind::Suffix,
        _ => {
            re.push('$');
            MatchKind::Regex(Regex::new(&re).map_err(|e| e.to_string())?)
        }
    })
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            MatchKind::Exact => path == self.cleaned,
            MatchKind::Prefix => path.starts_with(&self.cleaned[..self.cleaned.len() - 2]),
            MatchKind::Suffix => {
                let suffix = &self.cleaned[2..];
                if path.ends_with(suffix) {
                    return true;
                }
                suffix.starts_with('/') && path == &suffix[1..]
            }
            MatchKind::Regex(re) => re.is_match(path),
        }
    }
}

impl IgnoreMatcher {
    /// Compiles patterns (as returned by [`parse_ignore_file`]).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self> {
        let mut out = Self::default();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let mut p = clean(p);
            let mut exclusion = false;
            if let Some(rest) = p.strip_prefix('!') {
                if rest.is_empty() {
                    return Err(Error::IgnorePattern {
                        pattern: p.clone(),
                        reason: "illegal exclusion pattern: \"!\"".into(),
                    });
                }
                exclusion = true;
                p = rest.to_string();
                out.has_exclusions = true;
            }
            validate(&p).map_err(|reason| Error::IgnorePattern {
                pattern: p.clone(),
                reason,
            })?;
            let kind = compile(&p).map_err(|reason| Error::IgnorePattern {
                pattern: p.clone(),
                reason,
            })?;
            out.patterns.push(Pattern {
                cleaned: p,
                exclusion,
                kind,
            });
        }
        Ok(out)
    }

    /// Reads the ignore file that applies to a build: `<Dockerfile>.dockerignore` next to the
    /// Dockerfile when it exists, else `<context>/.dockerignore`, else nothing.
    pub fn for_build(context_dir: &Path, dockerfile: Option<&Path>) -> Result<Self> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(df) = dockerfile
            && let Some(name) = df.file_name()
        {
            let mut n = name.to_os_string();
            n.push(".dockerignore");
            candidates.push(df.with_file_name(n));
        }
        candidates.push(context_dir.join(".dockerignore"));
        for c in candidates {
            match std::fs::read(&c) {
                Ok(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    return Self::new(&parse_ignore_file(&text));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::Io {
                        op: "read",
                        path: c,
                        source: e,
                    });
                }
            }
        }
        Ok(Self::default())
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether some pattern re-includes (`!`) paths.
    pub fn has_exclusions(&self) -> bool {
        self.has_exclusions
    }

    /// patternmatcher's `MatchesOrParentMatches`: whether a slash-separated path relative to the
    /// context root is excluded from the context.
    pub fn is_excluded(&self, path: &str) -> bool {
        let path = clean(path);
        let mut matched = false;
        let parent = match path.rfind('/') {
            Some(i) => &path[..i],
            None => ".",
        };
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let mut m = p.matches(&path);
            if !m && parent != "." {
                for i in 0..parent_dirs.len() {
                    if p.matches(&parent_dirs[..=i].join("/")) {
                        m = true;
                        break;
                    }
                }
            }
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Whether a directory that is itself excluded may still hold included paths (so a walker
    /// must descend into it).
    pub fn may_include_below(&self, dir: &str) -> bool {
        if !self.has_exclusions {
            return false;
        }
        let prefix = format!("{dir}/");
        self.patterns.iter().any(|p| {
            p.exclusion
                && (p.cleaned.starts_with(&prefix)
                    || p.cleaned.contains('*')
                    || p.cleaned.contains('?')
                    || p.cleaned.contains('['))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(patterns: &[&str]) -> IgnoreMatcher {
        let text = patterns.join("\n");
        IgnoreMatcher::new(&parse_ignore_file(&text)).expect("valid patterns")
    }

    #[test]
    fn read_all_rules() {
        let got =
            parse_ignore_file("\u{feff}# c\n  \n /abs \n!  /inv/ \n  # not a comment\na/../b\n");
        assert_eq!(got, vec!["abs", "!inv", "# not a comment", "b"]);
    }

    #[test]
    fn table() {
        // (patterns, path, excluded)
        let cases: &[(&[&str], &str, bool)] = &[
            (&["*.log"], "a.log", true),
            (&["*.log"], "dir/a.log", false),
            (&["*.log", "!keep.log"], "keep.log", false),
            (&["**/tmp"], "tmp", true),
            (&["**/tmp"], "src/tmp", true),
            (&["**/tmp"], "src/tmp/junk", true),
            (&["**/tmp"], "src/xtmp", false),
            (&["build/"], "build/out", true),
            (&["build/"], "builder", false),
            (&["/docs/*.md", "!docs/README.md"], "docs/a.md", true),
            (&["/docs/*.md", "!docs/README.md"], "docs/README.md", false),
            (&["/docs/*.md", "!docs/README.md"], "docs/x.txt", false),
            (&["secret*"], "secret.key", true),
            (&["secret*"], "a/secret.key", false),
            (&["**"], "anything/at/all", true),
            (&["**", "!Dockerfile"], "Dockerfile", false),
            (&["a/**"], "a/b/c", true),
            (&["a/**"], "ab", false),
            (&["**/*.go"], "x/y/z.go", true),
            (&["**/*.go"], "z.go", true),
            (&["a/**/b"], "a/b", true),
            (&["a/**/b"], "a/x/y/b", true),
            (&["?.txt"], "a.txt", true),
            (&["?.txt"], "ab.txt", false),
            (&["[ab].txt"], "b.txt", true),
            (&["[ab].txt"], "c.txt", false),
            (&["dir", "!dir/keep"], "dir/keep", false),
            (&["dir", "!dir/keep"], "dir/other", true),
            (&["a.(x)"], "a.(x)", true),
            (&["a+b"], "a+b", true),
            (&["x\\*y"], "x*y", true),
            (&["x\\*y"], "xay", false),
            (&["../outside"], "outside", false),
        ];
        for (patterns, path, want) in cases {
            assert_eq!(
                m(patterns).is_excluded(path),
                *want,
                "patterns {patterns:?} path {path}"
            );
        }
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(IgnoreMatcher::new(&["!"]).is_err());
        assert!(IgnoreMatcher::new(&["[a"]).is_err());
        assert!(IgnoreMatcher::new(&["a\\"]).is_err());
    }

    #[test]
    fn dockerfile_specific_ignore_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(".dockerignore"), "a\n").expect("write");
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").expect("write");
        let df = dir.path().join("Dockerfile");
        let m1 = IgnoreMatcher::for_build(dir.path(), Some(&df)).expect("read");
        assert!(m1.is_excluded("a") && !m1.is_excluded("b"));
        std::fs::write(dir.path().join("Dockerfile.dockerignore"), "b\n").expect("write");
        let m2 = IgnoreMatcher::for_build(dir.path(), Some(&df)).expect("read");
        assert!(!m2.is_excluded("a") && m2.is_excluded("b"));
    }
}
