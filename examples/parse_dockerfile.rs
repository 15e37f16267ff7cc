//! Use kiln-parser alone: read a Dockerfile and list its stages and instructions, with the
//! lines they come from. No state directory, no root, no network.
//!
//! ```sh
//! cargo run --example parse_dockerfile -- examples/hello/Dockerfile
//! ```

use std::process::ExitCode;

use kiln::parser;

fn main() -> ExitCode {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/hello/Dockerfile".into());
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read `{path}`: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dockerfile = match parser::parse(&text) {
        Ok(d) => d,
        Err(e) => {
            // Errors name the line, e.g. `Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)`.
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for arg in &dockerfile.global {
        println!("global  line {:>3}  {}", arg.start_line, arg.original);
    }
    for stage in &dockerfile.stages {
        let name = stage.name.as_deref().unwrap_or("(unnamed)");
        println!(
            "stage {} {name}: FROM {} (line {})",
            stage.index, stage.base, stage.start_line
        );
        for step in &stage.instructions {
            let kind = match &step.instruction {
                parser::Instruction::Run(_) => "run",
                parser::Instruction::Copy(_) | parser::Instruction::Add(_) => "files",
                _ => "config",
            };
            println!("  line {:>3}  {kind:<6} {}", step.start_line, step.original);
        }
    }
    for w in &dockerfile.warnings {
        println!("warning: line {}: {}", w.line, w.message);
    }
    ExitCode::SUCCESS
}
