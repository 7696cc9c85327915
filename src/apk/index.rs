//! APKINDEX: stanza rendering, the `APKINDEX.tar.gz` writer and index signing.
//!
//! Stanzas follow apk-tools' `apk_pkg_write_index_entry` line for line: `C P V A S I T U
//! L` are always written (`T`, `U`, `L` possibly empty), `o m c` only when the field is
//! present (even if empty), `t k` only when non-zero, `D p i` only when non-empty.

use super::pkginfo::PkgInfo;
use super::sign::{SignatureAlgorithm, SigningKey};
use super::{version, ApkError, ApkResult};
use std::cmp::Ordering;
use std::fmt::Write as _;
use std::io::Write as _;

/// One stanza exactly as `apk index` writes it, ending with the blank line.
pub fn render_stanza(info: &PkgInfo, checksum: &str, file_size: u64) -> String {
    let mut s = String::with_capacity(512);
    // Writing into a String cannot fail.
    let _ = write!(
        s,
        "C:{checksum}\nP:{}\nV:{}\nA:{}\nS:{file_size}\nI:{}\nT:{}\nU:{}\nL:{}\n",
        info.pkgname,
        info.pkgver,
        info.arch,
        info.size,
        info.pkgdesc.as_deref().unwrap_or(""),
        info.url.as_deref().unwrap_or(""),
        info.license.as_deref().unwrap_or(""),
    );
    if let Some(origin) = &info.origin {
        let _ = writeln!(s, "o:{origin}");
    }
    if let Some(maintainer) = &info.maintainer {
        let _ = writeln!(s, "m:{maintainer}");
    }
    if let Some(t) = info.builddate.filter(|&t| t != 0) {
        let _ = writeln!(s, "t:{t}");
    }
    if let Some(commit) = &info.commit {
        let _ = writeln!(s, "c:{commit}");
    }
    if let Some(k) = info.provider_priority.filter(|&k| k != 0) {
        let _ = writeln!(s, "k:{k}");
    }
    for (key, deps) in [
        ('D', &info.depends),
        ('p', &info.provides),
        ('i', &info.install_if),
    ] {
        if !deps.is_empty() {
            let _ = writeln!(s, "{key}:{}", deps.join(" "));
        }
    }
    s.push('\n');
    s
}

/// The same stanza with its `A:` line replaced by `A:<arch>` (like
/// `apk index --rewrite-arch`).
pub fn rewrite_arch(stanza: &str, arch: &str) -> String {
    let mut out = String::with_capacity(stanza.len() + arch.len());
    for line in stanza.split_inclusive('\n') {
        if line.starts_with("A:") {
            out.push_str("A:");
            out.push_str(arch);
            out.push('\n');
        } else {
            out.push_str(line);
        }
    }
    out
}

pub(crate) const BLOCK: usize = 512;

/// A ustar header for a regular file: mode 0644, owner root, mtime 0, so that the same
/// input always gives the same bytes.
pub(crate) fn file_header(name: &str, size: u64) -> ApkResult<[u8; BLOCK]> {
    let mut h = tar::Header::new_ustar();
    let field = &mut h.as_old_mut().name;
    if name.len() >= field.len() {
        return Err(ApkError::Signing(format!(
            "tar entry name {name:?} is longer than 99 bytes"
        )));
    }
    field[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_username("root").map_err(ApkError::Io)?;
    h.set_groupname("root").map_err(ApkError::Io)?;
    h.set_cksum();
    let mut out = [0u8; BLOCK];
    out.copy_from_slice(h.as_bytes());
    Ok(out)
}

/// Appends one regular-file entry (header, data, zero padding to the block size).
pub(crate) fn push_tar_file(out: &mut Vec<u8>, name: &str, data: &[u8]) -> ApkResult<()> {
    out.extend_from_slice(&file_header(name, data.len() as u64)?);
    out.extend_from_slice(data);
    let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
    out.resize(out.len() + pad, 0);
    Ok(())
}

/// One gzip member with a fixed header (mtime 0, no name), best compression.
pub(crate) fn gzip(data: &[u8]) -> ApkResult<Vec<u8>> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(3)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(data).map_err(ApkError::Io)?;
    enc.finish().map_err(ApkError::Io)
}

