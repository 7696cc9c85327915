//! A `Packages.adb` kept in a form that a publish or a delete updates in proportion to
//! the change, not to the index.
//!
//! An ADB index is a packages array of offsets to package objects that may lie anywhere
//! in the block, so the block is only ever appended to: a new package's object and values
//! go at the end (values the block already holds are reused), a removed package's bytes
//! stay where they are as garbage, and the sorted packages array is written anew after
//! everything else on each render. The root object stays where it is (only its packages
//! slot is rewritten in place), so the header never changes and everything before the
//! root is hashed once: each render hashes the root, what was appended since, and the
//! array. Once more than [`ANCHOR_BYTES`] were appended after the root, a new root is
//! written at the end (the old one becomes garbage) and the block is hashed again from
//! its start; once garbage passes [`GARBAGE_SHARE`] of the block, the owner builds the
//! index in full again ([`IncrementalAdb::wants_compaction`]).
//!
//! The file is deflated in segments, each from a fresh compressor ending at a sync flush
//! (byte-aligned, no back-references into an earlier segment), which concatenate into one
//! raw deflate stream as pigz writes them: the file header, then the block in segments
//! of [`SEGMENT_BYTES`] (the root alone in its own), then the array and the signatures
//! with the final block. Only the segments whose bytes changed are compressed again.
//!
//! A full build ([`IncrementalAdb::new`]) writes the block byte for byte as `apk mkndx`
//! does (see [`write_index_block`](super::write_index_block)); after a change the block
//! lists the same packages with the same values, laid out differently.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use flate2::Compression;
use sha2::{Digest, Sha512};

use super::{
    key_id, push_block, signed_message, u32_at, write_index, write_package, IndexPackage,
    SigningKey, Writer, BLOCK_ADB, BLOCK_ALIGNMENT, BLOCK_SIG, DIGEST_SHA512, FORMAT_MAGIC,
    NDX_PACKAGES, NULL, SCHEMA_INDEX, TYPE_MASK, TYPE_OBJECT, VALUE_MASK,
};
use crate::apk::incremental::deflate_at;
use crate::apk::sign::SignatureAlgorithm;
use crate::apk::{ApkError, ApkResult};

/// Uncompressed bytes of the block per compressed segment.
pub const SEGMENT_BYTES: usize = 64 << 10;
/// Bytes appended after the root before a new root is written at the end.
pub const ANCHOR_BYTES: usize = 256 << 10;
/// The share of the block that may be garbage (bytes no package uses any more) before
/// the index should be built in full: one in [`GARBAGE_SHARE`].
pub const GARBAGE_SHARE: usize = 4;

/// The block starts with its header (versions, then the root's offset); its bytes in the
/// file come after `ADB.`, the schema and the block's own header word.
const BLOCK_HEADER: usize = 8;
const FILE_HEADER: usize = 12;
/// The root object: its slot count, the description, the packages array.
const ROOT_BYTES: usize = 4 * (NDX_PACKAGES + 1);
/// SHA-512 processes 128-byte blocks: the hash kept covers whole ones.
const HASH_BLOCK: usize = 128;

/// Where a package sorts: apk's order, then its row id (two rows never compare equal).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    name: String,
    version: String,
    hashes: Vec<u8>,
    id: i64,
}

