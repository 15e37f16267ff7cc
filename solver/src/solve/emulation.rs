//! Before any step runs: every platform that has `RUN` steps must be one this machine runs,
//! natively or through a binfmt_misc emulator registered with the fix-binary flag (so the
//! kernel finds it from inside the container's root). A missing emulator is an error naming
//! the first such `RUN` and what to install, not an `exec format error` halfway through.

use super::*;

/// Checks that the `RUN` steps of every platform in `plan` can run here.
pub(super) fn check(plan: &Plan) -> Result<()> {
    let mut checked: Vec<&Platform> = Vec::new();
    for step in &plan.steps {
        let Op::Run(r) = &step.op else { continue };
        if checked.contains(&&r.platform) {
            continue;
        }
        checked.push(&r.platform);
        if let Err(source) = ex::emulation(&r.platform.architecture, r.platform.variant.as_deref())
        {
            return Err(Error::NoEmulator {
                line: step.line,
                platform: r.platform.to_string(),
                source,
            });
        }
    }
    Ok(())
}
