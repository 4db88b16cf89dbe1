//! A cap on the query threads' CPU while the rest of the process is busy
//! (`query.max_share_under_load`).
//!
//! Why a cap and not only a priority: on two cores ingest leaves many short
//! gaps between its wake-ups (group fsyncs, HTTP round trips), and whatever
//! runs in them costs ingest more than the CPU time it takes — measured, a
//! busy loop at `SCHED_IDLE` in another process takes 0.47 cores of those
//! gaps and costs ingest a fifth of its rate, as much as a heavy query does
//! (docs/BENCHMARKS.md, "What a heavy query costs ingest"). The kernel's
//! priority decides who runs, not how often the caches are refilled, so the
//! only lever is running less often. While the process's other threads
//! (ingest, stream jobs, the HTTP server) use at least a quarter of the
//! cores, the query threads together may use at most
//! `max_share_under_load` of the cores: each scan of a query waits between
//! two batches of rows until the time its threads spent is paid back. On a
//! process that is otherwise idle queries run at full speed, and a query
//! never waits longer than [`MAX_WAIT`] at once.
//!
//! The query threads' CPU is read from each thread's own clock at every
//! batch a scan returns (the work between two batches on a thread is all
//! query work: nothing else runs on the query runtime); the rest of the
//! process is the process's clock minus that.

use std::cell::Cell;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result as DfResult;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::Stream;

/// How often the rest of the process's CPU is measured.
const WINDOW: Duration = Duration::from_millis(100);
/// The rest of the process is busy from this share of the cores on.
const BUSY_SHARE: f64 = 0.25;
/// The longest a scan waits at once (a batch that took long is paid back
/// over several waits, so the query still shows progress to the timeout).
pub(crate) const MAX_WAIT: Duration = Duration::from_millis(500);

/// The process's pacer: one budget for all query threads.
#[derive(Debug)]
pub(crate) struct Pacer {
    /// Cores the query threads may use while the process is busy.
    allowed_cores: f64,
    /// Cores the rest of the process must use to count as busy.
    busy_cores: f64,
    meter: Mutex<Meter>,
}

#[derive(Debug)]
struct Meter {
    /// CPU the query threads used, as their checkpoints reported it.
    query_ns: u64,
    window_began: Instant,
    process_ns_then: u64,
    query_ns_then: u64,
    busy: bool,
    /// Query CPU used beyond the allowance (ns), paid back as time passes.
    debt_ns: f64,
    paid_until: Instant,
}

impl Pacer {
    /// `share` of `cores` for the query threads while the rest of the
    /// process uses at least a quarter of them; `None` when `share` is 0 or
    /// at least 1 (no cap).
    pub(crate) fn new(share: f64, cores: usize) -> Option<Pacer> {
        if !(share > 0.0 && share < 1.0) {
            return None;
        }
        let now = Instant::now();
        Some(Pacer {
            allowed_cores: share * cores as f64,
            busy_cores: BUSY_SHARE * cores as f64,
            meter: Mutex::new(Meter {
                query_ns: 0,
                window_began: now,
                process_ns_then: process_cpu_ns(),
                query_ns_then: 0,
                busy: false,
                debt_ns: 0.0,
                paid_until: now,
            }),
        })
    }

    /// Called on a query thread after a scan's batch: counts the thread's
    /// CPU since its last checkpoint and answers how long the scan should
    /// wait before its next batch.
    pub(crate) fn checkpoint(&self) -> Option<Duration> {
        let used = thread_cpu_since_last_checkpoint();
        self.account(used, Instant::now(), process_cpu_ns)
    }

