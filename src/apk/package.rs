//! Parsing of a v2 `.apk` package: gzip member boundaries, the control member, the data
//! member, and the package identity (`C:`).

use super::pkginfo::PkgInfo;
use super::ApkResult;

/// Limits applied while parsing an untrusted package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Decompressed size of the control member (and of the signature member).
    pub max_control_bytes: u64,
    /// Size of `.PKGINFO`.
    pub max_pkginfo_bytes: u64,
    /// Decompressed size of the data member.
    pub max_data_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_control_bytes: 16 << 20,
            max_pkginfo_bytes: 1 << 20,
            max_data_bytes: 64 << 30,
        }
    }
}

/// What the registry needs to know of an uploaded package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedPackage {
    pub info: PkgInfo,
    pub checksum: String,
    pub size: u64,
    pub signature_names: Vec<String>,
    pub data_sha256: String,
}

/// Parses and checks a whole `.apk` file.
pub fn parse_package<R: std::io::Read>(reader: R, limits: &Limits) -> ApkResult<ParsedPackage> {
    let _ = (reader, limits);
    todo!()
}
