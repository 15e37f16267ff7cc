//! An embedder's own progress sink: count steps and cache hits, collect each step's output,
//! and print a one-line summary per step. kiln calls [`Progress::event`] from several threads at
//! once (steps run in parallel), so the sink keeps its state behind a mutex.
//!
//! ```sh
//! cargo run --example custom_progress -- examples/hello
//! ```

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use kiln::{BuildRequest, Builder, Progress, ProgressEvent, StepId};

#[derive(Default)]
struct Summary {
    names: HashMap<StepId, String>,
    output: HashMap<StepId, Vec<String>>,
    cached: usize,
    ran: Vec<(String, Duration)>,
}

#[derive(Default)]
struct SummaryProgress(Mutex<Summary>);

impl Progress for SummaryProgress {
    fn event(&self, event: &ProgressEvent) {
        let mut s = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            ProgressEvent::StepStarted {
                step, instruction, ..
            } => {
                s.names.insert(*step, instruction.clone());
            }
            ProgressEvent::StepLog { step, line, .. } => {
                s.output.entry(*step).or_default().push(line.clone());
            }
            ProgressEvent::StepCached { .. } => s.cached += 1,
            ProgressEvent::StepDone { step, elapsed } => {
                let name = s.names.get(step).cloned().unwrap_or_default();
                s.ran.push((name, *elapsed));
            }
            ProgressEvent::StepFailed { step, error } => {
                let lines = s.output.get(step).map_or(0, Vec::len);
                eprintln!(
                    "step {:?} failed after {lines} lines of output: {error}",
                    s.names.get(step)
                );
            }
            ProgressEvent::Warning { message } => eprintln!("warning: {message}"),
            ProgressEvent::BuildFinished { success, elapsed } => {
                eprintln!(
                    "build {} in {elapsed:.1?}",
                    if *success { "succeeded" } else { "failed" }
                );
            }
            _ => {}
        }
    }
}

fn main() -> ExitCode {
    let context = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/hello".into());
    let builder = Builder::new(std::env::temp_dir().join("kiln-example-state"));
    let progress = SummaryProgress::default();
    let result = builder.build(&BuildRequest::new(context), &progress);
    let summary = progress
        .0
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    println!(
        "{} steps from cache, {} ran",
        summary.cached,
        summary.ran.len()
    );
    for (name, took) in &summary.ran {
        println!("  {took:>8.1?}  {name}");
    }
    match result {
        Ok(image) => {
            println!("image id {}", image.config_digest);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
