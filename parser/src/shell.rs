//! Over 600 lines on purpose: the lexer is one explicit state machine over `char`s (frames
//! instead of recursion, issue 12) whose states read best side by side; nom 8 has no input
//! type for `&[char]`, so it stays a hand-written machine.
//!
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
            out: String::with_capacity(chars.len()),
            chars,
            pos: 0,
            env,
            raw_escapes: self.raw_escapes,
            capture,
            words_buf: String::with_capacity(word.len()),
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        match sw.run() {
            Ok(words) => Ok(Expansion {
                word: sw.out,
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

/// The lexer's state for one input.
///
/// BuildKit's lexer is recursive (`processStopOn` -> `processDollar` -> `processStopOn`) and
/// builds a fresh string at every level. Here the suspended calls are [`Frame`]s on an
/// explicit stack, so nesting depth costs heap instead of call stack (BuildKit recurses on
/// Go's growable stacks and so accepts any depth; recursion here would abort the process on
/// a fixed-size thread stack after a few thousand `${a:-`, issue 12). And every level writes
/// into the one output buffer `out`, so a nested result is kept in place (or cut off)
/// instead of being copied once per level, which keeps deep nesting linear.
struct ShellWord<'a> {
    lex: &'a Lexer,
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn Env,
    raw_escapes: bool,
    capture: bool,
    /// The output of every frame: a frame's text is `out[start..]`.
    out: String,
    /// The partial split word. Upstream shares it between all nesting levels and every
    /// nested word empties it (observable in word-splitting mode); only the top-level word's
    /// split words are used.
    words_buf: String,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

/// Go's `string(rune(-1))` for the scanner's EOF.
const EOF_TEXT: char = '\u{fffd}';

#[derive(Default)]
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

/// One suspended call of the recursive lexer.
enum Frame {
    /// `processStopOn`: a word up to its stop character (or the end).
    Word(WordFrame),
    /// `processDoubleQuote`: a `"..."` whose text starts at `out[start]`.
    Quote { start: usize },
}

struct WordFrame {
    stop: Option<char>,
    /// The caller's `raw_escapes`, restored when the word ends.
    saved_raw_escapes: bool,
    /// Where the word's text starts in `out`.
    start: usize,
    /// Split words, for the top-level word only. `None` marks a nested word: the operand of
    /// the innermost pending `${...}` (whose split words upstream discards).
    words: Option<Words>,
}

/// A `${name...}` whose nested word is being read (`processDollar` mid-call).
struct Subst {
    name: String,
    /// The modifier character (`-`, `+`, `?`, `#`, `%`, `/`), after any `:`.
    ch: char,
    /// The modifier as written (`:-`, `#`, ...), for messages and `skip_unset_env`.
    chs: String,
    null_is_unset: bool,
    /// `skip_unset_env` and the variable is unset: the expression is output as written
    /// (its prefix is already in `out`).
    keep: bool,
    /// Where the expression's output starts in `out`.
    start: usize,
    part: SubstPart,
}

enum SubstPart {
    /// The word after a modifier, up to `}`.
    Operand,
    /// `${name/pattern/...`: the pattern, up to `/`.
    Pattern { replace_all: bool },
    /// `${name/pattern/replacement}`: the replacement, up to `}` (the pattern is in `out`
    /// when the expression is kept as written).
    Replacement { replace_all: bool, pattern: String },
}

impl SubstPart {
    /// Upstream's message when the nested word fails at the end of input.
    fn missing(&self) -> &'static str {
        match self {
            SubstPart::Pattern { .. } => "syntax error: missing '/' in ${}",
            SubstPart::Operand | SubstPart::Replacement { .. } => "syntax error: missing '}'",
        }
    }
}

/// Why a frame stopped.
enum Step {
    /// A `$` is next: expand it, then resume the frame.
    Dollar,
    /// A `"` is next: read the quoted string, then resume the frame.
    Quote,
    /// The word ended (its text is `out[start..]`); the split words of the top-level word.
    WordDone {
        start: usize,
        words: Option<Vec<String>>,
    },
    /// The quoted string ended (its text is `out[start..]`).
    QuoteDone { start: usize },
}

/// How a `$` expression goes on: finished (its output is `out[start..]`), or a nested word
/// to read first (stop character, its `raw_escapes`).
enum Dollar {
    Done { start: usize },
    Nested(Subst, char, bool),
}

impl<'a> ShellWord<'a> {
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

    /// BuildKit's `processStopOn(EOF)` over the whole input: the output is left in `out`,
    /// the split words are returned.
    fn run(&mut self) -> LexResult<Vec<String>> {
        // The top-level word lives outside `stack`, which allocates only when something
        // nests (a quote or a `${...}` with a word).
        let mut top = self.begin_word(None, self.raw_escapes, true);
        let mut stack: Vec<Frame> = Vec::new();
        // The pending `${...}`, innermost last: one per nested word on `stack`.
        let mut substs: Vec<Subst> = Vec::new();
        loop {
            let step = match stack.last_mut() {
                Some(Frame::Word(w)) => self.step_word(w),
                Some(Frame::Quote { start }) => self.step_quote(*start),
                None => self.step_word(&mut top),
            };
            let step = match step {
                Ok(step) => step,
                Err(e) => return Err(self.unwind(stack, substs, e)),
            };
            let dollar = match step {
                Step::Dollar => self.begin_dollar(),
                Step::Quote => {
                    let start = self.begin_quote();
                    stack.push(Frame::Quote { start });
                    continue;
                }
                Step::QuoteDone { start } => {
                    stack.pop();
                    if let Some(w) = innermost_word(&mut stack, &mut top) {
                        self.added(w, start, false);
                    }
                    continue;
                }
                Step::WordDone { start, words } => {
                    if let Some(words) = words {
                        return Ok(words);
                    }
                    stack.pop();
                    match substs.pop() {
                        Some(subst) => self.finish_subst(subst, start),
                        None => Ok(Dollar::Done { start }),
                    }
                }
            };
            match dollar {
                Ok(Dollar::Done { start }) => {
                    if let Some(w) = innermost_word(&mut stack, &mut top) {
                        self.added(w, start, true);
                    }
                }
                Ok(Dollar::Nested(subst, stop, raw_escapes)) => {
                    substs.push(subst);
                    let w = self.begin_word(Some(stop), raw_escapes, false);
                    stack.push(Frame::Word(w));
                }
                Err(e) => return Err(self.unwind(stack, substs, e)),
            }
        }
    }

    /// Propagates an error through the suspended calls as the recursive lexer does: each
    /// `${...}` whose nested word failed at the end of input reports a missing delimiter.
    fn unwind(&mut self, stack: Vec<Frame>, mut substs: Vec<Subst>, mut msg: String) -> String {
        for frame in stack.into_iter().rev() {
            if let Frame::Word(w) = frame {
                self.raw_escapes = w.saved_raw_escapes;
                if w.words.is_none()
                    && let Some(owner) = substs.pop()
                    && self.peek().is_none()
                {
                    owner.part.missing().clone_into(&mut msg);
                }
            }
        }
        msg
    }

    /// Entering `processStopOn`.
    fn begin_word(&mut self, stop: Option<char>, raw_escapes: bool, top: bool) -> WordFrame {
        let saved_raw_escapes = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        self.words_buf.clear();
        WordFrame {
            stop,
            saved_raw_escapes,
            start: self.out.len(),
            words: top.then(Words::default),
        }
    }

    fn end_word(&mut self, w: &mut WordFrame) -> Step {
        self.raw_escapes = w.saved_raw_escapes;
        let words = match w.words.take() {
            Some(words) => Some(words.get_words(&mut self.words_buf)),
            None => {
                self.words_buf.clear();
                None
            }
        };
        Step::WordDone {
            start: w.start,
            words,
        }
    }

    /// `out[start..]` was just added to word `w` by a `$` expression (split on whitespace)
    /// or a quoted string (one piece).
    fn added(&mut self, w: &mut WordFrame, start: usize, expansion: bool) {
        let Some(words) = &mut w.words else {
            return;
        };
        let text = &self.out[start..];
        let mut buf = std::mem::take(&mut self.words_buf);
        if expansion {
            words.add_string(&mut buf, text);
        } else {
            words.add_raw_string(&mut buf, text);
        }
        self.words_buf = buf;
    }

    /// The loop of `processStopOn`, up to the next `$` or `"` or the end of the word.
    fn step_word(&mut self, w: &mut WordFrame) -> LexResult<Step> {
        let escape = self.lex.escape;
        let quotes = !self.lex.skip_process_quotes;
        while let Some(ch) = self.peek() {
            if w.stop == Some(ch) {
                self.pos += 1;
                return Ok(self.end_word(w));
            }
            match ch {
                '$' => return Ok(Step::Dollar),
                '"' if quotes => return Ok(Step::Quote),
                '\'' if quotes => {
                    let start = self.out.len();
                    self.process_single_quote()?;
                    self.added(w, start, false);
                }
                '<' => {
                    let start = self.out.len();
                    self.process_possible_heredoc();
                    self.added(w, start, false);
                }
                mut ch => {
                    self.pos += 1;
                    if ch == escape {
                        if self.raw_escapes {
                            if let Some(words) = &mut w.words {
                                words.add_raw_char(&mut self.words_buf, ch);
                            }
                            self.out.push(ch);
                        }
                        match self.next() {
                            None => break,
                            Some(c) => {
                                ch = c;
                                if let Some(words) = &mut w.words {
                                    words.add_raw_char(&mut self.words_buf, ch);
                                }
                            }
                        }
                    } else if let Some(words) = &mut w.words {
                        words.add_char(&mut self.words_buf, ch);
                    }
                    self.out.push(ch);
                }
            }
        }
        if let Some(stop) = w.stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok(self.end_word(w))
    }

    /// `<<` keeps the blanks after it in its word, so `<<  EOF` stays one word.
    fn process_possible_heredoc(&mut self) {
        self.pos += 1;
        self.out.push('<');
        if self.peek() != Some('<') {
            return;
        }
        self.pos += 1;
        self.out.push('<');
        while let Some(c @ ('\t' | '\r' | ' ')) = self.peek() {
            self.out.push(c);
            self.pos += 1;
        }
    }

    fn process_single_quote(&mut self) -> LexResult<()> {
        let q = self.next();
        if self.lex.raw_quotes {
            self.out.extend(q);
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
                        self.out.push('\'');
                    }
                    return Ok(());
                }
                Some(c) => self.out.push(c),
            }
        }
    }

    /// Entering `processDoubleQuote`: consumes the opening `"`; returns where the quoted
    /// text starts.
    fn begin_quote(&mut self) -> usize {
        let start = self.out.len();
        let q = self.next();
        if self.lex.raw_quotes {
            self.out.extend(q);
        }
        start
    }

    /// The loop of `processDoubleQuote`, up to the next `$` or the closing `"`.
    fn step_quote(&mut self, start: usize) -> LexResult<Step> {
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
                        self.out.push('"');
                    }
                    return Ok(Step::QuoteDone { start });
                }
                Some('$') => return Ok(Step::Dollar),
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == escape {
                        if self.raw_escapes {
                            self.out.push(ch);
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
                    self.out.push(ch);
                }
            }
        }
    }

    /// Looks `name` up, recording it as matched or unmatched.
    fn get_env(&mut self, name: &str) -> Option<Cow<'a, str>> {
        let env: &'a dyn Env = self.env;
        let value = env.get(name);
        if self.capture {
            if value.is_some() {
                self.matched.insert(name.to_owned());
            } else {
                self.unmatched.insert(name.to_owned());
            }
        }
        value
    }

    /// `processDollar` up to its first nested word, if it has one.
    fn begin_dollar(&mut self) -> LexResult<Dollar> {
        let start = self.out.len();
        self.pos += 1; // '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                self.out.push('$');
            } else if let Some(value) = self.get_env(&name) {
                self.out.push_str(&value);
            } else if self.lex.skip_unset_env {
                self.out.push('$');
                self.out.push_str(&name);
            }
            return Ok(Dollar::Done { start });
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
        let (stop, raw_escapes, part) = match first {
            Some('}') => {
                if let Some(value) = self.get_env(&name) {
                    self.out.push_str(&value);
                } else if self.lex.skip_unset_env {
                    self.out.push_str("${");
                    self.out.push_str(&name);
                    self.out.push('}');
                }
                return Ok(Dollar::Done { start });
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
                ('}', raw_escapes, SubstPart::Operand)
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.pos += 1;
                }
                ('/', true, SubstPart::Pattern { replace_all })
            }
            _ => return Err(format!("unsupported modifier ({chs}) in substitution")),
        };
        // Decided now (upstream decides after reading the nested word; the answer is the
        // same) so that the expression's prefix goes out before its nested word.
        let keep = self.lex.skip_unset_env && self.env.get(&name).is_none();
        if keep {
            self.out.push_str("${");
            self.out.push_str(&name);
            self.out.push_str(&chs);
        }
        let subst = Subst {
            name,
            ch,
            chs,
            null_is_unset,
            keep,
            start,
            part,
        };
        Ok(Dollar::Nested(subst, stop, raw_escapes))
    }

    /// The rest of `processDollar` once a nested word of `subst` (`out[word..]`) is read.
    fn finish_subst(&mut self, subst: Subst, word: usize) -> LexResult<Dollar> {
        let Subst {
            name,
            ch,
            chs,
            null_is_unset,
            keep,
            start,
            part,
        } = subst;
        match part {
            SubstPart::Operand => {}
            SubstPart::Pattern { replace_all } => {
                let pattern = if keep {
                    self.out.push('/');
                    String::new()
                } else {
                    self.out.split_off(word)
                };
                let subst = Subst {
                    name,
                    ch,
                    chs,
                    null_is_unset,
                    keep,
                    start,
                    part: SubstPart::Replacement {
                        replace_all,
                        pattern,
                    },
                };
                return Ok(Dollar::Nested(subst, '}', true));
            }
            SubstPart::Replacement {
                replace_all,
                pattern,
            } => {
                let value = self.get_env(&name);
                if keep {
                    self.out.push('}');
                } else {
                    let replacement = self.out.split_off(word);
                    let value = value.unwrap_or_default();
                    let re = Pattern::compile(&pattern, true, false)
                        .map_err(|e| pattern_error(&pattern, e))?;
                    if replace_all {
                        self.out.push_str(&re.replace_all(&value, &replacement));
                    } else if let Some((s, e)) = re.find(&value) {
                        self.out.push_str(&value[..s]);
                        self.out.push_str(&replacement);
                        self.out.push_str(&value[e..]);
                    } else {
                        self.out.push_str(&value);
                    }
                }
                return Ok(Dollar::Done { start });
            }
        }
        let value = self.get_env(&name);
        if keep {
            self.out.push('}');
            return Ok(Dollar::Done { start });
        }
        let set = value.is_some();
        let value = value.unwrap_or_default();
        let null = null_is_unset && value.is_empty();
        match ch {
            // The word stays in place as the result, or is replaced by the value.
            '-' => {
                if set && !null {
                    self.out.truncate(word);
                    self.out.push_str(&value);
                }
            }
            '+' => {
                if !set || null {
                    self.out.truncate(word);
                }
            }
            '?' => {
                if !set || null {
                    let m = match (&self.out[word..], set) {
                        ("", false) => "is not allowed to be unset",
                        ("", true) => "is not allowed to be empty",
                        (m, _) => m,
                    };
                    return Err(format!("{name}: {m}"));
                }
                self.out.truncate(word);
                self.out.push_str(&value);
            }
            '%' | '#' => {
                let word = self.out.split_off(word);
                let (greedy, pat) = match word.strip_prefix(ch) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                let trimmed = if ch == '%' {
                    trim_suffix(pat, &value, greedy)?
                } else {
                    trim_prefix(pat, &value, greedy)?
                };
                self.out.push_str(&trimmed);
            }
            _ => return Err(format!("unsupported modifier ({chs}) in substitution")),
        }
        Ok(Dollar::Done { start })
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

/// The word the innermost frame is reading, `None` inside a quoted string.
fn innermost_word<'s>(stack: &'s mut [Frame], top: &'s mut WordFrame) -> Option<&'s mut WordFrame> {
    match stack.last_mut() {
        Some(Frame::Word(w)) => Some(w),
        Some(Frame::Quote { .. }) => None,
        None => Some(top),
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
