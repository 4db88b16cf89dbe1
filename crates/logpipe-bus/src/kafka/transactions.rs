//! Producing in Kafka transactions, so a refused request leaves nothing a
//! reader will ever see.
//!
//! **Why.** An idempotent producer that times out cannot take back the
//! records the broker already wrote: a 503 then meant "maybe", and a client
//! that retried as told doubled them (761 of 1,000 "refused" records reached
//! the lake in one broker-kill run). Here every request's records are
//! written inside a transaction that is committed before the collector
//! answers 2xx and aborted before it answers 503; logpipe's readers (and any
//! reader with `isolation.level=read_committed`) never see aborted records.
//!
//! **Group commit.** One writer thread owns the transactional producer.
//! Requests queue for it (bounded: a full queue is `Busy`, nothing sent);
//! it takes every waiting request into one transaction, sends their records,
//! and commits, then answers them all. Like the embedded bus's shared fsync,
//! this keeps the cost per request small under load.
//!
//! **The truth of an answer.** A commit whose outcome is not known yet (the
//! coordinator did not answer in time) is retried until it is: the requests
//! wait rather than be told 503 for records that may be committed. A
//! transaction that must be aborted is aborted (and the abort confirmed)
//! before its requests get 503. Requests still queued behind a transaction
//! that waits for unresponsive brokers are withdrawn after
//! `delivery_timeout` and answered 503 unsent ([`WITHDRAWN`]), so an outage
//! costs them a prompt 503, not a wait as long as the outage. A collector
//! that dies mid-transaction leaves it open until a producer with the same
//! `transactional.id` starts (the same collector restarted: at once) or the
//! broker's `transaction.timeout.ms` passes; until then `read_committed`
//! readers wait at it, so they never see its records.
//!
//! **Waiting for deliveries.** Before each commit the writer waits until
//! every record has its delivery report ([`Deliveries`]): rust-rdkafka's
//! `commit_transaction` otherwise sleeps in 100 ms steps for them (measured:
//! 104 ms per single-record request, 10–18 ms with the wait).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use logpipe_config::KafkaBusConfig;
use logpipe_core::partition::partition_for_key;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use tokio::sync::oneshot;

use super::context::{LogContext, client_config};
use super::headers::kafka_headers;
use super::{kafka_error, lock};
use crate::metrics::bus_metrics;
use crate::{BusError, BusRecord, Result};

/// Requests waiting for the writer; past this the collector answers 503
/// at once (nothing was sent). 256 requests of up to 16 MiB bound the
/// queue's memory as the embedded bus's writer queue does.
const QUEUED_REQUESTS: usize = 256;
/// Writer threads, each with its own transactional producer
/// (`<id>-0`, `<id>-1`): while one waits for its transaction's records and
/// commit, the other takes the requests that arrived meanwhile. One
/// producer has one transaction at a time, and the coordinator refuses the
/// next one's partitions until the previous commit's markers are written
/// (`CONCURRENT_TRANSACTIONS`, retried after a backoff), so a single writer
/// spent most of its time waiting.
const WRITERS: usize = 2;
/// Records one transaction takes at most (its requests' records all go in
/// before the commit, so a huge group would delay every answer in it).
const RECORDS_PER_TRANSACTION: usize = 200_000;
/// Between retries of a commit or an abort whose outcome is not known.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How long a writer waits for a request before it looks again (only so
/// that it notices the bus closing).
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Longest wait for the last delivery report's message to be released
/// after its callback ran (see [`Deliveries`]).
const RELEASE_WAIT: Duration = Duration::from_millis(5);

/// The records a writer has sent and not yet had a delivery report for,
/// counted in the producer's delivery callback (which runs on
/// rust-rdkafka's polling thread).
///
/// Why the writer waits on this before `commit_transaction`: that call
/// first flushes, and rust-rdkafka's flush sleeps in steps of 100 ms while
/// any report is outstanding, which put 100 ms on every answer. Waiting
/// here (a condition variable: no polling, no spinning) makes the flush
/// find nothing to wait for.
#[derive(Default)]
struct Deliveries {
    pending: Mutex<usize>,
    done: Condvar,
}

