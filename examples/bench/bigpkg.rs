//! A large package written to a file without holding it in memory: the data member is
//! streamed through gzip into the file, and `PackageBuilder` writes the control member
//! around its `datahash`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use alpine_registry::apk::builder::PackageBuilder;
use anyhow::Context;
use rand::{RngCore, SeedableRng};
use sha1::Sha1;
use sha2::{Digest, Sha256};

const BLOCK: usize = 512;
const CHUNK: usize = 1 << 20;

/// The payload: a random MiB, repeated with its first eight bytes replaced by the chunk's
/// number. Deflate's 32 KiB window cannot see the repetition, so it is incompressible.
struct Payload {
    chunk: Vec<u8>,
    len: u64,
}

impl Payload {
    fn new(len: u64) -> Self {
        let mut chunk = vec![0u8; CHUNK];
        rand::rngs::StdRng::seed_from_u64(0x1ec7).fill_bytes(&mut chunk);
        Payload { chunk, len }
    }

    /// Calls `f` with each piece of the payload, in order.
    fn for_each(&mut self, mut f: impl FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        let mut done = 0u64;
        let mut n = 0u64;
        while done < self.len {
            self.chunk[..8].copy_from_slice(&n.to_le_bytes());
            let take = (self.len - done).min(CHUNK as u64) as usize;
            f(&self.chunk[..take])?;
            done += take as u64;
            n += 1;
        }
        Ok(())
    }
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    sha256: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha256.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A ustar header as `PackageBuilder` writes them (owner root, mtime 0).
fn header(name: &str, typeflag: u8, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::new(typeflag));
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    h.set_cksum();
    h
}

fn pad(w: &mut impl Write, len: u64) -> std::io::Result<()> {
    let rest = (BLOCK as u64 - len % BLOCK as u64) as usize % BLOCK;
    w.write_all(&[0u8; BLOCK][..rest])
}

/// One PAX record: `<len> <key>=<value>\n`, where `<len>` counts itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while body + len.to_string().len() != len {
        len = body + len.to_string().len();
    }
    format!("{len} {key}={value}\n").into_bytes()
}

/// Writes `{name}-1.0-r0` (x86_64) holding one file of `payload_bytes` to `path`;
/// returns the size of the `.apk`. Memory use is a few MiB whatever the size.
pub fn write(path: &Path, name: &str, payload_bytes: u64) -> anyhow::Result<u64> {
    let file_path = format!("usr/share/{name}/data");
    // First pass: the SHA-1 abuild records for the file.
    let mut payload = Payload::new(payload_bytes);
    let mut sha1 = Sha1::new();
    payload.for_each(|piece| {
        sha1.update(piece);
        Ok(())
    })?;
    let sha1 = hex::encode(sha1.finalize());

    // Second pass: the data member, into a file of its own, hashed as it is written.
    let data_path = path.with_extension("data");
    let out = BufWriter::with_capacity(CHUNK, File::create(&data_path)?);
    let hashing = Hashing {
        inner: out,
        sha256: Sha256::new(),
    };
    let mut gz = flate2::write::GzEncoder::new(hashing, flate2::Compression::fast());
    for dir in ["usr/", "usr/share/", &format!("usr/share/{name}/")] {
        gz.write_all(header(dir, b'5', 0o755, 0).as_bytes())?;
    }
    let records = pax_record("APK-TOOLS.checksum.SHA1", &sha1);
    let pax_name = format!("PaxHeaders/{file_path}");
    gz.write_all(header(&pax_name, b'x', 0o644, records.len() as u64).as_bytes())?;
    gz.write_all(&records)?;
    pad(&mut gz, records.len() as u64)?;
    gz.write_all(header(&file_path, b'0', 0o644, payload_bytes).as_bytes())?;
    payload.for_each(|piece| gz.write_all(piece))?;
    pad(&mut gz, payload_bytes)?;
    gz.write_all(&[0u8; 2 * BLOCK])?;
    let mut hashing = gz.finish()?;
    hashing.flush()?;
    let datahash = hex::encode(hashing.sha256.finalize());
    drop(hashing.inner);

    let control = PackageBuilder::new(name, "1.0-r0", "x86_64")
        .field("size", &payload_bytes.to_string())
        .with_datahash(false)
        .field("datahash", &datahash)
        .control_member(&[]);
    let mut apk = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    apk.write_all(&control)?;
    let mut data = File::open(&data_path)?;
    std::io::copy(&mut data, &mut apk)?;
    apk.sync_all()?;
    std::fs::remove_file(&data_path)?;
    Ok(std::fs::metadata(path)?.len())
}
