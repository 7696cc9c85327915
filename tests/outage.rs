//! The real binary on a PostgreSQL server of its own that goes down and comes back: while
//! it is down every answer that needs it is 503 with `Retry-After` (never 500), nothing is
//! acknowledged that is not durable, and once it is back the registry recovers without a
//! restart.
//!
//! The same for object storage: the registry reaches the test's S3 server through a TCP
//! relay that the test cuts and restores (the server itself keeps its objects in memory
//! and cannot be restarted without losing them).
//!
//! The server is a private cluster (initdb into a temporary directory, pg_ctl on a free
//! loopback port), from the binaries under /usr/lib/postgresql/*/bin. Without them the
//! test is skipped with a note, unless ALPINE_REGISTRY_TEST_REQUIRE_POSTGRES=1.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alpine_registry::config::S3Config;
use alpine_registry::store::Store;
use common::process::ChildServer;
use common::relay::Relay;
use common::{apkindex_text, index_names, package, ADMIN_TOKEN};

const REQUIRE_ENV: &str = "ALPINE_REGISTRY_TEST_REQUIRE_POSTGRES";
const REPO: &str = "/admin/v3.20/main";
const INDEX: &str = "/admin/v3.20/main/x86_64/APKINDEX.tar.gz";
/// Shared by every registry process of the test, so each can use the others' keys.
const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A throwaway PostgreSQL cluster; stopped (immediately) and removed when dropped.
struct Cluster {
    bindir: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// Root may not run the server: the commands run as the `postgres` user then.
    as_postgres: bool,
}

