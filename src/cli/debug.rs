//! `kiln debug ...`: dump the parsed AST and expand words, to check the parser from outside.

use std::process::ExitCode;

use clap::Subcommand;

/// Debug subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum DebugCommand {
    /// Print the parsed Dockerfile AST.
    DumpAst {
        /// Output format.
        #[arg(long, default_value = "buildkit")]
        format: String,
        /// The Dockerfile.
        file: std::path::PathBuf,
    },
}

pub(crate) fn run(cmd: DebugCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DebugCommand::DumpAst { .. } => {
            anyhow::bail!("`kiln debug dump-ast` is not implemented yet")
        }
    }
}
