//! The platforms the checks meet (FROM `--platform` values, base image platforms): kiln-platform's,
//! which parses, normalizes and formats as containerd's `platforms` package does.

pub use kiln_platform::Platform;

/// containerd's `platforms.Parse` then `Normalize`, with containerd's error messages.
pub(crate) fn parse(spec: &str) -> Result<Platform, kiln_platform::Error> {
    Platform::parse(spec)
}
