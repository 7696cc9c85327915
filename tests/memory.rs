//! Memory stays bounded: the real binary receives, parses and publishes a package with
//! 2 GiB of incompressible data while its peak resident size (`VmHWM`) stays small. The
//! package is generated on the fly, twice (once to hash, once to send), so the test
//! holds no more of it in memory than the server should.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

mod common;

use alpine_registry::apk::builder::PackageBuilder;
use base64::Engine as _;
use common::{free_port, peak_rss, wait_listening, BIN};
use rand::{RngCore, SeedableRng};
use sha1::Sha1;
use sha2::{Digest, Sha256};

const TOKEN: &str = "apkreg_memory-test-token-0123456789";
/// Size of the one file in the data member.
const DATA_BYTES: u64 = 2 << 30;
const MAX_HWM_BYTES: u64 = 100 << 20;
/// Payload of one stored deflate block (at most 65535).
const BLOCK: usize = 32 << 10;
/// Stored blocks per chunk handed to the HTTP body (about 1 MiB).
const BLOCKS_PER_CHUNK: usize = 32;

/// The compressed data member, chunk by chunk: a gzip header, stored (level 0) deflate
/// blocks over a tar stream (one header, `DATA_BYTES` of pseudo-random bytes, end blocks)
/// and the gzip trailer. The same seed gives the same bytes.
struct DataMember {
    tar_header: [u8; 512],
    /// Bytes of the uncompressed tar stream produced so far, and its total length.
    pos: u64,
    total: u64,
    rng: rand::rngs::StdRng,
    crc: flate2::Crc,
    started: bool,
    done: bool,
    block: Vec<u8>,
}

impl DataMember {
    fn new() -> Self {
        let mut h = tar::Header::new_ustar();
        h.set_path("usr/share/big/noise.bin").unwrap();
        h.set_size(DATA_BYTES);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut tar_header = [0u8; 512];
        tar_header.copy_from_slice(h.as_bytes());
        DataMember {
            tar_header,
            pos: 0,
            total: 512 + DATA_BYTES + 1024,
            rng: rand::rngs::StdRng::seed_from_u64(0x6d656d),
            crc: flate2::Crc::new(),
            started: false,
            done: false,
            block: vec![0; BLOCK],
        }
    }

    /// Fills `out` with the tar stream from `self.pos` on.
    fn fill(&mut self, out: &mut [u8]) {
        let noise_end = 512 + DATA_BYTES;
        let mut at = 0;
        while at < out.len() {
            let pos = self.pos + at as u64;
            let left = out.len() - at;
            let n = if pos < 512 {
                let n = left.min((512 - pos) as usize);
                out[at..at + n].copy_from_slice(&self.tar_header[pos as usize..pos as usize + n]);
                n
            } else if pos < noise_end {
                let n = left.min((noise_end - pos) as usize);
                self.rng.fill_bytes(&mut out[at..at + n]);
                n
            } else {
                out[at..].fill(0);
                left
            };
            at += n;
        }
        self.pos += out.len() as u64;
    }
}

impl Iterator for DataMember {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let mut chunk = Vec::with_capacity(BLOCKS_PER_CHUNK * (BLOCK + 5) + 18);
        if !self.started {
            // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=unix
            chunk.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
            self.started = true;
        }
        for _ in 0..BLOCKS_PER_CHUNK {
            let len = (self.total - self.pos).min(BLOCK as u64) as usize;
            let last = self.pos + len as u64 == self.total;
            // A stored block: BFINAL, BTYPE=00, then LEN and its complement NLEN.
            chunk.push(u8::from(last));
            chunk.extend_from_slice(&(len as u16).to_le_bytes());
            chunk.extend_from_slice(&(!(len as u16)).to_le_bytes());
            // Filled in a reused buffer and copied: a byte-wise `resize` is slow unoptimised.
            let mut block = std::mem::take(&mut self.block);
            self.fill(&mut block[..len]);
            self.crc.update(&block[..len]);
            chunk.extend_from_slice(&block[..len]);
            self.block = block;
            if last {
                chunk.extend_from_slice(&self.crc.sum().to_le_bytes());
                chunk.extend_from_slice(&(self.total as u32).to_le_bytes());
                self.done = true;
                break;
            }
        }
        Some(chunk)
    }
}

/// Kills the server if the test fails half-way.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn two_gib_of_incompressible_data_is_published_in_bounded_memory() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("ALPINE_REGISTRY_BOOTSTRAP_TOKEN", TOKEN)
        .env("ALPINE_REGISTRY__SIGNING__KEY_BITS", "1024")
        .env(
            "ALPINE_REGISTRY__LIMITS__MAX_UPLOAD_BYTES",
            (DATA_BYTES + (256 << 20)).to_string(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let pid = server.0.id();

    // First pass: the data member's SHA-256 (`datahash`) and size.
    let mut hasher = Sha256::new();
    let mut data_len = 0u64;
    for chunk in DataMember::new() {
        hasher.update(&chunk);
        data_len += chunk.len() as u64;
    }
    let datahash = hex::encode(hasher.finalize());
    let hashed = started.elapsed();

    let builder = PackageBuilder::new("big", "1.0-r0", "x86_64");
    let pkginfo = format!("{}datahash = {datahash}\n", builder.pkginfo());
    let mut tar = Vec::new();
    let mut h = tar::Header::new_ustar();
    h.set_path(".PKGINFO").unwrap();
    h.set_size(pkginfo.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    // `new_ustar` leaves the type NUL, an entry apk skips.
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    tar.extend_from_slice(h.as_bytes());
    tar.extend_from_slice(pkginfo.as_bytes());
    tar.resize(tar.len().next_multiple_of(512), 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let control = gz.finish().unwrap();
    let checksum = format!(
        "Q1{}",
        base64::engine::general_purpose::STANDARD.encode(Sha1::digest(&control))
    );
    let total = control.len() as u64 + data_len;

    // Second pass: the same bytes, streamed (chunked, no Content-Length).
    wait_listening(port);
    let body = std::iter::once(control)
        .chain(DataMember::new())
        .map(Ok::<_, std::io::Error>);
    let response = reqwest::Client::new()
        .put(format!("http://127.0.0.1:{port}/admin/v3.21/main"))
        .basic_auth("admin", Some(TOKEN))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(body)))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let uploaded = started.elapsed() - hashed;
    let text = response.text().await.unwrap();
    assert_eq!(status, 201, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["size"], total);
    assert_eq!(json["checksum"], checksum.as_str());

    let hwm = peak_rss(pid);
    eprintln!(
        "{} MiB package: generated and hashed in {hashed:.1?}, uploaded and published in \
         {uploaded:.1?}; server VmHWM {:.1} MiB",
        total >> 20,
        hwm as f64 / f64::from(1 << 20)
    );
    assert!(
        hwm < MAX_HWM_BYTES,
        "server peak RSS {hwm} bytes is over {MAX_HWM_BYTES}"
    );
    drop(server);
}
