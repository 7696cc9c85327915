//! One gzip member of a package or index read as a tar, straight from the decoder: the
//! shared reader under the package parser and the signed-index splitter.

use super::stream::{Limited, Tap};
use super::tarwalk::{self, Entry};
use super::{ApkError, ApkResult};
use std::cell::Cell;
use std::io::{self, Read};

fn malformed(msg: impl Into<String>) -> ApkError {
    ApkError::Malformed(msg.into())
}

/// PAX and GNU long-name headers larger than this are refused before being buffered.
const MAX_TAR_META: u64 = 1 << 20;

/// A regular file read from a signature member.
pub(crate) struct MemberFile {
    pub name: String,
    pub data: Vec<u8>,
}

/// Turns an I/O error that surfaced through the decoder pipeline into what it really
/// was: a failing source (`Io`), a limit (`TooLarge`), or bad data (`Malformed`).
pub(crate) fn classify(
    err: ApkError,
    source_failed: bool,
    exceeded: bool,
    member: &str,
    limit_what: &'static str,
    limit: u64,
) -> ApkError {
    let ApkError::Io(e) = err else {
        return err;
    };
    if source_failed {
        ApkError::Io(e)
    } else if exceeded {
        ApkError::TooLarge {
            what: limit_what,
            limit,
        }
    } else if e.kind() == io::ErrorKind::UnexpectedEof {
        malformed(format!("{member} is truncated"))
    } else {
        malformed(format!("{member} is not valid gzip data ({e})"))
    }
}

/// Reads one whole gzip member as a tar, straight from the decoder, at most `limit`
/// decompressed bytes. `visit` sees each entry and a reader of exactly its data; what it
/// leaves unread is read through (and hashed all the same: the hashes are over the
/// compressed bytes). The tar may be cut or end with zero blocks, but only zeros may
/// follow those, or apk would read on into entries that were never checked. Either way
/// the member is read to its trailer.
pub(crate) fn read_member<R: Read>(
    tap: &mut Tap<R>,
    member: &str,
    limit_what: &'static str,
    limit: u64,
    visit: impl FnMut(&Entry, &mut dyn Read) -> ApkResult<()>,
) -> ApkResult<()> {
    let exceeded = Cell::new(false);
    let result = {
        let gz = flate2::bufread::GzDecoder::new(&mut *tap);
        let mut tar = Limited::new(gz, limit, &exceeded);
        tarwalk::walk(&mut tar, MAX_TAR_META, visit)
            .and_then(|_| tarwalk::expect_only_zeros(&mut tar))
    };
    result.map_err(|e| {
        classify(
            e,
            tap.source_failed,
            exceeded.get(),
            member,
            limit_what,
            limit,
        )
    })
}

/// An entry's data, whole. Its size was checked against a limit, or the member's limit
/// bounds it.
pub(crate) fn read_entry(entry: &Entry, data: &mut dyn Read) -> ApkResult<Vec<u8>> {
    let mut out = Vec::new();
    data.read_to_end(&mut out).map_err(ApkError::Io)?;
    if out.len() as u64 != entry.size {
        return Err(malformed("tar archive is truncated inside an entry"));
    }
    Ok(out)
}

fn kind_name(typeflag: u8) -> &'static str {
    match typeflag {
        tarwalk::HARD_LINK => "hard link",
        tarwalk::SYMLINK => "symbolic link",
        tarwalk::DIRECTORY => "directory",
        b'3' | b'4' => "device node",
        b'6' => "FIFO",
        _ => "special entry",
    }
}

/// Checks that an entry of a signature or control member is a plain regular file at the
/// top, with a name of the given form; returns the name.
pub(crate) fn plain_file(
    entry: &Entry,
    member: &str,
    name_ok: impl Fn(&str) -> bool,
    expected: &str,
) -> ApkResult<String> {
    let shown = entry.display_path();
    if !entry.is_regular() {
        return Err(malformed(format!(
            "{member} entry {shown:?} is a {}; only regular files are allowed",
            kind_name(entry.typeflag)
        )));
    }
    if entry.path.first() == Some(&b'/') {
        return Err(malformed(format!(
            "{member} entry {shown:?} has an absolute path"
        )));
    }
    if entry.path.split(|&b| b == b'/').any(|c| c == b"..") {
        return Err(malformed(format!(
            "{member} entry {shown:?} leaves the package root"
        )));
    }
    std::str::from_utf8(&entry.path)
        .ok()
        .filter(|n| !n.contains('/') && !n.contains('\0') && name_ok(n))
        .map(str::to_string)
        .ok_or_else(|| malformed(format!("{member} entry {shown:?} is not {expected}")))
}

pub(crate) fn check_gzip_magic<R: Read>(tap: &mut Tap<R>) -> ApkResult<()> {
    let head = tap.peek(3).map_err(ApkError::Io)?;
    if head.starts_with(b"ADB") {
        return Err(ApkError::UnsupportedV3);
    }
    if head.is_empty() {
        return Err(malformed("the file is empty"));
    }
    if !head.starts_with(&[0x1f, 0x8b]) {
        return Err(malformed(
            "not an apk v2 package: the file is not gzip-compressed",
        ));
    }
    Ok(())
}

/// Reads the first gzip member of `data` as a tar of regular files; returns them and
/// the member's compressed length. Used to split signed indexes.
pub(crate) fn read_first_member(data: &[u8], limit: u64) -> ApkResult<(Vec<MemberFile>, usize)> {
    let mut tap = Tap::new(data);
    check_gzip_magic(&mut tap)?;
    let mut files = Vec::new();
    read_member(
        &mut tap,
        "signature member",
        "decompressed signature member",
        limit,
        |entry, data| {
            let name = plain_file(entry, "signature member", |_| true, "a file name")?;
            files.push(MemberFile {
                name,
                data: read_entry(entry, data)?,
            });
            Ok(())
        },
    )?;
    let len = usize::try_from(tap.consumed).map_err(|_| malformed("member too large"))?;
    Ok((files, len))
}
