//! `--progress=json`: one JSON object per line per event, for CI systems and tools. The schema
//! (documented in the README) is the event's snake_case `type` plus its fields; durations are
//! seconds as floats. A build error that no step reported is written as an `error` object.

use std::io::Write;
use std::sync::Mutex;

use kiln::{LogStream, Progress, ProgressEvent};
use serde_json::{Value, json};

use super::{Renderer, Sink, lock};

/// The JSON-lines renderer.
pub(crate) struct Json {
    out: Mutex<(Sink, bool)>,
}

impl Json {
    pub(crate) fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: Mutex::new((Sink(out), false)),
        }
    }
}

/// The JSON object of one event.
pub(crate) fn event_json(event: &ProgressEvent) -> Value {
    match event {
        ProgressEvent::BuildStarted { total_steps } => {
            json!({"type": "build_started", "total_steps": total_steps})
        }
        ProgressEvent::StepStarted {
            step,
            index,
            total,
            stage,
            instruction,
            line,
            reason,
        } => {
            let mut v = json!({
                "type": "step_started", "step": step.0, "index": index, "total": total,
                "stage": stage, "instruction": instruction, "line": line,
            });
            // Present for a step that will run: why it missed the cache.
            if let Some(r) = reason {
                v["reason"] = json!(r);
            }
            v
        }
        ProgressEvent::StepLog { step, stream, line } => json!({
            "type": "step_log", "step": step.0,
            "stream": match stream { LogStream::Stdout => "stdout", LogStream::Stderr => "stderr" },
            "line": line,
        }),
        ProgressEvent::StepCached { step } => json!({"type": "step_cached", "step": step.0}),
        ProgressEvent::StepDone { step, elapsed } => {
            json!({"type": "step_done", "step": step.0, "duration": elapsed.as_secs_f64()})
        }
        ProgressEvent::StepFailed { step, error } => {
            json!({"type": "step_failed", "step": step.0, "error": error})
        }
        ProgressEvent::Environment {
            snapshot_driver,
            rootless,
        } => json!({
            "type": "environment", "snapshot_driver": snapshot_driver, "rootless": rootless,
        }),
        ProgressEvent::Warning { message } => json!({"type": "warning", "message": message}),
        ProgressEvent::ImageWritten {
            manifest_digest,
            config_digest,
            names,
        } => json!({
            "type": "image_written", "manifest_digest": manifest_digest,
            "config_digest": config_digest, "names": names,
        }),
        ProgressEvent::BuildFinished { success, elapsed } => {
            json!({"type": "build_finished", "success": success, "duration": elapsed.as_secs_f64()})
        }
        // An event kind this renderer does not know yet.
        _ => json!({"type": "unknown"}),
    }
}

impl Progress for Json {
    fn event(&self, event: &ProgressEvent) {
        let mut guard = lock(&self.out);
        if matches!(event, ProgressEvent::StepFailed { .. }) {
            guard.1 = true;
        }
        guard.0.emit(&format!("{}\n", event_json(event)));
    }
}

impl Renderer for Json {
    fn as_progress(&self) -> &dyn Progress {
        self
    }
    fn finish(&self, error: Option<&kiln::Error>) {
        let mut guard = lock(&self.out);
        if let (Some(e), false) = (error, guard.1) {
            guard.0.emit(&format!(
                "{}\n",
                json!({"type": "error", "message": super::report::error_text(e)})
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kiln::StepId;

    use super::*;
    use crate::cli::progress::testing::{Buffer, done, log, started};

    #[test]
    fn one_object_per_event() {
        let buf = Buffer::default();
        let j = Json::new(Box::new(buf.clone()));
        j.event(&ProgressEvent::BuildStarted { total_steps: 3 });
        j.event(&ProgressEvent::Environment {
            snapshot_driver: "overlayfs",
            rootless: true,
        });
        j.event(&started(0, 1, "FROM scratch", 1));
        j.event(&ProgressEvent::StepCached { step: StepId(0) });
        j.event(&started(1, 2, "RUN echo \"hi\"", 2));
        j.event(&ProgressEvent::StepLog {
            step: StepId(1),
            stream: LogStream::Stderr,
            line: "hi".into(),
        });
        j.event(&log(1, "out"));
        j.event(&done(1, 250));
        j.event(&ProgressEvent::Warning {
            message: "w".into(),
        });
        j.event(&ProgressEvent::ImageWritten {
            manifest_digest: "sha256:m".into(),
            config_digest: "sha256:c".into(),
            names: vec!["a:1".into()],
        });
        j.event(&ProgressEvent::BuildFinished {
            success: true,
            elapsed: Duration::from_millis(1500),
        });
        j.finish(None);
        assert_eq!(
            buf.text(),
            r#"{"total_steps":3,"type":"build_started"}
{"rootless":true,"snapshot_driver":"overlayfs","type":"environment"}
{"index":1,"instruction":"FROM scratch","line":1,"stage":"0","step":0,"total":3,"type":"step_started"}
{"step":0,"type":"step_cached"}
{"index":2,"instruction":"RUN echo \"hi\"","line":2,"stage":"0","step":1,"total":3,"type":"step_started"}
{"line":"hi","step":1,"stream":"stderr","type":"step_log"}
{"line":"out","step":1,"stream":"stdout","type":"step_log"}
{"duration":0.25,"step":1,"type":"step_done"}
{"message":"w","type":"warning"}
{"config_digest":"sha256:c","manifest_digest":"sha256:m","names":["a:1"],"type":"image_written"}
{"duration":1.5,"success":true,"type":"build_finished"}
"#
        );
    }

    #[test]
    fn errors_outside_steps_become_error_objects() {
        let buf = Buffer::default();
        let j = Json::new(Box::new(buf.clone()));
        j.finish(Some(&kiln::Error::Plan {
            line: 0,
            message: "no such stage `x`".into(),
        }));
        assert_eq!(
            buf.text(),
            "{\"message\":\"no such stage `x`\",\"type\":\"error\"}\n"
        );
        // A step failure already said it all.
        let buf = Buffer::default();
        let j = Json::new(Box::new(buf.clone()));
        j.event(&started(0, 1, "RUN x", 1));
        j.event(&ProgressEvent::StepFailed {
            step: StepId(0),
            error: "exit code: 1".into(),
        });
        j.finish(Some(&kiln::Error::Plan {
            line: 0,
            message: "exit code: 1".into(),
        }));
        assert_eq!(buf.text().lines().count(), 2);
    }
}
