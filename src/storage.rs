//! Object storage: outputs at `s3://bucket/prefix`, `gs://…`, `az://…` (or `file:///…`) through
//! the `object_store` crate, with each cloud's standard configuration from the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL` and
//! `AWS_ALLOW_HTTP=true` for an S3-compatible store; `GOOGLE_*`; `AZURE_*`).
//!
//! What a writer needs from a store, and no more: upload a finished local file (a single put, or
//! a multipart upload for a large one: either way the object appears whole or not at all),
//! download, delete, list, and the two conditional writes a commit protocol needs: create an
//! object only if absent (`PutMode::Create`, for logs and leases) and replace one only if it is
//! unchanged since read (`PutMode::Update` on its ETag, for a state snapshot).

use std::path::Path;
use std::sync::Arc;

use futures_util::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{
    DynObjectStore, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion,
};
use reqwest::Url;

/// The schemes of object stores.
pub const SCHEMES: [&str; 5] = ["s3", "gs", "az", "abfss", "file"];

/// Files at least this big are uploaded in parts (5 MiB parts, S3's minimum).
const MULTIPART_BYTES: u64 = 16 * 1024 * 1024;
/// Part size of a multipart upload.
const PART_BYTES: usize = 8 * 1024 * 1024;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The URL names no store we can open.
    #[error("{url}: {reason}")]
    Config {
        /// The URL as given (credentials never appear: they come from the environment).
        url: String,
        /// Why.
        reason: String,
    },
    /// The store refused or failed an operation.
    #[error("{action} {url}: {source}")]
    Store {
        /// What was being done.
        action: &'static str,
        /// The object.
        url: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// A local file of the transfer.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// True when `out` names an object store rather than a local directory.
pub fn is_remote(out: &str) -> bool {
    out.split_once("://")
        .is_some_and(|(scheme, _)| SCHEMES.contains(&scheme))
}

/// An output on an object store: the store (rooted at its bucket) and the prefix under it.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The output's URL, e.g. `s3://bucket/exports/engati`.
    pub url: Url,
    /// The store, rooted at the bucket (or `/` for `file://`).
    pub store: Arc<DynObjectStore>,
    /// The output's prefix in the store.
    pub prefix: ObjectPath,
}

