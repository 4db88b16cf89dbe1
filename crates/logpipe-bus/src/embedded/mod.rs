//! The embedded bus: a partitioned append-only log on local disk.
//!
//! Layout: `ROOT/<topic>/topic.json` (partition count) and
//! `ROOT/<topic>/<partition>/<base_offset:020>.log` segment files in the
//! [`format`] batch format; consumer-group progress in
//! `ROOT/_offsets/<group>.json`; `ROOT/.lock` keeps a second process out.
//!
//! One writer thread owns every file handle that is written. Appends reach it
//! through a bounded queue (full → [`BusError::Busy`], which the collector
//! turns into 503 + `Retry-After`). It takes whatever requests are waiting,
//! writes one batch per partition, fsyncs each touched file once for the
//! whole group (group commit), and only then makes the records visible to
//! readers and acknowledges the requests. Readers therefore never see a
//! record that a crash could take back, so nothing downstream gets ahead of
//! the disk. With `fsync = "interval"` requests are acknowledged once
//! written and become visible at the next periodic fsync.
//!
//! Recovery at open scans the active segment, checks each batch's CRC and
//! truncates at the first torn or corrupt batch: such a batch was never
//! acknowledged, so truncating it loses nothing that was promised. Unless
//! intact batches follow it: then the file was damaged after it was
//! written (a bad disk, a stray write), cutting it would drop acknowledged
//! records, and the open fails naming the file, the byte and what to do.
//!
//! | file | what |
//! |---|---|
//! | [`format`] | the batch format on disk (magic, CRC, records) |
//! | `segment.rs` | segment files, recovery at open |
//! | `partition_log.rs` | one partition: segments, visible end, reads |
//! | `recent.rs` | the newest batches in memory for readers at the end |
//! | `writer.rs` | the writer thread: group commit, visibility, acks |
//! | `consumer.rs` | reading every partition in one process |
//! | `offsets.rs` | consumer-group progress files |
//! | `retention.rs` | deleting old segments |

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::path::PathBuf;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use logpipe_config::EmbeddedBusConfig;
use tokio::sync::{oneshot, watch};

use crate::embedded::consumer::EmbeddedConsumer;
use crate::embedded::partition_log::PartitionLog;
use crate::embedded::retention::enforce_retention;
use crate::embedded::segment::sync_dir;
use crate::embedded::writer::writer_loop;
use crate::{
    Bus, BusError, BusRecord, ConsumedRecord, Consumer, Result, TopicPartition, TopicSpec,
};

pub mod check;
mod consumer;
pub mod format;
mod offsets;
mod partition_log;
mod recent;
mod retention;
mod segment;
mod writer;

struct TopicLog {
    name: String,
    partitions: Vec<Arc<PartitionLog>>,
    retention: Duration,
    retention_bytes: u64,
}

struct AppendRequest {
    topic: Arc<TopicLog>,
    /// (partition, record)
    records: Vec<(u32, BusRecord)>,
    reply: oneshot::Sender<Result<()>>,
}

enum WriterMessage {
    Append(AppendRequest),
    Stop,
}

struct Inner {
    root: PathBuf,
    options: EmbeddedBusConfig,
    topics: RwLock<HashMap<String, Arc<TopicLog>>>,
    sender: SyncSender<WriterMessage>,
    /// Bumped whenever records become visible; consumers wait on it.
    progress: watch::Sender<u64>,
    writer: Mutex<Option<JoinHandle<()>>>,
    _lock: File,
}

/// The embedded on-disk bus. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct EmbeddedBus {
    inner: Arc<Inner>,
}

