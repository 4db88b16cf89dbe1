//! The embedded bus: a partitioned append-only log on local disk.
//!
//! Layout: `ROOT/<topic>/topic.json` (partition count) and
//! `ROOT/<topic>/<partition>/<base_offset:020>.log` segment files in the
//! [`crate::format`] batch format; consumer-group progress in
//! `ROOT/_offsets/<group>.json`; `ROOT/.lock` keeps a second process out.
//!
//! One writer thread owns every file handle that is written. Appends reach it
//! through a bounded queue (full → [`BusError::Busy`], which the collector
//! turns into 503 + `Retry-After`). It takes whatever requests are waiting,
//! writes one batch per partition, fsyncs each touched file once for the
//! whole group (group commit), and only then makes the records visible to
//! readers and acknowledges the requests. Readers therefore never see a
//! record that a crash could take back, so nothing downstream gets ahead of
//! the disk. With `FsyncMode::Interval` requests are acknowledged once
//! written and become visible at the next periodic fsync.
//!
//! Recovery at open scans the active segment, checks each batch's CRC and
//! truncates at the first torn or corrupt batch: such a batch was never
//! acknowledged, so truncating it loses nothing that was promised.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{oneshot, watch};

use crate::format::{self, BatchHeader, HEADER_BYTES};
use crate::{
    Bus, BusError, BusRecord, ConsumedRecord, Consumer, Result, TopicPartition, TopicSpec,
};

/// A sparse index entry is kept every this many bytes of a segment, so a
/// read scans at most this much of batch headers to find its offset.
const INDEX_INTERVAL_BYTES: u64 = 64 * 1024;
/// The writer takes at most this many waiting requests into one group, so
/// one group's memory stays bounded and acknowledgements keep flowing.
const MAX_REQUESTS_PER_GROUP: usize = 512;
/// How often the writer checks retention.
const RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// Bytes one partition read returns at most (bounds a poll's memory).
const MAX_READ_BYTES_PER_PARTITION: usize = 8 * 1024 * 1024;
/// Each partition keeps its newest batches in memory, up to this many
/// bytes, as the writer made them (see [`RecentBatches`]).
const RECENT_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// When appends are fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncMode {
    /// Before acknowledging, shared by concurrent appends (group commit).
    Always,
    /// At most this long after the append; acknowledged once written.
    Interval(Duration),
}

/// Settings of an [`EmbeddedBus`].
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    pub fsync: FsyncMode,
    /// Roll the active segment past this size.
    pub segment_bytes: u64,
    /// Appends that may wait for the writer before `Busy` is returned.
    pub max_pending_appends: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            fsync: FsyncMode::Always,
            segment_bytes: 64 * 1024 * 1024,
            max_pending_appends: 256,
        }
    }
}

struct Segment {
    base_offset: u64,
    path: PathBuf,
    file: Arc<File>,
    /// (first offset of a batch, byte position), every INDEX_INTERVAL_BYTES.
    index: Vec<(u64, u64)>,
    /// Bytes of complete batches.
    size: u64,
    last_append_ms: i64,
}

/// What only the writer thread touches.
struct WriterState {
    /// Next offset to assign.
    next_offset: u64,
    /// Bytes written since the last index entry of the active segment.
    bytes_since_index: u64,
}

struct PartitionLog {
    topic: Arc<str>,
    partition: u32,
    dir: PathBuf,
    segments: RwLock<Vec<Segment>>,
    /// Readers see offsets below this: durable under the fsync policy.
    visible_end: AtomicU64,
    /// Oldest offset still kept.
    log_start: AtomicU64,
    writer: Mutex<WriterState>,
    recent: Mutex<RecentBatches>,
}

