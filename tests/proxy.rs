//! The registry behind a reverse proxy: the client is the address the proxy reports.
//!
//! The nginx tests run the real nginx configured from `deploy/nginx.conf` itself (its
//! upstream servers and listen port replaced) in front of the real binary: two instances
//! on one PostgreSQL database when `ALPINE_REGISTRY_TEST_POSTGRES_URL` is set, else one
//! (on SQLite). The instances trust 127.0.0.1, where nginx connects from; the clients
//! connect from other loopback addresses (127.0.0.2, 127.0.0.3), so nginx reports
//! distinct clients. They check that one client tripping the failure throttle leaves
//! every other client alone, that the log names the real client, that forwarding headers
//! a client sends itself change neither its address nor the URLs in answers, and that
//! nginx never passes a PUT or DELETE that reached an instance to another one.
//!
//! Without nginx (Debian: `apt-get install nginx-light`) the nginx tests are skipped with
//! a note, unless `ALPINE_REGISTRY_TEST_REQUIRE_NGINX=1` (as `.ci/run` sets): then they
//! fail. The last tests need no nginx: they send forwarding headers themselves, as a
//! proxy at 127.0.0.1 would.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alpine_registry::apk::builder::PackageBuilder;
use common::backends::Backends;
use common::postgres as pg;
use common::process::ChildServer;
use common::{TestServer, ADMIN_TOKEN};
use reqwest::StatusCode;

const TOKEN: &str = "apkreg_proxy-test-token-0123456789abcdef";
const REQUIRE_ENV: &str = "ALPINE_REGISTRY_TEST_REQUIRE_NGINX";
const REPO: &str = "/admin/v3.21/main";
const ATTACKER: &str = "127.0.0.2";
const USER: &str = "127.0.0.3";

/// The nginx binary; None (after a note) when it is missing and not required.
fn nginx_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        assert!(
            std::env::var(REQUIRE_ENV).as_deref() != Ok("1"),
            "{REQUIRE_ENV}=1 but nginx is not installed (Debian: apt-get install nginx-light)"
        );
        eprintln!("note: nginx tests skipped: nginx is not installed (Debian: apt-get install nginx-light)");
    }
    found
}

/// nginx running `deploy/nginx.conf` on a free loopback port, as the current user, with
/// everything it writes in a temporary directory.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// The shipped configuration with its two upstream servers replaced by `upstreams`.
    fn start(bin: &Path, upstreams: [u16; 2]) -> Nginx {
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf"),
        )
        .unwrap();
        let port = common::free_port();
        let mut site = shipped;
        for (from, to) in [
            (
                "server registry-1:8080",
                format!("server 127.0.0.1:{}", upstreams[0]),
            ),
            (
                "server registry-2:8080",
                format!("server 127.0.0.1:{}", upstreams[1]),
            ),
            ("listen 80;", format!("listen 127.0.0.1:{port};")),
        ] {
            assert_eq!(
                site.matches(from).count(),
                1,
                "deploy/nginx.conf has one {from:?}"
            );
            site = site.replace(from, &to);
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::write(dir.path().join("site.conf"), site).unwrap();
        // As root the master would switch its workers to an unprivileged user, who cannot
        // write the private temporary directory.
        let user = if rustix::process::geteuid().is_root() {
            "user root;\n"
        } else {
            ""
        };
        let main = format!(
            "{user}daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/site.conf;
}}
"
        );
        std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "nginx exited at start ({status}): {}",
                    std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
                );
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { child, port, dir }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master stops its workers too (SIGKILL would leave them running).
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = self.child.wait();
    }
}

/// The registry behind nginx: two instances of the binary on one PostgreSQL database
/// (and one bucket prefix, else one blob directory) when the test environment names a
/// database server, else one on the backends it names.
struct Registry {
    // Before the backends: the instances stop before the database is dropped.
    instances: Vec<ChildServer>,
    _backends: Backends,
    _blobs: tempfile::TempDir,
}

