//! Stored blob files mapped for downloads. A mapping's pages are the kernel's page cache:
//! the answer is written from them without a copy into the process's memory first, and
//! the file's descriptor is closed as soon as it is mapped.
//!
//! The downloads of one file under way at the same time share its mapping: a file many
//! clients fetch at once is mapped once, and its pages stay mapped from one download to
//! the next instead of being mapped, faulted in and unmapped by each. A mapping lives as
//! long as a download uses it and no longer, so a deleted blob's space is given back when
//! its last download ends, as with a file kept open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use memmap2::Mmap;

/// The mappings in use, by sha256.
#[derive(Default)]
pub struct Mappings {
    live: Mutex<HashMap<String, Weak<Mmap>>>,
}

/// One download's hold on a shared mapping, as the owner of its `Bytes`.
struct Held(Arc<Mmap>);

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Mappings {
    /// The whole blob `sha256` from a mapping downloads under way use, if any.
    pub fn shared(&self, sha256: &str) -> Option<Bytes> {
        let live = self.live.lock().expect("mappings poisoned");
        let mapping = live.get(sha256)?.upgrade()?;
        Some(Bytes::from_owner(Held(mapping)))
    }

    /// Maps the whole blob `sha256`, open as `file` (of `size` bytes, as just read from
    /// it), for this download and those that come while it lasts.
    pub fn map(&self, sha256: &str, file: &std::fs::File, size: u64) -> std::io::Result<Bytes> {
        if size == 0 {
            return Ok(Bytes::new());
        }
        let mapping = Arc::new(map(file, size)?);
        let mut live = self.live.lock().expect("mappings poisoned");
        // Those no download uses any more were unmapped when their last one ended.
        live.retain(|_, mapping| mapping.strong_count() > 0);
        live.insert(sha256.to_string(), Arc::downgrade(&mapping));
        Ok(Bytes::from_owner(Held(mapping)))
    }

    /// Mappings in use now.
    #[cfg(test)]
    fn in_use(&self) -> usize {
        let live = self.live.lock().expect("mappings poisoned");
        live.values().filter(|m| m.strong_count() > 0).count()
    }
}

/// The first `size` bytes of the stored blob `file`, mapped read-only.
#[allow(unsafe_code)]
fn map(file: &std::fs::File, size: u64) -> std::io::Result<Mmap> {
    let len = usize::try_from(size).map_err(std::io::Error::other)?;
    // SAFETY: a mapping is sound as long as nobody changes or truncates the file while it
    // is mapped. `file` is a committed blob: written whole in the staging directory,
    // synced, then renamed to its name, and never opened for writing again except to set
    // its modification time (a commit of the same content). Removing it unlinks the name
    // only; the mapped inode stays as it was until the mapping goes. No instance sharing
    // the directory does otherwise, and `size` is the file's size, so no page of the
    // mapping lies past its end. Only a change made to the file in place from outside
    // (the README forbids it) could show other bytes, or end the process with SIGBUS if
    // it truncated the file.
    unsafe { memmap2::MmapOptions::new().len(len).map(file) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn downloads_at_the_same_time_share_a_mapping_that_goes_with_the_last() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&[5u8; 10_000]).unwrap();
        let mappings = Mappings::default();
        assert!(mappings.shared("a").is_none());
        let first = mappings.map("a", file.as_file(), 10_000).unwrap();
        assert_eq!(first.as_ref(), &[5u8; 10_000][..]);
        let second = mappings.shared("a").expect("shared while the first lasts");
        assert_eq!(first.as_ptr(), second.as_ptr(), "the same mapping");
        assert_eq!(mappings.in_use(), 1);
        drop(first);
        assert_eq!(mappings.in_use(), 1, "the second still uses it");
        drop(second);
        assert_eq!(mappings.in_use(), 0);
        assert!(
            mappings.shared("a").is_none(),
            "unmapped with its last download"
        );
    }
}
