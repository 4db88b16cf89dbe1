//! The built-in web console in a real browser (Debian's Chromium driven by
//! npm `playwright-core`, `tests/console/console.test.mjs`) against a
//! real `logpipe up` with the built-in generator running an incident; and
//! `logpipe tail`, the console's live tail on the terminal.

use std::path::Path;
use std::process::Command;

use crate::common::{Running, binary, repo, stdout_of};

/// A `logpipe up` whose generator sends 100 logs/s over the default
/// services with an error burst on payment-service, and 1-second windows,
/// so charts, alerts and the tail move within seconds.
fn up_with_incident(dir: &Path) -> Running {
    let config = dir.join("console.toml");
    std::fs::write(
        &config,
        r#"
[generator]
log_interval = "500ms"
event_interval = "1s"
batch_size = 50

[[generator.incidents]]
kind = "error_burst"
service = "payment-service"
start = "8s"
duration = "10m"

[windows]
size = "1s"
allowed_lateness = "1s"
"#,
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
        &[],
    )
}

/// The page loads without errors, its charts move, the tail shows a record
/// just posted, a SQL query shows the right count, and a report run started
/// from the page appears in the job list (the checks are the script's).
/// `LOGPIPE_UPDATE_DOCS=1` also copies the overview screenshot to
/// `docs/images/console.png` (the README's).
#[test]
fn the_console_works_in_a_real_browser() {
    let modules = std::env::var("LOGPIPE_TEST_CONSOLE_MODULES").expect(
        "LOGPIPE_TEST_CONSOLE_MODULES is not set: run ./scripts/test.sh, which installs \
         Chromium (Debian) and playwright-core (npm) and sets it to their node_modules",
    );
    let tmp = tempfile::tempdir().unwrap();
    let running = up_with_incident(tmp.path());
    let shots = tmp.path().join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let output = Command::new("node")
        .arg(repo().join("crates/logpipe-cli/tests/console/console.test.mjs"))
        .arg(&running.base_url)
        .arg(&shots)
        .env("NODE_PATH", &modules)
        .output()
        .expect("node (Debian nodejs) runs the browser test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        let kept = tmp.keep();
        panic!(
            "the browser test failed:\n{text}\nscreenshots in {}\n{}",
            kept.join("screenshots").display(),
            running.log()
        );
    }
    eprintln!("{text}");
    if std::env::var_os("LOGPIPE_UPDATE_DOCS").is_some() {
        let images = repo().join("docs/images");
        std::fs::create_dir_all(&images).unwrap();
        std::fs::copy(shots.join("overview.png"), images.join("console.png")).unwrap();
    }
}

/// `logpipe tail` prints the newest records a filter keeps, as readable
/// lines or JSON, and names the problem when the process or the topic is
/// wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logpipe_tail_prints_the_newest_matching_records() {
    let tmp = tempfile::tempdir().unwrap();
    let running = Running::start(&tmp.path().join("data"), &[]);
    let client = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
    let logs: Vec<serde_json::Value> = (0..30)
        .map(|n| {
            serde_json::json!({"timestamp": now + n as f64 * 0.001,
                "level": if n % 3 == 0 { "ERROR" } else { "INFO" },
                "service": if n % 2 == 0 { "tail-a" } else { "tail-b" },
                "host": "h1", "message": format!("tail message {n}"),
                "metadata": {"request_id": format!("t{n}"), "response_time_ms": 5,
                             "status_code": 200, "endpoint": "/x", "method": "GET"}})
        })
        .collect();
    let (status, answer) = crate::common::post(
        &client,
        &format!("{}/api/collect/logs", running.base_url),
        serde_json::Value::from(logs).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let tail = |args: &[&str]| -> String {
        let out = stdout_of(
            Command::new(binary())
                .args(["tail", "--url", &running.base_url, "--no-follow"])
                .args(args),
            "logpipe tail",
        );
        String::from_utf8(out).unwrap()
    };
    // ERROR and tail-a: n divisible by 6 → 0, 6, 12, 18, 24; the newest 3.
    let out = tail(&["--service", "tail-a", "--level", "error", "-n", "3"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for (line, n) in lines.iter().zip([12, 18, 24]) {
        assert!(
            line.contains(" ERROR tail-a h1 ") && line.ends_with(&format!("tail message {n}")),
            "{out}"
        );
    }
    let out = tail(&["--service", "tail-b", "--json", "-n", "100"]);
    assert_eq!(out.lines().count(), 15, "{out}");
    for line in out.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["service"], "tail-b");
    }
    let refused = Command::new(binary())
        .args([
            "tail",
            "--url",
            &running.base_url,
            "--topic",
            "nope",
            "--no-follow",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("unknown topic") && stderr.contains("logs.raw"),
        "{stderr}"
    );
    let unreachable = Command::new(binary())
        .args(["tail", "--url", "http://127.0.0.1:9", "--no-follow"])
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
    assert!(
        String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach"),
        "{}",
        String::from_utf8_lossy(&unreachable.stderr)
    );
}

/// With `[[auth.tokens]]` the console page still loads, asks for a token
/// with the server's reason, and shows data once given one.
#[test]
fn the_console_asks_for_a_token_when_the_server_wants_one() {
    let modules = std::env::var("LOGPIPE_TEST_CONSOLE_MODULES")
        .expect("LOGPIPE_TEST_CONSOLE_MODULES is not set: run ./scripts/test.sh");
    let tmp = tempfile::tempdir().unwrap();
    let token = "console-token-0123456789";
    let config = tmp.path().join("auth.toml");
    std::fs::write(
        &config,
        format!(
            "[generator]\nlog_interval = \"300ms\"\n\n[[auth.tokens]]\nname = \"viewer\"\n\
             scopes = [\"query\", \"admin\"]\nsha256 = \"{}\"\n",
            logpipe_http::auth::hash_hex(token)
        ),
    )
    .unwrap();
    let running = Running::start_role(
        &[
            "up",
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ],
        &tmp.path().join("data"),
        &[],
    );
    let output = Command::new("node")
        .arg(repo().join("crates/logpipe-cli/tests/console/token.test.mjs"))
        .arg(&running.base_url)
        .arg(token)
        .env("NODE_PATH", &modules)
        .output()
        .expect("node runs the browser test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}\n{}", running.log());
}
