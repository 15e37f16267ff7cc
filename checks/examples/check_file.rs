//! Checks one Dockerfile and prints the warnings' short form and how long the checks took
//! (mean of N runs): `cargo run --release -p kiln-checks --example check_file -- FILE [N]`.

use std::time::Instant;

use kiln_checks::{CheckOptions, check};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: check_file FILE [RUNS]");
        std::process::exit(2);
    };
    let runs: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1).max(1);
    let source = match std::fs::read(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot read `{path}`: {e}");
            std::process::exit(1);
        }
    };
    let opts = CheckOptions {
        all_stages: true,
        ..CheckOptions::default()
    };
    let start = Instant::now();
    let mut report = check(&source, &opts);
    for _ in 1..runs {
        report = check(&source, &opts);
    }
    let each = start.elapsed() / runs;
    for w in &report.warnings {
        println!("{}", w.short());
    }
    if let Some(e) = &report.error {
        println!("error: {}", e.message);
    }
    eprintln!(
        "{} lines, {} warnings, {:.3} ms per check",
        String::from_utf8_lossy(&source).lines().count(),
        report.warnings.len(),
        each.as_secs_f64() * 1000.0
    );
}
