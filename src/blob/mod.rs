//! Blob storage: immutable, content-addressed (sha256) package files, and the staging of
//! uploads on their way in.

mod fs;
pub(crate) mod mapped;
mod s3;
mod s3_http;
pub mod small;

use std::any::Any;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;

pub use fs::FsBlobStore;
pub use s3::{S3BlobStore, MULTIPART_THRESHOLD};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} not found")]
    NotFound(String),
    #[error("blob storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The storage cannot be reached now (a remote store is down or does not answer);
    /// the same request may work later.
    #[error("blob storage unavailable: {0}")]
    Unavailable(String),
}

pub type BlobResult<T> = Result<T, BlobError>;

/// A readable blob: its length and a stream of the requested byte range.
pub struct BlobReader {
    pub size: u64,
    pub body: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
    /// The same range already in memory, when the store read it whole (small ranges):
    /// served as it is, with no stream to drive.
    pub bytes: Option<bytes::Bytes>,
    /// The same range as a mapping of the stored file (the filesystem store's longer
    /// ranges): its pages are the kernel's page cache, read where they are by whoever
    /// writes them out. Not memory of the process's own, so never kept as if it were.
    /// Shorter than the range only when the file is shorter than asked for.
    pub mapped: Option<bytes::Bytes>,
}

impl BlobReader {
    pub fn streaming(size: u64, body: impl tokio::io::AsyncRead + Send + 'static) -> BlobReader {
        BlobReader {
            size,
            body: Box::pin(body),
            bytes: None,
            mapped: None,
        }
    }

    pub fn in_memory(size: u64, bytes: bytes::Bytes) -> BlobReader {
        BlobReader {
            size,
            body: Box::pin(std::io::Cursor::new(bytes.clone())),
            bytes: Some(bytes),
            mapped: None,
        }
    }

    pub fn mapped(size: u64, mapped: bytes::Bytes) -> BlobReader {
        BlobReader {
            size,
            body: Box::pin(std::io::Cursor::new(mapped.clone())),
            bytes: None,
            mapped: Some(mapped),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub sha256: String,
    pub size: u64,
    pub modified: std::time::SystemTime,
}

/// A staged upload that was neither committed nor dropped: a process died while
/// receiving it.
#[derive(Debug, Clone)]
pub struct StagedInfo {
    /// What `BlobStore::remove_staged` takes.
    pub name: String,
    pub size: u64,
    /// Its last write.
    pub modified: std::time::SystemTime,
}

/// An upload on its way into a store: a local file that the caller writes (through
/// `AsyncWrite`, hashing the bytes itself), may read back by `path` once flushed, and then
/// hands to `BlobStore::commit`. Dropped uncommitted, it removes its file.
///
/// The token is the issuing store's own: what it needs at commit besides the file.
pub struct Staged {
    file: tokio::fs::File,
    path: tempfile::TempPath,
    token: Box<dyn Any + Send + Sync>,
}

impl Staged {
    /// For stores: wraps a new local file, removed when the handle is dropped.
    pub fn new(file: tempfile::NamedTempFile, token: impl Any + Send + Sync) -> Staged {
        let (file, path) = file.into_parts();
        Staged {
            file: tokio::fs::File::from_std(file),
            path,
            token: Box::new(token),
        }
    }

    /// The local file. It holds everything written once `flush` has returned.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// For stores: the token given to `new`, if it has type `T`.
    pub fn token<T: Any>(&self) -> Option<&T> {
        self.token.downcast_ref()
    }

    /// For stores: writes out what is buffered and makes the file's content durable.
    pub async fn sync(&mut self) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.file.flush().await?;
        self.file.sync_all().await
    }

    /// For stores: closes the file and keeps only its path, which still removes the file
    /// when dropped (`TempPath::persist` or `keep` prevents that).
    pub fn into_path(self) -> tempfile::TempPath {
        self.path
    }
}

impl tokio::io::AsyncWrite for Staged {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Starts an upload: an empty staged file, to be written, then committed or dropped.
    async fn stage(&self) -> BlobResult<Staged>;
    /// Stores what `staged` holds under `sha256` (which the caller computed) durably.
    /// Content that is already stored is kept and its blob counts as written now, so
    /// orphan collection does not take it while a new row for it is on its way.
    async fn commit(&self, staged: Staged, sha256: &str) -> BlobResult<()>;
    /// Size of the blob, or NotFound.
    async fn size(&self, sha256: &str) -> BlobResult<u64>;
    /// Opens `len` bytes starting at `offset`.
    async fn open_range(&self, sha256: &str, offset: u64, len: u64) -> BlobResult<BlobReader>;
    async fn delete(&self, sha256: &str) -> BlobResult<()>;
    /// Every stored blob with its size and last write (or re-commit) time; never a staged
    /// upload.
    async fn list(&self) -> BlobResult<Vec<BlobInfo>>;
    /// Staged uploads that still exist: those in progress and those a dead process left.
    async fn list_staged(&self) -> BlobResult<Vec<StagedInfo>>;
    /// Removes a staged upload named by `list_staged`; gone already is fine.
    async fn remove_staged(&self, name: &str) -> BlobResult<()>;
    /// Whether the storage is reachable and writable.
    async fn ping(&self) -> BlobResult<()>;
}

/// Blob keys are lowercase hex sha256 digests; anything else never reaches a path.
pub fn is_valid_key(sha256: &str) -> bool {
    sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// For stores that stage uploads in a local directory: a new empty file in `dir`.
pub(crate) async fn stage_in(dir: &Path, token: impl Any + Send + Sync) -> BlobResult<Staged> {
    let in_dir = dir.to_path_buf();
    let file = tokio::task::spawn_blocking(move || {
        tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(in_dir)
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok(Staged::new(file, token))
}

/// The files of the staging directory `dir`, for `BlobStore::list_staged`.
pub(crate) async fn list_staged_in(dir: &Path) -> BlobResult<Vec<StagedInfo>> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut staged = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                // Committed or dropped since the directory was read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_file() {
                staged.push(StagedInfo {
                    name: entry.file_name().to_string_lossy().to_string(),
                    size: meta.len(),
                    modified: meta.modified()?,
                });
            }
        }
        Ok(staged)
    })
    .await
    .map_err(std::io::Error::other)?
    .map_err(BlobError::from)
}

/// Removes the file `name` of the staging directory `dir`, for `BlobStore::remove_staged`:
/// a plain file name only, and gone already is fine.
pub(crate) async fn remove_staged_in(dir: &Path, name: &str) -> BlobResult<()> {
    let plain =
        !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
    if !plain {
        return Err(BlobError::NotFound(name.to_string()));
    }
    match tokio::fs::remove_file(dir.join(name)).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}
