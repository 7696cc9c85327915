//! S3-compatible blob store: objects `<prefix>/sha256/<ab>/<abcdef…>` in one bucket.
//! Uploads are staged in a local directory and sent to the bucket at commit: in one
//! request up to `MULTIPART_THRESHOLD`, as a multipart upload above it. Requests go
//! through the bounded client of `s3_http`; a bucket that does not answer in time, or
//! answers 5xx once the retries are spent, is `Unavailable`.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, PutPayload, RetryConfig,
    WriteMultipart,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::s3_http::{Answered, BoundedConnector};
use super::*;
use crate::config::S3Config;

/// Staged files larger than this go up as multipart uploads.
pub const MULTIPART_THRESHOLD: u64 = 8 << 20;
/// Size of each part of a multipart upload (S3 wants at least 5 MiB but for the last).
const PART_SIZE: usize = 8 << 20;
/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;
/// Commits sending to the bucket at once; more wait. Each holds its upload in memory (one
/// request's body, or up to `PARTS_IN_FLIGHT` + 1 parts), so this bounds that memory
/// (about 200 MiB) whatever the number of uploads received at once.
const COMMITS_AT_ONCE: usize = 8;
/// Backoff between the tries of a failed request: from 100 ms, doubling at most, never
/// over `MAX_BACKOFF`, so that `storage.s3.retry_timeout_secs` bounds the total.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

pub struct S3BlobStore {
    store: AmazonS3,
    /// `<prefix>/sha256`: every blob is below it.
    blobs: ObjectPath,
    staging: PathBuf,
    /// For messages: `bucket/prefix`.
    name: String,
    commits: tokio::sync::Semaphore,
}

/// The token of a staged upload: the staging directory of the store that made it.
struct StagedIn(PathBuf);

impl S3BlobStore {
    /// A store on the bucket `config` names, staging uploads in `staging` (created).
    /// Connects to nothing yet: `ping` tells whether the bucket answers.
    pub fn new(config: &S3Config, staging: impl Into<PathBuf>) -> anyhow::Result<S3BlobStore> {
        let staging = staging.into();
        std::fs::create_dir_all(&staging)?;
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_allow_http(config.allow_http)
            // Only `allow_http` of these reaches the bounded client, which sets its own
            // timeouts: `ClientOptions::timeout` would cut a long download.
            .with_client_options(ClientOptions::new().with_allow_http(config.allow_http))
            .with_http_connector(BoundedConnector {
                connect: Duration::from_secs(config.connect_timeout_secs),
                wait: Duration::from_secs(config.first_byte_timeout_secs),
            })
            // A request is tried again only while the first try is less than
            // `retry_timeout` ago: a timed-out try (`wait`) is repeated only when the
            // timeout is the longer.
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: FIRST_BACKOFF,
                    max_backoff: MAX_BACKOFF,
                    base: 2.0,
                },
                max_retries: config.max_retries,
                retry_timeout: Duration::from_secs(config.retry_timeout_secs),
            });
        if !config.endpoint.is_empty() {
            builder = builder.with_endpoint(&config.endpoint);
        }
        if !config.region.is_empty() {
            builder = builder.with_region(&config.region);
        }
        if !config.access_key_id.is_empty() {
            builder = builder.with_access_key_id(&config.access_key_id);
        }
        if !config.secret_access_key.is_empty() {
            builder = builder.with_secret_access_key(&config.secret_access_key);
        }
        let store = builder.build()?;
        let prefix = config.prefix.trim_matches('/');
        let blobs = ObjectPath::parse(prefix)
            .map_err(|e| anyhow::anyhow!("storage.s3.prefix {prefix:?}: {e}"))?
            .child("sha256");
        let name = if prefix.is_empty() {
            config.bucket.clone()
        } else {
            format!("{}/{prefix}", config.bucket)
        };
        Ok(S3BlobStore {
            store,
            blobs,
            staging,
            name,
            commits: tokio::sync::Semaphore::new(COMMITS_AT_ONCE),
        })
    }

    fn key(&self, sha256: &str) -> BlobResult<ObjectPath> {
        if !is_valid_key(sha256) {
            return Err(BlobError::NotFound(sha256.to_string()));
        }
        Ok(self.blobs.child(&sha256[..2]).child(sha256))
    }

    /// The blob's object error as a `BlobError`: NotFound, Unavailable when the server
    /// cannot be reached, else I/O.
    fn error(&self, sha256: &str) -> impl Fn(object_store::Error) -> BlobError + '_ {
        let sha256 = sha256.to_string();
        move |e| match e {
            object_store::Error::NotFound { .. } => BlobError::NotFound(sha256.clone()),
            other => self.other_error(other),
        }
    }

    fn other_error(&self, e: object_store::Error) -> BlobError {
        bucket_error(&self.name, e)
    }

    async fn upload_parts(
        &self,
        key: &ObjectPath,
        file: &mut tokio::fs::File,
    ) -> Result<(), object_store::Error> {
        let upload = self.store.put_multipart(key).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                abort_later(writer);
                return Err(e);
            }
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    abort_later(writer);
                    return Err(object_store::Error::Generic {
                        store: "S3",
                        source: Box::new(e),
                    });
                }
            };
            if n == 0 {
                break;
            }
            writer.write(&buf[..n]);
        }
        writer.finish().await?;
        Ok(())
    }
}

