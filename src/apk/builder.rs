//! Builds valid (or deliberately invalid) `.apk` files for tests and benchmarks, laid out
//! the way abuild does: optional signature member, control member (cut tar, `.PKGINFO`
//! first, PAX header), data member (tar with end blocks, directories before their files,
//! `APK-TOOLS.checksum.SHA1` PAX records).

use super::index::gzip;
use super::sign::{SignatureAlgorithm, SigningKey};
use sha1::{Digest, Sha1};
use sha2::Sha256;

const BLOCK: usize = 512;

/// One entry of the data member.
#[derive(Debug, Clone)]
enum Node {
    File(Vec<u8>),
    Symlink(String),
    HardLink(String),
}

/// A package under construction.
#[derive(Debug, Clone)]
pub struct PackageBuilder {
    name: String,
    version: String,
    fields: Vec<(String, String)>,
    files: Vec<(String, Node)>,
    datahash: bool,
    key: Option<SigningKey>,
}

/// Appends a header (ustar, owner root, mtime 0) and the data with padding. Names longer
/// than the 100-byte field are cut here; callers that need them put a PAX `path` first.
pub(crate) fn push_entry(out: &mut Vec<u8>, name: &[u8], typeflag: u8, mode: u32, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    let field = &mut h.as_old_mut().name;
    let n = name.len().min(field.len());
    field[..n].copy_from_slice(&name[..n]);
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::new(typeflag));
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len() + (BLOCK - data.len() % BLOCK) % BLOCK, 0);
}

/// Appends a hard link (`b'1'`) or symbolic link (`b'2'`) header whose link name field
/// holds `target` (cut to its 100 bytes).
pub(crate) fn push_link(out: &mut Vec<u8>, name: &[u8], typeflag: u8, target: &[u8]) {
    let at = out.len();
    push_entry(out, name, typeflag, 0o777, &[]);
    let mut h = tar::Header::new_old();
    h.as_mut_bytes().copy_from_slice(&out[at..at + BLOCK]);
    let n = target.len().min(100);
    h.as_mut_bytes()[157..157 + n].copy_from_slice(&target[..n]);
    h.set_cksum();
    out[at..at + BLOCK].copy_from_slice(h.as_bytes());
}

