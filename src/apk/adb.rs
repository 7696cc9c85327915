//! The apk v3 repository index, `Packages.adb`: the ADB container (`apk mkndx`), its
//! writer, its reader and its signatures.
//!
//! An ADB file is `ADB.` and a schema id (`indx`), then an ADB block holding a tree of
//! little-endian 32-bit values (a type in the high four bits, an immediate value or an
//! offset into the block in the low 28), then SIG blocks. Values are written as apk-tools'
//! `adb_w_*` write them: identical bytes are stored once (the same offset is reused when
//! its alignment fits), objects end at their last non-null field, and each value is
//! written when `apk mkndx` writes it, so that the block is byte for byte what `apk
//! mkndx` makes of the same packages (for `.PKGINFO` files in abuild's line order). The
//! whole file is then deflated after `ADBd`, as `apk mkndx` does by default.
//!
//! A signature (version 0) signs, with RSA PKCS#1 v1.5 over SHA-512, the schema id, the
//! signature header (version, hash algorithm, the first 16 bytes of the SHA-512 of the
//! key's PKCS#1 public key) and the SHA-512 of the ADB block. apk finds the key by that
//! id, not by a file name.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::io::{Read, Write};

use rsa::pkcs1::{DecodeRsaPublicKey, EncodeRsaPublicKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha2::{Digest, Sha512};

use super::sign::{SignatureAlgorithm, SigningKey};
use super::{version, ApkError, ApkResult};

pub mod incremental;

/// The file magic, `ADB.` read as a little-endian word.
const FORMAT_MAGIC: u32 = 0x2e42_4441;
/// The schema id of a repository index, `indx`.
pub const SCHEMA_INDEX: u32 = 0x7864_6e69;

const TYPE_SPECIAL: u32 = 0x0000_0000;
const TYPE_INT: u32 = 0x1000_0000;
const TYPE_INT_32: u32 = 0x2000_0000;
const TYPE_INT_64: u32 = 0x3000_0000;
const TYPE_BLOB_8: u32 = 0x8000_0000;
const TYPE_BLOB_16: u32 = 0x9000_0000;
const TYPE_BLOB_32: u32 = 0xa000_0000;
const TYPE_ARRAY: u32 = 0xd000_0000;
const TYPE_OBJECT: u32 = 0xe000_0000;
const TYPE_MASK: u32 = 0xf000_0000;
const VALUE_MASK: u32 = 0x0fff_ffff;
const NULL: u32 = TYPE_SPECIAL;

const BLOCK_ADB: u32 = 0;
const BLOCK_SIG: u32 = 1;
const BLOCK_DATA: u32 = 2;
const BLOCK_EXT: u32 = 3;
const BLOCK_ALIGNMENT: usize = 8;

/// `hash_alg` of a signature: SHA-512, the only one apk writes.
const DIGEST_SHA512: u8 = 4;
/// The signature header: version, hash algorithm, key id.
const SIGNATURE_HEADER_LEN: usize = 2 + KEY_ID_LEN;
const KEY_ID_LEN: usize = 16;

// Index fields.
const NDX_DESCRIPTION: usize = 1;
const NDX_PACKAGES: usize = 2;
const NDX_PKGNAME_SPEC: usize = 3;

// Package info fields.
const PI_NAME: usize = 1;
const PI_VERSION: usize = 2;
const PI_HASHES: usize = 3;
const PI_DESCRIPTION: usize = 4;
const PI_ARCH: usize = 5;
const PI_LICENSE: usize = 6;
const PI_ORIGIN: usize = 7;
const PI_MAINTAINER: usize = 8;
const PI_URL: usize = 9;
const PI_REPO_COMMIT: usize = 10;
const PI_BUILD_TIME: usize = 11;
const PI_INSTALLED_SIZE: usize = 12;
const PI_FILE_SIZE: usize = 13;
const PI_PROVIDER_PRIORITY: usize = 14;
const PI_DEPENDS: usize = 15;
const PI_PROVIDES: usize = 16;
const PI_REPLACES: usize = 17;
const PI_INSTALL_IF: usize = 18;
const PI_MAX: usize = 22;

// Dependency fields.
const DEP_NAME: usize = 1;
const DEP_VERSION: usize = 2;
const DEP_MATCH: usize = 3;
const DEP_MAX: usize = 4;

// Version operators, as apk-tools numbers them.
const OP_EQUAL: u32 = 1;
const OP_LESS: u32 = 2;
const OP_GREATER: u32 = 4;
const OP_FUZZY: u32 = 8;
const OP_CONFLICT: u32 = 16;
const OP_ANY: u32 = OP_EQUAL | OP_LESS | OP_GREATER;
const OP_CHECKSUM: u32 = OP_LESS | OP_GREATER;

/// One package of an index, its fields as the index holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexPackage {
    pub name: String,
    pub version: String,
    /// The package's identity: for a v2 package, the SHA-1 of its control member (the
    /// digest `C:` carries in base64).
    pub hashes: Vec<u8>,
    pub description: Option<String>,
    pub arch: Option<String>,
    pub license: Option<String>,
    pub origin: Option<String>,
    pub maintainer: Option<String>,
    pub url: Option<String>,
    /// The aports commit, 20 bytes.
    pub repo_commit: Option<Vec<u8>>,
    pub build_time: Option<u64>,
    pub installed_size: Option<u64>,
    pub file_size: Option<u64>,
    pub provider_priority: Option<u64>,
    /// Dependencies as apk writes them (`name`, `name>=1.2`, `!name`), in index order.
    pub depends: Vec<String>,
    pub provides: Vec<String>,
    pub replaces: Vec<String>,
    pub install_if: Vec<String>,
}

