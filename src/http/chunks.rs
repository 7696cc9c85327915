//! The chunks package files are sent in, and the memory they may hold. A chunk stays in
//! memory until the connection has written it, which is as long as its client takes: a
//! client that stops reading keeps its last chunk until the send timeout ends the
//! connection. So large chunks, which keep file reads (each a trip to the blocking pool)
//! few, come from a process-wide budget (`server.download_buffer_bytes`, counted until
//! each chunk is written); with the budget spent, files are read in small chunks.

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
    async fn a_file_shorter_than_its_row_says_is_an_error() {
        let mut chunks = Chunks::new(reader(10), 20, Budget::new(LARGE));
        assert_eq!(chunks.next().await.unwrap().unwrap().len(), 10);
        assert!(chunks.next().await.unwrap().is_err());
    }
}
