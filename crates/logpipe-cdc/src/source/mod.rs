//! One `[[cdc.sources]]` running: a consistent snapshot of the tables, then
//! the binlog from exactly the snapshot's position, as Debezium's change
//! events on the bus — no Kafka Connect, no JVM.
//!
//! **Snapshot.** `START TRANSACTION WITH CONSISTENT SNAPSHOT` and MariaDB's
//! `binlog_snapshot_file`/`binlog_snapshot_position` give the tables as of
//! one binlog position P, without locks; the rows go out as `op: r`, and the
//! binlog is then read from P, so no change between the two is lost or
//! comes first.
//!
//! **Where to resume.** The bus is the checkpoint: every record carries the
//! position to resume from (`logpipe.cdc.resume`: the start of the first
//! transaction of the batch it was appended with) and its phase
//! (`logpipe.cdc.phase`: `snapshot` or `stream`). At start the source reads
//! the last record of each partition of its topics and resumes from the
//! newest streamed batch's start, so a batch cut by a crash is appended
//! again whole (each change carries the whole row: a sink applying it twice
//! writes the same row). When only snapshot records are there, the snapshot
//! resumes: a table whose copy finished is not copied again (its last row
//! is appended alone, after all its others were acknowledged, with the
//! phase `snapshot-done`), the others are copied again, and the binlog is
//! still read from the first snapshot's P (a row changed or deleted between
//! the two snapshots is changed or deleted again by the binlog after it).
//!
//! **Schema changes** need nothing: with `binlog_row_metadata=FULL` every
//! table map carries the columns' names and types, so a row after an
//! `ALTER TABLE` is described by its new schema.

mod columns;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use logpipe_bus::{Bus, BusRecord, Headers, TopicSpec};
use logpipe_config::{CdcSourceConfig, PurgedPolicy, SnapshotMode};
use logpipe_core::job::Shutdown;
use logpipe_core::retry::Backoff;
use mysql_async::binlog::events::{EventData, RowsEventData};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, Opts, Value};
use serde_json::{Map, Value as Json, json};

pub use columns::{ColumnError, Kind, SourceColumn};

use crate::mariadb::quote;
use crate::metrics::cdc_metrics;
use crate::sink::CdcError;

/// Header: the binlog position to resume from (`file:pos`).
pub const RESUME_HEADER: &str = "logpipe.cdc.resume";
/// Header: `snapshot`, `snapshot-done` (a table's last snapshot row, sent
/// once all its others were) or `stream`.
pub const PHASE_HEADER: &str = "logpipe.cdc.phase";
/// The phase of a table's last snapshot row.
const SNAPSHOT_DONE: &str = "snapshot-done";

/// MariaDB's GTID event (not decoded by `mysql_common`).
const MARIADB_GTID_EVENT: u8 = 162;
/// How long an idle binlog is waited on before the lag shows 0.
const IDLE: Duration = Duration::from_secs(1);
/// "Could not find first log file name in binary log index file".
const PURGED: u16 = 1236;

/// A binlog position.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub file: String,
    pub pos: u64,
}

impl Position {
    fn encode(&self) -> String {
        format!("{}:{}", self.file, self.pos)
    }

    fn decode(text: &[u8]) -> Option<Position> {
        let text = std::str::from_utf8(text).ok()?;
        let (file, pos) = text.rsplit_once(':')?;
        Some(Position {
            file: file.to_string(),
            pos: pos.parse().ok()?,
        })
    }
}

/// The headers of every record of a batch: where to resume, and the phase.
fn headers(resume: &Position, phase: &str) -> Headers {
    let resume = resume.encode();
    [
        (RESUME_HEADER, resume.as_bytes()),
        (PHASE_HEADER, phase.as_bytes()),
    ]
    .into_iter()
    .collect()
}

/// `logpipe_cdc_snapshot_running` of a source: 1 while it lives, 0 after,
/// however the snapshot ends.
struct Running<'a>(&'a str);