impl Key {
    fn of(id: i64, p: &IndexPackage) -> Key {
        Key {
            name: p.name.clone(),
            version: p.version.clone(),
            hashes: p.hashes.clone(),
            id,
        }
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        self.name
            .as_bytes()
            .cmp(other.name.as_bytes())
            .then_with(|| crate::apk::version::compare(&self.version, &other.version))
            .then_with(|| self.hashes.cmp(&other.hashes))
            .then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A run of the block, `start..end`, and its compressed bytes once compressed.
#[derive(Debug)]
struct Segment {
    start: usize,
    end: usize,
    /// More bytes may be appended to it (the last segment, unless it is a root).
    open: bool,
    deflated: Option<Vec<u8>>,
}

/// One repository architecture's `Packages.adb`, updated in place.
pub struct IncrementalAdb {
    /// The block up to what was last appended (the packages array comes after).
    writer: Writer,
    description: u32,
    /// Where the root object is.
    root: usize,
    /// The live packages in index order, each with its object.
    packages: BTreeMap<Key, u32>,
    /// Each row's place in `packages` and the bytes writing it added.
    rows: HashMap<i64, (Key, usize)>,
    /// Bytes no live package uses (an over-estimate: a removed package's values that
    /// another still uses are counted).
    garbage: usize,
    segments: Vec<Segment>,
    /// The SHA-512 state after the block's first `hashed` bytes (all before the root).
    hashed: usize,
    hash: Option<Sha512>,
    /// The packages array of a full build, which the block still ends with, until the
    /// first change.
    built_array: Option<u32>,
    level: Compression,
}

impl IncrementalAdb {
    /// A full build of the index of `packages` (row id and package), written in index
    /// order as `apk mkndx` writes them; deflated at `level` when rendered.
    pub fn new(
        description: &str,
        packages: Vec<(i64, &IndexPackage)>,
        level: u32,
    ) -> ApkResult<IncrementalAdb> {
        let mut keyed: Vec<(Key, &IndexPackage)> = packages
            .into_iter()
            .map(|(id, p)| (Key::of(id, p), p))
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let written = write_index(description, keyed.iter().map(|k| k.1))?;
        let mut writer = written.writer;
        let root = (written.root & VALUE_MASK) as usize;
        writer.buf[4..8].copy_from_slice(&written.root.to_le_bytes());
        // The root is rewritten in place from now on: no value may be found there.
        writer.seen.retain(|_, at| *at as usize != root);
        writer.collided.retain(|_, at| *at as usize != root);
        let mut rows = HashMap::with_capacity(keyed.len());
        let mut sorted = BTreeMap::new();
        for ((key, _), &(object, bytes)) in keyed.into_iter().zip(&written.packages) {
            rows.insert(key.id, (key.clone(), bytes));
            sorted.insert(key, object);
        }
        let mut adb = IncrementalAdb {
            writer,
            description: written.description,
            root,
            packages: sorted,
            rows,
            garbage: 0,
            segments: Vec::new(),
            hashed: 0,
            hash: None,
            built_array: None,
            level: Compression::new(level.min(9)),
        };
        if adb.writer.buf.len() - root == ROOT_BYTES {
            adb.extend_segments(BLOCK_HEADER, root);
            adb.push_root_segment();
            adb.built_array =
                Some(u32_at(&adb.writer.buf, root + 4 * NDX_PACKAGES).unwrap_or(NULL));
        } else {
            // An empty index's root ends at its description: one with room for the
            // packages array goes after it.
            adb.extend_segments(BLOCK_HEADER, adb.writer.buf.len());
            adb.move_root();
        }
        Ok(adb)
    }

    /// How many packages the index lists.
    pub fn len(&self) -> usize {
        self.packages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    /// Adds the package of row `id`. False (and nothing changed) when the row is listed.
    pub fn insert(&mut self, id: i64, package: &IndexPackage) -> ApkResult<bool> {
        if self.rows.contains_key(&id) {
            return Ok(false);
        }
        let before = self.writer.buf.len();
        let object = write_package(&mut self.writer, package)?;
        let after = self.writer.buf.len();
        let key = Key::of(id, package);
        self.packages.insert(key.clone(), object);
        self.rows.insert(id, (key, after - before));
        self.built_array = None;
        self.extend_segments(before, after);
        Ok(true)
    }

    /// Removes the package of row `id`; false when the row is not listed.
    pub fn remove(&mut self, id: i64) -> bool {
        let Some((key, bytes)) = self.rows.remove(&id) else {
            return false;
        };
        self.packages.remove(&key);
        self.garbage += bytes;
        self.built_array = None;
        true
    }

    /// Whether enough of the block is garbage that the index should be built in full.
    pub fn wants_compaction(&self) -> bool {
        self.garbage.saturating_mul(GARBAGE_SHARE) > self.writer.buf.len()
    }

    /// The signed, deflated `Packages.adb` as it stands, signed by each of `keys` in order.
    pub fn render(&mut self, keys: &[&SigningKey]) -> ApkResult<Vec<u8>> {
        if self.writer.buf.len() - (self.root + ROOT_BYTES) > ANCHOR_BYTES {
            self.move_root();
        }
        // The packages array after everything else, the root pointing at it.
        let mut tail = vec![0; self.writer.buf.len().next_multiple_of(4) - self.writer.buf.len()];
        let array = self.writer.buf.len() + tail.len();
        let array_ref = if let Some(built) = self.built_array {
            built
        } else if self.packages.is_empty() {
            NULL
        } else {
            tail.reserve(4 * (self.packages.len() + 1));
            tail.extend_from_slice(&(self.packages.len() as u32 + 1).to_le_bytes());
            for object in self.packages.values() {
                tail.extend_from_slice(&object.to_le_bytes());
            }
            TYPE_OBJECT | offset(array)?
        };
        let at = self.root + 4 * NDX_PACKAGES;
        self.writer.buf[at..at + 4].copy_from_slice(&array_ref.to_le_bytes());
        self.segments
            .iter_mut()
            .find(|s| s.start == self.root)
            .expect("the root has its segment")
            .deflated = None;
        let block_len = self.writer.buf.len() + tail.len();
        offset(block_len)?;

        // Everything before the root was hashed once.
        if self.hash.is_none() {
            self.hashed = self.root / HASH_BLOCK * HASH_BLOCK;
            self.hash = Some(Sha512::new_with_prefix(&self.writer.buf[..self.hashed]));
        }
        let mut hash = self.hash.clone().expect("hashed above");
        hash.update(&self.writer.buf[self.hashed..]);
        hash.update(&tail);
        let digest = hash.finalize();

        let mut head = Vec::with_capacity(FILE_HEADER + BLOCK_HEADER);
        head.extend_from_slice(&FORMAT_MAGIC.to_le_bytes());
        head.extend_from_slice(&SCHEMA_INDEX.to_le_bytes());
        let raw = block_len + 4;
        if raw > 0x3fff_ffff {
            return Err(ApkError::TooLarge {
                what: "ADB block",
                limit: 0x3fff_fffb,
            });
        }
        head.extend_from_slice(&((BLOCK_ADB << 30) | raw as u32).to_le_bytes());
        head.extend_from_slice(&self.writer.buf[..BLOCK_HEADER]);
        // The block's padding, then the signatures.
        let file_len = FILE_HEADER + block_len;
        tail.resize(
            tail.len() + file_len.next_multiple_of(BLOCK_ALIGNMENT) - file_len,
            0,
        );
        // Blocks are aligned from the file's start, which `signatures` starts on.
        let mut signatures = Vec::new();
        for key in keys {
            let mut header = vec![0, DIGEST_SHA512];
            header.extend_from_slice(&key_id(&key.public_key_pem()?)?);
            let message = signed_message(SCHEMA_INDEX, &header, &digest);
            header.extend_from_slice(&key.sign(SignatureAlgorithm::Rsa512, &message)?);
            push_block(&mut signatures, BLOCK_SIG, &header)?;
        }
        tail.extend_from_slice(&signatures);

        let head = deflate_at(&head, false, self.level)?;
        let tail = deflate_at(&tail, true, self.level)?;
        for segment in self.segments.iter_mut().filter(|s| s.deflated.is_none()) {
            segment.deflated = Some(deflate_at(
                &self.writer.buf[segment.start..segment.end],
                false,
                self.level,
            )?);
        }
        let body: usize = self
            .segments
            .iter()
            .map(|s| s.deflated.as_ref().map_or(0, Vec::len))
            .sum();
        let mut out = Vec::with_capacity(4 + head.len() + body + tail.len());
        out.extend_from_slice(b"ADBd");
        out.extend_from_slice(&head);
        for segment in &self.segments {
            out.extend_from_slice(segment.deflated.as_ref().expect("compressed above"));
        }
        out.extend_from_slice(&tail);
        Ok(out)
    }

    /// Writes a new root at the end and points the header at it; the old one is garbage,
    /// and the block is hashed again from its start on the next render.
    fn move_root(&mut self) {
        let buf = &mut self.writer.buf;
        let old = std::mem::replace(&mut self.root, buf.len().next_multiple_of(4));
        if old != 0 {
            self.garbage += ROOT_BYTES;
        }
        let start = buf.len();
        buf.resize(self.root, 0);
        buf.extend_from_slice(&(NDX_PACKAGES as u32 + 1).to_le_bytes());
        buf.extend_from_slice(&self.description.to_le_bytes());
        buf.extend_from_slice(&NULL.to_le_bytes());
        let root = TYPE_OBJECT | self.root as u32;
        buf[4..8].copy_from_slice(&root.to_le_bytes());
        self.extend_segments(start, self.root);
        self.push_root_segment();
        self.hash = None;
    }

    fn push_root_segment(&mut self) {
        if let Some(last) = self.segments.last_mut() {
            last.open = false;
        }
        self.segments.push(Segment {
            start: self.root,
            end: self.root + ROOT_BYTES,
            open: false,
            deflated: None,
        });
    }

    /// Takes the block's bytes `start..end`, just appended, into segments.
    fn extend_segments(&mut self, mut start: usize, end: usize) {
        while start < end {
            match self.segments.last_mut() {
                Some(last) if last.open && last.end - last.start < SEGMENT_BYTES => {
                    debug_assert_eq!(last.end, start);
                    last.end = end.min(last.start + SEGMENT_BYTES);
                    last.deflated = None;
                    start = last.end;
                }
                _ => {
                    let stop = end.min(start + SEGMENT_BYTES);
                    self.segments.push(Segment {
                        start,
                        end: stop,
                        open: true,
                        deflated: None,
                    });
                    start = stop;
                }
            }
        }
    }
}

/// `at` as an offset of the block, which must fit in a value's 28 bits.
fn offset(at: usize) -> ApkResult<u32> {
    u32::try_from(at)
        .ok()
        .filter(|&at| at & TYPE_MASK == 0)
        .ok_or(ApkError::TooLarge {
            what: "ADB block",
            limit: u64::from(VALUE_MASK),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apk::adb::{package_order, read_file, signed_index};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn committed_key() -> SigningKey {
        let pem = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/test-signing-key.pem"
        ))
        .expect("fixture present");
        SigningKey::from_pkcs8_pem("test", &pem).expect("valid key")
    }

    /// A package with values drawn from small pools, so that many are shared.
    fn random_package(rng: &mut StdRng, serial: u64) -> IndexPackage {
        let pick = |rng: &mut StdRng, pool: &[&str]| pool[rng.gen_range(0..pool.len())].to_string();
        let name = format!("pkg{}", rng.gen_range(0..40));
        let deps = |rng: &mut StdRng| -> Vec<String> {
            (0..rng.gen_range(0..4))
                .map(|_| {
                    pick(
                        rng,
                        &[
                            "so:libc.musl-x86_64.so.1",
                            "busybox",
                            "a>=1.2",
                            "!b",
                            "c<~3",
                            "openrc",
                        ],
                    )
                })
                .collect()
        };
        IndexPackage {
            version: format!(
                "{}.{}-r{}",
                rng.gen_range(0..3),
                serial,
                rng.gen_range(0..2)
            ),
            hashes: (0..20).map(|_| rng.gen()).collect(),
            description: Some(format!("{} {}", pick(rng, &["tool", "library"]), name)),
            arch: Some(pick(rng, &["x86_64", "noarch"])),
            license: Some(pick(rng, &["MIT", "GPL-2.0-only", "Apache-2.0"])),
            origin: Some(name.clone()),
            maintainer: rng.gen_bool(0.5).then(|| "M <m@example.org>".to_string()),
            url: Some("https://example.org".into()),
            repo_commit: rng.gen_bool(0.3).then(|| vec![0xab; 20]),
            build_time: Some(1_700_000_000 + serial),
            installed_size: Some(rng.gen_range(0..1u64 << 33)),
            file_size: Some(rng.gen_range(1000..100_000)),
            provider_priority: rng.gen_bool(0.1).then_some(10),
            depends: deps(rng),
            provides: deps(rng),
            replaces: Vec::new(),
            install_if: if rng.gen_bool(0.1) {
                deps(rng)
            } else {
                Vec::new()
            },
            name,
        }
    }

    /// What a full build of `rows` lists, read back: the expected content.
    fn full(rows: &BTreeMap<i64, IndexPackage>) -> Vec<IndexPackage> {
        let mut listed: Vec<&IndexPackage> = rows.values().collect();
        listed.sort_by(|a, b| package_order(a, b));
        let file = signed_index("desc", listed, &[], 1).unwrap();
        read_file(&file, 1 << 30).unwrap().index().unwrap().packages
    }

    fn read(file: &[u8], key: &SigningKey) -> Vec<IndexPackage> {
        let file = read_file(file, 1 << 30).unwrap();
        file.verify(&key.public_key_pem().unwrap())
            .expect("signed by the key");
        let index = file.index().unwrap();
        assert_eq!(index.description.as_deref(), Some("desc"));
        index.packages
    }

    #[test]
    fn a_full_build_is_what_mkndx_writes() {
        let key = committed_key();
        let mut rng = StdRng::seed_from_u64(7);
        let rows: BTreeMap<i64, IndexPackage> = (0..50)
            .map(|i| (i, random_package(&mut rng, i as u64)))
            .collect();
        let mut adb =
            IncrementalAdb::new("desc", rows.iter().map(|(i, p)| (*i, p)).collect(), 1).unwrap();
        let mut listed: Vec<&IndexPackage> = rows.values().collect();
        listed.sort_by(|a, b| package_order(a, b));
        let ours = read_file(&adb.render(&[&key]).unwrap(), 1 << 30).unwrap();
        let theirs =
            read_file(&signed_index("desc", listed, &[&key], 1).unwrap(), 1 << 30).unwrap();
        assert_eq!(ours.adb, theirs.adb);
        assert_eq!(ours.signatures, theirs.signatures);
    }

    /// Random publishes and deletes, each rendered incrementally and compared with a full
    /// build of the same rows; garbage makes the owner build in full as the indexer does.
    #[test]
    fn random_changes_list_what_a_full_build_lists() {
        let seed = std::env::var("ADB_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random::<u64>);
        println!("seed {seed} (ADB_SEED={seed} to run it again)");
        let mut rng = StdRng::seed_from_u64(seed);
        let key = committed_key();
        let mut rows = BTreeMap::new();
        let mut next = 0;
        for _ in 0..60 {
            rows.insert(next, random_package(&mut rng, next as u64));
            next += 1;
        }
        let mut adb =
            IncrementalAdb::new("desc", rows.iter().map(|(i, p)| (*i, p)).collect(), 1).unwrap();
        let (mut compactions, mut moves) = (0, 0);
        for step in 0..400 {
            // Grows at first, then shrinks to nothing, then grows again.
            let grow = match step {
                0..150 => 0.7,
                150..300 => 0.2,
                _ => 0.8,
            };
            for _ in 0..rng.gen_range(1..4) {
                if rows.is_empty() || rng.gen_bool(grow) {
                    let p = random_package(&mut rng, next as u64);
                    assert!(adb.insert(next, &p).unwrap());
                    assert!(!adb.insert(next, &p).unwrap(), "a row is listed once");
                    rows.insert(next, p);
                    next += 1;
                } else {
                    let id = *rows.keys().nth(rng.gen_range(0..rows.len())).unwrap();
                    rows.remove(&id);
                    assert!(adb.remove(id));
                    assert!(!adb.remove(id));
                }
            }
            if adb.wants_compaction() {
                compactions += 1;
                adb = IncrementalAdb::new("desc", rows.iter().map(|(i, p)| (*i, p)).collect(), 1)
                    .unwrap();
            }
            let root = adb.root;
            let file = adb.render(&[&key]).unwrap();
            moves += usize::from(adb.root != root);
            let listed = read(&file, &key);
            assert_eq!(adb.len(), rows.len());
            assert!(listed == full(&rows), "seed {seed}, step {step}");
        }
        assert!(
            compactions > 0,
            "seed {seed}: garbage never called for a full build"
        );
        println!("{compactions} full builds, {moves} roots moved");
    }

    #[test]
    fn appended_bytes_move_the_root_and_stay_readable() {
        let key = committed_key();
        let mut rng = StdRng::seed_from_u64(11);
        let mut adb = IncrementalAdb::new("desc", Vec::new(), 1).unwrap();
        let mut rows = BTreeMap::new();
        let first_root = adb.root;
        let mut id = 0;
        while adb.writer.buf.len() < 2 * ANCHOR_BYTES {
            let mut p = random_package(&mut rng, id as u64);
            p.description = Some("d".repeat(2000 + id as usize));
            adb.insert(id, &p).unwrap();
            rows.insert(id, p);
            id += 1;
            if id % 50 == 0 {
                assert!(read(&adb.render(&[&key]).unwrap(), &key) == full(&rows));
            }
        }
        assert!(read(&adb.render(&[&key]).unwrap(), &key) == full(&rows));
        assert_ne!(adb.root, first_root, "the root moved");
        assert!(adb.segments.len() > 4, "{} segments", adb.segments.len());
    }

    #[test]
    fn a_change_recompresses_only_what_it_touched() {
        let key = committed_key();
        let mut rng = StdRng::seed_from_u64(3);
        let rows: BTreeMap<i64, IndexPackage> = (0..2000)
            .map(|i| (i, random_package(&mut rng, i as u64)))
            .collect();
        let mut adb =
            IncrementalAdb::new("desc", rows.iter().map(|(i, p)| (*i, p)).collect(), 1).unwrap();
        adb.render(&[&key]).unwrap();
        let before: Vec<Vec<u8>> = adb
            .segments
            .iter()
            .map(|s| s.deflated.clone().unwrap())
            .collect();
        assert!(before.len() > 3);
        adb.remove(5);
        adb.insert(5000, &random_package(&mut rng, 5000)).unwrap();
        assert!(adb.segments.iter().filter(|s| s.deflated.is_none()).count() <= 2);
        adb.render(&[&key]).unwrap();
        let unchanged = adb
            .segments
            .iter()
            .zip(&before)
            .filter(|(s, b)| s.deflated.as_ref() == Some(*b))
            .count();
        assert!(
            unchanged + 2 >= before.len(),
            "{unchanged} of {}",
            before.len()
        );
    }
}
