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
        let m = Matches::new(self, s);
        m.first_from(0, self.anchored)
    }

    /// Go's `Regexp.ReplaceAllString`: every non-overlapping match replaced by `repl`, where
    /// `$0`/`${0}` is the match, `$$` a dollar, and any other `$name` empty.
    pub(crate) fn replace_all(&self, s: &str, repl: &str) -> String {
        let m = Matches::new(self, s);
        let mut out = String::new();
        let mut last_end = 0;
        let mut search = 0;
        while search <= s.len() {
            let Some((a, b)) = m.first_from(search, self.anchored) else {
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

/// For every start position, the end of the match Go's backtracker would report there.
///
/// Computed by dynamic programming over the tokens from last to first: a literal or `?` at
/// `j` continues at `j + 1`; a greedy star takes the largest (lazy: smallest) count, up to the
/// next newline, after which the rest matches, which is exactly the backtracker's first
/// success. O(tokens x chars) time, O(chars) memory, no recursion.
struct Matches {
    /// Byte offset of every char index (plus the end).
    offsets: Vec<usize>,
    /// `ends[i]`: char index where the match starting at char `i` ends.
    ends: Vec<Option<usize>>,
}

impl Matches {
    fn new(p: &Pattern, s: &str) -> Matches {
        let chars: Vec<char> = s.chars().collect();
        let n = chars.len();
        let offsets: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
        let mut next: Vec<Option<usize>> = (0..=n).map(Some).collect();
        let mut cur: Vec<Option<usize>> = vec![None; n + 1];
        for tok in p.toks.iter().rev() {
            match *tok {
                Tok::Lit(c) => {
                    for j in 0..=n {
                        cur[j] = if chars.get(j) == Some(&c) {
                            next[j + 1]
                        } else {
                            None
                        };
                    }
                }
                Tok::Any => {
                    for j in 0..=n {
                        cur[j] = match chars.get(j) {
                            Some(&c) if c != '\n' => next[j + 1],
                            _ => None,
                        };
                    }
                }
                Tok::Star => {
                    let mut best: Option<usize> = None;
                    for j in (0..=n).rev() {
                        if chars.get(j) == Some(&'\n') {
                            best = None;
                        }
                        if next[j].is_some() && (best.is_none() || !p.greedy) {
                            best = Some(j);
                        }
                        cur[j] = best.and_then(|b| next[b]);
                    }
                }
            }
            std::mem::swap(&mut next, &mut cur);
        }
        Matches {
            offsets,
            ends: next,
        }
    }

    /// The leftmost match starting at or after byte `from` (only at `from` when anchored).
    fn first_from(&self, from: usize, anchored: bool) -> Option<(usize, usize)> {
        // Binary search: `replace_all` calls this once per match, so a linear scan made
        // `${V//a/b}` quadratic in the length of `V`.
        let first = self.offsets.partition_point(|&b| b < from);
        if first == self.offsets.len() {
            return None;
        }
        let last = if anchored { first } else { self.ends.len() - 1 };
        (first..=last).find_map(|i| self.ends[i].map(|e| (self.offsets[i], self.offsets[e])))
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
        let p = Pattern::compile("*a?", false, true).unwrap();
        assert_eq!(p.find("xxaya"), Some((0, 4)));
        assert_eq!(
            Pattern::compile("a*", true, true).unwrap().find("ab\nc"),
            Some((0, 2))
        );
    }

    #[test]
    fn long_patterns_stay_fast() {
        let lit = "a".repeat(3_000);
        let p = Pattern::compile(&lit, true, true).unwrap();
        assert_eq!(p.find(&lit), Some((0, 3_000)));
        let pat = "a*".repeat(2_000);
        let p = Pattern::compile(&format!("{pat}b"), false, true).unwrap();
        assert_eq!(p.find(&"a".repeat(3_000)), None);
        let p = Pattern::compile(&pat, true, true).unwrap();
        assert_eq!(p.find(&"a".repeat(3_000)), Some((0, 3_000)));
    }

    #[test]
    fn replace_all_is_linear_in_the_value() {
        // Issue 12: 200,000 matches, each found with a binary search of the char offsets.
        let value = "ab".repeat(100_000);
        let start = std::time::Instant::now();
        let p = Pattern::compile("b", true, false).unwrap();
        let out = p.replace_all(&value, "c");
        assert_eq!(out, "ac".repeat(100_000));
        let p = Pattern::compile("", true, false).unwrap();
        assert_eq!(p.replace_all(&value[..6], "-"), "-a-b-a-b-a-b-");
        assert_eq!(p.replace_all(&value, "-").len(), 400_001);
        let took = start.elapsed();
        assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
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
