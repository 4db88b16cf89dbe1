//! The storage resolver: one function from a `lake.root` to an object
//! store, with what the store can do.
//!
//! The lake, the query engine and the batch reports all open their files
//! through the [`LakeStore`] this returns; nothing else touches the file
//! system for lake data. A root is a directory (`./data`, `/srv/lake`), a
//! `file://` URL, `s3://BUCKET/PREFIX` (AWS S3 or an S3-compatible server,
//! `[lake.s3]`; with the `s3` feature), `hdfs://NAMENODE:PORT/PATH` (with
//! the `hdfs` feature), or `memory://` (a throwaway lake, for tests). Other
//! schemes are recognised and answered with what is missing, so a config
//! written for them fails at start with a clear message rather than
//! writing to a directory named `gs:`.
//!
//! **Capabilities.** The commit protocol's fencing needs create-if-absent
//! (`PutMode::Create`): two writers must never both create commit *n*. Local
//! disk and memory honour it (a local create is a hard link that fails on an
//! existing name). S3-compatible stores differ (AWS S3 and versitygw honour
//! it, Garage silently overwrites; HDFS renames without overwrite, which the
//! NameNode refuses atomically), so a remote store is probed once at
//! start ([`LakeStore::probe`]) and a multi-writer setup on a store that
//! fails the probe is refused by the caller.

use std::path::PathBuf;
use std::sync::Arc;

use logpipe_core::error::{Classify, ErrorKind};
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

#[cfg(feature = "hdfs")]
mod hdfs;
mod instrumented;
mod local;
#[cfg(feature = "s3")]
mod s3;

pub use logpipe_config::S3Config;

/// Why a lake root cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("lake.root {root:?}: {reason}")]
    BadRoot { root: String, reason: String },
    #[error(
        "lake.root {root:?}: {scheme}:// storage is not built into this logpipe (a lake runs on a directory, memory://, or s3:// and hdfs:// in a build with the s3 and hdfs features)"
    )]
    Unsupported { root: String, scheme: String },
    #[error("lake storage at {root}: {source}")]
    Store {
        root: String,
        #[source]
        source: object_store::Error,
    },
}

impl Classify for StorageError {
    fn kind(&self) -> ErrorKind {
        match self {
            StorageError::BadRoot { .. } | StorageError::Unsupported { .. } => ErrorKind::Config,
            StorageError::Store { .. } => ErrorKind::Transient,
        }
    }
}

/// Where a lake lives, parsed from `lake.root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    /// A directory on this machine (absolute).
    Local(PathBuf),
    /// In this process's memory: gone when it exits.
    Memory,
    /// `s3://BUCKET/PREFIX`: objects under `PREFIX/` in `BUCKET`.
    S3 { bucket: String, prefix: String },
    /// `hdfs://NAMENODE:PORT/PATH`: files under `/PATH` of that file system.
    Hdfs { namenode: String, path: String },
    /// A store this build cannot open yet (`s3`, `hdfs`, …).
    Other { scheme: String },
}

