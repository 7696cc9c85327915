//! Validation of package names and architectures, the two outside names that end up in
//! file paths and URLs (`<repo>/<arch>/<name>-<version>.apk`).

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

/// Longest package name accepted; apk has no hard limit, but file names do.
const MAX_PKGNAME_LEN: usize = 128;

/// An apk-compatible package name: starts with an ASCII letter or digit, continues with
/// `[A-Za-z0-9+._-]`, at most 128 bytes, and never contains `..`.
///
/// The character set is apk's own package-name class; it already excludes `/`, NUL and
/// whitespace, which is what keeps a name safe to use as a path component.
pub fn is_valid_pkgname(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some(first) = bytes.first() else {
        return false;
    };
    bytes.len() <= MAX_PKGNAME_LEN
        && first.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'_' | b'-'))
        && !s.contains("..")
}

/// `noarch`, or an architecture name of `[a-z0-9_]{1,32}` starting with a letter.
///
/// Unknown but well-formed names are accepted so that a new Alpine port does not need a
/// registry release.
pub fn is_valid_arch(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some(first) = bytes.first() else {
        return false;
    };
    bytes.len() <= 32
        && first.is_ascii_lowercase()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_package_names_are_valid() {
        for name in [
            "gitea-test",
            "forgejo-noarch-test-openrc",
            "g++",
            "libstdc++",
            "py3-foo.bar",
            "7zip",
            "R",
            "perl-io_socket",
        ] {
            assert!(is_valid_pkgname(name), "{name}");
        }
    }

    #[test]
    fn hostile_package_names_are_rejected() {
        let long = "a".repeat(129);
        for name in [
            "",
            "-foo",
            ".hidden",
            "_x",
            "foo/bar",
            "../etc",
            "foo..bar",
            "foo\0bar",
            "foo bar",
            "foo\tbar",
            "foo\nbar",
            "föö",
            "foo@tag",
            "foo=1",
            long.as_str(),
        ] {
            assert!(!is_valid_pkgname(name), "{name:?}");
        }
        assert!(is_valid_pkgname(&"a".repeat(128)));
    }

    #[test]
    fn known_arches_and_noarch_are_valid() {
        for arch in KNOWN_ARCHES.iter().chain(&["noarch", "armv8m", "e2k"]) {
            assert!(is_valid_arch(arch), "{arch}");
        }
    }

    #[test]
    fn malformed_arches_are_rejected() {
        let long = "a".repeat(33);
        for arch in [
            "",
            "X86_64",
            "x86-64",
            "9arch",
            "_x",
            "x86/64",
            "..",
            "x86 64",
            "x86\0",
            long.as_str(),
        ] {
            assert!(!is_valid_arch(arch), "{arch:?}");
        }
    }
}
