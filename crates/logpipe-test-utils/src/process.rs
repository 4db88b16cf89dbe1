//! Running commands and Python snippets from tests.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs `command` and returns its stdout; fails the test (with the
/// command's stderr) unless it succeeds.
pub fn stdout_of(command: &mut Command, what: &str) -> Vec<u8> {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Runs `command` to its end: its exit code (`None` when a signal ended
/// it) and everything it printed, stdout then stderr.
pub fn code_and_output(command: &mut Command) -> (Option<i32>, String) {
    let output = command.output().unwrap();
    (
        output.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// Runs `command` to its end, but for at most `limit`: its output, or, past
/// the limit, an error naming `what`, how long it ran and what it had
/// printed. A command past its limit is killed with everything it started
/// (it runs in its own process group), so a stuck tool ends its test
/// instead of holding the whole suite until CI's budget runs out.
pub fn output_within(command: &mut Command, limit: Duration, what: &str) -> Result<Output, String> {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{what} did not start: {e}"))?;
    // Read both pipes while waiting, so a chatty command cannot block on a
    // full pipe. Chunks are kept as they come: what a killed command
    // printed is shown, and a helper that keeps a pipe open after the
    // command exits (podman's conmon detaches) cannot hold the test.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let into = bytes.clone();
        let reader = std::thread::spawn(move || {
            let Some(mut pipe) = pipe else { return };
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                into.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        (reader, bytes)
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("{what}: {e}"))? {
            break Some(status);
        }
        if started.elapsed() >= limit {
            // The whole group: docker-compose and podman start helpers
            // of their own.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let drained = Instant::now() + Duration::from_secs(5);
    while !(stdout.0.is_finished() && stderr.0.is_finished()) && Instant::now() < drained {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stdout = std::mem::take(&mut *stdout.1.lock().unwrap());
    let stderr = std::mem::take(&mut *stderr.1.lock().unwrap());
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(format!(
            "{what} did not finish within {limit:?}; killed. It printed:\n{}\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )),
    }
}

/// [`output_within`], failing the test, naming the command and what it
/// printed, when it runs longer than `limit`.
pub fn bounded(command: &mut Command, limit: Duration, what: &str) -> Output {
    output_within(command, limit, what).unwrap_or_else(|stuck| panic!("{stuck}"))
}

/// `output`'s stdout; fails the test, with all `what` printed, unless it
/// succeeded.
pub fn checked(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a Python snippet with the test venv (`LOGPIPE_TEST_PYTHON`, which
/// has confluent-kafka and duckdb) and returns its stdout.
pub fn python(script: &str, args: &[&str]) -> String {
    let python = std::env::var("LOGPIPE_TEST_PYTHON")
        .expect("LOGPIPE_TEST_PYTHON is not set: run ./scripts/test.sh");
    let stdout = stdout_of(
        Command::new(python).arg("-c").arg(script).args(args),
        "python",
    );
    String::from_utf8(stdout).unwrap()
}

/// The pyspark interpreter the suite installed (`LOGPIPE_TEST_SPARK_PYTHON`).
pub fn spark_python() -> String {
    std::env::var("LOGPIPE_TEST_SPARK_PYTHON").expect(
        "LOGPIPE_TEST_SPARK_PYTHON is not set: run ./scripts/test.sh, which installs pyspark",
    )
}

/// Runs the Spark job `deploy/spark/SCRIPT` (pyspark, local mode on
/// loopback) with `args` and `envs`; the JSON of its last stdout line.
/// Fails the test, with the job's output, unless it succeeds.
pub fn spark_job(
    script: &str,
    args: &[&std::ffi::OsStr],
    envs: &[(&str, &str)],
    what: &str,
) -> serde_json::Value {
    let script = crate::repo().join("deploy/spark").join(script);
    let output = Command::new(spark_python())
        .arg(&script)
        .args(args)
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{what} printed no JSON last ({e}):\n{stdout}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command past its limit is stopped and named, with what it printed
    /// so far.
    #[test]
    fn a_command_past_its_limit_is_stopped_and_named() {
        let stuck = output_within(
            Command::new("sh").args(["-c", "echo started; exec sleep 60"]),
            Duration::from_millis(500),
            "the sleeper",
        )
        .unwrap_err();
        assert!(stuck.contains("the sleeper did not finish"), "{stuck}");
        assert!(stuck.contains("started"), "{stuck}");
    }

    /// A command that exits while something it started keeps its stdout
    /// open (as podman's conmon does) still returns, with its output.
    #[test]
    fn a_helper_holding_the_pipe_does_not_hold_the_caller() {
        let output = output_within(
            Command::new("sh").args(["-c", "sleep 60 & echo done"]),
            Duration::from_secs(120),
            "the parent",
        )
        .unwrap();
        assert!(output.status.success());
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "done");
    }
}