impl Registry {
    fn start(extra: &[(&str, &str)]) -> Registry {
        let backends = Backends::from_env();
        let blobs = tempfile::tempdir().unwrap();
        let mut env: Vec<(String, String)> = vec![
            (
                "ALPINE_REGISTRY__SERVER__TRUSTED_PROXIES".into(),
                "[\"127.0.0.1\"]".into(),
            ),
            // Every connection comes from nginx.
            (
                "ALPINE_REGISTRY__SERVER__MAX_CONNECTIONS_PER_IP".into(),
                "1024".into(),
            ),
        ];
        env.extend(backends.env());
        if backends.s3.is_none() {
            env.push((
                "ALPINE_REGISTRY__STORAGE__BLOB_DIR".into(),
                blobs.path().display().to_string(),
            ));
        }
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let count = if backends.database.is_some() {
            2
        } else {
            eprintln!(
                "note: one instance on {} (two on PostgreSQL with {})",
                backends.describe(),
                pg::URL_ENV
            );
            1
        };
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let instances = (0..count)
            .map(|_| ChildServer::start(TOKEN, &env))
            .collect();
        Registry {
            instances,
            _backends: backends,
            _blobs: blobs,
        }
    }

    /// The upstream servers for nginx: each instance, the one instance twice.
    fn upstreams(&self) -> [u16; 2] {
        let ports: Vec<u16> = self.instances.iter().map(|i| i.port).collect();
        [ports[0], ports[ports.len() - 1]]
    }

    fn logs(&self) -> Vec<String> {
        self.instances
            .iter()
            .map(|i| std::fs::read_to_string(&i.log).unwrap_or_default())
            .collect()
    }

