//! A registry on 127.0.0.1:0 with its own temporary data directory, plus helpers.
#![allow(dead_code)]

pub mod backends;
pub mod postgres;
pub mod process;
pub mod relay;
pub mod s3;
pub mod upstream;
pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;

use alpine_registry::apk::builder::PackageBuilder;
use alpine_registry::apk::sign::{self, SignatureAlgorithm};
use alpine_registry::config::{Config, StorageBackend};
use alpine_registry::store::Role;
use alpine_registry::AppState;

/// The real server binary, for tests that run it as a child process.
pub const BIN: &str = env!("CARGO_BIN_EXE_alpine-registry");

/// A port that was free a moment ago, for `serve --listen`.
///
/// Taken from 20000..32000, below Linux's ephemeral range (32768..61000), so that no
/// outgoing connection of a busy test (each one holds an ephemeral port) can take it
/// between this probe and the server's bind. Each test process walks its own sequence,
/// spread by its pid, so parallel test binaries rarely probe the same port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + step * 7) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN);
}

/// Polls until something accepts connections on `port` (bounded), instead of sleeping a
/// fixed time.
pub fn wait_listening(port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("server did not start listening on port {port}");
}

pub const ADMIN_TOKEN: &str = "apkreg_test-admin-token-0123456789abcdef";

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The registry's PostgreSQL database, when the tests run against PostgreSQL (dropped
    /// last).
    pub database: Option<postgres::TestDatabase>,
    /// Whether the server's S3 prefix is its own, emptied by `stop` (not so for a
    /// configuration the test gave, whose bucket outlives the server).
    owns_bucket_prefix: bool,
}