impl Deliveries {
    fn sent(&self) {
        *lock(&self.pending) += 1;
    }

    /// A record counted by [`Deliveries::sent`] that the producer refused.
    fn unsent(&self) {
        let mut pending = lock(&self.pending);
        *pending = pending.saturating_sub(1);
    }

    /// Waits until every report is in, or `deadline`.
    fn wait(&self, deadline: Instant) {
        let mut pending = lock(&self.pending);
        while *pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            pending = match self.done.wait_timeout(pending, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// The transactional producer's context: librdkafka's log as every
/// client's, and the delivery count. A failed record needs no handling
/// here: the commit reports it.
#[derive(Clone)]
struct WriterContext {
    log: LogContext,
    deliveries: Arc<Deliveries>,
}

impl ClientContext for WriterContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ProducerContext for WriterContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {
        let mut pending = lock(&self.deliveries.pending);
        *pending = pending.saturating_sub(1);
        if *pending == 0 {
            self.deliveries.done.notify_all();
        }
    }
}

type TxnProducer = ThreadedProducer<WriterContext>;

/// One request's records for one topic.
struct Append {
    topic: String,
    partitions: u32,
    records: Vec<BusRecord>,
    reply: oneshot::Sender<Result<()>>,
    /// [`QUEUED`], [`TAKEN`] or [`WITHDRAWN`].
    state: Arc<AtomicU8>,
}

/// A request waits in the queue…
const QUEUED: u8 = 0;
/// …until the writer takes it into a transaction (its answer is then the
/// transaction's outcome)…
const TAKEN: u8 = 1;
/// …or its wait ran out first: answered 503, and nothing of it is sent.
/// While a transaction waits for brokers that do not answer, the requests
/// queued behind it so get their 503 after `delivery_timeout` instead of
/// waiting out the outage.
const WITHDRAWN: u8 = 2;

/// The handle of the writer thread (which ends when this is dropped).
pub(super) struct TransactionalWriter {
    requests: SyncSender<Append>,
    /// How long a request may wait in the queue (`delivery_timeout`).
    queue_wait: Duration,
}

/// The producer settings of a transactional producer.
fn new_transactional_producer(
    options: &KafkaBusConfig,
    context: &LogContext,
    transactional_id: &str,
) -> Result<(TxnProducer, Arc<Deliveries>)> {
    let deliveries = Arc::new(Deliveries::default());
    let context = WriterContext {
        log: context.clone(),
        deliveries: deliveries.clone(),
    };
    // librdkafka refuses a message timeout longer than the transaction's.
    let transaction_timeout = options.transaction_timeout.max(options.delivery_timeout);
    client_config(
        options,
        &[
            ("transactional.id", transactional_id.to_string()),
            ("enable.idempotence", "true".into()),
            ("acks", "all".into()),
            (
                "message.timeout.ms",
                options.delivery_timeout.as_millis().to_string(),
            ),
            (
                "transaction.timeout.ms",
                transaction_timeout.as_millis().to_string(),
            ),
            // The writer gathers a whole group before it sends: waiting
            // for more records to batch only delays the commit.
            ("linger.ms", "0".into()),
            // The coordinator refuses a transaction's partitions until the
            // previous commit's markers are written; librdkafka retries
            // after this (100 ms by default, which became the latency of
            // every other request).
            ("retry.backoff.ms", "10".into()),
            ("client.id", transactional_id.to_string()),
        ],
    )
    .create_with_context(context)
    .map(|producer| (producer, deliveries))
    .map_err(|e| kafka_error("cannot create the transactional Kafka producer", e))
}

/// How long registering the id may keep being retried at start (a fresh
/// cluster creates its transaction log on the first request).
const REGISTER_FOR: Duration = Duration::from_secs(30);

/// Registers `id` with the cluster (fencing an older producer with the
/// same id and ending its open transaction), asking again while the
/// answer is "not yet".
fn init(producer: &TxnProducer, options: &KafkaBusConfig, id: &str) -> Result<()> {
    let deadline = Instant::now() + REGISTER_FOR;
    let timeout = options.delivery_timeout.max(Duration::from_secs(10));
    loop {
        let error = match producer.init_transactions(timeout) {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        let unsupported = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::UnsupportedVersion
                    | RDKafkaErrorCode::UnsupportedForMessageFormat
                    | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
            )
        );
        if unsupported {
            return Err(BusError::Misconfigured(format!(
                "the Kafka brokers at {} do not let logpipe use transactions \
                 (transactional.id {id:?}): {error}. logpipe writes each request in a \
                 transaction so that a refused request leaves nothing behind; on brokers \
                 without transactions (or without the ACL for the id) set \
                 bus.kafka.transactions = false, and a 503 then means \"maybe stored\"",
                options.brokers
            )));
        }
        let retriable = matches!(&error, KafkaError::Transaction(e) if e.is_retriable());
        if !retriable || Instant::now() >= deadline {
            return Err(BusError::Kafka(format!(
                "registering the transactional producer {id:?} with the brokers at {} failed: {error}",
                options.brokers
            )));
        }
        tracing::info!(transactional_id = id, %error, "the transaction coordinator is not ready yet; asking again");
        std::thread::sleep(RETRY_PAUSE);
    }
}

impl TransactionalWriter {
    /// Creates the producer, registers its id with the cluster (the start-up
    /// check that the brokers support transactions) and starts the writer.
    pub(super) fn start(
        options: &KafkaBusConfig,
        context: &LogContext,
        transactional_id: String,
    ) -> Result<TransactionalWriter> {
        let (requests, receiver) = sync_channel(QUEUED_REQUESTS);
        let receiver = Arc::new(Mutex::new(receiver));
        let ids: Vec<String> = (0..WRITERS)
            .map(|n| format!("{transactional_id}-{n}"))
            .collect();
        for id in &ids {
            let (producer, deliveries) = new_transactional_producer(options, context, id)?;
            init(&producer, options, id)?;
            let writer = Writer {
                producer,
                deliveries,
                options: options.clone(),
                context: context.clone(),
                id: id.clone(),
            };
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name("logpipe-kafka-txn".into())
                .spawn(move || writer.run(&receiver))
                .map_err(|e| {
                    BusError::Kafka(format!("cannot start the transaction writer: {e}"))
                })?;
        }
        tracing::info!(
            transactional_ids = ?ids,
            "producing in Kafka transactions (a refused request leaves nothing behind)"
        );
        Ok(TransactionalWriter {
            requests,
            queue_wait: options.delivery_timeout,
        })
    }