    /// The instances' logs once `done` holds for them (lines are written by a thread of
    /// their own, so the last ones may still be on their way), or after 10 s.
    async fn logs_when(&self, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if done(&logs) || Instant::now() > deadline {
                return logs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A client whose connections come from `address` (any of 127.0.0.0/8 is loopback).
fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Whether a log line's request span names `address` as its client.
fn names_client(line: &str, address: &str) -> bool {
    let needle = format!("client={address}");
    line.match_indices(&needle).any(|(at, _)| {
        !line[at + needle.len()..].starts_with(|c: char| c.is_ascii_digit() || c == '.')
    })
}

fn package(name: &str) -> Vec<u8> {
    PackageBuilder::new(name, "1.0-r0", "x86_64")
        .file(&format!("usr/share/{name}/README"), name.as_bytes())
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_tripping_the_throttle_behind_nginx_leaves_other_clients_alone() {
    let Some(bin) = nginx_binary() else {
        return;
    };
    let registry = Registry::start(&[
        ("ALPINE_REGISTRY__AUTH__MAX_FAILURES", "3"),
        ("ALPINE_REGISTRY__AUTH__MAX_FAILURES_PER_ADDRESS", "5"),
        // Refused for 30 s once tripped: the rest of the test runs within that.
        ("ALPINE_REGISTRY__AUTH__FAILURE_DELAY_MS", "30000"),
    ]);
    let instances = registry.instances.len();
    let nginx = Nginx::start(&bin, registry.upstreams());
    let attacker = client_from(ATTACKER);
    let user = client_from(USER);

    // Wrong passwords and made-up tokens, until every instance refuses them unchecked
    // (nginx takes turns between the instances: twice as many 429s in a row as there are
    // instances means each one refuses both kinds).
    let mut sent = 0;
    let mut refused_in_a_row = 0;
    while refused_in_a_row < 2 * instances {
        assert!(sent < 100, "no 429 after {sent} failed attempts");
        let request = attacker.get(nginx.url("/admin/key"));
        // In pairs, so that with two instances taking turns each gets both kinds.
        let request = if (sent / 2) % 2 == 0 {
            request.bearer_auth("apkreg_made-up-token-0123456789abcdef")
        } else {
            request.basic_auth("admin", Some("not the password"))
        };
        let status = request.send().await.unwrap().status();
        match status {
            StatusCode::TOO_MANY_REQUESTS => refused_in_a_row += 1,
            StatusCode::UNAUTHORIZED => refused_in_a_row = 0,
            other => panic!("a wrong credential answered {other}"),
        }
        sent += 1;
    }

    // Another client, with a valid token, through the same nginx: publishes and reads on
    // every instance.
    let published = user
        .put(nginx.url(REPO))
        .bearer_auth(TOKEN)
        .body(package("hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        published.status(),
        201,
        "{}",
        published.text().await.unwrap()
    );
    for path in [
        "/admin/key",
        "/admin/v3.21/main/x86_64/APKINDEX.tar.gz",
        "/admin/v3.21/main/x86_64/hello-1.0-r0.apk",
    ] {
        for _ in 0..2 * instances {
            let read = user
                .get(nginx.url(path))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(read.status(), 200, "GET {path} from {USER}");
        }
    }
    // The attacker is still refused, even with the right token: its address is counted.
    for _ in 0..instances {
        let again = attacker
            .get(nginx.url("/admin/key"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 429);
        assert!(again.headers().contains_key("retry-after"));
    }

    // Each instance logged its refusals naming the attacker, the publish naming the
    // user, and never nginx's own address.
    let logs = registry
        .logs_when(|logs| {
            logs.iter().all(|log| log.contains("status=429"))
                && logs.iter().any(|log| log.contains("status=201"))
        })
        .await;
    for log in &logs {
        assert!(
            log.lines()
                .any(|l| l.contains("status=429") && names_client(l, ATTACKER)),
            "no 429 logged for client={ATTACKER}:\n{log}"
        );
        assert!(
            log.lines()
                .any(|l| l.contains("authentication failed") && names_client(l, ATTACKER)),
            "no authentication failure logged for client={ATTACKER}:\n{log}"
        );
        let proxy = log.lines().find(|l| names_client(l, "127.0.0.1"));
        assert!(
            proxy.is_none(),
            "nginx's address logged as the client: {proxy:?}"
        );
    }
    assert!(
        logs.iter().flat_map(|log| log.lines()).any(|l| {
            l.contains("method=PUT") && l.contains("status=201") && names_client(l, USER)
        }),
        "no publish logged for client={USER}:\n{}",
        logs.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_a_client_sends_change_neither_its_address_nor_the_urls() {
    let Some(bin) = nginx_binary() else {
        return;
    };
    let registry = Registry::start(&[]);
    let nginx = Nginx::start(&bin, registry.upstreams());
    let client = client_from(ATTACKER);
    let published = client
        .put(nginx.url(REPO))
        .bearer_auth(TOKEN)
        .header("forwarded", "for=203.0.113.9;host=evil.example;proto=https")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-for", "203.0.113.9")
        .body(package("hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 201);
    let body: serde_json::Value = published.json().await.unwrap();
    // The host nginx saw (the client's Host header), over the scheme nginx was reached by.
    assert_eq!(
        body["url"],
        format!(
            "http://127.0.0.1:{}/admin/v3.21/main/x86_64/hello-1.0-r0.apk",
            nginx.port
        )
    );
    let logs = registry
        .logs_when(|logs| logs.iter().any(|log| log.contains("status=201")))
        .await;
    let lines: Vec<&str> = logs.iter().flat_map(|log| log.lines()).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("package published") && names_client(l, ATTACKER)),
        "no publish logged for client={ATTACKER}:\n{}",
        logs.join("\n")
    );
    assert!(!logs.iter().any(|log| log.contains("203.0.113.9")));
}

/// An upload from `source` through the proxy on `port` whose body never comes: a request
/// in flight at the registry (nginx passes the head on at once, the body as it arrives).
async fn upload_in_flight(port: u16, source: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind((source.parse::<IpAddr>().unwrap(), 0).into())
        .unwrap();
    let mut stream = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let head = format!(
        "PUT {REPO} HTTP/1.1\r\nHost: registry\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: 100000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[0x1f, 0x8b]).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_each_client_is_capped_by_its_requests_in_flight_not_the_proxy() {
    let Some(bin) = nginx_binary() else {
        return;
    };
    // Every connection comes from nginx; the cap is the requests in flight per client.
    let registry = Registry::start(&[("ALPINE_REGISTRY__SERVER__MAX_CONNECTIONS_PER_IP", "4")]);
    let instances = registry.instances.len();
    let nginx = Nginx::start(&bin, registry.upstreams());
    let attacker = client_from(ATTACKER);
    let user = client_from(USER);

    // The attacker's uploads take four of nginx's connections to each instance, and are
    // all the requests in flight its address may have there.
    let mut uploads = Vec::new();
    for _ in 0..4 * instances {
        uploads.push(upload_in_flight(nginx.port, ATTACKER).await);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let refusal = loop {
        let answer = attacker.get(nginx.url("/healthz")).send().await.unwrap();
        match answer.status() {
            StatusCode::TOO_MANY_REQUESTS => break answer,
            StatusCode::OK => {}
            other => panic!("the attacker's request answered {other}"),
        }
        assert!(
            Instant::now() < deadline,
            "no 429 with {} uploads in flight",
            uploads.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refusal.headers().contains_key("retry-after"));
    let message = refusal.text().await.unwrap();
    assert!(
        message.contains("server.max_connections_per_ip = 4"),
        "{message}"
    );

    // Meanwhile another client, through more of nginx's connections, is served: reads and
    // a publish.
    for _ in 0..2 * instances {
        let health = user.get(nginx.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
    }
    let published = user
        .put(nginx.url(REPO))
        .bearer_auth(TOKEN)
        .body(package("hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        published.status(),
        201,
        "{}",
        published.text().await.unwrap()
    );
    // Once the attacker's uploads end, it is served again.
    drop(uploads);
    let deadline = Instant::now() + Duration::from_secs(10);
    while attacker
        .get(nginx.url("/healthz"))
        .send()
        .await
        .unwrap()
        .status()
        != StatusCode::OK
    {
        assert!(
            Instant::now() < deadline,
            "the attacker's cap was not given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An upstream that takes each request and closes the connection without an answer, as
/// an instance dying under it would; it records the request lines it got.
async fn vanishing_upstream() -> (u16, Arc<Mutex<Vec<String>>>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buffer = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buffer[..n]),
                }
            }
            let line = String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            record.lock().unwrap().push(line);
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_never_passes_a_write_that_reached_an_instance_to_another() {
    let Some(bin) = nginx_binary() else {
        return;
    };
    let registry = ChildServer::start(TOKEN, &[]);
    let (vanishing, seen) = vanishing_upstream().await;
    let client = client_from(USER);
    let seen_count = || seen.lock().unwrap().len();
    let direct = reqwest::Client::new();
    let status_of = |file: &str| {
        let request = direct
            .get(registry.url(&format!("{REPO}/x86_64/{file}")))
            .bearer_auth(TOKEN);
        async move { request.send().await.unwrap().status() }
    };
    let put = |nginx: &Nginx, name: &str| {
        client
            .put(nginx.url(REPO))
            .bearer_auth(TOKEN)
            .body(package(name))
            .send()
    };
    // Packages to delete below, published directly.
    let mut published = Vec::new();
    for i in 0..3 {
        let name = format!("kept-{i}");
        let answer = direct
            .put(registry.url(REPO))
            .bearer_auth(TOKEN)
            .body(package(&name))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201);
        published.push(format!("{name}-1.0-r0.apk"));
    }

    // Uploads until one reaches the vanishing upstream: that one fails (502) and the
    // registry never gets it; the others are published.
    let nginx = Nginx::start(&bin, [vanishing, registry.port]);
    for i in 0..4 {
        let name = format!("upload-{i}");
        let before = seen_count();
        let answer = put(&nginx, &name).await.unwrap().status();
        let file = format!("{name}-1.0-r0.apk");
        if seen_count() > before {
            assert_eq!(answer, 502, "a PUT the first upstream dropped");
            assert_eq!(status_of(&file).await, 404, "the PUT was resent");
            break;
        }
        assert_eq!(answer, 201);
        assert_eq!(status_of(&file).await, 200);
    }
    assert_eq!(seen_count(), 1, "no PUT reached the vanishing upstream");
    assert!(seen.lock().unwrap()[0].starts_with("PUT "));
    drop(nginx);

    // The same for a delete (a new nginx: the last one keeps away from the upstream that
    // failed it).
    let nginx = Nginx::start(&bin, [vanishing, registry.port]);
    let mut dropped = false;
    for file in &published {
        let before = seen_count();
        let answer = client
            .delete(nginx.url(&format!("{REPO}/x86_64/{file}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status();
        if seen_count() > before {
            assert_eq!(answer, 502, "a DELETE the first upstream dropped");
            assert_eq!(status_of(file).await, 200, "the DELETE was resent");
            dropped = true;
            break;
        }
        assert_eq!(answer, 204);
    }
    assert!(dropped, "no DELETE reached the vanishing upstream");
    assert!(seen.lock().unwrap()[1].starts_with("DELETE "));
    // A read is passed on (nothing was sent to the client yet): the vanishing upstream is
    // tried again after max_fails' period only, so a read from a fresh nginx.
    drop(nginx);
    let nginx = Nginx::start(&bin, [vanishing, registry.port]);
    let read = client.get(nginx.url("/admin/key")).send().await.unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(
        seen_count(),
        3,
        "the read went to the vanishing upstream first"
    );
    drop(nginx);

    // An instance that refuses connections: a write sent there fails, and from then on
    // the passive health check sends writes to the other instance.
    let refusing = common::free_port();
    let nginx = Nginx::start(&bin, [refusing, registry.port]);
    assert_eq!(put(&nginx, "refused").await.unwrap().status(), 502);
    assert!(
        nginx.error_log().contains("Connection refused"),
        "nginx never tried the refusing upstream:\n{}",
        nginx.error_log()
    );
    for i in 0..2 {
        let answer = put(&nginx, &format!("passed-on-{i}")).await.unwrap();
        assert_eq!(answer.status(), 201);
    }
}

/// A login form submission with its double-submitted token, from `forwarded_for`.
async fn login(
    server: &TestServer,
    forwarded_for: &str,
    user: &str,
    secret: &str,
) -> reqwest::StatusCode {
    let csrf = "ab".repeat(32);
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(server.url("/-/login"))
        .header("x-forwarded-for", forwarded_for)
        .header("cookie", format!("alpine_registry_login={csrf}"))
        .form(&[
            ("user", user),
            ("secret", secret),
            ("csrf", &csrf),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap()
        .status()
}

/// Wrong passwords for made-up users from `forwarded_for` (a fresh address each time
/// when None) until 429: the per-address limit; how many were answered 401.
async fn trip(server: &TestServer, forwarded_for: Option<&str>) -> usize {
    for attempt in 0..50 {
        let address = forwarded_for.map_or_else(|| format!("198.51.100.{attempt}"), str::to_string);
        let status = server
            .client
            .get(server.url("/admin/key"))
            .header("x-forwarded-for", address)
            .basic_auth(format!("nobody{attempt}"), Some("guess"))
            .send()
            .await
            .unwrap()
            .status();
        if status == 429 {
            return attempt;
        }
        assert_eq!(status, 401);
    }
    panic!("no 429 after 50 failed attempts");
}

#[tokio::test]
async fn forwarded_addresses_are_counted_only_from_trusted_proxies() {
    let throttle = |c: &mut alpine_registry::config::Config| {
        c.auth.max_failures = 3;
        c.auth.max_failures_per_address = 5;
        c.auth.failure_delay_ms = 60_000;
    };
    // Behind a trusted proxy (the test client, at 127.0.0.1), each forwarded address
    // has its own count, whether the credentials come in a header or the login form.
    let server = TestServer::start_with(|c| {
        throttle(c);
        c.server.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let hash = alpine_registry::access::hash_password("alice-password").unwrap();
    alpine_registry::registry::accounts::create_user(
        &server.state,
        &alpine_registry::registry::audit::Actor::cli(),
        "alice",
        Some(&hash),
        false,
        false,
    )
    .await
    .unwrap();
    assert_eq!(trip(&server, Some("198.51.100.7")).await, 5);
    assert_eq!(
        login(&server, "198.51.100.7", "alice", "alice-password").await,
        429
    );
    assert_eq!(
        login(&server, "198.51.100.8", "alice", "alice-password").await,
        303
    );
    let other = server
        .client
        .get(server.url("/admin/key"))
        .header("x-forwarded-for", "198.51.100.8")
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    server.stop().await;

    // From a peer that is not a trusted proxy, forwarding headers are not believed: a
    // fresh made-up address per attempt is still one address.
    let server = TestServer::start_with(throttle).await;
    assert_eq!(trip(&server, None).await, 5);
    assert_eq!(login(&server, "198.51.100.99", "admin", "any").await, 429);
    server.stop().await;
}

#[tokio::test]
async fn urls_in_answers_use_what_the_nearest_trusted_proxy_wrote() {
    let server =
        TestServer::start_with(|c| c.server.trusted_proxies = vec!["127.0.0.1".into()]).await;
    let upload = |name: &'static str, forwarded: &'static str, host: Option<&'static str>| {
        let mut request = server
            .client
            .put(server.url("/admin/v3.21/main"))
            .bearer_auth(ADMIN_TOKEN)
            .header("forwarded", forwarded)
            .body(common::package(name, "1.0-r0", "x86_64"));
        if let Some(host) = host {
            request = request.header("x-forwarded-host", host);
        }
        async move {
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), 201);
            let body: serde_json::Value = answer.json().await.unwrap();
            body["url"].as_str().unwrap().to_string()
        }
    };
    // The client's own element first, then the one a proxy that appends wrote.
    assert_eq!(
        upload(
            "one",
            "host=evil.example;proto=https, for=192.0.2.1;host=apk.example.org;proto=http",
            None
        )
        .await,
        "http://apk.example.org/admin/v3.21/main/x86_64/one-1.0-r0.apk"
    );
    // X-Forwarded-Host, the last of its values, before Forwarded.
    assert_eq!(
        upload(
            "two",
            "for=192.0.2.1;host=other.example;proto=https",
            Some("evil.example, apk.example.org")
        )
        .await,
        "https://apk.example.org/admin/v3.21/main/x86_64/two-1.0-r0.apk"
    );
    server.stop().await;
}
