//! A minimal binary that is nothing but the kiln container init, so the executor's own tests and
//! benches can re-execute something without building the whole `kiln` CLI.

fn main() {
    kiln_executor::init_main_if_requested();
    eprintln!("kiln-executor-init: run by kiln-executor only (argv[1] must be its sentinel)");
    std::process::exit(2);
}