/// One PAX record: `<len> <key>=<value>\n`, where `<len>` counts itself.
pub(crate) fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while body + len.to_string().len() != len {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn push_pax(out: &mut Vec<u8>, for_name: &str, records: &[u8]) {
    let name = format!("PaxHeaders/{for_name}");
    push_entry(out, name.as_bytes(), b'x', 0o644, records);
}

impl PackageBuilder {
    /// A package with abuild-like defaults for every other field.
    pub fn new(name: &str, version: &str, arch: &str) -> Self {
        let fields = [
            ("pkgname", name.to_string()),
            ("pkgver", version.to_string()),
            ("pkgdesc", format!("Test package {name}")),
            ("url", "https://example.org/".to_string()),
            ("builddate", "1700000000".to_string()),
            ("packager", "Test Packager <test@example.org>".to_string()),
            ("size", "4096".to_string()),
            ("arch", arch.to_string()),
            ("origin", name.to_string()),
            (
                "commit",
                "0123456789abcdef0123456789abcdef01234567".to_string(),
            ),
            (
                "maintainer",
                "Test Maintainer <test@example.org>".to_string(),
            ),
            ("license", "MIT".to_string()),
        ];
        PackageBuilder {
            name: name.to_string(),
            version: version.to_string(),
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            files: Vec::new(),
            datahash: true,
            key: None,
        }
    }

    /// Appends a `.PKGINFO` line `key = value` (repeatable; a later scalar line wins).
    pub fn field(mut self, key: &str, value: &str) -> Self {
        self.fields.push((key.to_string(), value.to_string()));
        self
    }

    /// Drops every line with this key, e.g. `pkgname` for negative tests.
    pub fn without_field(mut self, key: &str) -> Self {
        self.fields.retain(|(k, _)| k != key);
        self
    }

    /// Adds a regular file to the data member (parent directories are added as well).
    pub fn file(mut self, path: &str, contents: &[u8]) -> Self {
        self.files
            .push((path.to_string(), Node::File(contents.to_vec())));
        self
    }

    /// Adds a symbolic link to `target` (parent directories are added as well).
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.files
            .push((path.to_string(), Node::Symlink(target.to_string())));
        self
    }

    /// Adds a hard link to `target`, a file added before (parent directories are added
    /// as well).
    pub fn hard_link(mut self, path: &str, target: &str) -> Self {
        self.files
            .push((path.to_string(), Node::HardLink(target.to_string())));
        self
    }

    /// Whether `.PKGINFO` gets a `datahash` line (default true).
    pub fn with_datahash(mut self, yes: bool) -> Self {
        self.datahash = yes;
        self
    }

    /// Signs the package (`.SIGN.RSA256.<keyname>` over the compressed control member).
    pub fn signed_with(mut self, key: &SigningKey) -> Self {
        self.key = Some(key.clone());
        self
    }

    /// The `.PKGINFO` text this builder writes, without `datahash`.
    pub fn pkginfo(&self) -> String {
        let mut text = String::from("# Generated by alpine-registry PackageBuilder\n");
        for (k, v) in &self.fields {
            text.push_str(k);
            text.push_str(" = ");
            text.push_str(v);
            text.push('\n');
        }
        text
    }

    /// The compressed data member.
    pub fn data_member(&self) -> Vec<u8> {
        let mut tar = Vec::new();
        let mut dirs: Vec<String> = Vec::new();
        for (path, node) in &self.files {
            let parts: Vec<&str> = path.split('/').collect();
            for i in 1..parts.len() {
                let dir = format!("{}/", parts[..i].join("/"));
                if !dirs.contains(&dir) {
                    push_entry(&mut tar, dir.as_bytes(), b'5', 0o755, &[]);
                    dirs.push(dir);
                }
            }
            // abuild-tar records the SHA-1 of a file's contents, and of a symbolic
            // link's target.
            let (checksum, link) = match node {
                Node::File(contents) => (Some(&contents[..]), None),
                Node::Symlink(target) => (Some(target.as_bytes()), Some(target)),
                Node::HardLink(target) => (None, Some(target)),
            };
            let mut records = Vec::new();
            if let Some(data) = checksum {
                records.extend(pax_record(
                    "APK-TOOLS.checksum.SHA1",
                    hex::encode(Sha1::digest(data)).as_bytes(),
                ));
            }
            if path.len() > 100 {
                records.extend(pax_record("path", path.as_bytes()));
            }
            if let Some(target) = link.filter(|t| t.len() > 100) {
                records.extend(pax_record("linkpath", target.as_bytes()));
            }
            if !records.is_empty() {
                push_pax(&mut tar, path, &records);
            }
            let name = path.as_bytes();
            match node {
                Node::File(contents) => push_entry(&mut tar, name, b'0', 0o644, contents),
                Node::Symlink(target) => push_link(&mut tar, name, b'2', target.as_bytes()),
                Node::HardLink(target) => push_link(&mut tar, name, b'1', target.as_bytes()),
            }
        }
        tar.extend_from_slice(&[0u8; 2 * BLOCK]);
        gzip(&tar).expect("compressing into memory")
    }

    /// The compressed control member for a given data member.
    pub fn control_member(&self, data_member: &[u8]) -> Vec<u8> {
        let mut pkginfo = self.pkginfo();
        if self.datahash {
            pkginfo.push_str("datahash = ");
            pkginfo.push_str(&hex::encode(Sha256::digest(data_member)));
            pkginfo.push('\n');
        }
        let mut tar = Vec::new();
        push_pax(&mut tar, ".PKGINFO", &pax_record("mtime", b"1700000000"));
        push_entry(&mut tar, b".PKGINFO", b'0', 0o644, pkginfo.as_bytes());
        // A cut tar, as abuild writes it: end blocks here would end apk's tar stream.
        gzip(&tar).expect("compressing into memory")
    }

    /// The `.apk` bytes: [signature member] + control member + data member.
    pub fn build(&self) -> Vec<u8> {
        let data = self.data_member();
        let control = self.control_member(&data);
        let mut out = Vec::with_capacity(control.len() + data.len() + 1024);
        if let Some(key) = &self.key {
            let sig = super::index::signature_member(&control, key, &[SignatureAlgorithm::Rsa256])
                .expect("signing with a valid in-memory key does not fail");
            out.extend_from_slice(&sig);
        }
        out.extend_from_slice(&control);
        out.extend_from_slice(&data);
        out
    }

    /// `{name}-{version}.apk`.
    pub fn filename(&self) -> String {
        format!("{}-{}.apk", self.name, self.version)
    }
}