fn lock_poisoned<T>(_: T) -> BusError {
    BusError::Corrupt("internal lock poisoned by a panic".to_string())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && !name.starts_with('_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl EmbeddedBus {
    /// Opens the bus rooted at `root` (created if missing), recovering any
    /// existing topics, and starts the writer thread.
    pub fn open(root: impl Into<PathBuf>, options: &EmbeddedBusConfig) -> Result<EmbeddedBus> {
        let options = options.clone();
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| BusError::io(&root, e))?;
        let lock_path = root.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| BusError::io(&lock_path, e))?;
        if lock.try_lock().is_err() {
            return Err(BusError::Locked(root.display().to_string()));
        }
        let (sender, receiver) = sync_channel(options.max_pending_appends.max(1));
        let (progress, _) = watch::channel(0u64);
        let inner = Arc::new(Inner {
            root,
            options,
            topics: RwLock::new(HashMap::new()),
            sender,
            progress,
            writer: Mutex::new(None),
            _lock: lock,
        });
        let writer_inner = Arc::downgrade(&inner);
        let handle = std::thread::Builder::new()
            .name("logpipe-bus-writer".to_string())
            .spawn(move || writer_loop(writer_inner, receiver))
            .map_err(|e| BusError::io("writer thread", e))?;
        *inner.writer.lock().map_err(lock_poisoned)? = Some(handle);
        Ok(EmbeddedBus { inner })
    }

    /// Stops the writer after the appends already queued, fsyncing them.
    pub fn shutdown(&self) {
        let _ = self.inner.sender.send(WriterMessage::Stop);
        if let Ok(mut writer) = self.inner.writer.lock()
            && let Some(handle) = writer.take()
        {
            let _ = handle.join();
        }
    }

    fn topic(&self, name: &str) -> Result<Arc<TopicLog>> {
        self.inner
            .topics
            .read()
            .map_err(lock_poisoned)?
            .get(name)
            .cloned()
            .ok_or_else(|| BusError::UnknownTopic(name.to_string()))
    }

    /// Applies retention now (the writer also does so periodically).
    pub fn enforce_retention(&self) -> Result<()> {
        let topics: Vec<Arc<TopicLog>> = self
            .inner
            .topics
            .read()
            .map_err(lock_poisoned)?
            .values()
            .cloned()
            .collect();
        for topic in topics {
            for partition in &topic.partitions {
                enforce_retention(&topic, partition)?;
            }
        }
        Ok(())
    }

    /// Reads `partition` of `topic` from `offset` (visible records only).
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_records: usize,
    ) -> Result<Vec<ConsumedRecord>> {
        let topic_log = self.topic(topic)?;
        let log = topic_log
            .partitions
            .get(partition as usize)
            .ok_or_else(|| BusError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            })?;
        log.read(offset, max_records)
    }

    fn offsets_path(&self, group: &str) -> PathBuf {
        let safe: String = group
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.inner
            .root
            .join("_offsets")
            .join(format!("{safe}.json"))
    }

    /// Committed progress of `group`: topic → partition → next offset.
    pub fn committed(&self, group: &str) -> Result<BTreeMap<String, BTreeMap<u32, u64>>> {
        let path = self.offsets_path(group);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| BusError::Corrupt(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(BusError::io(&path, e)),
        }
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn create_topics(&self, specs: &[TopicSpec]) -> Result<()> {
        for spec in specs {
            if !valid_topic_name(&spec.name) {
                return Err(BusError::Corrupt(format!(
                    "invalid topic name {:?}: use letters, digits, '.', '_' and '-'",
                    spec.name
                )));
            }
            if self
                .inner
                .topics
                .read()
                .map_err(lock_poisoned)?
                .contains_key(&spec.name)
            {
                continue;
            }
            let dir = self.inner.root.join(&spec.name);
            let meta_path = dir.join("topic.json");
            let partitions = match fs::read(&meta_path) {
                Ok(bytes) => {
                    let meta: serde_json::Value = serde_json::from_slice(&bytes)
                        .map_err(|e| BusError::Corrupt(format!("{}: {e}", meta_path.display())))?;
                    let stored = meta["partitions"].as_u64().ok_or_else(|| {
                        BusError::Corrupt(format!("{} has no partition count", meta_path.display()))
                    })? as u32;
                    if stored != spec.partitions {
                        tracing::warn!(
                            topic = %spec.name,
                            stored,
                            configured = spec.partitions,
                            "topic exists with a different partition count; keeping {stored} so keys stay in their partitions"
                        );
                    }
                    stored
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    fs::create_dir_all(&dir).map_err(|e| BusError::io(&dir, e))?;
                    let tmp = dir.join("topic.json.tmp");
                    let body = serde_json::json!({ "partitions": spec.partitions }).to_string();
                    fs::write(&tmp, body).map_err(|e| BusError::io(&tmp, e))?;
                    fs::rename(&tmp, &meta_path).map_err(|e| BusError::io(&meta_path, e))?;
                    sync_dir(&dir)?;
                    spec.partitions
                }
                Err(e) => return Err(BusError::io(&meta_path, e)),
            };
            let name = spec.name.clone();
            let topic_dir = dir.clone();
            let partitions_logs = tokio::task::spawn_blocking(move || {
                (0..partitions)
                    .map(|p| {
                        PartitionLog::open(&name, p, topic_dir.join(p.to_string())).map(Arc::new)
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .await
            .map_err(|e| BusError::Corrupt(format!("recovery task failed: {e}")))??;
            let topic = TopicLog {
                name: spec.name.clone(),
                partitions: partitions_logs,
                retention: spec.retention,
                retention_bytes: spec.retention_bytes,
            };
            self.inner
                .topics
                .write()
                .map_err(lock_poisoned)?
                .insert(spec.name.clone(), Arc::new(topic));
        }
        Ok(())
    }

    fn partitions(&self, topic: &str) -> Result<u32> {
        Ok(self.topic(topic)?.partitions.len() as u32)
    }

    async fn append(&self, topic: &str, records: Vec<BusRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let topic = self.topic(topic)?;
        let partitions = topic.partitions.len() as u32;
        let records = records
            .into_iter()
            .map(|record| {
                (
                    logpipe_core::partition::partition_for_key(&record.key, partitions),
                    record,
                )
            })
            .collect();
        let (reply, wait) = oneshot::channel();
        let request = AppendRequest {
            topic,
            records,
            reply,
        };
        match self.inner.sender.try_send(WriterMessage::Append(request)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(BusError::Busy(format!(
                    "{} appends already waiting for the disk",
                    self.inner.options.max_pending_appends
                )));
            }
            Err(TrySendError::Disconnected(_)) => return Err(BusError::Closed),
        }
        wait.await.map_err(|_| BusError::Closed)?
    }

    async fn consumer(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>> {
        let committed = self.committed(group)?;
        let mut positions = BTreeMap::new();
        let mut topic_logs = HashMap::new();
        for name in topics {
            let topic = self.topic(name)?;
            for log in &topic.partitions {
                let (start, _) = log.bounds();
                // No committed position: start from the earliest kept record
                // (the seed's lesson: reading "latest" skips existing data).
                let from = committed
                    .get(*name)
                    .and_then(|p| p.get(&log.partition))
                    .copied()
                    .unwrap_or(start);
                positions.insert(
                    TopicPartition {
                        topic: name.to_string(),
                        partition: log.partition,
                    },
                    from,
                );
            }
            topic_logs.insert(name.to_string(), topic);
        }
        Ok(Box::new(EmbeddedConsumer {
            bus: self.clone(),
            group: group.to_string(),
            topics: topic_logs,
            positions,
            progress: self.inner.progress.subscribe(),
        }))
    }

    /// The embedded bus has no group balancing: a reader is a consumer.
    async fn reader(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>> {
        self.consumer(group, topics).await
    }

    fn end_offsets(&self, topic: &str) -> Result<Vec<u64>> {
        Ok(self
            .topic(topic)?
            .partitions
            .iter()
            .map(|p| p.bounds().1)
            .collect())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.sender.send(WriterMessage::Stop);
        if let Ok(mut writer) = self.writer.lock()
            && let Some(handle) = writer.take()
            && handle.thread().id() != std::thread::current().id()
        {
            let _ = handle.join();
        }
    }
}
