//! `.PKGINFO` parsing and validation.

use super::ApkResult;

/// The fields of `.PKGINFO` that the registry uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PkgInfo {
    pub pkgname: String,
    pub pkgver: String,
    pub arch: String,
    pub pkgdesc: Option<String>,
    pub url: Option<String>,
    pub license: Option<String>,
    pub origin: Option<String>,
    pub maintainer: Option<String>,
    pub builddate: Option<u64>,
    pub commit: Option<String>,
    pub provider_priority: Option<u64>,
    /// Installed size.
    pub size: u64,
    pub depends: Vec<String>,
    pub provides: Vec<String>,
    pub install_if: Vec<String>,
    pub datahash: Option<String>,
    pub packager: Option<String>,
    pub replaces: Vec<String>,
    pub triggers: Vec<String>,
}

impl PkgInfo {
    /// Parses and validates (pkgname/pkgver/arch present and valid, numbers numeric, no NUL, ...).
    pub fn parse(text: &[u8]) -> ApkResult<PkgInfo> {
        let _ = text;
        todo!()
    }
}
