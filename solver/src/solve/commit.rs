//! Committing a step's snapshot (one writer per name, adopting another process's commit) and
//! cancelling the running steps of a build.

use super::*;

/// Stops new steps and kills running processes. The flag is set before the tokens are locked
/// and [`BuildCtx::register_cancel`] checks it under that lock, so no token is missed.
pub(super) fn cancel_all(flag: &AtomicBool, tokens: &Mutex<Vec<ex::CancelToken>>) {
    flag.store(true, Ordering::SeqCst);
    let tokens = tokens
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for t in tokens.iter() {
        t.cancel();
    }
}

impl BuildCtx<'_> {
    /// Commits the active snapshot `active` as the result of `key`, normally as `step-<hex>`.
    /// When that name exists already (under `--no-cache`, or after a lost record) the new result
    /// is kept under a fresh name. When another process commits `step-<hex>` between the check
    /// and the commit, the step is theirs (one writer per name): unless `fresh`, `active` is
    /// dropped and `(name, true)` returned, a cache hit rather than an error.
    pub(crate) fn commit_step(
        &self,
        key: &CacheKey,
        active: &str,
        fresh: bool,
    ) -> Result<(String, bool)> {
        let sn = self.solver.snapshotter.as_ref();
        let name = format!("step-{}", key.hex());
        if sn.stat(&name).is_err() {
            match sn.commit(&name, active) {
                Ok(()) => return Ok((name, false)),
                Err(snap::Error::AlreadyExists(n)) if n == name && !fresh => {
                    let _ = sn.remove(active);
                    return Ok((name, true));
                }
                Err(snap::Error::AlreadyExists(n)) if n == name => {}
                Err(e) => {
                    let _ = sn.remove(active);
                    return Err(snap_err(format!("commit {name}"))(e));
                }
            }
        }
        let unique = unique_key(&name);
        if let Err(e) = sn.commit(&unique, active) {
            let _ = sn.remove(active);
            return Err(snap_err(format!("commit {unique}"))(e));
        }
        Ok((unique, false))
    }

    /// Makes `token` (a `RUN` about to start) cancelled with the build, at once if the build
    /// is already being cancelled.
    pub(crate) fn register_cancel(&self, token: &ex::CancelToken) {
        let mut tokens = self
            .cancel_tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tokens.push(token.clone());
        if self.cancelled.load(Ordering::SeqCst) {
            token.cancel();
        }
    }
}
