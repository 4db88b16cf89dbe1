//! Talking to logpipe over HTTP: a running binary, or a router in-process.

use std::time::{Duration, Instant};

/// POSTs `body`, returning status and parsed JSON answer. An answer that
/// takes longer than five minutes fails the test rather than holding it.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, serde_json::Value) {
    let response = client
        .post(url)
        .body(body)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Polls the query API until `sql`'s first row's `n` reaches `expected`.
pub async fn wait_for_count(
    client: &reqwest::Client,
    base_url: &str,
    sql: &str,
    expected: u64,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let (status, answer) = post(
            client,
            &format!("{base_url}/api/query"),
            serde_json::json!({ "sql": sql }).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let n = answer["rows"][0]["n"].as_u64().unwrap_or(0);
        if n >= expected {
            assert_eq!(n, expected, "more rows than sent: {answer}");
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "only {n} of {expected} rows after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `request` through `router` in-process (no socket) and returns the
/// status and the JSON answer (`Null` when it is not JSON).
pub async fn call(
    router: &axum::Router,
    request: axum::http::Request<axum::body::Body>,
) -> (axum::http::StatusCode, serde_json::Value) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}