impl IndexPackage {
    /// The package of an `APKINDEX` stanza (its `C:` must be a `Q1` SHA-1 identity).
    pub fn from_stanza(stanza: &str) -> ApkResult<IndexPackage> {
        use base64::Engine as _;
        let f = super::index::parse_stanza(stanza);
        let hashes = f
            .checksum
            .strip_prefix("Q1")
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .filter(|h| h.len() == 20)
            .ok_or_else(|| {
                ApkError::Malformed(format!("{}: the index entry has no Q1 identity", f.name))
            })?;
        let text = |s: String| Some(s).filter(|s| !s.is_empty());
        // apk keeps a commit only when it is 40 hex digits.
        let repo_commit = f
            .commit
            .as_deref()
            .filter(|c| c.len() >= 40)
            .and_then(|c| hex::decode(&c[..40]).ok());
        Ok(IndexPackage {
            name: f.name,
            version: f.version,
            hashes,
            description: text(f.description),
            arch: text(f.arch),
            license: text(f.license),
            origin: f.origin.and_then(text),
            maintainer: f.maintainer.and_then(text),
            url: text(f.url),
            repo_commit,
            build_time: f.build_time.and_then(|t| u64::try_from(t).ok()),
            installed_size: f.installed_size,
            file_size: f.size,
            provider_priority: f.provider_priority,
            depends: f.depends,
            provides: f.provides,
            replaces: Vec::new(),
            install_if: f.install_if,
        })
    }
}

/// A repository index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    pub description: Option<String>,
    pub pkgname_spec: Option<String>,
    /// In index order: by name, then version, then identity.
    pub packages: Vec<IndexPackage>,
}

/// One signature of an ADB file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub version: u8,
    pub hash_alg: u8,
    pub key_id: [u8; KEY_ID_LEN],
    pub signature: Vec<u8>,
}

/// An ADB file taken apart: its schema, its ADB block and its signatures.
#[derive(Debug, Clone)]
pub struct AdbFile {
    pub schema: u32,
    pub adb: Vec<u8>,
    pub signatures: Vec<Signature>,
}

// ---------------------------------------------------------------------------------------
// Writing

/// The ADB block under construction, storing each distinct run of bytes once.
///
/// Runs are found by a 64-bit hash and their length, and compared with what the block
/// holds; the rare run whose hash and length another run already took is kept in
/// `collided` by its bytes. No run is copied out of the block.
struct Writer {
    buf: Vec<u8>,
    seen: HashMap<(u64, usize), u32>,
    collided: HashMap<Vec<u8>, u32>,
    scratch: Vec<u8>,
}

fn run_hash(parts: &[&[u8]]) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for part in parts {
        hasher.write(part);
    }
    hasher.finish()
}

impl Writer {
    fn new() -> Writer {
        // The header: compat version 0, version 0, reserved, then the root (set last).
        Writer {
            buf: vec![0; 8],
            seen: HashMap::new(),
            collided: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    fn holds(&self, offset: u32, parts: &[&[u8]]) -> bool {
        let mut at = offset as usize;
        parts.iter().all(|part| {
            let same = self.buf.get(at..at + part.len()) == Some(*part);
            at += part.len();
            same
        })
    }

    /// Appends the run `parts` at `align`, or returns where the same bytes already are at
    /// that alignment (a copy at another alignment is superseded by the new one, as in
    /// apk).
    fn data(&mut self, parts: &[&[u8]], align: usize) -> u32 {
        let len = parts.iter().map(|p| p.len()).sum();
        let key = (run_hash(parts), len);
        let primary = match self.seen.get(&key) {
            None => true,
            Some(&offset) if self.holds(offset, parts) => {
                if offset as usize % align == 0 {
                    return offset;
                }
                true
            }
            Some(_) => {
                let bytes = parts.concat();
                if let Some(&offset) = self.collided.get(&bytes) {
                    if offset as usize % align == 0 {
                        return offset;
                    }
                }
                false
            }
        };
        let padding = self.buf.len().next_multiple_of(align) - self.buf.len();
        self.buf.resize(self.buf.len() + padding, 0);
        let offset = self.buf.len() as u32;
        for part in parts {
            self.buf.extend_from_slice(part);
        }
        if primary {
            self.seen.insert(key, offset);
        } else {
            self.collided.insert(parts.concat(), offset);
        }
        offset
    }

    fn blob(&mut self, value: &[u8]) -> u32 {
        let len = value.len();
        let (l32, l16, l8) = (
            (len as u32).to_le_bytes(),
            (len as u16).to_le_bytes(),
            [len as u8],
        );
        let (prefix, kind): (&[u8], u32) = if len > 0xffff {
            (&l32, TYPE_BLOB_32)
        } else if len > 0xff {
            (&l16, TYPE_BLOB_16)
        } else if len > 0 {
            (&l8, TYPE_BLOB_8)
        } else {
            return NULL;
        };
        kind | self.data(&[prefix, value], prefix.len())
    }

    fn text(&mut self, value: Option<&str>) -> u32 {
        value.map_or(NULL, |v| self.blob(v.as_bytes()))
    }

    fn int(&mut self, value: u64) -> u32 {
        if value >= 0x1_0000_0000 {
            TYPE_INT_64 | self.data(&[&value.to_le_bytes()], 4)
        } else if value >= 0x1000_0000 {
            TYPE_INT_32 | self.data(&[&(value as u32).to_le_bytes()], 4)
        } else {
            TYPE_INT | value as u32
        }
    }

    /// Writes an object or array of `slots` (slot 0 is the count), trimmed after its last
    /// non-null slot; NULL when nothing is left.
    fn object(&mut self, kind: u32, slots: &[u32]) -> u32 {
        let n = slots.iter().rposition(|&v| v != NULL).map_or(0, |i| i + 1);
        if n <= 1 {
            return NULL;
        }
        let mut bytes = std::mem::take(&mut self.scratch);
        bytes.clear();
        bytes.extend_from_slice(&(n as u32).to_le_bytes());
        for v in &slots[1..n] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let offset = self.data(&[&bytes], 4);
        self.scratch = bytes;
        kind | offset
    }

    fn finish(mut self, root: u32) -> Vec<u8> {
        self.buf[4..8].copy_from_slice(&root.to_le_bytes());
        self.buf
    }
}

/// One dependency atom taken apart as apk's `apk_dep_parse` does.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dep {
    name: String,
    version: Option<String>,
    op: u32,
}

impl Dep {
    fn parse(atom: &str) -> ApkResult<Dep> {
        let bad = || ApkError::Malformed(format!("dependency {atom:?} is not valid"));
        let (conflict, rest) = match atom.strip_prefix('!') {
            Some(rest) => (OP_CONFLICT, rest),
            None => (0, atom),
        };
        let is_op = |c: char| matches!(c, '<' | '>' | '=' | '~');
        let Some(at) = rest.find(is_op) else {
            if rest.is_empty() {
                return Err(bad());
            }
            return Ok(Dep {
                name: rest.to_string(),
                version: None,
                op: conflict | OP_ANY,
            });
        };
        let (name, tail) = rest.split_at(at);
        let op_len = tail.find(|c: char| !is_op(c)).unwrap_or(tail.len());
        let (ops, ver) = tail.split_at(op_len);
        let mut op = 0;
        for c in ops.chars() {
            op |= match c {
                '<' => OP_LESS,
                '>' => OP_GREATER,
                '=' => OP_EQUAL,
                _ => OP_FUZZY | OP_EQUAL,
            };
        }
        if name.is_empty() || (op & OP_CHECKSUM != OP_CHECKSUM && !version::is_valid(ver)) {
            return Err(bad());
        }
        Ok(Dep {
            name: name.to_string(),
            version: Some(ver.to_string()),
            op: op | conflict,
        })
    }