/// Unsigned `APKINDEX.tar.gz`: one gzip member holding a ustar tar with `DESCRIPTION`
/// (if `description` is non-empty) and `APKINDEX` (the stanzas concatenated in the given
/// order), end blocks included. Same input, same bytes.
pub fn write_unsigned_index(description: &str, stanzas: &[&str]) -> ApkResult<Vec<u8>> {
    let mut tar = Vec::new();
    if !description.is_empty() {
        push_tar_file(&mut tar, "DESCRIPTION", description.as_bytes())?;
    }
    push_tar_file(&mut tar, "APKINDEX", stanzas.concat().as_bytes())?;
    tar.extend_from_slice(&[0u8; 2 * BLOCK]);
    gzip(&tar)
}

/// One signature of `message` per (key, algorithm), in the order given. With several,
/// each after the first is signed on a thread of its own while this one signs the first,
/// so the caller waits for the slowest signature rather than for their sum.
fn signatures(
    message: &[u8],
    signers: &[(&SigningKey, SignatureAlgorithm)],
) -> ApkResult<Vec<Vec<u8>>> {
    let Some((&(key, first), others)) = signers.split_first() else {
        return Err(ApkError::Signing(
            "no signing key or no signature algorithm given".into(),
        ));
    };
    if others.is_empty() {
        return Ok(vec![key.sign(first, message)?]);
    }
    std::thread::scope(|scope| {
        let spawned: Vec<_> = others
            .iter()
            .map(|&(key, alg)| {
                let thread = std::thread::Builder::new()
                    .name(format!("sign-{alg}"))
                    .spawn_scoped(scope, move || key.sign(alg, message));
                (key, alg, thread)
            })
            .collect();
        let mut results = Vec::with_capacity(signers.len());
        results.push(key.sign(first, message));
        for (key, alg, thread) in spawned {
            results.push(match thread {
                Ok(handle) => handle.join().unwrap_or_else(|_| {
                    Err(ApkError::Signing(format!("{alg} signing thread panicked")))
                }),
                // No thread to be had: sign on this one.
                Err(_) => key.sign(alg, message),
            });
        }
        results.into_iter().collect()
    })
}

/// Builds a signature member: a gzip member holding a *cut* tar (no end blocks, which
/// apk would read as the end of the whole stream) of `.SIGN.<ALG>.<keyname>` entries, in
/// the order of `algorithms`.
pub(crate) fn signature_member(
    message: &[u8],
    key: &SigningKey,
    algorithms: &[SignatureAlgorithm],
) -> ApkResult<Vec<u8>> {
    signature_member_by(message, &[key], algorithms)
}

/// A signature member with an entry per key and algorithm: the keys in the order given
/// (newest first: apk verifies with the first entry whose key it has), each in the order
/// of `algorithms`.
fn signature_member_by(
    message: &[u8],
    keys: &[&SigningKey],
    algorithms: &[SignatureAlgorithm],
) -> ApkResult<Vec<u8>> {
    let signers: Vec<(&SigningKey, SignatureAlgorithm)> = keys
        .iter()
        .flat_map(|&key| algorithms.iter().map(move |&alg| (key, alg)))
        .collect();
    let signatures = signatures(message, &signers)?;
    let mut tar = Vec::new();
    for ((key, alg), signature) in signers.iter().zip(&signatures) {
        let name = format!(".SIGN.{}.{}", alg.as_str(), key.key_name());
        push_tar_file(&mut tar, &name, signature)?;
    }
    gzip(&tar)
}

/// Prepends the signature member to an unsigned index: a separate gzip member whose
/// entries each sign the exact bytes of `unsigned`.
pub fn sign_index(
    unsigned: &[u8],
    key: &SigningKey,
    algorithms: &[SignatureAlgorithm],
) -> ApkResult<Vec<u8>> {
    sign_index_by(unsigned, &[key], algorithms)
}

