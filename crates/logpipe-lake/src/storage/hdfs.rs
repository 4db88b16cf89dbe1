//! `hdfs://NAMENODE:PORT/PATH` roots: HDFS through hdfs-native, a native
//! Rust client of the NameNode and DataNode protocols (no JVM, no
//! libhdfs), as an object_store.
//!
//! A file is written under a temporary name beside its final one and
//! renamed into place, so a reader never sees half a file; `PutMode::Create`
//! renames without overwrite, which the NameNode refuses atomically when
//! the name exists — the create-if-absent the commit chain's fencing needs
//! ([`super::LakeStore::probe`] still checks it at start). Client settings
//! beyond the address (`dfs.*` for HA name services) come from the usual
//! `HADOOP_CONF_DIR`/`core-site.xml`/`hdfs-site.xml` that hdfs-native reads.
//! No Kerberos in this build.

use std::sync::Arc;

use hdfs_native_object_store::HdfsObjectStoreBuilder;
use object_store::ObjectStore;

use super::StorageError;

pub(super) fn store(root: &str, namenode: &str) -> Result<Arc<dyn ObjectStore>, StorageError> {
    let store = HdfsObjectStoreBuilder::new()
        .with_url(namenode)
        .build()
        .map_err(|source| StorageError::BadRoot {
            root: root.to_string(),
            reason: format!("the HDFS client cannot be set up for {namenode}: {source}"),
        })?;
    Ok(Arc::new(store))
}
