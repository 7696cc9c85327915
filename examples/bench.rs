//! Benchmark: runs the real server binary (release build) and measures publishing into a
//! large repository, deleting from it, and serving indexes and packages.
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench -- --packages 5000
//! ```
//!
//! Options: `--packages N` already in the repository (5000), `--samples N` timed uploads
//! and deletes (50), `--key-bits N` (4096), `--bin PATH` (target/release/alpine-registry).
//! Only talks to 127.0.0.1.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alpine_registry::apk::builder::PackageBuilder;
use rand::SeedableRng;

const TOKEN: &str = "apkreg_bench-token-0123456789abcdefgh";
const REPO: &str = "admin/v3.21/main";

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what:<44} p50 {:>8.2} ms  p95 {:>8.2} ms  max {:>8.2} ms  (n={})",
        percentile(&samples, 0.5),
        percentile(&samples, 0.95),
        percentile(&samples, 1.0),
        samples.len()
    );
}

/// PUTs one package into the benchmark repository as admin.
async fn publish(client: &reqwest::Client, base: &str, bytes: Vec<u8>) -> reqwest::Response {
    client
        .put(format!("{base}/{REPO}"))
        .basic_auth("admin", Some(TOKEN))
        .body(bytes)
        .send()
        .await
        .unwrap()
}

/// Runs `clients` concurrent loops of GET `url` for `secs`; returns requests/s and MB/s.
async fn throughput(client: &reqwest::Client, url: &str, clients: usize, secs: u64) -> (f64, f64) {
    let end = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url) = (client.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let (mut n, mut bytes) = (0u64, 0u64);
            while Instant::now() < end {
                let body = client
                    .get(&url)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                n += 1;
                bytes += body.len() as u64;
            }
            (n, bytes)
        }));
    }
    let (mut n, mut bytes) = (0, 0);
    for t in tasks {
        let (a, b) = t.await.unwrap();
        n += a;
        bytes += b;
    }
    let secs = started.elapsed().as_secs_f64();
    (n as f64 / secs, bytes as f64 / secs / 1e6)
}

#[tokio::main]
async fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let (mut packages, mut samples, mut key_bits, mut bin) = (
        5000usize,
        50usize,
        4096usize,
        "target/release/alpine-registry".to_string(),
    );
    for pair in raw.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--packages" => packages = value.parse().expect("--packages N"),
            "--samples" => samples = value.parse().expect("--samples N"),
            "--key-bits" => key_bits = value.parse().expect("--key-bits N"),
            "--bin" => bin = value,
            other => panic!("unknown option {other}"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(&bin)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("ALPINE_REGISTRY_BOOTSTRAP_TOKEN", TOKEN)
        .env("ALPINE_REGISTRY__SIGNING__KEY_BITS", key_bits.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin}: {e} (cargo build --release first)"));
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    while client.get(format!("{base}/readyz")).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Fill the repository, 16 uploads at a time.
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, base, next) = (client.clone(), base.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= packages {
                    break;
                }
                let bytes = PackageBuilder::new(&format!("fill-{i:06}"), "1.0-r0", "x86_64")
                    .field("depend", "musl")
                    .file("usr/share/fill/README", format!("package {i}\n").as_bytes())
                    .build();
                let r = publish(&client, &base, bytes).await;
                assert_eq!(r.status(), 201);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let fill = started.elapsed();
    println!(
        "filled {REPO} with {packages} packages by 16 concurrent uploaders in {:.1} s ({:.0} uploads/s)",
        fill.as_secs_f64(),
        packages as f64 / fill.as_secs_f64()
    );
    let index_url = format!("{base}/{REPO}/x86_64/APKINDEX.tar.gz");
    let index_size = client
        .get(&index_url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    println!("index size: {index_size} bytes ({key_bits}-bit key, RSA256 + RSA signatures)");

    // Sequential publishes and deletes into the full repository: each answer waits for
    // the new signed index.
    let mut put_times = Vec::new();
    let mut delete_times = Vec::new();
    for i in 0..samples {
        let bytes = PackageBuilder::new(&format!("timed-{i:04}"), "1.0-r0", "x86_64")
            .file("usr/share/timed/README", b"timed\n")
            .build();
        let t = Instant::now();
        let r = publish(&client, &base, bytes).await;
        put_times.push(t.elapsed());
        assert_eq!(r.status(), 201);
    }
    for i in 0..samples {
        let t = Instant::now();
        let r = client
            .delete(format!("{base}/{REPO}/x86_64/timed-{i:04}-1.0-r0.apk"))
            .basic_auth("admin", Some(TOKEN))
            .send()
            .await
            .unwrap();
        delete_times.push(t.elapsed());
        assert_eq!(r.status(), 204);
    }
    report(
        &format!("PUT into a {packages}-package repository"),
        put_times,
    );
    report(
        &format!("DELETE from a {packages}-package repository"),
        delete_times,
    );

    let (rps, mbps) = throughput(&client, &index_url, 8, 5).await;
    println!("GET APKINDEX.tar.gz, 8 clients: {rps:.0} requests/s, {mbps:.1} MB/s");
    let big = PackageBuilder::new("big", "1.0-r0", "x86_64")
        .file("usr/share/big/data", &vec![0x5au8; 8 << 20])
        .build();
    let r = publish(&client, &base, big).await;
    assert_eq!(r.status(), 201);
    let small_url = format!("{base}/{REPO}/x86_64/fill-000001-1.0-r0.apk");
    let (rps, _) = throughput(&client, &small_url, 8, 5).await;
    println!("GET small package (~1 KiB), 8 clients: {rps:.0} requests/s");
    // A package with incompressible content is what large downloads look like.
    let mut payload = vec![0u8; 32 << 20];
    rand::RngCore::fill_bytes(&mut rand::rngs::StdRng::seed_from_u64(7), &mut payload);
    let large = PackageBuilder::new("large", "1.0-r0", "x86_64")
        .file("usr/share/large/data", &payload)
        .build();
    let size = large.len();
    let r = publish(&client, &base, large).await;
    assert_eq!(r.status(), 201);
    let (rps, mbps) = throughput(
        &client,
        &format!("{base}/{REPO}/x86_64/large-1.0-r0.apk"),
        4,
        5,
    )
    .await;
    println!(
        "GET {} MiB package, 4 clients: {rps:.1} requests/s, {mbps:.0} MB/s",
        size >> 20
    );

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
