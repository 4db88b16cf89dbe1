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
//!
//! The store is wrapped so a file deleted under a reader is
//! [`object_store::Error::NotFound`], as on every other store: the client
//! maps a missing file found by its own status call to `NotFound`, but a
//! file deleted between that call and the read comes back from the
//! NameNode as a `java.io.FileNotFoundException` RPC error, which it
//! passes on as `Generic`. The lake tolerates a file gone between a
//! listing and a read (a compaction's manifest deleted after its grace,
//! a pruned commit record) only as `NotFound`.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use hdfs_native::HdfsError;
use hdfs_native_object_store::HdfsObjectStoreBuilder;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use super::StorageError;

pub(super) fn store(root: &str, namenode: &str) -> Result<Arc<dyn ObjectStore>, StorageError> {
    let store = HdfsObjectStoreBuilder::new()
        .with_url(namenode)
        .build()
        .map_err(|source| StorageError::BadRoot {
            root: root.to_string(),
            reason: format!("the HDFS client cannot be set up for {namenode}: {source}"),
        })?;
    Ok(Arc::new(MissingIsNotFound {
        inner: Arc::new(store),
    }))
}

/// `inner` with the NameNode's `FileNotFoundException` answered as
/// `NotFound`.
struct MissingIsNotFound {
    inner: Arc<dyn ObjectStore>,
}

/// Whether the NameNode said the file does not exist (the Java class of
/// its RPC error).
fn is_missing(error: &HdfsError) -> bool {
    match error {
        HdfsError::FileNotFound(_) => true,
        HdfsError::RPCError(class, _) | HdfsError::FatalRPCError(class, _) => {
            class.ends_with("FileNotFoundException")
        }
        _ => false,
    }
}

fn not_found(path: &Path, error: object_store::Error) -> object_store::Error {
    match error {
        object_store::Error::Generic { store, source } => {
            if source.downcast_ref::<HdfsError>().is_some_and(is_missing) {
                object_store::Error::NotFound {
                    path: path.to_string(),
                    source,
                }
            } else {
                object_store::Error::Generic { store, source }
            }
        }
        other => other,
    }
}

impl fmt::Debug for MissingIsNotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl fmt::Display for MissingIsNotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait]
impl ObjectStore for MissingIsNotFound {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let mut result = self
            .inner
            .get_opts(location, options)
            .await
            .map_err(|e| not_found(location, e))?;
        // Blocks are read as the stream is polled: a file deleted by then
        // fails there.
        if let GetResultPayload::Stream(stream) = result.payload {
            let path = location.clone();
            result.payload = GetResultPayload::Stream(
                stream
                    .map(move |chunk| chunk.map_err(|e| not_found(&path, e)))
                    .boxed(),
            );
        }
        Ok(result)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner
            .get_ranges(location, ranges)
            .await
            .map_err(|e| not_found(location, e))
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner
            .copy_opts(from, to, options)
            .await
            .map_err(|e| not_found(from, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(error: HdfsError) -> object_store::Error {
        object_store::Error::Generic {
            store: "HdfsObjectStore",
            source: Box::new(error),
        }
    }

    #[test]
    fn a_file_the_namenode_cannot_find_is_not_found() {
        let path = Path::from("logs/_compactions/x.json");
        let gone = generic(HdfsError::RPCError(
            "java.io.FileNotFoundException".into(),
            "File does not exist: /lake/logs/_compactions/x.json".into(),
        ));
        assert!(matches!(
            not_found(&path, gone),
            object_store::Error::NotFound { path, .. } if path == "logs/_compactions/x.json"
        ));
        let other = generic(HdfsError::RPCError(
            "org.apache.hadoop.ipc.StandbyException".into(),
            "Operation category READ is not supported in state standby".into(),
        ));
        assert!(matches!(
            not_found(&path, other),
            object_store::Error::Generic { .. }
        ));
        let io = generic(HdfsError::DataTransferError("connection reset".into()));
        assert!(matches!(
            not_found(&path, io),
            object_store::Error::Generic { .. }
        ));
    }
}
