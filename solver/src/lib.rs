//! Turns a parsed Dockerfile into a DAG of content-addressed steps, and runs it with a cache.

pub mod cache;
mod context;
mod copy;
pub mod dockerignore;
mod error;
mod fsutil;
pub mod key;
pub mod progress;
mod scheduler;
mod users;

pub use error::{Error, Result};
pub use progress::{LogStream, NoProgress, Progress, ProgressEvent, StepId};
mod plan;
mod request;
pub use request::{
    BuildOutcome, BuildRequest, DockerfileSource, NetworkMode, OutputSpec, SecretSource,
    SecretSpec, SolverConfig, SshSpec,
};
mod build;
pub use build::Solver;
