//! A strict streaming tar reader for untrusted archives.
//!
//! The `tar` crate is used for header field decoding and PAX record parsing, but the
//! stream is driven here so that extension headers (PAX `x`/`g`, GNU `L`/`K`) are
//! size-limited before anything is buffered, entry data is read in bounded chunks, and a
//! "cut" tar (no end blocks, as apk writes signature and control members) is told apart
//! from one that ends with zero blocks.
//!
//! Whatever is checked here must be what apk-tools will read, or an entry could be
//! smuggled past the checks. So entry names, link targets and sizes are taken the way
//! apk's tar reader takes them (the ustar prefix whenever it is set, the header's size
//! field, never a PAX `size`; a link target from PAX `linkpath`, else the header's link
//! name field), and anything apk would read differently is refused: a PAX `size` that
//! disagrees with the header, a PAX record apk would parse differently or skip, a PAX
//! `linkpath` on an entry that is not a link (apk makes a regular file with one a hard
//! link), a GNU `K` long link name (apk ignores it), an entry type apk skips (its name
//! or pending PAX path would then name apk's next entry), a header with an empty name
//! (apk takes it for an end block and reads on), and anything but zeros after the first
//! end block.

use super::{ApkError, ApkResult};
use std::io::{self, Read};

pub(crate) const BLOCK: usize = 512;

/// Type flags of the entries a caller may see (extension headers never reach it).
pub(crate) const REGULAR: u8 = b'0';
pub(crate) const CONTIGUOUS: u8 = b'7';
pub(crate) const HARD_LINK: u8 = b'1';
pub(crate) const SYMLINK: u8 = b'2';
pub(crate) const DIRECTORY: u8 = b'5';

/// apk refuses an archive with an entry name or link target this long or longer
/// (`PATH_MAX - 10`).
const APK_NAME_LIMIT: usize = 4096 - 10;

/// The entry types apk-tools reads (`3` `4` `6` are device nodes and FIFOs). It skips
/// any other type, old-style regular files (type NUL) included.
const ENTRY_TYPES: &[u8] = b"0123456";

/// One archive member as the caller sees it, with extension headers applied.
#[derive(Debug)]
pub(crate) struct Entry {
    pub path: Vec<u8>,
    pub typeflag: u8,
    pub size: u64,
    /// The target of a hard or symbolic link as apk takes it: the PAX `linkpath` record
    /// if there is one, else the header's link name field. `None` for other entries.
    pub link: Option<Vec<u8>>,
}

impl Entry {
    pub fn is_regular(&self) -> bool {
        matches!(self.typeflag, REGULAR | CONTIGUOUS)
    }