/// The newest batches of a partition, kept by the writer after a
/// successful write. Consumers at the end of the log (the stream jobs at
/// full speed; in `logpipe up` two of them read every log record) get them
/// without a disk read, a zeroed buffer and a checksum each. Contiguous in
/// offsets: only written batches are added, in order, and a group rolled
/// back is never added. A read that starts before the oldest one goes to
/// disk as before.
#[derive(Default)]
struct RecentBatches {
    batches: std::collections::VecDeque<(BatchHeader, bytes::Bytes)>,
    bytes: usize,
}

impl RecentBatches {
    fn push(&mut self, header: BatchHeader, batch: bytes::Bytes) {
        if let Some((last, _)) = self.batches.back()
            && last.next_offset() != header.base_offset
        {
            // Not contiguous (cannot happen; be safe): start over.
            self.batches.clear();
            self.bytes = 0;
        }
        self.bytes += batch.len();
        self.batches.push_back((header, batch));
        while self.bytes > RECENT_BATCH_BYTES && self.batches.len() > 1 {
            if let Some((_, old)) = self.batches.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    /// The kept batches holding offsets in `[offset, end)`; empty when
    /// `offset` is before the oldest.
    fn covering(&self, offset: u64, end: u64) -> Vec<(BatchHeader, bytes::Bytes)> {
        let Some((first, _)) = self.batches.front() else {
            return Vec::new();
        };
        if offset < first.base_offset {
            return Vec::new();
        }
        let at = self
            .batches
            .partition_point(|(h, _)| h.base_offset <= offset)
            .saturating_sub(1);
        self.batches
            .range(at..)
            .take_while(|(h, _)| h.base_offset < end)
            .cloned()
            .collect()
    }
}

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
    options: EmbeddedOptions,
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

fn segment_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| BusError::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BusError::io(dir, e))
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

fn read_header(file: &File, pos: u64) -> std::io::Result<Option<BatchHeader>> {
    let mut bytes = [0u8; HEADER_BYTES];
    match file.read_exact_at(&mut bytes, pos) {
        Ok(()) => Ok(BatchHeader::decode(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

impl PartitionLog {
    /// Opens (recovering) or creates a partition directory.
    fn open(topic: &str, partition: u32, dir: PathBuf) -> Result<PartitionLog> {
        fs::create_dir_all(&dir).map_err(|e| BusError::io(&dir, e))?;
        let mut bases: Vec<u64> = fs::read_dir(&dir)
            .map_err(|e| BusError::io(&dir, e))?
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse::<u64>().ok()
            })
            .collect();
        bases.sort_unstable();
        if bases.is_empty() {
            bases.push(0);
        }
        let mut segments = Vec::with_capacity(bases.len());
        let mut expected_next = bases[0];
        let last = bases.len() - 1;
        for (i, base) in bases.iter().copied().enumerate() {
            let path = segment_path(&dir, base);
            let file = open_append(&path)?;
            if base != expected_next {
                return Err(BusError::Corrupt(format!(
                    "{} starts at offset {base} but the previous segment ends at {expected_next}",
                    path.display()
                )));
            }
            let segment = recover_segment(base, path, file, i == last)?;
            expected_next = segment_end(&segment, base)?;
            segments.push(segment);
        }
        let log_start = segments.first().map(|s| s.base_offset).unwrap_or(0);
        let bytes_since_index = segments
            .last()
            .map(|s| s.size - s.index.last().map(|(_, pos)| *pos).unwrap_or(0))
            .unwrap_or(0);
        Ok(PartitionLog {
            topic: Arc::from(topic),
            partition,
            dir,
            segments: RwLock::new(segments),
            visible_end: AtomicU64::new(expected_next),
            log_start: AtomicU64::new(log_start),
            writer: Mutex::new(WriterState {
                next_offset: expected_next,
                bytes_since_index,
            }),
            recent: Mutex::new(RecentBatches::default()),
        })
    }

    fn bounds(&self) -> (u64, u64) {
        (
            self.log_start.load(Ordering::Acquire),
            self.visible_end.load(Ordering::Acquire),
        )
    }

    /// Appends the records of `batch` in `[next, end)` to `out`; returns
    /// their key and value bytes.
    fn take_records(
        &self,
        header: &BatchHeader,
        batch: &bytes::Bytes,
        next: u64,
        end: u64,
        out: &mut Vec<ConsumedRecord>,
    ) -> usize {
        let mut bytes = 0;
        for (i, (key, value, headers)) in format::decode_records(batch).enumerate() {
            let record_offset = header.base_offset + i as u64;
            if record_offset < next {
                continue;
            }
            if record_offset >= end {
                break;
            }
            out.push(ConsumedRecord {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: record_offset,
                key: batch.slice_ref(key),
                value: batch.slice_ref(value),
                headers,
            });
            bytes += key.len() + value.len();
        }
        bytes
    }

    /// Reads visible records from `offset`, at most `max_records`.
    fn read(&self, offset: u64, max_records: usize) -> Result<Vec<ConsumedRecord>> {
        let (log_start, end) = self.bounds();
        if offset < log_start {
            return Err(BusError::OffsetOutOfRange {
                topic: self.topic.to_string(),
                partition: self.partition,
                requested: offset,
                log_start,
            });
        }
        if offset > end {
            return Err(BusError::OffsetBeyondEnd {
                topic: self.topic.to_string(),
                partition: self.partition,
                requested: offset,
                log_end: end,
            });
        }
        let mut out = Vec::new();
        let mut bytes_read = 0usize;
        let mut next = offset;
        let recent = self
            .recent
            .lock()
            .map_err(lock_poisoned)?
            .covering(next, end);
        for (header, batch) in &recent {
            if header.next_offset() <= next {
                continue;
            }
            if header.base_offset > next // a gap: cannot happen, but the disk has it
                || next >= end
                || out.len() >= max_records
                || bytes_read >= MAX_READ_BYTES_PER_PARTITION
            {
                break;
            }
            bytes_read += self.take_records(header, batch, next, end, &mut out);
            next = header.next_offset().min(end);
        }
        'segments: while next < end
            && out.len() < max_records
            && bytes_read < MAX_READ_BYTES_PER_PARTITION
        {
            let (file, path, mut pos) = {
                let segments = self.segments.read().map_err(lock_poisoned)?;
                let at = segments.partition_point(|s| s.base_offset <= next);
                let Some(segment) = at.checked_sub(1).map(|i| &segments[i]) else {
                    // Deleted by retention since the bounds check.
                    return Err(BusError::OffsetOutOfRange {
                        topic: self.topic.to_string(),
                        partition: self.partition,
                        requested: next,
                        log_start: self.log_start.load(Ordering::Acquire),
                    });
                };
                let floor = segment.index.partition_point(|(o, _)| *o <= next);
                let pos = floor
                    .checked_sub(1)
                    .map(|i| segment.index[i].1)
                    .unwrap_or(0);
                (segment.file.clone(), segment.path.clone(), pos)
            };
            loop {
                let header = read_header(&file, pos).map_err(|e| BusError::io(&path, e))?;
                let Some(header) = header else {
                    // End of a sealed segment: continue in the next one.
                    continue 'segments;
                };
                if header.next_offset() <= next {
                    pos += header.total_bytes();
                    continue;
                }
                let mut batch = vec![0u8; header.total_bytes() as usize];
                file.read_exact_at(&mut batch, pos)
                    .map_err(|e| BusError::io(&path, e))?;
                if !format::verify_batch(&header, &batch) {
                    return Err(BusError::Corrupt(format!(
                        "batch at byte {pos} of {} fails its checksum",
                        path.display()
                    )));
                }
                let batch = bytes::Bytes::from(batch);
                bytes_read += self.take_records(&header, &batch, next, end, &mut out);
                next = header.next_offset().min(end);
                pos += header.total_bytes();
                if next >= end
                    || out.len() >= max_records
                    || bytes_read >= MAX_READ_BYTES_PER_PARTITION
                {
                    break 'segments;
                }
            }
        }
        Ok(out)
    }
}

/// The offset after the last record of `segment`.
fn segment_end(segment: &Segment, base: u64) -> Result<u64> {
    // Walk from the last index entry to the end to find the last batch.
    let mut pos = segment.index.last().map(|(_, p)| *p).unwrap_or(0);
    let mut next = segment.index.last().map(|(o, _)| *o).unwrap_or(base);
    while pos < segment.size {
        let header = read_header(&segment.file, pos)
            .map_err(|e| BusError::io(&segment.path, e))?
            .ok_or_else(|| {
                BusError::Corrupt(format!("bad header in {}", segment.path.display()))
            })?;
        next = header.next_offset();
        pos += header.total_bytes();
    }
    Ok(next)
}

/// Scans a segment, building its sparse index. The active (last) segment is
/// fully checksummed and truncated at the first bad batch; a bad batch in a
/// sealed segment is corruption and stops the open.
fn recover_segment(base: u64, path: PathBuf, file: File, is_active: bool) -> Result<Segment> {
    let length = file.metadata().map_err(|e| BusError::io(&path, e))?.len();
    let mut pos = 0u64;
    let mut expected = base;
    let mut index = Vec::new();
    let mut since_index = INDEX_INTERVAL_BYTES; // index the first batch
    let mut last_append_ms = 0;
    while pos < length {
        let header = read_header(&file, pos).map_err(|e| BusError::io(&path, e))?;
        let valid = match header {
            Some(h) if h.base_offset == expected && pos + h.total_bytes() <= length => {
                if is_active {
                    let mut batch = vec![0u8; h.total_bytes() as usize];
                    file.read_exact_at(&mut batch, pos)
                        .map_err(|e| BusError::io(&path, e))?;
                    format::verify_batch(&h, &batch).then_some(h)
                } else {
                    Some(h)
                }
            }
            _ => None,
        };
        let Some(header) = valid else {
            if !is_active {
                return Err(BusError::Corrupt(format!(
                    "sealed segment {} is damaged at byte {pos}",
                    path.display()
                )));
            }
            tracing::warn!(
                segment = %path.display(),
                at_byte = pos,
                dropped_bytes = length - pos,
                "truncating a torn or corrupt tail left by a crash (it was never acknowledged)"
            );
            file.set_len(pos).map_err(|e| BusError::io(&path, e))?;
            file.sync_all().map_err(|e| BusError::io(&path, e))?;
            break;
        };
        if since_index >= INDEX_INTERVAL_BYTES {
            index.push((header.base_offset, pos));
            since_index = 0;
        }
        since_index += header.total_bytes();
        last_append_ms = header.append_ms;
        expected = header.next_offset();
        pos += header.total_bytes();
    }
    if last_append_ms == 0 {
        last_append_ms = now_ms();
    }
    Ok(Segment {
        base_offset: base,
        path,
        file: Arc::new(file),
        index,
        size: pos,
        last_append_ms,
    })
}

impl EmbeddedBus {
    /// Opens the bus rooted at `root` (created if missing), recovering any
    /// existing topics, and starts the writer thread.
    pub fn open(root: impl Into<PathBuf>, options: EmbeddedOptions) -> Result<EmbeddedBus> {
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

/// Reads every partition of its topics in one process (no group balancing:
/// the embedded bus serves one machine).
struct EmbeddedConsumer {
    bus: EmbeddedBus,
    group: String,
    topics: HashMap<String, Arc<TopicLog>>,
    positions: BTreeMap<TopicPartition, u64>,
    progress: watch::Receiver<u64>,
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    fn assignment(&self) -> Vec<TopicPartition> {
        self.positions.keys().cloned().collect()
    }

    fn seek(&mut self, topic: &str, partition: u32, offset: u64) -> Result<()> {
        let key = TopicPartition {
            topic: topic.to_string(),
            partition,
        };
        match self.positions.get_mut(&key) {
            Some(position) => {
                *position = offset;
                Ok(())
            }
            None => Err(BusError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            }),
        }
    }

    async fn poll(&mut self, max_records: usize, timeout: Duration) -> Result<Vec<ConsumedRecord>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Mark the current progress as seen *before* reading, so a commit
            // that lands during the read wakes the wait below.
            self.progress.borrow_and_update();
            let jobs: Vec<(Arc<PartitionLog>, u64)> = self
                .positions
                .iter()
                .filter_map(|(tp, offset)| {
                    let log = self
                        .topics
                        .get(&tp.topic)?
                        .partitions
                        .get(tp.partition as usize)?;
                    (*offset < log.bounds().1).then(|| (log.clone(), *offset))
                })
                .collect();
            if !jobs.is_empty() {
                let share = (max_records / jobs.len()).max(1);
                let batches = tokio::task::spawn_blocking(move || {
                    jobs.into_iter()
                        .map(|(log, offset)| log.read(offset, share))
                        .collect::<Result<Vec<_>>>()
                })
                .await
                .map_err(|e| BusError::Corrupt(format!("read task failed: {e}")))??;
                let mut out = Vec::new();
                for records in batches {
                    if let Some(last) = records.last() {
                        let key = TopicPartition {
                            topic: last.topic.to_string(),
                            partition: last.partition,
                        };
                        self.positions.insert(key, last.offset + 1);
                    }
                    out.extend(records);
                }
                if !out.is_empty() {
                    return Ok(out);
                }
            }
            match tokio::time::timeout_at(deadline, self.progress.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(BusError::Closed),
                Err(_) => return Ok(Vec::new()),
            }
        }
    }

    async fn commit(&mut self, offsets: &[(TopicPartition, u64)]) -> Result<()> {
        let mut committed = self.bus.committed(&self.group)?;
        for (tp, offset) in offsets {
            committed
                .entry(tp.topic.clone())
                .or_default()
                .insert(tp.partition, *offset);
        }
        let path = self.bus.offsets_path(&self.group);
        tokio::task::spawn_blocking(move || {
            write_atomically(&path, &serde_json::to_vec(&committed).unwrap_or_default())
        })
        .await
        .map_err(|e| BusError::Corrupt(format!("commit task failed: {e}")))?
    }

    fn start_offsets(&self, topic: &str) -> Result<Vec<u64>> {
        Ok(self
            .topics
            .get(topic)
            .ok_or_else(|| BusError::UnknownTopic(topic.to_string()))?
            .partitions
            .iter()
            .map(|p| p.bounds().0)
            .collect())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| BusError::io(dir, e))?;
    let tmp = path.with_extension("json.tmp");
    let mut file = File::create(&tmp).map_err(|e| BusError::io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| BusError::io(&tmp, e))?;
    file.sync_all().map_err(|e| BusError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| BusError::io(path, e))?;
    sync_dir(dir)
}

/// A partition and the records a group appends to it, in order.
type PartitionRecords<'a> = (Arc<PartitionLog>, Vec<&'a BusRecord>);

/// One partition's part of a group, staged before anything is made visible.
struct StagedWrite {
    log: Arc<PartitionLog>,
    /// Active segment size before the write, to roll back on failure.
    size_before: u64,
    next_before: u64,
    index_entry: Option<(u64, u64)>,
    batch_bytes: u64,
    new_next: u64,
    /// The batch as written, kept in the partition's recent batches.
    batch: bytes::Bytes,
}

fn writer_loop(inner: std::sync::Weak<Inner>, receiver: Receiver<WriterMessage>) {
    let (fsync, segment_bytes) = match inner.upgrade() {
        Some(inner) => (inner.options.fsync, inner.options.segment_bytes),
        None => return,
    };
    let tick = match fsync {
        FsyncMode::Always => RETENTION_CHECK_INTERVAL,
        FsyncMode::Interval(interval) => interval.max(Duration::from_millis(1)),
    };
    // With interval fsync: partitions written but not yet synced.
    let mut unsynced: HashMap<(Arc<str>, u32), (Arc<PartitionLog>, u64)> = HashMap::new();
    let mut last_sync = Instant::now();
    let mut last_retention = Instant::now();
    let mut stopping = false;
    while !stopping {
        let first = match receiver.recv_timeout(tick) {
            Ok(message) => Some(message),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                stopping = true;
                None
            }
        };
        let mut requests = Vec::new();
        let mut next = first;
        while let Some(message) = next.take() {
            match message {
                WriterMessage::Append(request) => requests.push(request),
                WriterMessage::Stop => stopping = true,
            }
            if requests.len() < MAX_REQUESTS_PER_GROUP {
                next = receiver.try_recv().ok();
            }
        }
        if !requests.is_empty() {
            let result = write_group(&requests, segment_bytes, fsync == FsyncMode::Always);
            match result {
                Ok(staged) => {
                    for write in &staged {
                        match fsync {
                            FsyncMode::Always => write
                                .log
                                .visible_end
                                .store(write.new_next, Ordering::Release),
                            FsyncMode::Interval(_) => {
                                unsynced.insert(
                                    (write.log.topic.clone(), write.log.partition),
                                    (write.log.clone(), write.new_next),
                                );
                            }
                        }
                    }
                    let appended: usize = requests.iter().map(|r| r.records.len()).sum();
                    for request in &requests {
                        if let Some(kind) = logpipe_core::RecordKind::of_topic(&request.topic.name)
                        {
                            logpipe_core::metrics::metrics()
                                .bus_records_appended
                                .add(kind, request.records.len() as u64);
                        }
                    }
                    tracing::trace!(appended, "group committed");
                    if fsync == FsyncMode::Always
                        && let Some(inner) = inner.upgrade()
                    {
                        inner.progress.send_modify(|n| *n += 1);
                    }
                    for request in requests {
                        let _ = request.reply.send(Ok(()));
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "bus write failed; the group was rolled back and will be retried by its clients");
                    let message = error.to_string();
                    for request in requests {
                        let _ = request.reply.send(Err(BusError::Busy(message.clone())));
                    }
                }
            }
        }
        if let FsyncMode::Interval(interval) = fsync
            && !unsynced.is_empty()
            && (last_sync.elapsed() >= interval || stopping)
        {
            let mut synced_any = false;
            for (_, (log, new_next)) in unsynced.drain() {
                let synced = log
                    .segments
                    .read()
                    .ok()
                    .and_then(|s| s.last().map(|s| s.file.sync_data()));
                match synced {
                    Some(Ok(())) => {
                        log.visible_end.store(new_next, Ordering::Release);
                        synced_any = true;
                    }
                    other => {
                        tracing::error!(topic = %log.topic, partition = log.partition, ?other, "periodic fsync failed")
                    }
                }
            }
            logpipe_core::metrics::metrics()
                .bus_fsyncs
                .fetch_add(1, Ordering::Relaxed);
            last_sync = Instant::now();
            if synced_any && let Some(inner) = inner.upgrade() {
                inner.progress.send_modify(|n| *n += 1);
            }
        }
        if last_retention.elapsed() >= RETENTION_CHECK_INTERVAL {
            last_retention = Instant::now();
            if let Some(inner) = inner.upgrade() {
                let bus = EmbeddedBus { inner };
                if let Err(error) = bus.enforce_retention() {
                    tracing::error!(%error, "retention failed");
                }
            }
        }
    }
}