impl<'a> Running<'a> {
    fn set(source: &'a str) -> Running<'a> {
        cdc_metrics().snapshot_running.set(&[source], 1.0);
        Running(source)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        cdc_metrics().snapshot_running.set(&[self.0], 0.0);
    }
}

/// Where a source resumes, read from its topics.
struct Resume {
    /// The last batch's resume position and whether it was streamed
    /// (`None`: the topics are empty).
    position: Option<(Position, bool)>,
    /// The topics of the tables whose snapshot finished.
    copied: HashSet<String>,
}

/// A configured source and the bus it writes.
pub struct CdcSource {
    config: CdcSourceConfig,
    bus: Arc<dyn Bus>,
}

/// A captured table as the last table map (or the snapshot) described it.
struct Table {
    db: String,
    name: String,
    topic: String,
    columns: Vec<SourceColumn>,
    /// The value's and the key's Connect schemas for these columns, as
    /// JSON text: written into every event, built once.
    envelope: String,
    key_schema: String,
}

impl Table {
    fn new(db: &str, name: &str, topic: String, columns: Vec<SourceColumn>) -> Table {
        let fields: Vec<Json> = columns.iter().map(SourceColumn::schema).collect();
        let row = |field: &str| {
            json!({
                "type": "struct",
                "fields": fields,
                "optional": true,
                "name": format!("{topic}.Value"),
                "field": field,
            })
        };
        let envelope = json!({
            "type": "struct",
            "fields": [
                row("before"),
                row("after"),
                {
                    "type": "struct",
                    "fields": [
                        {"type": "string", "optional": false, "field": "version"},
                        {"type": "string", "optional": false, "field": "connector"},
                        {"type": "string", "optional": false, "field": "name"},
                        {"type": "int64", "optional": false, "field": "ts_ms"},
                        {"type": "string", "optional": true, "field": "snapshot"},
                        {"type": "string", "optional": false, "field": "db"},
                        {"type": "string", "optional": true, "field": "table"},
                        {"type": "int64", "optional": false, "field": "server_id"},
                        {"type": "string", "optional": true, "field": "gtid"},
                        {"type": "string", "optional": false, "field": "file"},
                        {"type": "int64", "optional": false, "field": "pos"},
                        {"type": "int32", "optional": false, "field": "row"}
                    ],
                    "optional": false,
                    "name": "io.debezium.connector.mariadb.Source",
                    "field": "source"
                },
                {"type": "string", "optional": false, "field": "op"},
                {"type": "int64", "optional": true, "field": "ts_ms"}
            ],
            "optional": false,
            "name": format!("{topic}.Envelope"),
            "version": 2,
        });
        let key_schema = json!({
            "type": "struct",
            "fields": columns.iter().filter(|c| c.key).map(SourceColumn::schema).collect::<Vec<_>>(),
            "optional": false,
            "name": format!("{topic}.Key"),
        });
        Table {
            db: db.to_string(),
            name: name.to_string(),
            topic,
            columns,
            envelope: envelope.to_string(),
            key_schema: key_schema.to_string(),
        }
    }

    fn row(
        &self,
        values: impl IntoIterator<Item = Value>,
    ) -> Result<Map<String, Json>, ColumnError> {
        self.columns
            .iter()
            .zip(values)
            .map(|(column, value)| Ok((column.name.clone(), column.json(&value)?)))
            .collect()
    }
}

/// The values of each `ENUM` and of each `SET` column of a table map, in
/// column order (`binlog_row_metadata=FULL` puts them there).
fn enum_and_set_values(
    tme: &mysql_async::binlog::events::TableMapEvent<'_>,
) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    use mysql_async::binlog::events::OptionalMetadataField;
    let (mut enums, mut sets) = (Vec::new(), Vec::new());
    for field in tme.iter_optional_meta().flatten() {
        match field {
            OptionalMetadataField::EnumStrValue(columns) => enums.extend(
                columns
                    .iter_values()
                    .flatten()
                    .map(|c| c.values().iter().map(|v| v.value().into_owned()).collect()),
            ),
            OptionalMetadataField::SetStrValue(columns) => sets.extend(
                columns
                    .iter_values()
                    .flatten()
                    .map(|c| c.values().iter().map(|v| v.value().into_owned()).collect()),
            ),
            _ => {}
        }
    }
    (enums, sets)
}

/// Where a change came from, for `source`.
struct Origin<'a> {
    position: &'a Position,
    gtid: Option<&'a str>,
    server_id: u32,
    ts_ms: i64,
    row: usize,
    snapshot: bool,
}