    /// The bookkeeping of [`Pacer::checkpoint`], with the clocks passed in.
    fn account(
        &self,
        used_ns: u64,
        now: Instant,
        process_ns: impl Fn() -> u64,
    ) -> Option<Duration> {
        let mut meter = self.meter.lock().unwrap_or_else(PoisonError::into_inner);
        meter.query_ns += used_ns;
        let elapsed = now.saturating_duration_since(meter.paid_until);
        meter.paid_until = now;
        if meter.busy {
            let allowance = self.allowed_cores * elapsed.as_nanos() as f64;
            meter.debt_ns = (meter.debt_ns + used_ns as f64 - allowance).max(0.0);
        }
        let wall = now.saturating_duration_since(meter.window_began);
        if wall >= WINDOW {
            let process = process_ns();
            let query = meter.query_ns - meter.query_ns_then;
            let rest = process
                .saturating_sub(meter.process_ns_then)
                .saturating_sub(query);
            meter.busy = rest as f64 >= self.busy_cores * wall.as_nanos() as f64;
            if !meter.busy {
                meter.debt_ns = 0.0;
            }
            meter.window_began = now;
            meter.process_ns_then = process;
            meter.query_ns_then = meter.query_ns;
        }
        if !meter.busy {
            return None;
        }
        // Less than the timer's resolution is not worth a wait.
        let wait = Duration::from_nanos((meter.debt_ns / self.allowed_cores) as u64);
        (wait >= Duration::from_millis(1)).then(|| wait.min(MAX_WAIT))
    }
}

fn nanos(time: rustix::time::Timespec) -> u64 {
    (time.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(time.tv_nsec as u64)
}

fn process_cpu_ns() -> u64 {
    nanos(rustix::time::clock_gettime(
        rustix::time::ClockId::ProcessCPUTime,
    ))
}

/// This thread's CPU since it last asked (all of it the first time: a
/// query thread runs nothing but queries).
fn thread_cpu_since_last_checkpoint() -> u64 {
    thread_local! {
        static LAST: Cell<u64> = const { Cell::new(0) };
    }
    let now = nanos(rustix::time::clock_gettime(
        rustix::time::ClockId::ThreadCPUTime,
    ));
    LAST.with(|last| now.saturating_sub(last.replace(now)))
}

/// `plan` with every scan paced by `pacer`.
pub(crate) fn paced(
    plan: Arc<dyn ExecutionPlan>,
    pacer: &'static Pacer,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if node.is::<DataSourceExec>() {
            Ok(Transformed::yes(
                Arc::new(PacedExec { input: node, pacer }) as Arc<dyn ExecutionPlan>
            ))
        } else {
            Ok(Transformed::no(node))
        }
    })
    .map(|transformed| transformed.data)
}

/// A scan whose batches are paced; otherwise its input unchanged.
#[derive(Debug)]
struct PacedExec {
    input: Arc<dyn ExecutionPlan>,
    pacer: &'static Pacer,
}

impl DisplayAs for PacedExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "PacedExec")
    }
}

impl ExecutionPlan for PacedExec {
    fn name(&self) -> &str {
        "PacedExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(PacedExec {
            input: children.swap_remove(0),
            pacer: self.pacer,
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        Ok(Box::pin(PacedStream {
            input: self.input.execute(partition, context)?,
            pacer: self.pacer,
            wait: None,
        }))
    }
}

struct PacedStream {
    input: SendableRecordBatchStream,
    pacer: &'static Pacer,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Stream for PacedStream {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(wait) = self.wait.as_mut() {
            ready!(wait.as_mut().poll(cx));
            self.wait = None;
        }
        let next = ready!(self.input.as_mut().poll_next(cx));
        if let Some(Ok(_)) = &next
            && let Some(wait) = self.pacer.checkpoint()
        {
            self.wait = Some(Box::pin(tokio::time::sleep(wait)));
        }
        Poll::Ready(next)
    }
}

