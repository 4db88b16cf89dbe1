//! The architecture checks that run with every test suite.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use logpipe_test_utils::modules::module_cycles;

/// No crate's sibling modules import each other in a circle (see
/// `logpipe_test_utils::modules` for the rule). A runtime that sits below
/// the jobs must never import one.
///
/// `LOGPIPE_CHECK_CRATES=DIR` checks another tree's `crates/` instead
/// (e.g. an older checkout, to see the cycles it had).
#[test]
fn no_crate_has_a_module_cycle() {
    let crates = match std::env::var_os("LOGPIPE_CHECK_CRATES") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => logpipe_test_utils::repo().join("crates"),
    };
    let mut found = Vec::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(&crates).unwrap().flatten() {
        let src = entry.path().join("src");
        if !src.is_dir() {
            continue;
        }
        checked += 1;
        let name = entry.file_name().to_string_lossy().to_string();
        for cycle in module_cycles(&src) {
            found.push(format!("{name}: {}", cycle.join(" → ")));
        }
    }
    assert!(
        checked >= 10,
        "only {checked} crates found under {}",
        crates.display()
    );
    assert!(found.is_empty(), "module cycles:\n{}", found.join("\n"));
}
