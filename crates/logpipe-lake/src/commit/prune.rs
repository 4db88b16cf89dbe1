//! Keeping a job's commit chain short: each step deletes the record that
//! just fell out of the kept window, unless it is incomplete.

use object_store::ObjectStoreExt;

use crate::Lake;
use crate::layout::commit_path;

/// How many commit records are kept per job (the newest is the only one
/// recovery needs; a few more help a human reading what happened).
pub(crate) const COMMIT_RECORDS_KEPT: usize = 16;

impl Lake {
    pub(super) async fn prune_commits(&self, job: &str, newest: u64) {
        let Some(cutoff) = newest.checked_sub(COMMIT_RECORDS_KEPT as u64) else {
            return;
        };
        // Only the one that just fell out of the window: each step prunes
        // one, so the directory stays at COMMIT_RECORDS_KEPT records. An
        // incomplete one stays until it is rolled forward.
        let path = commit_path(job, cutoff);
        // Another writer's record (a group member's) may be incomplete.
        let mine = {
            let mut completed = self.completed_set();
            let mine = completed.contains(&(job.to_string(), cutoff));
            // Older ones were pruned by whoever committed at their cutoff.
            completed.retain(|(j, seq)| j != job || *seq > cutoff);
            mine
        };
        if !mine {
            match self.read_commit(&path).await {
                Ok(record) => match self.missing_files(&record).await {
                    Ok(missing) if missing.is_empty() => {}
                    Ok(_) => {
                        tracing::warn!(%path, "keeping an incomplete commit record for roll-forward");
                        return;
                    }
                    Err(_) => return,
                },
                Err(_) => return,
            }
        }
        match self.store().delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => tracing::warn!(%error, %path, "could not prune an old commit record"),
        }
    }
}
