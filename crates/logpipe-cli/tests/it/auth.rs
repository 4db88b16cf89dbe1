//! Exposing logpipe to strangers: API tokens with scopes on every route
//! group, the refusal to listen openly without them, and the limits that
//! keep one SQL query from taking the process.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Running, binary};

const SHIP: &str = "ship-token-0123456789";
const ANALYST: &str = "analyst-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";

fn hash(token: &str) -> String {
    logpipe_http::auth::hash_hex(token)
}

/// `logpipe up` with three tokens (one by hash, one from the environment,
/// one from a file), its generator on, and tight query limits.
fn start(dir: &std::path::Path) -> Running {
    let token_file = dir.join("operator.token");
    std::fs::write(&token_file, format!("{OPERATOR}\n")).unwrap();
    let config = dir.join("auth.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[generator]
log_interval = "200ms"
event_interval = "500ms"
batch_size = 20

[query]
timeout = "2s"
max_memory_bytes = 67108864

[[auth.tokens]]
name = "shipper"
scopes = ["ingest"]
sha256 = "{}"

[[auth.tokens]]
name = "analyst"
scopes = ["query"]
token_env = "ANALYST_TOKEN"

[[auth.tokens]]
name = "operator"
scopes = ["query", "admin"]
token_file = "{}"
"#,
            hash(SHIP),
            token_file.display()
        ),
    )
    .unwrap();
    Running::start_role(
        &[
            "up",
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ],
        &dir.join("data"),
        &[("ANALYST_TOKEN", ANALYST)],
    )
}

