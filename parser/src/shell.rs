//! The shell-word lexer: BuildKit's `frontend/dockerfile/shell` (`lex.go`) semantics for
//! quotes, escapes and `$VAR` / `${VAR...}` expansion, in single-word mode
//! ([`Lexer::process_word`]) and word-splitting mode ([`Lexer::process_words`]).
//!
//! It owns expansion only; which instruction expands which word (and with which mode flags) is
//! the caller's decision, documented on the fields of [`crate::Instruction`].

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::{Error, Result};
use crate::pattern::{Pattern, PatternError};
use crate::quote::go_quote;

/// A read-only environment the lexer looks variables up in.
///
/// Implemented for maps, slices of `(key, value)` pairs (the last pair with a key wins, like
/// BuildKit's `EnvsFromSlice`), [`NoEnv`] and [`FnEnv`] (a closure).
pub trait Env {
    /// The value of `name`, or `None` when it is unset (set-but-empty is `Some("")`).
    fn get(&self, name: &str) -> Option<Cow<'_, str>>;
}

/// An environment with no variables.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEnv;

impl Env for NoEnv {
    fn get(&self, _name: &str) -> Option<Cow<'_, str>> {
        None
    }
}

/// Adapts a closure `Fn(&str) -> Option<String>` into an [`Env`].
pub struct FnEnv<F>(pub F);

impl<F: Fn(&str) -> Option<String>> Env for FnEnv<F> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        (self.0)(name).map(Cow::Owned)
    }
}

impl<E: Env + ?Sized> Env for &E {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        (**self).get(name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Env for [(K, V)] {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        self.iter()
            .rev()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| Cow::Borrowed(v.as_ref()))
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Env for Vec<(K, V)> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        Env::get(self.as_slice(), name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> Env for [(K, V); N] {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        Env::get(self.as_slice(), name)
    }
}

impl<V: AsRef<str>, S: std::hash::BuildHasher> Env for HashMap<String, V, S> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        HashMap::get(self, name).map(|v| Cow::Borrowed(v.as_ref()))
    }
}

impl<V: AsRef<str>> Env for BTreeMap<String, V> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        BTreeMap::get(self, name).map(|v| Cow::Borrowed(v.as_ref()))
    }
}

/// The full result of one expansion: the single word, the split words, and which variable
/// names were looked up and found (`matched`) or not (`unmatched`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word (single-word mode).
    pub word: String,
    /// The expanded words (word-splitting mode: split on unquoted whitespace).
    pub words: Vec<String>,
    /// Variables that were referenced and set.
    pub matched: BTreeSet<String>,
    /// Variables that were referenced but unset.
    pub unmatched: BTreeSet<String>,
}

/// BuildKit's shell lexer (`shell.Lex`). Cheap to construct and to copy.
///
/// The four mode flags are the ones BuildKit's frontend uses:
/// - default (all `false`): instruction words (`ENV`, `COPY`, `WORKDIR`, ...);
/// - `raw_quotes + skip_unset_env`: how RUN commands are displayed/expanded for progress;
/// - `skip_process_quotes`: expanding heredoc bodies;
/// - `raw_quotes + raw_escapes + skip_unset_env`: finding heredoc markers in a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Do not treat `'` and `"` specially.
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written (`$X`, `${X:-y}`).
    pub skip_unset_env: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

impl Lexer {
    /// A lexer in default mode with the given escape character (`\` or `` ` ``).
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Expands `word` as one word (BuildKit `ProcessWord`): quotes removed, variables
    /// substituted, whitespace kept.
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<String> {
        Ok(self.process(word, env, true)?.word)
    }

    /// Expands `word` and splits the result on unquoted whitespace (BuildKit `ProcessWords`).
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>> {
        Ok(self.process(word, env, false)?.words)
    }

    /// Like [`Lexer::process_word`], also reporting the variable names that were referenced
    /// and found or not found (BuildKit `ProcessWordWithMatches`).
    pub fn process_word_with_matches(&self, word: &str, env: &dyn Env) -> Result<Expansion> {
        self.process(word, env, true)
    }

