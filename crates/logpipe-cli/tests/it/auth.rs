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
        Some(json!({"sql": "SELECT repeat('x', 100000000) AS big"})),
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
