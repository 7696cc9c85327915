//! Validation of package names and architectures.

/// Alpine's architecture names.
pub const KNOWN_ARCHES: &[&str] = &[
    "x86_64",
    "x86",
    "aarch64",
    "armhf",
    "armv7",
    "ppc64le",
    "s390x",
    "riscv64",
    "loongarch64",
    "mips64",
];

/// An apk-compatible package name.
pub fn is_valid_pkgname(s: &str) -> bool {
    let _ = s;
    todo!()
}

/// `noarch` or a well-formed architecture name.
pub fn is_valid_arch(s: &str) -> bool {
    let _ = s;
    todo!()
}
