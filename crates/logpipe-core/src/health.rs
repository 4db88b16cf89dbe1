//! Readiness: whether this process does its work now, and why not.
//!
//! `/health` says the process is alive; `/ready` (this module) says it
//! does what its roles promise: it has started, the bus takes appends, each
//! stream job runs (not waiting to start again after a failure), and the
//! sinks keep up. Each part of the process sets its own named check; the
//! answer is "ready" only when every check is, and otherwise names each
//! failing check with its reason, so an orchestrator's probe or an operator
//! with `curl` sees what to look at.
//!
//! Marking a known check as passing while none fails costs an atomic load
//! and a shared read lock, so the collector's request path and a job's loop
//! can report on every pass.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The checks of this process, by name.
pub struct Readiness {
    checks: RwLock<BTreeMap<String, Option<String>>>,
    /// The number of failing checks, for the fast path of [`Readiness::pass`].
    failing: AtomicU64,
}

/// The process-wide readiness.
pub fn readiness() -> &'static Readiness {
    static READINESS: Readiness = Readiness {
        checks: RwLock::new(BTreeMap::new()),
        failing: AtomicU64::new(0),
    };
    &READINESS
}

/// One check's state as `/ready` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    /// `None` when the check passes; why not otherwise.
    pub failing: Option<String>,
}

impl Readiness {
    /// Marks `name` as passing.
    pub fn pass(&self, name: &str) {
        // The fast path: nothing fails, and `name` exists (any check that
        // was ever set stays listed).
        if self.failing.load(Ordering::Relaxed) == 0 && self.known(name) {
            return;
        }
        self.set(name, None);
    }

    /// Marks `name` as failing with `reason`.
    pub fn fail(&self, name: &str, reason: impl Into<String>) {
        self.set(name, Some(reason.into()));
    }

    fn known(&self, name: &str) -> bool {
        self.checks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    }

    fn set(&self, name: &str, state: Option<String>) {
        self.change(|checks| {
            checks.insert(name.to_string(), state);
        });
    }

    /// Forgets `name` (a job that ended on purpose).
    pub fn remove(&self, name: &str) {
        self.change(|checks| {
            checks.remove(name);
        });
    }

    /// Applies `edit` and recounts the failing checks.
    fn change(&self, edit: impl FnOnce(&mut BTreeMap<String, Option<String>>)) {
        let mut checks = self.checks.write().unwrap_or_else(|p| p.into_inner());
        edit(&mut checks);
        let failing = checks.values().filter(|s| s.is_some()).count();
        self.failing.store(failing as u64, Ordering::Relaxed);
    }

    /// Every check, by name.
    pub fn checks(&self) -> Vec<Check> {
        self.checks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, failing)| Check {
                name: name.clone(),
                failing: failing.clone(),
            })
            .collect()
    }

    /// Ready when at least one check exists (the process has started) and
    /// none fails.
    pub fn is_ready(&self) -> bool {
        let checks = self.checks.read().unwrap_or_else(|p| p.into_inner());
        !checks.is_empty() && checks.values().all(|s| s.is_none())
    }
}

/// The names of the checks the parts of logpipe set.
pub mod checks {
    /// Set once the process has started every role.
    pub const STARTED: &str = "started";
    /// The bus took the last append (collector) or answered the last read.
    pub const BUS: &str = "bus";
    /// PostgreSQL took the last write of a sink.
    pub const POSTGRES: &str = "postgres";
    /// A stream job's check: `job:NAME`.
    pub fn job(name: &str) -> String {
        format!("job:{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_passes_and_failures_name_their_reason() {
        let readiness = Readiness {
            checks: RwLock::new(BTreeMap::new()),
            failing: AtomicU64::new(0),
        };
        assert!(!readiness.is_ready(), "nothing started yet");
        readiness.pass("started");
        readiness.pass("bus");
        assert!(readiness.is_ready());
        readiness.fail("bus", "the brokers did not answer within 5s");
        assert!(!readiness.is_ready());
        assert_eq!(
            readiness
                .checks()
                .into_iter()
                .filter_map(|c| c.failing.map(|why| (c.name, why)))
                .collect::<Vec<_>>(),
            vec![(
                "bus".to_string(),
                "the brokers did not answer within 5s".to_string()
            )]
        );
        readiness.pass("bus");
        assert!(readiness.is_ready());
        readiness.fail("job:raw", "restarting");
        readiness.remove("job:raw");
        assert!(readiness.is_ready());
    }
}
