//! The parallel scheduler: runs the vertices of a DAG on a rayon pool bounded by `jobs`, each
//! as soon as all of its inputs are done, and stops launching new work after the first failure
//! (waiting for running vertices, which the caller cancels through the shared flag).
//! [`OnceMap`] makes identical work (same cache key) in flight run once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::error::{Error, Result};

/// Runs `work` for every node of `graph` (edges point from an input to its user) with at most
/// `jobs` at once. `work` receives the node and the results of its inputs (in edge order).
/// Returns every node's result, or the first error.
pub(crate) fn run_dag<N, R, F>(
    graph: &DiGraph<N, ()>,
    jobs: usize,
    cancel: &AtomicBool,
    work: F,
) -> Result<Vec<Arc<R>>>
where
    N: Sync,
    R: Send + Sync,
    F: Fn(NodeIndex, &N, Vec<(NodeIndex, Arc<R>)>) -> Result<R> + Sync,
{
    let n = graph.node_count();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .thread_name(|i| format!("kiln-step-{i}"))
        .build()
        .map_err(|e| Error::InvalidOption {
            option: "jobs",
            message: e.to_string(),
        })?;
    let mut results: Vec<Option<Arc<R>>> = (0..n).map(|_| None).collect();
    let mut pending: Vec<usize> = graph
        .node_indices()
        .map(|i| graph.edges_directed(i, Direction::Incoming).count())
        .collect();
    let (tx, rx) = crossbeam_channel::unbounded::<(NodeIndex, Result<R>)>();
    let mut first_err: Option<Error> = None;
    let mut running = 0usize;
    let mut done = 0usize;
    pool.in_place_scope(|scope| {
        let mut ready: Vec<NodeIndex> = graph
            .node_indices()
            .filter(|i| pending[i.index()] == 0)
            .collect();
        loop {
            if first_err.is_none() {
                for idx in ready.drain(..) {
                    let inputs: Vec<(NodeIndex, Arc<R>)> = graph
                        .edges_directed(idx, Direction::Incoming)
                        .filter_map(|e| {
                            results[e.source().index()].clone().map(|r| (e.source(), r))
                        })
                        .collect();
                    let tx = tx.clone();
                    let work = &work;
                    let node = &graph[idx];
                    running += 1;
                    scope.spawn(move |_| {
                        let r = if cancel.load(Ordering::SeqCst) {
                            Err(Error::Cancelled)
                        } else {
                            work(idx, node, inputs)
                        };
                        let _ = tx.send((idx, r));
                    });
                }
            } else {
                ready.clear();
            }
            if running == 0 {
                break;
            }
            let Ok((idx, r)) = rx.recv() else { break };
            running -= 1;
            match r {
                Ok(v) => {
                    done += 1;
                    results[idx.index()] = Some(Arc::new(v));
                    for e in graph.edges_directed(idx, Direction::Outgoing) {
                        let t = e.target().index();
                        pending[t] -= 1;
                        if pending[t] == 0 {
                            ready.push(e.target());
                        }
                    }
                }
                Err(e) => {
                    cancel.store(true, Ordering::SeqCst);
                    if first_err.is_none() || matches!(first_err, Some(Error::Cancelled)) {
                        first_err = Some(e);
                    }
                }
            }
        }
    });
    if let Some(e) = first_err {
        return Err(e);
    }
    if done != n {
        return Err(Error::Plan {
            line: 0,
            message: "the build graph has a cycle".into(),
        });
    }
    Ok(results.into_iter().flatten().collect())
}

/// Cancels a running build from another thread: a CLI's signal handler, a UI's stop button.
///
/// Pass it to [`crate::Solver::build_cancellable`]; [`CancelHandle::cancel`] stops the build
/// as soon as possible: no new step starts, running `RUN` processes are killed, and every mount
/// and temporary snapshot of the build is released before the build returns
/// [`Error::Cancelled`]. Cheap to clone; all clones cancel the same builds. Cancelling is for
/// good: a handle that was cancelled cancels every later build it is given at once.
///
/// ```
/// let cancel = kiln_solver::CancelHandle::new();
/// let for_signal = cancel.clone();
/// std::thread::spawn(move || for_signal.cancel());
/// # std::thread::sleep(std::time::Duration::from_millis(50));
/// # assert!(cancel.is_cancelled());
/// ```
#[derive(Clone, Default)]
pub struct CancelHandle {
    inner: Arc<CancelInner>,
}

type Hook = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct CancelInner {
    cancelled: AtomicBool,
    hooks: Mutex<Vec<(u64, Hook)>>,
    next: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelHandle")
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl CancelHandle {
    /// A handle that has not been cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels the builds running with this handle (and any later ones).
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        let hooks = self
            .inner
            .hooks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (_, h) in hooks.iter() {
            h();
        }
    }

    /// Whether [`CancelHandle::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Runs `hook` on cancellation (at once if already cancelled) until the guard is dropped.
    pub(crate) fn on_cancel(&self, hook: impl Fn() + Send + Sync + 'static) -> CancelGuard {
        let id = self.inner.next.fetch_add(1, Ordering::SeqCst);
        {
            let mut hooks = self
                .inner
                .hooks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            hooks.push((id, Box::new(hook)));
        }
        if self.is_cancelled()
            && let Some((_, h)) = self
                .inner
                .hooks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .find(|(i, _)| *i == id)
        {
            h();
        }
        CancelGuard {
            handle: self.clone(),
            id,
        }
    }
}

