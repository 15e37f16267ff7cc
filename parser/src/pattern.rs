//! Shell wildcard patterns for `${v#p}`, `${v%p}` and `${v/p/r}`: `*` and `?` with `\` escapes,
//! matched with the leftmost-first semantics of the Go regular expression BuildKit builds
//! (`.*` / `.*?` / `.`, none of which match a newline). A small memoised backtracking matcher
//! replaces the regex engine.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Star,
    Any,
    Lit(char),
}

/// A compiled wildcard pattern.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    toks: Vec<Tok>,
    greedy: bool,
    anchored: bool,
}

/// A pattern BuildKit refuses to compile, e.g. `invalid escape '\x'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatternError(String);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Pattern {
    /// Compiles `pattern` (as written inside `${...}`, escapes still present).
    pub(crate) fn compile(
        pattern: &str,
        greedy: bool,
        anchored: bool,
    ) -> Result<Pattern, PatternError> {
        let mut chars = pattern.chars().peekable();
        if chars.peek() == Some(&'\u{feff}') {
            chars.next();
        }
        let mut toks = Vec::new();
        while let Some(c) = chars.next() {
            match c {
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::Any),
                '\\' => {
                    if matches!(chars.peek(), Some('}' | '/')) {
                        continue;
                    }
                    match chars.next() {
                        Some(t @ ('*' | '?' | '\\')) => toks.push(Tok::Lit(t)),
                        Some(t) => return Err(PatternError(format!("invalid escape '\\{t}'"))),
                        None => {
                            return Err(PatternError("invalid escape '\\\u{fffd}'".to_owned()));
                        }
                    }
                }
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok(Pattern {
            toks,
            greedy,
            anchored,
        })
    }

    /// The byte range of the first (leftmost-first) match in `s`.
    pub(crate) fn find(&self, s: &str) -> Option<(usize, usize)> {
        self.find_from(s, 0)
    }

    fn find_from(&self, s: &str, from: usize) -> Option<(usize, usize)> {
        let idx: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
        let chars: Vec<char> = s.chars().collect();
        let first = idx.iter().position(|&b| b >= from).unwrap_or(idx.len() - 1);
        let mut m = Matcher::new(&self.toks, &chars, self.greedy);
        let last_start = if self.anchored { first } else { chars.len() };
        for start in first..=last_start {
            if let Some(end) = m.match_at(0, start) {
                return Some((idx[start], idx[end]));
            }
        }
        None
    }

    /// Go's `Regexp.ReplaceAllString`: every non-overlapping match replaced by `repl`, where
    /// `$0`/`${0}` is the match, `$$` a dollar, and any other `$name` empty.
    pub(crate) fn replace_all(&self, s: &str, repl: &str) -> String {
        let mut out = String::new();
        let mut last_end = 0;
        let mut search = 0;
        while search <= s.len() {
            let Some((a, b)) = self.find_from(s, search) else {
                break;
            };
            out.push_str(&s[last_end..a]);
            if b > last_end || a == 0 {
                expand_template(&mut out, repl, &s[a..b]);
            }
            last_end = b;
            let width = s[search..].chars().next().map_or(0, char::len_utf8);
            if search + width > b {
                search += width;
            } else if search + 1 > b {
                search += 1;
            } else {
                search = b;
            }
            if self.anchored {
                break;
            }
        }
        out.push_str(&s[last_end..]);
        out
    }
}

fn expand_template(out: &mut String, template: &str, whole: &str) {
    let mut t = template;
    while let Some(i) = t.find('$') {
        out.push_str(&t[..i]);
        t = &t[i + 1..];
        if let Some(rest) = t.strip_prefix('$') {
            out.push('$');
            t = rest;
            continue;
        }
        let (brace, body) = match t.strip_prefix('{') {
            Some(b) => (true, b),
            None => (false, t),
        };
        let name_len: usize = body
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .map(char::len_utf8)
            .sum();
        if name_len == 0 || (brace && !body[name_len..].starts_with('}')) {
            out.push('$');
            continue;
        }
        let name = &body[..name_len];
        if name == "0" {
            out.push_str(whole);
        }
        t = &body[name_len + usize::from(brace)..];
    }
    out.push_str(t);
}

struct Matcher<'a> {
    toks: &'a [Tok],
    s: &'a [char],
    greedy: bool,
    memo: Vec<u32>,
    width: usize,
}

const UNKNOWN: u32 = u32::MAX;
const FAIL: u32 = u32::MAX - 1;

impl<'a> Matcher<'a> {
    fn new(toks: &'a [Tok], s: &'a [char], greedy: bool) -> Self {
        let width = s.len() + 1;
        let cells = (toks.len() + 1).saturating_mul(width);
        Matcher {
            toks,
            s,
            greedy,
            memo: if cells <= 1 << 22 {
                vec![UNKNOWN; cells]
            } else {
                Vec::new()
            },
            width,
        }
    }

    fn match_at(&mut self, ti: usize, si: usize) -> Option<usize> {
        let cell = ti * self.width + si;
        if let Some(&v) = self.memo.get(cell) {
            if v == FAIL {
                return None;
            }
            if v != UNKNOWN {
                return Some(v as usize);
            }
        }
        let r = self.compute(ti, si);
        if let Some(slot) = self.memo.get_mut(cell) {
            *slot = r.map_or(FAIL, |e| e as u32);
        }
        r
    }

    fn compute(&mut self, ti: usize, si: usize) -> Option<usize> {
        let Some(&tok) = self.toks.get(ti) else {
            return Some(si);
        };
        match tok {
            Tok::Lit(c) => {
                if self.s.get(si) == Some(&c) {
                    self.match_at(ti + 1, si + 1)
                } else {
                    None
                }
            }
            Tok::Any => match self.s.get(si) {
                Some(&c) if c != '\n' => self.match_at(ti + 1, si + 1),
                _ => None,
            },
            Tok::Star => {
                let max = self.s[si..].iter().take_while(|&&c| c != '\n').count();
                if self.greedy {
                    (0..=max).rev().find_map(|k| self.match_at(ti + 1, si + k))
                } else {
                    (0..=max).find_map(|k| self.match_at(ti + 1, si + k))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftmost_first() {
        let p = Pattern::compile("a*", true, false).unwrap();
        assert_eq!(p.find("xaaa"), Some((1, 4)));
        let p = Pattern::compile("a*b", false, true).unwrap();
        assert_eq!(p.find("axbxb"), Some((0, 3)));
        let p = Pattern::compile("a*b", true, true).unwrap();
        assert_eq!(p.find("axbxb"), Some((0, 5)));
        assert!(Pattern::compile("\\x", true, true).is_err());
    }

    #[test]
    fn replace_all_like_go() {
        let p = Pattern::compile("o", true, false).unwrap();
        assert_eq!(p.replace_all("foo", "0"), "f00");
        let p = Pattern::compile("", true, false).unwrap();
        assert_eq!(p.replace_all("ab", "-"), "-a-b-");
        let p = Pattern::compile("b", true, false).unwrap();
        assert_eq!(p.replace_all("abc", "[$0$$]"), "a[b$]c");
    }
}
