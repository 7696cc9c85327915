//! Whole `.apk` files: never a panic, never an I/O error from an in-memory source, and
//! whatever is accepted is self-consistent.
//!
//! Each input is parsed twice: as the file itself, and as the uncompressed contents of
//! up to three members (two little-endian `u16` lengths, then the bytes), gzipped here.
//! The second form lets mutations reach the tar and `.PKGINFO` layers instead of dying
//! at a gzip checksum.
#![no_main]

use std::io::Write;

use alpine_registry::apk::package::{parse_package, Limits};
use alpine_registry::apk::ApkError;
use libfuzzer_sys::fuzz_target;

/// Small limits so that bombs hit them quickly instead of eating the fuzzer's memory.
const LIMITS: Limits = Limits {
    max_control_bytes: 64 << 10,
    max_pkginfo_bytes: 16 << 10,
    max_data_bytes: 1 << 20,
    max_stanza_bytes: 4 << 10,
};

fn check(data: &[u8]) {
    match parse_package(data, &LIMITS) {
        Ok(p) => {
            assert_eq!(p.size, data.len() as u64, "size is the whole file");
            assert!(p.checksum.starts_with("Q1") && p.checksum.len() == 30);
            assert_eq!(p.data_sha256.len(), 64);
            if let Some(declared) = &p.info.datahash {
                assert_eq!(declared, &p.data_sha256, "datahash was checked");
            }
            assert!(p.signature_names.iter().all(|n| n.starts_with(".SIGN.")));
            assert!(p.stanza.len() as u64 <= LIMITS.max_stanza_bytes);
            assert!(p.stanza.starts_with(&format!("C:{}\n", p.checksum)));
        }
        Err(ApkError::Io(e)) => panic!("reading from memory cannot fail: {e}"),
        Err(ApkError::Signing(e)) => panic!("parsing never signs: {e}"),
        Err(ApkError::Malformed(m)) => assert!(!m.is_empty()),
        Err(ApkError::TooLarge { .. } | ApkError::UnsupportedV3) => {}
    }
}

fn gzip_members(data: &[u8]) -> Option<Vec<u8>> {
    let (lengths, rest) = data.split_at_checked(4)?;
    let first = usize::from(u16::from_le_bytes([lengths[0], lengths[1]]));
    let second = usize::from(u16::from_le_bytes([lengths[2], lengths[3]]));
    let (a, rest) = rest.split_at(first.min(rest.len()));
    let (b, c) = rest.split_at(second.min(rest.len()));
    let mut out = Vec::new();
    for member in [a, b, c].into_iter().filter(|m| !m.is_empty()) {
        let mut e = flate2::write::GzEncoder::new(&mut out, flate2::Compression::none());
        e.write_all(member).ok()?;
        e.finish().ok()?;
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(members) = gzip_members(data) {
        check(&members);
    }
});
