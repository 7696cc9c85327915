//! Load tests: what anonymous (or merely authenticated) clients can make the real binary
//! spend. Each runs the real binary on loopback, attacks it in a
//! bounded way, and asserts the server's peak resident size and that `/healthz` and an
//! anonymous package download keep answering promptly meanwhile.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alpine_registry::apk::builder::PackageBuilder;
use base64::Engine as _;
use common::process::ChildServer;
use sha2::{Digest, Sha256};

const TOKEN: &str = "apkreg_load-test-token-0123456789abcdef";
const MIB: u64 = 1 << 20;
const PER_IP_CAP: &str = "ALPINE_REGISTRY__SERVER__MAX_CONNECTIONS_PER_IP";

/// Publishes one small package so that there is something to download.
async fn publish_probe_package(server: &ChildServer) -> (String, usize) {
    let bytes = PackageBuilder::new("probe", "1.0-r0", "x86_64")
        .file("usr/share/probe/data", &[7u8; 16 << 10])
        .build();
    let response = reqwest::Client::new()
        .put(server.url("/admin/v3.21/main"))
        .basic_auth("admin", Some(TOKEN))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let answer: serde_json::Value = response.json().await.unwrap();
    (
        answer["path"].as_str().unwrap().to_string(),
        answer["size"].as_u64().unwrap() as usize,
    )
}

/// Longest answer times of `/healthz` and of a package download, polled on fresh
/// connections while an attack runs.
struct Probe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Duration, Duration, usize)>,
}

impl Probe {
    fn start(server: &ChildServer, (download, size): &(String, usize)) -> Probe {
        let size = *size;
        let stop = Arc::new(AtomicBool::new(false));
        let health = server.url("/healthz");
        let download = server.url(download);
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut worst_health, mut worst_download, mut rounds) =
                (Duration::ZERO, Duration::ZERO, 0);
            while !flag.load(Ordering::SeqCst) {
                // A new client each round: a new connection, as a new user would open.
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .unwrap();
                let started = Instant::now();
                let status = client.get(&health).send().await.map(|r| r.status());
                assert_eq!(status.expect("/healthz answers"), 200);
                worst_health = worst_health.max(started.elapsed());
                let started = Instant::now();
                let response = client.get(&download).send().await.expect("download");
                assert_eq!(response.status(), 200);
                assert_eq!(response.bytes().await.unwrap().len(), size);
                worst_download = worst_download.max(started.elapsed());
                rounds += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (worst_health, worst_download, rounds)
        });
        Probe { stop, task }
    }

    async fn finish(self) -> (Duration, Duration) {
        self.stop.store(true, Ordering::SeqCst);
        let (health, download, rounds) = self.task.await.expect("probe");
        assert!(rounds >= 3, "the probe ran only {rounds} rounds");
        (health, download)
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Password checks the server runs at once by default: one per core.
fn password_checks() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Attacker addresses of the password flood, and the failures each may have counted
/// before it is refused (`auth.max_failures_per_address`).
const ADDRESSES: u8 = 30;
const FAILURES_PER_ADDRESS: usize = 5;

/// Waves of 300 concurrent anonymous requests with wrong passwords for made-up users,
/// from 30 loopback addresses, for at least two seconds. Each used to run an argon2
/// verification (~19 MiB) with no bound: 600 at once drove the server to 11.4 GB.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn password_flood_is_bounded_in_memory_and_keeps_the_server_responsive() {
    // Every request on its own connection: the per-address connection cap (a defence of
    // its own, tested in tests/connections.rs) is raised so that all of them get through.
    let server = ChildServer::start(
        TOKEN,
        &[
            (PER_IP_CAP, "1000"),
            (
                "ALPINE_REGISTRY__AUTH__MAX_FAILURES_PER_ADDRESS",
                &FAILURES_PER_ADDRESS.to_string(),
            ),
        ],
    );
    let download = publish_probe_package(&server).await;
    let before = server.peak_rss();
    let probe = Probe::start(&server, &download);

    let attackers: Vec<reqwest::Client> = (10..10 + ADDRESSES)
        .map(|host| {
            reqwest::Client::builder()
                .local_address(std::net::IpAddr::from([127, 0, 0, host]))
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap()
        })
        .collect();
    let wave = 300;
    let started = Instant::now();
    let mut counts = std::collections::BTreeMap::new();
    let mut sent = 0;
    for round in 0..10 {
        if round >= 2 && started.elapsed() > Duration::from_secs(2) {
            break;
        }
        let requests: Vec<_> = (0..wave)
            .map(|i| {
                let client = attackers[i % attackers.len()].clone();
                let url = server.url("/admin/key");
                let user = format!("nouser{round}x{i}");
                tokio::spawn(async move {
                    let response = client
                        .get(url)
                        .header("authorization", basic(&user, "wrong"))
                        .send()
                        .await
                        .expect("flood request answered");
                    let retry_after = response.headers().get("retry-after").cloned();
                    (response.status().as_u16(), retry_after)
                })
            })
            .collect();
        for request in requests {
            let (status, retry_after) = request.await.unwrap();
            *counts.entry(status).or_insert(0) += 1;
            assert!(matches!(status, 401 | 429 | 503), "flood answered {status}");
            if status != 401 {
                assert!(retry_after.is_some(), "{status} without Retry-After");
            }
        }
        sent += wave;
    }
    let flood_time = started.elapsed();
    let (health, download) = probe.finish().await;
    let peak = server.peak_rss();
    eprintln!(
        "password flood: {sent} requests in {flood_time:.1?}, answers {counts:?}; \
         worst /healthz {health:.0?}, worst download {download:.0?}; \
         VmHWM {:.1} MiB (before the flood {:.1} MiB)",
        peak as f64 / MIB as f64,
        before as f64 / MIB as f64
    );
    // What the design lets through to a check: per address, the failures the throttle
    // counts before refusing, plus the checks one address may have under way or waiting
    // before those failures are counted. Everything else is refused before hashing.
    let checks = password_checks();
    let checked = counts.get(&401).copied().unwrap_or(0);
    let allowed = ADDRESSES as usize * (FAILURES_PER_ADDRESS + checks);
    assert!(
        checked <= allowed,
        "{checked} attempts were checked, the limits allow {allowed}: {counts:?}"
    );
    // A process of a few tens of MiB, plus one argon2 working memory (19 MiB) per check
    // running at once.
    let bound = 48 * MIB + checks as u64 * 24 * MIB;
    assert!(
        peak < bound,
        "peak RSS {} MiB (bound {} MiB)",
        peak / MIB,
        bound / MIB
    );
    assert!(health < Duration::from_secs(1), "/healthz took {health:?}");
    assert!(
        download < Duration::from_secs(2),
        "download took {download:?}"
    );
}

