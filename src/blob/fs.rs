//! Filesystem blob store: `<root>/sha256/<ab>/<abcdef…>`, written by rename after fsync.
//! Uploads are staged in `<root>/.staging`, on the blobs' filesystem, so that the rename
//! never crosses filesystems.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::task::JoinHandle;

use super::*;

/// Ranges up to this size are read whole into memory in one go; longer ones stream. No
/// more than the memory cache keeps (`small::MAX_FILE`): a client that stops reading
/// holds a whole read as long as its connection lasts, while a stream's chunks are
/// bounded (`http::chunks`).
const READ_WHOLE: u64 = super::small::MAX_FILE;

/// Name of the staging directory under the root; not a shard name, so `list` never
/// takes a staged file for a blob.
const STAGING: &str = ".staging";

pub struct FsBlobStore {
    root: PathBuf,
    staging: PathBuf,
}

/// The token of a staged upload: the staging directory of the store that made it.
struct StagedIn(PathBuf);

impl FsBlobStore {
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<FsBlobStore> {
        let root = root.into();
        let staging = root.join(STAGING);
        std::fs::create_dir_all(root.join("sha256"))?;
        std::fs::create_dir_all(&staging)?;
        Ok(FsBlobStore { root, staging })
    }

    fn path(&self, sha256: &str) -> BlobResult<PathBuf> {
        if !is_valid_key(sha256) {
            return Err(BlobError::NotFound(sha256.to_string()));
        }
        Ok(self.root.join("sha256").join(&sha256[..2]).join(sha256))
    }
}

fn not_found(sha256: &str) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            BlobError::NotFound(sha256.to_string())
        } else {
            BlobError::Io(e)
        }
    }
}

/// `left` bytes of a file from where its cursor is, each read a trip to the blocking pool
/// into a buffer of the size asked for, dropped once copied out. Nothing is kept between
/// reads: tokio's `File` keeps a buffer as large as its largest read for as long as the
/// file is open, which a download whose client stops reading would hold on to.
struct FileRange {
    left: u64,
    state: ReadState,
}

enum ReadState {
    Idle(std::fs::File),
    Reading(JoinHandle<(std::fs::File, std::io::Result<Vec<u8>>)>),
    Read {
        file: std::fs::File,
        bytes: Vec<u8>,
        copied: usize,
    },
    /// The blocking task failed and took the file with it.
    Lost,
}

impl tokio::io::AsyncRead for FileRange {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        use std::future::Future;
        use std::io::Read;
        let this = &mut *self;
        loop {
            match std::mem::replace(&mut this.state, ReadState::Lost) {
                ReadState::Idle(file) => {
                    if this.left == 0 || dst.remaining() == 0 {
                        this.state = ReadState::Idle(file);
                        return Poll::Ready(Ok(()));
                    }
                    let want = this.left.min(dst.remaining() as u64);
                    this.state = ReadState::Reading(tokio::task::spawn_blocking(move || {
                        let mut bytes = Vec::with_capacity(want as usize);
                        let read = (&file).take(want).read_to_end(&mut bytes);
                        (file, read.map(|_| bytes))
                    }));
                }
                ReadState::Reading(mut task) => match Pin::new(&mut task).poll(cx) {
                    Poll::Pending => {
                        this.state = ReadState::Reading(task);
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(std::io::Error::other(e))),
                    Poll::Ready(Ok((file, Err(e)))) => {
                        this.state = ReadState::Idle(file);
                        return Poll::Ready(Err(e));
                    }
                    Poll::Ready(Ok((file, Ok(bytes)))) => {
                        if bytes.is_empty() {
                            // Shorter than asked for: the end, as for any reader.
                            this.left = 0;
                            this.state = ReadState::Idle(file);
                            return Poll::Ready(Ok(()));
                        }
                        this.left -= bytes.len() as u64;
                        this.state = ReadState::Read {
                            file,
                            bytes,
                            copied: 0,
                        };
                    }
                },
                ReadState::Read {
                    file,
                    bytes,
                    copied,
                } => {
                    let n = dst.remaining().min(bytes.len() - copied);
                    dst.put_slice(&bytes[copied..copied + n]);
                    this.state = if copied + n == bytes.len() {
                        ReadState::Idle(file)
                    } else {
                        ReadState::Read {
                            file,
                            bytes,
                            copied: copied + n,
                        }
                    };
                    return Poll::Ready(Ok(()));
                }
                ReadState::Lost => {
                    return Poll::Ready(Err(std::io::Error::other("the file was lost")));
                }
            }
        }
    }
}

