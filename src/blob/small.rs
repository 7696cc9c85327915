//! Small package files kept in memory for downloads. A blob is named by its sha256, so
//! its bytes never change: what is kept is valid for as long as it is kept, and nothing
//! needs invalidating (a deleted package is no longer found before its blob is asked
//! for). Bounded by a byte budget; the oldest go first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

use super::{BlobResult, BlobStore};

/// Files up to this size are kept.
pub const MAX_FILE: u64 = 64 * 1024;

pub struct SmallFiles {
    budget: usize,
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    bytes: usize,
    files: HashMap<String, Bytes>,
    /// Insertion order, oldest first.
    order: VecDeque<String>,
}

impl SmallFiles {
    /// Keeps at most `budget` bytes of files (0: none).
    pub fn new(budget: usize) -> SmallFiles {
        SmallFiles {
            budget,
            kept: Mutex::new(Kept::default()),
        }
    }

    /// The whole blob of `size` bytes when it is small enough to keep, read from `blobs`
    /// the first time; None for a larger one (stream it instead).
    pub async fn get(
        &self,
        blobs: &dyn BlobStore,
        sha256: &str,
        size: u64,
    ) -> BlobResult<Option<Bytes>> {
        if size > MAX_FILE || self.budget == 0 {
            return Ok(None);
        }
        if let Some(bytes) = self
            .kept
            .lock()
            .expect("small files poisoned")
            .files
            .get(sha256)
        {
            return Ok(Some(bytes.clone()));
        }
        let reader = blobs.open_range(sha256, 0, size).await?;
        let bytes = match reader.bytes {
            Some(bytes) => bytes,
            None => {
                let mut body = reader.body;
                let mut buffer = Vec::with_capacity(size as usize);
                tokio::io::AsyncReadExt::read_to_end(&mut body, &mut buffer).await?;
                Bytes::from(buffer)
            }
        };
        if bytes.len() as u64 != size {
            // Not what the row says: serve nothing from here, let the caller stream it.
            return Ok(None);
        }
        self.keep(sha256, bytes.clone());
        Ok(Some(bytes))
    }

    fn keep(&self, sha256: &str, bytes: Bytes) {
        let mut kept = self.kept.lock().expect("small files poisoned");
        if kept.files.contains_key(sha256) || bytes.len() > self.budget {
            return;
        }
        while kept.bytes + bytes.len() > self.budget {
            let Some(oldest) = kept.order.pop_front() else {
                break;
            };
            if let Some(gone) = kept.files.remove(&oldest) {
                kept.bytes -= gone.len();
            }
        }
        kept.bytes += bytes.len();
        kept.order.push_back(sha256.to_string());
        kept.files.insert(sha256.to_string(), bytes);
    }

    /// Bytes kept now.
    pub fn kept_bytes(&self) -> usize {
        self.kept.lock().expect("small files poisoned").bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_holds_and_the_oldest_go_first() {
        let small = SmallFiles::new(10);
        small.keep("a", Bytes::from_static(b"aaaa"));
        small.keep("b", Bytes::from_static(b"bbbb"));
        assert_eq!(small.kept_bytes(), 8);
        small.keep("c", Bytes::from_static(b"cccc"));
        assert_eq!(small.kept_bytes(), 8);
        let kept = small.kept.lock().unwrap();
        assert!(!kept.files.contains_key("a"));
        assert!(kept.files.contains_key("b") && kept.files.contains_key("c"));
        drop(kept);
        small.keep("big", Bytes::from(vec![0u8; 11]));
        assert_eq!(small.kept_bytes(), 8, "larger than the budget: not kept");
    }
}
