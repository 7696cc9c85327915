//! Soak test: runs the real server binary and drives mixed reads and writes against it
//! at a sustained rate, then reports errors, lost writes and memory.
//!
//! ```sh
//! cargo build --release && cargo run --release --example soak -- --minutes 10
//! ```
//!
//! Options: `--minutes N` (10), `--writes-per-sec N` (20), `--reads-per-sec N` (200),
//! `--live N` (600: once that many packages are live, writers delete as often as they
//! upload, so the data size stays steady and memory can be compared over time),
//! `--bin PATH` (target/release/alpine-registry). Exits non-zero on any error or lost
//! write. Only talks to 127.0.0.1.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alpine_registry::apk::builder::PackageBuilder;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

const TOKEN: &str = "apkreg_soak-test-token-0123456789abcdef";
const REPOS: &[&str] = &["admin/v1/main", "admin/v1/community", "admin/edge/main"];

struct Args {
    minutes: f64,
    live: usize,
    writes: f64,
    reads: f64,
    bin: String,
}

fn args() -> Args {
    let mut args = Args {
        minutes: 10.0,
        live: 600,
        writes: 20.0,
        reads: 200.0,
        bin: "target/release/alpine-registry".into(),
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    for pair in raw.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--minutes" => args.minutes = value.parse().expect("--minutes N"),
            "--live" => args.live = value.parse().expect("--live N"),
            "--writes-per-sec" => args.writes = value.parse().expect("--writes-per-sec N"),
            "--reads-per-sec" => args.reads = value.parse().expect("--reads-per-sec N"),
            "--bin" => args.bin = value,
            other => panic!("unknown option {other}"),
        }
    }
    args
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[derive(Default)]
struct Ledger {
    /// (repo, file) -> sha256 of acknowledged uploads not deleted since.
    live: HashMap<(String, String), String>,
    deleted: Vec<(String, String)>,
}

