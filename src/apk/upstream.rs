//! Indexes someone else signs (the upstream of a remote repository): checked against the
//! upstream's keys as apk checks them, and read for what the registry checks each
//! package file against.

use std::collections::HashMap;

use super::index::parse_stanza;
use super::sign::{split_signed, verify, SignatureAlgorithm};
use super::{ApkError, ApkResult};

/// One package an upstream index lists, as its file is checked before it is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamEntry {
    /// `C:`, the identity of the file's control member.
    pub checksum: String,
    /// `S:`, the file's size.
    pub size: u64,
}

/// A trusted upstream key: its PEM and its apk key name.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamKey<'a> {
    pub pem: &'a str,
    pub name: &'a str,
}

/// The unsigned part of `signed` (the bytes its signatures cover), when one of its
/// signature entries is by one of `keys` and verifies, as apk accepts an index: the key
/// name that verified and the unsigned bytes. An index no trusted signature verifies is
/// an error naming the keys it was signed by.
pub fn verified_unsigned<'d>(
    signed: &'d [u8],
    keys: &[UpstreamKey<'_>],
) -> ApkResult<(String, &'d [u8])> {
    let (signatures, unsigned) = split_signed(signed)
        .map_err(|_| ApkError::Malformed("the index carries no signature".into()))?;
    let mut seen = Vec::new();
    for (entry, signature) in &signatures {
        let Some((alg, name)) = entry
            .strip_prefix(".SIGN.")
            .and_then(|rest| rest.split_once('.'))
        else {
            continue;
        };
        if !seen.iter().any(|s| s == name) {
            seen.push(name.to_string());
        }
        let Ok(alg) = alg.parse::<SignatureAlgorithm>() else {
            continue;
        };
        for key in keys.iter().filter(|key| key.name == name) {
            if verify(key.pem, alg, unsigned, signature).is_ok() {
                return Ok((name.to_string(), unsigned));
            }
        }
    }
    Err(ApkError::Malformed(format!(
        "no signature of the index verifies with the upstream keys (signed by {})",
        if seen.is_empty() {
            "nothing".to_string()
        } else {
            seen.join(", ")
        }
    )))
}

/// The packages of an index's unsigned part by file name (`{name}-{version}.apk`),
/// decompressing at most `max_bytes` (an error beyond).
pub fn entries(unsigned: &[u8], max_bytes: u64) -> ApkResult<HashMap<String, UpstreamEntry>> {
    let text = apkindex_text(unsigned, max_bytes)?;
    let mut out = HashMap::new();
    for stanza in text.split("\n\n") {
        let fields = parse_stanza(stanza);
        let (Some(size), false, false) = (
            fields.size,
            fields.name.is_empty(),
            fields.checksum.is_empty(),
        ) else {
            continue;
        };
        out.insert(
            format!("{}-{}.apk", fields.name, fields.version),
            UpstreamEntry {
                checksum: fields.checksum,
                size,
            },
        );
    }
    Ok(out)
}

/// One package an index lists: its file name and its entry as the index has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedStanza {
    /// `{name}-{version}.apk`.
    pub filename: String,
    pub name: String,
    pub version: String,
    /// `C:`.
    pub checksum: String,
    /// The entry's lines, each ending with a newline, then the blank line that ends it:
    /// ready to be written into another index.
    pub stanza: String,
}

/// The packages of an index's unsigned part in the order it lists them, each entry as it
/// is written there, decompressing at most `max_bytes` (an error beyond). Entries without
/// a name, a version or a `C:` are left out, as apk leaves them.
pub fn stanzas(unsigned: &[u8], max_bytes: u64) -> ApkResult<Vec<ListedStanza>> {
    let text = apkindex_text(unsigned, max_bytes)?;
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let lines: Vec<&str> = stanza.lines().filter(|l| !l.is_empty()).collect();
        if lines.is_empty() {
            continue;
        }
        let fields = parse_stanza(stanza);
        if fields.name.is_empty() || fields.version.is_empty() || fields.checksum.is_empty() {
            continue;
        }
        let mut text = String::with_capacity(stanza.len() + 2);
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        text.push('\n');
        out.push(ListedStanza {
            filename: format!("{}-{}.apk", fields.name, fields.version),
            name: fields.name,
            version: fields.version,
            checksum: fields.checksum,
            stanza: text,
        });
    }
    Ok(out)
}

