//! The `kiln` command: parses flags, calls the library, renders progress. No build logic here.

mod cli;

fn main() -> std::process::ExitCode {
    // First, while the process has one thread: an ordinary user moves into a user namespace
    // where they are root and their /etc/subuid range is mapped (rootless builds). A failure
    // is remembered and reported by the first command that needs it (a build).
    let _ = kiln_userns::enter_rootless();
    cli::main()
}
