//! The chunks package files are sent in, and the memory they may hold. A chunk stays in
//! memory until the connection has written it, which is as long as its client takes: a
//! client that stops reading keeps its last chunk until the send timeout ends the
//! connection. So large chunks of a stream (S3), which keep reads few, come from a
//! process-wide budget (`server.download_buffer_bytes`, counted until each chunk is
//! written); with the budget spent, files are read in small chunks.
//!
//! A file mapped from the filesystem store needs no budget: its slices are views of the
//! page cache, which the kernel copies into the socket, and hold no memory of the
//! process's own. They are handed out as large chunks all the same, so that an answer
//! hands hyper something at the pace a stream does and the send timeout judges both
//! alike.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::AsyncRead;

/// A chunk read while the budget has room.
pub const LARGE: usize = 256 * 1024;
/// A chunk read beyond the budget: what a stalled download holds at most then.
pub const SMALL: usize = 16 * 1024;

/// Bytes of large chunks not yet written, against a limit.
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
}

/// `bytes` of the budget, given back when dropped.
struct Lease {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes counted now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn lease(self: &Arc<Self>, bytes: usize) -> Option<Lease> {
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > self.limit {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            return None;
        }
        Some(Lease {
            budget: self.clone(),
            bytes,
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A large chunk's bytes with their lease: dropped together once written.
struct Leased {
    bytes: Bytes,
    _lease: Lease,
}

impl AsRef<[u8]> for Leased {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The `len` bytes of `reader` as a stream of chunks, large while `budget` has room.
pub struct Chunks {
    reader: Pin<Box<dyn AsyncRead + Send>>,
    left: u64,
    budget: Arc<Budget>,
    /// The chunk being read, and its lease if it is large.
    filling: Option<(BytesMut, Option<Lease>)>,
}

impl Chunks {
    pub fn new(reader: Pin<Box<dyn AsyncRead + Send>>, len: u64, budget: Arc<Budget>) -> Chunks {
        Chunks {
            reader,
            left: len,
            budget,
            filling: None,
        }
    }

    fn next_buffer(&self) -> (BytesMut, Option<Lease>) {
        let want = |size: usize| usize::try_from(self.left).map_or(size, |left| left.min(size));
        match self.budget.lease(want(LARGE)) {
            Some(lease) => (BytesMut::with_capacity(lease.bytes), Some(lease)),
            None => (BytesMut::with_capacity(want(SMALL)), None),
        }
    }
}

impl Stream for Chunks {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let (buffer, _) = match &mut this.filling {
            Some(filling) => filling,
            None => this.filling.insert(this.next_buffer()),
        };
        // Fills the chunk as far as reads that are ready allow.
        loop {
            if buffer.len() == buffer.capacity() {
                break;
            }
            match tokio_util::io::poll_read_buf(this.reader.as_mut(), cx, buffer) {
                Poll::Ready(Ok(0)) if buffer.is_empty() => {
                    this.filling = None;
                    return Poll::Ready(Some(Err(std::io::ErrorKind::UnexpectedEof.into())));
                }
                Poll::Ready(Ok(0)) => break,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.filling = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Pending if buffer.is_empty() => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        let Some((buffer, lease)) = this.filling.take() else {
            return Poll::Ready(None);
        };
        this.left = this.left.saturating_sub(buffer.len() as u64);
        let bytes = buffer.freeze();
        Poll::Ready(Some(Ok(match lease {
            Some(lease) => Bytes::from_owner(Leased {
                bytes,
                _lease: lease,
            }),
            None => bytes,
        })))
    }
}

/// The `len` bytes of a mapped range as chunks of `LARGE` bytes (slices, no copies); an
/// error at the end when the mapping is shorter (its file is shorter than its row says),
/// as `Chunks` ends such a file.
pub struct Slices {
    rest: Bytes,
    left: u64,
}

impl Slices {
    pub fn new(mapped: Bytes, len: u64) -> Slices {
        Slices {
            rest: mapped,
            left: len,
        }
    }
}

impl Stream for Slices {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        if self.rest.is_empty() {
            self.left = 0;
            return Poll::Ready(Some(Err(std::io::ErrorKind::UnexpectedEof.into())));
        }
        let n = self.rest.len().min(LARGE);
        let n = usize::try_from(self.left).map_or(n, |left| left.min(n));
        let chunk = self.rest.split_to(n);
        self.left -= n as u64;
        Poll::Ready(Some(Ok(chunk)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let chunks = usize::try_from(self.left.div_ceil(LARGE as u64)).unwrap_or(usize::MAX);
        (chunks, Some(chunks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn reader(len: usize) -> Pin<Box<dyn AsyncRead + Send>> {
        Box::pin(std::io::Cursor::new(vec![7u8; len]))
    }

    #[tokio::test]
    async fn chunks_are_large_while_the_budget_lasts_and_counted_until_dropped() {
        let budget = Budget::new(2 * LARGE);
        let mut first = Chunks::new(reader(3 * LARGE), 3 * LARGE as u64, budget.clone());
        let a = first.next().await.unwrap().unwrap();
        let b = first.next().await.unwrap().unwrap();
        assert_eq!((a.len(), b.len()), (LARGE, LARGE));
        assert_eq!(budget.used(), 2 * LARGE);
        // Spent: small chunks, outside the budget.
        let c = first.next().await.unwrap().unwrap();
        assert_eq!(c.len(), SMALL);
        assert_eq!(budget.used(), 2 * LARGE);
        drop(a);
        assert_eq!(budget.used(), LARGE);
        // The rest of the file, large again.
        let d = first.next().await.unwrap().unwrap();
        assert_eq!(d.len(), LARGE - SMALL);
        assert!(first.next().await.is_none());
        drop((b, c));
        assert_eq!(budget.used(), LARGE - SMALL);
        drop(d);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn mapped_ranges_are_sliced_without_the_budget() {
        let bytes = Bytes::from((0..LARGE * 2 + 10).map(|i| i as u8).collect::<Vec<_>>());
        let slices: Vec<Bytes> = Slices::new(bytes.clone(), bytes.len() as u64)
            .map(|chunk| chunk.unwrap())
            .collect()
            .await;
        let lens: Vec<usize> = slices.iter().map(Bytes::len).collect();
        assert_eq!(lens, [LARGE, LARGE, 10]);
        assert_eq!(slices.concat(), bytes);
        // Views of the same bytes, not copies.
        assert_eq!(slices[1].as_ptr(), bytes[LARGE..].as_ptr());
    }

    #[tokio::test]
    async fn a_mapped_file_shorter_than_its_row_says_is_an_error() {
        let mut slices = Slices::new(Bytes::from(vec![7u8; 10]), 20);
        assert_eq!(slices.next().await.unwrap().unwrap().len(), 10);
        assert!(slices.next().await.unwrap().is_err());
        assert!(slices.next().await.is_none());
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_row_says_is_an_error() {
        let mut chunks = Chunks::new(reader(10), 20, Budget::new(LARGE));
        assert_eq!(chunks.next().await.unwrap().unwrap().len(), 10);
        assert!(chunks.next().await.unwrap().is_err());
    }
}
