//! Load clients and what the lake holds of their records: the request ids
//! (`metadata.request_id`) each test sends, counted in the lake.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{assert_exactly_once, sql_json_env};

/// A log record in the documented format, with `request_id` = `id`.
pub fn log(id: &str, service: &str, seq: u64) -> serde_json::Value {
    json!({"timestamp": 1736645166.0 + seq as f64 * 0.01, "level": "INFO", "service": service,
           "host": "worker-1", "message": "Request processed successfully",
           "metadata": {"request_id": id, "response_time_ms": 45, "status_code": 200,
                        "endpoint": "/api/users", "method": "GET"}})
}

/// request_id → rows in the lake, for the ids starting with `prefix`.
pub fn lake_counts(data: &Path, prefix: &str) -> BTreeMap<String, u64> {
    lake_counts_in(data, &[], prefix)
}

/// [`lake_counts`] of a lake `env` puts elsewhere (`LOGPIPE__LAKE__ROOT`).
pub fn lake_counts_in(data: &Path, env: &[(&str, &str)], prefix: &str) -> BTreeMap<String, u64> {
    sql_json_env(
        data,
        env,
        &format!(
            "SELECT request_id, count(*) AS n FROM logs WHERE request_id LIKE '{prefix}%' GROUP BY request_id"
        ),
    )
    .iter()
    .map(|row| {
        (
            row["request_id"].as_str().unwrap().to_string(),
            row["n"].as_u64().unwrap(),
        )
    })
    .collect()
}

/// Waits until every id of `wanted` is in the lake (or 90 s pass).
pub fn wait_for_lake(
    data: &Path,
    prefix: &str,
    wanted: &BTreeSet<String>,
) -> BTreeMap<String, u64> {
    wait_for_lake_in(data, &[], prefix, wanted)
}

/// [`wait_for_lake`] for a lake `env` may put elsewhere.
pub fn wait_for_lake_in(
    data: &Path,
    env: &[(&str, &str)],
    prefix: &str,
    wanted: &BTreeSet<String>,
) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        // Before the process made its data directory `logpipe sql` has
        // nothing to open (the lake itself may be elsewhere: S3).
        let counts = if data.exists() {
            lake_counts_in(data, env, prefix)
        } else {
            BTreeMap::new()
        };
        if wanted.iter().all(|id| counts.contains_key(id)) || Instant::now() > deadline {
            return counts;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// How a load client retries a request the collector did not accept.
#[derive(Clone, Copy, Debug)]
pub enum Retries {
    /// The same `Idempotency-Key` on every attempt, until a 2xx or the
    /// end of the load.
    Keyed,
    /// No key, as the seed's generator: at most this many attempts, each
    /// after a non-2xx answer, as the 503 asks.
    Unkeyed(u32),
}

/// What became of a load client's requests, by record id.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Records of requests finally answered 2xx.
    pub acked: Vec<String>,
    /// Records of requests answered 503 at least once.
    pub refused_once: BTreeSet<String>,
    /// Records of requests whose last answer was not 2xx: never stored.
    pub failed: Vec<String>,
    /// Requests without an answer (the connection broke or was refused),
    /// each with its records: stored whole or not at all.
    pub unanswered: Vec<Vec<String>>,
}

impl Outcomes {
    pub fn merge(&mut self, other: Outcomes) {
        self.acked.extend(other.acked);
        self.refused_once.extend(other.refused_once);
        self.failed.extend(other.failed);
        self.unanswered.extend(other.unanswered);
    }
}