/// The `APKINDEX` entry of an index's unsigned part, decompressing at most `max_bytes`.
fn apkindex_text(unsigned: &[u8], max_bytes: u64) -> ApkResult<String> {
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
    let entries = archive.entries().map_err(|e| {
        if exceeded.get() {
            too_large()
        } else {
            ApkError::Malformed(format!("the index cannot be read: {e}"))
        }
    })?;
    for entry in entries {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(_) if exceeded.get() => return Err(too_large()),
            Err(e) => {
                return Err(ApkError::Malformed(format!(
                    "the index cannot be read: {e}"
                )))
            }
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
        return Ok(text);
    }
    Err(if exceeded.get() {
        too_large()
    } else {
        ApkError::Malformed("the index has no APKINDEX entry".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apk::index::{sign_index, write_unsigned_index};
    use crate::apk::sign::SigningKey;

    fn committed_key() -> SigningKey {
        let pem = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/test-signing-key.pem"
        ))
        .unwrap();
        SigningKey::from_pkcs8_pem("upstream", &pem).unwrap()
    }

    const STANZA: &str = "C:Q1abc=\nP:foo\nV:1.0-r0\nA:x86_64\nS:1234\nI:1\nT:d\nU:u\nL:MIT";

    #[test]
    fn index_signed_by_a_trusted_key_gives_its_entries() {
        let key = committed_key();
        let unsigned = write_unsigned_index("up", &[STANZA]).unwrap();
        let signed = sign_index(&unsigned, &key, &[SignatureAlgorithm::Rsa]).unwrap();
        let pem = key.public_key_pem().unwrap();
        let trusted = [UpstreamKey {
            pem: &pem,
            name: key.key_name(),
        }];
        let (name, part) = verified_unsigned(&signed, &trusted).unwrap();
        assert_eq!(name, key.key_name());
        assert_eq!(part, unsigned.as_slice());
        let entries = entries(part, 1 << 20).unwrap();
        assert_eq!(
            entries.get("foo-1.0-r0.apk"),
            Some(&UpstreamEntry {
                checksum: "Q1abc=".into(),
                size: 1234
            })
        );
        assert!(matches!(
            super::entries(part, 100),
            Err(ApkError::TooLarge { .. })
        ));
    }

    #[test]
    fn index_signed_by_another_key_or_not_at_all_is_refused() {
        let key = committed_key();
        let other = SigningKey::generate("other", 1024).unwrap();
        let unsigned = write_unsigned_index("up", &[STANZA]).unwrap();
        let signed = sign_index(&unsigned, &other, &[SignatureAlgorithm::Rsa]).unwrap();
        let pem = key.public_key_pem().unwrap();
        let trusted = [UpstreamKey {
            pem: &pem,
            name: key.key_name(),
        }];
        let err = verified_unsigned(&signed, &trusted)
            .unwrap_err()
            .to_string();
        assert!(err.contains(other.key_name()), "{err}");
        assert!(verified_unsigned(&unsigned, &trusted).is_err());
    }

    #[test]
    fn stanzas_come_in_index_order_ready_to_be_written_again() {
        let second = "C:Q1def=\nP:bar\nV:2-r0\nA:x86_64\nS:9\nI:1\nT:b\nU:\nL:\n\n";
        let nameless = "C:Q1ghi=\nV:1-r0\nS:1\n\n";
        let first = format!("{STANZA}\n\n");
        let unsigned = write_unsigned_index("up", &[&first, nameless, second]).unwrap();
        let listed = stanzas(&unsigned, 1 << 20).unwrap();
        let names: Vec<&str> = listed.iter().map(|l| l.filename.as_str()).collect();
        assert_eq!(names, ["foo-1.0-r0.apk", "bar-2-r0.apk"]);
        assert_eq!(listed[0].stanza, first);
        assert_eq!(listed[1].stanza, second);
        assert_eq!(listed[1].checksum, "Q1def=");
        let again: Vec<&str> = listed.iter().map(|l| l.stanza.as_str()).collect();
        let rewritten = write_unsigned_index("up", &again).unwrap();
        assert_eq!(stanzas(&rewritten, 1 << 20).unwrap(), listed);
        assert!(matches!(
            stanzas(&unsigned, 100),
            Err(ApkError::TooLarge { .. })
        ));
    }
}