/// `sign_index` with several keys: every key signs in every algorithm, the keys in the
/// order given (an owner's newest key first, so that a client holding it uses it, and one
/// holding only an older key still finds that key's signatures after).
pub fn sign_index_by(
    unsigned: &[u8],
    keys: &[&SigningKey],
    algorithms: &[SignatureAlgorithm],
) -> ApkResult<Vec<u8>> {
    let mut out = signature_member_by(unsigned, keys, algorithms)?;
    out.extend_from_slice(unsigned);
    Ok(out)
}

/// Checks a signed index as a client holding only the key `key_name` does: at least one
/// signature entry is by that key, and every one by it verifies over the bytes after the
/// signature member, which are one gzip member (entries by other keys, which such a
/// client skips, are not checked). Returns the decompressed tar: what two indexes
/// compressed differently have in common.
pub fn verified_content(signed: &[u8], public_key_pem: &str, key_name: &str) -> ApkResult<Vec<u8>> {
    let (signatures, unsigned) = super::sign::split_signed(signed)?;
    let mut verified = 0;
    for (entry, signature) in &signatures {
        let (alg, name) = entry
            .strip_prefix(".SIGN.")
            .and_then(|rest| rest.split_once('.'))
            .ok_or_else(|| ApkError::Malformed(format!("signature entry {entry:?}")))?;
        if name != key_name {
            continue;
        }
        let alg: SignatureAlgorithm = alg.parse().map_err(ApkError::Malformed)?;
        super::sign::verify(public_key_pem, alg, unsigned, signature)?;
        verified += 1;
    }
    if verified == 0 {
        return Err(ApkError::Malformed(format!(
            "the index carries no signature by {key_name}"
        )));
    }
    let mut decoder = flate2::read::GzDecoder::new(unsigned);
    let mut content = Vec::new();
    std::io::Read::read_to_end(&mut decoder, &mut content).map_err(ApkError::Io)?;
    if !decoder.into_inner().is_empty() {
        return Err(ApkError::Malformed(
            "the index holds more than one gzip member after its signatures".into(),
        ));
    }
    Ok(content)
}

/// The fields of one index stanza, as [`render_stanza`] writes them (and `apk index`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StanzaFields {
    /// `C:`, Q1 followed by the base64 SHA-1 of the control member.
    pub checksum: String,
    pub name: String,
    pub version: String,
    pub arch: String,
    /// `S:`, the package file's size.
    pub size: Option<u64>,
    /// `I:`, the installed size.
    pub installed_size: Option<u64>,
    pub description: String,
    pub url: String,
    pub license: String,
    pub origin: Option<String>,
    pub maintainer: Option<String>,
    /// `t:`, Unix seconds.
    pub build_time: Option<i64>,
    pub commit: Option<String>,
    pub provider_priority: Option<u64>,
    pub depends: Vec<String>,
    pub provides: Vec<String>,
    pub install_if: Vec<String>,
}

/// Reads the fields of one stanza; unknown lines are skipped, and a number that does not
/// parse is left out rather than failing the whole stanza.
pub fn parse_stanza(stanza: &str) -> StanzaFields {
    let mut f = StanzaFields::default();
    let list = |v: &str| v.split_whitespace().map(str::to_string).collect();
    for line in stanza.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key {
            "C" => f.checksum = value.to_string(),
            "P" => f.name = value.to_string(),
            "V" => f.version = value.to_string(),
            "A" => f.arch = value.to_string(),
            "S" => f.size = value.parse().ok(),
            "I" => f.installed_size = value.parse().ok(),
            "T" => f.description = value.to_string(),
            "U" => f.url = value.to_string(),
            "L" => f.license = value.to_string(),
            "o" => f.origin = Some(value.to_string()),
            "m" => f.maintainer = Some(value.to_string()),
            "t" => f.build_time = value.parse().ok(),
            "c" => f.commit = Some(value.to_string()),
            "k" => f.provider_priority = value.parse().ok(),
            "D" => f.depends = list(value),
            "p" => f.provides = list(value),
            "i" => f.install_if = list(value),
            _ => {}
        }
    }
    f
}

