//! An unsigned `APKINDEX.tar.gz` kept in a form that a change updates in proportion to
//! its size, not to the index's.
//!
//! The stanzas, in registry order, are cut into chunks of about [`CHUNK_ENTRIES`]. Each
//! chunk is compressed on its own, as raw deflate from a fresh compressor ending at a sync
//! flush (byte-aligned, no final block), and keeps those bytes and their CRC-32. The index
//! is then one gzip member: a fixed header, the deflate of the tar headers (recompressed
//! every time: `APKINDEX`'s size changes), every chunk's bytes as they are, the deflate of
//! the tar's padding and end blocks with the final block, and a trailer whose CRC-32 is
//! the combination of the parts'. A deflate stream may be any sequence of blocks, so
//! independently compressed pieces that end byte-aligned concatenate into one valid stream
//! (back-references never reach into an earlier piece, which is allowed, just not used).
//!
//! Inserting or removing a stanza inflates the one chunk it falls in, splices the text and
//! compresses that chunk again; nothing else is recompressed. The decompressed bytes are
//! exactly those of [`write_unsigned_index`](super::index::write_unsigned_index) for the
//! same stanzas in the same order; the compressed bytes differ (where chunks end).

use std::cmp::Ordering;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::index::{compare_entries, file_header, push_tar_file, BLOCK};
use super::{ApkError, ApkResult};

/// Stanzas per chunk when chunks are cut; a chunk that grows past twice as many is cut
/// again, and one that shrinks below a quarter is merged with its neighbour.
pub const CHUNK_ENTRIES: usize = 128;

/// A fixed gzip header: deflate, no flags, mtime 0, maximum compression, Unix.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3];

/// Where a stanza sorts: name, then apk version order, then checksum, then the package
/// row's id (two rows never compare equal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryKey {
    pub name: String,
    pub version: String,
    pub checksum: String,
    pub id: i64,
}

impl EntryKey {
    pub fn order(&self, other: &EntryKey) -> Ordering {
        compare_entries(
            (&self.name, &self.version, &self.checksum),
            (&other.name, &other.version, &other.checksum),
        )
        .then(self.id.cmp(&other.id))
    }
}

#[derive(Debug)]
enum Body {
    /// Compressed: raw deflate ending at a sync flush, and the CRC-32 of the text.
    Deflated { bytes: Vec<u8>, crc: u32 },
    /// Changed since it was last compressed.
    Text(Vec<u8>),
}

#[derive(Debug)]
struct Chunk {
    keys: Vec<EntryKey>,
    /// Each stanza's length in bytes, in the order of `keys`.
    lens: Vec<u32>,
    /// The text's length: the sum of `lens`.
    text_len: u64,
    body: Body,
}

impl Chunk {
    fn text(entries: Vec<(EntryKey, &str)>) -> Chunk {
        let mut text = Vec::new();
        let mut keys = Vec::with_capacity(entries.len());
        let mut lens = Vec::with_capacity(entries.len());
        for (key, stanza) in entries {
            text.extend_from_slice(stanza.as_bytes());
            keys.push(key);
            lens.push(stanza.len() as u32);
        }
        Chunk {
            keys,
            lens,
            text_len: text.len() as u64,
            body: Body::Text(text),
        }
    }

    /// The chunk's text, inflated if needed (it is then marked changed).
    fn text_mut(&mut self) -> ApkResult<&mut Vec<u8>> {
        if let Body::Deflated { bytes, .. } = &self.body {
            let text = inflate(bytes, self.text_len)?;
            self.body = Body::Text(text);
        }
        match &mut self.body {
            Body::Text(text) => Ok(text),
            Body::Deflated { .. } => unreachable!("inflated above"),
        }
    }

    fn offset_of(&self, position: usize) -> usize {
        self.lens[..position].iter().map(|&l| l as usize).sum()
    }

    fn insert(&mut self, key: EntryKey, stanza: &str) -> ApkResult<()> {
        let position = self
            .keys
            .partition_point(|k| k.order(&key) == Ordering::Less);
        let offset = self.offset_of(position);
        let text = self.text_mut()?;
        text.splice(offset..offset, stanza.bytes());
        self.keys.insert(position, key);
        self.lens.insert(position, stanza.len() as u32);
        self.text_len += stanza.len() as u64;
        Ok(())
    }

