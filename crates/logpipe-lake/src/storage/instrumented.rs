//! Every lake store wrapped to count its requests and time them, by
//! operation and outcome: what the Storage dashboard shows of a store that
//! is slow or failing (an S3 endpoint timing out, credentials revoked, a
//! full disk), whatever the store is.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use crate::metrics::lake_metrics;

/// `inner` with its requests counted in `logpipe_lake_store_requests_total`
/// and timed in `logpipe_lake_store_request_duration_seconds`.
pub(crate) struct Instrumented {
    inner: Arc<dyn ObjectStore>,
}

impl Instrumented {
    pub(crate) fn wrap(inner: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        Arc::new(Instrumented { inner })
    }
}

impl fmt::Debug for Instrumented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instrumented({:?})", self.inner)
    }
}

impl fmt::Display for Instrumented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

/// What a request's answer counts as: a refused create-if-absent or a
/// missing object is an answer, not a store failure.
fn outcome<T>(result: &Result<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => "conflict",
        Err(object_store::Error::NotFound { .. }) => "not_found",
        Err(_) => "error",
    }
}

fn record<T>(operation: &'static str, began: Instant, result: &Result<T>) {
    let metrics = lake_metrics();
    metrics.store_requests.inc(&[operation, outcome(result)]);
    metrics
        .store_request_duration
        .observe(&[operation], began.elapsed().as_secs_f64());
}

#[async_trait]
impl ObjectStore for Instrumented {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let began = Instant::now();
        let result = self.inner.put_opts(location, payload, opts).await;
        record("put", began, &result);
        result
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let began = Instant::now();
        let result = self.inner.put_multipart_opts(location, opts).await;
        record("put_multipart", began, &result);
        result
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let began = Instant::now();
        let result = self.inner.get_opts(location, options).await;
        record("get", began, &result);
        result
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let began = Instant::now();
        let result = self.inner.get_ranges(location, ranges).await;
        record("get", began, &result);
        result
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner
            .delete_stream(locations)
            .map(|deleted| {
                lake_metrics()
                    .store_requests
                    .inc(&["delete", outcome(&deleted)]);
                deleted
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        // One listing, counted once: by its first answer (an object or an
        // error), or as `ok` when it ends empty. A reader that stops early
        // (the first Parquet file found) is still counted.
        let counted = Arc::new(AtomicBool::new(false));
        let first = counted.clone();
        let listing = self.inner.list(prefix).inspect(move |item| {
            if !first.swap(true, Ordering::Relaxed) {
                lake_metrics().store_requests.inc(&["list", outcome(item)]);
            }
        });
        let empty = futures::stream::once(async move {
            if !counted.swap(true, Ordering::Relaxed) {
                lake_metrics().store_requests.inc(&["list", "ok"]);
            }
        })
        .filter_map(|()| futures::future::ready(None));
        listing.chain(empty).boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let began = Instant::now();
        let result = self.inner.list_with_delimiter(prefix).await;
        record("list", began, &result);
        result
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let began = Instant::now();
        let result = self.inner.copy_opts(from, to, options).await;
        record("copy", began, &result);
        result
    }
}
