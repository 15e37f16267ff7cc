//! Build a context directory into an OCI image archive from Rust, with kiln as a library.
//!
//! ```sh
//! # as root (RUN steps use namespaces); examples/hello needs no network
//! cargo run --example build_image -- examples/hello /tmp/hello.oci.tar
//! ```

use std::process::ExitCode;

use kiln::{BuildRequest, Builder, Destination, OutputSpec, Progress, ProgressEvent};

/// Prints one line per finished step, like a terse `--progress=plain`.
struct Lines;

impl Progress for Lines {
    fn event(&self, event: &ProgressEvent) {
        match event {
            ProgressEvent::StepStarted {
                index,
                total,
                instruction,
                ..
            } => {
                eprintln!("[{index}/{total}] {instruction}");
            }
            ProgressEvent::StepLog { line, .. } => eprintln!("    {line}"),
            ProgressEvent::StepFailed { error, .. } => eprintln!("    failed: {error}"),
            _ => {}
        }
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let context = args.next().unwrap_or_else(|| "examples/hello".into());
    let dest = args.next().unwrap_or_else(|| "hello.oci.tar".into());

    // A state directory of our own, so the example never touches /var/lib/kiln.
    let state = std::env::temp_dir().join("kiln-example-state");
    let builder = Builder::new(state).jobs(2);

    let mut options = BuildRequest::new(context);
    options.tags.push("hello:latest".into());
    options
        .build_args
        .insert("GREETING".into(), "hi from build_image.rs".into());
    options.outputs.push(OutputSpec::Oci {
        dest: Destination::Path(dest.clone().into()),
        tar: true,
        names: vec!["hello:latest".into()],
        compression: kiln::Compression::Gzip,
        rewrite_timestamp: false,
    });

    match builder.build(&options, &Lines) {
        Ok(image) => {
            println!(
                "image {} (manifest {}) written to {dest}",
                image.config_digest, image.manifest_digest
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