    fn process(&self, word: &str, env: &dyn Env, capture: bool) -> Result<Expansion> {
        let mut chars: Vec<char> = word.chars().collect();
        // Go's text/scanner skips a byte-order mark at the very start.
        if chars.first() == Some(&'\u{feff}') {
            chars.remove(0);
        }
        let mut sw = ShellWord {
            lex: self,
            chars,
            pos: 0,
            env,
            raw_escapes: self.raw_escapes,
            capture,
            words_buf: String::with_capacity(word.len()),
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        match sw.process_stop_on(None, self.raw_escapes) {
            Ok((word, words)) => Ok(Expansion {
                word,
                words,
                matched: sw.matched,
                unmatched: sw.unmatched,
            }),
            Err(msg) => Err(Error::expand(format!(
                "failed to process {}: {msg}",
                go_quote(word)
            ))),
        }
    }
}

struct ShellWord<'a> {
    lex: &'a Lexer,
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn Env,
    raw_escapes: bool,
    capture: bool,
    /// Shared by every nested `process_stop_on`, as upstream does (its resets are observable
    /// in word-splitting mode).
    words_buf: String,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

/// Go's `string(rune(-1))` for the scanner's EOF.
const EOF_TEXT: char = '\u{fffd}';

struct Words {
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, buf: &mut String, ch: char) {
        if ch.is_whitespace() && self.in_word {
            if !buf.is_empty() {
                self.words.push(buf.clone());
                buf.clear();
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(buf, ch);
        }
    }
    fn add_raw_char(&mut self, buf: &mut String, ch: char) {
        buf.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, buf: &mut String, s: &str) {
        for ch in s.chars() {
            self.add_char(buf, ch);
        }
    }
    fn add_raw_string(&mut self, buf: &mut String, s: &str) {
        buf.push_str(s);
        self.in_word = true;
    }
    fn get_words(mut self, buf: &mut String) -> Vec<String> {
        if !buf.is_empty() {
            self.words.push(std::mem::take(buf));
        }
        self.words
    }
}

type LexResult<T> = std::result::Result<T, String>;

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> LexResult<(String, Vec<String>)> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn process_stop_on_inner(&mut self, stop: Option<char>) -> LexResult<(String, Vec<String>)> {
        let mut result = String::with_capacity(self.chars.len() - self.pos);
        self.words_buf.clear();
        let mut words = Words {
            words: Vec::new(),
            in_word: false,
        };
        let escape = self.lex.escape;
        let quotes = !self.lex.skip_process_quotes;
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.pos += 1;
                let mut buf = std::mem::take(&mut self.words_buf);
                let w = words.get_words(&mut buf);
                self.words_buf = buf;
                return Ok((result, w));
            }
            if ch == '$' || ch == '<' || (quotes && (ch == '\'' || ch == '"')) {
                let tmp = match ch {
                    '$' => self.process_dollar()?,
                    '<' => self.process_possible_heredoc(),
                    '\'' => self.process_single_quote()?,
                    _ => self.process_double_quote()?,
                };
                result.push_str(&tmp);
                let mut buf = std::mem::take(&mut self.words_buf);
                if ch == '$' {
                    words.add_string(&mut buf, &tmp);
                } else {
                    words.add_raw_string(&mut buf, &tmp);
                }
                self.words_buf = buf;
            } else {
                let mut ch = ch;
                self.pos += 1;
                if ch == escape {
                    if self.raw_escapes {
                        words.add_raw_char(&mut self.words_buf, ch);
                        result.push(ch);
                    }
                    match self.next() {
                        None => break,
                        Some(c) => {
                            ch = c;
                            words.add_raw_char(&mut self.words_buf, ch);
                        }
                    }
                } else {
                    words.add_char(&mut self.words_buf, ch);
                }
                result.push(ch);
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        let mut buf = std::mem::take(&mut self.words_buf);
        let w = words.get_words(&mut buf);
        self.words_buf = buf;
        Ok((result, w))
    }

    /// `<<` keeps the blanks after it in its word, so `<<  EOF` stays one word.
    fn process_possible_heredoc(&mut self) -> String {
        self.pos += 1;
        if self.peek() != Some('<') {
            return "<".to_owned();
        }
        self.pos += 1;
        let mut out = String::from("<<");
        while let Some(c @ ('\t' | '\r' | ' ')) = self.peek() {
            out.push(c);
            self.pos += 1;
        }
        out
    }