    /// The dependency as apk prints it (`dependency_tostring`).
    fn render(&self) -> String {
        let bang = if self.op & OP_CONFLICT != 0 { "!" } else { "" };
        match &self.version {
            None => format!("{bang}{}", self.name),
            Some(version) => format!("{bang}{}{}{version}", self.name, op_string(self.op)),
        }
    }

    /// Writes the dependency object; returns it with what it stores, for sorting.
    fn write(mut self, w: &mut Writer) -> (u32, Dep) {
        let mut slots = [NULL; DEP_MAX];
        slots[DEP_NAME] = w.blob(self.name.as_bytes());
        if self.op != OP_ANY {
            slots[DEP_VERSION] = w.text(self.version.as_deref());
            if self.op != OP_EQUAL {
                slots[DEP_MATCH] = w.int(u64::from(self.op));
            }
        }
        if self.op == OP_ANY {
            self.version = None;
        }
        if self.op == OP_ANY || self.op == OP_EQUAL {
            self.op = 0;
        }
        (w.object(TYPE_OBJECT, &slots), self)
    }

    /// apk's exact order of dependency objects: name, version, match.
    fn order(&self, other: &Dep) -> Ordering {
        self.name
            .as_bytes()
            .cmp(other.name.as_bytes())
            .then_with(|| match (&self.version, &other.version) {
                (Some(a), Some(b)) => version::compare(a, b),
                // apk's version compare of a missing version says "equal" to anything.
                _ => Ordering::Equal,
            })
            .then_with(|| self.op.cmp(&other.op))
    }
}

fn op_string(op: u32) -> &'static str {
    match op & !OP_CONFLICT {
        OP_LESS => "<",
        x if x == OP_LESS | OP_EQUAL => "<=",
        x if x == OP_LESS | OP_EQUAL | OP_FUZZY => "<~",
        x if x == OP_EQUAL | OP_FUZZY || x == OP_FUZZY => "~",
        OP_EQUAL => "=",
        x if x == OP_GREATER | OP_EQUAL => ">=",
        x if x == OP_GREATER | OP_EQUAL | OP_FUZZY => ">~",
        OP_GREATER => ">",
        OP_CHECKSUM => "><",
        _ => "?",
    }
}

/// The dependency objects of `atoms`, each written as its atom is read.
fn write_deps(w: &mut Writer, atoms: &[String]) -> ApkResult<Vec<(u32, Dep)>> {
    atoms
        .iter()
        .map(|atom| Ok(Dep::parse(atom)?.write(w)))
        .collect()
}

/// Commits a dependency array: sorted, identical entries once (`adb_wa_sort_unique`).
fn commit_deps(w: &mut Writer, kind: u32, mut deps: Vec<(u32, Dep)>) -> u32 {
    deps.sort_by(|a, b| a.1.order(&b.1));
    deps.dedup_by(|b, a| a.0 == b.0);
    let mut slots = Vec::with_capacity(deps.len() + 1);
    slots.push(NULL);
    slots.extend(deps.iter().map(|d| d.0));
    w.object(kind, &slots)
}

