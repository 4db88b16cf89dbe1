//! `s3://BUCKET/PREFIX` roots: object_store's AWS client, configured from
//! the `AWS_*` environment and then `[lake.s3]`, which wins.
//!
//! A self-hosted server (versitygw, MinIO, Garage) is named by
//! `lake.s3.endpoint`; it is then addressed path-style (`ENDPOINT/BUCKET/…`)
//! unless `virtual_hosted_style` says otherwise, and an `http://` endpoint
//! is allowed plain HTTP. `PutMode::Create` is sent as `If-None-Match: *`,
//! which AWS S3 and versitygw honour; whether this store does is found by
//! [`super::LakeStore::probe`].

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;

use super::{S3Config, StorageError};

pub(super) fn store(
    root: &str,
    bucket: &str,
    config: &S3Config,
) -> Result<Arc<dyn ObjectStore>, StorageError> {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = &config.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(config.virtual_hosted_style.unwrap_or(false));
    } else if let Some(virtual_hosted) = config.virtual_hosted_style {
        builder = builder.with_virtual_hosted_style_request(virtual_hosted);
    }
    if let Some(region) = &config.region {
        builder = builder.with_region(region);
    }
    if let Some(key) = &config.access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &config.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    let store = builder.build().map_err(|source| StorageError::BadRoot {
        root: root.to_string(),
        reason: format!(
            "the S3 client cannot be set up ([lake.s3] or the AWS_* environment): {source}"
        ),
    })?;
    Ok(Arc::new(store))
}
