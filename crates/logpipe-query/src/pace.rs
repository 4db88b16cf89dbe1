//! A cap on the query threads' CPU while the rest of the process is busy
//! (`query.max_share_under_load`).
//!
//! Why a cap and not only a priority: on two cores ingest leaves many short
//! gaps between its wake-ups (group fsyncs, HTTP round trips), and whatever
//! runs in them costs ingest more than the CPU time it takes — measured, two
//! busy loops at `SCHED_IDLE` in another process take 0.56 cores of those
//! gaps and cost ingest a fifth of its rate, as a heavy query at `SCHED_IDLE`
//! does (docs/BENCHMARKS.md, "What a heavy query costs ingest"). The
//! kernel's priority decides who runs, not how often the gaps are taken, so
//! the lever is running less often. While the process's other threads
//! (ingest, stream jobs, the HTTP server) use at least a quarter of the
//! cores, the query threads together may use about `max_share_under_load`
//! of the cores: every leaf of a query's plan (each scan, and the plans
//! that make rows without reading any) waits before its next batch until
//! the CPU its threads spent beyond that share is paid back, looking again
//! every [`MAX_WAIT`] at most. On a process that is otherwise idle queries
//! run at full speed.
//!
//! The query threads' CPU is what each thread reports of its own clock: at
//! every paced batch, when it parks and when it stops. Work between two
//! reports (a long sort, file reads on the blocking threads until they
//! stop) counts as the rest of the process until reported, and what a
//! batch did is charged after it: the cap is an average over windows of a
//! tenth of a second, not a hard limit. Only leaves wait, so such work is
//! paid by the next leaf that checks in (possibly another query's), and a
//! leaf that returned its last batch still waits out the debt before it
//! ends. Exact clocks of every query thread would need
//! `pthread_getcpuclockid` (foreign code the workspace does not allow).

use std::cell::Cell;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result as DfResult;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::Stream;

/// How often the rest of the process's CPU is measured.
const WINDOW: Duration = Duration::from_millis(100);
/// A meter not read for this long starts over (not busy, no debt): the
/// last queries' state says nothing about the next one's.
const STALE: Duration = Duration::from_secs(1);
/// The rest of the process is busy from this share of the cores on.
const BUSY_SHARE: f64 = 0.25;
/// The longest a scan sleeps at once before it looks again (the process
/// may have quieted meanwhile); it sleeps again while debt is left.
pub(crate) const MAX_WAIT: Duration = Duration::from_millis(250);

/// The process's pacer: one budget for all query threads.
#[derive(Debug)]
pub(crate) struct Pacer {
    /// Cores the query threads may use while the process is busy.
    allowed_cores: f64,
    /// Cores the rest of the process must use to count as busy.
    busy_cores: f64,
    /// CPU the query threads reported (each its own, at every paced batch,
    /// when it parks and when it stops).
    query_ns: AtomicU64,
    meter: Mutex<Meter>,
}

#[derive(Debug)]
struct Meter {
    /// `query_ns` already charged to the debt.
    charged_ns: u64,
    window_began: Instant,
    process_ns_then: u64,
    query_ns_then: u64,
    busy: bool,
    /// Query CPU used beyond the allowance (ns), paid back as time passes.
    debt_ns: f64,
    paid_until: Instant,
}

impl Meter {
    /// A meter starting at `now`: not busy, no debt, the clocks' readings
    /// as its baseline.
    fn fresh(now: Instant, process_ns: u64, query_ns: u64) -> Meter {
        Meter {
            charged_ns: query_ns,
            window_began: now,
            process_ns_then: process_ns,
            query_ns_then: query_ns,
            busy: false,
            debt_ns: 0.0,
            paid_until: now,
        }
    }
}