/// Writes one batch per partition for all `requests`, fsyncs (when `sync`),
/// rolls segments. On any failure every partition is truncated back, so the
/// group is all or nothing.
fn write_group(
    requests: &[AppendRequest],
    segment_bytes: u64,
    sync: bool,
) -> Result<Vec<StagedWrite>> {
    // Group records by partition, keeping request order within a partition.
    let mut by_partition: BTreeMap<(String, u32), PartitionRecords<'_>> = BTreeMap::new();
    for request in requests {
        for (partition, record) in &request.records {
            let Some(log) = request.topic.partitions.get(*partition as usize) else {
                continue;
            };
            by_partition
                .entry((request.topic.name.clone(), *partition))
                .or_insert_with(|| (log.clone(), Vec::new()))
                .1
                .push(record);
        }
    }
    let append_ms = now_ms();
    let mut staged: Vec<StagedWrite> = Vec::with_capacity(by_partition.len());
    let mut failure = None;
    for (log, records) in by_partition.into_values() {
        let result = (|| -> Result<StagedWrite> {
            let mut writer = log.writer.lock().map_err(lock_poisoned)?;
            let (file, path, size_before) = {
                let segments = log.segments.read().map_err(lock_poisoned)?;
                let active = segments
                    .last()
                    .ok_or_else(|| BusError::Corrupt("partition has no segment".into()))?;
                (active.file.clone(), active.path.clone(), active.size)
            };
            // Its own buffer: on success it is kept in the recent batches.
            let size: usize = records
                .iter()
                .map(|r| 12 + r.key.len() + r.value.len() + r.headers.encoded().len())
                .sum();
            let mut buffer = Vec::with_capacity(HEADER_BYTES + size);
            format::encode_batch(
                &mut buffer,
                writer.next_offset,
                append_ms,
                records
                    .iter()
                    .map(|r| (r.key.as_slice(), r.value.as_slice(), &r.headers)),
            );
            if let Err(e) = (&*file).write_all(&buffer) {
                // A partial write must not stay behind the rolled-back group.
                let _ = file.set_len(size_before);
                return Err(BusError::io(&path, e));
            }
            let index_entry = (writer.bytes_since_index >= INDEX_INTERVAL_BYTES
                || size_before == 0)
                .then_some((writer.next_offset, size_before));
            let next_before = writer.next_offset;
            writer.next_offset += records.len() as u64;
            Ok(StagedWrite {
                log: log.clone(),
                size_before,
                next_before,
                index_entry,
                batch_bytes: buffer.len() as u64,
                new_next: writer.next_offset,
                batch: bytes::Bytes::from(buffer),
            })
        })();
        match result {
            Ok(write) => staged.push(write),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    if failure.is_none() && sync {
        for write in &staged {
            let segments = write.log.segments.read().map_err(lock_poisoned)?;
            if let Some(active) = segments.last()
                && let Err(e) = active.file.sync_data()
            {
                failure = Some(BusError::io(&active.path, e));
                break;
            }
        }
        logpipe_core::metrics::metrics()
            .bus_fsyncs
            .fetch_add(1, Ordering::Relaxed);
    }
    if let Some(error) = failure {
        for write in &staged {
            if let Ok(segments) = write.log.segments.read()
                && let Some(active) = segments.last()
            {
                let _ = active.file.set_len(write.size_before);
            }
            if let Ok(mut writer) = write.log.writer.lock() {
                writer.next_offset = write.next_before;
            }
        }
        return Err(error);
    }
    // Success: publish sizes and index entries, roll full segments.
    for write in &staged {
        let mut segments = write.log.segments.write().map_err(lock_poisoned)?;
        let mut writer = write.log.writer.lock().map_err(lock_poisoned)?;
        let Some(active) = segments.last_mut() else {
            continue;
        };
        active.size = write.size_before + write.batch_bytes;
        active.last_append_ms = append_ms;
        if let Some(header) = write
            .batch
            .first_chunk::<HEADER_BYTES>()
            .and_then(BatchHeader::decode)
        {
            let mut recent = write.log.recent.lock().map_err(lock_poisoned)?;
            recent.push(header, write.batch.clone());
        }
        match write.index_entry {
            Some(entry) => {
                active.index.push(entry);
                writer.bytes_since_index = write.batch_bytes;
            }
            None => writer.bytes_since_index += write.batch_bytes,
        }
        if active.size >= segment_bytes {
            if !sync {
                // Seal the old segment on disk before moving on.
                let _ = active.file.sync_data();
            }
            let base = writer.next_offset;
            let path = segment_path(&write.log.dir, base);
            let file = open_append(&path)?;
            sync_dir(&write.log.dir)?;
            segments.push(Segment {
                base_offset: base,
                path,
                file: Arc::new(file),
                index: Vec::new(),
                size: 0,
                last_append_ms: append_ms,
            });
            writer.bytes_since_index = 0;
        }
    }
    Ok(staged)
}

/// Deletes sealed segments past the topic's age or size bound. The active
/// segment is never deleted, so the next offset is never forgotten.
fn enforce_retention(topic: &TopicLog, log: &PartitionLog) -> Result<()> {
    let cutoff_ms = now_ms() - topic.retention.as_millis() as i64;
    let mut removed = Vec::new();
    {
        let mut segments = log.segments.write().map_err(lock_poisoned)?;
        let mut total: u64 = segments.iter().map(|s| s.size).sum();
        while segments.len() > 1 {
            let oldest = &segments[0];
            let too_old = oldest.last_append_ms < cutoff_ms;
            let too_big = topic.retention_bytes > 0 && total > topic.retention_bytes;
            if !(too_old || too_big) {
                break;
            }
            total -= oldest.size;
            removed.push(segments.remove(0));
        }
        if let Some(first) = segments.first() {
            log.log_start.store(first.base_offset, Ordering::Release);
        }
    }
    for segment in removed {
        tracing::info!(topic = %topic.name, partition = log.partition, segment = %segment.path.display(), "retention deleted a segment");
        if let Err(e) = fs::remove_file(&segment.path) {
            tracing::warn!(error = %e, segment = %segment.path.display(), "could not delete segment");
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base_offset: u64, count: u32, value_bytes: usize) -> (BatchHeader, bytes::Bytes) {
        let value = vec![b'v'; value_bytes];
        let none = crate::Headers::default();
        let mut out = Vec::new();
        format::encode_batch(
            &mut out,
            base_offset,
            0,
            (0..count).map(|_| (&b"k"[..], &value[..], &none)),
        );
        let header = BatchHeader::decode(out.first_chunk().unwrap()).unwrap();
        (header, bytes::Bytes::from(out))
    }

    #[test]
    fn recent_batches_are_bounded_contiguous_and_found_by_offset() {
        let mut recent = RecentBatches::default();
        // 10 records a batch, about 1 MiB each: the bound keeps four.
        for i in 0..10 {
            let (header, bytes) = batch(i * 10, 10, 100_000);
            recent.push(header, bytes);
        }
        assert!(recent.bytes <= RECENT_BATCH_BYTES);
        assert_eq!(recent.batches.len(), 4);
        let bases = |found: Vec<(BatchHeader, bytes::Bytes)>| -> Vec<u64> {
            found.iter().map(|(h, _)| h.base_offset).collect()
        };
        assert_eq!(bases(recent.covering(65, 100)), vec![60, 70, 80, 90]);
        assert_eq!(bases(recent.covering(75, 85)), vec![70, 80]);
        assert_eq!(
            bases(recent.covering(59, 100)),
            Vec::<u64>::new(),
            "evicted"
        );
        // A batch that does not follow the last one starts the cache over.
        let (header, bytes) = batch(500, 1, 10);
        recent.push(header, bytes);
        assert_eq!(bases(recent.covering(500, 501)), vec![500]);
        assert_eq!(bases(recent.covering(95, 100)), Vec::<u64>::new());
    }
}
