//! Reader plumbing for untrusted packages: a buffered reader that hashes exactly the
//! compressed bytes a gzip decoder consumes (so member boundaries and the `C:` identity
//! are exact), and a reader that fails, rather than truncates, at a size limit.

use sha1::{Digest, Sha1};
use sha2::Sha256;
use std::cell::Cell;
use std::io::{self, BufRead, Read};

const BUF_SIZE: usize = 64 * 1024;

/// A `BufRead` over the raw package bytes. Every byte handed out through `consume` is
/// counted and fed to the active hashers; `flate2::bufread::GzDecoder` consumes exactly
/// the bytes of one member (header, deflate stream, 8-byte trailer), which makes the
/// hashes per member exact.
pub(crate) struct Tap<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// Compressed bytes consumed so far.
    pub consumed: u64,
    pub sha1: Option<Sha1>,
    pub sha256: Option<Sha256>,
    /// Set when the underlying source itself failed, to tell a real I/O error from
    /// corrupt data when the error surfaces through the decoder.
    pub source_failed: bool,
}

impl<R: Read> Tap<R> {
    pub fn new(inner: R) -> Self {
        Tap {
            inner,
            buf: vec![0; BUF_SIZE].into_boxed_slice(),
            pos: 0,
            end: 0,
            consumed: 0,
            sha1: None,
            sha256: None,
            source_failed: false,
        }
    }

    fn read_source(&mut self) -> io::Result<usize> {
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    // A reader claiming more than the buffer it was given is not trusted.
                    let n = n.min(self.buf.len() - self.end);
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.source_failed = true;
                    return Err(e);
                }
            }
        }
    }

    /// Up to `n` unconsumed bytes (fewer only at end of input); `n` must be small.
    pub fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.end - self.pos < n {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
            while self.end < n.min(self.buf.len()) {
                if self.read_source()? == 0 {
                    break;
                }
            }
        }
        let avail = (self.end - self.pos).min(n);
        Ok(&self.buf[self.pos..self.pos + avail])
    }

    pub fn at_eof(&mut self) -> io::Result<bool> {
        Ok(self.fill_buf()?.is_empty())
    }
}

impl<R: Read> BufRead for Tap<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
            self.read_source()?;
        }
        Ok(&self.buf[self.pos..self.end])
    }

    fn consume(&mut self, amt: usize) {
        let amt = amt.min(self.end - self.pos);
        let bytes = &self.buf[self.pos..self.pos + amt];
        if let Some(h) = self.sha1.as_mut() {
            h.update(bytes);
        }
        if let Some(h) = self.sha256.as_mut() {
            h.update(bytes);
        }
        self.pos += amt;
        self.consumed = self.consumed.saturating_add(amt as u64);
    }
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Reads at most `limit` bytes from `inner`; one byte more is an error (and sets
/// `exceeded`), so an oversized stream can never be mistaken for a complete one.
pub(crate) struct Limited<'a, R> {
    inner: R,
    remaining: u64,
    exceeded: &'a Cell<bool>,
}

impl<'a, R: Read> Limited<'a, R> {
    pub fn new(inner: R, limit: u64, exceeded: &'a Cell<bool>) -> Self {
        Limited {
            inner,
            remaining: limit,
            exceeded,
        }
    }
}

impl<R: Read> Read for Limited<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.exceeded.set(true);
                    Err(io::Error::other("size limit exceeded"))
                }
            };
        }
        let max = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(out.len());
        let n = self.inner.read(&mut out[..max])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limited_reader_errors_instead_of_truncating() {
        let exceeded = Cell::new(false);
        let mut r = Limited::new(&b"abcdef"[..], 5, &exceeded);
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err());
        assert!(exceeded.get());

        let exceeded = Cell::new(false);
        let mut r = Limited::new(&b"abcde"[..], 5, &exceeded);
        let mut out = Vec::new();
        assert_eq!(r.read_to_end(&mut out).ok(), Some(5));
        assert!(!exceeded.get());
    }

    #[test]
    fn gzip_decoder_stops_exactly_after_the_member_trailer() {
        use flate2::write::GzEncoder;
        use std::io::Write;
        let mut members = Vec::new();
        let mut sizes = Vec::new();
        for payload in [&b"first member"[..], &[7u8; 100_000][..]] {
            let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(payload).expect("in-memory write");
            let m = e.finish().expect("in-memory write");
            sizes.push(m.len() as u64);
            members.extend_from_slice(&m);
        }
        let mut tap = Tap::new(&members[..]);
        let mut out = Vec::new();
        flate2::bufread::GzDecoder::new(&mut tap)
            .read_to_end(&mut out)
            .expect("valid gzip");
        assert_eq!(out, b"first member");
        assert_eq!(tap.consumed, sizes[0]);
        out.clear();
        flate2::bufread::GzDecoder::new(&mut tap)
            .read_to_end(&mut out)
            .expect("valid gzip");
        assert_eq!(tap.consumed, sizes[0] + sizes[1]);
        assert!(tap.at_eof().expect("memory"));
    }
}
