//! `.PKGINFO` text: never a panic, and whatever is accepted is safe to put in a path, an
//! index stanza and a URL.
#![no_main]

use alpine_registry::apk::names::{is_valid_arch, is_valid_pkgname};
use alpine_registry::apk::pkginfo::PkgInfo;
use alpine_registry::apk::{version, ApkError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match PkgInfo::parse(data) {
        Ok(info) => {
            assert!(is_valid_pkgname(&info.pkgname), "{:?}", info.pkgname);
            assert!(version::is_valid(&info.pkgver), "{:?}", info.pkgver);
            assert!(is_valid_arch(&info.arch), "{:?}", info.arch);
            // Every value that reaches an index stanza stays on its line.
            let texts = [
                &info.pkgdesc,
                &info.url,
                &info.license,
                &info.origin,
                &info.maintainer,
                &info.commit,
            ];
            for text in texts.into_iter().flatten() {
                assert!(!text.contains('\n') && !text.contains('\0'), "{text:?}");
            }
            let lists = [&info.depends, &info.provides, &info.install_if];
            for token in lists.into_iter().flatten() {
                assert!(!token.is_empty());
                assert!(!token.contains(char::is_whitespace), "{token:?}");
            }
            if let Some(hash) = &info.datahash {
                assert_eq!(hash.len(), 64);
                assert!(hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            }
        }
        Err(ApkError::Malformed(m)) => assert!(!m.is_empty()),
        Err(other) => panic!("only Malformed is expected from text: {other:?}"),
    }
});
