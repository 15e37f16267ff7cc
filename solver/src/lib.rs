//! Turns a parsed Dockerfile into a DAG of content-addressed steps, and runs it with a cache.

pub mod progress;

pub use progress::{LogStream, NoProgress, Progress, ProgressEvent, StepId};