impl RecordBatchStream for PacedStream {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pacer for 2 cores, 10 % for queries, busy from half a core.
    fn pacer() -> Pacer {
        Pacer::new(0.1, 2).unwrap()
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn no_cap_at_zero_or_a_whole_share() {
        assert!(Pacer::new(0.0, 2).is_none());
        assert!(Pacer::new(1.0, 2).is_none());
        assert!(Pacer::new(f64::NAN, 2).is_none());
    }

    #[test]
    fn an_idle_process_never_waits() {
        let pacer = pacer();
        let start = Instant::now();
        // The query alone uses both cores for a second: the process's
        // clock moves with the query's and nothing else.
        let mut process = pacer.meter.lock().unwrap().process_ns_then;
        for step in 1..=100u64 {
            process += 20 * MS;
            let now = start + Duration::from_millis(10 * step);
            assert_eq!(pacer.account(20 * MS, now, || process), None, "step {step}");
        }
    }

    #[test]
    fn a_busy_process_holds_queries_to_their_share() {
        let pacer = pacer();
        let start = Instant::now();
        let mut process = pacer.meter.lock().unwrap().process_ns_then;
        // Ingest uses 1.5 cores; the query has used 20 ms of CPU in each of
        // the last 10 ms (two threads).
        let mut waits = Vec::new();
        for step in 1..=30u64 {
            process += 15 * MS + 20 * MS;
            let now = start + Duration::from_millis(10 * step);
            waits.push(pacer.account(20 * MS, now, || process));
        }
        // The first window is measured before anything waits.
        assert!(waits[..9].iter().all(Option::is_none), "{waits:?}");
        // Then each batch's 20 ms at 0.2 cores is 100 ms of waiting, less
        // what time already paid back, growing with the debt up to the cap.
        let later: Vec<_> = waits[10..].iter().map(|w| w.unwrap()).collect();
        assert!(later[0] >= Duration::from_millis(50), "{later:?}");
        assert!(later.windows(2).all(|w| w[0] <= w[1]), "{later:?}");
        assert_eq!(*later.last().unwrap(), MAX_WAIT);
    }

    #[test]
    fn waiting_pays_the_debt_back() {
        let pacer = pacer();
        let start = Instant::now();
        let mut process = pacer.meter.lock().unwrap().process_ns_then;
        let mut now = start;
        for _ in 0..11 {
            process += 15 * MS + 20 * MS;
            now += Duration::from_millis(10);
            pacer.account(20 * MS, now, || process);
        }
        let wait = pacer.account(0, now, || process).unwrap();
        // After waiting that long, the next batch starts free of debt.
        now += wait;
        process += (15.0 * wait.as_millis() as f64 / 10.0) as u64 * MS;
        assert_eq!(pacer.account(0, now, || process), None);
    }

    #[test]
    fn the_cap_lifts_when_the_rest_of_the_process_quiets() {
        let pacer = pacer();
        let start = Instant::now();
        let mut process = pacer.meter.lock().unwrap().process_ns_then;
        let mut now = start;
        for _ in 0..11 {
            process += 15 * MS + 20 * MS;
            now += Duration::from_millis(10);
            pacer.account(20 * MS, now, || process);
        }
        assert!(pacer.account(0, now, || process).is_some());
        // Ingest stops; only the query runs for the next window.
        for _ in 0..11 {
            process += 20 * MS;
            now += Duration::from_millis(10);
            pacer.account(20 * MS, now, || process);
        }
        assert_eq!(pacer.account(0, now, || process), None);
    }

    #[tokio::test]
    async fn a_paced_plan_wraps_its_scans_and_a_scan_in_debt_waits() {
        use arrow::array::Int64Array;
        use datafusion::catalog::memory::MemorySourceConfig;
        use datafusion::physical_plan::{collect, displayable};

        let batch = RecordBatch::try_from_iter([(
            "n",
            Arc::new(Int64Array::from(vec![1, 2, 3])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let scan =
            MemorySourceConfig::try_new_exec(&[vec![batch.clone(), batch]], batch_schema(), None)
                .unwrap();
        let pacer: &'static Pacer = Box::leak(Box::new(pacer()));
        {
            // Busy, and 10 ms of query CPU over the allowance: 50 ms to wait
            // at 0.2 cores, less what passes before the first batch.
            let mut meter = pacer.meter.lock().unwrap();
            meter.busy = true;
            meter.debt_ns = 10.0 * MS as f64;
            meter.window_began = Instant::now() + Duration::from_secs(3600);
            meter.paid_until = Instant::now();
        }
        let plan = paced(scan, pacer).unwrap();
        let shown = displayable(plan.as_ref()).indent(false).to_string();
        assert!(shown.starts_with("PacedExec\n  DataSourceExec"), "{shown}");
        let began = Instant::now();
        let batches = collect(plan, Arc::new(TaskContext::default()))
            .await
            .unwrap();
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 6);
        assert!(
            began.elapsed() >= Duration::from_millis(40),
            "{:?}",
            began.elapsed()
        );
    }

    fn batch_schema() -> SchemaRef {
        Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("n", arrow::datatypes::DataType::Int64, true),
        ]))
    }

    #[test]
    fn a_thread_reports_its_own_cpu_once() {
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let first = thread_cpu_since_last_checkpoint();
        let second = thread_cpu_since_last_checkpoint();
        assert!(first >= 20 * MS, "{first}");
        assert!(second < first, "{second} after {first}");
    }
}
