//! Turns a parsed Dockerfile into a DAG of content-addressed steps, and runs it with a cache.
#![allow(dead_code)] // temporary: the modules are wired into the solver in the next commits

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
