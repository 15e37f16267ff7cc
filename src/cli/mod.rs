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