/// 1,500 attempts with long user names. Each name used to become a throttle key (and be
/// hashed against): with ~200 KB names, ~300 MB kept, growing linearly. Now a request
/// head over 64 KiB is refused by the HTTP layer (431), and a name no user can have is
/// refused before anything is looked up or remembered (401).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_user_names_are_refused_without_growing_memory() {
    let server = ChildServer::start(TOKEN, &[]);
    let download = publish_probe_package(&server).await;
    let probe = Probe::start(&server, &download);
    let rss_before = server.rss();

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let attempts = 1500;
    let concurrency = 16;
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let client = client.clone();
            let url = server.url("/admin/key");
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in (w..attempts).step_by(concurrency) {
                    // Every tenth over the head limit, the rest just under it.
                    let long = if i % 10 == 0 { 200_000 } else { 40_000 };
                    let name = format!("{i:06}{}", "n".repeat(long));
                    let response = client
                        .get(&url)
                        .header("authorization", basic(&name, "wrong"))
                        .send()
                        .await
                        .expect("answered");
                    statuses.push(response.status().as_u16());
                }
                statuses
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for worker in workers {
        statuses.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed();
    let (health, download) = probe.finish().await;
    let rss_after = server.rss();
    let growth = rss_after.saturating_sub(rss_before);
    eprintln!(
        "long user names: {attempts} attempts in {elapsed:.1?}; RSS {:.1} -> {:.1} MiB; \
         worst /healthz {health:.0?}, worst download {download:.0?}",
        rss_before as f64 / MIB as f64,
        rss_after as f64 / MIB as f64
    );
    assert_eq!(statuses.len(), attempts);
    let heads_too_large = statuses.iter().filter(|&&s| s == 431).count();
    assert_eq!(heads_too_large, attempts / 10, "200 KB heads get 431");
    assert!(
        statuses.iter().all(|&s| s == 401 || s == 431),
        "every other attempt is a 401"
    );
    assert!(growth < 40 * MIB, "RSS grew by {} MiB", growth / MIB);
    assert!(health < Duration::from_secs(1), "/healthz took {health:?}");
    assert!(
        download < Duration::from_secs(2),
        "download took {download:?}"
    );
}