impl StorageUrl {
    /// Parses a root: `scheme://…`, or else a directory path.
    pub fn parse(root: &str) -> Result<StorageUrl, StorageError> {
        let bad = |reason: &str| StorageError::BadRoot {
            root: root.to_string(),
            reason: reason.to_string(),
        };
        match root.split_once("://") {
            Some(("file", path)) => {
                if !path.starts_with('/') {
                    return Err(bad(
                        "a file:// URL needs an absolute path (file:///srv/lake)",
                    ));
                }
                Ok(StorageUrl::Local(PathBuf::from(path)))
            }
            Some(("memory", _)) => Ok(StorageUrl::Memory),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("s3") => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let valid =
                    |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-".contains(c);
                if bucket.len() < 3 || !bucket.chars().all(valid) {
                    return Err(bad(
                        "an s3:// root is s3://BUCKET/PREFIX, the bucket 3 or more lower-case letters, digits, '.' or '-'",
                    ));
                }
                Ok(StorageUrl::S3 {
                    bucket: bucket.to_string(),
                    prefix: prefix.trim_matches('/').to_string(),
                })
            }
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("hdfs") => {
                let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                if authority.is_empty() {
                    return Err(bad(
                        "an hdfs:// root is hdfs://NAMENODE:PORT/PATH (or a name service of your hdfs-site.xml)",
                    ));
                }
                Ok(StorageUrl::Hdfs {
                    namenode: format!("hdfs://{authority}"),
                    path: path.trim_matches('/').to_string(),
                })
            }
            Some((scheme, _))
                if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric()) =>
            {
                Ok(StorageUrl::Other {
                    scheme: scheme.to_ascii_lowercase(),
                })
            }
            _ if root.trim().is_empty() => Err(bad("is empty")),
            _ => std::path::absolute(root)
                .map(StorageUrl::Local)
                .map_err(|e| bad(&e.to_string())),
        }
    }
}

/// What a store can do that the lake's protocols depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `PutMode::Create` fails on an existing object (fencing of several
    /// writers of one job depends on it).
    pub conditional_put: bool,
}

/// An opened lake root: the object store every lake path is relative to.
#[derive(Clone)]
pub struct LakeStore {
    store: Arc<dyn ObjectStore>,
    url: StorageUrl,
    display: String,
    capabilities: Capabilities,
}

impl std::fmt::Debug for LakeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeStore")
            .field("root", &self.display)
            .field("capabilities", &self.capabilities)
            .finish()
    }
}

/// Opens `root` (see the module docs) with no `[lake.s3]` settings.
pub fn resolve(root: &str) -> Result<LakeStore, StorageError> {
    resolve_with(root, &S3Config::default())
}

/// Opens `root`, an `s3://` one with `s3`'s settings. Nothing is created
/// and nothing is asked of a remote store yet ([`LakeStore::probe`] does):
/// a local root's directories appear with the first file written under
/// them.
pub fn resolve_with(root: &str, s3: &S3Config) -> Result<LakeStore, StorageError> {
    let url = StorageUrl::parse(root)?;
    match &url {
        StorageUrl::Local(path) => Ok(LakeStore {
            store: instrumented::Instrumented::wrap(local::store(path)),
            display: path.display().to_string(),
            url,
            capabilities: Capabilities {
                conditional_put: true,
            },
        }),
        StorageUrl::Memory => Ok(LakeStore::memory()),
        #[cfg(feature = "s3")]
        StorageUrl::S3 { bucket, prefix } => {
            let store = under(s3::store(root, bucket, s3)?, prefix);
            Ok(LakeStore::remote(store, root, url))
        }
        #[cfg(not(feature = "s3"))]
        StorageUrl::S3 { .. } => {
            let _ = s3;
            Err(StorageError::Unsupported {
                root: root.to_string(),
                scheme: "s3".to_string(),
            })
        }
        #[cfg(feature = "hdfs")]
        StorageUrl::Hdfs { namenode, path } => {
            let store = under(hdfs::store(root, namenode)?, path);
            Ok(LakeStore::remote(store, root, url))
        }
        #[cfg(not(feature = "hdfs"))]
        StorageUrl::Hdfs { .. } => Err(StorageError::Unsupported {
            root: root.to_string(),
            scheme: "hdfs".to_string(),
        }),
        StorageUrl::Other { scheme } => Err(StorageError::Unsupported {
            root: root.to_string(),
            scheme: scheme.clone(),
        }),
    }
}

impl LakeStore {
    /// A lake on a remote store (S3, HDFS) at `root`: measured like every
    /// store, and not trusted with conditional writes until
    /// [`LakeStore::probe`] found them honoured.
    #[cfg(any(feature = "s3", feature = "hdfs"))]
    fn remote(store: Arc<dyn ObjectStore>, root: &str, url: StorageUrl) -> LakeStore {
        LakeStore {
            store: instrumented::Instrumented::wrap(store),
            display: root.to_string(),
            url,
            capabilities: Capabilities {
                conditional_put: false,
            },
        }
    }

