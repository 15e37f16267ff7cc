//! Command-line front end. Each subcommand lives in its own module; this file only wires them
//! and maps outcomes to exit codes (0 success, 1 failure, 2 usage error).

mod build;
mod check;
mod compose;
mod compose_file;
mod debug;
mod images;
mod images_list;
mod load;
mod progress;
mod prune;
mod run;
mod run_io;
mod signals;
mod system;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  kiln build -t hello:latest examples/hello     build an image and tag it
  kiln build --output type=oci,dest=img.tar .   build to an OCI archive
  kiln build --progress=plain .                 line-oriented output, as in CI
  kiln completion bash > /etc/bash_completion.d/kiln

State lives in --root (default /var/lib/kiln as root, else $XDG_DATA_HOME/kiln).";

/// kiln: build Dockerfiles without a daemon.
#[derive(Parser, Debug)]
#[command(name = "kiln", version, about, long_about = None, after_help = EXAMPLES)]
pub(crate) struct Cli {
    /// State directory (default: /var/lib/kiln as root, else $XDG_DATA_HOME/kiln).
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    pub(crate) root: Option<std::path::PathBuf>,

    /// Print diagnostics on stderr: tracing events and every span's close with its timings
    /// (build, step, export). `KILN_LOG` (env-filter syntax, e.g. `kiln_solver=trace`) selects
    /// them instead.
    #[arg(long, global = true)]
    pub(crate) debug: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Build an image from a Dockerfile and a context directory.
    Build(Box<build::BuildArgs>),
    /// Run BuildKit's Dockerfile checks (lint rules) without building.
    Check(check::CheckArgs),
    /// Print a shell completion script.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Tools to inspect how kiln reads a Dockerfile.
    #[command(subcommand)]
    Debug(debug::DebugCommand),
    /// Remove build cache (like `docker builder prune`).
    Prune(prune::PruneArgs),
    /// Run a command in a new container from an image (as `docker run`).
    Run(Box<run::RunArgs>),
    /// Build and run the services of a Compose file.
    Compose(Box<compose::ComposeArgs>),
    /// Disk usage and cleanup (as `docker system`).
    #[command(subcommand)]
    System(system::SystemCommand),
    #[command(flatten)]
    Images(images::ImageCommand),
}

/// Shells `kiln completion` writes scripts for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum CompletionShell {
    /// bash.
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

/// A mistake in how kiln was called, found after clap parsed the flags; exits with status 2.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The state directory when `--root` is not given: `/var/lib/kiln` as root, else
/// `$XDG_DATA_HOME/kiln`, else `~/.local/share/kiln`, and `/var/lib/kiln` when HOME is unset
/// too. The one definition every subcommand uses.
pub(crate) fn default_state_dir() -> std::path::PathBuf {
    state_dir_for(
        // Not the euid: inside a rootless build's user namespace every user is uid 0.
        kiln_userns::started_as_root(),
        std::env::var_os("XDG_DATA_HOME"),
        std::env::var_os("HOME"),
    )
}

fn state_dir_for(
    root: bool,
    xdg_data_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> std::path::PathBuf {
    if root {
        return "/var/lib/kiln".into();
    }
    if let Some(d) = xdg_data_home.filter(|d| !d.is_empty()) {
        return std::path::PathBuf::from(d).join("kiln");
    }
    match home.filter(|h| !h.is_empty()) {
        Some(h) => std::path::PathBuf::from(h).join(".local/share/kiln"),
        None => "/var/lib/kiln".into(),
    }
}

/// Where docker's `config.json` (registry credentials) is: `$DOCKER_CONFIG`, else
/// `~/.docker`, as the docker CLI looks.
pub(crate) fn docker_config_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        return d.into();
    }
    std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
        .join(".docker")
}

fn completion(shell: CompletionShell) -> ExitCode {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "kiln", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// Runs the command line and maps the outcome to kiln's exit codes
/// (0 success, 1 failure, 2 usage error).
pub(crate) fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Err(e) = progress::diag::install(cli.debug) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Build(args) => build::run(cli.root, *args),
        Command::Check(args) => check::run(cli.root, &args),
        Command::Completion { shell } => Ok(completion(shell)),
        Command::Debug(cmd) => debug::run(cmd),
        Command::Prune(args) => prune::run(cli.root, &args),
        Command::Run(args) => run::run(cli.root, *args),
        Command::Compose(args) => compose::run(cli.root, *args),
        Command::System(cmd) => system::run(cli.root, cmd),
        Command::Images(cmd) => images::run(cli.root, cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            eprintln!("error: {e:#}");
            eprintln!("\nFor more information, try '--help'.");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_state_dir_for_every_subcommand() {
        let p = std::path::PathBuf::from;
        assert_eq!(state_dir_for(true, None, None), p("/var/lib/kiln"));
        assert_eq!(
            state_dir_for(false, Some("/x".into()), Some("/h".into())),
            p("/x/kiln")
        );
        assert_eq!(
            state_dir_for(false, Some("".into()), Some("/h".into())),
            p("/h/.local/share/kiln")
        );
        // HOME unset: the same directory `kiln build` and `kiln images` both use.
        assert_eq!(state_dir_for(false, None, None), p("/var/lib/kiln"));
    }
}