/// Aborts a failed multipart upload in the background: the answer to the upload does not
/// wait for a bucket that may not answer (what an abort leaves behind, the bucket's
/// `AbortIncompleteMultipartUpload` rule removes).
fn abort_later(writer: WriteMultipart) {
    tokio::spawn(async move {
        if let Err(e) = writer.abort().await {
            tracing::debug!(error = %e, "aborting a multipart upload failed");
        }
    });
}

/// An error of the bucket `name` (`bucket/prefix`) as a `BlobError`: Unavailable when the
/// server cannot be reached, does not answer or answers that it cannot now; else I/O.
fn bucket_error(name: &str, e: object_store::Error) -> BlobError {
    if unreachable(&e) {
        BlobError::Unavailable(format!("S3 bucket {name}: {e}"))
    } else {
        BlobError::Io(std::io::Error::other(format!("S3 bucket {name}: {e}")))
    }
}

/// Whether `e` says that the server could not be reached, did not answer in time, or
/// answered 5xx, 429 or 408 (as opposed to answering with another error).
fn unreachable(e: &object_store::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        if error.downcast_ref::<Answered>().is_some() {
            return true;
        }
        if let Some(e) = error.downcast_ref::<reqwest::Error>() {
            if e.is_connect() || e.is_timeout() || e.is_request() {
                return true;
            }
        }
        if let Some(e) = error.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                e.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | TimedOut
                    | BrokenPipe
                    | UnexpectedEof
            ) {
                return true;
            }
        }
        source = error.source();
    }
    false
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn stage(&self) -> BlobResult<Staged> {
        stage_in(&self.staging, StagedIn(self.staging.clone())).await
    }

    /// Always uploads, even content that is stored already: the new write is what makes
    /// the object fresh again for orphan collection (S3 has no touch, and copying an
    /// object onto itself unchanged is refused).
    async fn commit(&self, mut staged: Staged, sha256: &str) -> BlobResult<()> {
        let key = self.key(sha256)?;
        if staged.token::<StagedIn>().map(|t| &t.0) != Some(&self.staging) {
            return Err(std::io::Error::other("upload staged by another blob store").into());
        }
        staged.flush().await?;
        let path = staged.into_path();
        let _sending = self
            .commits
            .acquire()
            .await
            .map_err(std::io::Error::other)?;
        let mut file = tokio::fs::File::open(&path).await?;
        let size = file.metadata().await?.len();
        if size <= MULTIPART_THRESHOLD {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).await?;
            self.store
                .put(&key, PutPayload::from(bytes))
                .await
                .map_err(self.error(sha256))?;
        } else {
            self.upload_parts(&key, &mut file)
                .await
                .map_err(self.error(sha256))?;
        }
        drop(file);
        // Removes the staged file.
        drop(path);
        Ok(())
    }

    async fn size(&self, sha256: &str) -> BlobResult<u64> {
        let key = self.key(sha256)?;
        let meta = self.store.head(&key).await.map_err(self.error(sha256))?;
        Ok(meta.size)
    }

    async fn open_range(&self, sha256: &str, offset: u64, len: u64) -> BlobResult<BlobReader> {
        let key = self.key(sha256)?;
        if len == 0 {
            // S3 has no empty range.
            let size = self.size(sha256).await?;
            return Ok(BlobReader::streaming(size, tokio::io::empty()));
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(offset..offset.saturating_add(len))),
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(&key, options)
            .await
            .map_err(self.error(sha256))?;
        let size = result.meta.size;
        // A body that stalls (or a connection that breaks) mid-way says Unavailable too,
        // through the I/O error the reader gives.
        let name = self.name.clone();
        let stream = result
            .into_stream()
            .map_err(move |e| std::io::Error::other(bucket_error(&name, e)));
        Ok(BlobReader::streaming(
            size,
            tokio_util::io::StreamReader::new(stream),
        ))
    }

    async fn delete(&self, sha256: &str) -> BlobResult<()> {
        let key = self.key(sha256)?;
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.other_error(e)),
        }
    }

    async fn list(&self) -> BlobResult<Vec<BlobInfo>> {
        let mut objects = self.store.list(Some(&self.blobs));
        let mut blobs = Vec::new();
        while let Some(meta) = objects.next().await {
            let meta = meta.map_err(|e| self.other_error(e))?;
            // Exactly `<prefix>/sha256/<ab>/<sha256>`; anything else is not a blob.
            let Some(parts) = meta.location.prefix_match(&self.blobs) else {
                continue;
            };
            let parts: Vec<_> = parts.collect();
            let [shard, name] = parts.as_slice() else {
                continue;
            };
            let name = name.as_ref();
            if is_valid_key(name) && shard.as_ref() == &name[..2] {
                blobs.push(BlobInfo {
                    sha256: name.to_string(),
                    size: meta.size,
                    modified: meta.last_modified.into(),
                });
            }
        }
        Ok(blobs)
    }

    async fn list_staged(&self) -> BlobResult<Vec<StagedInfo>> {
        list_staged_in(&self.staging).await
    }

    async fn remove_staged(&self, name: &str) -> BlobResult<()> {
        remove_staged_in(&self.staging, name).await
    }

    /// The staging directory exists and the bucket answers a listing.
    async fn ping(&self) -> BlobResult<()> {
        tokio::fs::metadata(&self.staging).await?;
        let listing = self
            .store
            .list_with_delimiter(Some(&self.blobs))
            .await
            .map_err(|e| self.other_error(e));
        listing.map(|_| ())
    }
}
