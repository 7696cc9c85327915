//! Hostile uploads and URLs through real HTTP: every malformed or adversarial request is
//! a 4xx naming the problem, and leaves no row, blob or temporary file behind; the server
//! keeps serving.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alpine_registry::apk::builder::PackageBuilder;
use alpine_registry::apk::sign::SigningKey;
use base64::Engine as _;
use common::*;
use sha1::Sha1;
use sha2::{Digest, Sha256};

const REPO: &str = "/admin/v3.21/main";

/// One upload and what the registry must answer.
struct Case {
    what: String,
    path: &'static str,
    body: Vec<u8>,
    status: u16,
    /// A distinctive part of the JSON `message`.
    message: &'static str,
}

fn case(what: impl Into<String>, status: u16, message: &'static str, body: Vec<u8>) -> Case {
    Case {
        what: what.into(),
        path: REPO,
        body,
        status,
        message,
    }
}

fn bad(what: impl Into<String>, message: &'static str, body: Vec<u8>) -> Case {
    case(what, 400, message, body)
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Appends a ustar header (name cut to the 100-byte field) and the padded data.
fn tar_entry(out: &mut Vec<u8>, name: &[u8], typeflag: u8, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    let field = &mut h.as_old_mut().name;
    let n = name.len().min(field.len());
    field[..n].copy_from_slice(&name[..n]);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::new(typeflag));
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

/// Appends a hard link (`b'1'`) or symbolic link (`b'2'`) header pointing at `target`.
fn tar_link(out: &mut Vec<u8>, name: &[u8], typeflag: u8, target: &[u8]) {
    let at = out.len();
    tar_entry(out, name, typeflag, b"");
    let mut h = tar::Header::new_old();
    h.as_mut_bytes().copy_from_slice(&out[at..at + 512]);
    h.as_mut_bytes()[157..157 + target.len()].copy_from_slice(target);
    h.set_cksum();
    out[at..at + 512].copy_from_slice(h.as_bytes());
}

/// A data tar: `usr/` and `usr/bin/`, what `add` appends, then the end blocks.
fn data_tree(add: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut tar = Vec::new();
    tar_entry(&mut tar, b"usr/", b'5', b"");
    tar_entry(&mut tar, b"usr/bin/", b'5', b"");
    add(&mut tar);
    tar.extend_from_slice(&[0u8; 1024]);
    with_data_tar(&tar)
}

/// One PAX record `<len> <key>=<value>\n`, `<len>` counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
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

fn sample() -> PackageBuilder {
    PackageBuilder::new("hostile", "1.0-r0", "x86_64").file("usr/share/hostile/README", b"hi\n")
}

fn minimal_pkginfo() -> Vec<u8> {
    b"pkgname = hostile\npkgver = 1.0-r0\narch = x86_64\nsize = 1\n".to_vec()
}

/// A control tar holding a valid `.PKGINFO`.
fn control_tar() -> Vec<u8> {
    let mut tar = Vec::new();
    tar_entry(&mut tar, b".PKGINFO", b'0', &minimal_pkginfo());
    tar
}

/// A control tar holding a valid `.PKGINFO`, then one more entry.
fn control_tar_plus(name: &[u8], typeflag: u8, data: &[u8]) -> Vec<u8> {
    let mut tar = control_tar();
    tar_entry(&mut tar, name, typeflag, data);
    tar
}

/// A package whose control tar holds a valid `.PKGINFO`, then one more entry.
fn control_plus(name: &[u8], typeflag: u8, data: &[u8]) -> Vec<u8> {
    with_control_tar(&control_tar_plus(name, typeflag, data))
}

/// A package whose control tar is given verbatim, with a valid data member.
fn with_control_tar(control_tar: &[u8]) -> Vec<u8> {
    let mut out = gz(control_tar);
    out.extend_from_slice(&sample().data_member());
    out
}

/// A package whose data tar is given verbatim (its `.PKGINFO` has no datahash).
fn with_data_tar(data_tar: &[u8]) -> Vec<u8> {
    let mut out = gz(&control_tar());
    out.extend_from_slice(&gz(data_tar));
    out
}

/// A package whose `.PKGINFO` text is given verbatim.
fn with_pkginfo(text: &[u8]) -> Vec<u8> {
    let mut tar = Vec::new();
    tar_entry(&mut tar, b".PKGINFO", b'0', text);
    with_control_tar(&tar)
}

/// Compressed sizes of the consecutive gzip members of `data`.
fn member_sizes(data: &[u8]) -> Vec<usize> {
    let mut rest = data;
    let mut sizes = Vec::new();
    while !rest.is_empty() {
        let before = rest.len();
        std::io::copy(
            &mut flate2::bufread::GzDecoder::new(&mut rest),
            &mut std::io::sink(),
        )
        .unwrap();
        sizes.push(before - rest.len());
    }
    sizes
}

fn test_key() -> SigningKey {
    let pem = std::fs::read_to_string(fixture_path("test-signing-key.pem")).unwrap();
    SigningKey::from_pkcs8_pem("test", &pem).unwrap()
}

/// Pseudo-random bytes: incompressible, so their gzip is as large as they are.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Truncations of a three-member package at and inside every member.
fn truncations(label: &str, bytes: &[u8], cases: &mut Vec<Case>) {
    let sizes = member_sizes(bytes);
    assert_eq!(
        sizes.len(),
        3,
        "{label}: signature, control and data members"
    );
    let (s, c, d) = (sizes[0], sizes[1], sizes[2]);
    let cut = |at: usize| bytes[..at].to_vec();
    cases.push(bad(
        format!("{label}: cut inside the first gzip header"),
        "first gzip member (signature or control) is truncated",
        cut(5),
    ));
    cases.push(bad(
        format!("{label}: cut inside the signature member"),
        "first gzip member (signature or control) is truncated",
        cut(s / 2),
    ));
    cases.push(bad(
        format!("{label}: cut after the signature member"),
        "has a signature but no control member",
        cut(s),
    ));
    cases.push(bad(
        format!("{label}: cut inside the control member"),
        "control member is truncated",
        cut(s + c / 2),
    ));
    cases.push(bad(
        format!("{label}: cut inside the control member's trailer"),
        "control member is truncated",
        cut(s + c - 3),
    ));
    cases.push(bad(
        format!("{label}: cut after the control member"),
        "the package has no data member",
        cut(s + c),
    ));
    cases.push(bad(
        format!("{label}: cut inside the data member"),
        "data member is truncated",
        cut(s + c + d / 2),
    ));
    cases.push(bad(
        format!("{label}: last byte missing"),
        "data member is truncated",
        cut(s + c + d - 1),
    ));
}

fn upload_cases() -> Vec<Case> {
    let mut cases = vec![
        bad("empty body", "empty body", Vec::new()),
        bad(
            "not gzip",
            "not gzip-compressed",
            b"this is not a package".to_vec(),
        ),
        bad(
            "a zip file",
            "not gzip-compressed",
            b"PK\x03\x04\x14\x00\x00\x00".to_vec(),
        ),
        bad("a lone gzip magic byte", "not gzip-compressed", vec![0x1f]),
        bad(
            "gzip header with reserved flag bits",
            "is not valid gzip data",
            {
                let mut b = sample().build();
                b[3] = 0xe0;
                b
            },
        ),
        case(
            "apk v3 (ADB) package",
            415,
            "apk v3 (ADB) package",
            b"ADBd\x01\x00\x00\x00pckg"
                .iter()
                .copied()
                .chain([0; 64])
                .collect(),
        ),
    ];

    truncations(
        "signed built package",
        &sample().signed_with(&test_key()).build(),
        &mut cases,
    );
    truncations(
        "real fixture",
        &fixture("gitea-test-1.4.1-r3.apk"),
        &mut cases,
    );

    cases.extend([
        bad(
            "gzip bomb in the control member",
            "decompressed control member exceeds the limit of 1048576 bytes",
            control_plus(b".post-install", b'0', &vec![0u8; 8 << 20]),
        ),
        bad(
            "gzip bomb in the data member",
            "decompressed data member exceeds the limit of 4194304 bytes",
            sample().file("zeros", &vec![0u8; 8 << 20]).build(),
        ),
        bad(
            "huge .PKGINFO (many lines)",
            ".PKGINFO exceeds the limit of 65536 bytes",
            (0..10_000)
                .fold(sample(), |b, i| b.field("replaces", &format!("r{i}")))
                .build(),
        ),
        bad(
            "huge line without a newline",
            ".PKGINFO exceeds the limit of 65536 bytes",
            with_pkginfo(
                [
                    minimal_pkginfo(),
                    b"pkgdesc = ".to_vec(),
                    vec![b'x'; 200_000],
                ]
                .concat()
                .as_slice(),
            ),
        ),
        bad(
            "index stanza over its limit (a 32 KiB description)",
            "APKINDEX stanza (config limits.max_stanza_bytes) exceeds the limit of 16384 bytes",
            sample().field("pkgdesc", &"x".repeat(32 << 10)).build(),
        ),
        bad(
            "missing pkgname",
            ".PKGINFO has no pkgname",
            sample().without_field("pkgname").build(),
        ),
        bad(
            "missing pkgver",
            ".PKGINFO has no pkgver",
            sample().without_field("pkgver").build(),
        ),
        bad(
            "missing arch",
            ".PKGINFO has no arch",
            sample().without_field("arch").build(),
        ),
        bad(
            "invalid version",
            "is not a valid apk version",
            sample().field("pkgver", "1.0-beta").build(),
        ),
        bad(
            "version with a path",
            "is not a valid apk version",
            sample().field("pkgver", "1.0/../../x").build(),
        ),
        bad(
            "name with a slash",
            "is not a valid package name",
            sample().field("pkgname", "a/b").build(),
        ),
        bad(
            "name with ..",
            "is not a valid package name",
            sample().field("pkgname", "../../etc/cron.d/x").build(),
        ),
        bad(
            "name with NUL",
            ".PKGINFO contains a NUL byte",
            sample().field("pkgname", "a\0b").build(),
        ),
        bad(
            "overlong name",
            "is not a valid package name",
            sample().field("pkgname", &"a".repeat(300)).build(),
        ),
        bad(
            "arch with a slash",
            "is not a valid architecture",
            sample().field("arch", "../x86_64").build(),
        ),
        bad(
            ".PKGINFO not UTF-8",
            ".PKGINFO is not valid UTF-8",
            with_pkginfo(&[minimal_pkginfo(), b"pkgdesc = \xff\xfe\n".to_vec()].concat()),
        ),
        bad(
            "control character in a value",
            "contains a control character",
            sample().field("pkgdesc", "line\rbreak").build(),
        ),
        bad(
            "malformed dependency",
            "is not a valid dependency",
            sample().field("depend", "a>=notaversion").build(),
        ),
        bad(
            "size not a number",
            ".PKGINFO size is not a number",
            sample().field("size", "-1").build(),
        ),
        bad(
            "malformed datahash",
            "datahash is not a hex SHA-256",
            sample()
                .with_datahash(false)
                .field("datahash", "abc")
                .build(),
        ),
        bad(
            "datahash mismatch",
            "but .PKGINFO declares datahash abababab",
            sample()
                .with_datahash(false)
                .field("datahash", &"ab".repeat(32))
                .build(),
        ),
        bad(
            "control tar with a symlink",
            "is a symbolic link",
            control_plus(b".post-install", b'2', b""),
        ),
        bad(
            "control tar with a hard link",
            "is a hard link",
            control_plus(b".post-install", b'1', b""),
        ),
        bad(
            "control tar with a device node",
            "is a device node",
            control_plus(b".pre-install", b'3', b""),
        ),
        bad(
            "control tar with a FIFO",
            "is a FIFO",
            control_plus(b".trigger", b'6', b""),
        ),
        bad(
            "control tar with a directory",
            "is a directory",
            control_plus(b".dir/", b'5', b""),
        ),
        bad(
            "control tar with an absolute path",
            "has an absolute path",
            control_plus(b"/etc/passwd", b'0', b"x"),
        ),
        bad(
            "control tar with a .. path",
            "leaves the package root",
            control_plus(b"../.post-install", b'0', b"x"),
        ),
        bad(
            "control tar with a PAX path smuggling ..",
            "leaves the package root",
            with_control_tar(&{
                let mut tar =
                    control_tar_plus(b"PaxHeaders/x", b'x', &pax_record("path", b"../../x"));
                tar_entry(&mut tar, b".harmless", b'0', b"x");
                tar
            }),
        ),
        bad(
            "control tar with a data file",
            "is not a control file",
            control_plus(b"usr/bin/x", b'0', b"x"),
        ),
        bad(
            "control tar with an oversized extended header",
            "tar extended header exceeds the limit",
            with_control_tar(&{
                let mut tar = control_tar();
                let mut h = tar::Header::new_ustar();
                h.as_old_mut().name[..12].copy_from_slice(b"PaxHeaders/x");
                h.set_size(1 << 40);
                h.set_entry_type(tar::EntryType::new(b'x'));
                h.set_cksum();
                tar.extend_from_slice(h.as_bytes());
                tar
            }),
        ),
        bad(
            "control tar ending after an extended header",
            "tar archive ends after an extended header",
            control_plus(b"PaxHeaders/x", b'x', &pax_record("path", b".x")),
        ),
        bad(
            "control tar with a corrupt header checksum",
            "tar header checksum mismatch",
            with_control_tar(&{
                let mut tar = control_tar();
                tar[0] = b'X';
                tar
            }),
        ),
        bad(
            "control tar truncated inside an entry",
            "tar archive is truncated",
            with_control_tar(&control_tar_plus(b".post-install", b'0', &[b'#'; 600])[..1800]),
        ),
        bad(
            "install script hidden after a zero block in the control tar",
            "data after its end-of-archive block",
            with_control_tar(&{
                let mut tar = control_tar();
                tar.extend_from_slice(&[0u8; 512]);
                tar_entry(&mut tar, b".post-install", b'0', b"#!/bin/sh\nrm -rf /\n");
                tar
            }),
        ),
        bad(
            "data entry hidden after a zero block",
            "data after its end-of-archive block",
            with_data_tar(&{
                let mut tar = Vec::new();
                tar_entry(&mut tar, b"usr/", b'5', b"");
                tar.extend_from_slice(&[0u8; 512]);
                tar_entry(&mut tar, b"../../etc/cron.d/evil", b'0', b"x");
                tar.extend_from_slice(&[0u8; 1024]);
                tar
            }),
        ),
        bad(
            "data entry hidden behind a PAX size record",
            "PAX size record disagrees with the header",
            with_data_tar(&{
                let mut hidden = Vec::new();
                tar_entry(&mut hidden, b"../../etc/cron.d/evil", b'0', b"x");
                let mut tar = Vec::new();
                let size = hidden.len().to_string();
                tar_entry(
                    &mut tar,
                    b"PaxHeaders/x",
                    b'x',
                    &pax_record("size", size.as_bytes()),
                );
                tar_entry(&mut tar, b"harmless", b'0', b"");
                tar.extend_from_slice(&hidden);
                tar.extend_from_slice(&[0u8; 1024]);
                tar
            }),
        ),
        bad(
            "traversal hidden in a GNU header's prefix bytes",
            "leaves the package root",
            with_data_tar(&{
                let mut tar = Vec::new();
                tar_entry(&mut tar, b"passwd", b'0', b"x");
                let mut h = tar::Header::new_old();
                h.as_mut_bytes().copy_from_slice(&tar[..512]);
                h.as_mut_bytes()[257..265].copy_from_slice(b"ustar  \0");
                h.as_mut_bytes()[345..354].copy_from_slice(b"../../etc");
                h.set_cksum();
                tar[..512].copy_from_slice(h.as_bytes());
                tar.extend_from_slice(&[0u8; 1024]);
                tar
            }),
        ),
        bad(
            "tar header with an empty name (an end block to apk)",
            "tar header has an empty name",
            with_data_tar(&{
                let mut tar = Vec::new();
                tar_entry(&mut tar, b"x", b'0', b"data");
                let mut h = tar::Header::new_old();
                h.as_mut_bytes().copy_from_slice(&tar[..512]);
                h.as_mut_bytes()[0] = 0;
                h.as_mut_bytes()[345..348].copy_from_slice(b"usr");
                h.set_cksum();
                tar[..512].copy_from_slice(h.as_bytes());
                tar
            }),
        ),
        bad(
            "data entry written through an earlier symlink",
            "\"usr/lib/cron.d/evil\" lies below the symbolic link \"usr/lib\"",
            data_tree(|tar| {
                tar_link(tar, b"usr/lib", b'2', b"/etc");
                tar_entry(tar, b"usr/lib/cron.d/evil", b'0', b"* * * * * root x\n");
            }),
        ),
        bad(
            "hard link to a file outside the package",
            "\"usr/bin/shadow\" is a hard link to \"/etc/shadow\", which is not an earlier",
            data_tree(|tar| tar_link(tar, b"usr/bin/shadow", b'1', b"/etc/shadow")),
        ),
        bad(
            "hard link to a later file",
            "\"usr/bin/sh\" is a hard link to \"usr/bin/busybox\", which is not an earlier",
            data_tree(|tar| {
                tar_link(tar, b"usr/bin/sh", b'1', b"usr/bin/busybox");
                tar_entry(tar, b"usr/bin/busybox", b'0', b"x");
            }),
        ),
        bad(
            "symlink target with a NUL byte",
            "\"usr/bin/sh\" has a link target with a NUL byte",
            data_tree(|tar| {
                tar_entry(
                    tar,
                    b"PaxHeaders/sh",
                    b'x',
                    &pax_record("linkpath", b"x\0/etc"),
                );
                tar_link(tar, b"usr/bin/sh", b'2', b"x");
            }),
        ),
        bad(
            "PAX linkpath on a regular file (a hard link to apk)",
            "\"usr/bin/shadow\" is not a link but has a PAX linkpath record",
            data_tree(|tar| {
                tar_entry(
                    tar,
                    b"PaxHeaders/x",
                    b'x',
                    &pax_record("linkpath", b"/etc/shadow"),
                );
                tar_entry(tar, b"usr/bin/shadow", b'0', b"");
            }),
        ),
        bad(
            "GNU long link name, which apk ignores",
            "\"usr/bin/sh\" follows a GNU long link name",
            data_tree(|tar| {
                tar_entry(tar, b"././@LongLink", b'K', b"busybox\0");
                tar_link(tar, b"usr/bin/sh", b'2', b"/etc/shadow");
            }),
        ),
        bad(
            "entry type apk skips, carrying its name to the next entry",
            "tar entry \"x\" has type 'V'",
            data_tree(|tar| tar_entry(tar, b"x", b'V', b"")),
        ),
        bad(
            "PAX record apk would skip",
            "tar PAX record is malformed",
            data_tree(|tar| {
                tar_entry(tar, b"PaxHeaders/x", b'x', b"+21 path=usr/x/harml\n");
                tar_entry(tar, b"usr/bin/x", b'0', b"");
            }),
        ),
        bad(
            "duplicate data entry",
            "\"usr//bin/hello\" is a duplicate of an earlier entry",
            data_tree(|tar| {
                tar_entry(tar, b"usr/bin/hello", b'0', b"good");
                tar_entry(tar, b"usr//bin/hello", b'0', b"evil");
            }),
        ),
        bad(
            "install script in the data member",
            "\".post-install\" has the name of a control file",
            data_tree(|tar| tar_entry(tar, b".post-install", b'0', b"#!/bin/sh\nrm -rf /\n")),
        ),
        bad(
            ".PKGINFO in the data member",
            "\".PKGINFO\" has the name of a control file",
            data_tree(|tar| tar_entry(tar, b".PKGINFO", b'0', &minimal_pkginfo())),
        ),
        bad(
            "signature in the data member",
            "\".SIGN.RSA.x.rsa.pub\" has the name of a control file",
            data_tree(|tar| tar_entry(tar, b".SIGN.RSA.x.rsa.pub", b'0', b"sig")),
        ),
        bad(
            "duplicate .PKGINFO",
            "more than one .PKGINFO",
            control_plus(b".PKGINFO", b'0', &minimal_pkginfo()),
        ),
        bad(
            "no .PKGINFO",
            "the control member has no .PKGINFO",
            with_control_tar(&{
                let mut tar = Vec::new();
                tar_entry(&mut tar, b".post-install", b'0', b"#!/bin/sh\n");
                tar
            }),
        ),
        bad(
            "empty control member",
            "the control member has no .PKGINFO",
            with_control_tar(&[]),
        ),
        bad(
            "signature member with a non-signature entry",
            "is not a .SIGN.* signature",
            {
                let mut tar = Vec::new();
                tar_entry(&mut tar, b".SIGN.RSA.x.rsa.pub", b'0', b"sig");
                tar_entry(&mut tar, b".PKGINFO", b'0', &minimal_pkginfo());
                let mut b = gz(&tar);
                b.extend_from_slice(&sample().build());
                b
            },
        ),
        bad(
            "data member missing (unsigned)",
            "the package has no data member",
            {
                let b = sample();
                b.control_member(&b.data_member())
            },
        ),
        bad(
            "data member missing (signed)",
            "the package has no data member",
            {
                let signed = sample().signed_with(&test_key()).build();
                let sizes = member_sizes(&signed);
                signed[..sizes[0] + sizes[1]].to_vec()
            },
        ),
        bad(
            "data entry escaping the root",
            "leaves the package root",
            sample()
                .file("../etc/passwd", b"root::0:0::/:/bin/sh\n")
                .build(),
        ),
        bad(
            "data member is not a tar",
            "tar header has an invalid checksum field",
            {
                let b = sample();
                let data = gz(&[b'A'; 2048]);
                let mut out = b.control_member(&data);
                out.extend_from_slice(&data);
                out
            },
        ),
        bad(
            "data member with a corrupt CRC",
            "data member is not valid gzip data",
            {
                let mut b = sample().build();
                let at = b.len() - 8;
                b[at] ^= 0xff;
                b
            },
        ),
        bad(
            "trailing garbage after the data member",
            "unexpected bytes after the data member",
            [sample().build(), b"garbage".to_vec()].concat(),
        ),
        bad(
            "a second data member",
            "unexpected bytes after the data member",
            [sample().build(), gz(&[0u8; 1024])].concat(),
        ),
        case(
            "body over the upload limit (Content-Length)",
            413,
            "exceeds the upload limit of 262144 bytes",
            noise(300_000),
        ),
    ]);
    let invalid_urls = [
        ("/admin/v3..21/main", "invalid branch"),
        ("/admin/v3.21/ma%20in", "invalid repository"),
        ("/admin/v3.21/.main", "invalid repository"),
        ("/api/v3.21/main", "invalid owner"),
    ];
    for (path, message) in invalid_urls {
        cases.push(Case {
            what: format!("PUT to {path}"),
            path,
            body: sample().build(),
            status: 400,
            message,
        });
    }
    cases
}

/// Everything below `dir` (files and directories), recursively and sorted.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.push(path.clone());
        if path.is_dir() {
            out.extend(tree(&path));
        }
    }
    out.sort();
    out
}