/// What a signed index holds: its signature entry names, in order, and how many packages
/// its `APKINDEX` lists.
pub fn describe_signed_index(signed: &[u8]) -> ApkResult<(Vec<String>, usize)> {
    let (signatures, unsigned) = super::sign::split_signed(signed)?;
    // The index may be compressed in several gzip members. Its bytes are the registry's
    // own output, not a client's, so no decompression limit is applied here.
    let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(unsigned));
    let mut entries = None;
    for entry in archive.entries().map_err(ApkError::Io)? {
        let mut entry = entry.map_err(ApkError::Io)?;
        if entry.path().map_err(ApkError::Io)?.to_str() == Some("APKINDEX") {
            // Counted line by line: the text is never held whole.
            let mut lines = std::io::BufReader::new(&mut entry);
            let mut line = Vec::new();
            let mut count = 0;
            loop {
                line.clear();
                let read = std::io::BufRead::read_until(&mut lines, b'\n', &mut line)
                    .map_err(ApkError::Io)?;
                if read == 0 {
                    break;
                }
                count += usize::from(line.starts_with(b"P:"));
            }
            entries = Some(count);
            break;
        }
    }
    let entries =
        entries.ok_or_else(|| ApkError::Malformed("the index has no APKINDEX entry".into()))?;
    Ok((
        signatures.into_iter().map(|(name, _)| name).collect(),
        entries,
    ))
}

/// What an index someone else publishes says of one package: what a dependency may be
/// resolved against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The `p:` atoms (`so:libfoo.so.1=1.2`, `cmd:foo`).
    pub provides: Vec<String>,
}

/// The public key an index must be signed with: its PEM and its apk key name (the file
/// name in `/etc/apk/keys` that the signature entries name).
#[derive(Debug, Clone, Copy)]
pub struct TrustedKey<'a> {
    pub pem: &'a str,
    pub name: &'a str,
}

/// Reads the packages an `APKINDEX.tar.gz` lists (signed or not), decompressing at most
/// `max_bytes`, an error beyond. With `key`, the index must carry a signature entry by
/// that key name that verifies (the first such entry of a known algorithm, as apk picks
/// it); without, signatures are skipped unchecked.
pub fn read_listed_packages(
    data: &[u8],
    key: Option<TrustedKey<'_>>,
    max_bytes: u64,
) -> ApkResult<Vec<ListedPackage>> {
    let unsigned = match (super::sign::split_signed(data), key) {
        (Ok((signatures, unsigned)), Some(key)) => {
            let trusted = signatures.iter().find_map(|(entry, signature)| {
                let (alg, name) = entry.strip_prefix(".SIGN.")?.split_once('.')?;
                let alg = alg.parse::<SignatureAlgorithm>().ok()?;
                (name == key.name).then_some((alg, signature))
            });
            let (alg, signature) = trusted.ok_or_else(|| {
                ApkError::Malformed(format!("the index carries no signature by {}", key.name))
            })?;
            super::sign::verify(key.pem, alg, unsigned, signature)?;
            unsigned
        }
        (Ok((_, unsigned)), None) => unsigned,
        (Err(_), Some(key)) => {
            return Err(ApkError::Malformed(format!(
                "the index is not signed (expected a signature by {})",
                key.name
            )))
        }
        (Err(_), None) => data,
    };
    let exceeded = std::cell::Cell::new(false);
    let limited = super::stream::Limited::new(
        flate2::read::MultiGzDecoder::new(unsigned),
        max_bytes,
        &exceeded,
    );
    let too_large = || ApkError::TooLarge {
        what: "the decompressed index",
        limit: max_bytes,
    };
    let mut archive = tar::Archive::new(limited);
    let entries = archive.entries().map_err(ApkError::Io)?;
    for entry in entries {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(_) if exceeded.get() => return Err(too_large()),
            Err(e) => return Err(ApkError::Io(e)),
        };
        if entry.path().map_err(ApkError::Io)?.to_str() != Some("APKINDEX") {
            continue;
        }
        let mut text = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut entry, &mut text) {
            return Err(if exceeded.get() {
                too_large()
            } else {
                ApkError::Malformed(format!("the APKINDEX entry cannot be read: {e}"))
            });
        }
        return Ok(text
            .split("\n\n")
            .filter_map(|stanza| {
                let mut package = ListedPackage {
                    name: String::new(),
                    version: String::new(),
                    arch: String::new(),
                    provides: Vec::new(),
                };
                for line in stanza.lines() {
                    match line.split_once(':') {
                        Some(("P", v)) => package.name = v.to_string(),
                        Some(("V", v)) => package.version = v.to_string(),
                        Some(("A", v)) => package.arch = v.to_string(),
                        Some(("p", v)) => {
                            package.provides = v.split_whitespace().map(str::to_string).collect()
                        }
                        _ => {}
                    }
                }
                (!package.name.is_empty()).then_some(package)
            })
            .collect());
    }
    Err(if exceeded.get() {
        too_large()
    } else {
        ApkError::Malformed("the index has no APKINDEX entry".into())
    })
}