/// POSTs requests of `per_request` logs (ids `TASK-BATCH-I`) to
/// `base_url` until `stop`, retrying as `retries` says.
pub async fn load(
    base_url: String,
    task: String,
    per_request: u64,
    retries: Retries,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Outcomes {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let services = [
        "api-gateway",
        "payment-service",
        "user-service",
        "auth",
        "search",
    ];
    let mut outcomes = Outcomes::default();
    for batch in 0u64.. {
        if *stop.borrow() {
            break;
        }
        let ids: Vec<String> = (0..per_request)
            .map(|i| format!("{task}-{batch:05}-{i:03}"))
            .collect();
        let body: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                log(
                    id,
                    services[i % services.len()],
                    batch * per_request + i as u64,
                )
            })
            .collect();
        let body = serde_json::Value::from(body).to_string();
        let key = format!("load-{task}-{batch}");
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut request = client
                .post(format!("{base_url}/api/collect/logs"))
                .body(body.clone());
            if let Retries::Keyed = retries {
                request = request.header("Idempotency-Key", &key);
            }
            let status = match request.send().await {
                Ok(response) => response.status().as_u16(),
                Err(_) => {
                    // Lost with the collector (or never reached it).
                    outcomes.unanswered.push(ids);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
            };
            if status == 200 {
                outcomes.acked.extend(ids);
                break;
            }
            assert_eq!(status, 503, "unexpected answer {status}");
            outcomes.refused_once.extend(ids.iter().cloned());
            let give_up = match retries {
                // Still refused when the load ends: never acknowledged, so
                // nothing of it is owed to the lake (and a broken broker
                // cannot hang the test).
                Retries::Keyed => *stop.borrow(),
                Retries::Unkeyed(most) => attempts >= most || *stop.borrow(),
            };
            if give_up {
                outcomes.failed.extend(ids);
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    outcomes
}

/// Fails unless no id of `refused` (requests whose last answer was not
/// 2xx) is in the lake.
pub fn assert_none_stored(refused: &[String], counts: &BTreeMap<String, u64>, log: &str) {
    let stored: Vec<_> = refused
        .iter()
        .filter(|id| counts.contains_key(*id))
        .collect();
    assert!(
        stored.is_empty(),
        "{} of {} records of refused requests are in the lake, e.g. {:?}:\n{log}",
        stored.len(),
        refused.len(),
        &stored[..stored.len().min(5)]
    );
}

/// Fails unless each unanswered request is in the lake whole (once) or not
/// at all; returns how many are there whole (a lost answer after the
/// commit: the Idempotency-Key's case).
pub fn assert_all_or_nothing(
    unanswered: &[Vec<String>],
    counts: &BTreeMap<String, u64>,
    log: &str,
) -> usize {
    let mut whole = 0;
    for ids in unanswered {
        let stored = ids.iter().filter(|id| counts.contains_key(*id)).count();
        assert!(
            stored == 0 || stored == ids.len(),
            "an unanswered request is in the lake in part ({stored} of {} records, e.g. {}):\n{log}",
            ids.len(),
            ids[0]
        );
        if stored > 0 {
            whole += 1;
        }
    }
    whole
}

/// Every load client's outcomes, together.
pub async fn outcomes_of(senders: Vec<tokio::task::JoinHandle<Outcomes>>) -> Outcomes {
    let mut all = Outcomes::default();
    for sender in senders {
        all.merge(sender.await.unwrap());
    }
    all
}

/// Waits for the acknowledged records of ids `prefix…` in the lake, then
/// checks each answer: 200 exactly once, refused nowhere, unanswered whole
/// or not at all. Returns the lake's counts.
pub fn check_answers(
    data: &Path,
    prefix: &str,
    outcomes: &Outcomes,
    logs: &str,
) -> BTreeMap<String, u64> {
    let wanted: BTreeSet<String> = outcomes.acked.iter().cloned().collect();
    wait_for_lake(data, prefix, &wanted);
    // A moment more: records of a refused request that were (wrongly)
    // committed would arrive along with the acknowledged ones.
    std::thread::sleep(Duration::from_secs(2));
    let counts = lake_counts(data, prefix);
    assert_exactly_once(&wanted, &counts, logs);
    assert_none_stored(&outcomes.failed, &counts, logs);
    let whole = assert_all_or_nothing(&outcomes.unanswered, &counts, logs);
    if whole > 0 {
        eprintln!(
            "{whole} unanswered requests were stored whole (an answer lost after the commit)"
        );
    }
    counts
}