    /// Removes the stanza of `key`; false when the chunk does not hold it.
    fn remove(&mut self, key: &EntryKey) -> ApkResult<bool> {
        let Ok(position) = self.keys.binary_search_by(|k| k.order(key)) else {
            return Ok(false);
        };
        let offset = self.offset_of(position);
        let len = self.lens[position] as usize;
        let text = self.text_mut()?;
        text.drain(offset..offset + len);
        self.keys.remove(position);
        self.lens.remove(position);
        self.text_len -= len as u64;
        Ok(true)
    }

    /// Appends `other` (which sorts after this chunk).
    fn append(&mut self, mut other: Chunk) -> ApkResult<()> {
        let tail = std::mem::take(other.text_mut()?);
        self.text_mut()?.extend_from_slice(&tail);
        self.keys.append(&mut other.keys);
        self.lens.append(&mut other.lens);
        self.text_len += other.text_len;
        Ok(())
    }

    /// Cuts a changed chunk into pieces of `CHUNK_ENTRIES` if it grew past twice that.
    fn split(mut self) -> ApkResult<Vec<Chunk>> {
        if self.keys.len() <= 2 * CHUNK_ENTRIES {
            return Ok(vec![self]);
        }
        let text = std::mem::take(self.text_mut()?);
        let mut pieces = Vec::new();
        let mut offset = 0;
        let mut keys = self.keys.into_iter();
        for lens in self.lens.chunks(CHUNK_ENTRIES) {
            let len: usize = lens.iter().map(|&l| l as usize).sum();
            pieces.push(Chunk {
                keys: keys.by_ref().take(lens.len()).collect(),
                lens: lens.to_vec(),
                text_len: len as u64,
                body: Body::Text(text[offset..offset + len].to_vec()),
            });
            offset += len;
        }
        Ok(pieces)
    }

    fn compress(&mut self) -> ApkResult<()> {
        if let Body::Text(text) = &self.body {
            let mut crc = crc32fast::Hasher::new();
            crc.update(text);
            self.body = Body::Deflated {
                bytes: deflate(text, false)?,
                crc: crc.finalize(),
            };
        }
        Ok(())
    }
}

/// Raw deflate of `data` from a fresh compressor at the best level: ending at a sync
/// flush (byte-aligned, more blocks may follow), or with the final block when `last`.
///
/// The output has room for the worst case from the start: miniz_oxide can drop the end of
/// a sync flush that ran out of output space and was resumed (the last few hundred bytes
/// of a chunk were then missing from the index), so the flush is made in one call, and
/// the result is checked to end as a complete flush does.
fn deflate(data: &[u8], last: bool) -> ApkResult<Vec<u8>> {
    deflate_at(data, last, Compression::best())
}

