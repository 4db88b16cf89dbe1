//! What an operator watches: the Prometheus rules, the Alertmanager
//! configuration and the Grafana dashboards of `deploy/`, checked with the
//! real tools (Debian's `prometheus` and `prometheus-alertmanager`), and
//! then against a real `logpipe up` under load: Prometheus scrapes it,
//! `promtool check metrics` finds nothing to lint, every rule and every
//! dashboard query evaluates, and an injected error burst fires
//! HighErrorRate through Alertmanager to a webhook and resolves after it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::analytics::webhook_server;
use crate::common::services::free_port;
use crate::common::{Running, binary, repo};

/// Runs a tool and returns its combined output; fails naming the tool
/// when it is missing or exits non-zero.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|error| {
        panic!(
            "cannot run {program} ({error}): install Debian's prometheus and \
             prometheus-alertmanager (./scripts/test.sh does)"
        )
    });
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{text}"
    );
    text
}

/// Every panel query of `deploy/grafana/dashboards.py`.
fn panel_queries() -> Vec<Value> {
    let out = run(
        "python3",
        &["deploy/grafana/dashboards.py", "--queries"],
        None,
    );
    serde_json::from_str(&out).unwrap()
}

/// The family names docs/METRICS.md lists.
fn catalog() -> BTreeSet<String> {
    let page = std::fs::read_to_string(repo().join("docs/METRICS.md")).unwrap();
    page.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_string)
        .collect()
}

/// The metric names an expression uses (`logpipe_*`, `process_*`), with a
/// histogram's `_bucket`/`_count`/`_sum` taken back to its family.
fn metric_names(text: &str, catalog: &BTreeSet<String>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..].iter().collect();
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == '_');
        if starts_word && (rest.starts_with("logpipe_") || rest.starts_with("process_")) {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            i += name.len();
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|base| catalog.contains(*base))
                })
                .map(str::to_string)
                .unwrap_or(name);
            names.insert(family);
        } else {
            i += 1;
        }
    }
    names
}

/// `promtool` and `amtool` accept the files of `deploy/`, the rules' unit
/// tests pass, the dashboards are what their generator writes and are laid
/// out on Grafana's grid, and every metric they name is in the catalog.
#[test]
fn rules_alertmanager_and_dashboards_pass_the_real_checkers() {
    run(
        "promtool",
        &[
            "check",
            "config",
            "deploy/prometheus/prometheus.yml",
            "deploy/prometheus/prometheus-scaled.yml",
        ],
        None,
    );
    run(
        "promtool",
        &[
            "check",
            "rules",
            "deploy/prometheus/rules/logpipe.rules.yml",
        ],
        None,
    );
    let tested = run(
        "promtool",
        &[
            "test",
            "rules",
            "deploy/prometheus/tests/logpipe.rules.test.yml",
        ],
        None,
    );
    assert!(tested.contains("SUCCESS"), "{tested}");
    run(
        "amtool",
        &["check-config", "deploy/alertmanager/alertmanager.yml"],
        None,
    );
    run(
        "python3",
        &["deploy/grafana/dashboards.py", "--check"],
        None,
    );

    let catalog = catalog();
    let rules =
        std::fs::read_to_string(repo().join("deploy/prometheus/rules/logpipe.rules.yml")).unwrap();
    let mut named = metric_names(&rules, &catalog);
    for query in panel_queries() {
        named.extend(metric_names(query["expr"].as_str().unwrap(), &catalog));
    }
    let unknown: Vec<&String> = named.iter().filter(|n| !catalog.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "the rules or dashboards name metrics docs/METRICS.md does not list: {unknown:?}"
    );

    for board in ["overview", "bus", "processing", "storage"] {
        let path = repo().join(format!("deploy/grafana/dashboards/{board}.json"));
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let panels = dashboard["panels"].as_array().unwrap();
        assert!(panels.len() >= 6, "{board}: only {} panels", panels.len());
        let mut ids = BTreeSet::new();
        let mut cells = BTreeSet::new();
        for panel in panels {
            let title = panel["title"].as_str().unwrap();
            assert!(
                ids.insert(panel["id"].as_u64().unwrap()),
                "{board}: panel id of {title} repeats"
            );
            let grid = &panel["gridPos"];
            let (x, y, w, h) = (
                grid["x"].as_u64().unwrap(),
                grid["y"].as_u64().unwrap(),
                grid["w"].as_u64().unwrap(),
                grid["h"].as_u64().unwrap(),
            );
            assert!(
                x + w <= 24 && w > 0 && h > 0,
                "{board}: {title} leaves the grid"
            );
            for cx in x..x + w {
                for cy in y..y + h {
                    assert!(
                        cells.insert((cx, cy)),
                        "{board}: {title} overlaps another panel"
                    );
                }
            }
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{board}: {title} has no query");
            for target in targets {
                assert_eq!(
                    target["datasource"]["type"], "prometheus",
                    "{board}: {title}"
                );
            }
        }
    }
}

