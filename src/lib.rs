//! kiln: a daemonless, embeddable Dockerfile build engine.
//!
//! This crate is the facade over the member crates (`kiln-parser`, `kiln-snapshotter`,
//! `kiln-executor`, `kiln-image`, `kiln-solver`) and holds the `kiln` command.

pub use kiln_parser as parser;
