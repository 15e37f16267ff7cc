//! The `kiln` command: parses flags, calls the library, renders progress. No build logic here.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
