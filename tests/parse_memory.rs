//! Parsing never holds a member in memory: a package whose control member carries a
//! 12 MiB install script (read through, hashed, never kept) parses while the process's
//! peak resident size grows by far less than the script. Linux only, like `memory.rs`:
//! the peak is reset through `/proc/self/clear_refs` and read from `/proc/self/status`.
//! One test in this binary, so no other test moves the peak meanwhile.

use std::io::Write;

use alpine_registry::apk::builder::PackageBuilder;
use alpine_registry::apk::package::{parse_package, Limits};

const SCRIPT_BYTES: u64 = 12 << 20;
const MAX_GROWTH_BYTES: u64 = 4 << 20;

fn status_bytes(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("{key} in /proc/self/status"));
    let kib: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

fn tar_header(name: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).unwrap();
    h.set_size(size);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h
}

/// A cut control tar with `.PKGINFO` and a `SCRIPT_BYTES` `.post-install`, compressed
/// chunk by chunk so that the script is never in memory here either.
fn control_member() -> Vec<u8> {
    let pkginfo = b"pkgname = big-script\npkgver = 1.0-r0\narch = x86_64\nsize = 1\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(tar_header(".PKGINFO", pkginfo.len() as u64).as_bytes())
        .unwrap();
    gz.write_all(pkginfo).unwrap();
    gz.write_all(&[0u8; 512][..(512 - pkginfo.len() % 512) % 512])
        .unwrap();
    gz.write_all(tar_header(".post-install", SCRIPT_BYTES).as_bytes())
        .unwrap();
    let chunk = [b'#'; 64 << 10];
    for _ in 0..SCRIPT_BYTES / chunk.len() as u64 {
        gz.write_all(&chunk).unwrap();
    }
    gz.finish().unwrap()
}

#[test]
fn install_script_is_read_through_not_held_in_memory() {
    let data = PackageBuilder::new("big-script", "1.0-r0", "x86_64")
        .file("usr/share/big-script/README", b"hi\n")
        .data_member();
    let package = [control_member(), data].concat();
    assert!(package.len() < 1 << 20, "{} bytes", package.len());

    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak resident size");
    let before = status_bytes("VmHWM:");
    let parsed = parse_package(&package[..], &Limits::default()).expect("valid package");
    let growth = status_bytes("VmHWM:").saturating_sub(before);

    eprintln!("peak resident size grew by {growth} bytes");
    assert_eq!(parsed.info.pkgname, "big-script");
    assert!(
        growth < MAX_GROWTH_BYTES,
        "peak resident size grew by {growth} bytes parsing a {SCRIPT_BYTES}-byte script"
    );
}