    /// Appends `records` in the next transaction; resolves once it is
    /// committed (`Ok`) or aborted (`Busy`: nothing of it will be read).
    pub(super) async fn append(
        &self,
        topic: &str,
        partitions: u32,
        records: Vec<BusRecord>,
    ) -> Result<()> {
        let (reply, mut answer) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        let append = Append {
            topic: topic.to_string(),
            partitions,
            records,
            reply,
            state: state.clone(),
        };
        match self.requests.try_send(append) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(BusError::Busy(format!(
                    "{QUEUED_REQUESTS} requests already wait for the Kafka transaction writer"
                )));
            }
            Err(TrySendError::Disconnected(_)) => return Err(BusError::Closed),
        }
        if let Ok(answer) = tokio::time::timeout(self.queue_wait, &mut answer).await {
            return answer.map_err(|_| BusError::Closed)?;
        }
        let withdrawn = state
            .compare_exchange(QUEUED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if withdrawn {
            return Err(BusError::Busy(format!(
                "the Kafka brokers have not finished the transaction before this request \
                 within {:?}; nothing of this request was sent",
                self.queue_wait
            )));
        }
        // In a transaction already: its outcome is the answer.
        answer.await.map_err(|_| BusError::Closed)?
    }
}

/// Waits for a request, then takes it and every request queued behind it
/// (up to [`RECORDS_PER_TRANSACTION`] records) that was not withdrawn.
fn take_group(receiver: &Receiver<Append>) -> std::result::Result<Vec<Append>, RecvTimeoutError> {
    let mut next = Some(receiver.recv_timeout(IDLE_WAIT)?);
    let mut group = Vec::new();
    let mut records = 0;
    while let Some(append) = next {
        let taken = append
            .state
            .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if taken {
            records += append.records.len();
            group.push(append);
        }
        next = match records < RECORDS_PER_TRANSACTION {
            true => receiver.try_recv().ok(),
            false => None,
        };
    }
    Ok(group)
}