/// A change event's key and value bytes (`None` key: no primary key).
fn change_event(
    source_name: &str,
    table: &Table,
    op: &str,
    before: Option<Map<String, Json>>,
    after: Option<Map<String, Json>>,
    origin: &Origin<'_>,
) -> (Vec<u8>, Vec<u8>) {
    let image = after.as_ref().or(before.as_ref());
    let key: Map<String, Json> = table
        .columns
        .iter()
        .filter(|c| c.key)
        .filter_map(|c| Some((c.name.clone(), image?.get(&c.name)?.clone())))
        .collect();
    // `{"payload":…,"schema":…}`: the order serde_json writes a map in, so
    // the bytes are those of the whole object serialized at once.
    let key = if key.is_empty() {
        Vec::new()
    } else {
        format!(
            r#"{{"payload":{},"schema":{}}}"#,
            Json::Object(key),
            table.key_schema
        )
        .into_bytes()
    };
    let mut payload = Map::new();
    payload.insert("before".into(), before.map_or(Json::Null, Json::Object));
    payload.insert("after".into(), after.map_or(Json::Null, Json::Object));
    payload.insert(
        "source".into(),
        json!({
            "version": concat!("logpipe ", env!("CARGO_PKG_VERSION")),
            "connector": "mariadb",
            "name": source_name,
            "ts_ms": origin.ts_ms,
            "snapshot": if origin.snapshot { "true" } else { "false" },
            "db": table.db,
            "table": table.name,
            "server_id": origin.server_id,
            "gtid": origin.gtid,
            "file": origin.position.file,
            "pos": origin.position.pos,
            "row": origin.row,
        }),
    );
    payload.insert("op".into(), op.into());
    payload.insert("ts_ms".into(), chrono::Utc::now().timestamp_millis().into());
    let value = format!(
        r#"{{"payload":{},"schema":{}}}"#,
        Json::Object(payload),
        table.envelope
    );
    (key, value.into_bytes())
}

fn source_error(context: &str) -> impl FnOnce(mysql_async::Error) -> CdcError + '_ {
    move |source| CdcError::Source {
        context: context.to_string(),
        source,
    }
}

/// Waits between attempts after a failure.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

impl CdcSource {
    pub fn new(config: CdcSourceConfig, bus: Arc<dyn Bus>) -> CdcSource {
        CdcSource { config, bus }
    }

    /// A column of `table` this source cannot capture, as its refusal.
    fn in_table(&self, table: &str, error: ColumnError) -> CdcError {
        self.setting(format!("table {table}: {error}"))
    }

    fn setting(&self, what: String) -> CdcError {
        CdcError::Setting {
            who: format!("source {}", self.config.name),
            what,
        }
    }

    fn opts(&self) -> Result<Opts, CdcError> {
        let password = crate::sink::read_password(
            self.config.password_env.as_deref(),
            self.config.password_file.as_deref(),
        )
        .map_err(|what| self.setting(what))?;
        crate::mariadb::opts(&self.config.url, password.as_deref())
            .map_err(|e| self.setting(format!("url: {e}")))
    }