impl Pacer {
    /// `share` of `cores` for the query threads while the rest of the
    /// process uses at least a quarter of them; `None` when `share` is 0 or
    /// at least 1 (no cap).
    pub(crate) fn new(share: f64, cores: usize) -> Option<Pacer> {
        if !(share > 0.0 && share < 1.0) {
            return None;
        }
        Some(Pacer {
            allowed_cores: share * cores as f64,
            busy_cores: BUSY_SHARE * cores as f64,
            query_ns: AtomicU64::new(0),
            meter: Mutex::new(Meter::fresh(Instant::now(), process_cpu_ns(), 0)),
        })
    }

    /// Adds the calling query thread's CPU since it last reported (the
    /// runtime calls this when a query thread parks or stops).
    pub(crate) fn report_thread(&self) {
        self.report(thread_cpu_since_last_report());
    }

    fn report(&self, used_ns: u64) {
        self.query_ns.fetch_add(used_ns, Ordering::Relaxed);
    }

    /// Called on a query thread after a paced batch: reports the thread's
    /// CPU and answers how long the scan should wait before its next batch.
    pub(crate) fn checkpoint(&self) -> Option<Duration> {
        self.report_thread();
        self.account(Instant::now, process_cpu_ns)
    }

    /// [`Pacer::checkpoint`] as the sleep to take, if any.
    fn sleep_if_in_debt(&self) -> Option<Pin<Box<tokio::time::Sleep>>> {
        self.checkpoint()
            .map(|wait| Box::pin(tokio::time::sleep(wait)))
    }