/// Writes one package as `apk mkndx` does for a v2 package: its `.PKGINFO` fields in
/// abuild's line order (each value as its line is read), the dependency arrays, then the
/// file size and the identity.
fn write_package(w: &mut Writer, p: &IndexPackage) -> ApkResult<u32> {
    let mut s = [NULL; PI_MAX];
    s[PI_NAME] = w.blob(p.name.as_bytes());
    s[PI_VERSION] = w.blob(p.version.as_bytes());
    s[PI_DESCRIPTION] = w.text(p.description.as_deref());
    s[PI_URL] = w.text(p.url.as_deref());
    if let Some(t) = p.build_time {
        s[PI_BUILD_TIME] = w.int(t);
    }
    if let Some(size) = p.installed_size {
        s[PI_INSTALLED_SIZE] = w.int(size);
    }
    s[PI_ARCH] = w.text(p.arch.as_deref());
    s[PI_ORIGIN] = w.text(p.origin.as_deref());
    if let Some(commit) = &p.repo_commit {
        s[PI_REPO_COMMIT] = w.blob(commit);
    }
    s[PI_MAINTAINER] = w.text(p.maintainer.as_deref());
    if let Some(k) = p.provider_priority {
        s[PI_PROVIDER_PRIORITY] = w.int(k);
    }
    s[PI_LICENSE] = w.text(p.license.as_deref());
    let replaces = write_deps(w, &p.replaces)?;
    let depends = write_deps(w, &p.depends)?;
    let provides = write_deps(w, &p.provides)?;
    // install_if goes through the schema's fromstring, which commits it as an object.
    let install_if = write_deps(w, &p.install_if)?;
    s[PI_INSTALL_IF] = commit_deps(w, TYPE_OBJECT, install_if);
    s[PI_DEPENDS] = commit_deps(w, TYPE_ARRAY, depends);
    s[PI_PROVIDES] = commit_deps(w, TYPE_ARRAY, provides);
    s[PI_REPLACES] = commit_deps(w, TYPE_ARRAY, replaces);
    if let Some(size) = p.file_size {
        s[PI_FILE_SIZE] = w.int(size);
    }
    s[PI_HASHES] = w.blob(&p.hashes);
    Ok(w.object(TYPE_OBJECT, &s))
}

/// apk's order of packages in an index: name, version, identity.
pub fn package_order(a: &IndexPackage, b: &IndexPackage) -> Ordering {
    a.name
        .as_bytes()
        .cmp(b.name.as_bytes())
        .then_with(|| version::compare(&a.version, &b.version))
        .then_with(|| a.hashes.cmp(&b.hashes))
}

/// The ADB block of an index of `packages`, as `apk mkndx` writes it when given them in
/// this order (the order of writing shapes the block; the index lists them sorted).
pub fn write_index_block<'a>(
    description: &str,
    packages: impl IntoIterator<Item = &'a IndexPackage>,
) -> ApkResult<Vec<u8>> {
    let written = write_index(description, packages)?;
    Ok(written.writer.finish(written.root))
}

/// An index block as `apk mkndx` writes it, before its root is set in the header.
struct WrittenIndex {
    writer: Writer,
    /// Each package's object and how many bytes writing it added, in the order given.
    packages: Vec<(u32, usize)>,
    description: u32,
    root: u32,
}

fn write_index<'a>(
    description: &str,
    packages: impl IntoIterator<Item = &'a IndexPackage>,
) -> ApkResult<WrittenIndex> {
    let mut w = Writer::new();
    let mut written = Vec::new();
    for p in packages {
        let before = w.buf.len();
        let object = write_package(&mut w, p)?;
        written.push((object, w.buf.len() - before, p));
    }
    let mut ndx = [NULL; NDX_PKGNAME_SPEC + 1];
    ndx[NDX_DESCRIPTION] = w.blob(description.as_bytes());
    let mut sorted: Vec<&(u32, usize, &IndexPackage)> = written.iter().collect();
    // qsort_r in glibc is a merge sort: stable, as this one.
    sorted.sort_by(|a, b| package_order(a.2, b.2));
    let mut slots = Vec::with_capacity(sorted.len() + 1);
    slots.push(NULL);
    slots.extend(sorted.iter().map(|p| p.0));
    // mkndx stores the package array through adb_wo_obj: typed as an object.
    ndx[NDX_PACKAGES] = w.object(TYPE_OBJECT, &slots);
    let root = w.object(TYPE_OBJECT, &ndx);
    Ok(WrittenIndex {
        writer: w,
        packages: written.iter().map(|p| (p.0, p.1)).collect(),
        description: ndx[NDX_DESCRIPTION],
        root,
    })
}

/// The key id apk looks a signing key up by: the first 16 bytes of the SHA-512 of its
/// PKCS#1 `RSAPublicKey` DER encoding.
pub fn key_id(public_key_pem: &str) -> ApkResult<[u8; KEY_ID_LEN]> {
    let public = read_public_key(public_key_pem)?;
    let der = public
        .to_pkcs1_der()
        .map_err(|e| ApkError::Signing(format!("encoding the public key: {e}")))?;
    let digest = Sha512::digest(der.as_bytes());
    let mut id = [0; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    Ok(id)
}

fn read_public_key(pem: &str) -> ApkResult<RsaPublicKey> {
    RsaPublicKey::from_public_key_pem(pem)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem))
        .map_err(|_| ApkError::Malformed("not an RSA public key in PEM form".into()))
}

/// What a version 0 signature signs: schema, signature header, SHA-512 of the block.
fn signed_message(schema: u32, header: &[u8], adb_digest: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(4 + header.len() + adb_digest.len());
    message.extend_from_slice(&schema.to_le_bytes());
    message.extend_from_slice(header);
    message.extend_from_slice(adb_digest);
    message
}

