//! Parsing of a v2 `.apk` package: gzip member boundaries, the signature, control and
//! data members, the package identity (`C:`) and its index stanza.
//!
//! Every member is inflated to its very end through a reader that hashes exactly the
//! compressed bytes the decoder consumed, so member boundaries never depend on where a
//! tar reader happens to stop. Each member's tar is read straight from its decoder and
//! only what the registry needs is kept (`.PKGINFO`, the signature names): install
//! scripts and data files are read through. Sizes are limited while inflating, with
//! errors, never truncation.

use super::datatree::{self, DataTree};
use super::index::render_stanza;
use super::member::{check_gzip_magic, plain_file, read_entry, read_member};
use super::pkginfo::PkgInfo;
use super::stream::Tap;
use super::{ApkError, ApkResult};
use base64::Engine as _;
use sha1::{Digest, Sha1};
use sha2::Sha256;
use std::io::Read;

/// Limits applied while parsing an untrusted package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Decompressed size of the control member (and of the signature member).
    pub max_control_bytes: u64,
    /// Size of `.PKGINFO`.
    pub max_pkginfo_bytes: u64,
    /// Decompressed size of the data member.
    pub max_data_bytes: u64,
    /// Size of the package's APKINDEX stanza, which every index of its repository
    /// carries: real ones are a few KiB.
    pub max_stanza_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_control_bytes: 16 << 20,
            max_pkginfo_bytes: 1 << 20,
            max_data_bytes: 64 << 30,
            max_stanza_bytes: 64 << 10,
        }
    }
}

/// What the registry needs to know of an uploaded package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedPackage {
    pub info: PkgInfo,
    /// The `C:` identity: `Q1` + base64(SHA-1) of the compressed control member (control
    /// and data members when `.PKGINFO` has no `datahash`).
    pub checksum: String,
    /// Size of the whole file in bytes (`S:`).
    pub size: u64,
    /// Entry names of the signature member (`.SIGN.RSA.<keyname>`...), empty if unsigned.
    pub signature_names: Vec<String>,
    /// Lowercase hex SHA-256 of the compressed data member.
    pub data_sha256: String,
    /// The package's APKINDEX stanza exactly as `apk index` writes it, at most
    /// `max_stanza_bytes` long.
    pub stanza: String,
}

fn malformed(msg: impl Into<String>) -> ApkError {
    ApkError::Malformed(msg.into())
}

/// The two members before the data member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Signature,
    Control,
}

impl Member {
    fn label(self) -> &'static str {
        match self {
            Member::Signature => "signature member",
            Member::Control => "control member",
        }
    }

    fn name_ok(self, name: &str) -> bool {
        match self {
            Member::Signature => name.starts_with(".SIGN."),
            // apk treats the first name without a leading dot as the start of the data.
            Member::Control => name.starts_with('.') && name != "." && name != "..",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Member::Signature => "a .SIGN.* signature",
            Member::Control => "a control file (.PKGINFO or an install script)",
        }
    }
}

/// What the registry keeps of a signature or control member.
#[derive(Default)]
struct MemberScan {
    /// Which member it is: given, or told by its first entry.
    member: Option<Member>,
    signature_names: Vec<String>,
    pkginfo: Option<Vec<u8>>,
}

/// Reads a signature or control member (which one, `member` says, or else its first
/// entry), keeping only the signature names and `.PKGINFO`.
fn read_control_member<R: Read>(
    tap: &mut Tap<R>,
    member: Option<Member>,
    label: &str,
    limits: &Limits,
) -> ApkResult<MemberScan> {
    let mut scan = MemberScan {
        member,
        ..MemberScan::default()
    };
    read_member(
        tap,
        label,
        "decompressed control member",
        limits.max_control_bytes,
        |entry, data| {
            let member = *scan
                .member
                .get_or_insert(if entry.path.starts_with(b".SIGN.") {
                    Member::Signature
                } else {
                    Member::Control
                });
            let name = plain_file(
                entry,
                member.label(),
                |n| member.name_ok(n),
                member.expected(),
            )?;
            match member {
                Member::Signature => scan.signature_names.push(name),
                Member::Control if name == ".PKGINFO" => {
                    if scan.pkginfo.is_some() {
                        return Err(malformed("the control member has more than one .PKGINFO"));
                    }
                    if entry.size > limits.max_pkginfo_bytes {
                        return Err(ApkError::TooLarge {
                            what: ".PKGINFO",
                            limit: limits.max_pkginfo_bytes,
                        });
                    }
                    scan.pkginfo = Some(read_entry(entry, data)?);
                }
                // Install scripts are read through: apk takes them from this member,
                // but the registry has no use for them.
                Member::Control => {}
            }
            Ok(())
        },
    )?;
    Ok(scan)
}

