//! kiln: a daemonless, embeddable Dockerfile build engine.
//!
//! This crate is the small facade over the member crates (`kiln-parser`, `kiln-snapshotter`,
//! `kiln-executor`, `kiln-image`, `kiln-solver`) and holds the `kiln` command. An embedder needs
//! three things: a [`Builder`] (where kiln keeps its state, how many steps run at once, registry
//! credentials), [`BuildOptions`] (what to build), and a [`Progress`] sink that receives the same
//! [`ProgressEvent`]s the `kiln` command renders.
//!
//! ```no_run
//! use kiln::{BuildOptions, Builder, NoProgress};
//!
//! let builder = Builder::new("/var/lib/kiln").jobs(4);
//! let mut options = BuildOptions::new("examples/hello");
//! options.tags.push("hello:latest".into());
//! let image = builder.build(&options, &NoProgress)?;
//! println!("built {}", image.config_digest);
//! # Ok::<(), kiln::Error>(())
//! ```

mod builder;
mod options;

pub use builder::{BuildResult, Builder, Credentials, Error, read_dockerfile_text};
pub use kiln_executor::init_main_if_requested;
pub use kiln_parser as parser;
pub use kiln_solver::progress::{LogStream, NoProgress, Progress, ProgressEvent, StepId};
pub use kiln_solver::{CancelHandle, PruneOptions, PruneReport};
pub use options::{
    BuildOptions, CacheSpec, Compression, Destination, Dockerfile, NetworkMode, OutputSpec,
    SecretSource, SecretSpec, SshSpec,
};

/// The platform kiln builds for; `--platform` accepts only this (and its aliases).
pub const SUPPORTED_PLATFORM: &str = "linux/amd64";

/// Checks a `--platform` value: kiln builds `linux/amd64` only, for now.
pub fn check_platform(platform: &str) -> Result<(), Error> {
    let normalized = platform.trim().to_ascii_lowercase();
    match normalized.as_str() {
        "linux/amd64" | "linux/x86_64" | "linux/amd64/v1" | "amd64" | "x86_64" | "local" => Ok(()),
        _ => Err(Error::UnsupportedPlatform(platform.to_owned())),
    }
}

/// The default state directory: `/var/lib/kiln` as root, else `$XDG_DATA_HOME/kiln`
/// (or `~/.local/share/kiln`).
pub fn default_state_dir() -> std::path::PathBuf {
    // Not the euid: in a rootless build's user namespace (kiln-userns) every user is uid 0.
    if kiln_userns::started_as_root() {
        return "/var/lib/kiln".into();
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return std::path::PathBuf::from(d).join("kiln");
    }
    match std::env::var_os("HOME") {
        Some(h) => std::path::PathBuf::from(h).join(".local/share/kiln"),
        None => "/var/lib/kiln".into(),
    }
}