/// No repository row, no blob, no temporary file.
async fn assert_nothing_stored(server: &TestServer, what: &str) {
    let repos = server
        .state
        .store
        .list_repositories(None, None, None)
        .await
        .unwrap();
    assert!(repos.is_empty(), "{what}: repository rows left: {repos:?}");
    let staged = server.staged().await;
    assert!(staged.is_empty(), "{what}: staged files left: {staged:?}");
    let blobs = server.stored_blobs().await;
    assert!(blobs.is_empty(), "{what}: blobs left: {blobs:?}");
}

async fn assert_serving(server: &TestServer, what: &str) {
    assert_eq!(
        server.get("/healthz", None).await.status(),
        200,
        "{what}: /healthz after"
    );
}

/// Limits small enough to reach quickly, large enough for the valid packages.
fn small_limits(config: &mut alpine_registry::config::Config) {
    config.limits.max_upload_bytes = 256 << 10;
    config.limits.max_control_bytes = 1 << 20;
    config.limits.max_pkginfo_bytes = 64 << 10;
    config.limits.max_data_bytes = 4 << 20;
    config.limits.max_stanza_bytes = 16 << 10;
}

#[tokio::test]
async fn hostile_uploads_are_4xx_naming_the_problem_and_leave_nothing_behind() {
    let server = TestServer::start_with(small_limits).await;
    let cases = upload_cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    eprintln!("{} hostile uploads", cases.len() + 1);
    for case in &cases {
        let response = server.put_admin(case.path, case.body.clone()).await;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_eq!(status, case.status, "{}: {body}", case.what);
        let json: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {body}", case.what));
        let message = json["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(case.message),
            "{}: message {message:?} does not contain {:?}",
            case.what,
            case.message
        );
        assert_nothing_stored(&server, &case.what).await;
        assert_serving(&server, &case.what).await;
    }

    // Over the limit without Content-Length: refused while streaming.
    let big = noise(300_000);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(16 << 10).map(|c| Ok(c.to_vec())).collect();
    let response = server
        .client
        .put(server.url(REPO))
        .basic_auth("admin", Some(ADMIN_TOKEN))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let json: serde_json::Value = response.json().await.unwrap();
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("exceeds the upload limit of 262144 bytes"),
        "{json}"
    );
    assert_nothing_stored(&server, "chunked body over the limit").await;
    assert_serving(&server, "chunked body over the limit").await;

    // After all of that a valid package is still published.
    let valid = sample().signed_with(&test_key()).build();
    let response = server.put_admin(REPO, valid).await;
    assert_eq!(response.status(), 201);
    assert_eq!(
        server
            .state
            .store
            .list_repositories(None, None, None)
            .await
            .unwrap()
            .len(),
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn package_with_links_and_directories_is_accepted_and_indexed() {
    let server = TestServer::start_with(small_limits).await;
    // Laid out the way abuild does: directories first, files, a hard link to an earlier
    // file, relative and absolute symbolic links, one with a target over 100 bytes.
    let long_target = format!("/usr/share/{}/doc", "d".repeat(120));
    let package = PackageBuilder::new("linked", "1.0-r0", "x86_64")
        .field("pkgdesc", &"a long description ".repeat(400))
        .file("usr/bin/busybox", b"#!/bin/sh\n")
        .hard_link("usr/bin/sh", "usr/bin/busybox")
        .symlink("usr/bin/ls", "busybox")
        .file("usr/lib/libx.so.1.2", b"ELF")
        .symlink("usr/lib/libx.so.1", "libx.so.1.2")
        .symlink("usr/lib/long", &long_target)
        .symlink("sbin", "/usr/bin")
        .signed_with(&test_key())
        .build();
    let response = server.put_admin(REPO, package.clone()).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let body: serde_json::Value = response.json().await.unwrap();
    let checksum = body["checksum"].as_str().unwrap().to_string();
    let text = server
        .verified_index("admin", "/admin/v3.21/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert!(
        text.contains(&format!(
            "C:{checksum}\nP:linked\nV:1.0-r0\nA:x86_64\nS:{}\n",
            package.len()
        )),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn control_tar_with_end_blocks_is_accepted_with_the_right_identity() {
    let server = TestServer::start().await;
    let builder = sample();
    let data = builder.data_member();
    let pkginfo = format!(
        "{}datahash = {}\n",
        builder.pkginfo(),
        hex::encode(Sha256::digest(&data))
    );
    // tar::Builder writes the two end-of-archive blocks; pad to a full 10240-byte record
    // as GNU tar does.
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(pkginfo.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    // `new_ustar` leaves the type NUL, an entry apk skips.
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, ".PKGINFO", pkginfo.as_bytes())
        .unwrap();
    let mut tar = tar.into_inner().unwrap();
    assert!(tar.ends_with(&[0u8; 1024]), "end blocks written");
    tar.resize(tar.len().next_multiple_of(10240), 0);
    let control = gz(&tar);
    let expected = format!(
        "Q1{}",
        base64::engine::general_purpose::STANDARD.encode(Sha1::digest(&control))
    );
    let bytes = [control, data].concat();

    let response = server.put_admin(REPO, bytes.clone()).await;
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["checksum"], expected.as_str());
    assert_eq!(body["size"], bytes.len());
    let text = server
        .verified_index("admin", "/admin/v3.21/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert!(
        text.contains(&format!("C:{expected}\nP:hostile\nV:1.0-r0\n")),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn stalled_upload_times_out_and_leaves_no_temporary_file() {
    let server = TestServer::start_with(|c| c.server.request_timeout_secs = 2).await;
    let start = Instant::now();
    let first: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(sample().build()[..100].to_vec())];
    let stalled = futures_util::StreamExt::chain(
        futures_util::stream::iter(first),
        futures_util::stream::pending(),
    );
    let request = server
        .client
        .put(server.url(REPO))
        .basic_auth("admin", Some(ADMIN_TOKEN))
        .body(reqwest::Body::wrap_stream(stalled))
        .send();
    let outcome = tokio::time::timeout(Duration::from_secs(20), request)
        .await
        .expect("the server gives up on a stalled body within its request timeout");
    let elapsed = start.elapsed();
    match outcome {
        Ok(response) => assert_eq!(response.status(), 408),
        // Closing the connection on a client that is still sending is also an answer.
        Err(e) => eprintln!("stalled upload: connection closed ({e})"),
    }
    assert!(elapsed >= Duration::from_millis(1900), "{elapsed:?}");
    // The handler is dropped with the timeout; allow a moment for the drop to finish.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.staged().await.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        server.staged().await.is_empty(),
        "{:?}",
        server.staged().await
    );
    assert_serving(&server, "stalled upload").await;
    assert_eq!(server.put_admin(REPO, sample().build()).await.status(), 201);
    server.stop().await;
}

/// Sends one raw HTTP/1.1 request (the URL is not normalised, unlike `reqwest`'s, which
/// resolves `..` and `%2e%2e`) and returns the status code.
async fn raw_status(server: &TestServer, method: &str, target: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_TOKEN}"));
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {auth}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        server.addr,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .unwrap_or_else(|| panic!("{method} {target}: no status line in {answer:?}"));
    status.parse().unwrap()
}

#[tokio::test]
async fn hostile_url_segments_are_400_or_404_and_touch_no_file() {
    let outer = tempfile::tempdir().unwrap();
    let data_dir = outer.path().join("data");
    let dir = data_dir.clone();
    let server = TestServer::start_with(move |c| c.storage.data_dir = dir).await;
    // A package and its key exist, so a 404 below is about the name, not an empty store.
    let valid = sample().build();
    assert_eq!(server.put_admin(REPO, valid.clone()).await.status(), 201);
    assert_eq!(server.get("/admin/key", None).await.status(), 200);
    let before = tree(outer.path());

    let long = "a".repeat(300);
    // (segment as written in the URL, status in a name position)
    let hostile: &[(&str, u16)] = &[
        ("a%2Fb", 400),
        ("%2F", 400),
        ("..", 400),
        ("%2e%2e", 400),
        ("%2E%2E%2F%2E%2E%2Fetc", 400),
        (&long, 400),
        ("%ff", 400),
        ("a%00b", 400),
        ("%00", 400),
    ];
    let routes = [
        ("GET", "/{o}/{b}/{r}/{a}/APKINDEX.tar.gz"),
        ("GET", "/{o}/{b}/{r}/{a}/{f}"),
        ("DELETE", "/{o}/{b}/{r}/{a}/{f}"),
        ("PUT", "/{o}/{b}/{r}"),
        ("GET", "/{o}/key"),
        ("GET", "/{o}/keys/{k}"),
        ("GET", "/api/packages/{o}/alpine/{b}/{r}/{a}/{f}"),
        ("PUT", "/api/packages/{o}/alpine/{b}/{r}"),
        ("GET", "/api/packages/{o}/alpine/keys/{k}"),
    ];
    let defaults = [
        ("{o}", "admin"),
        ("{b}", "v3.21"),
        ("{r}", "main"),
        ("{a}", "x86_64"),
        ("{f}", "hostile-1.0-r0.apk"),
        ("{k}", "admin.rsa.pub"),
    ];
    let mut checked = 0;
    for (method, template) in routes {
        let body: &[u8] = if method == "PUT" { &valid } else { b"" };
        for (slot, _) in defaults {
            if !template.contains(slot) {
                continue;
            }
            let mut values: Vec<(&str, u16)> = hostile.to_vec();
            if slot == "{o}" {
                values.push(("nobody", 404));
            }
            for (segment, name_status) in values {
                // A key name is compared with the owner's key, never used as a path: any
                // other name is 404 (only undecodable UTF-8 is refused before that).
                let expected = if slot == "{k}" && segment != "%ff" {
                    404
                } else {
                    name_status
                };
                let mut target = template.replace(slot, segment);
                for (other, value) in defaults {
                    target = target.replace(other, value);
                }
                let status = raw_status(&server, method, &target, body).await;
                assert_eq!(status, expected, "{method} {target}");
                checked += 1;
            }
        }
    }
    eprintln!("{checked} hostile URLs checked");
    assert_serving(&server, "hostile URLs").await;
    // Nothing was created, inside the data directory or next to it; the one package is
    // still there and nothing else is.
    assert_eq!(tree(outer.path()), before);
    let repos = server
        .state
        .store
        .list_repositories(None, None, None)
        .await
        .unwrap();
    assert_eq!(repos.len(), 1, "{repos:?}");
    assert_eq!(
        server
            .get("/admin/v3.21/main/x86_64/hostile-1.0-r0.apk", None)
            .await
            .status(),
        200
    );
    server.stop().await;
}