fn finish_sha1(h: Option<Sha1>) -> String {
    let digest = h.unwrap_or_default().finalize();
    format!(
        "Q1{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// Parses and checks a whole `.apk` file.
pub fn parse_package<R: Read>(reader: R, limits: &Limits) -> ApkResult<ParsedPackage> {
    let mut tap = Tap::new(reader);
    check_gzip_magic(&mut tap)?;

    tap.sha1 = Some(Sha1::new());
    let first = read_control_member(
        &mut tap,
        None,
        "first gzip member (signature or control)",
        limits,
    )?;
    let (signature_names, control) = if first.member == Some(Member::Signature) {
        // The identity starts with the control member, not the signature.
        tap.sha1 = Some(Sha1::new());
        if tap.at_eof().map_err(ApkError::Io)? {
            return Err(malformed(
                "the package has a signature but no control member",
            ));
        }
        let control =
            read_control_member(&mut tap, Some(Member::Control), "control member", limits)?;
        (first.signature_names, control)
    } else {
        (Vec::new(), first)
    };
    let pkginfo = control
        .pkginfo
        .ok_or_else(|| malformed("the control member has no .PKGINFO"))?;
    let info = PkgInfo::parse(&pkginfo)?;
    let control_identity = match info.datahash {
        Some(_) => Some(finish_sha1(tap.sha1.take())),
        None => None,
    };

    if tap.at_eof().map_err(ApkError::Io)? {
        return Err(malformed("the package has no data member"));
    }
    tap.sha256 = Some(Sha256::new());
    read_data_member(&mut tap, limits)?;
    let data_sha256 = hex::encode(tap.sha256.take().unwrap_or_default().finalize());
    let checksum = match control_identity {
        Some(c) => c,
        // Without a datahash apk's identity covers control and data members.
        None => finish_sha1(tap.sha1.take()),
    };
    if let Some(declared) = &info.datahash {
        if *declared != data_sha256 {
            return Err(malformed(format!(
                "the data member's SHA-256 is {data_sha256} but .PKGINFO declares \
                 datahash {declared}"
            )));
        }
    }
    if !tap.at_eof().map_err(ApkError::Io)? {
        return Err(malformed("unexpected bytes after the data member"));
    }
    let size = tap.consumed;
    // Every index of the repository carries this text, and every publish rewrites it.
    let stanza = render_stanza(&info, &checksum, size);
    if stanza.len() as u64 > limits.max_stanza_bytes {
        return Err(ApkError::TooLarge {
            what: "the package's APKINDEX stanza (config limits.max_stanza_bytes)",
            limit: limits.max_stanza_bytes,
        });
    }
    Ok(ParsedPackage {
        info,
        checksum,
        size,
        signature_names,
        data_sha256,
        stanza,
    })
}

fn read_data_member<R: Read>(tap: &mut Tap<R>, limits: &Limits) -> ApkResult<()> {
    let mut tree = DataTree::new(datatree::MAX_ENTRIES);
    read_member(
        tap,
        "data member",
        "decompressed data member",
        limits.max_data_bytes,
        |entry, _| tree.add(entry),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apk::index::{render_stanza, rewrite_arch};
    use std::io;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    /// (file, member sizes, signature entry) from EXPECTED.md's table.
    const REAL_PACKAGES: &[(&str, [u64; 3], &str)] = &[
        (
            "forgejo-noarch-test-1.0.0-r0.apk",
            [635, 491, 382],
            ".SIGN.RSA.xinayder.rsa.pub",
        ),
        (
            "forgejo-noarch-test-openrc-1.0.0-r0.apk",
            [636, 515, 418],
            ".SIGN.RSA.xinayder.rsa.pub",
        ),
        (
            "gitea-test-1.4.1-r3.apk",
            [650, 429, 274],
            ".SIGN.RSA.kn4ck3r@gitea-641ae359.rsa.pub",
        ),
    ];

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture present")
    }

    /// The stanzas of EXPECTED.md's code block, in file-name order.
    fn expected_stanzas() -> Vec<String> {
        let md = String::from_utf8(fixture("EXPECTED.md")).expect("utf-8");
        let block = md
            .split("```\n")
            .nth(1)
            .expect("EXPECTED.md has a code block");
        block.split_inclusive("\n\n").map(str::to_string).collect()
    }

    #[test]
    fn real_packages_give_exactly_the_stanzas_apk_index_writes() {
        let expected = expected_stanzas();
        assert_eq!(expected.len(), 3);
        for ((file, members, sig), want) in REAL_PACKAGES.iter().zip(&expected) {
            let bytes = fixture(file);
            let parsed = parse_package(&bytes[..], &Limits::default()).expect(file);
            assert_eq!(parsed.size, members.iter().sum::<u64>(), "{file}");
            assert_eq!(parsed.size, bytes.len() as u64, "{file}");
            assert_eq!(parsed.signature_names, [sig.to_string()], "{file}");
            assert_eq!(&parsed.stanza, want, "{file}");
            let stanza = render_stanza(&parsed.info, &parsed.checksum, parsed.size);
            assert_eq!(stanza, parsed.stanza, "{file}");
        }
    }

    #[test]
    fn real_noarch_packages_rewrite_to_the_index_arch() {
        let expected = expected_stanzas();
        for ((file, _, _), want) in REAL_PACKAGES.iter().zip(&expected) {
            let bytes = fixture(file);
            let parsed = parse_package(&bytes[..], &Limits::default()).expect(file);
            let rewritten = rewrite_arch(&parsed.stanza, "x86_64");
            assert_eq!(
                rewritten,
                want.replace("A:noarch\n", "A:x86_64\n"),
                "{file}"
            );
            assert!(rewritten.contains("\nA:x86_64\n"));
        }
    }

    /// Compressed sizes of the gzip members of `data`.
    fn member_sizes(data: &[u8]) -> Vec<u64> {
        let mut tap = Tap::new(data);
        let mut sizes = Vec::new();
        while !tap.at_eof().expect("memory") {
            let before = tap.consumed;
            io::copy(
                &mut flate2::bufread::GzDecoder::new(&mut tap),
                &mut io::sink(),
            )
            .expect("valid gzip");
            sizes.push(tap.consumed - before);
        }
        sizes
    }

    #[test]
    fn real_packages_have_the_member_sizes_apk_sees() {
        for (file, members, _) in REAL_PACKAGES {
            assert_eq!(member_sizes(&fixture(file)), members, "{file}");
        }
    }

    use crate::apk::builder::{pax_record, push_entry, push_link, PackageBuilder};
    use crate::apk::index::gzip;
    use crate::apk::sign::{verify, SignatureAlgorithm, SigningKey};
    use std::sync::OnceLock;

    fn test_key() -> &'static SigningKey {
        static KEY: OnceLock<SigningKey> = OnceLock::new();
        KEY.get_or_init(|| {
            let pem = String::from_utf8(fixture("test-signing-key.pem")).expect("utf-8");
            SigningKey::from_pkcs8_pem("test", &pem).expect("committed test key loads")
        })
    }

    fn parse(bytes: &[u8]) -> ApkResult<ParsedPackage> {
        parse_package(bytes, &Limits::default())
    }

    fn malformed_message(r: ApkResult<ParsedPackage>) -> String {
        match r {
            Err(ApkError::Malformed(m)) => m,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    fn q1(bytes: &[u8]) -> String {
        finish_sha1(Some(Sha1::new_with_prefix(bytes)))
    }

    fn sample() -> PackageBuilder {
        PackageBuilder::new("hello", "2.12.1-r0", "x86_64")
            .field("depend", "so:libc.musl-x86_64.so.1")
            .file("usr/bin/hello", b"#!/bin/sh\necho hello\n")
            .file("usr/share/doc/hello/README", &[b'x'; 3000])
    }

    /// A package whose control tar is given verbatim (the data member is a valid one).
    fn with_control_tar(control_tar: &[u8]) -> Vec<u8> {
        let mut out = gzip(control_tar).unwrap();
        out.extend_from_slice(&sample().data_member());
        out
    }

    fn minimal_pkginfo() -> Vec<u8> {
        b"pkgname = a\npkgver = 1.0-r0\narch = x86_64\nsize = 1\n".to_vec()
    }

    #[test]
    fn unsigned_builder_package_parses_back_with_control_identity() {
        let b = sample();
        let data = b.data_member();
        let control = b.control_member(&data);
        let bytes = b.build();
        let p = parse(&bytes).expect("valid package");
        assert_eq!(p.info.pkgname, "hello");
        assert_eq!(p.info.depends, ["so:libc.musl-x86_64.so.1"]);
        assert_eq!(p.checksum, q1(&control));
        assert_eq!(p.data_sha256, hex::encode(Sha256::digest(&data)));
        assert_eq!(p.info.datahash.as_deref(), Some(p.data_sha256.as_str()));
        assert_eq!(p.size, bytes.len() as u64);
        assert!(p.signature_names.is_empty());
    }

    #[test]
    fn package_without_datahash_has_identity_over_control_and_data() {
        let b = sample().with_datahash(false);
        let data = b.data_member();
        let control = b.control_member(&data);
        let p = parse(&b.build()).expect("valid package");
        assert_eq!(p.info.datahash, None);
        assert_eq!(p.checksum, q1(&[control, data].concat()));
    }

    #[test]
    fn signed_builder_package_parses_back_and_its_signature_verifies() {
        let key = test_key();
        for datahash in [true, false] {
            let b = sample().with_datahash(datahash).signed_with(key);
            let data = b.data_member();
            let control = b.control_member(&data);
            let bytes = b.build();
            let p = parse(&bytes).expect("valid package");
            let name = format!(".SIGN.RSA256.{}", key.key_name());
            assert_eq!(p.signature_names, std::slice::from_ref(&name));
            let identity_over = if datahash {
                control.clone()
            } else {
                [control.clone(), data].concat()
            };
            assert_eq!(p.checksum, q1(&identity_over));
            let (sigs, rest) = crate::apk::sign::split_signed(&bytes).expect("signed");
            assert_eq!(sigs.len(), 1);
            assert_eq!(sigs[0].0, name);
            assert!(rest.starts_with(&control));
            verify(
                &key.public_key_pem().unwrap(),
                SignatureAlgorithm::Rsa256,
                &control,
                &sigs[0].1,
            )
            .expect("signature over the control member verifies");
        }
    }

    #[test]
    fn truncated_package_is_rejected_at_every_offset() {
        let signed = sample().signed_with(test_key()).build();
        let real = fixture("gitea-test-1.4.1-r3.apk");
        for bytes in [signed, real] {
            for cut in 0..bytes.len() {
                let r = parse(&bytes[..cut]);
                assert!(
                    matches!(r, Err(ApkError::Malformed(_))),
                    "cut at {cut}: {r:?}"
                );
            }
        }
    }

    #[test]
    fn truncated_at_member_boundaries_names_what_is_missing() {
        let real = fixture("gitea-test-1.4.1-r3.apk");
        assert!(malformed_message(parse(&real[..650])).contains("no control member"));
        assert!(malformed_message(parse(&real[..650 + 429])).contains("no data member"));
        assert!(malformed_message(parse(&real[..650 + 100])).contains("truncated"));
        assert!(malformed_message(parse(&real[..real.len() - 4])).contains("truncated"));
    }

    #[test]
    fn gzip_bomb_in_control_is_rejected() {
        let mut tar = Vec::new();
        push_entry(&mut tar, b".PKGINFO", b'0', 0o644, &minimal_pkginfo());
        push_entry(&mut tar, b".post-install", b'0', 0o755, &vec![0u8; 4 << 20]);
        let limits = Limits {
            max_control_bytes: 1 << 20,
            ..Limits::default()
        };
        let r = parse_package(&with_control_tar(&tar)[..], &limits);
        assert!(
            matches!(r, Err(ApkError::TooLarge { what: "decompressed control member", limit }) if limit == 1 << 20),
            "{r:?}"
        );
    }

    #[test]
    fn gzip_bomb_in_data_is_rejected() {
        let bytes = sample().file("zeros", &vec![0u8; 2 << 20]).build();
        let limits = Limits {
            max_data_bytes: 1 << 20,
            ..Limits::default()
        };
        let r = parse_package(&bytes[..], &limits);
        assert!(
            matches!(
                r,
                Err(ApkError::TooLarge {
                    what: "decompressed data member",
                    ..
                })
            ),
            "{r:?}"
        );
    }

    #[test]
    fn pkginfo_over_limit_is_rejected() {
        let big = "x".repeat(8192);
        let bytes = sample().field("pkgdesc", &big).build();
        let limits = Limits {
            max_pkginfo_bytes: 4096,
            ..Limits::default()
        };
        let r = parse_package(&bytes[..], &limits);
        assert!(
            matches!(
                r,
                Err(ApkError::TooLarge {
                    what: ".PKGINFO",
                    limit: 4096
                })
            ),
            "{r:?}"
        );
    }

    #[test]
    fn missing_pkgname_pkgver_or_arch_is_rejected() {
        for key in ["pkgname", "pkgver", "arch"] {
            let m = malformed_message(parse(&sample().without_field(key).build()));
            assert_eq!(m, format!(".PKGINFO has no {key}"));
        }
    }

    #[test]
    fn invalid_version_is_rejected() {
        let m = malformed_message(parse(&sample().field("pkgver", "1.0-beta").build()));
        assert!(m.contains("pkgver"), "{m}");
    }

    #[test]
    fn name_with_slash_dotdot_or_nul_is_rejected() {
        for name in ["a/b", "../../etc/cron.d/x", "a..b", "a\0b"] {
            let m = malformed_message(parse(&sample().field("pkgname", name).build()));
            assert!(m.contains("pkgname") || m.contains("NUL"), "{m}");
        }
    }

    #[test]
    fn control_tar_with_end_blocks_parses_with_the_right_identity() {
        let mut tar = Vec::new();
        push_entry(&mut tar, b".PKGINFO", b'0', 0o644, &minimal_pkginfo());
        tar.extend_from_slice(&[0u8; 10240 - 512 * 2]);
        let bytes = with_control_tar(&tar);
        let p = parse(&bytes).expect("control with end blocks is accepted");
        let data = sample().data_member();
        let control_len = bytes.len() - data.len();
        // No datahash in this .PKGINFO: the identity spans control and data.
        assert_eq!(p.checksum, q1(&bytes));
        assert_eq!(
            member_sizes(&bytes),
            [control_len as u64, data.len() as u64]
        );
    }

    #[test]
    fn control_symlink_is_rejected() {
        let mut tar = Vec::new();
        push_entry(&mut tar, b".PKGINFO", b'0', 0o644, &minimal_pkginfo());
        push_entry(&mut tar, b".post-install", b'2', 0o777, &[]);
        let m = malformed_message(parse(&with_control_tar(&tar)));
        assert!(m.contains("symbolic link"), "{m}");
    }

    #[test]
    fn control_symlink_named_pkginfo_is_rejected() {
        let mut tar = Vec::new();
        push_entry(&mut tar, b".PKGINFO", b'2', 0o777, &[]);
        assert!(malformed_message(parse(&with_control_tar(&tar))).contains("symbolic link"));
    }

    #[test]
    fn control_hard_link_and_directory_are_rejected() {
        for (typeflag, word) in [(b'1', "hard link"), (b'5', "directory")] {
            let mut tar = Vec::new();
            push_entry(&mut tar, b".PKGINFO", b'0', 0o644, &minimal_pkginfo());
            push_entry(&mut tar, b".x", typeflag, 0o755, &[]);
            assert!(malformed_message(parse(&with_control_tar(&tar))).contains(word));
        }
    }

    #[test]
    fn control_absolute_and_dotdot_paths_are_rejected() {
        for (path, word) in [
            (&b"/.PKGINFO"[..], "absolute"),
            (b"../.PKGINFO", "leaves"),
            (b"x/.PKGINFO", "not a control file"),
            (b"usr/bin/x", "not a control file"),
        ] {
            let mut tar = Vec::new();
            push_entry(&mut tar, b".PKGINFO", b'0', 0o644, &minimal_pkginfo());
            push_entry(&mut tar, path, b'0', 0o644, b"x");
            let m = malformed_message(parse(&with_control_tar(&tar)));
            assert!(m.contains(word), "{m}");
        }
    }

    #[test]
    fn control_pax_path_cannot_smuggle_a_traversal() {
        let mut tar = Vec::new();
        push_entry(&mut tar, b".PKGINFO", b'0', 0o644, &minimal_pkginfo());
        push_entry(
            &mut tar,
            b"PaxHeaders/x",
            b'x',
            0o644,
            &pax_record("path", b"../../x"),
        );
        push_entry(&mut tar, b".harmless", b'0', 0o644, b"x");
        assert!(malformed_message(parse(&with_control_tar(&tar))).contains("leaves"));
    }

    #[test]
    fn duplicate_pkginfo_is_rejected() {
        let mut tar = Vec::new();
        push_entry(&mut tar, b".PKGINFO", b'0', 0o644, &minimal_pkginfo());
        push_entry(&mut tar, b".PKGINFO", b'0', 0o644, &minimal_pkginfo());
        let m = malformed_message(parse(&with_control_tar(&tar)));
        assert!(m.contains("more than one .PKGINFO"), "{m}");
    }

    #[test]
    fn control_without_pkginfo_is_rejected() {
        let mut tar = Vec::new();
        push_entry(&mut tar, b".post-install", b'0', 0o755, b"#!/bin/sh\n");
        assert!(malformed_message(parse(&with_control_tar(&tar))).contains("no .PKGINFO"));
    }

    #[test]
    fn datahash_mismatch_is_rejected_naming_both() {
        let declared = "ab".repeat(32);
        let b = sample().with_datahash(false).field("datahash", &declared);
        let actual = hex::encode(Sha256::digest(b.data_member()));
        let m = malformed_message(parse(&b.build()));
        assert!(m.contains(&declared) && m.contains(&actual), "{m}");
    }

    #[test]
    fn missing_data_member_is_rejected() {
        let b = sample();
        let control = b.control_member(&b.data_member());
        assert!(malformed_message(parse(&control)).contains("no data member"));
        let signed = sample().signed_with(test_key()).build();
        let sig_len = member_sizes(&signed)[0] as usize;
        let without_data = &signed[..sig_len + control.len()];
        assert!(malformed_message(parse(without_data)).contains("no data member"));
    }

    #[test]
    fn trailing_garbage_is_rejected() {
        let mut bytes = sample().build();
        bytes.extend_from_slice(b"garbage");
        assert!(malformed_message(parse(&bytes)).contains("after the data member"));
    }

    #[test]
    fn second_data_member_is_rejected() {
        let mut bytes = sample().build();
        bytes.extend_from_slice(&gzip(&[0u8; 1024]).unwrap());
        assert!(malformed_message(parse(&bytes)).contains("after the data member"));
    }

    #[test]
    fn adb_magic_is_unsupported_v3() {
        for magic in [&b"ADBd\x01\x02\x03"[..], b"ADB.pckg", b"ADBc"] {
            assert!(matches!(parse(magic), Err(ApkError::UnsupportedV3)));
        }
    }

    #[test]
    fn non_gzip_input_is_rejected() {
        for bytes in [&b""[..], b"PK\x03\x04", b"\x1f", b"hello world"] {
            let _ = malformed_message(parse(bytes));
        }
    }

    #[test]
    fn data_entry_escaping_the_root_is_rejected() {
        for path in ["../etc/passwd", "/etc/passwd", "usr/../../x"] {
            let m = malformed_message(parse(&sample().file(path, b"x").build()));
            assert!(m.contains("leaves the package root"), "{m}");
        }
    }

    /// A package with a verbatim data tar (the `.PKGINFO` has no datahash).
    fn with_data_tar(data_tar: &[u8]) -> Vec<u8> {
        let mut control = Vec::new();
        push_entry(&mut control, b".PKGINFO", b'0', 0o644, &minimal_pkginfo());
        let mut out = gzip(&control).unwrap();
        out.extend_from_slice(&gzip(data_tar).unwrap());
        out
    }

    /// A tar entry whose header is changed by `edit` (checksum recomputed).
    fn edited_entry(name: &[u8], data: &[u8], edit: impl FnOnce(&mut [u8; 512])) -> Vec<u8> {
        let mut out = Vec::new();
        push_entry(&mut out, name, b'0', 0o644, data);
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(&out[..512]);
        edit(h.as_mut_bytes());
        h.set_cksum();
        out[..512].copy_from_slice(h.as_bytes());
        out
    }

    #[test]
    fn data_entry_hidden_behind_a_pax_size_record_is_rejected() {
        let mut hidden = Vec::new();
        push_entry(
            &mut hidden,
            b"../../etc/cron.d/evil",
            b'0',
            0o644,
            b"* * * * * root x\n",
        );
        let mut tar = Vec::new();
        let size = hidden.len().to_string();
        push_entry(
            &mut tar,
            b"PaxHeaders/x",
            b'x',
            0o644,
            &pax_record("size", size.as_bytes()),
        );
        push_entry(&mut tar, b"harmless", b'0', 0o644, b"");
        tar.extend_from_slice(&hidden);
        tar.extend_from_slice(&[0u8; 1024]);
        let m = malformed_message(parse(&with_data_tar(&tar)));
        assert!(m.contains("PAX size"), "{m}");
    }

    #[test]
    fn traversal_hidden_in_a_gnu_header_prefix_is_rejected() {
        let mut tar = edited_entry(b"evil", b"x", |h| {
            h[257..265].copy_from_slice(b"ustar  \0");
            h[345..354].copy_from_slice(b"../../etc");
        });
        tar.extend_from_slice(&[0u8; 1024]);
        let m = malformed_message(parse(&with_data_tar(&tar)));
        assert!(
            m.contains("leaves the package root") && m.contains("../../etc/evil"),
            "{m}"
        );
    }

    #[test]
    fn data_entry_hidden_after_a_zero_block_is_rejected() {
        let mut tar = Vec::new();
        push_entry(&mut tar, b"usr/", b'5', 0o755, b"");
        tar.extend_from_slice(&[0u8; 512]);
        push_entry(&mut tar, b"../../etc/cron.d/evil", b'0', 0o644, b"x");
        tar.extend_from_slice(&[0u8; 1024]);
        let m = malformed_message(parse(&with_data_tar(&tar)));
        assert!(m.contains("after its end-of-archive block"), "{m}");
    }

    #[test]
    fn install_script_hidden_after_a_zero_block_is_rejected() {
        let mut tar = Vec::new();
        push_entry(&mut tar, b".PKGINFO", b'0', 0o644, &minimal_pkginfo());
        tar.extend_from_slice(&[0u8; 512]);
        push_entry(
            &mut tar,
            b".post-install",
            b'0',
            0o755,
            b"#!/bin/sh\nrm -rf /\n",
        );
        let m = malformed_message(parse(&with_control_tar(&tar)));
        assert!(m.contains("after its end-of-archive block"), "{m}");
    }

    #[test]
    fn entry_with_an_empty_name_is_rejected() {
        // apk reads this header as an end block and the entry's data as more headers.
        let mut hidden = Vec::new();
        push_entry(&mut hidden, b"../../etc/evil", b'0', 0o644, b"x");
        let mut tar = edited_entry(b"x", &hidden, |h| {
            h[0] = 0;
            h[345..348].copy_from_slice(b"usr");
        });
        tar.extend_from_slice(&[0u8; 1024]);
        let m = malformed_message(parse(&with_data_tar(&tar)));
        assert!(m.contains("empty name"), "{m}");
    }

    /// `tar` followed by the two end-of-archive blocks.
    fn ended(mut tar: Vec<u8>) -> Vec<u8> {
        tar.extend_from_slice(&[0u8; 1024]);
        tar
    }

    fn dir(tar: &mut Vec<u8>, name: &str) {
        push_entry(tar, name.as_bytes(), b'5', 0o755, &[]);
    }

    fn reg(tar: &mut Vec<u8>, name: &str) {
        push_entry(tar, name.as_bytes(), b'0', 0o644, b"contents\n");
    }

    fn pax(tar: &mut Vec<u8>, key: &str, value: &[u8]) {
        push_entry(tar, b"PaxHeaders/x", b'x', 0o644, &pax_record(key, value));
    }

    #[test]
    fn data_entry_through_an_earlier_symlink_is_rejected() {
        for target in [&b"/etc"[..], b"../../etc", b"lib64", b"."] {
            let mut tar = Vec::new();
            dir(&mut tar, "usr/");
            push_link(&mut tar, b"usr/lib", b'2', target);
            reg(&mut tar, "usr/lib/cron.d/evil");
            let m = malformed_message(parse(&with_data_tar(&ended(tar))));
            assert!(
                m.contains("\"usr/lib/cron.d/evil\"") && m.contains("symbolic link \"usr/lib\""),
                "{m}"
            );
        }
    }

    #[test]
    fn data_entry_through_a_symlink_spelt_differently_is_rejected() {
        for (link, through) in [
            ("usr/lib/", "usr/lib/evil"),
            ("usr/lib", "usr//lib/evil"),
            ("usr/lib", "usr/./lib/evil"),
            ("usr/lib", "usr/lib/cron.d/"),
        ] {
            let mut tar = Vec::new();
            dir(&mut tar, "usr/");
            push_link(&mut tar, link.as_bytes(), b'2', b"/etc");
            if through.ends_with('/') {
                dir(&mut tar, through);
            } else {
                reg(&mut tar, through);
            }
            let m = malformed_message(parse(&with_data_tar(&ended(tar))));
            assert!(m.contains(&format!("{through:?}")), "{link} {through}: {m}");
        }
    }

    #[test]
    fn hard_link_to_anything_but_an_earlier_regular_file_is_rejected() {
        for target in [
            "usr/bin/missing",
            "usr/bin/later",
            "usr/bin",
            "usr/bin/sym",
            "usr/bin/hard",
            "/usr/bin/real",
            "usr/../usr/bin/real",
            "../real",
            "",
        ] {
            let mut tar = Vec::new();
            dir(&mut tar, "usr/");
            dir(&mut tar, "usr/bin/");
            reg(&mut tar, "usr/bin/real");
            push_link(&mut tar, b"usr/bin/sym", b'2', b"real");
            push_link(&mut tar, b"usr/bin/hard", b'1', b"usr/bin/real");
            push_link(&mut tar, b"usr/bin/link", b'1', target.as_bytes());
            reg(&mut tar, "usr/bin/later");
            let m = malformed_message(parse(&with_data_tar(&ended(tar))));
            assert!(
                m.contains("\"usr/bin/link\"") && m.contains("hard link"),
                "{target}: {m}"
            );
        }
    }

    #[test]
    fn hard_link_target_is_read_from_pax_linkpath_like_apk_does() {
        // The header names a real file, the PAX record (which apk uses) does not.
        let mut tar = Vec::new();
        dir(&mut tar, "usr/");
        reg(&mut tar, "usr/real");
        pax(&mut tar, "linkpath", b"usr/missing");
        push_link(&mut tar, b"usr/link", b'1', b"usr/real");
        let m = malformed_message(parse(&with_data_tar(&ended(tar))));
        assert!(
            m.contains("\"usr/link\"") && m.contains("usr/missing"),
            "{m}"
        );
        // And the other way round: apk links to the PAX target, which exists.
        let mut tar = Vec::new();
        dir(&mut tar, "usr/");
        reg(&mut tar, "usr/real");
        pax(&mut tar, "linkpath", b"usr/real");
        push_link(&mut tar, b"usr/link", b'1', b"usr/missing");
        parse(&with_data_tar(&ended(tar))).expect("PAX linkpath names an earlier file");
    }

    #[test]
    fn link_target_with_a_nul_byte_is_rejected() {
        for typeflag in [b'1', b'2'] {
            let mut tar = Vec::new();
            dir(&mut tar, "usr/");
            reg(&mut tar, "usr/real");
            pax(&mut tar, "linkpath", b"usr/real\0/../../etc/shadow");
            push_link(&mut tar, b"usr/link", typeflag, b"usr/real");
            let m = malformed_message(parse(&with_data_tar(&ended(tar))));
            assert!(m.contains("\"usr/link\"") && m.contains("NUL"), "{m}");
        }
    }

    #[test]
    fn pax_linkpath_on_a_regular_file_is_rejected() {
        // apk makes a regular file with a link target a hard link.
        let mut tar = Vec::new();
        dir(&mut tar, "usr/");
        pax(&mut tar, "linkpath", b"/etc/shadow");
        reg(&mut tar, "usr/shadow");
        let m = malformed_message(parse(&with_data_tar(&ended(tar))));
        assert!(
            m.contains("\"usr/shadow\"") && m.contains("linkpath"),
            "{m}"
        );
    }

    #[test]
    fn gnu_long_link_name_is_rejected() {
        // apk ignores `K` headers and links to the header's (cut) link name instead.
        let mut tar = Vec::new();
        dir(&mut tar, "usr/");
        push_entry(
            &mut tar,
            b"././@LongLink",
            b'K',
            0o644,
            b"usr/share/a/very/long/target\0",
        );
        push_link(&mut tar, b"usr/link", b'2', b"/etc/shadow");
        let m = malformed_message(parse(&with_data_tar(&ended(tar))));
        assert!(m.contains("\"usr/link\"") && m.contains("'K'"), "{m}");
    }

    #[test]
    fn duplicate_data_entries_are_rejected() {
        for (first, second) in [
            ("usr/bin/x", "usr/bin/x"),
            ("usr/bin/", "usr/bin"),
            ("usr/bin/", "usr/bin/"),
            ("usr/bin/x", "usr//bin/x"),
            ("usr/bin/x", "usr/./bin/x"),
            ("usr/bin/x", "./usr/bin/x"),
            ("usr/bin/x", "usr/bin/x/"),
        ] {
            let mut tar = Vec::new();
            dir(&mut tar, "usr/");
            if first != "usr/bin/" {
                dir(&mut tar, "usr/bin/");
            }
            for name in [first, second] {
                if name.starts_with("usr/bin") && name.len() <= "usr/bin/".len() {
                    dir(&mut tar, name);
                } else {
                    reg(&mut tar, name);
                }
            }
            let m = malformed_message(parse(&with_data_tar(&ended(tar))));
            assert!(
                m.contains(&format!("{second:?}")) && m.contains("duplicate"),
                "{first} {second}: {m}"
            );
        }
    }

    #[test]
    fn control_file_names_at_the_top_of_the_data_member_are_rejected() {
        for name in [
            ".PKGINFO",
            ".pre-install",
            ".post-install",
            ".pre-upgrade",
            ".post-upgrade",
            ".pre-deinstall",
            ".post-deinstall",
            ".trigger",
            ".INSTALL",
            ".SIGN.RSA.packager.rsa.pub",
            ".SIGN.RSA256.x",
            "./.post-install",
        ] {
            let mut tar = Vec::new();
            dir(&mut tar, "usr/");
            push_entry(
                &mut tar,
                name.as_bytes(),
                b'0',
                0o755,
                b"#!/bin/sh\nrm -rf /\n",
            );
            let m = malformed_message(parse(&with_data_tar(&ended(tar))));
            assert!(
                m.contains(&format!("{name:?}")) && m.contains("control member"),
                "{name}: {m}"
            );
        }
    }

    #[test]
    fn other_dot_names_in_the_data_member_are_accepted() {
        // abuild puts `.dummy` into the data member of packages without files; apk skips
        // top-level dot names there. Control file names below the top are plain files.
        for name in [".dummy", "usr/.PKGINFO", ".post-install.d", ".SIGN"] {
            let mut tar = Vec::new();
            dir(&mut tar, "usr/");
            reg(&mut tar, name);
            parse(&with_data_tar(&ended(tar))).expect(name);
        }
    }

    #[test]
    fn abuild_like_tree_with_links_and_directories_is_accepted() {
        let long_target = format!("/usr/share/{}/target", "d".repeat(120));
        let mut tar = Vec::new();
        dir(&mut tar, "usr/");
        dir(&mut tar, "usr/bin/");
        reg(&mut tar, "usr/bin/busybox");
        push_link(&mut tar, b"usr/bin/sh", b'1', b"usr/bin/busybox");
        push_link(&mut tar, b"usr/bin/ls", b'2', b"busybox");
        dir(&mut tar, "usr/lib/");
        reg(&mut tar, "usr/lib/libx.so.1.2");
        push_link(&mut tar, b"usr/lib/libx.so.1", b'2', b"libx.so.1.2");
        push_link(&mut tar, b"lib", b'2', b"usr/lib");
        push_link(&mut tar, b"bin", b'2', b"/usr/bin");
        pax(&mut tar, "linkpath", long_target.as_bytes());
        push_link(&mut tar, b"usr/lib/long", b'2', b"cut");
        dir(&mut tar, "usr/share/");
        reg(&mut tar, ".dummy");
        parse(&with_data_tar(&ended(tar))).expect("a valid tree");
    }

    #[test]
    fn stanza_over_limit_is_rejected_naming_the_config_key() {
        let bytes = sample().field("pkgdesc", &"x".repeat(100 << 10)).build();
        let r = parse(&bytes);
        assert!(
            matches!(&r, Err(ApkError::TooLarge { what, limit: 65536 })
                if what.contains("limits.max_stanza_bytes")),
            "{r:?}"
        );
    }

    #[test]
    fn stanza_exactly_at_the_limit_is_accepted() {
        let bytes = sample().field("pkgdesc", &"x".repeat(5000)).build();
        let len = parse(&bytes).expect("valid").stanza.len() as u64;
        let at = |max_stanza_bytes| Limits {
            max_stanza_bytes,
            ..Limits::default()
        };
        let p = parse_package(&bytes[..], &at(len)).expect("stanza at the limit");
        assert_eq!(p.stanza.len() as u64, len);
        let r = parse_package(&bytes[..], &at(len - 1));
        assert!(
            matches!(r, Err(ApkError::TooLarge { limit, .. }) if limit == len - 1),
            "{r:?}"
        );
    }

    #[test]
    fn install_scripts_are_hashed_into_the_identity_but_not_kept() {
        let mut tar = Vec::new();
        push_entry(&mut tar, b".PKGINFO", b'0', 0o644, &minimal_pkginfo());
        push_entry(
            &mut tar,
            b".post-install",
            b'0',
            0o755,
            b"#!/bin/sh\necho hi\n",
        );
        push_entry(&mut tar, b".trigger", b'0', 0o755, &[b'#'; 5000]);
        let bytes = with_control_tar(&tar);
        let p = parse(&bytes).expect("control member with scripts");
        // No datahash: the identity spans the whole control member and the data.
        assert_eq!(p.checksum, q1(&bytes));
        assert_eq!(p.info.pkgname, "a");
    }

    #[test]
    fn builder_package_with_links_parses() {
        let bytes = sample()
            .hard_link("usr/bin/hello-again", "usr/bin/hello")
            .symlink("usr/bin/hi", "hello")
            .symlink("usr/lib/long", &format!("/{}", "l".repeat(150)))
            .signed_with(test_key())
            .build();
        parse(&bytes).expect("links the way abuild writes them");
    }

    #[test]
    fn corrupt_bytes_never_panic_and_are_never_io_errors() {
        let bytes = sample().signed_with(test_key()).build();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                let r = parse(&b);
                assert!(!matches!(r, Err(ApkError::Io(_))), "byte {i}: {r:?}");
            }
        }
    }

    #[test]
    fn corrupt_deflate_data_is_malformed() {
        let bytes = sample().build();
        let sizes = member_sizes(&bytes);
        let mut b = bytes.clone();
        let middle = sizes[0] as usize + sizes[1] as usize / 2;
        b[middle] ^= 0xff;
        let _ = malformed_message(parse(&b));
    }

    /// A source that fails after `ok` bytes.
    struct FailingReader<'a> {
        data: &'a [u8],
        ok: usize,
    }

    impl Read for FailingReader<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.ok == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "source gone",
                ));
            }
            let n = out.len().min(self.ok).min(self.data.len()).min(7);
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            self.ok -= n;
            Ok(n)
        }
    }

    #[test]
    fn failing_source_is_an_io_error_not_malformed() {
        let bytes = sample().signed_with(test_key()).build();
        for ok in [0, 10, 700, bytes.len() - 10] {
            let r = parse_package(FailingReader { data: &bytes, ok }, &Limits::default());
            assert!(matches!(r, Err(ApkError::Io(_))), "{ok}: {r:?}");
        }
    }

    #[test]
    fn one_byte_at_a_time_source_parses_the_same() {
        let bytes = fixture("forgejo-noarch-test-1.0.0-r0.apk");
        let slow = FailingReader {
            data: &bytes,
            ok: usize::MAX,
        };
        let a = parse_package(slow, &Limits::default()).expect("valid");
        assert_eq!(a, parse(&bytes).expect("valid"));
    }

    #[test]
    fn random_mutations_of_a_real_package_never_panic() {
        use rand::{Rng, SeedableRng};
        let original = fixture("forgejo-noarch-test-openrc-1.0.0-r0.apk");
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x61706b);
        for _ in 0..3000 {
            let mut b = original.clone();
            for _ in 0..rng.gen_range(1..8) {
                let i = rng.gen_range(0..b.len());
                b[i] = rng.gen();
            }
            let cut = rng.gen_range(b.len() / 2..=b.len());
            let r = parse(&b[..cut]);
            assert!(!matches!(r, Err(ApkError::Io(_))), "{r:?}");
        }
    }
}
