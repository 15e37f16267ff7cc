//! The parser through its public API, in one test binary (for link time): hostile input
//! (`bad_input`), BuildKit's conformance data (`conformance`), the typed instructions
//! (`instructions`), property tests that nothing panics (`no_panic`) and error spans (`spans`).

mod bad_input;
mod conformance;
mod instructions;
mod no_panic;
mod spans;