/// Makes a rename or creation in `dir` durable.
pub(crate) async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
        .await
        .map_err(std::io::Error::other)?
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn stage(&self) -> BlobResult<Staged> {
        stage_in(&self.staging, StagedIn(self.staging.clone())).await
    }

    async fn commit(&self, mut staged: Staged, sha256: &str) -> BlobResult<()> {
        let target = self.path(sha256)?;
        if staged.token::<StagedIn>().map(|t| &t.0) != Some(&self.staging) {
            return Err(std::io::Error::other("upload staged by another blob store").into());
        }
        let dir = target.parent().expect("blob path has a parent");
        if tokio::fs::try_exists(&target).await? {
            // Fresh again: orphan collection must not take content that is being reused.
            let touched = target.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::File::options()
                    .write(true)
                    .open(&touched)?
                    .set_modified(std::time::SystemTime::now())
            })
            .await
            .map_err(std::io::Error::other)??;
            return Ok(());
        }
        staged.sync().await?;
        if !tokio::fs::try_exists(dir).await? {
            tokio::fs::create_dir_all(dir).await?;
            sync_dir(&self.root.join("sha256")).await?;
        }
        let path = staged.into_path();
        let renamed = target.clone();
        tokio::task::spawn_blocking(move || path.persist(renamed))
            .await
            .map_err(std::io::Error::other)?
            .map_err(|e| e.error)?;
        sync_dir(dir).await?;
        Ok(())
    }

    async fn size(&self, sha256: &str) -> BlobResult<u64> {
        let path = self.path(sha256)?;
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(not_found(sha256))?;
        Ok(meta.len())
    }

    async fn open_range(&self, sha256: &str, offset: u64, len: u64) -> BlobResult<BlobReader> {
        let path = self.path(sha256)?;
        if len <= READ_WHOLE {
            // One trip to the blocking pool: open, size and read together.
            let read = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, Vec<u8>)> {
                use std::io::{Read, Seek};
                let mut file = std::fs::File::open(&path)?;
                let size = file.metadata()?.len();
                if offset > 0 {
                    file.seek(SeekFrom::Start(offset))?;
                }
                let mut bytes = Vec::with_capacity(len as usize);
                file.take(len).read_to_end(&mut bytes)?;
                Ok((size, bytes))
            })
            .await
            .map_err(std::io::Error::other)?;
            let (size, bytes) = read.map_err(not_found(sha256))?;
            return Ok(BlobReader::in_memory(size, bytes.into()));
        }
        let opened = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            use std::io::Seek;
            let mut file = std::fs::File::open(&path)?;
            let size = file.metadata()?.len();
            if offset > 0 {
                file.seek(SeekFrom::Start(offset))?;
            }
            Ok((file, size))
        })
        .await
        .map_err(std::io::Error::other)?;
        let (file, size) = opened.map_err(not_found(sha256))?;
        Ok(BlobReader::streaming(
            size,
            FileRange {
                left: len,
                state: ReadState::Idle(file),
            },
        ))
    }

    async fn delete(&self, sha256: &str) -> BlobResult<()> {
        let path = self.path(sha256)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self) -> BlobResult<Vec<BlobInfo>> {
        let root = self.root.join("sha256");
        tokio::task::spawn_blocking(move || {
            let mut blobs = Vec::new();
            for shard in std::fs::read_dir(&root)? {
                let shard = shard?;
                if !shard.file_type()?.is_dir() {
                    continue;
                }
                for entry in std::fs::read_dir(shard.path())? {
                    let entry = entry?;
                    let name = entry.file_name().to_string_lossy().to_string();
                    let meta = entry.metadata()?;
                    if meta.is_file() && is_valid_key(&name) {
                        blobs.push(BlobInfo {
                            sha256: name,
                            size: meta.len(),
                            modified: meta.modified()?,
                        });
                    }
                }
            }
            Ok(blobs)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    async fn list_staged(&self) -> BlobResult<Vec<StagedInfo>> {
        list_staged_in(&self.staging).await
    }

    async fn remove_staged(&self, name: &str) -> BlobResult<()> {
        remove_staged_in(&self.staging, name).await
    }

    async fn ping(&self) -> BlobResult<()> {
        tokio::fs::metadata(self.root.join("sha256")).await?;
        tokio::fs::metadata(&self.staging).await?;
        Ok(())
    }
}