fn push_block(out: &mut Vec<u8>, kind: u32, payload: &[u8]) -> ApkResult<()> {
    let raw = payload.len() + 4;
    if raw > 0x3fff_ffff {
        return Err(ApkError::TooLarge {
            what: "ADB block",
            limit: 0x3fff_fffb,
        });
    }
    out.extend_from_slice(&((kind << 30) | raw as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(BLOCK_ALIGNMENT), 0);
    Ok(())
}

/// The uncompressed file: header, the ADB block `adb`, one signature block per key in
/// the order given.
pub fn signed_file(schema: u32, adb: &[u8], keys: &[&SigningKey]) -> ApkResult<Vec<u8>> {
    let mut out = Vec::with_capacity(adb.len() + 16 + keys.len() * 600);
    out.extend_from_slice(&FORMAT_MAGIC.to_le_bytes());
    out.extend_from_slice(&schema.to_le_bytes());
    push_block(&mut out, BLOCK_ADB, adb)?;
    let digest = Sha512::digest(adb);
    for key in keys {
        let mut header = vec![0, DIGEST_SHA512];
        header.extend_from_slice(&key_id(&key.public_key_pem()?)?);
        let message = signed_message(schema, &header, &digest);
        let signature = key.sign(SignatureAlgorithm::Rsa512, &message)?;
        header.extend_from_slice(&signature);
        push_block(&mut out, BLOCK_SIG, &header)?;
    }
    Ok(out)
}

/// `Packages.adb`: the index of `packages` signed by each of `keys` in order, deflated
/// after `ADBd` as `apk mkndx` writes it.
pub fn signed_index<'a>(
    description: &str,
    packages: impl IntoIterator<Item = &'a IndexPackage>,
    keys: &[&SigningKey],
    level: u32,
) -> ApkResult<Vec<u8>> {
    let adb = write_index_block(description, packages)?;
    compress(&signed_file(SCHEMA_INDEX, &adb, keys)?, level)
}

/// `ADBd` and the raw deflate of `file`.
pub fn compress(file: &[u8], level: u32) -> ApkResult<Vec<u8>> {
    let mut out = b"ADBd".to_vec();
    let mut encoder =
        flate2::write::DeflateEncoder::new(&mut out, flate2::Compression::new(level.min(9)));
    encoder.write_all(file).map_err(ApkError::Io)?;
    encoder.finish().map_err(ApkError::Io)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Reading

fn malformed(msg: impl Into<String>) -> ApkError {
    ApkError::Malformed(msg.into())
}

/// Takes an ADB file apart (uncompressed `ADB.` or deflated `ADBd`), inflating at most
/// `max_size` bytes. Checks the block layout, not the signatures.
pub fn read_file(data: &[u8], max_size: u64) -> ApkResult<AdbFile> {
    let inflated;
    let file: &[u8] = match data.get(..4) {
        Some(b"ADB.") => data,
        Some(b"ADBd") => {
            let mut out = Vec::new();
            let mut reader = flate2::read::DeflateDecoder::new(&data[4..]).take(max_size + 1);
            reader
                .read_to_end(&mut out)
                .map_err(|e| malformed(format!("ADB file: bad deflate stream: {e}")))?;
            if out.len() as u64 > max_size {
                return Err(ApkError::TooLarge {
                    what: "inflated ADB file",
                    limit: max_size,
                });
            }
            inflated = out;
            &inflated
        }
        _ => return Err(malformed("not an ADB file (no ADB. or ADBd magic)")),
    };
    if file.len() as u64 > max_size {
        return Err(ApkError::TooLarge {
            what: "ADB file",
            limit: max_size,
        });
    }
    if file.len() < 8 || u32_at(file, 0) != Some(FORMAT_MAGIC) {
        return Err(malformed("ADB file: bad header"));
    }
    let schema = u32_at(file, 4).unwrap_or_default();
    let mut pos = 8;
    let mut adb: Option<Vec<u8>> = None;
    let mut signatures = Vec::new();
    while pos < file.len() {
        let word = u32_at(file, pos).ok_or_else(|| malformed("ADB file: truncated block"))?;
        let (kind, header_len, raw) = if word >> 30 == BLOCK_EXT {
            let size = file
                .get(pos + 8..pos + 16)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .ok_or_else(|| malformed("ADB file: truncated block header"))?;
            (word & 0x3fff_ffff, 16usize, size)
        } else {
            (word >> 30, 4usize, u64::from(word & 0x3fff_ffff))
        };
        let raw = usize::try_from(raw).map_err(|_| malformed("ADB file: block too large"))?;
        if raw < header_len {
            return Err(malformed("ADB file: block shorter than its header"));
        }
        let end = pos
            .checked_add(raw)
            .filter(|&end| end <= file.len())
            .ok_or_else(|| malformed("ADB file: block runs past the end"))?;
        let payload = &file[pos + header_len..end];
        match kind {
            BLOCK_ADB if adb.is_none() && signatures.is_empty() => {
                if payload.len() < 8 || payload[0] != 0 {
                    return Err(malformed("ADB file: bad ADB block header"));
                }
                adb = Some(payload.to_vec());
            }
            BLOCK_SIG if adb.is_some() => {
                if payload.len() < SIGNATURE_HEADER_LEN {
                    return Err(malformed("ADB file: signature block too short"));
                }
                let mut key_id = [0; KEY_ID_LEN];
                key_id.copy_from_slice(&payload[2..SIGNATURE_HEADER_LEN]);
                signatures.push(Signature {
                    version: payload[0],
                    hash_alg: payload[1],
                    key_id,
                    signature: payload[SIGNATURE_HEADER_LEN..].to_vec(),
                });
            }
            BLOCK_DATA if adb.is_some() => {}
            _ => return Err(malformed("ADB file: blocks out of order")),
        }
        pos = end.next_multiple_of(BLOCK_ALIGNMENT).min(file.len());
    }
    let adb = adb.ok_or_else(|| malformed("ADB file: no ADB block"))?;
    Ok(AdbFile {
        schema,
        adb,
        signatures,
    })
}

impl AdbFile {
    /// Checks that a signature by the key `public_key_pem` signs the ADB block.
    pub fn verify(&self, public_key_pem: &str) -> ApkResult<()> {
        let id = key_id(public_key_pem)?;
        let public = read_public_key(public_key_pem)?;
        let adb_digest = Sha512::digest(&self.adb);
        for sig in &self.signatures {
            if sig.version != 0 || sig.hash_alg != DIGEST_SHA512 || sig.key_id != id {
                continue;
            }
            let mut header = vec![sig.version, sig.hash_alg];
            header.extend_from_slice(&sig.key_id);
            let message = signed_message(self.schema, &header, &adb_digest);
            let digest = Sha512::digest(&message);
            if public
                .verify(Pkcs1v15Sign::new::<Sha512>(), &digest, &sig.signature)
                .is_ok()
            {
                return Ok(());
            }
        }
        Err(malformed(
            "no signature of the ADB file verifies with this key",
        ))
    }

    /// The index the ADB block holds.
    pub fn index(&self) -> ApkResult<Index> {
        if self.schema != SCHEMA_INDEX {
            return Err(malformed("ADB file: not an index (schema is not indx)"));
        }
        let r = Reader { adb: &self.adb };
        // A root with no values is written as none: an empty index without a description.
        let root = match r.u32(4)? {
            NULL => Vec::new(),
            v => r.object(v)?,
        };
        let packages = match root.get(NDX_PACKAGES) {
            Some(&v) if v != NULL => r.object(v)?,
            _ => Vec::new(),
        };
        Ok(Index {
            description: r.opt_text(&root, NDX_DESCRIPTION)?,
            pkgname_spec: r.opt_text(&root, NDX_PKGNAME_SPEC)?,
            packages: packages
                .iter()
                .skip(1)
                .map(|&v| r.package(v))
                .collect::<ApkResult<_>>()?,
        })
    }
}

struct Reader<'a> {
    adb: &'a [u8],
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at.checked_add(4)?)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

