//! The build cache through the `kiln` binary (issue 14), one test binary for link time: what
//! BuildKit's image looks like for steps that change nothing (`buildkit_forms`), why a step
//! missed (`explain`), `--cache-to`/`--cache-from` (`export`) with cache-mount content
//! (`mounts`), work shared by two processes on one state dir (`shared`), and images that depend
//! on their inputs only (`stable`); what a build holds per context file (`memory`).

#[path = "../common/mod.rs"]
mod common;

mod buildkit_forms;
mod explain;
mod export;
mod memory;
mod mounts;
mod shared;
mod stable;