/// A child process killed when dropped.
struct Service {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Service {
    fn start(name: &'static str, program: &str, args: &[String], log: PathBuf) -> Service {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Service { child, name, log }
    }

    fn log(&self) -> String {
        format!(
            "--- {} log:\n{}",
            self.name,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_ready(client: &reqwest::Client, url: &str, service: &Service) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = client.get(url).send().await
            && response.status().is_success()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} not ready\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `/api/v1/query` of `expr`: the result vector (fails on a query error).
async fn query(client: &reqwest::Client, prometheus: &str, expr: &str) -> Vec<Value> {
    let answer: Value = client
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"], "success", "{expr}: {answer}");
    answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_logpipe_every_query_answers_and_an_error_burst_alerts_and_resolves() {
    let tmp = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();

    // Alertmanager, sending to a webhook of the test: grouped per alert,
    // sent at once, resolved ones too.
    let (webhook, received) = webhook_server();
    let am_port = free_port();
    let am_config = tmp.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            "route:\n  receiver: test\n  group_by: [alertname, service]\n  group_wait: 1s\n  \
             group_interval: 2s\n  repeat_interval: 1h\nreceivers:\n  - name: test\n    \
             webhook_configs:\n      - url: {webhook}\n        send_resolved: true\n"
        ),
    )
    .unwrap();
    let alertmanager = Service::start(
        "alertmanager",
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", am_config.display()),
            format!("--storage.path={}", tmp.path().join("am").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            // Without it Alertmanager gossips on 0.0.0.0:9094.
            "--cluster.listen-address=".to_string(),
        ],
        tmp.path().join("alertmanager.log"),
    );
    let am_url = format!("http://127.0.0.1:{am_port}");
    wait_ready(&client, &format!("{am_url}/-/ready"), &alertmanager).await;

    // logpipe up, windows of 1 s so the error burst shows within seconds.
    let data = tmp.path().join("data");
    let logpipe = Running::start(
        &data,
        &[
            ("LOGPIPE__WINDOWS__SIZE", "1s"),
            ("LOGPIPE__WINDOWS__ALLOWED_LATENESS", "1s"),
        ],
    );
    let target = logpipe.base_url.trim_start_matches("http://").to_string();

    // Prometheus with the shipped rules; HighErrorRate waits 5 s instead
    // of 5 minutes, everything else as shipped.
    let rules =
        std::fs::read_to_string(repo().join("deploy/prometheus/rules/logpipe.rules.yml")).unwrap();
    let (before, after) = rules.split_once("- alert: BusLag").unwrap();
    assert!(before.contains("for: 5m"));
    let rules = format!(
        "{}- alert: BusLag{after}",
        before.replace("for: 5m", "for: 5s")
    );
    let rules_path = tmp.path().join("rules.yml");
    std::fs::write(&rules_path, rules).unwrap();
    let prom_port = free_port();
    let prom_config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
             scrape_configs:\n  - job_name: logpipe-up\n    static_configs:\n      - targets: ['{target}']\n",
            rules_path.display()
        ),
    )
    .unwrap();
    let prometheus = Service::start(
        "prometheus",
        "prometheus",
        &[
            format!("--config.file={}", prom_config.display()),
            format!("--storage.tsdb.path={}", tmp.path().join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        tmp.path().join("prometheus.log"),
    );
    let prom_url = format!("http://127.0.0.1:{prom_port}");
    wait_ready(&client, &format!("{prom_url}/-/ready"), &prometheus).await;
    let logs = || {
        format!(
            "{}\n{}\n{}",
            prometheus.log(),
            alertmanager.log(),
            logpipe.log()
        )
    };

    // 200 logs/s over the generator's services for 75 s, no errors except
    // a burst of payment-service errors from 25 s to 45 s.
    let mut generator = Command::new(binary())
        .args([
            "generate",
            "--target",
            &logpipe.base_url,
            "--count",
            "15000",
            "--rate",
            "200",
            "--batch-size",
            "20",
            "--error-rate",
            "0",
            "--incident",
            "error_burst:payment-service:25s:20s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();

    // The page lints clean once every family has samples.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let page = logpipe.metrics().await;
    let lint = run("promtool", &["check", "metrics"], Some(&page));
    assert!(lint.trim().is_empty(), "promtool check metrics:\n{lint}");
    let ready = client
        .get(format!("{}/ready", logpipe.base_url))
        .send()
        .await
        .unwrap();
    let status = ready.status().as_u16();
    let body = ready.text().await.unwrap();
    assert_eq!(status, 200, "/ready: {body}");
    assert!(
        body.contains("\"job:raw\":\"ok\"") && body.contains("\"started\":\"ok\""),
        "{body}"
    );

    // Every dashboard query evaluates, and each that must show data does.
    let queries = panel_queries();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let mut empty = Vec::new();
        for q in &queries {
            let expr = q["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "10s");
            let result = query(&client, &prom_url, &expr).await;
            if result.is_empty() && !q["may_be_empty"].as_bool().unwrap() {
                empty.push(format!("{} / {}: {expr}", q["dashboard"], q["panel"]));
            }
        }
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "panels without data:\n{}\n{}",
            empty.join("\n"),
            logs()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // Every rule evaluates without error against the real series.
    let rules: Value = client
        .get(format!("{prom_url}/api/v1/rules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let evaluated: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    let written = std::fs::read_to_string(repo().join("deploy/prometheus/rules/logpipe.rules.yml"))
        .unwrap()
        .lines()
        .filter(|line| line.trim_start().starts_with("- alert:"))
        .count();
    assert_eq!(evaluated.len(), written, "{rules}");
    for rule in evaluated {
        assert_eq!(rule["health"], "ok", "{rule}");
    }

    // The burst fires HighErrorRate for payment-service at the webhook,
    // and the alert resolves once the errors stop.
    let notifications = || -> Vec<Value> {
        received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|body| body["alerts"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let is = |alert: &Value, status: &str| {
        alert["labels"]["alertname"] == "HighErrorRate"
            && alert["labels"]["service"] == "payment-service"
            && alert["status"] == status
    };
    let deadline = Instant::now() + Duration::from_secs(110);
    let mut fired_after = None;
    loop {
        let seen = notifications();
        if fired_after.is_none() && seen.iter().any(|a| is(a, "firing")) {
            fired_after = Some(started.elapsed());
        }
        if fired_after.is_some() && seen.iter().any(|a| is(a, "resolved")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "HighErrorRate did not {} at the webhook; received {seen:?}\n{}",
            if fired_after.is_none() {
                "fire"
            } else {
                "resolve"
            },
            logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let fired_after = fired_after.unwrap();
    assert!(
        fired_after >= Duration::from_secs(25),
        "HighErrorRate fired {fired_after:?} after the start, before the burst"
    );
    // Nothing else fired under a normal load.
    let others: BTreeSet<String> = notifications()
        .iter()
        .map(|a| a["labels"]["alertname"].as_str().unwrap_or("").to_string())
        .filter(|name| name != "HighErrorRate")
        .collect();
    assert!(others.is_empty(), "other alerts fired: {others:?}");
    let _ = generator.kill();
    let _ = generator.wait();
}