    /// A lake in this process's memory.
    pub fn memory() -> LakeStore {
        LakeStore {
            store: instrumented::Instrumented::wrap(Arc::new(InMemory::new())),
            url: StorageUrl::Memory,
            display: "memory://".to_string(),
            capabilities: Capabilities {
                conditional_put: true,
            },
        }
    }

    /// A lake over `store` (a test double, or a store built elsewhere)
    /// whose capabilities were found by [`probe_conditional_put`].
    pub fn from_store(
        store: Arc<dyn ObjectStore>,
        name: &str,
        capabilities: Capabilities,
    ) -> LakeStore {
        LakeStore {
            store,
            url: StorageUrl::Other {
                scheme: "custom".to_string(),
            },
            display: name.to_string(),
            capabilities,
        }
    }

    /// The store; every path in it is relative to the lake root.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn url(&self) -> &StorageUrl {
        &self.url
    }

    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// Whether the lake is on another machine (S3, HDFS): its capabilities are
    /// known once [`LakeStore::probe`] has run.
    pub fn is_remote(&self) -> bool {
        matches!(self.url, StorageUrl::S3 { .. } | StorageUrl::Hdfs { .. })
    }

    /// Asks a remote store what it can do (one small object written twice
    /// and deleted, under `_logpipe/probe/`): also the first sign at start
    /// that the store cannot be reached or the credentials are refused.
    /// Local and memory stores are known already.
    pub async fn probe(&mut self) -> Result<Capabilities, StorageError> {
        if self.is_remote() {
            let conditional_put =
                probe_conditional_put(self.store.as_ref())
                    .await
                    .map_err(|source| StorageError::Store {
                        root: self.display.clone(),
                        source,
                    })?;
            self.capabilities = Capabilities { conditional_put };
        }
        Ok(self.capabilities)
    }

    /// The local directory of a local root (for messages and `logpipe sql`'s
    /// "does it exist" check).
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        match &self.url {
            StorageUrl::Local(path) => Some(path),
            _ => None,
        }
    }
}

impl std::fmt::Display for LakeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

/// Where the probe writes: under `_logpipe/`, which readers skip.
const PROBE_PREFIX: &str = "_logpipe/probe";

/// Whether `store` refuses a create-if-absent of an existing object. Writes
/// one small object twice under `_logpipe/probe/` and deletes it.
pub async fn probe_conditional_put(store: &dyn ObjectStore) -> Result<bool, object_store::Error> {
    let path = StorePath::from(format!(
        "{PROBE_PREFIX}/{}-{}",
        std::process::id(),
        logpipe_core::time::now_micros()
    ));
    let create = || PutOptions::from(PutMode::Create);
    store
        .put_opts(&path, PutPayload::from_static(b"1"), create())
        .await?;
    let honoured = match store
        .put_opts(&path, PutPayload::from_static(b"2"), create())
        .await
    {
        Err(object_store::Error::AlreadyExists { .. }) => true,
        Ok(_) => false,
        Err(error) => return Err(error),
    };
    match store.delete(&path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(error) => tracing::warn!(%error, %path, "could not delete the storage probe"),
    }
    Ok(honoured)
}

/// `store` with every path under `prefix`.
pub(crate) fn prefixed(store: Arc<dyn ObjectStore>, prefix: &str) -> Arc<dyn ObjectStore> {
    Arc::new(PrefixStore::new(store, prefix))
}

