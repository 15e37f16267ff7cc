//! The smallest embedder: builds the context directory given as the first argument, whose
//! Dockerfile may have `RUN` steps, and prints the image id. There is no init hook anywhere:
//! the container init of a RUN step starts from a constructor inside the kiln library before
//! this `main` runs.
//!
//! ```sh
//! /work/shared/registry-up.sh            # serves 127.0.0.1:5000/busybox:latest
//! cargo run --example embed_run -- examples/embed_run [STATE_DIR]
//! ```

use std::process::ExitCode;

use kiln::{BuildRequest, Builder, NoProgress};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(context) = args.next() else {
        eprintln!("usage: embed_run CONTEXT_DIR [STATE_DIR]");
        return ExitCode::from(2);
    };
    // A state directory of our own (per user), so the example never touches kiln's.
    let state = args.next().map_or_else(
        || std::env::temp_dir().join(format!("kiln-embed-run-{}", uid())),
        Into::into,
    );
    match Builder::new(state).build(&BuildRequest::new(context), &NoProgress) {
        Ok(image) => {
            println!("{}", image.config_digest);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("embed_run: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The real uid, to keep users' state directories apart.
fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}