/// Registry stanza order: name, then version (apk ordering), then checksum.
pub fn compare_entries(a: (&str, &str, &str), b: (&str, &str, &str)) -> Ordering {
    a.0.cmp(b.0)
        .then_with(|| version::compare(a.1, b.1))
        .then_with(|| a.2.cmp(b.2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apk::sign::{split_signed, verify};
    use crate::apk::tarwalk;
    use std::io::Read;

    fn full_info() -> PkgInfo {
        PkgInfo {
            pkgname: "hello".into(),
            pkgver: "2.12.1-r0".into(),
            arch: "x86_64".into(),
            pkgdesc: Some("Hello world".into()),
            url: Some("https://example.org".into()),
            license: Some("GPL-3.0-or-later".into()),
            origin: Some("hello".into()),
            maintainer: Some("M <m@example.org>".into()),
            builddate: Some(1700000000),
            commit: Some("abc123".into()),
            provider_priority: Some(100),
            size: 65536,
            depends: vec!["so:libc.musl-x86_64.so.1".into(), "!old".into()],
            provides: vec!["cmd:hello=2.12.1-r0".into()],
            install_if: vec!["a".into(), "b=1".into()],
            ..PkgInfo::default()
        }
    }

    #[test]
    fn parsed_stanza_gives_back_every_rendered_field() {
        let info = full_info();
        let fields = parse_stanza(&render_stanza(&info, "Q1abc=", 2048));
        assert_eq!(fields.checksum, "Q1abc=");
        assert_eq!(fields.name, info.pkgname);
        assert_eq!(fields.version, info.pkgver);
        assert_eq!(fields.arch, info.arch);
        assert_eq!(fields.size, Some(2048));
        assert_eq!(fields.installed_size, Some(info.size));
        assert_eq!(Some(fields.description), info.pkgdesc);
        assert_eq!(Some(fields.url), info.url);
        assert_eq!(Some(fields.license), info.license);
        assert_eq!(fields.origin, info.origin);
        assert_eq!(fields.maintainer, info.maintainer);
        assert_eq!(fields.build_time, info.builddate.map(|t| t as i64));
        assert_eq!(fields.commit, info.commit);
        assert_eq!(fields.provider_priority, info.provider_priority);
        assert_eq!(fields.depends, info.depends);
        assert_eq!(fields.provides, info.provides);
        assert_eq!(fields.install_if, info.install_if);
    }

    #[test]
    fn stanza_has_every_line_in_apk_order() {
        assert_eq!(
            render_stanza(&full_info(), "Q1abc=", 1234),
            "C:Q1abc=\nP:hello\nV:2.12.1-r0\nA:x86_64\nS:1234\nI:65536\nT:Hello world\n\
             U:https://example.org\nL:GPL-3.0-or-later\no:hello\nm:M <m@example.org>\n\
             t:1700000000\nc:abc123\nk:100\nD:so:libc.musl-x86_64.so.1 !old\n\
             p:cmd:hello=2.12.1-r0\ni:a b=1\n\n"
        );
    }

    #[test]
    fn stanza_writes_conditional_lines_like_apk() {
        let info = PkgInfo {
            pkgname: "m".into(),
            pkgver: "1-r0".into(),
            arch: "noarch".into(),
            builddate: Some(0),
            provider_priority: Some(0),
            commit: Some(String::new()),
            ..PkgInfo::default()
        };
        // T, U, L always; o, m absent; t, k zero; c present but empty.
        assert_eq!(
            render_stanza(&info, "Q1x", 7),
            "C:Q1x\nP:m\nV:1-r0\nA:noarch\nS:7\nI:0\nT:\nU:\nL:\nc:\n\n"
        );
    }

    #[test]
    fn rewrite_arch_replaces_only_the_arch_line() {
        let s = render_stanza(&full_info(), "Q1abc=", 1);
        let r = rewrite_arch(&s, "aarch64");
        assert_eq!(r, s.replace("\nA:x86_64\n", "\nA:aarch64\n"));
    }

    fn gunzip_one(bytes: &[u8]) -> (Vec<u8>, usize) {
        let mut tap = crate::apk::stream::Tap::new(bytes);
        let mut out = Vec::new();
        flate2::bufread::GzDecoder::new(&mut tap)
            .read_to_end(&mut out)
            .expect("gzip");
        (out, tap.consumed as usize)
    }

    /// (name, typeflag, data) of every entry, and how the tar ended.
    fn tar_list(tar: &[u8]) -> (Vec<(String, u8, Vec<u8>)>, tarwalk::End) {
        let mut out = Vec::new();
        let end = tarwalk::walk(&mut &tar[..], 1 << 20, |e, data| {
            let mut content = Vec::new();
            data.read_to_end(&mut content)
                .map_err(crate::apk::ApkError::Io)?;
            out.push((e.display_path(), e.typeflag, content));
            Ok(())
        })
        .expect("tar");
        (out, end)
    }

    #[test]
    fn unsigned_index_is_one_gzip_member_with_description_then_apkindex() {
        let stanzas = ["C:Q1a\nP:a\n\n", "C:Q1b\nP:b\n\n"];
        let gz = write_unsigned_index("my repo", &stanzas).unwrap();
        assert_eq!(
            gz,
            write_unsigned_index("my repo", &stanzas).unwrap(),
            "deterministic"
        );
        // Fixed gzip header: deflate, no flags, mtime 0, max compression, Unix.
        assert_eq!(gz[..10], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3]);
        let (tar, consumed) = gunzip_one(&gz);
        assert_eq!(consumed, gz.len(), "exactly one gzip member");
        let (entries, end) = tar_list(&tar);
        assert_eq!(end, tarwalk::End::ZeroBlock);
        assert_eq!(
            entries,
            [
                ("DESCRIPTION".to_string(), b'0', b"my repo".to_vec()),
                ("APKINDEX".to_string(), b'0', stanzas.concat().into_bytes()),
            ]
        );
        // header + 1 data block each, then exactly two zero blocks.
        assert_eq!(tar.len(), 4 * 512 + 1024);
        assert!(tar[4 * 512..].iter().all(|&b| b == 0));
        let header = tar::Header::from_byte_slice(&tar[..512]);
        assert_eq!(header.mode().ok(), Some(0o644));
        assert_eq!(header.mtime().ok(), Some(0));
        assert_eq!(header.uid().ok(), Some(0));
        assert_eq!(&tar[257..263], b"ustar\0");
    }

    #[test]
    fn unsigned_index_without_description_has_only_apkindex() {
        let gz = write_unsigned_index("", &[]).unwrap();
        let (tar, _) = gunzip_one(&gz);
        let (entries, _) = tar_list(&tar);
        assert_eq!(entries, [("APKINDEX".to_string(), b'0', Vec::new())]);
    }

    fn committed_key() -> SigningKey {
        let pem = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/test-signing-key.pem"
        ))
        .expect("fixture present");
        SigningKey::from_pkcs8_pem("test", &pem).expect("valid key")
    }

    #[test]
    fn signed_index_round_trips_for_every_algorithm() {
        let key = committed_key();
        let unsigned = write_unsigned_index("d", &["C:Q1a\nP:a\n\n"]).unwrap();
        let algs = [
            SignatureAlgorithm::Rsa,
            SignatureAlgorithm::Rsa256,
            SignatureAlgorithm::Rsa512,
        ];
        let signed = sign_index(&unsigned, &key, &algs).expect("sign");
        assert!(signed.ends_with(&unsigned), "index bytes unchanged");
        let (sigs, rest) = split_signed(&signed).expect("split");
        assert_eq!(rest, &unsigned[..]);
        let names: Vec<&str> = sigs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                ".SIGN.RSA.test-90b210e7.rsa.pub",
                ".SIGN.RSA256.test-90b210e7.rsa.pub",
                ".SIGN.RSA512.test-90b210e7.rsa.pub",
            ]
        );
        for ((_, sig), alg) in sigs.iter().zip(algs) {
            verify(&key.public_key_pem().unwrap(), alg, rest, sig).expect("verifies");
        }
        let mut tampered = unsigned.clone();
        tampered[20] ^= 1;
        assert!(verify(
            &key.public_key_pem().unwrap(),
            algs[0],
            &tampered,
            &sigs[0].1
        )
        .is_err());
    }

    #[test]
    fn listed_packages_are_read_from_signed_and_unsigned_indexes() {
        let key = committed_key();
        let pem = key.public_key_pem().unwrap();
        let stanzas = [
            "C:Q1a\nP:foo\nV:1.0-r0\nA:x86_64\np:so:libfoo.so.1=1.0 cmd:foo\n\n",
            "C:Q1b\nP:bar\nV:2-r1\nA:noarch\n\n",
        ];
        let unsigned = write_unsigned_index("d", &stanzas).unwrap();
        let listed = read_listed_packages(&unsigned, None, 1 << 20).expect("unsigned");
        assert_eq!(listed.len(), 2);
        assert_eq!(
            listed[0],
            ListedPackage {
                name: "foo".into(),
                version: "1.0-r0".into(),
                arch: "x86_64".into(),
                provides: vec!["so:libfoo.so.1=1.0".into(), "cmd:foo".into()],
            }
        );
        let trusted = TrustedKey {
            pem: &pem,
            name: key.key_name(),
        };
        let signed = sign_index(&unsigned, &key, &[SignatureAlgorithm::Rsa]).unwrap();
        assert_eq!(
            read_listed_packages(&signed, Some(trusted), 1 << 20).unwrap(),
            listed
        );
        assert_eq!(
            read_listed_packages(&signed, None, 1 << 20).unwrap(),
            listed
        );
        // A key configured: an unsigned index, one signed by another name, or a tampered
        // one is refused.
        assert!(read_listed_packages(&unsigned, Some(trusted), 1 << 20).is_err());
        let other = TrustedKey {
            pem: &pem,
            name: "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub",
        };
        assert!(read_listed_packages(&signed, Some(other), 1 << 20).is_err());
        let mut tampered = signed.clone();
        let at = tampered.len() - unsigned.len() + 20;
        tampered[at] ^= 1;
        assert!(read_listed_packages(&tampered, Some(trusted), 1 << 20).is_err());
    }

    #[test]
    fn listed_packages_over_the_limit_are_refused() {
        let stanza = format!("C:Q1a\nP:foo\nV:1\nA:x86_64\nT:{}\n\n", "x".repeat(4000));
        let unsigned = write_unsigned_index("", &[&stanza]).unwrap();
        assert!(matches!(
            read_listed_packages(&unsigned, None, 1000),
            Err(ApkError::TooLarge { .. })
        ));
    }

    #[test]
    fn signature_member_is_a_separate_gzip_member_with_a_cut_tar() {
        let key = committed_key();
        let unsigned = write_unsigned_index("", &["C:Q1a\nP:a\n\n"]).unwrap();
        let signed = sign_index(&unsigned, &key, &[SignatureAlgorithm::Rsa]).expect("sign");
        let (tar, consumed) = gunzip_one(&signed);
        assert_eq!(consumed + unsigned.len(), signed.len(), "two gzip members");
        let (entries, end) = tar_list(&tar);
        assert_eq!(end, tarwalk::End::Cut, "no end blocks in the signature tar");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].1, b'0');
        // A 1024-bit key gives a 128-byte signature: header + one data block, nothing else.
        assert_eq!(entries[0].2.len(), 128);
        assert_eq!(tar.len(), 1024);
    }

    #[test]
    fn signatures_made_in_parallel_are_those_made_one_after_another_in_order() {
        use SignatureAlgorithm::{Rsa, Rsa256, Rsa512};
        let key = committed_key();
        let unsigned = write_unsigned_index("d", &["C:Q1a\nP:a\n\n"]).unwrap();
        for algs in [
            &[Rsa256][..],
            &[Rsa256, Rsa],
            &[Rsa, Rsa256],
            &[Rsa512, Rsa, Rsa256],
            &[Rsa, Rsa],
        ] {
            let mut tar = Vec::new();
            for &alg in algs {
                let name = format!(".SIGN.{alg}.{}", key.key_name());
                push_tar_file(&mut tar, &name, &key.sign(alg, &unsigned).unwrap()).unwrap();
            }
            assert_eq!(
                signature_member(&unsigned, &key, algs).unwrap(),
                gzip(&tar).unwrap(),
                "{algs:?}"
            );
        }
    }

    #[test]
    fn signing_needs_at_least_one_algorithm() {
        let key = committed_key();
        assert!(sign_index(b"x", &key, &[]).is_err());
        assert!(sign_index_by(b"x", &[], &[SignatureAlgorithm::Rsa]).is_err());
    }

    #[test]
    fn several_keys_sign_newest_first_each_in_every_algorithm() {
        use SignatureAlgorithm::{Rsa, Rsa256};
        let old = committed_key();
        let new = SigningKey::generate("test", 1024).unwrap();
        let unsigned = write_unsigned_index("d", &["C:Q1a\nP:a\n\n"]).unwrap();
        let signed = sign_index_by(&unsigned, &[&new, &old], &[Rsa256, Rsa]).unwrap();
        let mut tar = Vec::new();
        for key in [&new, &old] {
            for alg in [Rsa256, Rsa] {
                let name = format!(".SIGN.{alg}.{}", key.key_name());
                push_tar_file(&mut tar, &name, &key.sign(alg, &unsigned).unwrap()).unwrap();
            }
        }
        let mut expected = gzip(&tar).unwrap();
        expected.extend_from_slice(&unsigned);
        assert_eq!(signed, expected);
        // A client holding either key alone verifies the index with it.
        let content = gunzip_one(&unsigned).0;
        for key in [&new, &old] {
            let pem = key.public_key_pem().unwrap();
            assert_eq!(
                verified_content(&signed, &pem, key.key_name()).unwrap(),
                content
            );
        }
        // A key the index names with another key's material, or names not at all.
        let wrong = new.public_key_pem().unwrap();
        assert!(verified_content(&signed, &wrong, old.key_name()).is_err());
        let only_old = sign_index(&unsigned, &old, &[Rsa256]).unwrap();
        assert!(verified_content(&only_old, &wrong, new.key_name()).is_err());
    }

    #[test]
    fn entries_sort_by_name_then_apk_version_then_checksum() {
        let mut v = vec![
            ("b", "1.0-r0", "Q1a"),
            ("a", "1.10-r0", "Q1a"),
            ("a", "1.9-r0", "Q1b"),
            ("a", "1.9-r0", "Q1a"),
            ("a", "1.9_rc1-r0", "Q1a"),
        ];
        v.sort_by(|x, y| compare_entries(*x, *y));
        assert_eq!(
            v,
            [
                ("a", "1.9_rc1-r0", "Q1a"),
                ("a", "1.9-r0", "Q1a"),
                ("a", "1.9-r0", "Q1b"),
                ("a", "1.10-r0", "Q1a"),
                ("b", "1.0-r0", "Q1a"),
            ]
        );
    }
}
