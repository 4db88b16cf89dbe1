//! Where the query API's queries run: a runtime of their own whose threads
//! the kernel schedules at a lower priority (`SCHED_IDLE` by default), so
//! that a heavy query takes only the CPU that ingest leaves free. DataFusion's tasks and the
//! local store's blocking reads spawn on the runtime that runs the query,
//! so all of a query's work stays on these threads. On an idle machine a
//! query runs as fast as before: a lower priority only matters when
//! something else wants the CPU.

use std::sync::OnceLock;

pub use logpipe_config::QueryPriority;
use tokio::runtime::{Handle, Runtime};

use crate::pace::Pacer;

/// `[query] threads`, `priority` and `max_share_under_load`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryThreads {
    /// Worker threads (0: one per core).
    pub threads: usize,
    pub priority: QueryPriority,
    /// The share of the cores the query threads may use while the rest of
    /// the process is busy (`pace.rs`; 0: no cap).
    pub max_share_under_load: f64,
}

/// The process's pacer for the query runtime's scans (made once, like the
/// runtime); `None` when `max_share_under_load` sets no cap.
pub(crate) fn pacer(threads: QueryThreads) -> Option<&'static Pacer> {
    static PACER: OnceLock<Option<Pacer>> = OnceLock::new();
    PACER
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(2, usize::from);
            Pacer::new(threads.max_share_under_load, cores)
        })
        .as_ref()
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
            let priority = threads.priority;
            // The pacer counts the query threads' CPU as each reports it:
            // at every paced batch, and here when a thread goes idle or
            // ends (work outside the paced leaves: sorts, final
            // aggregations, file reads on the blocking threads).
            let report = move || {
                if let Some(pacer) = pacer(threads) {
                    pacer.report_thread();
                }
            };
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name("logpipe-query")
                .on_thread_start(move || lower_priority(priority))
                .on_thread_park(report)
                .on_thread_stop(report)
                .enable_all()
                .build()
                .expect("the query runtime's threads start")
        })
        .handle()
        .clone()
}

/// Lowers the calling thread's priority (Linux schedules threads one by
/// one; elsewhere nothing happens).
fn lower_priority(priority: QueryPriority) {
    #[cfg(target_os = "linux")]
    {
        let outcome = match priority {
            QueryPriority::Normal => return,
            QueryPriority::Idle => {
                use thread_priority::unix::{
                    NormalThreadSchedulePolicy, ThreadSchedulePolicy,
                    set_thread_priority_and_policy, thread_native_id,
                };
                // SCHED_IDLE takes no priority value but its minimum (0).
                set_thread_priority_and_policy(
                    thread_native_id(),
                    thread_priority::ThreadPriority::Min,
                    ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
                )
                .map_err(|e| format!("{e:?}"))
            }
            QueryPriority::Low => {
                rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10)
                    .map_err(|e| e.to_string())
            }
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, ?priority, "cannot lower the query threads' priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = priority;
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
    fn query_threads_run_at_the_idle_priority() {
        let handle = handle(QueryThreads {
            threads: 1,
            priority: QueryPriority::Idle,
            max_share_under_load: 0.1,
        });
        let policy = std::thread::spawn(move || {
            handle.block_on(async {
                tokio::spawn(async { thread_priority::unix::thread_schedule_policy().unwrap() })
                    .await
                    .unwrap()
            })
        })
        .join()
        .unwrap();
        assert_eq!(
            policy,
            thread_priority::unix::ThreadSchedulePolicy::Normal(
                thread_priority::unix::NormalThreadSchedulePolicy::Idle
            )
        );
    }
}
