//! Slots for uploads being received and checked, shared fairly: at most
//! `limits.max_concurrent_uploads` in all, of which one user holds at most
//! `limits.max_concurrent_uploads_per_user`, so that one write token trickling bodies
//! cannot keep every other publisher out. Per instance: instances sharing a database each
//! have their own slots.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::AppError;

/// Whose upload a slot is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Uploader {
    User(i64),
    /// A request with no user (a write never gets this far without one), by its client
    /// address.
    Address(IpAddr),
}

pub struct UploadSlots {
    total: usize,
    share: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    by: HashMap<Uploader, usize>,
}

/// A slot, given back when dropped.
pub struct UploadSlot {
    slots: Arc<UploadSlots>,
    uploader: Uploader,
}

impl UploadSlots {
    /// `total` slots, at most `share` of them to one uploader.
    pub fn new(total: usize, share: usize) -> Arc<UploadSlots> {
        Arc::new(UploadSlots {
            total,
            share,
            held: Mutex::new(Held::default()),
        })
    }

    /// A slot for `uploader`: 503 when every slot is taken, else 429 when it holds its share.
    pub fn take(self: &Arc<Self>, uploader: Uploader) -> Result<UploadSlot, AppError> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.total >= self.total {
            return Err(AppError::Overloaded {
                message: format!(
                    "too many uploads in progress (limits.max_concurrent_uploads = {}): \
                     retry shortly",
                    self.total
                ),
                retry_after: 1,
            });
        }
        let own = held.by.get(&uploader).copied().unwrap_or(0);
        if own >= self.share {
            return Err(AppError::TooManyRequests {
                message: format!(
                    "too many uploads of yours in progress \
                     (limits.max_concurrent_uploads_per_user = {}): retry once one has \
                     finished",
                    self.share
                ),
                retry_after: 1,
            });
        }
        held.total += 1;
        held.by.insert(uploader, own + 1);
        Ok(UploadSlot {
            slots: self.clone(),
            uploader,
        })
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        held.total -= 1;
        if let Some(own) = held.by.get_mut(&self.uploader) {
            *own -= 1;
            if *own == 0 {
                held.by.remove(&self.uploader);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_uploader_holds_at_most_its_share() {
        let slots = UploadSlots::new(3, 2);
        let (alice, bob) = (Uploader::User(1), Uploader::User(2));
        let first = slots.take(alice).unwrap();
        let _second = slots.take(alice).unwrap();
        let refused = slots.take(alice).err().unwrap();
        assert_eq!(refused.status(), 429);
        let _bob = slots.take(bob).unwrap();
        let full = slots.take(Uploader::User(3)).err().unwrap();
        assert_eq!(full.status(), 503);
        // With every slot taken, the server is busy whoever asks.
        assert_eq!(slots.take(alice).err().unwrap().status(), 503);
        drop(first);
        let _again = slots.take(alice).unwrap();
    }
}