/// A package of ~17 KB: a ~1 MiB description and a 15 MiB install script, both
/// compressing to almost nothing.
fn amplifying_package(i: usize) -> Vec<u8> {
    use std::io::Write;
    let builder = PackageBuilder::new(&format!("amp{i}"), "1.0-r0", "x86_64")
        .without_field("pkgdesc")
        .field("pkgdesc", &"d".repeat(1_000_000))
        .file("usr/share/amp/file", b"x");
    let data = builder.data_member();
    let pkginfo = format!(
        "{}datahash = {}\n",
        builder.pkginfo(),
        hex::encode(Sha256::digest(&data))
    );
    let mut tar = Vec::new();
    for (name, contents) in [
        (".PKGINFO", pkginfo.into_bytes()),
        (".pre-install", vec![b'#'; 15 << 20]),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(contents.len() as u64);
        h.set_mode(0o755);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        tar.extend_from_slice(h.as_bytes());
        tar.extend_from_slice(&contents);
        tar.resize(tar.len().next_multiple_of(512), 0);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar).unwrap();
    let mut package = gz.finish().unwrap();
    package.extend_from_slice(&data);
    package
}

/// 99 concurrent uploads of packages that inflate ~1,000 times. They used to be parsed
/// all at once, each control member held twice: 1.0 GB peak, 0.7 GB kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_amplifying_uploads_are_bounded_in_memory() {
    let server = ChildServer::start(
        TOKEN,
        &[
            ("ALPINE_REGISTRY__LIMITS__MAX_CONCURRENT_UPLOADS", "16"),
            // One user sends them all: the cap in all is what this is about.
            (
                "ALPINE_REGISTRY__LIMITS__MAX_CONCURRENT_UPLOADS_PER_USER",
                "16",
            ),
            (PER_IP_CAP, "1000"),
        ],
    );
    let download = publish_probe_package(&server).await;
    let probe = Probe::start(&server, &download);
    let packages: Vec<Vec<u8>> = (0..99).map(amplifying_package).collect();
    assert!(packages[0].len() < 64 << 10, "{} bytes", packages[0].len());

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let started = Instant::now();
    let uploads: Vec<_> = packages
        .into_iter()
        .map(|bytes| {
            let client = client.clone();
            let url = server.url("/admin/v3.21/main");
            tokio::spawn(async move {
                let response = client
                    .put(url)
                    .basic_auth("admin", Some(TOKEN))
                    .body(bytes)
                    .send()
                    .await
                    .expect("upload answered");
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                (
                    status,
                    retry_after,
                    response.text().await.unwrap_or_default(),
                )
            })
        })
        .collect();
    let mut counts = std::collections::BTreeMap::new();
    for upload in uploads {
        let (status, retry_after, body) = upload.await.unwrap();
        *counts.entry(status).or_insert(0) += 1;
        match status {
            400 => assert!(body.contains("max_stanza_bytes"), "{body}"),
            503 => assert!(retry_after, "503 without Retry-After"),
            other => panic!("upload answered {other}: {body}"),
        }
    }
    let elapsed = started.elapsed();
    let (health, download) = probe.finish().await;
    let peak = server.peak_rss();
    eprintln!(
        "amplifying uploads: 99 in {elapsed:.1?}, answers {counts:?}; worst /healthz \
         {health:.0?}, worst download {download:.0?}; VmHWM {:.1} MiB",
        peak as f64 / MIB as f64
    );
    assert!(
        counts.contains_key(&503),
        "the upload cap must engage: {counts:?}"
    );
    // Parses run one per core, each holding one package's control member and stanza.
    let bound = 40 * MIB + password_checks() as u64 * 16 * MIB;
    assert!(
        peak < bound,
        "peak RSS {} MiB (bound {} MiB)",
        peak / MIB,
        bound / MIB
    );
    assert!(health < Duration::from_secs(1), "/healthz took {health:?}");
    assert!(
        download < Duration::from_secs(2),
        "download took {download:?}"
    );
}