    pub fn display_path(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// How the archive ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// A zero block: the tar has end-of-archive blocks.
    ZeroBlock,
    /// The input ended at a header boundary: a cut tar.
    Cut,
}

fn malformed(msg: impl Into<String>) -> ApkError {
    ApkError::Malformed(msg.into())
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` if the input ended before the first byte.
fn read_block<R: Read>(r: &mut R, buf: &mut [u8]) -> ApkResult<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(malformed("tar archive is truncated inside a header")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ApkError::Io(e)),
        }
    }
    Ok(true)
}

/// Reads and discards exactly `n` bytes.
fn skip<R: Read>(r: &mut R, n: u64) -> ApkResult<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink()).map_err(ApkError::Io)?;
    if copied != n {
        return Err(malformed("tar archive is truncated inside an entry"));
    }
    Ok(())
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// Reads an extension header's payload (at most `max_meta` bytes, never more).
fn read_meta<R: Read>(r: &mut R, size: u64, max_meta: u64) -> ApkResult<Vec<u8>> {
    if size > max_meta {
        return Err(ApkError::TooLarge {
            what: "tar extended header",
            limit: max_meta,
        });
    }
    let mut buf = Vec::new();
    r.take(size).read_to_end(&mut buf).map_err(ApkError::Io)?;
    if buf.len() as u64 != size {
        return Err(malformed(
            "tar archive is truncated inside an extended header",
        ));
    }
    skip(r, padding(size))?;
    Ok(buf)
}

fn header_checksum_ok(block: &[u8; BLOCK]) -> ApkResult<bool> {
    let header = tar::Header::from_byte_slice(block);
    let stored = header
        .cksum()
        .map_err(|_| malformed("tar header has an invalid checksum field"))?;
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    Ok(sum == stored)
}

#[derive(Default)]
struct Pending {
    /// PAX `path`: wins over every other name, as in apk.
    pax_path: Option<Vec<u8>>,
    /// PAX `linkpath`: wins over the header's link name field, as in apk.
    pax_linkpath: Option<Vec<u8>>,
    /// GNU `L` long name: used unless the header's ustar prefix is set, as in apk.
    long_name: Option<Vec<u8>>,
    /// A GNU `K` long link name was seen (apk ignores them).
    long_link: bool,
    size: Option<u64>,
    any: bool,
}

/// The bytes of a NUL-terminated header field.
fn field(block: &[u8; BLOCK], at: std::ops::Range<usize>) -> &[u8] {
    let f = &block[at];
    &f[..f.iter().position(|&b| b == 0).unwrap_or(f.len())]
}

/// The ustar prefix field (bytes 345..500). apk joins it to the name whenever its first
/// byte is set, whatever the header's magic says (a GNU header keeps times there).
fn prefix(block: &[u8; BLOCK]) -> &[u8] {
    field(block, 345..500)
}

/// The entry name as apk reads it, without extension headers: `prefix/name` when the
/// prefix is set, else the name field.
fn header_path(block: &[u8; BLOCK]) -> Vec<u8> {
    let name = field(block, 0..100);
    match prefix(block) {
        [] => name.to_vec(),
        prefix => [prefix, b"/", name].concat(),
    }
}

/// Reads `r` to its end, refusing anything but zero bytes: after an end-of-archive block
/// apk reads on, so anything there would be entries the checks never saw.
pub(crate) fn expect_only_zeros<R: Read>(r: &mut R) -> ApkResult<()> {
    let mut buf = [0u8; 8192];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ApkError::Io(e)),
        };
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(malformed(
                "tar archive has data after its end-of-archive block",
            ));
        }
    }
}

/// Applies PAX records, read the way apk-tools reads them: `<length> <key>=<value>\n`,
/// the length in decimal digits only and counting the whole record, the key up to the
/// first `=`. apk stops at the first record it cannot parse and uses the header's fields
/// instead, so any such record is refused rather than read.
fn apply_pax(mut records: &[u8], pending: &mut Pending) -> ApkResult<()> {
    let bad = || malformed("tar PAX record is malformed (apk would read it differently)");
    while !records.is_empty() {
        let digits = records.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || records.get(digits) != Some(&b' ') {
            return Err(bad());
        }
        // Digits only; a length beyond the records (however many digits) is refused.
        let len = std::str::from_utf8(&records[..digits])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&len| len <= records.len())
            .ok_or_else(bad)?;
        let (record, rest) = records.split_at(len);
        let body = record
            .get(digits + 1..)
            .and_then(|b| b.strip_suffix(b"\n"))
            .ok_or_else(bad)?;
        let eq = body.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        let (key, value) = (&body[..eq], &body[eq + 1..]);
        match key {
            b"path" => pending.pax_path = Some(value.to_vec()),
            b"linkpath" => pending.pax_linkpath = Some(value.to_vec()),
            b"size" => {
                let size = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| malformed("tar PAX size record is not a number"))?;
                pending.size = Some(size);
            }
            _ => {}
        }
        records = rest;
    }
    Ok(())
}

/// How a type flag reads in a message.
fn type_name(typeflag: u8) -> String {
    match typeflag {
        0x21..=0x7e => format!("'{}'", char::from(typeflag)),
        _ => format!("0x{typeflag:02x}"),
    }
}

/// Walks the archive, calling `visit` with each entry and a reader of exactly its data.
/// Whatever `visit` leaves unread is skipped. Stops at the first zero block or at the
/// end of the input; whatever follows a zero block is left to the caller.
pub(crate) fn walk<R: Read>(
    r: &mut R,
    max_meta: u64,
    mut visit: impl FnMut(&Entry, &mut dyn Read) -> ApkResult<()>,
) -> ApkResult<End> {
    let mut pending = Pending::default();
    let mut block = [0u8; BLOCK];
    loop {
        if !read_block(r, &mut block)? {
            if pending.any {
                return Err(malformed("tar archive ends after an extended header"));
            }
            return Ok(End::Cut);
        }
        if block.iter().all(|&b| b == 0) {
            if pending.any {
                return Err(malformed("tar archive ends after an extended header"));
            }
            return Ok(End::ZeroBlock);
        }
        if block[0] == 0 {
            return Err(malformed(
                "tar header has an empty name (apk reads it as the end of the archive)",
            ));
        }
        if !header_checksum_ok(&block)? {
            return Err(malformed("tar header checksum mismatch"));
        }
        let header = tar::Header::from_byte_slice(&block);
        let header_size = header
            .entry_size()
            .map_err(|_| malformed("tar header has an invalid size field"))?;
        let typeflag = block[156];
        match typeflag {
            b'x' => {
                let records = read_meta(r, header_size, max_meta)?;
                if pending.any {
                    return Err(malformed(
                        "tar archive has two extended headers for one entry",
                    ));
                }
                apply_pax(&records, &mut pending)?;
                pending.any = true;
            }
            b'g' => {
                read_meta(r, header_size, max_meta)?;
            }
            b'L' => {
                let mut name = read_meta(r, header_size, max_meta)?;
                while name.last() == Some(&0) {
                    name.pop();
                }
                pending.long_name = Some(name);
                pending.any = true;
            }
            b'K' => {
                read_meta(r, header_size, max_meta)?;
                pending.long_link = true;
                pending.any = true;
            }
            _ => {
                let pending = std::mem::take(&mut pending);
                // apk skips by the header's size field and never reads a PAX `size`: a
                // different one would make the two readers see different entries.
                if pending.size.is_some_and(|size| size != header_size) {
                    return Err(malformed(
                        "tar PAX size record disagrees with the header's size field",
                    ));
                }
                let size = header_size;
                let path = match (pending.pax_path, pending.long_name) {
                    (Some(path), _) => path,
                    (None, Some(long)) if prefix(&block).is_empty() => long,
                    _ => header_path(&block),
                };
                let shown = String::from_utf8_lossy(&path);
                // apk-tools 2 keeps a header's size in 32 bits: a larger one wraps, and apk
                // would read entries from inside this one's data that were never checked
                // here. (Extension headers are bounded far lower by `max_meta`.)
                if header_size > u64::from(u32::MAX) {
                    return Err(malformed(format!(
                        "tar entry {shown:?} is {header_size} bytes; apk-tools 2 reads sizes of \
                         4 GiB or more wrongly"
                    )));
                }
                if !ENTRY_TYPES.contains(&typeflag) {
                    return Err(malformed(format!(
                        "tar entry {shown:?} has type {}, which apk does not read (it would \
                         skip the entry and give its name to the next one)",
                        type_name(typeflag)
                    )));
                }
                if pending.long_link {
                    return Err(malformed(format!(
                        "tar entry {shown:?} follows a GNU long link name ('K' header), \
                         which apk ignores: it would use the header's link name instead"
                    )));
                }
                let link = match (typeflag, pending.pax_linkpath) {
                    (HARD_LINK | SYMLINK, Some(target)) => Some(target),
                    (HARD_LINK | SYMLINK, None) => Some(field(&block, 157..257).to_vec()),
                    (_, None) => None,
                    (_, Some(_)) => {
                        return Err(malformed(format!(
                            "tar entry {shown:?} is not a link but has a PAX linkpath \
                             record (apk would make it a hard link)"
                        )));
                    }
                };
                if path.len() >= APK_NAME_LIMIT
                    || link.as_ref().is_some_and(|l| l.len() >= APK_NAME_LIMIT)
                {
                    return Err(malformed(format!(
                        "tar entry {:?} has a name or link target of {APK_NAME_LIMIT} bytes \
                         or more, which apk refuses",
                        String::from_utf8_lossy(&path[..path.len().min(64)])
                    )));
                }
                let entry = Entry {
                    path,
                    typeflag,
                    size,
                    link,
                };
                let mut data = (&mut *r).take(size);
                visit(&entry, &mut data)?;
                let rest = data.limit();
                skip(r, rest)?;
                skip(r, padding(size))?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, typeflag: u8, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::new(typeflag));
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn entry(name: &str, typeflag: u8, data: &[u8]) -> Vec<u8> {
        let mut out = header(name, typeflag, data.len() as u64);
        out.extend_from_slice(data);
        out.resize(out.len() + padding(data.len() as u64) as usize, 0);
        out
    }

    fn names(archive: &[u8]) -> ApkResult<(Vec<String>, End)> {
        let mut seen = Vec::new();
        let end = walk(&mut &archive[..], 1024, |e, _| {
            seen.push(e.display_path());
            Ok(())
        })?;
        Ok((seen, end))
    }

    #[test]
    fn cut_and_terminated_archives_are_told_apart() {
        let mut a = entry("a", b'0', b"hello");
        assert_eq!(names(&a).ok(), Some((vec!["a".into()], End::Cut)));
        a.extend_from_slice(&[0; 1024]);
        assert_eq!(names(&a).ok(), Some((vec!["a".into()], End::ZeroBlock)));
    }

    #[test]
    fn pax_path_overrides_header_name() {
        let record = b"20 path=long/name.x\n";
        let mut a = entry("PaxHeaders/x", b'x', record);
        a.extend(entry("short", b'0', b""));
        assert_eq!(
            names(&a).ok().map(|r| r.0),
            Some(vec!["long/name.x".to_string()])
        );
    }

    #[test]
    fn oversized_extended_header_is_rejected_before_buffering() {
        let a = header("PaxHeaders/x", b'x', 1 << 40);
        assert!(matches!(names(&a), Err(ApkError::TooLarge { .. })));
    }

    #[test]
    fn truncated_entry_is_rejected() {
        let a = entry("a", b'0', &[1; 600]);
        for cut in [1, 511, 512, 513, 1023] {
            assert!(
                matches!(names(&a[..cut]), Err(ApkError::Malformed(_))),
                "{cut}"
            );
        }
    }

    #[test]
    fn entry_of_4_gib_or_more_is_rejected() {
        // apk-tools 2 would take this size modulo 2^32 (here: 512 bytes) and read the
        // entry hidden in its data.
        let size = (1u64 << 32) + 512;
        let mut a = header("big", b'0', size);
        a.extend(entry("../../etc/evil", b'0', b"x"));
        let message = match names(&a) {
            Err(ApkError::Malformed(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(
            message.contains("\"big\"") && message.contains("4 GiB"),
            "{message}"
        );
        // Just under the limit, the walker only runs out of data.
        let a = header("big", b'0', u64::from(u32::MAX));
        assert!(!matches!(names(&a), Err(ApkError::Malformed(m)) if m.contains("4 GiB")));
    }

    #[test]
    fn bad_header_checksum_is_rejected() {
        let mut a = entry("a", b'0', b"x");
        a[0] = b'b';
        assert!(matches!(names(&a), Err(ApkError::Malformed(_))));
    }

    /// `entry` with its header changed by `edit` (checksum recomputed).
    fn edited(
        name: &str,
        typeflag: u8,
        data: &[u8],
        edit: impl FnOnce(&mut [u8; BLOCK]),
    ) -> Vec<u8> {
        let mut out = entry(name, typeflag, data);
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(&out[..BLOCK]);
        edit(h.as_mut_bytes());
        h.set_cksum();
        out[..BLOCK].copy_from_slice(h.as_bytes());
        out
    }

    #[test]
    fn pax_size_disagreeing_with_the_header_is_rejected() {
        // apk skips by the header's size (0 here) and would read the hidden header as an
        // entry; a reader honouring the PAX size would skip it as data.
        let hidden = entry("../../etc/evil", b'0', b"x");
        let mut a = entry(
            "PaxHeaders/x",
            b'x',
            &pax_record_bytes("size", hidden.len()),
        );
        a.extend(header("harmless", b'0', 0));
        a.extend(&hidden);
        let err = names(&a).expect_err("desynchronising PAX size");
        assert!(
            matches!(&err, ApkError::Malformed(m) if m.contains("PAX size")),
            "{err:?}"
        );
        // A PAX size equal to the header's is harmless.
        let mut a = entry("PaxHeaders/x", b'x', &pax_record_bytes("size", 5));
        a.extend(entry("ok", b'0', b"hello"));
        assert_eq!(names(&a).ok().map(|r| r.0), Some(vec!["ok".to_string()]));
    }

    fn pax_record_bytes(key: &str, value: usize) -> Vec<u8> {
        crate::apk::builder::pax_record(key, value.to_string().as_bytes())
    }

    #[test]
    fn prefix_of_a_gnu_header_is_joined_like_apk_does() {
        // The tar crate ignores bytes 345.. of a GNU header; apk joins them as a prefix.
        let a = edited("passwd", b'0', b"x", |h| {
            h[257..265].copy_from_slice(b"ustar  \0");
            h[345..354].copy_from_slice(b"../../etc");
        });
        assert_eq!(
            names(&a).ok().map(|r| r.0),
            Some(vec!["../../etc/passwd".to_string()])
        );
    }

    #[test]
    fn long_name_yields_to_a_ustar_prefix_like_apk_does() {
        let mut a = entry("././@LongLink", b'L', b"usr/share/harmless\0");
        a.extend(edited("passwd", b'0', b"x", |h| {
            h[345..348].copy_from_slice(b"etc")
        }));
        assert_eq!(
            names(&a).ok().map(|r| r.0),
            Some(vec!["etc/passwd".to_string()])
        );
        let mut a = entry("././@LongLink", b'L', b"usr/share/long\0");
        a.extend(entry("short", b'0', b"x"));
        assert_eq!(
            names(&a).ok().map(|r| r.0),
            Some(vec!["usr/share/long".to_string()])
        );
    }

    #[test]
    fn header_with_an_empty_name_is_rejected() {
        // apk takes any block whose name starts with NUL for an end block and reads on.
        let a = edited("x", b'0', b"data", |h| {
            h[0] = 0;
            h[345..348].copy_from_slice(b"usr");
        });
        let err = names(&a).expect_err("empty name");
        assert!(
            matches!(&err, ApkError::Malformed(m) if m.contains("empty name")),
            "{err:?}"
        );
    }

    #[test]
    fn only_zeros_may_follow_an_end_block() {
        assert!(expect_only_zeros(&mut &[0u8; 9000][..]).is_ok());
        let mut rest = vec![0u8; 9000];
        rest[8999] = 1;
        assert!(matches!(
            expect_only_zeros(&mut &rest[..]),
            Err(ApkError::Malformed(_))
        ));
    }

    #[test]
    fn dangling_extended_header_is_rejected() {
        let a = entry("PaxHeaders/x", b'x', b"20 path=long/name.x\n");
        assert!(matches!(names(&a), Err(ApkError::Malformed(_))));
    }

    #[test]
    fn pax_record_apk_would_skip_is_rejected() {
        // apk reads the length with digits only: it stops at "+21" and uses the header's
        // name, while a lenient parser takes the PAX path.
        for records in [
            &b"+21 path=usr/x/harml\n"[..],
            b" 20 path=usr/x/harm\n",
            b"20 path=usr/x/harmle",
            b"19 path=usr/x/harm\n\n",
            b"12 pathusr/x\n",
            b"20 path=usr/x/harml\n\0\0\0",
        ] {
            let mut a = entry("PaxHeaders/x", b'x', records);
            a.extend(entry("../../etc/evil", b'0', b"x"));
            let err = names(&a).expect_err(&String::from_utf8_lossy(records));
            assert!(
                matches!(&err, ApkError::Malformed(m) if m.contains("PAX")),
                "{err:?}"
            );
        }
    }

    #[test]
    fn entry_type_apk_ignores_is_rejected() {
        // apk skips an entry of a type it does not know, and its prefix (or a pending PAX
        // path) then names the next entry: the two readers would disagree on names.
        for typeflag in [b'V', b'S', b'D', 0] {
            let mut a = edited("x", b'0', b"", |h| {
                h[156] = typeflag;
                h[345..360].copy_from_slice(b"usr/lib/cron.d/");
            });
            a.extend(entry("harmless", b'0', b"x"));
            let err = names(&a).expect_err("unknown type");
            assert!(
                matches!(&err, ApkError::Malformed(m) if m.contains("type")),
                "{typeflag}: {err:?}"
            );
        }
    }

    /// (name, link target) of every entry.
    fn links(archive: &[u8]) -> ApkResult<Vec<(String, Option<String>)>> {
        let mut seen = Vec::new();
        walk(&mut &archive[..], 1 << 20, |e, _| {
            let link = e
                .link
                .as_ref()
                .map(|l| String::from_utf8_lossy(l).into_owned());
            seen.push((e.display_path(), link));
            Ok(())
        })?;
        Ok(seen)
    }

    #[test]
    fn link_target_is_taken_like_apk_takes_it() {
        let linked = |typeflag, target: &[u8]| {
            edited("l", typeflag, b"", |h| {
                h[157..157 + target.len()].copy_from_slice(target)
            })
        };
        let mut a = linked(SYMLINK, b"header/target");
        a.extend(linked(HARD_LINK, &[b'h'; 100]));
        // PAX `linkpath` wins over the header's field.
        a.extend(entry("PaxHeaders/l", b'x', b"23 linkpath=pax/target\n"));
        a.extend(linked(SYMLINK, b"header/target"));
        // Other entries have no link target, whatever their header's field holds.
        a.extend(linked(REGULAR, b"ignored"));
        let got = links(&a).expect("valid");
        let want = [
            Some("header/target".to_string()),
            Some("h".repeat(100)),
            Some("pax/target".to_string()),
            None,
        ];
        assert_eq!(got.into_iter().map(|(_, l)| l).collect::<Vec<_>>(), want);
    }

    #[test]
    fn name_or_link_target_apk_refuses_as_too_long_is_rejected() {
        let long = "d/".repeat(APK_NAME_LIMIT / 2);
        for (key, typeflag) in [("path", REGULAR), ("linkpath", SYMLINK)] {
            let record = crate::apk::builder::pax_record(key, long.as_bytes());
            let mut a = entry("PaxHeaders/x", b'x', &record);
            a.extend(entry("x", typeflag, b""));
            let err = links(&a).expect_err(key);
            assert!(
                matches!(&err, ApkError::Malformed(m) if m.contains("apk refuses")),
                "{err:?}"
            );
        }
        let fits = "d/".repeat(APK_NAME_LIMIT / 2 - 1);
        let record = crate::apk::builder::pax_record("path", fits.as_bytes());
        let mut a = entry("PaxHeaders/x", b'x', &record);
        a.extend(entry("x", REGULAR, b""));
        assert_eq!(links(&a).expect("fits").len(), 1);
    }
}
