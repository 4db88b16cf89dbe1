//! The exactly-once checks end-to-end tests make on what reached the lake.

/// Fails unless every id of `acked` has a row in `counts` (id → rows in
/// the lake); `log` is printed with the failure.
pub fn assert_none_missing(
    acked: &std::collections::BTreeSet<String>,
    counts: &std::collections::BTreeMap<String, u64>,
    log: &str,
) {
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged records missing from the lake, e.g. {missing:?}:\n{log}"
    );
}

/// Fails unless every id of `acked` is in the lake, and every id in the
/// lake is there once.
pub fn assert_exactly_once(
    acked: &std::collections::BTreeSet<String>,
    counts: &std::collections::BTreeMap<String, u64>,
    log: &str,
) {
    assert_none_missing(acked, counts, log);
    let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        doubled.is_empty(),
        "records in the lake more than once: {doubled:?}"
    );
}