/// Sends `head`, then up to `body_bytes` of body (chunked when `chunked`) while reading
/// the answer; returns the answer's status line and head, and how much of the body went
/// out before the server closed the connection.
async fn post_huge_body(port: u16, head: String, body_bytes: u64, chunked: bool) -> (String, u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let sender = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await.expect("head");
        let chunk = vec![b'a'; 64 << 10];
        let mut sent = 0u64;
        while sent < body_bytes {
            let written = if chunked {
                let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                framed.extend_from_slice(&chunk);
                framed.extend_from_slice(b"\r\n");
                writer.write_all(&framed).await
            } else {
                writer.write_all(&chunk).await
            };
            if written.is_err() {
                break;
            }
            sent += chunk.len() as u64;
        }
        sent
    });
    let mut answer = Vec::new();
    let mut buffer = vec![0u8; 16 << 10];
    // Until the server closes: a reset after the answer still leaves what was read.
    while let Ok(n) = reader.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..n]);
    }
    let sent = sender.await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
    (head, sent)
}

/// Two anonymous 512 MiB form POSTs declared with `Content-Length` and one chunked. Forms
/// used to be read whole into memory before anything was checked: one such POST took the
/// server from 25 MB to 2.1 GB. Now each is refused with 413 once the limit is passed,
/// the connection is closed after the answer, and memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn huge_form_bodies_are_refused_without_being_read() {
    let server = ChildServer::start(TOKEN, &[]);
    let download = publish_probe_package(&server).await;
    let probe = Probe::start(&server, &download);
    let rss_before = server.rss();
    let huge: u64 = 512 << 20;
    let declared = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: \
             application/x-www-form-urlencoded\r\nContent-Length: {huge}\r\n\r\n"
        )
    };
    let chunked = "POST /admin/-/packages/probe/delete HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                   Content-Type: application/x-www-form-urlencoded\r\n\
                   Transfer-Encoding: chunked\r\n\r\n"
        .to_string();
    let started = Instant::now();
    let mut answers = Vec::new();
    // Waves of the three, for at least a second, so that the probe runs meanwhile.
    while answers.len() < 6 || started.elapsed() < Duration::from_secs(1) {
        let attacks = [
            tokio::spawn(post_huge_body(
                server.port,
                declared("/-/login"),
                huge,
                false,
            )),
            tokio::spawn(post_huge_body(
                server.port,
                declared("/-/logout"),
                huge,
                false,
            )),
            tokio::spawn(post_huge_body(server.port, chunked.clone(), huge, true)),
        ];
        for attack in attacks {
            answers.push(attack.await.unwrap());
        }
    }
    let elapsed = started.elapsed();
    let (health, download) = probe.finish().await;
    let growth = server.peak_rss().saturating_sub(rss_before);
    eprintln!(
        "huge form bodies: {} answered in {elapsed:.1?}, at most {} body bytes sent before the close; \
         peak growth {:.1} MiB; worst /healthz {health:.0?}, worst download {download:.0?}",
        answers.len(),
        answers.iter().map(|(_, sent)| *sent).max().unwrap_or(0),
        growth as f64 / MIB as f64,
    );
    for (head, sent) in &answers {
        assert!(head.starts_with("HTTP/1.1 413"), "answered {head:?}");
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "the connection must end with the refusal: {head:?}"
        );
        assert!(*sent < huge, "the server read the whole body");
    }
    assert!(
        growth <= 16 * MIB,
        "peak RSS grew by {:.1} MiB",
        growth as f64 / MIB as f64
    );
    assert!(health < Duration::from_secs(1), "/healthz took {health:?}");
}

/// A user with a write token to its own namespace, made through the API by the admin.
async fn user_with_write_token(server: &ChildServer, name: &str) -> String {
    let client = reqwest::Client::new();
    let created = client
        .post(server.url("/api/v1/admin/users"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let token = client
        .post(server.url("/api/v1/admin/tokens"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "user": name, "scope": "write" }))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 201, "{}", token.text().await.unwrap());
    let token: serde_json::Value = token.json().await.unwrap();
    token["secret"].as_str().unwrap().to_string()
}