    fn process_single_quote(&mut self) -> LexResult<String> {
        let mut result = String::new();
        let q = self.next();
        if self.lex.raw_quotes {
            result.extend(q);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_owned(),
                    );
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> LexResult<String> {
        let mut result = String::new();
        let q = self.next();
        if self.lex.raw_quotes {
            result.extend(q);
        }
        let escape = self.lex.escape;
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_owned(),
                    );
                }
                Some('"') => {
                    self.pos += 1;
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == escape => {
                                self.pos += 1;
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn get_env(&mut self, name: &str) -> (String, bool) {
        match self.env.get(name) {
            Some(v) => {
                if self.capture {
                    self.matched.insert(name.to_owned());
                }
                (v.into_owned(), true)
            }
            None => {
                if self.capture {
                    self.unmatched.insert(name.to_owned());
                }
                (String::new(), false)
            }
        }
    }

    fn process_dollar(&mut self) -> LexResult<String> {
        self.pos += 1; // '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            let (value, found) = self.get_env(&name);
            if !found && self.lex.skip_unset_env {
                return Ok(format!("${name}"));
            }
            return Ok(value);
        }
        self.pos += 1; // '{'
        match self.peek() {
            None => return Err("syntax error: missing '}'".to_owned()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".to_owned()),
            Some(_) => {}
        }
        let name = self.process_name();
        let first = self.next();
        let mut ch = first.unwrap_or(EOF_TEXT);
        let mut chs = String::from(ch);
        let mut null_is_unset = false;
        match first {
            Some('}') => {
                let (value, set) = self.get_env(&name);
                if !set && self.lex.skip_unset_env {
                    return Ok(format!("${{{name}}}"));
                }
                Ok(value)
            }
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                if ch == ':' {
                    null_is_unset = true;
                    ch = self.next().unwrap_or(EOF_TEXT);
                    chs.push(ch);
                }
                let raw_escapes = ch == '#' || ch == '%';
                if null_is_unset && raw_escapes {
                    return Err(format!("unsupported modifier ({chs}) in substitution"));
                }
                let word = match self.process_stop_on(Some('}'), raw_escapes) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '}'".to_owned());
                        }
                        return Err(e);
                    }
                };
                let (value, set) = self.get_env(&name);
                if self.lex.skip_unset_env && !set {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                match ch {
                    '-' => {
                        if !set || (null_is_unset && value.is_empty()) {
                            Ok(word)
                        } else {
                            Ok(value)
                        }
                    }
                    '+' => {
                        if !set || (null_is_unset && value.is_empty()) {
                            Ok(String::new())
                        } else {
                            Ok(word)
                        }
                    }
                    '?' => {
                        if !set {
                            let m = if word.is_empty() {
                                "is not allowed to be unset"
                            } else {
                                &word
                            };
                            return Err(format!("{name}: {m}"));
                        }
                        if null_is_unset && value.is_empty() {
                            let m = if word.is_empty() {
                                "is not allowed to be empty"
                            } else {
                                &word
                            };
                            return Err(format!("{name}: {m}"));
                        }
                        Ok(value)
                    }
                    '%' | '#' => {
                        let (greedy, pat) = match word.strip_prefix(ch) {
                            Some(rest) => (true, rest.to_owned()),
                            None => (false, word.clone()),
                        };
                        if ch == '%' {
                            trim_suffix(&pat, &value, greedy)
                        } else {
                            trim_prefix(&pat, &value, greedy)
                        }
                    }
                    _ => Err(format!("unsupported modifier ({chs}) in substitution")),
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.pos += 1;
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '/' in ${}".to_owned());
                        }
                        return Err(e);
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '}'".to_owned());
                        }
                        return Err(e);
                    }
                };
                let (value, set) = self.get_env(&name);
                if self.lex.skip_unset_env && !set {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                let re = Pattern::compile(&pattern, true, false)
                    .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
                if replace_all {
                    Ok(re.replace_all(&value, &replacement))
                } else if let Some((s, e)) = re.find(&value) {
                    Ok(format!("{}{}{}", &value[..s], replacement, &value[e..]))
                } else {
                    Ok(value)
                }
            }
            _ => Err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_go_digit(ch) {
                while let Some(d) = self.peek() {
                    if !is_go_digit(d) {
                        break;
                    }
                    self.pos += 1;
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return ch.to_string();
            }
            if !ch.is_alphabetic() && !ch.is_numeric() && ch != '_' {
                break;
            }
            self.pos += 1;
            name.push(ch);
        }
        name
    }
}