impl Remote {
    /// Opens the store named by `url` with the environment's configuration.
    ///
    /// # Errors
    /// [`StorageError::Config`] for an unknown scheme or a store that cannot be configured.
    pub fn open(url: &str) -> Result<Self, StorageError> {
        let config = |reason: String| StorageError::Config {
            url: url.to_owned(),
            reason,
        };
        let parsed = Url::parse(url).map_err(|e| config(e.to_string()))?;
        let store: Arc<DynObjectStore> = match parsed.scheme() {
            "s3" => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| config(e.to_string()))?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| config(e.to_string()))?,
            ),
            "az" | "abfss" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| config(e.to_string()))?,
            ),
            "file" => Arc::new(object_store::local::LocalFileSystem::new()),
            other => {
                return Err(config(format!(
                    "unknown scheme `{other}`: use s3://, gs://, az:// or file://"
                )));
            }
        };
        let prefix = ObjectPath::from_url_path(parsed.path()).map_err(|e| config(e.to_string()))?;
        Ok(Remote {
            url: parsed,
            store,
            prefix,
        })
    }

    /// The object at `rel` (a `/`-separated path under the prefix).
    pub fn path(&self, rel: &str) -> ObjectPath {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    fn shown(&self, rel: &str) -> String {
        format!("{}/{rel}", self.url.as_str().trim_end_matches('/'))
    }

    fn store_err(
        &self,
        action: &'static str,
        rel: &str,
    ) -> impl Fn(object_store::Error) -> StorageError {
        let url = self.shown(rel);
        move |source| StorageError::Store {
            action,
            url: url.clone(),
            source,
        }
    }

    /// Uploads the local file `local` to `rel`: one put for a small file, a multipart upload
    /// for a large one. The object is visible only once complete. Returns its bytes.
    ///
    /// # Errors
    /// [`StorageError`] for the file or the store.
    pub async fn upload(&self, rel: &str, local: &Path) -> Result<u64, StorageError> {
        let io = |action, source| StorageError::Io {
            action,
            path: local.to_owned(),
            source,
        };
        let size = std::fs::metadata(local)
            .map_err(|e| io("reading", e))?
            .len();
        let dest = self.path(rel);
        if size < MULTIPART_BYTES {
            let bytes = tokio::fs::read(local).await.map_err(|e| io("reading", e))?;
            self.store
                .put(&dest, PutPayload::from(bytes))
                .await
                .map_err(self.store_err("uploading", rel))?;
            return Ok(size);
        }
        let upload = self
            .store
            .put_multipart(&dest)
            .await
            .map_err(self.store_err("uploading", rel))?;
        let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| io("reading", e))?;
        let mut buf = vec![0u8; PART_BYTES];
        loop {
            use tokio::io::AsyncReadExt;
            let n = file.read(&mut buf).await.map_err(|e| io("reading", e))?;
            if n == 0 {
                break;
            }
            w.wait_for_capacity(2)
                .await
                .map_err(self.store_err("uploading", rel))?;
            w.write(&buf[..n]);
        }
        w.finish().await.map_err(self.store_err("uploading", rel))?;
        Ok(size)
    }

    /// Downloads `rel` into the local file `local` (created or replaced).
    ///
    /// # Errors
    /// [`StorageError`] for the store or the file.
    pub async fn download(&self, rel: &str, local: &Path) -> Result<(), StorageError> {
        let bytes = self
            .store
            .get(&self.path(rel))
            .await
            .map_err(self.store_err("downloading", rel))?
            .bytes()
            .await
            .map_err(self.store_err("downloading", rel))?;
        if let Some(dir) = local.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StorageError::Io {
                action: "creating directory",
                path: dir.to_owned(),
                source,
            })?;
        }
        tokio::fs::write(local, &bytes)
            .await
            .map_err(|source| StorageError::Io {
                action: "writing",
                path: local.to_owned(),
                source,
            })
    }

    /// Deletes `rel` (absent is fine).
    ///
    /// # Errors
    /// [`StorageError::Store`].
    pub async fn delete(&self, rel: &str) -> Result<(), StorageError> {
        match self.store.delete(&self.path(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_err("deleting", rel)(e)),
        }
    }

    /// The objects under `rel` (paths relative to the output's prefix).
    ///
    /// # Errors
    /// [`StorageError::Store`].
    pub async fn list(&self, rel: &str) -> Result<Vec<(String, u64)>, StorageError> {
        let base = self.path(rel);
        let prefix = self.prefix.as_ref().to_owned();
        let items: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&base))
            .try_collect()
            .await
            .map_err(self.store_err("listing", rel))?;
        Ok(items
            .into_iter()
            .map(|m| {
                let full = m.location.as_ref();
                let rel = full
                    .strip_prefix(&prefix)
                    .unwrap_or(full)
                    .trim_start_matches('/')
                    .to_owned();
                (rel, m.size)
            })
            .collect())
    }

    /// Creates `rel` with `bytes` only if no object is there. `Ok(false)` when one already is
    /// (the conditional write lost).
    ///
    /// # Errors
    /// [`StorageError::Store`] for anything but the lost condition.
    pub async fn create(&self, rel: &str, bytes: Vec<u8>) -> Result<bool, StorageError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&self.path(rel), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(e) => Err(self.store_err("creating", rel)(e)),
        }
    }

    /// Reads `rel` and its version (ETag), if it exists.
    ///
    /// # Errors
    /// [`StorageError::Store`].
    pub async fn read_versioned(
        &self,
        rel: &str,
    ) -> Result<Option<(Vec<u8>, UpdateVersion)>, StorageError> {
        match self.store.get(&self.path(rel)).await {
            Ok(r) => {
                let version = UpdateVersion {
                    e_tag: r.meta.e_tag.clone(),
                    version: r.meta.version.clone(),
                };
                let bytes = r.bytes().await.map_err(self.store_err("reading", rel))?;
                Ok(Some((bytes.to_vec(), version)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_err("reading", rel)(e)),
        }
    }

    /// Replaces `rel` with `bytes` only if it is still at `version` (or, with `None`, only if
    /// absent). `Ok(false)` when someone else wrote it since (the compare-and-swap lost).
    ///
    /// # Errors
    /// [`StorageError::Store`] for anything but the lost condition.
    pub async fn swap(
        &self,
        rel: &str,
        bytes: Vec<u8>,
        version: Option<UpdateVersion>,
    ) -> Result<Option<UpdateVersion>, StorageError> {
        let mode = match version {
            Some(v) => PutMode::Update(v),
            None => PutMode::Create,
        };
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&self.path(rel), PutPayload::from(bytes), opts)
            .await
        {
            Ok(r) => Ok(Some(UpdateVersion {
                e_tag: r.e_tag,
                version: r.version,
            })),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(None),
            Err(e) => Err(self.store_err("replacing", rel)(e)),
        }
    }
}
