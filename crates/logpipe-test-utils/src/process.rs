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
