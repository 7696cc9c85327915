//! Stored blob files mapped for downloads. A mapping's pages are the kernel's page cache:
//! the answer is written from them without a copy into the process's memory first, and
//! the file's descriptor is closed as soon as it is mapped.
//!
//! The downloads of one file under way at the same time share its mapping: a file many
//! clients fetch at once is mapped once, and its pages stay mapped from one download to
//! the next instead of being mapped, faulted in and unmapped by each. A mapping lives as
//! long as a download uses it and no longer, so a deleted blob's space is given back when
//! its last download ends, as with a file kept open.
//!
//! A mapping keeps its file open, and is known by the addresses of its bytes
//! ([`region`]): the connection that writes bytes of a mapping sends them from the file
//! with sendfile(2) (`http::connections::socket`), so that not even the copy into the
//! socket is made, as nginx sends files.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use memmap2::Mmap;

/// The mappings in use, by sha256.
#[derive(Default)]
pub struct Mappings {
    live: Mutex<HashMap<String, Weak<Mapping>>>,
}

/// A stored blob file, open and mapped whole.
struct Mapping {
    map: Mmap,
    file: std::fs::File,
}

/// Every mapping of the process, by the address of its first byte.
static REGIONS: Mutex<BTreeMap<usize, Weak<Mapping>>> = Mutex::new(BTreeMap::new());

impl Drop for Mapping {
    fn drop(&mut self) {
        // Before the address range is unmapped (after this), so it is never found once it
        // may hold something else.
        REGIONS
            .lock()
            .expect("regions poisoned")
            .remove(&(self.map.as_ptr() as usize));
    }
}

/// One download's hold on a shared mapping, as the owner of its `Bytes`.
struct Held(Arc<Mapping>);

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.0.map
    }
}

/// Bytes that are a stretch of a mapped blob file, and where they lie in it.
pub struct FileRegion {
    mapping: Arc<Mapping>,
    pub offset: u64,
    pub len: usize,
}

impl FileRegion {
    /// The file, open for as long as this lasts.
    pub fn file(&self) -> &std::fs::File {
        &self.mapping.file
    }
}

/// Where `bytes` lie in a mapped blob file, when they are bytes of a mapping. Whoever
/// holds `bytes` holds their mapping, so it cannot go meanwhile.
pub fn region(bytes: &[u8]) -> Option<FileRegion> {
    let start = bytes.as_ptr() as usize;
    let regions = REGIONS.lock().expect("regions poisoned");
    let (&first, mapping) = regions.range(..=start).next_back()?;
    let mapping = mapping.upgrade()?;
    drop(regions);
    let offset = start - first;
    (offset + bytes.len() <= mapping.map.len()).then(|| FileRegion {
        mapping,
        offset: offset as u64,
        len: bytes.len(),
    })
}

impl Mappings {
    /// The whole blob `sha256` from a mapping downloads under way use, if any.
    pub fn shared(&self, sha256: &str) -> Option<Bytes> {
        let live = self.live.lock().expect("mappings poisoned");
        let mapping = live.get(sha256)?.upgrade()?;
        Some(Bytes::from_owner(Held(mapping)))
    }

    /// Maps the whole blob `sha256`, open as `file` (of `size` bytes, as just read from
    /// it), for this download and those that come while it lasts, which keep it open.
    pub fn map(&self, sha256: &str, file: &std::fs::File, size: u64) -> std::io::Result<Bytes> {
        if size == 0 {
            return Ok(Bytes::new());
        }
        let mapping = Arc::new(Mapping {
            map: map(file, size)?,
            file: file.try_clone()?,
        });
        REGIONS
            .lock()
            .expect("regions poisoned")
            .insert(mapping.map.as_ptr() as usize, Arc::downgrade(&mapping));
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

    #[test]
    fn bytes_of_a_mapping_are_found_in_their_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&(0..20_000u32).map(|i| i as u8).collect::<Vec<_>>())
            .unwrap();
        let mappings = Mappings::default();
        let whole = mappings.map("b", file.as_file(), 20_000).unwrap();
        let part = whole.slice(5_000..12_000);
        let found = region(&part).expect("a mapping's bytes");
        assert_eq!((found.offset, found.len), (5_000, 7_000));
        let mut read = vec![0u8; 7_000];
        std::os::unix::fs::FileExt::read_exact_at(found.file(), &mut read, found.offset).unwrap();
        assert_eq!(read, part.as_ref());
        assert!(
            region(&Bytes::from(vec![1u8; 100])).is_none(),
            "memory of the process's own"
        );
        let address = whole.as_ptr() as usize;
        drop((found, part, whole));
        assert!(
            !REGIONS.lock().unwrap().contains_key(&address),
            "forgotten once unmapped"
        );
    }
}