/// For tests about the filesystem blob store itself (its files, its directories): keeps
/// the blobs on the filesystem even when the tests run against S3.
pub fn on_fs(config: &mut Config) {
    config.storage.backend = StorageBackend::Fs;
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.storage.data_dir = dir.to_path_buf();
    // Small keys keep the suite fast; the format is the same at 4096 bits.
    config.signing.key_bits = 1024;
    // Tests send wrong credentials on purpose; the throttle has its own test.
    config.auth.failure_delay_ms = 0;
    // Tests count the packages of their repositories; the keyring has its own tests.
    config.signing.keyring = false;
    config
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// A registry on `test_config`, changed by `tweak`. When
    /// `ALPINE_REGISTRY_TEST_POSTGRES_URL` is set, its database is a fresh PostgreSQL
    /// database on that server instead of SQLite in the data directory; when
    /// `ALPINE_REGISTRY_TEST_S3_ENDPOINT` is set, its blobs are in a fresh prefix of the
    /// test bucket instead of the data directory (see `common::s3`).
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_with_clock(tweak, alpine_registry::clock::system()).await
    }

    /// Like `start_with`, the registry reading the time from `clock`.
    pub async fn start_with_clock(
        tweak: impl FnOnce(&mut Config),
        clock: alpine_registry::clock::SharedClock,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        let database = postgres::TestDatabase::from_env();
        if let Some(database) = &database {
            config.database.url = database.url.clone();
            config.signing.master_key = postgres::MASTER_KEY.to_string();
        }
        if let Some(s3) = s3::config() {
            config.storage.backend = StorageBackend::S3;
            config.storage.s3 = s3;
        }
        tweak(&mut config);
        let mut server = Self::start_config(config, dir, database, clock).await;
        server.owns_bucket_prefix = server.on_s3();
        server
    }

    /// A registry on exactly `config` (SQLite or PostgreSQL as its `database.url` says), with
    /// the admin token of `ADMIN_TOKEN` when its database is empty.
    pub async fn start_on(config: Config) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_config(config, dir, None, alpine_registry::clock::system()).await
    }

    async fn start_config(
        config: Config,
        dir: tempfile::TempDir,
        database: Option<postgres::TestDatabase>,
        clock: alpine_registry::clock::SharedClock,
    ) -> TestServer {
        let state = alpine_registry::open_with_clock(config, clock)
            .await
            .expect("open registry");
        alpine_registry::registry::accounts::bootstrap(&state, Some(ADMIN_TOKEN.to_string()))
            .await
            .expect("bootstrap");
        alpine_registry::recover(&state).await.expect("recover");
        // Bound before the server task starts: no sleeps, no races.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(alpine_registry::serve(listener, state.clone(), async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            state,
            client: reqwest::Client::new(),
            dir,
            shutdown: Some(tx),
            task: Some(task),
            database,
            owns_bucket_prefix: false,
        }
    }

    /// The PostgreSQL URL of the registry's database, if it has one (SQLite lives in
    /// `dir`), for commands run against it.
    pub fn database_url(&self) -> Option<&str> {
        self.database.as_ref().map(|d| d.url.as_str())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Whether the blobs are in an S3 bucket.
    pub fn on_s3(&self) -> bool {
        self.state.config.storage.backend == StorageBackend::S3
    }

    /// The directory uploads are staged in, whichever the blob store.
    pub fn staging_dir(&self) -> PathBuf {
        match self.state.config.storage.backend {
            StorageBackend::Fs => self.state.config.blob_dir().join(".staging"),
            StorageBackend::S3 => self.state.config.s3_staging_dir(),
        }
    }

    /// Names of the staged uploads the blob store has (in progress or left over).
    pub async fn staged(&self) -> Vec<String> {
        self.state
            .blobs
            .list_staged()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect()
    }

    /// Keys of the blobs the blob store holds.
    pub async fn stored_blobs(&self) -> Vec<String> {
        self.state
            .blobs
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.sha256)
            .collect()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        if self.owns_bucket_prefix {
            // The test's prefix in the shared bucket, emptied.
            for blob in self.state.blobs.list().await.unwrap_or_default() {
                let _ = self.state.blobs.delete(&blob.sha256).await;
            }
        }
        if let Some(database) = self.database.take() {
            database.drop_database().await;
        }
    }

    /// PUTs `bytes` into owner/branch/repo with HTTP Basic `user:secret`.
    pub async fn put(
        &self,
        repo_path: &str,
        bytes: Vec<u8>,
        auth: Option<(&str, &str)>,
    ) -> reqwest::Response {
        let mut request = self.client.put(self.url(repo_path)).body(bytes);
        if let Some((user, secret)) = auth {
            request = request.basic_auth(user, Some(secret));
        }
        request.send().await.unwrap()
    }

    pub async fn put_admin(&self, repo_path: &str, bytes: Vec<u8>) -> reqwest::Response {
        self.put(repo_path, bytes, Some(("admin", ADMIN_TOKEN)))
            .await
    }

    pub async fn get(&self, path: &str, auth: Option<(&str, &str)>) -> reqwest::Response {
        let mut request = self.client.get(self.url(path));
        if let Some((user, secret)) = auth {
            request = request.basic_auth(user, Some(secret));
        }
        request.send().await.unwrap()
    }

    pub async fn delete(&self, path: &str, auth: Option<(&str, &str)>) -> reqwest::Response {
        let mut request = self.client.delete(self.url(path));
        if let Some((user, secret)) = auth {
            request = request.basic_auth(user, Some(secret));
        }
        request.send().await.unwrap()
    }

    /// Creates a user (with namespace) and returns a token of `scope` for it.
    pub async fn user_with_token(
        &self,
        name: &str,
        scope: Role,
        owner: Option<&str>,
        expires_at: Option<i64>,
    ) -> String {
        if self.state.store.user_by_name(name).await.unwrap().is_none() {
            alpine_registry::registry::accounts::create_user(
                &self.state,
                &alpine_registry::registry::audit::Actor::cli(),
                name,
                None,
                false,
                false,
            )
            .await
            .unwrap();
        }
        alpine_registry::registry::accounts::create_token(
            &self.state,
            &alpine_registry::registry::audit::Actor::cli(),
            alpine_registry::registry::accounts::TokenRequest {
                user: name,
                scope,
                owner,
                expires_at,
                label: None,
            },
            None,
        )
        .await
        .unwrap()
    }

    /// Fetches the owner's public key and an index, verifies every signature in the
    /// index with it, and returns the APKINDEX text.
    pub async fn verified_index(
        &self,
        owner: &str,
        index_path: &str,
        auth: Option<(&str, &str)>,
    ) -> String {
        let key = self.get(&format!("/{owner}/key"), auth).await;
        assert_eq!(key.status(), 200);
        let disposition = key.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_string();
        let key_pem = key.text().await.unwrap();
        let response = self.get(index_path, auth).await;
        assert_eq!(response.status(), 200, "GET {index_path}");
        let bytes = response.bytes().await.unwrap();
        let (signatures, signed) = sign::split_signed(&bytes).expect("signed index");
        assert_eq!(signatures.len(), 2, "RSA256 and RSA signatures");
        for (i, (name, signature)) in signatures.iter().enumerate() {
            let (alg, prefix) = if i == 0 {
                (SignatureAlgorithm::Rsa256, ".SIGN.RSA256.")
            } else {
                (SignatureAlgorithm::Rsa, ".SIGN.RSA.")
            };
            let keyname = name
                .strip_prefix(prefix)
                .expect("signature order RSA256, RSA");
            assert_eq!(disposition, format!("attachment; filename=\"{keyname}\""));
            sign::verify(&key_pem, alg, signed, signature).expect("signature verifies");
        }
        apkindex_text(signed)
    }
}