/// Go's `unicode.IsDigit` (decimal digits), approximated for non-ASCII by `char::is_numeric`.
fn is_go_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

fn pattern_error(pattern: &str, e: PatternError) -> String {
    format!("invalid pattern ({pattern}) in substitution: {e}")
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> LexResult<String> {
    let re = Pattern::compile(pattern, greedy, true).map_err(|e| pattern_error(pattern, e))?;
    match re.find(value) {
        Some((_, end)) => Ok(value[end..].to_owned()),
        None => Ok(value.to_owned()),
    }
}

/// Reverses a pattern but keeps `\x` escape pairs in order (`a\*c` -> `c\*a`).
fn reverse_pattern(pattern: &str) -> String {
    let p: Vec<char> = pattern.chars().collect();
    let mut out = p.clone();
    let Some(last) = p.len().checked_sub(1) else {
        return String::new();
    };
    let mut i = 0;
    while i <= last {
        let tok = p[i];
        let out_idx = last - i;
        if tok == '\\' && i != last {
            out[out_idx - 1] = tok;
            out[out_idx] = p[i + 1];
            i += 2;
        } else {
            out[out_idx] = tok;
            i += 1;
        }
    }
    out.into_iter().collect()
}

fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> LexResult<String> {
    let rp = reverse_pattern(pattern);
    let rv: String = value.chars().rev().collect();
    let re = Pattern::compile(&rp, greedy, true).map_err(|e| pattern_error(&rp, e))?;
    let trimmed = match re.find(&rv) {
        Some((_, end)) => &rv[end..],
        None => &rv[..],
    };
    Ok(trimmed.chars().rev().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(&'static str, &'static str)> {
        vec![("PWD", "/home"), ("NULL", ""), ("X", "a b  c")]
    }

    #[test]
    fn simple_forms() {
        let l = Lexer::new('\\');
        let e = env();
        let w = |s: &str| l.process_word(s, &e).unwrap();
        assert_eq!(w("$PWD/x"), "/home/x");
        assert_eq!(w("${PWD}x"), "/homex");
        assert_eq!(w("${NOPE:-d}"), "d");
        assert_eq!(w("${NULL:-d}"), "d");
        assert_eq!(w("${NULL-d}"), "");
        assert_eq!(w("${PWD:+set}"), "set");
        assert_eq!(w("${NOPE+set}"), "");
        assert_eq!(w("'$PWD'"), "$PWD");
        assert_eq!(w("\"$PWD\""), "/home");
        assert_eq!(w("\\$PWD"), "$PWD");
        assert_eq!(w("${PWD#/h}"), "ome");
        assert_eq!(w("${PWD##*o}"), "me");
        assert_eq!(w("${PWD%m*}"), "/ho");
        assert_eq!(w("${PWD/o/0}"), "/h0me");
        assert_eq!(w("${X// /_}"), "a_b__c");
    }

    #[test]
    fn words_and_errors() {
        let l = Lexer::new('\\');
        let e = env();
        assert_eq!(
            l.process_words("$X \"d e\"", &e).unwrap(),
            ["a", "b", "c", "d e"]
        );
        let err = l.process_word("${NOPE:?}", &e).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to process \"${NOPE:?}\": NOPE: is not allowed to be unset"
        );
        let err = l.process_word("${x", &e).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to process \"${x\": unsupported modifier (\u{fffd}) in substitution"
        );
    }

    #[test]
    fn matches_and_skip_unset() {
        let mut l = Lexer::new('\\');
        let e = env();
        let r = l.process_word_with_matches("$PWD $NOPE", &e).unwrap();
        assert!(r.matched.contains("PWD") && r.unmatched.contains("NOPE"));
        l.skip_unset_env = true;
        assert_eq!(
            l.process_word("$NOPE ${NOPE:-x}", &e).unwrap(),
            "$NOPE ${NOPE:-x}"
        );
    }
}
