//! APKINDEX: stanza rendering, the `APKINDEX.tar.gz` writer and index signing.

use super::pkginfo::PkgInfo;
use super::sign::{SignatureAlgorithm, SigningKey};
use super::ApkResult;
use std::cmp::Ordering;

/// One stanza exactly as `apk index` writes it, ending with the blank line.
pub fn render_stanza(info: &PkgInfo, checksum: &str, file_size: u64) -> String {
    let _ = (info, checksum, file_size);
    todo!()
}

/// The same stanza with its `A:` line replaced (like `apk index --rewrite-arch`).
pub fn rewrite_arch(stanza: &str, arch: &str) -> String {
    let _ = (stanza, arch);
    todo!()
}

/// Unsigned, deterministic `APKINDEX.tar.gz`.
pub fn write_unsigned_index(description: &str, stanzas: &[&str]) -> Vec<u8> {
    let _ = (description, stanzas);
    todo!()
}

/// Prepends the signature member to an unsigned index.
pub fn sign_index(
    unsigned: &[u8],
    key: &SigningKey,
    algorithms: &[SignatureAlgorithm],
) -> ApkResult<Vec<u8>> {
    let _ = (unsigned, key, algorithms);
    todo!()
}

/// Registry stanza order: name, then version (apk ordering), then checksum.
pub fn compare_entries(a: (&str, &str, &str), b: (&str, &str, &str)) -> Ordering {
    let _ = (a, b);
    todo!()
}
