//! The embeddable library through its public API, without the command line, in one test binary
//! (for link time): `Builder` + `BuildRequest` + an embedder's own `Progress` (`facade`),
//! cancelling a build with a `CancelHandle` (`cancel`), and an embedder with no init hook in
//! the libtest harness (`embed`).

#[path = "../common/mod.rs"]
mod common;

mod cancel;
mod embed;
mod facade;

use std::sync::Mutex;

use kiln::{Progress, ProgressEvent};

/// An embedder's `Progress` that keeps every event, in order.
#[derive(Default)]
struct Recorder(Mutex<Vec<ProgressEvent>>);

impl Progress for Recorder {
    fn event(&self, event: &ProgressEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}
