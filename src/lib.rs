//! kiln: a daemonless, embeddable Dockerfile build engine.
//!
//! This crate is the small facade over the member crates (`kiln-parser`, `kiln-snapshotter`,
//! `kiln-executor`, `kiln-image`, `kiln-solver`) and holds the `kiln` command. An embedder needs
//! three things: a [`Builder`] (where kiln keeps its state, how many steps run at once, registry
//! credentials), a [`BuildRequest`] (what to build: the solver's own request model, re-exported
//! with its specs, which parse buildx's `--output`/`--secret`/`--ssh`/`--cache-*` syntax), and a
//! [`Progress`] sink that receives the same [`ProgressEvent`]s the `kiln` command renders.
//!
//! The library reads no environment variable and writes nothing to stdout or stderr: the `kiln`
//! command maps `SOURCE_DATE_EPOCH`, `SSH_AUTH_SOCK` and `DOCKER_CONFIG` onto options, stages
//! `dest=-` outputs, and renders progress. Diagnostics go through `tracing` spans (per build,
//! step and export) for the embedder's subscriber.
//!
//! ```no_run
//! use kiln::{BuildRequest, Builder, NoProgress};
//!
//! let builder = Builder::new("/var/lib/kiln").jobs(4);
//! let mut request = BuildRequest::new("examples/hello");
//! request.tags.push("hello:latest".into());
//! let image = builder.build(&request, &NoProgress)?;
//! println!("built {}", image.config_digest);
//! # Ok::<(), kiln::Error>(())
//! ```

mod builder;

pub use builder::{BuildResult, Builder, read_dockerfile_text};
pub use kiln_executor::init_main_if_requested;
/// An OS/architecture/variant an image runs on (`linux/arm64`), as containerd names them.
pub use kiln_image::Platform;
pub use kiln_parser as parser;
pub use kiln_solver::progress::{LogStream, NoProgress, Progress, ProgressEvent, StepId};
pub use kiln_solver::{
    BuildRequest, CacheSpec, CancelHandle, Compression, Credentials, Destination, Dockerfile,
    DockerfileText, Error, NetworkMode, OutputSpec, PlatformImage, PruneOptions, PruneReport,
    SecretSource, SecretSpec, SshSpec,
};
