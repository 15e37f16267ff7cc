//! Command-line front end. Each subcommand lives in its own module; this file only wires them.

mod debug;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// kiln: build Dockerfiles without a daemon.
#[derive(Parser, Debug)]
#[command(name = "kiln", version, about, long_about = None)]
pub(crate) struct Cli {
    /// State directory (default: /var/lib/kiln as root, else $XDG_DATA_HOME/kiln).
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    pub(crate) root: Option<std::path::PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Tools to inspect how kiln reads a Dockerfile.
    #[command(subcommand)]
    Debug(debug::DebugCommand),
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
        Command::Debug(cmd) => debug::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