/// [`deflate`] at `level`.
pub(super) fn deflate_at(data: &[u8], last: bool, level: Compression) -> ApkResult<Vec<u8>> {
    let short = || {
        ApkError::Io(std::io::Error::other(
            "an index chunk did not compress whole",
        ))
    };
    let mut compressor = Compress::new(level, false);
    // Stored blocks cost 5 bytes per 64 KiB; the flush adds an empty one.
    let mut out = Vec::with_capacity(data.len() + data.len() / 1024 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let status = compressor
        .compress_vec(data, &mut out, flush)
        .map_err(|e| ApkError::Io(std::io::Error::other(e)))?;
    let ended = if last {
        status == Status::StreamEnd
    } else {
        // The empty stored block of a sync flush.
        out.ends_with(&[0, 0, 0xff, 0xff])
    };
    if compressor.total_in() != data.len() as u64 || out.len() == out.capacity() || !ended {
        return Err(short());
    }
    Ok(out)
}

/// Inflates a chunk's raw deflate bytes, which hold exactly `len` bytes of text.
fn inflate(bytes: &[u8], len: u64) -> ApkResult<Vec<u8>> {
    let corrupt = || ApkError::Io(std::io::Error::other("an index chunk does not inflate"));
    let len = usize::try_from(len).map_err(|_| corrupt())?;
    let mut out = Vec::with_capacity(len);
    let mut inflater = Decompress::new(false);
    while out.len() < len {
        let (read, written) = (inflater.total_in(), inflater.total_out());
        let input = &bytes[read as usize..];
        inflater
            .decompress_vec(input, &mut out, FlushDecompress::Sync)
            .map_err(|_| corrupt())?;
        if inflater.total_in() == read && inflater.total_out() == written {
            return Err(corrupt());
        }
    }
    Ok(out)
}

/// The index of one architecture of one repository.
#[derive(Debug)]
pub struct IncrementalIndex {
    description: String,
    chunks: Vec<Chunk>,
    entries: usize,
}

impl IncrementalIndex {
    /// An index of `entries` (in any order) with the tar's `DESCRIPTION` (omitted when
    /// empty). Nothing is compressed until [`render`](Self::render).
    pub fn new(description: &str, mut entries: Vec<(EntryKey, &str)>) -> IncrementalIndex {
        entries.sort_by(|a, b| a.0.order(&b.0));
        let count = entries.len();
        let mut chunks = Vec::with_capacity(count.div_ceil(CHUNK_ENTRIES));
        let mut rest = entries.into_iter();
        loop {
            let piece: Vec<_> = rest.by_ref().take(CHUNK_ENTRIES).collect();
            if piece.is_empty() {
                break;
            }
            chunks.push(Chunk::text(piece));
        }
        IncrementalIndex {
            description: description.to_string(),
            chunks,
            entries: count,
        }
    }

    /// How many stanzas the index lists.
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The chunk `key` belongs in: the first whose last key sorts at or after it, else
    /// the last one.
    fn chunk_for(&self, key: &EntryKey) -> usize {
        let after = self.chunks.partition_point(|c| {
            c.keys
                .last()
                .is_some_and(|last| last.order(key) == Ordering::Less)
        });
        after.min(self.chunks.len().saturating_sub(1))
    }

    /// Adds a stanza (which must end with its blank line, as rendered).
    pub fn insert(&mut self, key: EntryKey, stanza: &str) -> ApkResult<()> {
        if self.chunks.is_empty() {
            self.chunks.push(Chunk::text(Vec::new()));
        }
        let at = self.chunk_for(&key);
        self.chunks[at].insert(key, stanza)?;
        self.entries += 1;
        Ok(())
    }

    /// Removes the stanza of `key`; false when the index does not list it.
    pub fn remove(&mut self, key: &EntryKey) -> ApkResult<bool> {
        if self.chunks.is_empty() {
            return Ok(false);
        }
        let at = self.chunk_for(key);
        if !self.chunks[at].remove(key)? {
            return Ok(false);
        }
        self.entries -= 1;
        if self.chunks[at].keys.is_empty() {
            self.chunks.remove(at);
        }
        Ok(true)
    }

    /// Compresses what changed (cutting and merging chunks first) and returns the
    /// unsigned index: one gzip member holding the tar.
    pub fn render(&mut self) -> ApkResult<Vec<u8>> {
        self.rebalance()?;
        let mut compressed = 0;
        for chunk in &mut self.chunks {
            chunk.compress()?;
            if let Body::Deflated { bytes, .. } = &chunk.body {
                compressed += bytes.len();
            }
        }
        let text_len: u64 = self.chunks.iter().map(|c| c.text_len).sum();
        let mut head = Vec::with_capacity(3 * BLOCK);
        if !self.description.is_empty() {
            push_tar_file(&mut head, "DESCRIPTION", self.description.as_bytes())?;
        }
        head.extend_from_slice(&file_header("APKINDEX", text_len)?);
        let padding = (BLOCK as u64 - text_len % BLOCK as u64) % BLOCK as u64;
        let tail = vec![0u8; padding as usize + 2 * BLOCK];

        let mut out = Vec::with_capacity(GZIP_HEADER.len() + compressed + 256);
        out.extend_from_slice(&GZIP_HEADER);
        let mut crc = crc32fast::Hasher::new();
        out.extend_from_slice(&deflate(&head, false)?);
        crc.update(&head);
        for chunk in &self.chunks {
            let Body::Deflated { bytes, crc: part } = &chunk.body else {
                unreachable!("every chunk was compressed above");
            };
            out.extend_from_slice(bytes);
            crc.combine(&crc32fast::Hasher::new_with_initial_len(
                *part,
                chunk.text_len,
            ));
        }
        out.extend_from_slice(&deflate(&tail, true)?);
        crc.update(&tail);
        let total = head.len() as u64 + text_len + tail.len() as u64;
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        out.extend_from_slice(&(total as u32).to_le_bytes());
        Ok(out)
    }

    /// Cuts changed chunks that grew too large and merges changed ones that shrank too
    /// small into a neighbour.
    fn rebalance(&mut self) -> ApkResult<()> {
        let mut chunks: Vec<Chunk> = Vec::with_capacity(self.chunks.len());
        for chunk in std::mem::take(&mut self.chunks) {
            let changed = matches!(chunk.body, Body::Text(_));
            let previous_small = chunks
                .last()
                .is_some_and(|p: &Chunk| matches!(p.body, Body::Text(_)) && is_small(p));
            match chunks.last_mut() {
                Some(previous) if (changed && is_small(&chunk)) || previous_small => {
                    previous.append(chunk)?;
                }
                _ => chunks.push(chunk),
            }
        }
        for chunk in chunks {
            if matches!(chunk.body, Body::Text(_)) {
                self.chunks.extend(chunk.split()?);
            } else {
                self.chunks.push(chunk);
            }
        }
        Ok(())
    }
}

fn is_small(chunk: &Chunk) -> bool {
    chunk.keys.len() < CHUNK_ENTRIES / 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apk::index::write_unsigned_index;
    use std::io::Read as _;

    fn key(name: &str, version: &str, id: i64) -> EntryKey {
        EntryKey {
            name: name.into(),
            version: version.into(),
            checksum: format!("Q1{id:027}="),
            id,
        }
    }

    fn stanza(k: &EntryKey) -> String {
        format!(
            "C:{}\nP:{}\nV:{}\nA:x86_64\nS:{}\nI:{}\nT:package {}\nU:\nL:\n\n",
            k.checksum,
            k.name,
            k.version,
            1000 + k.id,
            4000 + k.id,
            k.id
        )
    }

    /// Every byte of the member, checked by a plain gzip reader (which checks the CRC and
    /// the length) and compared with the one-piece writer's decompressed output.
    fn assert_same_content(incremental: &[u8], keys: &[EntryKey]) {
        let mut sorted = keys.to_vec();
        sorted.sort_by(|a, b| a.order(b));
        let stanzas: Vec<String> = sorted.iter().map(stanza).collect();
        let refs: Vec<&str> = stanzas.iter().map(String::as_str).collect();
        let whole = write_unsigned_index("owner/v3.21/main", &refs).unwrap();
        let gunzip = |bytes: &[u8]| {
            let mut decoder = flate2::read::GzDecoder::new(bytes);
            let mut out = Vec::new();
            decoder.read_to_end(&mut out).unwrap();
            let consumed = bytes.len() - decoder.into_inner().len();
            (out, consumed)
        };
        let (expected, _) = gunzip(&whole);
        let (actual, consumed) = gunzip(incremental);
        assert_eq!(
            consumed,
            incremental.len(),
            "one gzip member, nothing after it"
        );
        assert!(actual == expected, "decompressed content differs");
    }

    /// 90 real index entries of about 9 KiB each (long descriptions, 150 provides), as
    /// one chunk holds them: the sync flush that ends their compressed text did not fit
    /// the compressor's first output buffer, and resuming it lost the last 200 bytes, so
    /// the next change to the chunk failed ("does not inflate") and so did the publish.
    #[test]
    fn a_chunk_whose_flush_outgrows_a_buffer_compresses_whole() {
        let fixture = include_bytes!("../../tests/fixtures/index-chunk-90-stanzas.txt.gz");
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(&fixture[..])
            .read_to_end(&mut text)
            .unwrap();
        assert_eq!(text.len(), 778_057);
        let bytes = deflate(&text, false).unwrap();
        assert_eq!(inflate(&bytes, text.len() as u64).unwrap(), text);
        // A plain reader agrees, once a final block ends the stream.
        let mut whole = bytes;
        whole.extend_from_slice(&deflate(b"", true).unwrap());
        let mut read = Vec::new();
        flate2::read::DeflateDecoder::new(&whole[..])
            .read_to_end(&mut read)
            .unwrap();
        assert!(read == text, "the stream holds the whole chunk");
    }

    fn build(keys: &[EntryKey]) -> IncrementalIndex {
        let stanzas: Vec<String> = keys.iter().map(stanza).collect();
        IncrementalIndex::new(
            "owner/v3.21/main",
            keys.iter()
                .cloned()
                .zip(stanzas.iter().map(String::as_str))
                .collect(),
        )
    }

    #[test]
    fn empty_and_small_indexes_match_the_one_piece_writer() {
        for n in [
            0,
            1,
            3,
            CHUNK_ENTRIES,
            CHUNK_ENTRIES + 1,
            5 * CHUNK_ENTRIES + 7,
        ] {
            let keys: Vec<EntryKey> = (0..n as i64)
                .map(|i| key(&format!("pkg-{:05}", (i * 7919) % 10007), "1.0-r0", i))
                .collect();
            let mut index = build(&keys);
            assert_eq!(index.len(), n);
            assert_same_content(&index.render().unwrap(), &keys);
        }
    }

    #[test]
    fn inserts_and_removes_keep_the_content_of_a_full_render() {
        let mut keys: Vec<EntryKey> = (0..1000)
            .map(|i| key(&format!("pkg-{:05}", (i * 7919) % 10007), "1.0-r0", i))
            .collect();
        let mut index = build(&keys);
        index.render().unwrap();
        let mut next_id = 1000;
        // Deterministic mix: runs of inserts in one place (a chunk grows and is cut),
        // removals of runs (chunks shrink and merge), and scattered changes.
        for round in 0..60i64 {
            for j in 0..(round % 7) * 20 {
                let k = key("pkg-05000", &format!("{}.{j}-r0", round), next_id);
                next_id += 1;
                index.insert(k.clone(), &stanza(&k)).unwrap();
                keys.push(k);
            }
            let removals = (round % 5) * 13;
            for _ in 0..removals.min(keys.len() as i64) {
                let victim = (round * 7793 + keys.len() as i64) as usize % keys.len();
                let k = keys.swap_remove(victim);
                assert!(index.remove(&k).unwrap(), "{k:?} was listed");
                assert!(!index.remove(&k).unwrap(), "{k:?} is gone");
            }
            let k = key(&format!("new-{round:03}"), "2.0-r1", next_id);
            next_id += 1;
            index.insert(k.clone(), &stanza(&k)).unwrap();
            keys.push(k);
            assert_eq!(index.len(), keys.len());
            if round % 3 == 0 {
                assert_same_content(&index.render().unwrap(), &keys);
            }
        }
        assert_same_content(&index.render().unwrap(), &keys);
        for chunk in &index.chunks {
            assert!(chunk.keys.len() <= 2 * CHUNK_ENTRIES);
            assert!(chunk
                .keys
                .windows(2)
                .all(|w| w[0].order(&w[1]) == Ordering::Less));
        }
    }

    #[test]
    fn a_change_recompresses_only_its_chunk() {
        let keys: Vec<EntryKey> = (0..(10 * CHUNK_ENTRIES) as i64)
            .map(|i| key(&format!("pkg-{i:05}"), "1.0-r0", i))
            .collect();
        let mut index = build(&keys);
        index.render().unwrap();
        let bodies = |index: &IncrementalIndex| -> Vec<Vec<u8>> {
            index
                .chunks
                .iter()
                .map(|c| match &c.body {
                    Body::Deflated { bytes, .. } => bytes.clone(),
                    Body::Text(_) => panic!("rendered chunks are compressed"),
                })
                .collect()
        };
        let before = bodies(&index);
        let k = key("pkg-00300", "1.1-r0", 99_999);
        index.insert(k.clone(), &stanza(&k)).unwrap();
        let changed = index
            .chunks
            .iter()
            .filter(|c| matches!(c.body, Body::Text(_)))
            .count();
        assert_eq!(changed, 1);
        let after_bytes = index.render().unwrap();
        let after = bodies(&index);
        assert_eq!(before.len(), after.len());
        let differing: Vec<usize> = (0..before.len())
            .filter(|&i| before[i] != after[i])
            .collect();
        assert_eq!(differing, vec![300 / CHUNK_ENTRIES]);
        let after = after_bytes;
        let mut all = keys.clone();
        all.push(k);
        assert_same_content(&after, &all);
    }

    #[test]
    fn versions_sort_in_apk_order_within_a_name() {
        let keys = vec![
            key("a", "1.10-r0", 1),
            key("a", "1.9-r0", 2),
            key("a", "1.9_rc1-r0", 3),
        ];
        let mut index = IncrementalIndex::new("", Vec::new());
        for k in &keys {
            index.insert(k.clone(), &stanza(k)).unwrap();
        }
        let order: Vec<i64> = index.chunks[0].keys.iter().map(|k| k.id).collect();
        assert_eq!(order, vec![3, 2, 1]);
    }
}