/// `store` under `prefix`, or the whole store for an empty one.
#[cfg(any(feature = "s3", feature = "hdfs"))]
fn under(store: Arc<dyn ObjectStore>, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        store
    } else {
        prefixed(store, prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    #[test]
    fn roots_parse_to_a_directory_memory_or_a_named_scheme() {
        assert_eq!(
            StorageUrl::parse("/srv/lake").unwrap(),
            StorageUrl::Local("/srv/lake".into())
        );
        assert_eq!(
            StorageUrl::parse("file:///srv/lake").unwrap(),
            StorageUrl::Local("/srv/lake".into())
        );
        assert!(
            matches!(StorageUrl::parse("./data").unwrap(), StorageUrl::Local(p) if p.is_absolute())
        );
        assert_eq!(StorageUrl::parse("memory://").unwrap(), StorageUrl::Memory);
        assert_eq!(
            StorageUrl::parse("s3://my-bucket/lake/prod/").unwrap(),
            StorageUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: "lake/prod".into()
            }
        );
        assert!(StorageUrl::parse("s3://My_Bucket/x").is_err());
        assert_eq!(
            StorageUrl::parse("hdfs://namenode:8020/lake/prod/").unwrap(),
            StorageUrl::Hdfs {
                namenode: "hdfs://namenode:8020".into(),
                path: "lake/prod".into()
            }
        );
        assert!(StorageUrl::parse("hdfs:///lake").is_err());
        let error = resolve("gs://bucket/lake").unwrap_err().to_string();
        assert!(
            error.contains("gs://") && error.contains("not built"),
            "{error}"
        );
        assert!(StorageUrl::parse("file://relative").is_err());
        assert!(StorageUrl::parse(" ").is_err());
    }

    #[tokio::test]
    async fn a_local_root_is_created_by_the_first_write_and_lists_empty_before() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("not-yet");
        let lake = resolve(root.to_str().unwrap()).unwrap();
        assert!(!root.exists(), "resolving creates nothing");
        let listed: Vec<_> = lake
            .store()
            .list(Some(&StorePath::from("logs/raw")))
            .try_collect()
            .await
            .unwrap();
        assert!(listed.is_empty());
        assert!(!root.exists(), "listing creates nothing");
        lake.store()
            .put(
                &StorePath::from("logs/raw/x.parquet"),
                PutPayload::from_static(b"x"),
            )
            .await
            .unwrap();
        assert!(root.join("logs/raw/x.parquet").exists());
    }

    /// A store that ignores `PutMode::Create`, as Garage does.
    #[derive(Debug)]
    struct IgnoresCreate(InMemory);

    impl std::fmt::Display for IgnoresCreate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("IgnoresCreate")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for IgnoresCreate {
        async fn put_opts(
            &self,
            location: &StorePath,
            payload: PutPayload,
            _: PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.0
                .put_opts(location, payload, PutOptions::default())
                .await
        }
        async fn put_multipart_opts(
            &self,
            location: &StorePath,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.0.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &StorePath,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.0.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<'static, object_store::Result<StorePath>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<StorePath>> {
            self.0.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&StorePath>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.0.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&StorePath>,
        ) -> object_store::Result<object_store::ListResult> {
            self.0.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &StorePath,
            to: &StorePath,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.0.copy_opts(from, to, options).await
        }
    }

    #[tokio::test]
    async fn the_probe_tells_a_store_that_honours_create_from_one_that_ignores_it() {
        let memory = resolve("memory://").unwrap();
        assert!(
            probe_conditional_put(memory.store().as_ref())
                .await
                .unwrap()
        );
        let dir = tempfile::tempdir().unwrap();
        let local = resolve(dir.path().to_str().unwrap()).unwrap();
        assert!(probe_conditional_put(local.store().as_ref()).await.unwrap());
        assert!(
            !probe_conditional_put(&IgnoresCreate(InMemory::new()))
                .await
                .unwrap()
        );
        let left: Vec<_> = memory.store().list(None).try_collect().await.unwrap();
        assert!(left.is_empty(), "the probe cleans up: {left:?}");
    }
}
