//! A directory on this machine as a lake root.
//!
//! `LocalFileSystem` without a prefix plus a [`PrefixStore`](object_store::prefix::PrefixStore)
//! rather than `LocalFileSystem::new_with_prefix`: the latter canonicalises
//! the directory and so needs it to exist, while a process that only reads
//! (or only collects) must not create lake directories. A local put stages
//! the file and renames it into place, so a reader never sees half a file,
//! and creates the parent directories it needs.

use std::path::Path;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;

/// The store of the lake at `dir` (absolute).
pub(super) fn store(dir: &Path) -> Arc<dyn ObjectStore> {
    let root = dir.to_string_lossy();
    super::prefixed(
        Arc::new(LocalFileSystem::new()),
        root.trim_start_matches('/'),
    )
}