/// An upload from `source` with `token` whose body never ends: a byte every second.
/// Returns the status it was answered, if it was answered before `stop`.
async fn trickle_upload(
    port: u16,
    source: std::net::IpAddr,
    token: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((source, 0).into()).unwrap();
    let stream = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "PUT /admin/v3.21/main HTTP/1.1\r\nHost: registry\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 1000000\r\n\r\n"
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let trickle = async {
        loop {
            if writer.write_all(&[0x1f]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let answer = async {
        let mut head = [0u8; 12];
        reader.read_exact(&mut head).await.ok()?;
        String::from_utf8_lossy(&head[9..12]).parse().ok()
    };
    tokio::select! {
        status = answer => status,
        _ = trickle => None,
        _ = stop.wait_for(|stop| *stop) => None,
    }
}

/// One write token trickling 64 uploads (all `limits.max_concurrent_uploads`) from four
/// addresses, a byte a second each. They used to hold every upload slot for as long as
/// they lasted, and every other publish was refused with 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_trickling_uploads_leaves_slots_for_other_users() {
    let server = ChildServer::start(TOKEN, &[]);
    let bob = user_with_write_token(&server, "bob").await;
    let staging = server.dir.path().join("data/blobs/.staging");
    let staged = || std::fs::read_dir(&staging).map_or(0, |dir| dir.count());

    let (stop, stopping) = tokio::sync::watch::channel(false);
    let trickles: Vec<_> = (0..64)
        .map(|i| {
            let source = std::net::IpAddr::from([127, 0, 0, 20 + i % 4]);
            tokio::spawn(trickle_upload(
                server.port,
                source,
                TOKEN.to_string(),
                stopping.clone(),
            ))
        })
        .collect();
    // Every trickle either holds a slot (and has a staged file) or was refused.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let refused = trickles.iter().filter(|t| t.is_finished()).count();
        if staged() + refused >= 64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} staged, {refused} refused",
            staged()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let holding = staged();

    let started = Instant::now();
    let published = reqwest::Client::new()
        .put(server.url("/bob/v3.21/main"))
        .bearer_auth(&bob)
        .body(common::package("other", "1.0-r0", "x86_64"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("answered within 10 s");
    let waited = started.elapsed();
    let status = published.status();
    let body = published.text().await.unwrap();
    stop.send_replace(true);
    let mut answers = std::collections::BTreeMap::new();
    for trickle in trickles {
        *answers.entry(trickle.await.unwrap()).or_insert(0) += 1;
    }
    eprintln!(
        "trickled uploads: {holding} held a slot, answers {answers:?}; another user's \
         publish answered {status} in {waited:.1?}"
    );
    assert_eq!(status, 201, "{body}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert_eq!(holding, 32, "half of the slots");
    assert_eq!(answers.get(&Some(429)), Some(&32), "{answers:?}");
}

/// Package payload of the stalled downloads: larger than what the kernel buffers between
/// the server and a client that does not read.
const LARGE_PAYLOAD: usize = 4 << 20;
/// Stalled downloads, from ten addresses.
const STALLED: usize = 300;

/// A package of about `LARGE_PAYLOAD` bytes that does not compress.
fn large_package() -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let payload: Vec<u8> = (0..LARGE_PAYLOAD)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    PackageBuilder::new("large", "1.0-r0", "x86_64")
        .file("usr/share/large/data", &payload)
        .build()
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// Sends `GET path` from `source` with a small receive buffer, and reads only the head of
/// the answer: the server is left with a body the client does not take.
async fn stall_download(
    port: u16,
    source: std::net::IpAddr,
    path: String,
) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind((source, 0).into()).unwrap();
    let mut stream = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: registry\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "closed before the head"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Body bytes `stream` still delivers until the server's close (or 10 s).
async fn drain(mut stream: tokio::net::TcpStream) -> usize {
    use tokio::io::AsyncReadExt;
    let mut total = 0;
    let mut buf = vec![0u8; 64 << 10];
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            total += n;
        }
    })
    .await;
    total
}

/// 300 downloads of a 4 MiB package whose clients read the answer's head and then
/// nothing. Each used to hold 256 KiB chunks and tokio's 256 KiB file buffer until
/// `server.request_timeout_secs` (an hour). Now large chunks come from a budget (16 MiB
/// here), the rest are 16 KiB, and each connection is closed once its client has taken
/// nothing for `server.send_timeout_secs` (3 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn downloads_whose_clients_stop_reading_are_bounded_in_memory_and_closed() {
    const SEND_TIMEOUT_SECS: u64 = 3;
    const BUDGET: u64 = 16 * MIB;
    let server = ChildServer::start(
        TOKEN,
        &[
            ("ALPINE_REGISTRY__SERVER__SEND_TIMEOUT_SECS", "3"),
            (
                "ALPINE_REGISTRY__SERVER__DOWNLOAD_BUFFER_BYTES",
                &BUDGET.to_string(),
            ),
        ],
    );
    let package = large_package();
    let put = reqwest::Client::new()
        .put(server.url("/admin/v3.21/main"))
        .bearer_auth(TOKEN)
        .body(package.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let path = "/admin/v3.21/main/x86_64/large-1.0-r0.apk".to_string();
    let pid = server.child.id();
    let descriptors_before = open_descriptors(pid);
    let rss_before = server.rss();

    let stalls: Vec<_> = (0..STALLED)
        .map(|i| {
            let source = std::net::IpAddr::from([127, 0, 0, 30 + (i % 10) as u8]);
            tokio::spawn(stall_download(server.port, source, path.clone()))
        })
        .collect();
    let mut streams = Vec::new();
    for stall in stalls {
        streams.push(stall.await.unwrap());
    }
    let stalled_at = Instant::now();
    let descriptors_stalled = open_descriptors(pid);
    // Closed after the send timeout (between one and one and a half of it, as the epochs
    // go), with a margin for a loaded machine. Each stalled download holds its socket and
    // its file; once closed, the server is back near the figure before the downloads (a
    // download may not have opened its file yet when the figure while stalled is read, so
    // that one is only reported), with ten database connections' worth of margin (the pool
    // grows under the downloads, three descriptors a connection).
    let deadline = stalled_at + Duration::from_secs(SEND_TIMEOUT_SECS * 3 / 2 + 10);
    while open_descriptors(pid) > descriptors_before + 30 {
        assert!(
            Instant::now() < deadline,
            "{} of the server's descriptors open {:?} after the downloads stalled \
             ({descriptors_before} before, {descriptors_stalled} while stalled)",
            open_descriptors(pid),
            stalled_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed_after = stalled_at.elapsed();
    let growth = server.peak_rss().saturating_sub(rss_before);
    let delivered = futures_util::future::join_all(streams.into_iter().map(drain)).await;
    let whole = delivered.iter().filter(|&&n| n >= package.len()).count();
    eprintln!(
        "{STALLED} stalled downloads of {:.1} MiB: server descriptors {descriptors_before} -> \
         {descriptors_stalled}, back after {closed_after:.1?}; peak RSS growth {:.1} MiB; \
         {whole} delivered whole, at most {:.1} MiB of one",
        package.len() as f64 / MIB as f64,
        growth as f64 / MIB as f64,
        *delivered.iter().max().unwrap() as f64 / MIB as f64
    );
    assert!(
        descriptors_stalled >= descriptors_before + STALLED,
        "held while stalled"
    );
    assert_eq!(
        whole, 0,
        "the server stopped sending to clients that took nothing"
    );
    // The budget, and per connection: what hyper queues for writing (up to 64 KiB, its
    // buffer limit, and then the chunk that passed it: a small one once the budget is
    // spent) and what a connection costs anyway (its task, read and header buffers: about
    // 35 KiB measured), and 16 MiB for the rest of the server under 300 requests at once
    // (database connections opened, allocator arenas): 45 to 60 MiB measured in all. The
    // same test before the budget and the send timeout: 163 MiB, held until the request
    // timeout.
    let bound = BUDGET + STALLED as u64 * 128 * 1024 + 16 * MIB;
    assert!(
        growth < bound,
        "peak RSS grew by {:.1} MiB (bound {:.1} MiB)",
        growth as f64 / MIB as f64,
        bound as f64 / MIB as f64
    );
}

/// 8 administrators' clients setting passwords at once, 25 each. Every new password used
/// to be hashed on the unbounded blocking pool, each with a fresh argon2 buffer (~19 MiB):
/// 200 such changes took a fresh server from 25 MiB to 2.1 GB, and it kept 2.5 GB idle.
/// Now hashing goes through the password check limiter, which runs at most
/// `auth.max_concurrent_password_checks` at once and reuses their working memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_password_changes_are_bounded_in_memory() {
    const CLIENTS: usize = 8;
    const CHANGES: usize = 25;
    // Two at once whatever the machine: the bound below holds two working memories.
    let server = ChildServer::start(
        TOKEN,
        &[("ALPINE_REGISTRY__AUTH__MAX_CONCURRENT_PASSWORD_CHECKS", "2")],
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    for i in 0..CLIENTS {
        let response = client
            .post(server.url("/api/v1/admin/users"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "name": format!("user{i}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let rss_before = server.rss();
    let started = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let client = client.clone();
            let url = server.url(&format!("/api/v1/admin/users/user{i}/password"));
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for change in 0..CHANGES {
                    let response = client
                        .put(&url)
                        .bearer_auth(TOKEN)
                        .json(&serde_json::json!({ "password": format!("password {i} {change}") }))
                        .send()
                        .await
                        .expect("answered");
                    statuses.push(response.status().as_u16());
                }
                statuses
            })
        })
        .collect();
    let mut counts = std::collections::BTreeMap::new();
    for worker in workers {
        for status in worker.await.unwrap() {
            *counts.entry(status).or_insert(0) += 1;
        }
    }
    let elapsed = started.elapsed();
    let peak = server.peak_rss();
    let rss_after = server.rss();
    let growth = peak.saturating_sub(rss_before);
    eprintln!(
        "password changes: {} in {elapsed:.1?} from {CLIENTS} clients, answers {counts:?}; \
         RSS before {:.1} MiB, peak {:.1} MiB (growth {:.1} MiB), after {:.1} MiB",
        CLIENTS * CHANGES,
        rss_before as f64 / MIB as f64,
        peak as f64 / MIB as f64,
        growth as f64 / MIB as f64,
        rss_after as f64 / MIB as f64,
    );
    assert_eq!(
        counts.get(&204).copied(),
        Some(CLIENTS * CHANGES),
        "every change is made: {counts:?}"
    );
    // The last password of each user is the one that signs in.
    for i in 0..CLIENTS {
        let user = format!("user{i}");
        let last = format!("password {i} {}", CHANGES - 1);
        let status = client
            .get(server.url("/api/v1/owners"))
            .basic_auth(&user, Some(&last))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{user} signs in with the last password");
    }
    assert!(
        growth <= 64 * MIB,
        "peak RSS grew by {:.1} MiB",
        growth as f64 / MIB as f64
    );
}

/// Packages of the catalog test, all in `admin/v3.21/catalog`.
const CATALOG_PACKAGES: usize = 3_400;
/// Provides per package: each package provides `so:libbig<i>-part<k>.so.1` for k below.
const CATALOG_PROVIDES: usize = 150;

/// A package whose index entry is about 9 KiB (a 4 KiB description, 150 provides), well
/// within `limits.max_stanza_bytes`: 3,400 of them are some 30 MB of index entries.
fn catalog_package(i: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "library", "for", "parsing", "large", "catalogs", "of", "alpine", "packages",
    ];
    let mut description = format!("big{i}:");
    let mut k = i;
    while description.len() < 4_000 {
        k = k.wrapping_mul(31).wrapping_add(7);
        description.push(' ');
        description.push_str(WORDS[k % WORDS.len()]);
    }
    let provides: Vec<String> = (0..CATALOG_PROVIDES)
        .map(|k| format!("so:libbig{i}-part{k}.so.1=1.0"))
        .collect();
    PackageBuilder::new(&format!("big{i:04}"), "1.0-r0", "x86_64")
        .without_field("pkgdesc")
        .field("pkgdesc", &description)
        .field("provides", &provides.join(" "))
        .file("usr/lib/big", &i.to_le_bytes())
        .build()
}

/// Publishes the catalog test's packages with 32 clients.
async fn publish_catalog_at(base: String) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let clients = 32;
    let uploads: Vec<_> = (0..clients)
        .map(|c| {
            let client = client.clone();
            let base = base.clone();
            tokio::spawn(async move {
                for i in (c..CATALOG_PACKAGES).step_by(clients) {
                    let bytes = catalog_package(i);
                    let response = client
                        .put(format!("{base}/admin/v3.21/catalog"))
                        .basic_auth("admin", Some(TOKEN))
                        .body(bytes)
                        .send()
                        .await
                        .expect("upload answered");
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    assert_eq!(status, 201, "upload of package {i}: {body}");
                }
            })
        })
        .collect();
    for upload in uploads {
        upload.await.unwrap();
    }
}

/// Answer times of a package download, polled on a connection of its own while an attack
/// runs.
struct DownloadProbe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Duration>>,
}