/// A writer thread's state.
struct Writer {
    producer: TxnProducer,
    deliveries: Arc<Deliveries>,
    options: KafkaBusConfig,
    context: LogContext,
    id: String,
}

/// A transaction that did not commit: aborted, and the abort confirmed
/// (nothing of it will be read), for the reason given.
struct Aborted(String);

impl Writer {
    fn run(mut self, receiver: &Mutex<Receiver<Append>>) {
        loop {
            let group = match take_group(&lock(receiver)) {
                Ok(group) => group,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            if group.is_empty() {
                continue;
            }
            let outcome = self.transaction(&group);
            let metrics = bus_metrics();
            match &outcome {
                Ok(()) => {
                    metrics.transactions.inc(&["committed"]);
                    metrics.transaction_requests.add(group.len() as u64);
                    for append in &group {
                        metrics
                            .records_appended
                            .add(&[&append.topic], append.records.len() as u64);
                    }
                }
                Err(_) => metrics.transactions.inc(&["aborted"]),
            }
            for append in group {
                let answer = match &outcome {
                    Ok(()) => Ok(()),
                    Err(Aborted(reason)) => Err(BusError::Busy(format!(
                        "the Kafka transaction was aborted ({reason}); nothing in it will be read"
                    ))),
                };
                let _ = append.reply.send(answer);
            }
        }
    }

    /// One transaction with every record of `group`.
    fn transaction(&mut self, group: &[Append]) -> std::result::Result<(), Aborted> {
        if let Err(error) = self.producer.begin_transaction() {
            // Only a producer in a bad state refuses to begin: start anew.
            self.replace(&error);
            return Err(Aborted(format!("could not begin: {error}")));
        }
        let deadline = Instant::now() + self.options.delivery_timeout;
        for append in group {
            for record in &append.records {
                if let Err(reason) = self.send(append, record, deadline) {
                    return Err(self.abort(reason));
                }
            }
        }
        self.await_deliveries(deadline);
        self.commit()
    }

    /// Queues one record, waiting while the local queue is full.
    fn send(
        &self,
        append: &Append,
        record: &BusRecord,
        deadline: Instant,
    ) -> std::result::Result<(), String> {
        let partition = partition_for_key(&record.key, append.partitions) as i32;
        loop {
            let mut message = BaseRecord::to(&append.topic)
                .partition(partition)
                .key(&record.key[..])
                .payload(&record.value[..]);
            if !record.headers.is_empty() {
                message = message.headers(kafka_headers(&record.headers));
            }
            // Counted first: the report may arrive before `send` returns.
            self.deliveries.sent();
            match self.producer.send(message) {
                // The commit reports any record that failed.
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if Instant::now() < deadline =>
                {
                    self.deliveries.unsent();
                    // Delivery reports free the queue.
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => {
                    self.deliveries.unsent();
                    return Err(format!("the producer refused a record: {error}"));
                }
            }
        }
    }

    /// Waits until every record sent has its delivery report (or
    /// `deadline`), and librdkafka has released the last one.
    fn await_deliveries(&self, deadline: Instant) {
        self.deliveries.wait(deadline);
        let released = Instant::now() + RELEASE_WAIT;
        while self.producer.in_flight_count() > 0 && Instant::now() < released {
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Commits; on a commit whose outcome is not known yet, asks again
    /// until it is.
    fn commit(&mut self) -> std::result::Result<(), Aborted> {
        let mut warned = false;
        loop {
            match self
                .producer
                .commit_transaction(self.options.delivery_timeout)
            {
                Ok(()) => return Ok(()),
                Err(KafkaError::Transaction(error)) if error.is_retriable() => {
                    if !warned {
                        tracing::warn!(
                            transactional_id = self.id,
                            %error,
                            "a Kafka commit's outcome is not known yet; the requests in it wait until it is"
                        );
                        warned = true;
                    }
                    std::thread::sleep(RETRY_PAUSE);
                }
                Err(KafkaError::Transaction(error)) if error.txn_requires_abort() => {
                    return Err(self.abort(error.to_string()));
                }
                Err(error) => {
                    // Fatal: the producer was fenced (another with this id
                    // started, which ended this transaction) or broke.
                    self.replace(&error);
                    return Err(Aborted(format!("the commit failed for good: {error}")));
                }
            }
        }
    }

    /// Aborts the open transaction and waits until the abort is confirmed.
    fn abort(&mut self, reason: String) -> Aborted {
        loop {
            match self
                .producer
                .abort_transaction(self.options.delivery_timeout)
            {
                Ok(()) => {
                    // A record of the aborted transaction still on its way
                    // to a broker (its request timed out here, not there)
                    // would otherwise be taken into this producer's next
                    // transaction: Kafka's transaction protocol v1, the one
                    // librdkafka speaks, keeps the epoch across
                    // transactions (KIP-890 part 2 bumps it; librdkafka
                    // does not have it yet). A new producer registering the
                    // id bumps the epoch, and the brokers refuse such a
                    // late record.
                    self.renew();
                    return Aborted(reason);
                }
                Err(KafkaError::Transaction(error)) if error.is_retriable() => {
                    std::thread::sleep(RETRY_PAUSE);
                }
                Err(error) => {
                    // A producer that cannot abort is replaced; registering
                    // its successor ends the open transaction (aborted: it
                    // was never committed).
                    self.replace(&error);
                    return Aborted(reason);
                }
            }
        }
    }

    /// A new producer with the same id, registered (which ends this one's
    /// open transaction); retried until the cluster answers.
    fn replace(&mut self, error: &KafkaError) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::ProducerFenced) {
            // Normal after a coordinator moved; repeated, it means two
            // running processes share this id and take turns fencing.
            tracing::error!(
                transactional_id = self.id,
                %error,
                "another producer registered this transactional.id; if this repeats, two running \
                 processes use it: give each its own bus.kafka.transactional_id_prefix (or listen port)"
            );
        } else {
            tracing::warn!(transactional_id = self.id, %error, "replacing the transactional Kafka producer");
        }
        self.renew();
    }

    /// A new producer with the same id, registered: a new epoch, which
    /// fences this one (and ends its open transaction, if any); retried
    /// until the cluster answers.
    fn renew(&mut self) {
        loop {
            let made = new_transactional_producer(&self.options, &self.context, &self.id)
                .and_then(|made| init(&made.0, &self.options, &self.id).map(|()| made));
            match made {
                Ok((producer, deliveries)) => {
                    self.producer = producer;
                    self.deliveries = deliveries;
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "could not register a new transactional producer yet");
                    std::thread::sleep(RETRY_PAUSE * 4);
                }
            }
        }
    }
}