impl Reader<'_> {
    fn u32(&self, at: usize) -> ApkResult<u32> {
        u32_at(self.adb, at).ok_or_else(|| malformed("ADB block: offset out of range"))
    }

    fn bytes(&self, at: usize, len: usize) -> ApkResult<&[u8]> {
        at.checked_add(len)
            .and_then(|end| self.adb.get(at..end))
            .ok_or_else(|| malformed("ADB block: value runs past the end"))
    }

    /// An object's or array's slots, slot 0 (the count) included.
    fn object(&self, v: u32) -> ApkResult<Vec<u32>> {
        if !matches!(v & TYPE_MASK, TYPE_OBJECT | TYPE_ARRAY) {
            return Err(malformed("ADB block: expected an object"));
        }
        let at = (v & VALUE_MASK) as usize;
        let n = self.u32(at)? as usize;
        let slots = n
            .checked_mul(4)
            .ok_or_else(|| malformed("ADB block: object too large"))?;
        let bytes = self.bytes(at, slots)?;
        if n == 0 {
            return Err(malformed("ADB block: empty object"));
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }

    fn blob(&self, v: u32) -> ApkResult<Option<&[u8]>> {
        let at = (v & VALUE_MASK) as usize;
        let (len, skip) = match v & TYPE_MASK {
            TYPE_SPECIAL if v == NULL => return Ok(None),
            TYPE_BLOB_8 => (usize::from(self.bytes(at, 1)?[0]), 1),
            TYPE_BLOB_16 => {
                let b = self.bytes(at, 2)?;
                (usize::from(u16::from_le_bytes([b[0], b[1]])), 2)
            }
            TYPE_BLOB_32 => (self.u32(at)? as usize, 4),
            _ => return Err(malformed("ADB block: expected a blob")),
        };
        self.bytes(at + skip, len).map(Some)
    }

    fn int(&self, v: u32) -> ApkResult<Option<u64>> {
        let at = (v & VALUE_MASK) as usize;
        match v & TYPE_MASK {
            TYPE_SPECIAL if v == NULL => Ok(None),
            TYPE_INT => Ok(Some(u64::from(v & VALUE_MASK))),
            TYPE_INT_32 => Ok(Some(u64::from(self.u32(at)?))),
            TYPE_INT_64 => {
                let b = self.bytes(at, 8)?;
                Ok(Some(u64::from_le_bytes(b.try_into().expect("8 bytes"))))
            }
            _ => Err(malformed("ADB block: expected an integer")),
        }
    }

    fn slot(slots: &[u32], i: usize) -> u32 {
        slots.get(i).copied().unwrap_or(NULL)
    }

    fn opt_text(&self, slots: &[u32], i: usize) -> ApkResult<Option<String>> {
        self.blob(Self::slot(slots, i))?
            .map(|b| {
                String::from_utf8(b.to_vec()).map_err(|_| malformed("ADB block: text is not UTF-8"))
            })
            .transpose()
    }

    fn deps(&self, v: u32) -> ApkResult<Vec<String>> {
        if v == NULL {
            return Ok(Vec::new());
        }
        self.object(v)?
            .iter()
            .skip(1)
            .map(|&d| {
                let slots = self.object(d)?;
                let name = self
                    .opt_text(&slots, DEP_NAME)?
                    .ok_or_else(|| malformed("ADB block: dependency without a name"))?;
                let op = self.int(Self::slot(&slots, DEP_MATCH))?.unwrap_or(0) as u32;
                let dep = Dep {
                    name,
                    version: self.opt_text(&slots, DEP_VERSION)?,
                    op: if op == 0 { OP_EQUAL } else { op },
                };
                Ok(dep.render())
            })
            .collect()
    }

    fn package(&self, v: u32) -> ApkResult<IndexPackage> {
        let s = self.object(v)?;
        let int = |i| self.int(Self::slot(&s, i));
        Ok(IndexPackage {
            // An empty name or version is none: apk refuses those, and the writer, which
            // leaves empty values out, could not write them back.
            name: self
                .opt_text(&s, PI_NAME)?
                .filter(|name| !name.is_empty())
                .ok_or_else(|| malformed("ADB block: package without a name"))?,
            version: self
                .opt_text(&s, PI_VERSION)?
                .filter(|version| !version.is_empty())
                .ok_or_else(|| malformed("ADB block: package without a version"))?,
            hashes: self
                .blob(Self::slot(&s, PI_HASHES))?
                .unwrap_or_default()
                .to_vec(),
            description: self.opt_text(&s, PI_DESCRIPTION)?,
            arch: self.opt_text(&s, PI_ARCH)?,
            license: self.opt_text(&s, PI_LICENSE)?,
            origin: self.opt_text(&s, PI_ORIGIN)?,
            maintainer: self.opt_text(&s, PI_MAINTAINER)?,
            url: self.opt_text(&s, PI_URL)?,
            repo_commit: self
                .blob(Self::slot(&s, PI_REPO_COMMIT))?
                .map(<[u8]>::to_vec),
            build_time: int(PI_BUILD_TIME)?,
            installed_size: int(PI_INSTALLED_SIZE)?,
            file_size: int(PI_FILE_SIZE)?,
            provider_priority: int(PI_PROVIDER_PRIORITY)?,
            depends: self.deps(Self::slot(&s, PI_DEPENDS))?,
            provides: self.deps(Self::slot(&s, PI_PROVIDES))?,
            replaces: self.deps(Self::slot(&s, PI_REPLACES))?,
            install_if: self.deps(Self::slot(&s, PI_INSTALL_IF))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apk::package::{parse_package, Limits};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    const MKNDX: &[u8] = include_bytes!("../../tests/fixtures/mkndx-Packages.adb");
    const FILES: [&str; 3] = [
        "gitea-test-1.4.1-r3.apk",
        "forgejo-noarch-test-1.0.0-r0.apk",
        "forgejo-noarch-test-openrc-1.0.0-r0.apk",
    ];

    fn committed_key() -> SigningKey {
        let pem = std::fs::read_to_string(format!("{FIXTURES}test-signing-key.pem"))
            .expect("fixture present");
        SigningKey::from_pkcs8_pem("test", &pem).expect("valid key")
    }

    /// The fixture packages as the registry indexes them: from their stanzas.
    fn fixture_packages() -> Vec<IndexPackage> {
        FILES
            .iter()
            .map(|f| {
                let bytes = std::fs::read(format!("{FIXTURES}{f}")).expect("fixture present");
                let parsed = parse_package(&bytes[..], &Limits::default()).expect("parses");
                IndexPackage::from_stanza(&parsed.stanza).expect("stanza")
            })
            .collect()
    }

    fn inflate(file: &[u8]) -> Vec<u8> {
        assert_eq!(&file[..4], b"ADBd");
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(&file[4..])
            .read_to_end(&mut out)
            .expect("inflates");
        out
    }

    #[test]
    fn writer_matches_mkndx_byte_for_byte() {
        let key = committed_key();
        let adb = write_index_block("fixtures/v3.21/main", &fixture_packages()).unwrap();
        let ours = signed_file(SCHEMA_INDEX, &adb, &[&key]).unwrap();
        let theirs = inflate(MKNDX);
        assert_eq!(hex::encode(&ours), hex::encode(&theirs));
        // Deflated, it still reads back as the same file.
        let served = signed_index("fixtures/v3.21/main", &fixture_packages(), &[&key], 6).unwrap();
        assert_eq!(inflate(&served), theirs);
    }

    #[test]
    fn reader_reads_mkndx_field_for_field() {
        let file = read_file(MKNDX, 1 << 20).unwrap();
        assert_eq!(file.schema, SCHEMA_INDEX);
        let index = file.index().unwrap();
        assert_eq!(index.description.as_deref(), Some("fixtures/v3.21/main"));
        assert_eq!(index.pkgname_spec, None);
        let names: Vec<&str> = index.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "forgejo-noarch-test",
                "forgejo-noarch-test-openrc",
                "gitea-test"
            ]
        );
        let openrc = &index.packages[1];
        assert_eq!(openrc.version, "1.0.0-r0");
        assert_eq!(
            hex::encode(&openrc.hashes),
            "cd35d93f4dd46d295e777d668b83179acae0350e"
        );
        assert_eq!(openrc.arch.as_deref(), Some("noarch"));
        assert_eq!(
            openrc.install_if,
            ["forgejo-noarch-test=1.0.0-r0", "openrc"]
        );
        assert_eq!(openrc.installed_size, Some(16384));
        assert_eq!(openrc.file_size, Some(1569));
        assert_eq!(openrc.build_time, Some(1707660311));
        assert_eq!(openrc.repo_commit, None);
        assert_eq!(index.packages[0].provides, ["cmd:forgejo_2173=1.0.0-r0"]);
        // Every field the registry knows is what it would write.
        // (the index holds dependencies sorted; here, name order is string order)
        let mut ours = fixture_packages();
        ours.sort_by(package_order);
        for p in &mut ours {
            p.install_if.sort();
        }
        assert_eq!(index.packages, ours);
    }

    #[test]
    fn mkndx_signature_verifies_with_the_committed_key_only() {
        let key = committed_key();
        let file = read_file(MKNDX, 1 << 20).unwrap();
        assert_eq!(file.signatures.len(), 1);
        assert_eq!(
            file.signatures[0].key_id,
            key_id(&key.public_key_pem().unwrap()).unwrap()
        );
        file.verify(&key.public_key_pem().unwrap()).unwrap();
        let other = SigningKey::generate("other", 1024).unwrap();
        assert!(file.verify(&other.public_key_pem().unwrap()).is_err());
    }

    #[test]
    fn every_key_signs_in_the_order_given() {
        let first = committed_key();
        let second = SigningKey::generate("second", 1024).unwrap();
        let served = signed_index("d", &fixture_packages(), &[&first, &second], 6).unwrap();
        let file = read_file(&served, 1 << 20).unwrap();
        let ids: Vec<_> = file.signatures.iter().map(|s| s.key_id).collect();
        assert_eq!(
            ids,
            [
                key_id(&first.public_key_pem().unwrap()).unwrap(),
                key_id(&second.public_key_pem().unwrap()).unwrap()
            ]
        );
        file.verify(&first.public_key_pem().unwrap()).unwrap();
        file.verify(&second.public_key_pem().unwrap()).unwrap();
    }

    #[test]
    fn tampered_block_does_not_verify() {
        let key = committed_key();
        let mut file = read_file(MKNDX, 1 << 20).unwrap();
        let last = file.adb.len() - 1;
        file.adb[last] ^= 1;
        assert!(file.verify(&key.public_key_pem().unwrap()).is_err());
    }

    #[test]
    fn values_round_trip_through_writer_and_reader() {
        let package = IndexPackage {
            name: "big".into(),
            version: "2.0_rc1-r3".into(),
            hashes: vec![7; 20],
            description: Some("d".repeat(300)),
            arch: Some("aarch64".into()),
            license: Some("MIT AND (GPL-2.0-only OR BSD-2-Clause)".into()),
            origin: Some("big".into()),
            maintainer: Some("M <m@example.org>".into()),
            url: Some("x".repeat(70_000)),
            repo_commit: Some(vec![0xab; 20]),
            build_time: Some(0x1234_5678),
            installed_size: Some(0x1_0000_0001),
            file_size: Some(5),
            provider_priority: Some(100),
            depends: vec![
                "so:libc.musl-x86_64.so.1".into(),
                "!conflict".into(),
                "a>=1.2".into(),
                "b<~3".into(),
                "c~4".into(),
                "d=5".into(),
                "e<6".into(),
            ],
            provides: vec!["cmd:big=2.0_rc1-r3".into(), "big-any".into()],
            replaces: Vec::new(),
            install_if: vec!["openrc".into(), "big=2.0_rc1-r3".into()],
        };
        let adb = write_index_block("desc", std::slice::from_ref(&package)).unwrap();
        let file = read_file(&signed_file(SCHEMA_INDEX, &adb, &[]).unwrap(), 1 << 20).unwrap();
        let read = file.index().unwrap();
        assert_eq!(read.description.as_deref(), Some("desc"));
        let mut expected = package;
        // Sorted by name (`!conflict` under `conflict`), then version.
        expected.depends = [
            "a>=1.2",
            "b<~3",
            "c~4",
            "!conflict",
            "d=5",
            "e<6",
            "so:libc.musl-x86_64.so.1",
        ]
        .map(String::from)
        .to_vec();
        expected.provides = ["big-any", "cmd:big=2.0_rc1-r3"].map(String::from).to_vec();
        expected.install_if = ["big=2.0_rc1-r3", "openrc"].map(String::from).to_vec();
        // Not assert_eq: the long values would flood the output.
        assert!(
            read.packages == [expected],
            "{:?}",
            read.packages[0].depends
        );
        assert!(file
            .verify(&committed_key().public_key_pem().unwrap())
            .is_err());
    }

    #[test]
    fn truncated_and_hostile_files_are_rejected() {
        let plain = inflate(MKNDX);
        for len in [0, 3, 7, 8, 11, 20, plain.len() - 1] {
            assert!(
                read_file(&plain[..len], 1 << 20)
                    .and_then(|f| f.index())
                    .is_err()
                    || len == plain.len() - 1,
                "{len}"
            );
        }
        // A root pointing past the block.
        let mut bad = plain.clone();
        bad[16..20].copy_from_slice(&(TYPE_OBJECT | 0x0fff_fff0).to_le_bytes());
        assert!(read_file(&bad, 1 << 20).unwrap().index().is_err());
        // An object claiming more slots than the block has.
        let mut bad = plain.clone();
        let root = (u32_at(&plain, 16).unwrap() & VALUE_MASK) as usize;
        bad[12 + root..16 + root].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_file(&bad, 1 << 20).unwrap().index().is_err());
        // Inflating past the limit.
        assert!(matches!(
            read_file(MKNDX, 100),
            Err(ApkError::TooLarge { .. })
        ));
    }
}