    /// Runs until `shutdown`, or a failure waiting cannot fix.
    pub async fn run(self, mut shutdown: Shutdown) -> Result<(), CdcError> {
        let opts = self.opts()?;
        let name = self.config.name.clone();
        let mut backoff = BACKOFF;
        let metrics = cdc_metrics();
        metrics.source_errors.touch(&[&name]);
        loop {
            match self.session(&opts, &mut shutdown, &mut backoff).await {
                Ok(()) => return Ok(()),
                Err(error) if error.is_permanent() => return Err(error),
                Err(error) => {
                    metrics.source_errors.inc(&[&name]);
                    let delay = backoff.next_delay();
                    tracing::warn!(source = %self.config.name, %error, retry_in = ?delay, "CDC source failed; resuming from the bus's last batch");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.wait_for(|stopped| *stopped) => return Ok(()),
                    }
                }
            }
        }
    }

    /// Refuses a server whose binlog cannot be captured, saying what to set.
    async fn check_server(&self, conn: &mut Conn) -> Result<(), CdcError> {
        let row: Option<(i64, String, String, String, u32)> = conn
            .query_first(
                "SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata, @@server_id",
            )
            .await
            .map_err(source_error("reading the binlog settings"))?;
        let Some((log_bin, format, image, metadata, server_id)) = row else {
            return Err(self.setting("the server did not answer SELECT @@log_bin, …".into()));
        };
        let mut wrong = Vec::new();
        if log_bin != 1 {
            wrong.push("log_bin (start the server with --log-bin=mysql-bin)".to_string());
        }
        if !format.eq_ignore_ascii_case("ROW") {
            wrong.push(format!("binlog_format=ROW (it is {format})"));
        }
        if !image.eq_ignore_ascii_case("FULL") {
            wrong.push(format!("binlog_row_image=FULL (it is {image})"));
        }
        if !metadata.eq_ignore_ascii_case("FULL") {
            wrong.push(format!(
                "binlog_row_metadata=FULL (it is {metadata}; the column names of every row come from it)"
            ));
        }
        if server_id == self.config.server_id {
            wrong.push(format!(
                "a server_id other than this source's server_id {server_id} (or change cdc.sources.server_id)"
            ));
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(self.setting(format!(
                "the MariaDB server at {} cannot be captured; set {}",
                logpipe_sinks::postgres::redact(&self.config.url),
                wrong.join(", ")
            )))
        }
    }

    async fn session(
        &self,
        opts: &Opts,
        shutdown: &mut Shutdown,
        backoff: &mut Backoff,
    ) -> Result<(), CdcError> {
        let mut conn = Conn::new(opts.clone())
            .await
            .map_err(source_error("connecting"))?;
        self.check_server(&mut conn).await?;
        let specs: Vec<TopicSpec> = self
            .config
            .topics()
            .into_iter()
            .map(|name| TopicSpec {
                name,
                partitions: self.config.partitions,
                retention: self.config.retention,
                retention_bytes: 0,
                replication_factor: None,
                min_insync_replicas: None,
            })
            .collect();
        self.bus.create_topics(&specs).await?;
        let resume = self.resume_point().await?;
        let start = match resume.position {
            Some((position, true)) => {
                tracing::info!(source = %self.config.name, resume = %position.encode(), "CDC source resuming the binlog");
                position
            }
            Some((position, false)) => {
                tracing::info!(source = %self.config.name, copied = resume.copied.len(), "CDC source's snapshot did not finish: resuming it (the tables it finished are not copied again)");
                self.snapshot(&mut conn, Some(position), &resume.copied, shutdown)
                    .await?
            }
            None if self.config.snapshot == SnapshotMode::Never => {
                let row: Option<mysql_async::Row> = conn
                    .query_first("SHOW MASTER STATUS")
                    .await
                    .map_err(source_error("reading SHOW MASTER STATUS"))?;
                let (file, pos) = row
                    .and_then(|row| Some((row.get::<String, _>(0)?, row.get::<u64, _>(1)?)))
                    .ok_or_else(|| {
                        self.setting("SHOW MASTER STATUS is empty: is log_bin on?".into())
                    })?;
                Position { file, pos }
            }
            None => {
                self.snapshot(&mut conn, None, &HashSet::new(), shutdown)
                    .await?
            }
        };
        if *shutdown.borrow() {
            return Ok(());
        }
        match self.stream(opts, start, shutdown, backoff).await {
            Err(CdcError::Source {
                source: mysql_async::Error::Server(e),
                ..
            }) if e.code == PURGED => {
                if self.config.purged == PurgedPolicy::Snapshot {
                    tracing::warn!(source = %self.config.name, error = %e.message, "CDC source's binlog position was purged: taking a new snapshot (cdc.sources.purged = \"snapshot\")");
                    let mut conn = Conn::new(opts.clone())
                        .await
                        .map_err(source_error("connecting"))?;
                    let start = self
                        .snapshot(&mut conn, None, &HashSet::new(), shutdown)
                        .await?;
                    self.stream(opts, start, shutdown, backoff).await
                } else {
                    Err(self.setting(format!(
                        "the binlog position to resume from is gone from the server ({}): changes since then are lost to this source. Set cdc.sources.purged = \"snapshot\" to copy the tables again, and keep the binlog longer (binlog_expire_logs_seconds)",
                        e.message
                    )))
                }
            }
            other => other,
        }
    }

    /// Where to resume, from the last record of each partition.
    async fn resume_point(&self) -> Result<Resume, CdcError> {
        let topics = self.config.topics();
        // The ends are known once the bus has looked them up.
        let mut ends = Vec::new();
        for topic in &topics {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                match self.bus.end_offsets(topic) {
                    Ok(end) => {
                        ends.push((topic.clone(), end));
                        break;
                    }
                    Err(_) if tokio::time::Instant::now() < deadline => {
                        let bus = self.bus.clone();
                        let t = topic.clone();
                        let _ = tokio::task::spawn_blocking(move || bus.partitions(&t)).await;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let mut reader = self
            .bus
            .reader(&format!("logpipe-cdc-source-{}", self.config.name), &names)
            .await?;
        let mut waiting = 0;
        for (topic, end) in &ends {
            let starts = reader.start_offsets(topic)?;
            for (partition, end) in end.iter().enumerate() {
                let first = starts.get(partition).copied().unwrap_or(0);
                if *end > first {
                    reader.seek(topic, partition as u32, end - 1)?;
                    waiting += 1;
                } else {
                    reader.seek(topic, partition as u32, *end)?;
                }
            }
        }
        let mut best: Option<(Position, bool)> = None;
        let mut copied = HashSet::new();
        let mut seen = std::collections::HashSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let records = reader.poll(1_000, Duration::from_millis(300)).await?;
            if records.is_empty() && seen.len() >= waiting {
                break;
            }
            if records.is_empty() && tokio::time::Instant::now() > deadline {
                return Err(CdcError::Resume(format!(
                    "reading the last record of {} partition(s) of {} took over 30 s",
                    waiting - seen.len(),
                    topics.join(", ")
                )));
            }
            for record in records {
                seen.insert((record.topic.to_string(), record.partition));
                let Some(position) = record.headers.get(RESUME_HEADER).and_then(Position::decode)
                else {
                    continue;
                };
                let phase = record.headers.get(PHASE_HEADER);
                let streamed = phase == Some(b"stream".as_slice());
                // A table's topic gets nothing after its last snapshot row
                // until the binlog is followed.
                if phase == Some(SNAPSHOT_DONE.as_bytes()) {
                    copied.insert(record.topic.to_string());
                }
                best = match best {
                    None => Some((position, streamed)),
                    Some((current, current_streamed)) => Some(match (current_streamed, streamed) {
                        (false, true) => (position, true),
                        (true, false) => (current, true),
                        (true, true) => (current.max(position), true),
                        // Snapshot records all carry the first snapshot's P.
                        (false, false) => (current.min(position), false),
                    }),
                };
            }
        }
        reader.close().await;
        Ok(Resume {
            position: best,
            copied,
        })
    }

    /// Copies the tables (but those whose topics are in `copied`) as of one
    /// binlog position and returns where the binlog must be read from
    /// (`keep`: a first snapshot's position).
    async fn snapshot(
        &self,
        conn: &mut Conn,
        keep: Option<Position>,
        copied: &HashSet<String>,
        shutdown: &Shutdown,
    ) -> Result<Position, CdcError> {
        let name = self.config.name.as_str();
        for statement in [
            "SET SESSION time_zone = '+00:00'",
            "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "START TRANSACTION WITH CONSISTENT SNAPSHOT",
        ] {
            conn.query_drop(statement)
                .await
                .map_err(source_error("starting the snapshot"))?;
        }
        let file: Option<(String, String)> = conn
            .query_first("SHOW STATUS LIKE 'binlog_snapshot_file'")
            .await
            .map_err(source_error("reading binlog_snapshot_file"))?;
        let pos: Option<(String, u64)> = conn
            .query_first("SHOW STATUS LIKE 'binlog_snapshot_position'")
            .await
            .map_err(source_error("reading binlog_snapshot_position"))?;
        let (Some((_, file)), Some((_, pos))) = (file, pos) else {
            return Err(self.setting(
                "the server gives no binlog_snapshot_file/position (a MariaDB with log_bin is needed)".into(),
            ));
        };
        let at = Position { file, pos };
        let start = keep.unwrap_or_else(|| at.clone());
        let _running = Running::set(name);
        tracing::info!(source = %name, at = %at.encode(), tables = self.config.tables.len(), "CDC source snapshot started");
        let headers = headers(&start, "snapshot");
        let last_headers = self::headers(&start, SNAPSHOT_DONE);
        let started = std::time::Instant::now();
        let mut total = 0u64;
        for full in &self.config.tables {
            if copied.contains(&self.config.topic(full)) {
                tracing::info!(source = %name, table = %full, "CDC source snapshot: table copied before, not copied again");
                continue;
            }
            let (db, table_name) = full.split_once('.').unwrap_or((full, ""));
            let sql = format!("SELECT * FROM {}.{}", quote(db), quote(table_name));
            let estimate: Option<u64> = conn
                .exec_first(
                    "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                    (db, table_name),
                )
                .await
                .ok()
                .flatten();
            // An ENUM's or a SET's values, which a result set does not carry.
            let enums: Vec<(String, String)> = conn
                .exec(
                    "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND DATA_TYPE IN ('enum', 'set')",
                    (db, table_name),
                )
                .await
                .map_err(source_error("reading a table's ENUM and SET values"))?;
            let allowed = |column: &str| {
                enums
                    .iter()
                    .find(|(name, _)| name == column)
                    .map(|(_, column_type)| columns::allowed_values(column_type))
                    .unwrap_or_default()
            };
            let mut result = conn
                .exec_iter(sql, ())
                .await
                .map_err(source_error("reading a table for the snapshot"))?;
            let columns = result.columns().unwrap_or_else(|| Arc::from(Vec::new()));
            let columns: Vec<SourceColumn> = columns
                .iter()
                .map(|c| SourceColumn::of(c, c.decimals(), allowed(&c.name_str())))
                .collect::<Result<_, _>>()
                .map_err(|e| self.in_table(full, e))?;
            let table = Table::new(db, table_name, self.config.topic(full), columns);
            let metrics = cdc_metrics();
            metrics
                .snapshot_rows
                .set(&[name, full, "estimated"], estimate.unwrap_or(0) as f64);
            let mut batch = Vec::new();
            let mut rows = 0u64;
            while let Some(row) = result
                .next()
                .await
                .map_err(source_error("reading a row for the snapshot"))?
            {
                let after = table
                    .row(row.unwrap())
                    .map_err(|e| self.in_table(full, e))?;
                let origin = Origin {
                    position: &at,
                    gtid: None,
                    server_id: 0,
                    ts_ms: chrono::Utc::now().timestamp_millis(),
                    row: 0,
                    snapshot: true,
                };
                let (key, value) = change_event(
                    self.config.prefix(),
                    &table,
                    "r",
                    None,
                    Some(after),
                    &origin,
                );
                batch.push(BusRecord {
                    key,
                    value,
                    headers: headers.clone(),
                });
                rows += 1;
                // The newest row is held back: it may be the table's last.
                if batch.len() > self.config.batch {
                    let last = batch.pop();
                    let appended = batch.len() as u64;
                    self.bus
                        .append(&table.topic, std::mem::take(&mut batch))
                        .await?;
                    batch.extend(last);
                    metrics.source_changes.add(&[name, full, "r"], appended);
                    metrics
                        .snapshot_rows
                        .set(&[name, full, "copied"], rows as f64);
                }
                if *shutdown.borrow() {
                    // Stopped: the table is copied again at the next start.
                    return Ok(start);
                }
            }
            // The last row alone, once every other was acknowledged: its
            // phase says the table is copied.
            let last = batch.pop();
            if !batch.is_empty() {
                let appended = batch.len() as u64;
                self.bus.append(&table.topic, batch).await?;
                metrics.source_changes.add(&[name, full, "r"], appended);
            }
            if let Some(mut last) = last {
                last.headers = last_headers.clone();
                self.bus.append(&table.topic, vec![last]).await?;
                metrics.source_changes.add(&[name, full, "r"], 1);
            }
            metrics
                .snapshot_rows
                .set(&[name, full, "copied"], rows as f64);
            total += rows;
            tracing::info!(source = %name, table = %full, rows, "CDC source snapshot: table copied");
        }
        conn.query_drop("COMMIT")
            .await
            .map_err(source_error("ending the snapshot"))?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(source = %name, rows = total, seconds, rows_per_second = (total as f64 / seconds.max(1e-9)) as u64, "CDC source snapshot done");
        Ok(start)
    }

    /// Follows the binlog from `start`, appending each batch of whole
    /// transactions, until `shutdown`.
    async fn stream(
        &self,
        opts: &Opts,
        start: Position,
        shutdown: &mut Shutdown,
        backoff: &mut Backoff,
    ) -> Result<(), CdcError> {
        let name = self.config.name.as_str();
        let mut conn = Conn::new(opts.clone())
            .await
            .map_err(source_error("connecting for the binlog"))?;
        // Without this MariaDB sends no GTID events.
        conn.query_drop("SET @mariadb_slave_capability = 4")
            .await
            .map_err(source_error("asking for MariaDB's GTID events"))?;
        let request = BinlogStreamRequest::new(self.config.server_id)
            .with_filename(start.file.as_bytes())
            .with_pos(start.pos);
        let mut stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(source_error("requesting the binlog"))?;
        tracing::info!(source = %name, from = %start.encode(), "CDC source following the binlog");
        let captured: std::collections::HashSet<&str> =
            self.config.tables.iter().map(String::as_str).collect();
        let mut tables: std::collections::HashMap<String, Table> = std::collections::HashMap::new();
        let mut file = start.file.clone();
        // The server's first event, a made-up rotate to `start.file`, comes
        // before the format description that says whether events end in a
        // checksum, so its name would carry those bytes: it is skipped (the
        // file is the one asked for).
        let mut described = false;
        // The open transaction: where it starts, its GTID, its records.
        let mut txn_start: Option<Position> = None;
        let mut gtid: Option<String> = None;
        let mut pending: Vec<(String, BusRecord)> = Vec::new();
        // Whole transactions not yet appended.
        let mut batch: Vec<(String, BusRecord)> = Vec::new();
        let mut batch_start: Option<Position> = None;
        // (table, op) of each change in `pending`, then in `batch`.
        let mut counts: Vec<(String, &'static str, u64)> = Vec::new();
        let mut batch_counts: Vec<(String, &'static str, u64)> = Vec::new();
        let metrics = cdc_metrics();
        metrics.source_lag.set(&[name], 0.0);
        // When the batch's first transaction joined it: the batch is
        // appended `linger` after that at the latest, however busy the
        // binlog is.
        let mut batch_since: Option<std::time::Instant> = None;
        loop {
            let wait = match batch_since {
                Some(since) => self.config.linger.saturating_sub(since.elapsed()),
                None => IDLE,
            };
            let next = tokio::select! {
                next = tokio::time::timeout(wait, stream.next()) => Some(next),
                _ = shutdown.wait_for(|stopped| *stopped) => None,
            };
            let Some(next) = next else {
                self.flush(&mut batch, &mut batch_start, &mut batch_counts)
                    .await?;
                return Ok(());
            };
            let event = match next {
                Err(_) => {
                    if batch_since.take().is_none() {
                        metrics.source_lag.set(&[name], 0.0);
                    }
                    self.flush(&mut batch, &mut batch_start, &mut batch_counts)
                        .await?;
                    continue;
                }
                Ok(None) => {
                    return Err(CdcError::Source {
                        context: "the binlog stream ended".into(),
                        source: mysql_async::Error::Other(
                            "the server closed the binlog stream".into(),
                        ),
                    });
                }
                Ok(Some(event)) => event.map_err(source_error("reading the binlog"))?,
            };
            let header = event.header();
            if header.timestamp() > 0 {
                let age = chrono::Utc::now().timestamp() - i64::from(header.timestamp());
                metrics.source_lag.set(&[name], age.max(0) as f64);
            }
            let event_start = u64::from(header.log_pos().saturating_sub(header.event_size()));
            if header.event_type_raw() == MARIADB_GTID_EVENT {
                // seq_no (8), domain_id (4), flags (1).
                let data = event.data();
                if data.len() >= 12 {
                    let seq = u64::from_le_bytes(data[0..8].try_into().unwrap_or_default());
                    let domain = u32::from_le_bytes(data[8..12].try_into().unwrap_or_default());
                    gtid = Some(format!("{domain}-{}-{seq}", header.server_id()));
                }
                txn_start = Some(Position {
                    file: file.clone(),
                    pos: event_start,
                });
                continue;
            }
            let data = event.read_data().map_err(|e| CdcError::Source {
                context: "decoding a binlog event".into(),
                source: e.into(),
            })?;
            let Some(data) = data else { continue };
            let commit = match data {
                EventData::RotateEvent(rotate) => {
                    if described {
                        file = rotate.name().into_owned();
                    }
                    false
                }
                EventData::FormatDescriptionEvent(_) => {
                    described = true;
                    false
                }
                EventData::XidEvent(_) => true,
                EventData::QueryEvent(query) => {
                    let text = query.query();
                    let text = text.trim();
                    if text.eq_ignore_ascii_case("BEGIN") {
                        if txn_start.is_none() {
                            txn_start = Some(Position {
                                file: file.clone(),
                                pos: event_start,
                            });
                        }
                        false
                    } else {
                        // COMMIT of a non-transactional table, or DDL
                        // (its own group: the next table map describes
                        // the new columns).
                        true
                    }
                }
                EventData::RowsEvent(rows) => {
                    let Some(tme) = stream.get_tme(rows.table_id()) else {
                        continue;
                    };
                    let full = format!("{}.{}", tme.database_name(), tme.table_name());
                    if !captured.contains(full.as_str()) {
                        continue;
                    }
                    let op =
                        match &rows {
                            RowsEventData::WriteRowsEventV1(_)
                            | RowsEventData::WriteRowsEvent(_) => "c",
                            RowsEventData::UpdateRowsEventV1(_)
                            | RowsEventData::UpdateRowsEvent(_)
                            | RowsEventData::PartialUpdateRowsEvent(_) => "u",
                            RowsEventData::DeleteRowsEventV1(_)
                            | RowsEventData::DeleteRowsEvent(_) => "d",
                        };
                    let position = txn_start.clone().unwrap_or_else(|| Position {
                        file: file.clone(),
                        pos: event_start,
                    });
                    // Every row of one rows event has the table map's
                    // columns: described once, from the first row.
                    let mut described = false;
                    let mut changes = 0u64;
                    for (index, row) in rows.rows(tme).enumerate() {
                        let (before, after) = row.map_err(|e| CdcError::Source {
                            context: format!("decoding a row of {full}"),
                            source: e.into(),
                        })?;
                        let Some(image) = after.as_ref().or(before.as_ref()) else {
                            continue;
                        };
                        if !described {
                            let (enums, sets) = enum_and_set_values(tme);
                            let (mut enums, mut sets) = (enums.into_iter(), sets.into_iter());
                            let columns: Vec<SourceColumn> = image
                                .columns_ref()
                                .iter()
                                .enumerate()
                                .map(|(i, c)| {
                                    use mysql_async::consts::ColumnType::{
                                        MYSQL_TYPE_ENUM, MYSQL_TYPE_NEWDECIMAL, MYSQL_TYPE_SET,
                                    };
                                    // A DECIMAL's scale is its metadata's second
                                    // byte, a time's precision the first.
                                    let meta = tme.get_column_metadata(i).unwrap_or(&[]);
                                    let (decimals, allowed) = match c.column_type() {
                                        MYSQL_TYPE_NEWDECIMAL => (meta.get(1), Vec::new()),
                                        MYSQL_TYPE_ENUM => {
                                            (meta.first(), enums.next().unwrap_or_default())
                                        }
                                        MYSQL_TYPE_SET => {
                                            (meta.first(), sets.next().unwrap_or_default())
                                        }
                                        _ => (meta.first(), Vec::new()),
                                    };
                                    SourceColumn::of(c, decimals.copied().unwrap_or(0), allowed)
                                })
                                .collect::<Result<_, _>>()
                                .map_err(|e| self.in_table(&full, e))?;
                            if tables.get(&full).is_none_or(|t| t.columns != columns) {
                                let table = Table::new(
                                    &tme.database_name(),
                                    &tme.table_name(),
                                    self.config.topic(&full),
                                    columns,
                                );
                                tables.insert(full.clone(), table);
                            }
                            described = true;
                        }
                        let table = &tables[&full];
                        let values = |row: Option<mysql_async::binlog::row::BinlogRow>| {
                            row.map(|row| {
                                table.row(row.unwrap().into_iter().zip(&table.columns).map(
                                    |(v, column)| {
                                        column
                                            .from_binlog(Value::try_from(v).unwrap_or(Value::NULL))
                                    },
                                ))
                            })
                            .transpose()
                            .map_err(|e| self.in_table(&full, e))
                        };
                        let before = values(before)?;
                        let after = values(after)?;
                        let origin = Origin {
                            position: &position,
                            gtid: gtid.as_deref(),
                            server_id: header.server_id(),
                            ts_ms: i64::from(header.timestamp()) * 1000,
                            row: index,
                            snapshot: false,
                        };
                        let (key, value) =
                            change_event(self.config.prefix(), table, op, before, after, &origin);
                        let tombstone =
                            (op == "d").then(|| BusRecord::new(key.clone(), Vec::new()));
                        pending.push((table.topic.clone(), BusRecord::new(key, value)));
                        if let Some(tombstone) = tombstone {
                            pending.push((table.topic.clone(), tombstone));
                        }
                        changes += 1;
                    }
                    counts.push((full, op, changes));
                    false
                }
                _ => false,
            };
            if commit {
                let txn = txn_start.take();
                if !pending.is_empty() {
                    batch_start.get_or_insert_with(|| {
                        txn.unwrap_or_else(|| Position {
                            file: file.clone(),
                            pos: event_start,
                        })
                    });
                    batch.append(&mut pending);
                    batch_counts.append(&mut counts);
                    batch_since.get_or_insert_with(std::time::Instant::now);
                }
                gtid = None;
                let lingered =
                    batch_since.is_some_and(|since| since.elapsed() >= self.config.linger);
                if batch.len() >= self.config.batch || lingered {
                    self.flush(&mut batch, &mut batch_start, &mut batch_counts)
                        .await?;
                    batch_since = None;
                    backoff.reset();
                }
            }
        }
    }

    /// Appends the batch, every record marked with the batch's start.
    async fn flush(
        &self,
        batch: &mut Vec<(String, BusRecord)>,
        batch_start: &mut Option<Position>,
        counts: &mut Vec<(String, &'static str, u64)>,
    ) -> Result<(), CdcError> {
        let Some(start) = batch_start.take() else {
            batch.clear();
            counts.clear();
            return Ok(());
        };
        let headers = headers(&start, "stream");
        let mut by_topic: std::collections::BTreeMap<String, Vec<BusRecord>> =
            std::collections::BTreeMap::new();
        for (topic, mut record) in batch.drain(..) {
            record.headers = headers.clone();
            by_topic.entry(topic).or_default().push(record);
        }
        for (topic, records) in by_topic {
            self.bus.append(&topic, records).await?;
        }
        let metrics = cdc_metrics();
        for (table, op, changes) in counts.drain(..) {
            metrics
                .source_changes
                .add(&[&self.config.name, &table, op], changes);
        }
        Ok(())
    }
}
