//! The `kiln` command: parses flags, calls the library, renders progress. No build logic here.

mod cli;

fn main() -> std::process::ExitCode {
    kiln_executor::init_main_if_requested(); // container init re-exec (kiln-executor)
    cli::main()
}