/// Unregisters a [`CancelHandle::on_cancel`] hook when dropped.
pub(crate) struct CancelGuard {
    handle: CancelHandle,
    id: u64,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.handle
            .inner
            .hooks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(i, _)| *i != self.id);
    }
}

type Slot<V> = Arc<(Mutex<Option<Result<V, String>>>, Condvar)>;

/// Runs identical work once: the first caller for a key computes, later callers wait for it.
pub(crate) struct OnceMap<K, V> {
    map: Mutex<HashMap<K, Slot<V>>>,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> OnceMap<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the value for `key`, computing it with `f` if no one has (or is).
    pub(crate) fn get_or_run(&self, key: &K, f: impl FnOnce() -> Result<V>) -> Result<V> {
        let (slot, owner) = {
            let mut m = self.map.lock().map_err(|_| Error::Cancelled)?;
            match m.get(key) {
                Some(s) => (s.clone(), false),
                None => {
                    let s: Slot<V> = Arc::new((Mutex::new(None), Condvar::new()));
                    m.insert(key.clone(), s.clone());
                    (s, true)
                }
            }
        };
        if owner {
            let r = f();
            let stored = match &r {
                Ok(v) => Ok(v.clone()),
                Err(e) => Err(e.to_string()),
            };
            if let Ok(mut g) = slot.0.lock() {
                *g = Some(stored);
            }
            slot.1.notify_all();
            return r;
        }
        let mut g = slot.0.lock().map_err(|_| Error::Cancelled)?;
        while g.is_none() {
            g = slot.1.wait(g).map_err(|_| Error::Cancelled)?;
        }
        match g.as_ref() {
            Some(Ok(v)) => Ok(v.clone()),
            Some(Err(e)) => Err(Error::StepFailed {
                line: 0,
                instruction: "identical step".into(),
                message: e.clone(),
            }),
            None => Err(Error::Cancelled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn runs_in_dependency_order_with_bounded_parallelism() {
        let mut g: DiGraph<u32, ()> = DiGraph::new();
        let a = g.add_node(1);
        let b = g.add_node(2);
        let c = g.add_node(3);
        let d = g.add_node(4);
        g.add_edge(a, b, ());
        g.add_edge(a, c, ());
        g.add_edge(b, d, ());
        g.add_edge(c, d, ());
        let live = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let cancel = AtomicBool::new(false);
        let out = run_dag(
            &g,
            2,
            &cancel,
            |_, n, inputs: Vec<(NodeIndex, Arc<u32>)>| {
                let l = live.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(l, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(20));
                live.fetch_sub(1, Ordering::SeqCst);
                Ok(*n + inputs.iter().map(|x| *x.1).sum::<u32>())
            },
        )
        .expect("run");
        assert_eq!(*out[d.index()], 4 + (2 + 1) + (3 + 1));
        assert!(peak.load(Ordering::SeqCst) <= 2);
    }

    #[test]
    fn first_error_stops_the_rest() {
        let mut g: DiGraph<u32, ()> = DiGraph::new();
        let a = g.add_node(1);
        let b = g.add_node(2);
        g.add_edge(a, b, ());
        let ran_b = AtomicBool::new(false);
        let cancel = AtomicBool::new(false);
        let r = run_dag(&g, 2, &cancel, |i, _, _: Vec<(NodeIndex, Arc<u32>)>| {
            if i == a {
                Err(Error::Cancelled)
            } else {
                ran_b.store(true, Ordering::SeqCst);
                Ok(0)
            }
        });
        assert!(r.is_err());
        assert!(!ran_b.load(Ordering::SeqCst));
    }

    #[test]
    fn cancel_handle_runs_hooks_once_registered_and_at_once_when_late() {
        let h = CancelHandle::new();
        let n = Arc::new(AtomicUsize::new(0));
        let n1 = n.clone();
        let g = h.on_cancel(move || {
            n1.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(n.load(Ordering::SeqCst), 0);
        h.clone().cancel();
        assert!(h.is_cancelled());
        assert_eq!(n.load(Ordering::SeqCst), 1);
        drop(g);
        let n2 = n.clone();
        let _late = h.on_cancel(move || {
            n2.fetch_add(10, Ordering::SeqCst);
        });
        assert_eq!(n.load(Ordering::SeqCst), 11);
    }

    #[test]
    fn once_map_runs_identical_work_once() {
        let m: OnceMap<String, u32> = OnceMap::new();
        let count = AtomicUsize::new(0);
        rayon::scope(|s| {
            for _ in 0..4 {
                s.spawn(|_| {
                    let v = m
                        .get_or_run(&"k".to_string(), || {
                            count.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(30));
                            Ok(7)
                        })
                        .expect("value");
                    assert_eq!(v, 7);
                });
            }
        });
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
}
