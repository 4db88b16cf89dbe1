//! Faults of the machine: the disk holding the bus and the lake fills up
//! under load, and space comes back.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Running, wait_for_count};

/// `logpipe up` on a 12 MiB tmpfs half taken by a filler file: under load
/// the disk fills, the collector answers 503 naming the cause and stores
/// nothing of those requests, nothing acknowledged is lost (it waits on
/// the bus: the lake shares the disk), `/ready` names the cause;
/// once the filler is removed the process carries on by itself, and the
/// lake ends with exactly the acknowledged records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_503_loses_nothing_and_recovers_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk");
    let data = disk.join("data");
    let running = Running::start_on_small_disk(
        &["up", "--no-generator", "--listen", "127.0.0.1:0"],
        &disk,
        &data,
        &[("LOGPIPE__WINDOWS__IDLE_CLOSE", "1s")],
        12 << 20,
        6 << 20,
    );
    let base = running.base_url.clone();
    let client = reqwest::Client::new();
    let batch = |prefix: &str, n: usize| -> String {
        let records: Vec<Value> = (0..500)
            .map(|i| {
                json!({"timestamp": chrono::Utc::now().timestamp_micros() as f64 / 1e6,
                       "level": "INFO", "service": "disk", "host": "h", "message": "x".repeat(200),
                       "metadata": {"request_id": format!("{prefix}-{n}-{i}")}})
            })
            .collect();
        Value::Array(records).to_string()
    };
    let post = |body: String| {
        let client = client.clone();
        let url = format!("{base}/api/collect/logs");
        async move {
            let response = client.post(url).body(body).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };

    // Fill the disk: every request is acknowledged or refused whole.
    let (mut acked, mut refused) = (0u64, 0u64);
    let mut reason = String::new();
    for n in 0..80 {
        match post(batch("full", n)).await {
            (200, _) => acked += 500,
            (503, text) => {
                refused += 1;
                reason = text;
            }
            (status, text) => panic!("request {n}: {status} {text}"),
        }
        if refused >= 5 {
            break;
        }
    }
    assert!(
        acked > 0 && refused >= 5,
        "acked {acked}, refused {refused}"
    );
    assert!(
        reason.contains("No space left on device") && reason.contains("retry"),
        "{reason}"
    );
    // The lake shares the full disk: the acknowledged records wait on the
    // bus, and /ready says why the jobs cannot go on.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client.get(format!("{base}/ready")).send().await.unwrap();
        let status = ready.status().as_u16();
        let body = ready.text().await.unwrap();
        if status == 503 && body.contains("No space left on device") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/ready does not say the disk is full: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Space returns: the same process takes records again, by itself.
    std::fs::remove_file(running.in_namespace(&disk.join("filler"))).unwrap();
    let mut after = 0u64;
    for n in 0..10 {
        let (status, text) = post(batch("after", n)).await;
        if status == 200 {
            after += 500;
        } else {
            assert_eq!(status, 503, "{text}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert!(
        after >= 2500,
        "only {after} records taken after the space came back"
    );
    let sql = "SELECT count(*) AS n FROM logs WHERE request_id LIKE 'full-%'";
    wait_for_count(&client, &base, sql, acked, Duration::from_secs(90)).await;
    let sql = "SELECT count(*) AS n FROM logs WHERE request_id LIKE 'after-%'";
    wait_for_count(&client, &base, sql, after, Duration::from_secs(60)).await;
    // Exactly once: no refused record, no second copy.
    let answer: Value = client
        .post(format!("{base}/api/query"))
        .body(
            json!({"sql": "SELECT count(*) AS n, count(DISTINCT request_id) AS d FROM logs"})
                .to_string(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["rows"][0]["n"], acked + after, "{answer}");
    assert_eq!(answer["rows"][0]["d"], acked + after, "{answer}");
    assert!(running.terminate().success());
}

/// `logpipe check` reads a data directory through: clean, it says so and
/// exits 0; with a damaged Parquet file and a bus segment damaged before
/// intact records, it names both files and exits 1 (changing nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logpipe_check_names_each_damaged_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let running = Running::start(&data, &[]);
    let client = reqwest::Client::new();
    for n in 0..10 {
        let records: Vec<Value> = (0..500)
            .map(|i| {
                json!({"timestamp": chrono::Utc::now().timestamp_micros() as f64 / 1e6,
                       "level": "INFO", "service": "check", "host": "h", "message": "y".repeat(100),
                       "metadata": {"request_id": format!("check-{n}-{i}")}})
            })
            .collect();
        let response = client
            .post(format!("{}/api/collect/logs", running.base_url))
            .body(Value::Array(records).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let sql = "SELECT count(*) AS n FROM logs";
    wait_for_count(
        &client,
        &running.base_url,
        sql,
        5000,
        Duration::from_secs(30),
    )
    .await;
    assert!(running.terminate().success());

    let check = || {
        crate::common::code_and_output(
            std::process::Command::new(crate::common::binary())
                .args(["check", "--data-dir"])
                .arg(&data),
        )
    };
    let (code, out) = check();
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("no damage found") && out.contains("5000 rows"),
        "{out}"
    );

    // Damage one Parquet file and the largest bus segment in its middle.
    let mut parquet = Vec::new();
    let mut segments = Vec::new();
    let mut stack = vec![data.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "parquet") {
                parquet.push(path);
            } else if path.extension().is_some_and(|x| x == "log")
                && path.to_string_lossy().contains("logs.raw")
            {
                segments.push(path);
            }
        }
    }
    let segment = segments
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
        .clone();
    let segment_bytes = std::fs::read(&segment).unwrap();
    // The raw job's newest file: its step's commit record is retained.
    let step_of = |p: &std::path::PathBuf| {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        name.strip_prefix("part-raw-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|seq| seq.parse::<u64>().ok())
    };
    parquet.retain(|p| step_of(p).is_some());
    parquet.sort_by_key(|p| std::cmp::Reverse(step_of(p)));
    let newest = parquet[0].clone();
    // An orphan: a copy of another file under a name of the newest step
    // that its commit record does not list.
    let orphan = newest.with_file_name(format!(
        "part-raw-{:010}-099.parquet",
        step_of(&newest).unwrap()
    ));
    std::fs::copy(parquet.last().unwrap(), &orphan).unwrap();
    use std::os::unix::fs::FileExt;
    for (path, garbage) in [
        (&newest, vec![0x5au8; 2000]),
        (&segment, b"DAMAGED!".to_vec()),
    ] {
        let length = std::fs::metadata(path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.write_all_at(&garbage, length / 3).unwrap();
    }
    let (code, out) = check();
    assert_eq!(code, Some(1), "{out}");
    for (path, says) in [
        (&newest, "the Parquet file is damaged"),
        (&segment, "intact records follow"),
        (&orphan, "an orphan"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.contains(&path.display().to_string()) && l.contains(says)),
            "{} not reported as {says}:\n{out}",
            path.display()
        );
    }

    // --repair moves the damaged file and the orphan aside; the bus damage
    // is left to the operator, so it still exits 1.
    let output = std::process::Command::new(crate::common::binary())
        .args(["check", "--repair", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("writes it again from the bus"), "{out}");
    assert!(out.contains("intact records follow"), "{out}");
    assert!(!newest.exists() && !orphan.exists(), "{out}");
    let mut quarantined = Vec::new();
    let mut stack = vec![data.join("_logpipe/quarantine")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                quarantined.push(path.file_name().unwrap().to_owned());
            }
        }
    }
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");

    // With the segment restored from "a backup", the check passes (the
    // missing file is an interrupted step, a note) and the next start
    // writes the moved file again from the bus: every row is back.
    std::fs::write(&segment, &segment_bytes).unwrap();
    let (code, out) = check();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("not there yet"), "{out}");
    let running = Running::start(&data, &[]);
    wait_for_count(
        &client,
        &running.base_url,
        sql,
        5000,
        Duration::from_secs(30),
    )
    .await;
    assert!(running.terminate().success());
    assert!(newest.exists());
    let (code, out) = check();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("5000 rows"), "{out}");
}