    /// The bookkeeping of [`Pacer::checkpoint`], with the clocks passed in
    /// (read under the lock, so time never runs backwards here).
    fn account(
        &self,
        clock: impl Fn() -> Instant,
        process_ns: impl Fn() -> u64,
    ) -> Option<Duration> {
        let mut meter = self.meter.lock().unwrap_or_else(PoisonError::into_inner);
        let now = clock().max(meter.paid_until);
        let total = self.query_ns.load(Ordering::Relaxed);
        let fresh = total.saturating_sub(meter.charged_ns);
        meter.charged_ns = total;
        let wall = now.saturating_duration_since(meter.window_began);
        let elapsed = now.saturating_duration_since(meter.paid_until);
        if elapsed >= STALE {
            *meter = Meter::fresh(now, process_ns(), total);
            return None;
        }
        meter.paid_until = now;
        if meter.busy {
            let allowance = self.allowed_cores * elapsed.as_nanos() as f64;
            meter.debt_ns = (meter.debt_ns + fresh as f64 - allowance).max(0.0);
        }
        if wall >= WINDOW {
            let process = process_ns();
            let query = total.saturating_sub(meter.query_ns_then);
            let rest = process
                .saturating_sub(meter.process_ns_then)
                .saturating_sub(query);
            meter.busy = rest as f64 >= self.busy_cores * wall.as_nanos() as f64;
            if !meter.busy {
                meter.debt_ns = 0.0;
            }
            meter.window_began = now;
            meter.process_ns_then = process;
            meter.query_ns_then = total;
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
fn thread_cpu_since_last_report() -> u64 {
    thread_local! {
        static LAST: Cell<u64> = const { Cell::new(0) };
    }
    let now = nanos(rustix::time::clock_gettime(
        rustix::time::ClockId::ThreadCPUTime,
    ));
    LAST.with(|last| now.saturating_sub(last.replace(now)))
}

/// `plan` with every leaf paced by `pacer`: the scans, and the plans that
/// make rows without reading any (`generate_series`, `information_schema`).
pub(crate) fn paced(
    plan: Arc<dyn ExecutionPlan>,
    pacer: &'static Pacer,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if node.children().is_empty() {
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
        // Sleep until the debt is paid, looking again after each sleep.
        while let Some(wait) = self.wait.as_mut() {
            ready!(wait.as_mut().poll(cx));
            self.wait = self.pacer.sleep_if_in_debt();
        }
        let next = ready!(self.input.as_mut().poll_next(cx));
        if let Some(Ok(_)) = &next {
            self.wait = self.pacer.sleep_if_in_debt();
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

    /// A pacer for 2 cores, 10 % for queries (0.2 cores), busy from half a
    /// core.
    fn pacer() -> Pacer {
        Pacer::new(0.1, 2).unwrap()
    }

    const MS: u64 = 1_000_000;

    /// Steps of 10 ms from `start`: the query threads report `query` ms of
    /// CPU and the rest of the process uses `rest` ms; each step's answer.
    fn steps(
        pacer: &Pacer,
        start: Instant,
        process: &mut u64,
        range: std::ops::RangeInclusive<u64>,
        query: u64,
        rest: u64,
    ) -> Vec<Option<Duration>> {
        range
            .map(|step| {
                pacer.report(query * MS);
                *process += (query + rest) * MS;
                let now = start + Duration::from_millis(10 * step);
                let process = *process;
                pacer.account(|| now, || process)
            })
            .collect()
    }

    /// A pacer after 110 ms of ingest at 1.5 cores and the query at 2:
    /// busy from 100 ms on, its 10 ms steps' answers, its start and the
    /// process clock then.
    fn busy_for_110_ms() -> (Pacer, Vec<Option<Duration>>, Instant, u64) {
        let pacer = pacer();
        let start = start_of(&pacer);
        let mut process = process_then(&pacer);
        let waits = steps(&pacer, start, &mut process, 1..=11, 20, 15);
        (pacer, waits, start, process)
    }

    fn process_then(pacer: &Pacer) -> u64 {
        pacer.meter.lock().unwrap().process_ns_then
    }

    fn start_of(pacer: &Pacer) -> Instant {
        pacer.meter.lock().unwrap().window_began
    }

    #[test]
    fn no_cap_at_zero_or_a_whole_share() {
        assert!(Pacer::new(0.0, 2).is_none());
        assert!(Pacer::new(1.0, 2).is_none());
        assert!(Pacer::new(f64::NAN, 2).is_none());
    }

    #[test]
    fn an_idle_process_never_waits() {
        let pacer = pacer();
        let mut process = process_then(&pacer);
        // The query alone uses both cores for a second.
        let waits = steps(&pacer, start_of(&pacer), &mut process, 1..=100, 20, 0);
        assert!(waits.iter().all(Option::is_none), "{waits:?}");
    }

    #[test]
    fn a_busy_process_holds_queries_to_their_share() {
        let pacer = pacer();
        let mut process = process_then(&pacer);
        // Ingest uses 1.5 cores; the query 20 ms of CPU every 10 ms.
        let waits = steps(&pacer, start_of(&pacer), &mut process, 1..=30, 20, 15);
        // The first window is measured before anything waits.
        assert!(waits[..10].iter().all(Option::is_none), "{waits:?}");
        // Then 20 ms of CPU against 10 ms at 0.2 cores (2 ms) leaves 18 ms
        // of debt: 90 ms to wait at 0.2 cores; it grows to the longest sleep.
        let later: Vec<_> = waits[10..].iter().map(|w| w.unwrap()).collect();
        assert!(
            later[0] > Duration::from_millis(89) && later[0] < Duration::from_millis(91),
            "{later:?}"
        );
        assert!(later.windows(2).all(|w| w[0] <= w[1]), "{later:?}");
        assert_eq!(*later.last().unwrap(), MAX_WAIT);
    }

    #[test]
    fn waiting_pays_the_debt_back_once() {
        let (pacer, _, start, mut process) = busy_for_110_ms();
        let now = start + Duration::from_millis(110);
        let wait = pacer.account(|| now, || process).unwrap();
        // A clock read late (another thread's) neither pays nor adds.
        let earlier = now - Duration::from_millis(50);
        assert_eq!(pacer.account(|| earlier, || process), Some(wait));
        // Half the wait later, half of it is left.
        let halfway = now + wait / 2;
        let left = pacer.account(|| halfway, || process).unwrap();
        assert!(
            left > wait / 2 - Duration::from_millis(1)
                && left < wait / 2 + Duration::from_millis(1),
            "{left:?} of {wait:?}"
        );
        // After waiting that long the next batch starts free of debt, the
        // rest of the process still busy meanwhile.
        let after = now + wait;
        process += (1.5 * wait.as_nanos() as f64) as u64;
        assert_eq!(pacer.account(|| after, || process), None);
        assert!(pacer.meter.lock().unwrap().busy);
    }

    #[test]
    fn the_cap_lifts_when_the_rest_of_the_process_quiets() {
        let (pacer, busy, start, mut process) = busy_for_110_ms();
        assert!(busy.last().unwrap().is_some());
        // Ingest stops; only the query runs for the next window.
        let quiet = steps(&pacer, start, &mut process, 12..=22, 20, 0);
        assert_eq!(*quiet.last().unwrap(), None);
    }

    #[test]
    fn a_meter_left_alone_starts_over() {
        let (pacer, busy, start, mut process) = busy_for_110_ms();
        assert!(busy[10].is_some());
        // No query for two seconds (ingest went on): the next one starts
        // at full speed and is measured afresh.
        let later = start + Duration::from_millis(2110);
        process += 3000 * MS;
        assert_eq!(pacer.account(|| later, || process), None);
        assert!(!pacer.meter.lock().unwrap().busy);
    }

    #[tokio::test]
    async fn a_paced_plan_wraps_its_leaves_and_a_leaf_in_debt_waits() {
        use arrow::array::Int64Array;
        use datafusion::catalog::memory::MemorySourceConfig;
        use datafusion::physical_plan::{collect, displayable};

        let batch = RecordBatch::try_from_iter([(
            "n",
            Arc::new(Int64Array::from(vec![1, 2, 3])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let scan = MemorySourceConfig::try_new_exec(&[vec![batch]], batch_schema(), None).unwrap();
        let pacer: &'static Pacer = Box::leak(Box::new(pacer()));
        let plan = paced(scan, pacer).unwrap();
        let shown = displayable(plan.as_ref()).indent(false).to_string();
        assert!(shown.starts_with("PacedExec\n  DataSourceExec"), "{shown}");
        // A leaf that reads nothing is paced too.
        let placeholder = Arc::new(
            datafusion::physical_plan::placeholder_row::PlaceholderRowExec::new(batch_schema()),
        );
        let shown = displayable(paced(placeholder, pacer).unwrap().as_ref())
            .indent(false)
            .to_string();
        assert!(
            shown.starts_with("PacedExec\n  PlaceholderRowExec"),
            "{shown}"
        );
        // Busy, and 100 ms of query CPU over the allowance: 500 ms to wait
        // at 0.2 cores, in sleeps of at most MAX_WAIT (this thread's
        // earlier CPU already reported).
        thread_cpu_since_last_report();
        let began = Instant::now();
        {
            let mut meter = pacer.meter.lock().unwrap();
            meter.busy = true;
            meter.debt_ns = 100.0 * MS as f64;
            // No window ends during the test: this test process is not
            // busy, and a measured window would lift the cap.
            meter.window_began = began + Duration::from_secs(3600);
            meter.paid_until = began;
        }
        let batches = collect(plan, Arc::new(TaskContext::default()))
            .await
            .unwrap();
        // One batch: its whole debt is waited out after it, before the end.
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
        assert!(
            began.elapsed() >= Duration::from_millis(450),
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
        let clock = || {
            nanos(rustix::time::clock_gettime(
                rustix::time::ClockId::ThreadCPUTime,
            ))
        };
        let spun = clock();
        let mut x = 0u64;
        while clock() - spun < 20 * MS {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let first = thread_cpu_since_last_report();
        let second = thread_cpu_since_last_report();
        assert!(first >= 20 * MS, "{first}");
        assert!(second < first, "{second} after {first}");
    }
}
