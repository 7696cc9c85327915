//! Blob storage: immutable, content-addressed (sha256) package files.

mod fs;

use std::path::Path;

use async_trait::async_trait;

pub use fs::FsBlobStore;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} not found")]
    NotFound(String),
    #[error("blob storage I/O error: {0}")]
    Io(#[from] std::io::Error),
}

pub type BlobResult<T> = Result<T, BlobError>;

/// A readable blob: its length and a stream of the requested byte range.
pub struct BlobReader {
    pub size: u64,
    pub body: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
}

#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub sha256: String,
    pub size: u64,
    pub modified: std::time::SystemTime,
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Moves the finished, fsynced file at `path` into the store under `sha256`. Storing
    /// content that is already there is a no-op.
    async fn put_file(&self, sha256: &str, path: &Path) -> BlobResult<()>;
    /// Size of the blob, or NotFound.
    async fn size(&self, sha256: &str) -> BlobResult<u64>;
    /// Opens `len` bytes starting at `offset`.
    async fn open_range(&self, sha256: &str, offset: u64, len: u64) -> BlobResult<BlobReader>;
    async fn delete(&self, sha256: &str) -> BlobResult<()>;
    /// Every stored blob with its size and last write (or re-put) time.
    async fn list(&self) -> BlobResult<Vec<BlobInfo>>;
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
