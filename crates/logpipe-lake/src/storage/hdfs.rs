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
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
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
        if options.head || options.range.is_some() {
            return self.get_streamed(location, options).await;
        }
        // The client states the file and then opens it again by name, to
        // the length it stated: a file replaced in between (a compaction
        // manifest rewritten, longer) comes back cut short. A whole file
        // is read, then stated again; if it changed meanwhile, read again.
        for _ in 0..REREADS {
            // Replaced by a shorter file, the client panics ("Cannot read
            // past end of the file") before reading a byte: that file too
            // changed under the read.
            let read = AssertUnwindSafe(self.get_streamed(location, options.clone()));
            let Ok(result) = read.catch_unwind().await else {
                continue;
            };
            let result = result?;
            let (meta, range, attributes) = (
                result.meta.clone(),
                result.range.clone(),
                result.attributes.clone(),
            );
            let bytes = result.bytes().await?;
            let now = self
                .get_streamed(location, GetOptions::default().with_head(true))
                .await?;
            if now.meta.e_tag == meta.e_tag {
                return Ok(GetResult {
                    payload: GetResultPayload::Stream(
                        futures::stream::once(async move { Ok(bytes) }).boxed(),
                    ),
                    meta,
                    range,
                    attributes,
                });
            }
        }
        Err(object_store::Error::Generic {
            store: "HdfsObjectStore",
            source: format!("{location} changed under each of {REREADS} reads").into(),
        })
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

/// Whole-file reads tried before a file that keeps changing is an error.
const REREADS: usize = 5;

impl MissingIsNotFound {
    async fn get_streamed(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
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
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use object_store::memory::InMemory;

    use super::*;

    /// An in-memory store whose next `torn` whole-file reads come back as
    /// HDFS returns a file replaced while it was opened: cut short, with
    /// the earlier file's e_tag.
    #[derive(Debug)]
    struct Torn {
        inner: InMemory,
        torn: AtomicUsize,
        /// The next whole reads that find the file shorter than stated.
        shrunk: AtomicUsize,
    }

    impl fmt::Display for Torn {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Torn")
        }
    }

    #[async_trait]
    impl ObjectStore for Torn {
        async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> Result<PutResult> {
            self.inner.put_opts(l, p, o).await
        }
        async fn put_multipart_opts(
            &self,
            l: &Path,
            o: PutMultipartOptions,
        ) -> Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(l, o).await
        }
        async fn get_opts(&self, l: &Path, options: GetOptions) -> Result<GetResult> {
            let head = options.head;
            let once = |n: &AtomicUsize| {
                n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            };
            if !head && once(&self.shrunk) {
                panic!("Cannot read past end of the file");
            }
            let mut result = self.inner.get_opts(l, options).await?;
            let tear = !head && once(&self.torn);
            if tear {
                let mut meta = result.meta.clone();
                meta.e_tag = Some("the earlier file".into());
                let bytes = result.bytes().await?;
                let cut = bytes.slice(..bytes.len() / 2);
                result = GetResult {
                    payload: GetResultPayload::Stream(
                        futures::stream::once(async move { Ok(cut) }).boxed(),
                    ),
                    range: 0..meta.size,
                    meta,
                    attributes: Default::default(),
                };
            }
            Ok(result)
        }
        fn delete_stream(
            &self,
            l: BoxStream<'static, Result<Path>>,
        ) -> BoxStream<'static, Result<Path>> {
            self.inner.delete_stream(l)
        }
        fn list(&self, p: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            self.inner.list(p)
        }
        async fn list_with_delimiter(&self, p: Option<&Path>) -> Result<ListResult> {
            self.inner.list_with_delimiter(p).await
        }
        async fn copy_opts(&self, f: &Path, t: &Path, o: CopyOptions) -> Result<()> {
            self.inner.copy_opts(f, t, o).await
        }
    }

    #[tokio::test]
    async fn a_file_replaced_under_a_whole_read_is_read_again() {
        let torn = Arc::new(Torn {
            inner: InMemory::new(),
            torn: AtomicUsize::new(2),
            shrunk: AtomicUsize::new(1),
        });
        let store = MissingIsNotFound {
            inner: torn.clone(),
        };
        let path = Path::from("_logpipe/compactions/x/manifest.json");
        let body = br#"{"state": "done", "inputs_deleted_at_micros": 1}"#;
        store
            .put_opts(&path, PutPayload::from_static(body), PutOptions::default())
            .await
            .unwrap();
        // A read the client panics on (the file shrank), two torn reads,
        // then a whole one.
        let read = store.get_opts(&path, GetOptions::default()).await.unwrap();
        assert_eq!(read.bytes().await.unwrap().as_ref(), body);
        // A ranged read (Parquet's, of files never replaced) is passed on.
        torn.torn.store(1, Ordering::SeqCst);
        let ranged = GetOptions {
            range: Some((0..4).into()),
            ..GetOptions::default()
        };
        let read = store.get_opts(&path, ranged).await.unwrap();
        assert_eq!(read.bytes().await.unwrap().len(), 2);
        // A file that changes under every read is an error naming it.
        torn.torn.store(REREADS + 1, Ordering::SeqCst);
        let error = store
            .get_opts(&path, GetOptions::default())
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("changed under each of 5 reads"),
            "{error}"
        );
    }

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
