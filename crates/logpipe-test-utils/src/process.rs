//! Running commands and Python snippets from tests.

use std::process::Command;

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
