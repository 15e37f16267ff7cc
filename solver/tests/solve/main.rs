//! Builds through the solver's public API, end to end: `ADD` of a URL and `RUN` steps in real
//! containers. One test binary (each file in `tests/` is one more binary to link); the
//! executor's init starts from its ELF constructor, so the libtest harness runs these too.

mod add_url;
mod run;
