//! Where the query API's queries run: a runtime of their own whose threads
//! the kernel schedules at a lower priority (`nice`), so that a heavy query
//! takes only the CPU that ingest leaves free. DataFusion's tasks and the
//! local store's blocking reads spawn on the runtime that runs the query,
//! so all of a query's work stays on these threads. On an idle machine a
//! query runs as fast as before: a lower priority only matters when
//! something else wants the CPU.

use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime};

/// `[query] threads` and `nice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryThreads {
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// Added to the threads' scheduling priority, 0 (as ingest) to 19
    /// (only what nothing else wants).
    pub nice: i32,
}

/// The process's query runtime, made by the first engine that asks for
/// one (later engines share it whatever they ask). It lives as long as the
/// process: a runtime cannot be dropped from async code.
pub(crate) fn handle(threads: QueryThreads) -> Handle {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let workers = if threads.threads == 0 {
                std::thread::available_parallelism().map_or(2, usize::from)
            } else {
                threads.threads
            };
            let nice = threads.nice;
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name("logpipe-query")
                .on_thread_start(move || lower_priority(nice))
                .enable_all()
                .build()
                .expect("the query runtime's threads start")
        })
        .handle()
        .clone()
}

/// Lowers the calling thread's priority by `nice` (Linux schedules
/// threads one by one; elsewhere nothing happens).
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        let tid = rustix::thread::gettid();
        if let Err(error) = rustix::process::setpriority_process(Some(tid), nice) {
            tracing::warn!(%error, nice, "cannot lower the query threads' priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// A query task that is stopped when its caller stops waiting (a timeout,
/// a client gone).
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn query_threads_run_at_the_lower_priority() {
        let handle = handle(QueryThreads {
            threads: 1,
            nice: 7,
        });
        let nice = std::thread::spawn(move || {
            handle.block_on(async {
                tokio::spawn(async {
                    rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
                })
                .await
                .unwrap()
            })
        })
        .join()
        .unwrap();
        assert_eq!(nice, 7);
    }
}