fn postgres_bindir() -> Option<PathBuf> {
    let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Cluster {
    /// A new cluster, not started; None (after a note) when PostgreSQL is not installed.
    fn create() -> Option<Cluster> {
        let Some(bindir) = postgres_bindir() else {
            if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
                panic!("{REQUIRE_ENV}=1 but no initdb under /usr/lib/postgresql/*/bin");
            }
            eprintln!(
                "note: outage test skipped: no PostgreSQL under /usr/lib/postgresql/*/bin \
                 (Debian: apt-get install postgresql)"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let as_postgres = is_root();
        if as_postgres {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            run(Command::new("chown").arg("postgres:").arg(dir.path()));
        }
        let cluster = Cluster {
            bindir,
            dir,
            port: common::free_port(),
            as_postgres,
        };
        run(cluster
            .command("initdb")
            .arg(format!("--pgdata={}", cluster.data().display()))
            .args([
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
            ]));
        Some(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server on its port (the same every time) and waits until it accepts.
    fn start(&self) {
        run(self
            .command("pg_ctl")
            .arg(format!("--pgdata={}", self.data().display()))
            .arg(format!(
                "--log={}",
                self.dir.path().join("server.log").display()
            ))
            .arg(format!(
                "--options=-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                self.port,
                self.dir.path().display()
            ))
            .args(["--wait", "--timeout=60", "start"]));
    }

    /// `immediate` (the server processes quit at once, as in a crash) or `fast` (clients
    /// are disconnected with an error, then it shuts down).
    fn stop(&self, mode: &str) {
        run(self
            .command("pg_ctl")
            .arg(format!("--pgdata={}", self.data().display()))
            .arg(format!("--mode={mode}"))
            .args(["--wait", "stop"]));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg(format!("--pgdata={}", self.data().display()))
            .args(["--mode=immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn run(command: &mut Command) {
    let output = command.output().expect("run command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A client that opens a connection per request: the server may close a kept-alive one
/// after refusing an upload it did not read, and a request sent on it meanwhile would fail
/// in the client (which does not retry), not in the server.
fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn put(client: &reqwest::blocking::Client, server: &ChildServer, bytes: Vec<u8>) -> Answer {
    answer(
        client
            .put(server.url(REPO))
            .basic_auth("admin", Some(ADMIN_TOKEN))
            .body(bytes)
            .send()
            .unwrap(),
    )
}

fn get(client: &reqwest::blocking::Client, server: &ChildServer, path: &str) -> Answer {
    answer(
        client
            .get(server.url(path))
            .basic_auth("admin", Some(ADMIN_TOKEN))
            .send()
            .unwrap(),
    )
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Vec<u8>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("retry_after", &self.retry_after)
            .field("body", &body.chars().take(400).collect::<String>())
            .finish()
    }
}

fn answer(response: reqwest::blocking::Response) -> Answer {
    Answer {
        status: response.status().as_u16(),
        retry_after: response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string()),
        body: response.bytes().unwrap().to_vec(),
    }
}

impl Answer {
    /// Asserts the answer is the outage one: 503, `Retry-After`, a JSON message.
    fn assert_unavailable(&self, what: &str) {
        self.assert_unavailable_naming(what, "database");
    }

    /// As `assert_unavailable`, with a message that names `backend`.
    fn assert_unavailable_naming(&self, what: &str, backend: &str) {
        assert_eq!(self.status, 503, "{what}: {self:?}");
        let retry: u64 = self
            .retry_after
            .as_deref()
            .unwrap_or_else(|| panic!("{what}: 503 without Retry-After"))
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{what}: Retry-After {retry}");
        let body: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {self:?}"));
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(backend), "{what}: {body}");
    }
}

/// Polls /readyz until it answers 200, for at most `limit`.
fn wait_ready(client: &reqwest::blocking::Client, server: &ChildServer, limit: Duration) {
    wait_ready_naming(client, server, limit, "database")
}

/// As `wait_ready`, for an outage of `backend`.
fn wait_ready_naming(
    client: &reqwest::blocking::Client,
    server: &ChildServer,
    limit: Duration,
    backend: &str,
) {
    let started = Instant::now();
    loop {
        let ready = get(client, server, "/readyz");
        if ready.status == 200 {
            eprintln!("ready again after {:?}", started.elapsed());
            return;
        }
        ready.assert_unavailable_naming("/readyz while recovering", backend);
        assert!(
            started.elapsed() < limit,
            "/readyz still {} after {limit:?}",
            ready.status
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The index's package names, and checks that each of `uploaded` it lists downloads with
/// exactly the uploaded bytes.
fn listed(
    client: &reqwest::blocking::Client,
    server: &ChildServer,
    uploaded: &BTreeMap<String, Vec<u8>>,
) -> Vec<String> {
    let index = get(client, server, INDEX);
    assert_eq!(index.status, 200, "{index:?}");
    let (_, unsigned) =
        alpine_registry::apk::sign::split_signed(&index.body).expect("signed index");
    let names = index_names(&apkindex_text(unsigned));
    for name in &names {
        let bytes = uploaded
            .get(name)
            .unwrap_or_else(|| panic!("{name} is listed but was never uploaded"));
        let file = get(client, server, &format!("{REPO}/x86_64/{name}-1.0-r0.apk"));
        assert_eq!(file.status, 200, "{name} is listed but does not download");
        assert!(file.body == *bytes, "{name} downloads other bytes");
    }
    names
}

/// A package with 512 KiB of incompressible data, slow enough to receive and check that
/// uploads are still in progress when the database stops.
fn bulky_package(name: &str, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let data: Vec<u8> = (0..512 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    alpine_registry::apk::builder::PackageBuilder::new(name, "1.0-r0", "x86_64")
        .file(&format!("usr/share/{name}/data"), &data)
        .build()
}

/// A name part from a number: package names end in a letter, not a digit that would
/// read as a version.
fn letters(mut n: u64) -> String {
    let mut out = String::new();
    loop {
        out.insert(0, (b'a' + (n % 26) as u8) as char);
        n /= 26;
        if n == 0 {
            return out;
        }
    }
}

fn log_of(server: &ChildServer) -> String {
    std::fs::read_to_string(&server.log).unwrap()
}

#[test]
fn postgres_outage_answers_503_and_recovers_without_restart() {
    let Some(cluster) = Cluster::create() else {
        return;
    };
    cluster.start();
    let url = cluster.url();
    let env = [
        ("ALPINE_REGISTRY__DATABASE__URL", url.as_str()),
        ("ALPINE_REGISTRY__DATABASE__ACQUIRE_TIMEOUT_SECS", "2"),
        ("ALPINE_REGISTRY__SIGNING__MASTER_KEY", MASTER_KEY),
    ];
    let server = ChildServer::start(ADMIN_TOKEN, &env);
    let client = client();
    let mut uploaded = BTreeMap::new();
    let mut acknowledged = vec!["first".to_string()];
    let mut recorded = Vec::new();
    let first = package("first", "1.0-r0", "x86_64");
    uploaded.insert("first".to_string(), first.clone());
    assert_eq!(put(&client, &server, first).status, 201);
    wait_ready(&client, &server, Duration::from_secs(10));

    let store = TestStore::connect(&url);
    let repository_id = {
        let admin = store.run(store.store.owner_by_name("admin")).unwrap();
        store
            .run(store.store.repository(&alpine_registry::store::RepoRef {
                owner_id: admin.id,
                branch: "v3.20".into(),
                repository: "main".into(),
            }))
            .unwrap()
            .id
    };
    for mode in ["immediate", "fast"] {
        // Before the immediate stop, the test holds the repository's index build lock (as
        // another instance building it would): uploads then commit their rows and wait
        // for it, so the stop lands between a row and its index, and those uploads must
        // be answered 503 saying they were recorded, then be listed once the database is
        // back.
        let build_lock =
            (mode == "immediate").then(|| store.run(store.store.lock_index_build(repository_id)));
        // Uploads in flight across the stop, from workers that upload one after another
        // until a while after it: each is acknowledged (then it must be listed later) or
        // answered 503, nothing else.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..4)
            .map(|worker| {
                let (client, target, done) = (client.clone(), server.url(REPO), done.clone());
                std::thread::spawn(move || {
                    let mut results = Vec::new();
                    for round in 0.. {
                        if done.load(std::sync::atomic::Ordering::SeqCst) {
                            break;
                        }
                        let name = format!("inflight-{mode}-{}", letters(worker * 1000 + round));
                        let bytes = bulky_package(&name, worker * 1000 + round);
                        let started = Instant::now();
                        let upload = answer(
                            client
                                .put(&target)
                                .basic_auth("admin", Some(ADMIN_TOKEN))
                                .body(bytes.clone())
                                .send()
                                .unwrap(),
                        );
                        results.push((name, bytes, upload, started, Instant::now()));
                    }
                    results
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400));
        cluster.stop(mode);
        let stopped = Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let (mut accepted, mut refused, mut refused_recorded, mut straddled) = (0, 0, 0, 0);
        for worker in workers {
            for (name, bytes, upload, started, answered) in worker.join().unwrap() {
                uploaded.insert(name.clone(), bytes);
                if started < stopped && answered > stopped {
                    straddled += 1;
                }
                match upload.status {
                    201 => {
                        accepted += 1;
                        acknowledged.push(name);
                    }
                    _ => {
                        upload.assert_unavailable(&format!("upload of {name} across the stop"));
                        refused += 1;
                        // Its row is committed: once the database is back it is listed.
                        if String::from_utf8_lossy(&upload.body).contains("was recorded") {
                            refused_recorded += 1;
                            recorded.push(name);
                        }
                    }
                }
            }
        }
        {
            // Given back on the store's runtime (its connection died with the server).
            let _inside = store.runtime.enter();
            drop(build_lock);
        }
        eprintln!(
            "{mode} stop: {accepted} uploads acknowledged, {refused} refused with 503 \
             ({refused_recorded} of them after their row was recorded), {straddled} in \
             flight across the stop"
        );
        assert!(refused > 0, "no upload met the stopped database");
        assert!(straddled > 0, "no upload was in flight across the stop");
        if mode == "immediate" {
            assert!(
                refused_recorded > 0,
                "no upload was recorded before the stop and refused after it"
            );
        }

        // While it is down.
        get(&client, &server, "/readyz").assert_unavailable("/readyz");
        let name = format!("down-{mode}");
        let bytes = package(&name, "1.0-r0", "x86_64");
        uploaded.insert(name, bytes.clone());
        put(&client, &server, bytes).assert_unavailable("PUT");
        // No copy of the index is kept in memory: it is 503 too.
        get(&client, &server, INDEX).assert_unavailable("GET of the index");
        get(&client, &server, &format!("{REPO}/x86_64/first-1.0-r0.apk"))
            .assert_unavailable("GET of a package");
        assert!(
            stopped.elapsed() < Duration::from_secs(60),
            "answers while the database is down took {:?}",
            stopped.elapsed()
        );

        // Back on the same port: the same registry process recovers.
        cluster.start();
        wait_ready(&client, &server, Duration::from_secs(30));
        let name = format!("after-{mode}");
        let bytes = package(&name, "1.0-r0", "x86_64");
        uploaded.insert(name.clone(), bytes.clone());
        let after = put(&client, &server, bytes);
        assert_eq!(after.status, 201, "PUT after recovery: {after:?}");
        acknowledged.push(name);

        let names = listed(&client, &server, &uploaded);
        for name in &acknowledged {
            assert!(
                names.contains(name),
                "{name} was acknowledged but is not listed: {names:?}"
            );
        }
        for name in &recorded {
            assert!(
                names.contains(name),
                "{name} was recorded but is not listed"
            );
        }
        assert!(
            !names.contains(&format!("down-{mode}")),
            "refused upload listed"
        );
        eprintln!("{mode} stop: {} packages listed", names.len());
    }
    let log = log_of(&server);
    assert!(!log.contains("internal error"), "a 500 was answered: {log}");
    // An outage is a warning: nothing at all is logged as an error.
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "errors logged: {errors:#?}");
    assert!(log.contains("the database is unreachable"), "{log}");
    // Its blobs stay for the next process.
    let mut first_server = server;
    first_server.child.kill().unwrap();
    first_server.child.wait().unwrap();
    let blob_dir = first_server.dir.path().join("data").join("blobs");

    // A registry started while the database is down waits for it.
    cluster.stop("fast");
    let starting = std::thread::spawn({
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push((
            "ALPINE_REGISTRY__STORAGE__BLOB_DIR".to_string(),
            blob_dir.display().to_string(),
        ));
        move || {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            ChildServer::start(ADMIN_TOKEN, &env)
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    cluster.start();
    let server = starting.join().unwrap();
    wait_ready(&client, &server, Duration::from_secs(30));
    assert!(
        log_of(&server).contains("waiting for it"),
        "{}",
        log_of(&server)
    );
    let names = listed(&client, &server, &uploaded);
    for name in &acknowledged {
        assert!(names.contains(name), "{name} lost across restarts");
    }
}

/// A store on the test's cluster, as another instance has one, with the runtime its
/// connections live on (the test itself runs on plain threads).
struct TestStore {
    runtime: tokio::runtime::Runtime,
    store: alpine_registry::store::PostgresStore,
}

impl TestStore {
    fn connect(url: &str) -> TestStore {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let store = runtime
            .block_on(alpine_registry::store::PostgresStore::connect(
                url,
                2,
                alpine_registry::clock::system(),
            ))
            .expect("connect to the test cluster");
        TestStore { runtime, store }
    }

    fn run<T, E: std::fmt::Debug>(
        &self,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> T {
        self.runtime.block_on(call).expect("store call")
    }
}

/// The mapping itself, without a server: outages are 503 with `Retry-After`, wherever
/// they sit in an error's chain; other database errors stay 500.
#[test]
fn unreachable_backends_map_to_503_with_retry_after() {
    use alpine_registry::blob::BlobError;
    use alpine_registry::error::AppError;
    use alpine_registry::store::StoreError;
    use axum::response::IntoResponse;

    let refused = || sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
    let outages = [
        AppError::from(StoreError::Database(sqlx::Error::PoolTimedOut)),
        AppError::from(StoreError::Database(refused())),
        AppError::from(
            anyhow::Error::from(StoreError::Database(sqlx::Error::PoolClosed))
                .context("building the index"),
        ),
        AppError::from(anyhow::Error::from(refused()).context("a")),
        AppError::from(BlobError::Unavailable("bucket unreachable".into())),
    ];
    for err in outages {
        assert!(err.is_backend_unavailable(), "{err:?}");
        let response = err.into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "5");
    }
    let faults = [
        AppError::from(StoreError::Database(sqlx::Error::RowNotFound)),
        AppError::from(anyhow::anyhow!("a bug")),
        AppError::from(BlobError::Io(std::io::Error::other("disk"))),
    ];
    for err in faults {
        assert!(!err.is_backend_unavailable(), "{err:?}");
        assert_eq!(err.into_response().status(), 500);
    }
}

#[test]
fn object_storage_outage_answers_503_and_recovers_without_restart() {
    let Some(bucket) = common::s3::config() else {
        common::s3::note_skipped();
        return;
    };
    let mut relay = Relay::to_endpoint(&bucket.endpoint);
    let server = start_through(&relay, bucket, &[]);
    let client = client();
    let mut uploaded = BTreeMap::new();
    let first = package("first", "1.0-r0", "x86_64");
    uploaded.insert("first".to_string(), first.clone());
    assert_eq!(put(&client, &server, first).status, 201);
    wait_ready(&client, &server, Duration::from_secs(10));

    relay.cut();
    let storage = "storage";
    get(&client, &server, "/readyz").assert_unavailable_naming("/readyz", storage);
    let down = package("down", "1.0-r0", "x86_64");
    uploaded.insert("down".to_string(), down.clone());
    put(&client, &server, down).assert_unavailable_naming("PUT", storage);
    get(&client, &server, &format!("{REPO}/x86_64/first-1.0-r0.apk"))
        .assert_unavailable_naming("GET of a package", storage);
    // The index lives in the database: it is still served, and lists what is stored.
    let names = index_names(&apkindex_text(
        alpine_registry::apk::sign::split_signed(&get(&client, &server, INDEX).body)
            .expect("signed index")
            .1,
    ));
    assert_eq!(names, ["first"]);

    relay.restore();
    wait_ready_naming(&client, &server, Duration::from_secs(30), storage);
    let after = package("after", "1.0-r0", "x86_64");
    uploaded.insert("after".to_string(), after.clone());
    let answer = put(&client, &server, after);
    assert_eq!(answer.status, 201, "PUT after recovery: {answer:?}");
    assert_eq!(listed(&client, &server, &uploaded), ["after", "first"]);

    let log = log_of(&server);
    assert!(!log.contains("internal error"), "a 500 was answered: {log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "errors logged: {errors:#?}");
}

/// A registry whose blobs are in `bucket`, which it reaches through `relay`, with `extra`
/// settings.
fn start_through(relay: &Relay, mut bucket: S3Config, extra: &[(&str, &str)]) -> ChildServer {
    bucket.endpoint = relay.endpoint();
    let backends = common::backends::Backends {
        database: None,
        s3: Some(bucket),
    };
    let mut env = backends.env();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ChildServer::start(ADMIN_TOKEN, &env)
}

/// Bounds short enough for a test: an answer from the bucket must start within
/// `FIRST_BYTE` (no try is repeated past 1 s after the first); /readyz waits `READY`, which
/// with `MARGIN` is still shorter.
const SHORT_BOUNDS: [(&str, &str); 4] = [
    ("ALPINE_REGISTRY__STORAGE__S3__CONNECT_TIMEOUT_SECS", "1"),
    ("ALPINE_REGISTRY__STORAGE__S3__FIRST_BYTE_TIMEOUT_SECS", "4"),
    ("ALPINE_REGISTRY__STORAGE__S3__RETRY_TIMEOUT_SECS", "1"),
    ("ALPINE_REGISTRY__STORAGE__READY_TIMEOUT_SECS", "1"),
];
const FIRST_BYTE: Duration = Duration::from_secs(4);
const READY: Duration = Duration::from_secs(1);
/// What an answer may take beyond its bound on a loaded machine.
const MARGIN: Duration = Duration::from_secs(2);

/// Sends `request` with a client that gives up after 30 s (so that a registry that hangs
/// fails the test rather than holding it), and asserts it answers 503 saying that blob
/// storage is unreachable within `bound` and `MARGIN`.
fn unavailable_within(what: &str, bound: Duration, request: reqwest::blocking::RequestBuilder) {
    let started = Instant::now();
    let response = request
        .timeout(Duration::from_secs(30))
        .send()
        .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
    let took = started.elapsed();
    answer(response).assert_unavailable_naming(what, "blob storage is unreachable");
    assert!(took <= bound + MARGIN, "{what} took {took:?}");
    eprintln!("{what}: 503 after {took:?}");
}

/// Object storage that accepts connections and never answers (the relay holds everything
/// both ways): an upload, a download of a file not in memory and /readyz answer 503 with
/// `Retry-After` within their bounds, nothing is acknowledged, and everything works again
/// once the storage answers, without a restart.
#[test]
fn frozen_object_storage_answers_503_within_the_bounds_and_recovers() {
    let Some(bucket) = common::s3::config() else {
        common::s3::note_skipped();
        return;
    };
    let relay = Relay::to_endpoint(&bucket.endpoint);
    let server = start_through(&relay, bucket, &SHORT_BOUNDS);
    let client = client();
    let mut uploaded = BTreeMap::new();
    let first = package("first", "1.0-r0", "x86_64");
    uploaded.insert("first".to_string(), first.clone());
    assert_eq!(put(&client, &server, first).status, 201);
    wait_ready(&client, &server, Duration::from_secs(10));

    relay.freeze();
    let admin =
        |request: reqwest::blocking::RequestBuilder| request.basic_auth("admin", Some(ADMIN_TOKEN));
    unavailable_within("/readyz", READY, client.get(server.url("/readyz")));
    unavailable_within(
        "PUT",
        FIRST_BYTE,
        admin(client.put(server.url(REPO))).body(package("down", "1.0-r0", "x86_64")),
    );
    unavailable_within(
        "GET of a package",
        FIRST_BYTE,
        admin(client.get(server.url(&format!("{REPO}/x86_64/first-1.0-r0.apk")))),
    );

    relay.thaw();
    wait_ready_naming(&client, &server, Duration::from_secs(30), "storage");
    let after = package("after", "1.0-r0", "x86_64");
    uploaded.insert("after".to_string(), after.clone());
    let answer = put(&client, &server, after);
    assert_eq!(answer.status, 201, "PUT after recovery: {answer:?}");
    assert_eq!(listed(&client, &server, &uploaded), ["after", "first"]);

    let log = log_of(&server);
    assert!(!log.contains("internal error"), "a 500 was answered: {log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "errors logged: {errors:#?}");
}

/// Object storage that answers 500 to everything: each request to it is tried again, then
/// the client gets 503 with `Retry-After` (not 500); once it answers again, the registry
/// works without a restart.
#[test]
fn object_storage_answering_500_answers_503_and_recovers() {
    let Some(bucket) = common::s3::config() else {
        common::s3::note_skipped();
        return;
    };
    let relay = Relay::to_endpoint(&bucket.endpoint);
    let server = start_through(&relay, bucket, &SHORT_BOUNDS);
    let client = client();
    let mut uploaded = BTreeMap::new();
    let first = package("first", "1.0-r0", "x86_64");
    uploaded.insert("first".to_string(), first.clone());
    assert_eq!(put(&client, &server, first).status, 201);

    relay.fail(u64::MAX);
    let admin =
        |request: reqwest::blocking::RequestBuilder| request.basic_auth("admin", Some(ADMIN_TOKEN));
    unavailable_within(
        "PUT",
        FIRST_BYTE,
        admin(client.put(server.url(REPO))).body(package("down", "1.0-r0", "x86_64")),
    );
    let retried = relay.failed();
    assert!(retried > 1, "the upload was tried {retried} times");
    unavailable_within(
        "GET of a package",
        FIRST_BYTE,
        admin(client.get(server.url(&format!("{REPO}/x86_64/first-1.0-r0.apk")))),
    );
    unavailable_within("/readyz", READY, client.get(server.url("/readyz")));

    relay.fail(0);
    wait_ready_naming(&client, &server, Duration::from_secs(30), "storage");
    let after = package("after", "1.0-r0", "x86_64");
    uploaded.insert("after".to_string(), after.clone());
    let answer = put(&client, &server, after);
    assert_eq!(answer.status, 201, "PUT after recovery: {answer:?}");
    assert_eq!(listed(&client, &server, &uploaded), ["after", "first"]);

    let log = log_of(&server);
    assert!(!log.contains("internal error"), "a 500 was answered: {log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "errors logged: {errors:#?}");
}
