//! `logpipe tail`: the newest records of a topic from a running process's
//! `/api/tail`, then each new one as it arrives (polling once a second).
//! Works the same on both buses: the process that owns the bus reads it.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::args::TailArgs;

/// Records a follow poll asks for (more than arrive in a second at the
/// rates a terminal can show).
const FOLLOW_LIMIT: usize = 500;
/// Positions remembered to print each record once.
const SEEN_KEPT: usize = 100_000;

pub(crate) async fn run(args: TailArgs) -> Result<ExitCode> {
    let roots = logpipe_gen::read_roots(args.ca_file.as_deref())
        .map_err(|e| anyhow::anyhow!("--ca-file: {e}"))?;
    let client = logpipe_gen::client(
        reqwest::Client::builder().timeout(Duration::from_secs(10)),
        args.token.as_deref(),
        &roots,
    );
    let base = args.url.trim_end_matches('/');
    let mut seen: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut limit = args.lines.clamp(1, FOLLOW_LIMIT);
    loop {
        let records = fetch(&client, base, &args, limit).await?;
        // The answer is newest first; print oldest first, each once.
        for record in records.iter().rev() {
            let position = (
                record["partition"].as_u64().unwrap_or(0),
                record["offset"].as_u64().unwrap_or(0),
            );
            if !seen.insert(position) {
                continue;
            }
            println!("{}", line(record, args.json));
        }
        while seen.len() > SEEN_KEPT {
            seen.pop_first();
        }
        if args.no_follow {
            return Ok(ExitCode::SUCCESS);
        }
        limit = FOLLOW_LIMIT;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn fetch(
    client: &reqwest::Client,
    base: &str,
    args: &TailArgs,
    limit: usize,
) -> Result<Vec<Value>> {
    let mut query: Vec<(&str, String)> =
        vec![("topic", args.topic.clone()), ("limit", limit.to_string())];
    if let Some(service) = &args.service {
        query.push(("service", service.clone()));
    }
    if let Some(level) = &args.level {
        query.push(("level", level.clone()));
    }
    let url = format!("{base}/api/tail");
    let response = client
        .get(&url)
        .query(&query)
        .send()
        .await
        .with_context(|| format!("cannot reach {url} (is `logpipe up` running there? --url)"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("{url} did not answer JSON"))?;
    if !status.is_success() {
        bail!(
            "{url}: {status}: {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(body["records"].as_array().cloned().unwrap_or_default())
}

/// `TIME LEVEL SERVICE HOST MESSAGE` for a log, the JSON otherwise.
fn line(record: &Value, json: bool) -> String {
    let value = &record["value"];
    if json {
        return value.to_string();
    }
    let text = |field: &str| value[field].as_str().unwrap_or("-").to_string();
    match (&value["level"], &value["message"]) {
        (Value::String(level), Value::String(message)) => {
            let time = match &value["timestamp"] {
                Value::Number(n) => n
                    .as_f64()
                    .and_then(|secs| chrono::DateTime::from_timestamp_micros((secs * 1e6) as i64))
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                    .unwrap_or_else(|| n.to_string()),
                Value::String(s) => s.clone(),
                _ => "-".to_string(),
            };
            format!(
                "{time} {level:<5} {} {} {message}",
                text("service"),
                text("host")
            )
        }
        _ => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_prints_as_one_readable_line_and_anything_else_as_json() {
        let log = serde_json::json!({"partition": 1, "offset": 7, "value": {
            "timestamp": 1736645166.5, "level": "ERROR", "service": "api", "host": "w1",
            "message": "boom"}});
        assert_eq!(
            line(&log, false),
            "2025-01-12T01:26:06.500Z ERROR api w1 boom"
        );
        let event = serde_json::json!({"value": {"event_type": "click"}});
        assert_eq!(line(&event, false), r#"{"event_type":"click"}"#);
        assert_eq!(line(&log, true).chars().next(), Some('{'));
    }
}
