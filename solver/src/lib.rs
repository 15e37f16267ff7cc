//! The kiln solver: turns a Dockerfile into a DAG of content-addressed steps and runs it with a
//! persistent cache, the way BuildKit's dockerfile frontend and solver do, without a daemon.
//!
//! A build goes: parse (kiln-parser) → [plan](Solver::build) the stages the target needs (ARG/ENV
//! scoping, ONBUILD, `--from` edges, config-only instructions folded into the image config) →
//! a petgraph DAG of base-image and filesystem steps → each step's [cache key](key::CacheKey)
//! (its definition, its inputs' keys, and the digest of exactly the files it reads from the
//! context or another stage) → the scheduler runs every step whose inputs are ready, in
//! parallel (bounded by [`SolverConfig::jobs`]), reusing [cached](cache::CacheStore) results →
//! the final image is written to the content store and to the requested outputs.
//!
//! ```no_run
//! use kiln_solver::{BuildRequest, NoProgress, Solver, SolverConfig};
//!
//! # fn main() -> kiln_solver::Result<()> {
//! // RUN steps re-execute this binary as the container init, which starts from the
//! // executor's constructor before `main`: nothing to call first.
//! let solver = Solver::new(SolverConfig::new("/var/lib/kiln"))?;
//! let mut req = BuildRequest::new("./app");
//! req.build_args.insert("VERSION".into(), "1.2".into());
//! req.tags.push("app:latest".into());
//! req.outputs.push("type=oci,dest=app.tar".parse()?);
//! let outcome = solver.build(&req, &NoProgress)?;
//! println!("{} ({} cached steps)", outcome.config_digest, outcome.steps_cached);
//! # Ok(()) }
//! ```
//!
//! Progress arrives as [`ProgressEvent`]s through the [`Progress`] trait: `StepStarted` carries
//! the `Step N/M` numbering and the instruction, `StepCached` marks a cache hit.

pub mod cache;
mod context;
mod copy;
mod deferred;
pub mod dockerignore;
mod error;
mod explain;
mod fsutil;
pub mod key;
mod plan;
pub mod progress;
mod prune;
mod remote_cache;
pub mod request;
pub mod rootfs;
mod scheduler;
mod solve;
mod untar;
mod users;

pub use cache::{PruneOptions, PruneReport};
pub use deferred::open_content_store;
pub use error::{Error, Result};
pub use progress::{LogStream, NoProgress, Progress, ProgressEvent, StepId};
pub use request::{
    BuildOutcome, BuildRequest, CacheSpec, Compression, Credentials, Destination, Dockerfile,
    DockerfileText, NetworkMode, OutputSpec, PlatformImage, SecretSource, SecretSpec, SolverConfig,
    SshSpec,
};
pub use scheduler::CancelHandle;
pub use solve::Solver;
