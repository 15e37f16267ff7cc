//! A minimal `kiln build` for driving the solver before the real CLI exists:
//! `kiln-build build [--output SPEC] [--build-arg K=V] [--target T] [--secret SPEC] [-t NAME]
//! [--no-cache] [-f DOCKERFILE] CONTEXT`. State directory: `$KILN_ROOT` (default
//! `/var/lib/kiln`). Prints plain progress (`Step N/M : ...`, ` ---> Using cache`) on stderr.

use std::process::ExitCode;
use std::sync::Mutex;

use kiln_solver::{
    BuildRequest, DockerfileSource, OutputSpec, Progress, ProgressEvent, SecretSpec, Solver,
    SolverConfig,
};

struct Plain(Mutex<()>);

impl Progress for Plain {
    fn event(&self, e: &ProgressEvent) {
        let _g = self.0.lock();
        match e {
            ProgressEvent::StepStarted {
                index,
                total,
                instruction,
                ..
            } => eprintln!("Step {index}/{total} : {instruction}"),
            ProgressEvent::StepCached { .. } => eprintln!(" ---> Using cache"),
            ProgressEvent::StepLog { step, line, .. } => eprintln!("#{} {line}", step.0 + 1),
            ProgressEvent::StepDone { step, elapsed } => {
                eprintln!("#{} DONE {:.1}s", step.0 + 1, elapsed.as_secs_f64());
            }
            ProgressEvent::StepFailed { step, error } => {
                eprintln!("#{} ERROR: {error}", step.0 + 1);
            }
            ProgressEvent::Warning { message } => eprintln!("{message}"),
            ProgressEvent::ImageWritten { config_digest, .. } => {
                eprintln!("Successfully built {config_digest}");
            }
            _ => {}
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.into_iter();
    if it.next().as_deref() != Some("build") {
        eprintln!("usage: kiln-build build [OPTIONS] CONTEXT");
        return ExitCode::from(2);
    }
    let mut req = BuildRequest::new(".");
    let mut context = None;
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let r: Result<(), String> = (|| {
            match a.as_str() {
                "--output" | "-o" => req
                    .outputs
                    .push(OutputSpec::parse(&val("--output")?).map_err(|e| e.to_string())?),
                "--build-arg" => {
                    let v = val("--build-arg")?;
                    let (k, v) = match v.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (v.clone(), std::env::var(&v).unwrap_or_default()),
                    };
                    req.build_args.push((k, v));
                }
                "--target" => req.target = Some(val("--target")?),
                "--secret" => req
                    .secrets
                    .push(SecretSpec::parse(&val("--secret")?).map_err(|e| e.to_string())?),
                "-t" | "--tag" => req.tags.push(val("--tag")?),
                "-f" | "--file" => req.dockerfile = DockerfileSource::Path(val("--file")?.into()),
                "--no-cache" => req.no_cache = true,
                "--progress" => {
                    val("--progress")?;
                }
                other if !other.starts_with('-') => context = Some(other.to_string()),
                other => return Err(format!("unknown flag {other}")),
            }
            Ok(())
        })();
        if let Err(e) = r {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let Some(context) = context else {
        eprintln!("error: no build context given");
        return ExitCode::from(2);
    };
    req.context_dir = context.into();
    let root = std::env::var("KILN_ROOT").unwrap_or_else(|_| "/var/lib/kiln".into());
    let solver = match Solver::new(SolverConfig::new(root)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match solver.build(&req, &Plain(Mutex::new(()))) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