#[tokio::main]
async fn main() {
    let args = args();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(&args.bin)
        .args(["--data-dir"])
        .arg(dir.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("ALPINE_REGISTRY_BOOTSTRAP_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e} (cargo build --release first)", args.bin));
    let pid = child.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.get(format!("{base}/readyz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The first index build waits for the owner key; warm up before measuring.
    for repo in REPOS {
        let r = client
            .put(format!("{base}/{repo}"))
            .basic_auth("admin", Some(TOKEN))
            .body(PackageBuilder::new("warmup", "1.0-r0", "x86_64").build())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let rss_start = rss_kib(pid, "VmRSS:");
    eprintln!(
        "soak: {} min, {} writes/s, {} reads/s, server pid {pid}, RSS at start {} KiB",
        args.minutes, args.writes, args.reads, rss_start
    );

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let errors = Arc::new(AtomicU64::new(0));
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default()); // put, delete, index, download
    let end = Instant::now() + Duration::from_secs_f64(args.minutes * 60.0);
    let mut tasks = Vec::new();

    // Writers: uploads, and deletes of about a third of what was uploaded.
    let writers = 4u64;
    for w in 0..writers {
        let (client, base, ledger, errors, counts) = (
            client.clone(),
            base.clone(),
            ledger.clone(),
            errors.clone(),
            counts.clone(),
        );
        let period = Duration::from_secs_f64(writers as f64 / args.writes);
        let target = args.live;
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w);
            let mut interval = tokio::time::interval(period);
            let mut n = 0u64;
            while Instant::now() < end {
                interval.tick().await;
                n += 1;
                let repo = REPOS[rng.gen_range(0..REPOS.len())];
                let live = ledger.lock().unwrap().live.len();
                let delete = rng.gen_bool(if live >= target { 0.5 } else { 0.1 });
                if delete {
                    let victim = {
                        let l = ledger.lock().unwrap();
                        l.live
                            .keys()
                            .filter(|(r, f)| r == repo && !f.starts_with("warmup"))
                            .nth(rng.gen_range(0..8))
                            .cloned()
                    };
                    if let Some((repo, file)) = victim {
                        ledger
                            .lock()
                            .unwrap()
                            .live
                            .remove(&(repo.clone(), file.clone()));
                        let r = client
                            .delete(format!("{base}/{repo}/{file}"))
                            .basic_auth("admin", Some(TOKEN))
                            .send()
                            .await;
                        counts[1].fetch_add(1, Ordering::Relaxed);
                        match r {
                            Ok(r) if r.status() == 204 => {
                                ledger.lock().unwrap().deleted.push((repo, file))
                            }
                            other => {
                                eprintln!("delete error: {:?}", other.map(|r| r.status()));
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        continue;
                    }
                }
                let arch = ["x86_64", "aarch64", "noarch"][rng.gen_range(0..3)];
                let name = format!("soak-w{w}-{n}");
                let size = rng.gen_range(1_000..200_000);
                let payload: Vec<u8> = (0..size).map(|_| rng.gen()).collect();
                let bytes = PackageBuilder::new(&name, "1.0-r0", arch)
                    .file("usr/share/soak/blob", &payload)
                    .build();
                let sha = hex::encode(Sha256::digest(&bytes));
                let r = client
                    .put(format!("{base}/{repo}"))
                    .basic_auth("admin", Some(TOKEN))
                    .body(bytes)
                    .send()
                    .await;
                counts[0].fetch_add(1, Ordering::Relaxed);
                match r {
                    Ok(r) if r.status() == 201 => {
                        let file = format!("{arch}/{name}-1.0-r0.apk");
                        ledger
                            .lock()
                            .unwrap()
                            .live
                            .insert((repo.to_string(), file), sha);
                    }
                    other => {
                        eprintln!("upload error: {:?}", other.map(|r| r.status()));
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    // Readers: indexes (with and without validators) and package downloads.
    let readers = 8u64;
    for rd in 0..readers {
        let (client, base, ledger, errors, counts) = (
            client.clone(),
            base.clone(),
            ledger.clone(),
            errors.clone(),
            counts.clone(),
        );
        let period = Duration::from_secs_f64(readers as f64 / args.reads);
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + rd);
            let mut interval = tokio::time::interval(period);
            while Instant::now() < end {
                interval.tick().await;
                if rng.gen_bool(0.5) {
                    let repo = REPOS[rng.gen_range(0..REPOS.len())];
                    let r = client
                        .get(format!("{base}/{repo}/x86_64/APKINDEX.tar.gz"))
                        .send()
                        .await;
                    counts[2].fetch_add(1, Ordering::Relaxed);
                    if !matches!(&r, Ok(r) if r.status() == 200) {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Ok(r) = r {
                        let _ = r.bytes().await;
                    }
                } else {
                    let pick = {
                        let l = ledger.lock().unwrap();
                        let n = l.live.len();
                        if n == 0 {
                            None
                        } else {
                            l.live
                                .iter()
                                .nth(rng.gen_range(0..n))
                                .map(|(k, v)| (k.clone(), v.clone()))
                        }
                    };
                    let Some(((repo, file), sha)) = pick else {
                        continue;
                    };
                    let r = client.get(format!("{base}/{repo}/{file}")).send().await;
                    counts[3].fetch_add(1, Ordering::Relaxed);
                    match r {
                        Ok(r) if r.status() == 200 => {
                            let body = r.bytes().await.unwrap_or_default();
                            if hex::encode(Sha256::digest(&body)) != sha {
                                eprintln!("download of {repo}/{file} has wrong content");
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        // A concurrent delete may have removed it since it was picked.
                        Ok(r) if r.status() == 404 => {
                            if ledger
                                .lock()
                                .unwrap()
                                .live
                                .contains_key(&(repo.clone(), file.clone()))
                            {
                                eprintln!("download of live {repo}/{file} is 404");
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        other => {
                            eprintln!("download error: {:?}", other.map(|r| r.status()));
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }));
    }

    let sampler = {
        let started = Instant::now();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(60));
            interval.tick().await;
            while Instant::now() < end {
                interval.tick().await;
                eprintln!(
                    "soak: {:>4.0} s  RSS {} KiB",
                    started.elapsed().as_secs_f64(),
                    rss_kib(pid, "VmRSS:")
                );
            }
        })
    };
    for task in tasks {
        task.await.unwrap();
    }
    sampler.abort();
    let rss_end = rss_kib(pid, "VmRSS:");
    let hwm = rss_kib(pid, "VmHWM:");

    // Lost writes: every acknowledged upload still listed and intact; every
    // acknowledged delete gone.
    let mut lost = 0u64;
    let (live, deleted) = {
        let l = ledger.lock().unwrap();
        (l.live.clone(), l.deleted.clone())
    };
    let mut indexes: HashMap<String, String> = HashMap::new();
    for repo in REPOS {
        for arch in ["x86_64", "aarch64"] {
            let url = format!("{base}/{repo}/{arch}/APKINDEX.tar.gz");
            let bytes = client
                .get(&url)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let (_, unsigned) = alpine_registry::apk::sign::split_signed(&bytes).unwrap();
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(unsigned));
            let mut text = String::new();
            for entry in archive.entries().unwrap() {
                let mut entry = entry.unwrap();
                if entry.path().unwrap().to_str() == Some("APKINDEX") {
                    std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
                }
            }
            indexes.insert(format!("{repo}/{arch}"), text);
        }
    }
    let listed = |repo: &str, file: &str| {
        let (arch, name) = file.split_once('/').unwrap();
        let pkg = name.trim_end_matches("-1.0-r0.apk");
        let arch = if arch == "noarch" { "x86_64" } else { arch };
        indexes[&format!("{repo}/{arch}")].contains(&format!("P:{pkg}\nV:1.0-r0\n"))
    };
    for ((repo, file), sha) in &live {
        let body = client
            .get(format!("{base}/{repo}/{file}"))
            .send()
            .await
            .unwrap();
        let ok = body.status() == 200
            && hex::encode(Sha256::digest(body.bytes().await.unwrap())) == *sha
            && listed(repo, file);
        if !ok {
            eprintln!("lost write: {repo}/{file}");
            lost += 1;
        }
    }
    for (repo, file) in &deleted {
        if listed(repo, file) {
            eprintln!("deleted package still listed: {repo}/{file}");
            lost += 1;
        }
    }

    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let errors = errors.load(Ordering::Relaxed);
    println!(
        "soak: {:.1} min; uploads {} deletes {} index reads {} downloads {}; errors {errors}; lost writes {lost}; packages live at end {}; RSS start {} KiB end {} KiB peak {} KiB",
        args.minutes,
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
        counts[2].load(Ordering::Relaxed),
        counts[3].load(Ordering::Relaxed),
        live.len(),
        rss_start,
        rss_end,
        hwm
    );
    if errors > 0 || lost > 0 {
        std::process::exit(1);
    }
}