impl DownloadProbe {
    fn start(server: &ChildServer, (download, size): &(String, usize)) -> DownloadProbe {
        let size = *size;
        let stop = Arc::new(AtomicBool::new(false));
        let url = server.url(download);
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            // One client, requests one after the other: one kept-alive connection.
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap();
            let mut latencies = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                let started = Instant::now();
                let response = client.get(&url).send().await.expect("download");
                assert_eq!(response.status(), 200);
                assert_eq!(response.bytes().await.unwrap().len(), size);
                latencies.push(started.elapsed());
                // Paced, not a synchronisation: about a hundred downloads a second.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            latencies
        });
        DownloadProbe { stop, task }
    }

    /// The latencies seen, sorted.
    async fn finish(self) -> Vec<Duration> {
        self.stop.store(true, Ordering::SeqCst);
        let mut latencies = self.task.await.expect("probe");
        latencies.sort();
        latencies
    }
}

/// The nearest-rank percentile of sorted latencies.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// 16 concurrent anonymous searches (JSON API and web page) over ~3,400 packages with
/// large index entries, in rounds for a few seconds. Each search used to read and parse
/// every index entry of every readable owner on the connection's worker thread: one
/// search peaked at 99 MB, 16 at once at 363 MB, and downloads on the same thread waited
/// up to a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catalog_searches_are_bounded_in_memory_and_keep_downloads_prompt() {
    // Searches past the cap wait their turn rather than being refused: all 16 count. The
    // catalog is filled by 32 clients of one user, past the default share of upload slots.
    let server = ChildServer::start_on_backends(
        TOKEN,
        &[
            (PER_IP_CAP, "1000"),
            ("ALPINE_REGISTRY__LIMITS__CATALOG_QUERY_WAIT_SECS", "60"),
            (
                "ALPINE_REGISTRY__LIMITS__MAX_CONCURRENT_UPLOADS_PER_USER",
                "64",
            ),
        ],
    );
    let download = publish_probe_package(&server).await;
    let started = Instant::now();
    publish_catalog_at(server.url("")).await;
    let fill_time = started.elapsed();

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    // (path, expected total): a substring of what every package provides, a glob of
    // names, everything; the web page says the total in words.
    let part = 7;
    let searches: Vec<(String, usize)> = vec![
        (
            format!("/api/v1/packages?q=part{part}.so"),
            CATALOG_PACKAGES,
        ),
        ("/api/v1/packages?q=big1*".into(), 1_000),
        ("/api/v1/packages?limit=100".into(), CATALOG_PACKAGES + 1),
        (format!("/-/search?q=part{part}.so"), CATALOG_PACKAGES),
        ("/-/search?q=big1*".into(), 1_000),
        ("/-/search".into(), CATALOG_PACKAGES + 1),
    ];
    let rss_before = server.rss();
    assert!(server.reset_peak_rss(), "the kernel refused to reset VmHWM");
    let probe = DownloadProbe::start(&server, &download);
    let phase = Instant::now();
    let mut answers = std::collections::BTreeMap::new();
    let mut wrong = Vec::new();
    let mut slowest = Duration::ZERO;
    while answers.is_empty() || phase.elapsed() < Duration::from_secs(3) {
        let round: Vec<_> = (0..16)
            .map(|i| {
                let (path, total) = searches[i % searches.len()].clone();
                let client = client.clone();
                let url = server.url(&path);
                tokio::spawn(async move {
                    let started = Instant::now();
                    let response = client.get(&url).send().await.expect("search answered");
                    let status = response.status().as_u16();
                    let body = response.text().await.unwrap();
                    let right = status != 200
                        || if path.starts_with("/api/") {
                            let page: serde_json::Value = serde_json::from_str(&body).unwrap();
                            page["total"] == total
                        } else {
                            body.contains(&format!("{total} packages"))
                        };
                    (status, right.then_some(()).ok_or(path), started.elapsed())
                })
            })
            .collect();
        for search in round {
            let (status, right, elapsed) = search.await.unwrap();
            *answers.entry(status).or_insert(0) += 1;
            wrong.extend(right.err());
            slowest = slowest.max(elapsed);
        }
    }
    let search_time = phase.elapsed();
    let latencies = probe.finish().await;
    let growth = server.peak_rss().saturating_sub(rss_before);
    let p99 = percentile(&latencies, 99.0);
    eprintln!(
        "catalog searches: {CATALOG_PACKAGES} packages published in {fill_time:.1?}; searches \
         16 at a time for {search_time:.1?}, answers {answers:?} (slowest {slowest:.0?}); peak RSS growth \
         {:.1} MiB (from {:.1} MiB); {} downloads meanwhile: p50 {:.1?}, p99 {p99:.1?}, max \
         {:.1?}",
        growth as f64 / MIB as f64,
        rss_before as f64 / MIB as f64,
        latencies.len(),
        percentile(&latencies, 50.0),
        latencies[latencies.len() - 1],
    );
    assert_eq!(
        answers.keys().collect::<Vec<_>>(),
        [&200],
        "every search answered"
    );
    assert!(wrong.is_empty(), "wrong totals: {wrong:?}");
    assert!(latencies.len() >= 50, "only {} downloads", latencies.len());
    assert!(
        growth <= 64 * MIB,
        "peak RSS grew by {:.1} MiB",
        growth as f64 / MIB as f64
    );
    assert!(p99 <= Duration::from_millis(50), "download p99 {p99:?}");
}