async fn call(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, Option<String>) {
    let mut request = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        challenge,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_scopes_guard_every_route_and_limits_stop_a_runaway_query() {
    let tmp = tempfile::tempdir().unwrap();
    let running = start(tmp.path());
    let base = running.base_url.clone();
    let client = reqwest::Client::new();
    let log = json!([{"timestamp": chrono::Utc::now().timestamp() as f64, "level": "INFO",
        "service": "auth-test", "host": "h", "message": "m",
        "metadata": {"request_id": "auth-1"}}]);
    let url = |path: &str| format!("{base}{path}");

    // Probes and the page itself need no token; /metrics is open by default.
    for path in ["/health", "/ready", "/metrics", "/"] {
        let (status, body, _) = call(&client, "GET", &url(path), None, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }

    // Ingest: no token is 401 with a challenge, a token without the scope
    // is 403 naming it, the shipper's is taken.
    let collect = url("/api/collect/logs");
    let (status, body, challenge) = call(&client, "POST", &collect, None, Some(log.clone())).await;
    assert_eq!(status, 401, "{body}");
    assert!(challenge.unwrap().starts_with("Bearer"));
    assert!(
        body["error"].as_str().unwrap().contains("scope ingest"),
        "{body}"
    );
    let (status, body, _) = call(&client, "POST", &collect, Some("wrong"), Some(log.clone())).await;
    assert_eq!(status, 401, "{body}");
    let (status, body, _) = call(&client, "POST", &collect, Some(ANALYST), Some(log.clone())).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("\"analyst\" lacks scope ingest"),
        "{body}"
    );
    let (status, body, _) = call(&client, "POST", &collect, Some(SHIP), Some(log.clone())).await;
    assert_eq!(status, 200, "{body}");
    let otlp = json!({"resourceLogs": []});
    let (status, _, _) = call(&client, "POST", &url("/v1/logs"), None, Some(otlp.clone())).await;
    assert_eq!(status, 401);
    let (status, body, _) = call(&client, "POST", &url("/v1/logs"), Some(SHIP), Some(otlp)).await;
    assert_eq!(status, 200, "{body}");

    // Query: the analyst (from the environment) and the operator (from a
    // file) read; the shipper does not.
    let sql = json!({"sql": "SELECT count(*) AS n FROM logs"});
    let (status, _, _) = call(&client, "POST", &url("/api/query"), None, Some(sql.clone())).await;
    assert_eq!(status, 401);
    let (status, _, _) = call(
        &client,
        "POST",
        &url("/api/query"),
        Some(SHIP),
        Some(sql.clone()),
    )
    .await;
    assert_eq!(status, 403);
    for token in [ANALYST, OPERATOR] {
        let (status, body, _) = call(
            &client,
            "POST",
            &url("/api/query"),
            Some(token),
            Some(sql.clone()),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    for path in [
        "/api/alerts",
        "/api/overview",
        "/api/topics",
        "/api/jobs",
        "/api/stats",
    ] {
        let (status, _, _) = call(&client, "GET", &url(path), None, None).await;
        assert_eq!(status, 401, "{path}");
        let (status, body, _) = call(&client, "GET", &url(path), Some(ANALYST), None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }

    // Admin: the tail and report runs.
    let tail = url("/api/tail?topic=logs.raw&limit=5");
    let (status, _, _) = call(&client, "GET", &tail, Some(ANALYST), None).await;
    assert_eq!(status, 403);
    let (status, body, _) = call(&client, "GET", &tail, Some(OPERATOR), None).await;
    assert_eq!(status, 200, "{body}");
    let run = json!({"report": "daily"});
    let (status, _, _) = call(
        &client,
        "POST",
        &url("/api/reports/run"),
        Some(ANALYST),
        Some(run.clone()),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body, _) = call(
        &client,
        "POST",
        &url("/api/reports/run"),
        Some(OPERATOR),
        Some(run),
    )
    .await;
    assert_eq!(status, 202, "{body}");

    // The built-in generator has a token of its own: its records arrive.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, stats, _) = call(&client, "GET", &url("/api/stats"), Some(ANALYST), None).await;
        if stats["records_accepted"].as_u64().unwrap_or(0) > 100 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the generator's records were refused:\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The clients: `logpipe generate` and `logpipe tail` take a token.
    let generate = |token: Option<&str>| {
        let mut command = Command::new(binary());
        command.args([
            "generate",
            "--target",
            &base,
            "--count",
            "50",
            "--batch-size",
            "25",
        ]);
        command.args(["--retry-for-secs", "2"]);
        command.env_remove("LOGPIPE_TOKEN");
        if let Some(token) = token {
            command.env("LOGPIPE_TOKEN", token);
        }
        command.output().unwrap()
    };
    assert!(generate(Some(SHIP)).status.success());
    let refused = generate(None);
    assert!(!refused.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(said.contains("401"), "{said}");
    let tailed = Command::new(binary())
        .args(["tail", "--url", &base, "--no-follow", "--token", OPERATOR])
        .output()
        .unwrap();
    assert!(
        tailed.status.success(),
        "{}",
        String::from_utf8_lossy(&tailed.stderr)
    );

    // Limits: a query that runs away is stopped at query.timeout, one whose
    // result is too large at query.max_memory_bytes; both name the setting.
    let began = Instant::now();
    let (status, body, _) = call(
        &client,
        "POST",
        &url("/api/query"),
        Some(ANALYST),
        Some(json!({"sql": "SELECT count(*) AS n FROM generate_series(1, 100000000000)"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("query.timeout"),
        "{body}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    let (status, body, _) = call(
        &client,
        "POST",
        &url("/api/query"),
        Some(ANALYST),
        // 100 MB in batches of 8 MB: the result outgrows the limit while
        // the query yields between batches, well within query.timeout.
        Some(json!({
            "sql": "SELECT repeat('x', 1000) AS big FROM generate_series(1, 100000)",
            "max_rows": 100000
        })),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("query.max_memory_bytes"),
        "{body}"
    );
    // SQL stays inside the lake's tables: no files, URLs, DDL or writes.
    for (sql, refusal) in [
        ("SELECT * FROM '/etc/passwd'", "not found"),
        ("SELECT * FROM 'https://example.com/x.parquet'", "not found"),
        ("SELECT * FROM read_csv('/etc/passwd')", "not found"),
        (
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "DDL not supported",
        ),
        (
            "COPY (SELECT 1) TO '/tmp/logpipe-escape.csv'",
            "not supported",
        ),
        ("SET datafusion.execution.batch_size = 1", "not supported"),
    ] {
        let (status, body, _) = call(
            &client,
            "POST",
            &url("/api/query"),
            Some(ANALYST),
            Some(json!({ "sql": sql })),
        )
        .await;
        assert_eq!(status, 400, "{sql}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(refusal),
            "{sql}: {body}"
        );
    }
    assert!(!std::path::Path::new("/tmp/logpipe-escape.csv").exists());
    // Ingest still answers after both.
    let (status, _, _) = call(&client, "POST", &collect, Some(SHIP), Some(log)).await;
    assert_eq!(status, 200);
}

/// Without tokens, `logpipe up` refuses a non-loopback address before it
/// binds anything, and says what to do.
#[test]
fn listening_openly_without_tokens_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(binary())
        .args([
            "up",
            "--no-generator",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
        ])
        .arg(tmp.path().join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without authentication")
            && stderr.contains("[[auth.tokens]]")
            && stderr.contains("auth.allow_unauthenticated"),
        "{stderr}"
    );
}

/// Opens a connection that sends a collect request's headers declaring
/// `length` body bytes, then only `sent` of them, and holds it.
fn slow_request(address: &str, length: usize, sent: usize) -> std::net::TcpStream {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "POST /api/collect/logs HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n{}",
        "[".repeat(sent)
    )
    .unwrap();
    stream.flush().unwrap();
    stream
}

/// The answer on a held connection (status line and body), waiting up to
/// `limit`.
fn answer_of(stream: &mut std::net::TcpStream, limit: Duration) -> String {
    use std::io::Read;
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut text = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buffer) {
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buffer[..n]);
        if String::from_utf8_lossy(&text).contains("\"error\"}") {
            break;
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// Clients that misbehave get an answer naming the limit, not a broken
/// pipe or a server that stops answering others: a body over the limit
/// sent whole before reading (Python's urllib), a body that never
/// finishes, more requests or body bytes at once than allowed, too many
/// records in one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_get_answers_naming_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("limits.toml");
    std::fs::write(
        &config,
        r#"
[collector]
max_body_bytes = 65536
max_bytes_in_flight = 131072
max_concurrent_requests = 3
body_timeout = "3s"
max_records_per_request = 10
idle_timeout = "4s"
"#,
    )
    .unwrap();
    let running = Running::start_with_config(&tmp.path().join("data"), &[], &config);
    let base = running.base_url.clone();
    let address = base.trim_start_matches("http://").to_string();
    let client = reqwest::Client::new();
    let log = |n: usize| -> Value {
        Value::Array(
            (0..n)
                .map(|i| {
                    json!({"timestamp": chrono::Utc::now().timestamp() as f64, "level": "INFO",
                           "service": "limits", "host": "h", "message": format!("m{i}")})
                })
                .collect(),
        )
    };
    let post = |body: Value| {
        let client = client.clone();
        let url = format!("{base}/api/collect/logs");
        async move {
            let response = client
                .post(url)
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };

    // urllib writes 1 MiB before it reads: it still gets the 413 and why.
    let out = crate::common::python(
        r#"
import sys, urllib.request, urllib.error
body = b"[" + b" " * (1 << 20) + b"]"
request = urllib.request.Request(sys.argv[1] + "/api/collect/logs", data=body,
                                 headers={"Content-Type": "application/json"})
try:
    urllib.request.urlopen(request, timeout=30)
    print("accepted")
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"#,
        &[&base],
    );
    assert!(
        out.starts_with("413") && out.contains("collector.max_body_bytes"),
        "{out}"
    );

    // Too many records in one request.
    let (status, text) = post(log(11)).await;
    assert_eq!(status, 413, "{text}");
    assert!(
        text.contains("collector.max_records_per_request (10)"),
        "{text}"
    );
    let (status, text) = post(log(10)).await;
    assert_eq!(status, 200, "{text}");

    // Two slow bodies declaring 64 KiB each hold all the bytes in flight.
    let mut a = slow_request(&address, 65536, 10);
    let mut b = slow_request(&address, 65536, 10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, text) = post(log(1)).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("collector.max_bytes_in_flight"), "{text}");
    // ...and each is answered 408 when collector.body_timeout runs out.
    for slow in [&mut a, &mut b] {
        let answer = answer_of(slow, Duration::from_secs(10));
        assert!(
            answer.starts_with("HTTP/1.1 408") && answer.contains("collector.body_timeout"),
            "{answer}"
        );
    }
    // Three slow requests hold every request slot.
    let mut held: Vec<_> = (0..3).map(|_| slow_request(&address, 100, 1)).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, text) = post(log(1)).await;
    assert_eq!(status, 503, "{text}");
    assert!(
        text.contains("collector.max_concurrent_requests (3)"),
        "{text}"
    );
    for slow in &mut held {
        assert!(answer_of(slow, Duration::from_secs(10)).starts_with("HTTP/1.1 408"));
    }
    // A client that never finishes its headers loses its connection once
    // it has been silent for collector.idle_timeout.
    {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream
            .write_all(b"POST /api/collect/logs HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let began = Instant::now();
        let mut buffer = [0u8; 64];
        let closed = matches!(stream.read(&mut buffer), Ok(0) | Err(_))
            && began.elapsed() < Duration::from_secs(14);
        assert!(
            closed,
            "a connection without headers was held {:?}",
            began.elapsed()
        );
        assert!(
            began.elapsed() >= Duration::from_secs(3),
            "{:?}",
            began.elapsed()
        );
    }
    // Once they are gone, requests are taken again.
    let (status, text) = post(log(2)).await;
    assert_eq!(status, 200, "{text}");
    let metrics = running.metrics().await;
    for reason in ["overloaded", "slow_body", "too_large"] {
        let line = format!("logpipe_collector_requests_refused_total{{reason=\"{reason}\"}} ");
        let count: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        assert!(count > 0.0, "{reason} not counted:\n{metrics}");
    }
}

/// `logpipe token` prints a new token on stdout and, on stderr, the
/// `[[auth.tokens]]` entry whose SHA-256 lets exactly that token in; an
/// unknown scope is refused naming the valid ones.
#[test]
fn logpipe_token_prints_a_token_and_the_entry_that_lets_it_in() {
    let output = Command::new(binary())
        .args(["token", "--name", "shipper", "--scopes", "ingest,query"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert_eq!(token.len(), 64, "{token}");
    let entry = String::from_utf8(output.stderr).unwrap();
    assert!(
        entry.contains("name = \"shipper\"") && entry.contains("scopes = [\"ingest\", \"query\"]"),
        "{entry}"
    );
    assert!(
        entry.contains(&format!("sha256 = \"{}\"", hash(&token))),
        "{entry}"
    );
    let refused = Command::new(binary())
        .args(["token", "--scopes", "root"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("use ingest, query and/or admin"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