/// The `APKINDEX` entry of an unsigned index (one gzip member of a tar).
pub fn apkindex_text(unsigned: &[u8]) -> String {
    index_entry(unsigned, "APKINDEX").expect("no APKINDEX entry")
}

/// An entry of an unsigned index, as text.
pub fn index_entry(unsigned: &[u8], name: &str) -> Option<String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(unsigned));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some(name) {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            return Some(text);
        }
    }
    None
}

/// `P:` names listed in an APKINDEX text.
pub fn index_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("P:"))
        .map(str::to_string)
        .collect()
}

/// Files in the staging directory of the blob store at `blob_dir` (`<data_dir>/blobs` by
/// default): uploads being received, or left by interrupted ones. The directory must exist.
pub fn staged_files(blob_dir: &std::path::Path) -> Vec<PathBuf> {
    std::fs::read_dir(blob_dir.join(".staging"))
        .expect("the blob store's staging directory exists")
        .map(|e| e.unwrap().path())
        .collect()
}

pub fn package(name: &str, version: &str, arch: &str) -> Vec<u8> {
    PackageBuilder::new(name, version, arch)
        .file(
            &format!("usr/share/{name}/README"),
            format!("{name} {version}\n").as_bytes(),
        )
        .build()
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).expect("fixture")
}

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The `VmHWM` (peak resident set) of a process, in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    proc_status_bytes(pid, "VmHWM:")
}

/// A value given in kB in /proc/<pid>/status (`VmHWM:`, `VmRSS:`), in bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/<pid>/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("value in kB");
    kib * 1024
}

/// The binary as an administrator runs it against `dir` (small keys, no bootstrap token
/// from the environment).
pub fn cli(dir: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(dir)
        .env("ALPINE_REGISTRY__SIGNING__KEY_BITS", "1024")
        .env("ALPINE_REGISTRY__SIGNING__KEYRING", "false")
        .env_remove("ALPINE_REGISTRY_BOOTSTRAP_TOKEN");
    command
}

/// Runs a command that must succeed; returns its stdout and stderr.
pub fn run_ok_both(command: &mut std::process::Command) -> (String, String) {
    let output = command.output().expect("run binary");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{command:?} failed: {stderr}");
    (String::from_utf8(output.stdout).unwrap(), stderr)
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(command: &mut std::process::Command) -> String {
    run_ok_both(command).0
}

/// Runs a command that must fail; returns its stderr.
pub fn run_err(command: &mut std::process::Command) -> String {
    let output = command.output().expect("run binary");
    assert!(!output.status.success(), "{command:?} succeeded");
    String::from_utf8(output.stderr).unwrap()
}

/// Seconds since the Unix epoch, by the system clock the test servers use.
pub fn unix_now() -> i64 {
    alpine_registry::clock::system().unix_secs()
}

/// Milliseconds since the Unix epoch, by the system clock the test servers use.
pub fn unix_now_ms() -> i64 {
    alpine_registry::clock::system().unix_ms()
}
