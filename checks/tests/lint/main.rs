//! The checks through the public API, in one test binary (for link time): one test per rule
//! (`rules`), and BuildKit's own lint test cases run through the library and the LintResults
//! JSON (`cases`).

mod cases;
mod rules;
