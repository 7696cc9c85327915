//! Crash consistency of the real binary: concurrent uploads and deletes into a few
//! repositories while the server is SIGKILLed at random moments (at least 20 times), then
//! restarted on the same data directory. After every restart:
//!
//! - every upload answered 201 (and not deleted with a 204 since) is listed in its index
//!   (a noarch one in every architecture's index) and downloads with the uploaded bytes;
//! - every delete answered 204 is gone from the indexes and its download is 404;
//! - requests in flight at the kill ("unknown") may have happened or not, but a listed
//!   package downloads with the right bytes and a noarch one is listed everywhere or
//!   nowhere;
//! - every index verifies against the owner's key (which never changes), lists only
//!   packages that were uploaded, and every package it lists downloads;
//! - no staged upload is left in `<data_dir>/blobs/.staging` before any new traffic.
//!
//! While the server runs, some acknowledged operations are followed at once by a read of
//! the index (read-your-writes). Finally SIGTERM under load and SIGTERM when idle must both
//! exit 0.
//!
//! With `ALPINE_REGISTRY_TEST_POSTGRES_URL` (and the S3 test variables) set, the server
//! runs on a fresh PostgreSQL database (and a fresh prefix of the test bucket) instead of
//! SQLite (and files): the same checks then hold for that setup.
//!
//! `CRASH_SEED=<u64>` replays a seed's choices (operation mix, sizes, kill delays; thread
//! scheduling still varies). `CRASH_KILLS=<n>` changes the number of kills (at least 20).
//! `CRASH_BIN=<path>` runs another build of the binary (e.g. a deliberately broken one, to
//! check that this test notices).

mod common;
use common::postgres::{self as pg, TestDatabase};
use common::{free_port, s3, staged_files, BIN};

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alpine_registry::apk::builder::PackageBuilder;
use alpine_registry::apk::sign::{self, SignatureAlgorithm};
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};

const TOKEN: &str = "apkreg_crash-consistency-token-0123456789";
const OWNER: &str = "admin";
const REPOS: &[(&str, &str)] = &[("v1", "main"), ("v1", "community"), ("edge", "main")];
const UPLOAD_ARCHES: &[&str] = &["x86_64", "aarch64", "noarch"];
const INDEX_ARCHES: &[&str] = &["x86_64", "aarch64"];
const WORKERS: usize = 4;
const MIN_KILLS: usize = 20;
const DEFAULT_KILLS: usize = 30;

// ---------------------------------------------------------------------------------------
// The model: what the registry must (or may) contain.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PkgState {
    /// Upload request in flight.
    Uploading,
    /// Answered 201 (or an unknown upload found listed after a restart).
    Present,
    /// Delete request in flight.
    Deleting,
    /// Answered 204 (or an unknown operation found absent after a restart).
    Gone,
    /// The upload got no answer before the kill.
    UnknownUpload,
    /// The delete got no answer before the kill.
    UnknownDelete,
}

#[derive(Debug)]
struct Pkg {
    repo: usize,
    name: String,
    version: String,
    arch: &'static str,
    sha256: String,
    size: u64,
    state: PkgState,
    /// Whether its absence (download 404) was checked since it became Gone.
    gone_checked: bool,
}

impl Pkg {
    fn file(&self) -> String {
        format!("{}-{}.apk", self.name, self.version)
    }

    fn describe(&self) -> String {
        let (branch, repo) = REPOS[self.repo];
        format!(
            "{OWNER}/{branch}/{repo}/{}/{} ({:?})",
            self.arch,
            self.file(),
            self.state
        )
    }
}

#[derive(Default)]
struct Model {
    pkgs: Vec<Pkg>,
    /// (repository, `name-version`) to the package's position in `pkgs`.
    by_key: HashMap<(usize, String), usize>,
}

#[derive(Default)]
struct Stats {
    uploads_acked: AtomicUsize,
    deletes_acked: AtomicUsize,
    unknown_uploads: AtomicUsize,
    unknown_deletes: AtomicUsize,
}

struct Shared {
    model: Mutex<Model>,
    stats: Stats,
    next_id: AtomicUsize,
    /// Server answers that are wrong whatever the timing (e.g. 500, 404 for a 201'd file).
    errors: Mutex<Vec<String>>,
    /// (repository, arch) whose index has been served: it must never become 404 again.
    served: Mutex<std::collections::HashSet<(usize, &'static str)>>,
}

impl Shared {
    fn error(&self, message: String) {
        self.errors.lock().unwrap().push(message);
    }
}

// ---------------------------------------------------------------------------------------
// The server process.

struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `max` bytes of a log file, for failure messages.
fn log_tail(path: &Path, max: u64) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    format!(
        "--- tail of {} ---\n{}",
        path.display(),
        String::from_utf8_lossy(&bytes)
    )
}

struct Harness {
    seed: u64,
    data: tempfile::TempDir,
    logs: tempfile::TempDir,
    starts: usize,
    /// Settings of the PostgreSQL database and S3 bucket, when the tests run on them.
    env: Vec<(String, String)>,
    database: Option<TestDatabase>,
    on_s3: bool,
}

impl Harness {
    fn new(seed: u64) -> Harness {
        let mut env = Vec::new();
        let database = pg::server_url().map(|server| TestDatabase::create(&server));
        if let Some(database) = &database {
            env.push((
                "ALPINE_REGISTRY__DATABASE__URL".into(),
                database.url.clone(),
            ));
            env.push((
                "ALPINE_REGISTRY__SIGNING__MASTER_KEY".into(),
                pg::MASTER_KEY.into(),
            ));
        }
        let bucket = s3::config();
        if let Some(bucket) = &bucket {
            for (key, value) in [
                ("BACKEND", "s3".to_string()),
                ("S3__BUCKET", bucket.bucket.clone()),
                ("S3__ENDPOINT", bucket.endpoint.clone()),
                ("S3__REGION", bucket.region.clone()),
                ("S3__PATH_STYLE", bucket.path_style.to_string()),
                ("S3__ALLOW_HTTP", bucket.allow_http.to_string()),
                ("S3__PREFIX", bucket.prefix.clone()),
                ("S3__ACCESS_KEY_ID", bucket.access_key_id.clone()),
                ("S3__SECRET_ACCESS_KEY", bucket.secret_access_key.clone()),
            ] {
                env.push((format!("ALPINE_REGISTRY__STORAGE__{key}"), value));
            }
        }
        eprintln!(
            "crash test on {} and {}",
            if database.is_some() {
                "PostgreSQL"
            } else {
                "SQLite"
            },
            if bucket.is_some() { "S3" } else { "files" }
        );
        Harness {
            seed,
            data: tempfile::tempdir().unwrap(),
            logs: tempfile::tempdir().unwrap(),
            starts: 0,
            env,
            database,
            on_s3: bucket.is_some(),
        }
    }
}

impl Harness {
    fn spawn(&mut self) -> Server {
        self.starts += 1;
        let port = free_port();
        let log = self
            .logs
            .path()
            .join(format!("server-{:03}.log", self.starts));
        let stderr = std::fs::File::create(&log).expect("log file");
        let bin = std::env::var("CRASH_BIN").unwrap_or_else(|_| BIN.to_string());
        let child = Command::new(bin)
            .arg("--data-dir")
            .arg(self.data.path())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("ALPINE_REGISTRY__SIGNING__KEY_BITS", "1024")
            // Every listed package must be one the test uploaded.
            .env("ALPINE_REGISTRY__SIGNING__KEYRING", "false")
            .env("ALPINE_REGISTRY_BOOTSTRAP_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn the server binary");
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// Starts the server and polls `/readyz` until it answers 200 (bounded). Retries with
    /// another port if the chosen one was taken meanwhile.
    async fn start(&mut self) -> Server {
        for _attempt in 0..3 {
            let mut server = self.spawn();
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = server.child.try_wait().unwrap() {
                    let log = log_tail(&server.log, 4000);
                    if log.contains("binding") {
                        break; // port taken: try another one
                    }
                    self.fail(&[format!("server exited during start with {status}\n{log}")]);
                }
                // Our process logs that it bound the port (so a stranger that grabbed the
                // port meanwhile is not mistaken for it), then answers /readyz.
                let listening = std::fs::read_to_string(&server.log)
                    .is_ok_and(|log| log.contains(&format!("listening on {}", server.base)));
                if listening {
                    if let Ok(response) = client.get(format!("{}/readyz", server.base)).send().await
                    {
                        if response.status() == 200 {
                            return server;
                        }
                    }
                }
                if Instant::now() > deadline {
                    let log = log_tail(&server.log, 4000);
                    self.fail(&[format!("server not ready within 30 s\n{log}")]);
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }
        self.fail(&["could not find a free port in 3 attempts".to_string()]);
    }

    fn fail(&self, failures: &[String]) -> ! {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.logs.path())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        logs.sort();
        let tails: Vec<String> = logs
            .iter()
            .rev()
            .take(2)
            .rev()
            .map(|p| log_tail(p, 3000))
            .collect();
        panic!(
            "crash test failed (CRASH_SEED={}):\n{}\n\n{}",
            self.seed,
            failures.join("\n"),
            tails.join("\n")
        );
    }

    /// Staged uploads left in the data directory. On PostgreSQL with a blob directory,
    /// other instances may share the staging directory and be writing into it, so a start
    /// removes only files untouched for `storage.orphan_grace_secs` (an hour): there,
    /// leftovers of the kill are expected, and none is reported.
    fn staged_leftovers(&self) -> Vec<String> {
        if self.database.is_some() && !self.on_s3 {
            return Vec::new();
        }
        let files = if self.on_s3 {
            // Uploads on their way to the bucket wait in <data_dir>/staging.
            match std::fs::read_dir(self.data.path().join("staging")) {
                Ok(dir) => dir.map(|e| e.unwrap().path()).collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => panic!("reading the staging directory: {e}"),
            }
        } else {
            staged_files(&self.data.path().join("blobs"))
        };
        files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }
}

/// SIGKILLs the server; fails if it had already died on its own.
fn kill(harness: &Harness, server: &mut Server) {
    if let Some(status) = server.child.try_wait().unwrap() {
        harness.fail(&[format!(
            "the server died on its own ({status}) before the kill\n{}",
            log_tail(&server.log, 4000)
        )]);
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reap");
}

/// Sends SIGTERM and waits (bounded) for the exit status.
async fn terminate(harness: &Harness, server: &mut Server) -> std::process::ExitStatus {
    let pid = server.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success(), "kill -TERM {pid}");
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            harness.fail(&[format!(
                "no exit within 45 s of SIGTERM\n{}",
                log_tail(&server.log, 4000)
            )]);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Traffic.

fn repo_url(base: &str, repo: usize) -> String {
    let (branch, name) = REPOS[repo];
    format!("{base}/{OWNER}/{branch}/{name}")
}

fn file_url(base: &str, repo: usize, arch: &str, file: &str) -> String {
    format!("{}/{arch}/{file}", repo_url(base, repo))
}

/// Uploads and deletes until the first request that gets no answer (the server is gone).
async fn worker(
    shared: Arc<Shared>,
    client: reqwest::Client,
    base: String,
    seed: u64,
) -> Option<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    loop {
        if rng.gen_bool(0.35) && delete_one(&shared, &client, &base, &mut rng).await? {
            continue;
        }
        upload_one(&shared, &client, &base, &mut rng).await?;
    }
}

/// `Some(())` to go on, `None` when a request got no answer.
type Go = Option<()>;

async fn upload_one(shared: &Shared, client: &reqwest::Client, base: &str, rng: &mut StdRng) -> Go {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let repo = rng.gen_range(0..REPOS.len());
    let arch = UPLOAD_ARCHES[rng.gen_range(0..UPLOAD_ARCHES.len())];
    let name = format!("crash-{id}");
    let version = format!("1.{}.{id}-r0", rng.gen_range(0..100));
    // Random content compresses badly: uploads of a few KiB to ~48 KiB.
    let mut payload = vec![0u8; rng.gen_range(256..48 * 1024)];
    rng.fill_bytes(&mut payload);
    let bytes = PackageBuilder::new(&name, &version, arch)
        .file(&format!("usr/share/{name}/payload"), &payload)
        .build();
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let index = {
        let mut model = shared.model.lock().unwrap();
        let index = model.pkgs.len();
        model
            .by_key
            .insert((repo, format!("{name}-{version}")), index);
        model.pkgs.push(Pkg {
            repo,
            name: name.clone(),
            version: version.clone(),
            arch,
            sha256: sha256.clone(),
            size: bytes.len() as u64,
            state: PkgState::Uploading,
            gone_checked: false,
        });
        index
    };
    // Some bodies trickle in, so kills also land while an upload is being received.
    let body = if rng.gen_bool(0.3) {
        let chunks: Vec<Vec<u8>> = bytes.chunks(4096).map(<[u8]>::to_vec).collect();
        let pause = Duration::from_millis(rng.gen_range(1..8));
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks).then(
            move |chunk| async move {
                tokio::time::sleep(pause).await;
                Ok::<_, std::io::Error>(chunk)
            },
        ))
    } else {
        reqwest::Body::from(bytes)
    };
    let result = client
        .put(repo_url(base, repo))
        .basic_auth(OWNER, Some(TOKEN))
        .body(body)
        .send()
        .await;
    let set = |state: PkgState| shared.model.lock().unwrap().pkgs[index].state = state;
    let response = match result {
        Ok(response) => response,
        Err(_) => {
            set(PkgState::UnknownUpload);
            shared.stats.unknown_uploads.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    };
    let status = response.status();
    if status != 201 {
        set(PkgState::Gone);
        let text = response.text().await.unwrap_or_default();
        shared.error(format!(
            "PUT {}/{arch} {name}-{version}: {status} {text}",
            repo_url("", repo)
        ));
        return Some(());
    }
    // The status line is the acknowledgement; the body may be cut off by a kill.
    set(PkgState::Present);
    shared.stats.uploads_acked.fetch_add(1, Ordering::Relaxed);
    if let Ok(json) = response.json::<serde_json::Value>().await {
        if json["sha256"] != sha256.as_str() || json["arch"] != arch {
            shared.error(format!("PUT {name}-{version}: unexpected answer {json}"));
        }
    }
    if rng.gen_bool(0.25) {
        check_index_now(shared, client, base, index, false).await?;
    }
    Some(())
}

/// Deletes a random acknowledged package; `Some(false)` when there is none.
async fn delete_one(
    shared: &Shared,
    client: &reqwest::Client,
    base: &str,
    rng: &mut StdRng,
) -> Option<bool> {
    let picked = {
        let mut model = shared.model.lock().unwrap();
        let present: Vec<usize> = (0..model.pkgs.len())
            .filter(|&i| model.pkgs[i].state == PkgState::Present)
            .collect();
        if present.is_empty() {
            None
        } else {
            let index = present[rng.gen_range(0..present.len())];
            let pkg = &mut model.pkgs[index];
            pkg.state = PkgState::Deleting;
            // A noarch package can be deleted through any architecture's path.
            let via = if pkg.arch == "noarch" {
                ["noarch", "x86_64", "aarch64"][rng.gen_range(0..3)]
            } else {
                pkg.arch
            };
            Some((index, file_url(base, pkg.repo, via, &pkg.file())))
        }
    };
    let Some((index, url)) = picked else {
        return Some(false);
    };
    let result = client
        .delete(&url)
        .basic_auth(OWNER, Some(TOKEN))
        .send()
        .await;
    let set = |state: PkgState| shared.model.lock().unwrap().pkgs[index].state = state;
    match result {
        Err(_) => {
            set(PkgState::UnknownDelete);
            shared.stats.unknown_deletes.fetch_add(1, Ordering::Relaxed);
            None
        }
        Ok(response) if response.status() == 204 => {
            set(PkgState::Gone);
            shared.stats.deletes_acked.fetch_add(1, Ordering::Relaxed);
            if rng.gen_bool(0.25) {
                check_index_now(shared, client, base, index, true).await?;
            }
            Some(true)
        }
        Ok(response) => {
            // Leave it Present: the next verification decides what it really is.
            set(PkgState::Present);
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            shared.error(format!("DELETE {url}: {status} {text}"));
            Some(true)
        }
    }
}

/// Runs `WORKERS` workers against `server` and returns their handles.
fn start_traffic(
    shared: &Arc<Shared>,
    server: &Server,
    rng: &mut StdRng,
) -> Vec<tokio::task::JoinHandle<Option<()>>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    (0..WORKERS)
        .map(|_| {
            tokio::spawn(worker(
                shared.clone(),
                client.clone(),
                server.base.clone(),
                rng.next_u64(),
            ))
        })
        .collect()
}

async fn join_traffic(harness: &Harness, workers: Vec<tokio::task::JoinHandle<Option<()>>>) {
    for worker in workers {
        match tokio::time::timeout(Duration::from_secs(30), worker).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => harness.fail(&[format!("worker panicked: {e}")]),
            Err(_) => harness.fail(&["a worker still runs 30 s after the server died".into()]),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Verification after a restart.

/// One stanza of an APKINDEX.
#[derive(Debug)]
struct Listed {
    name: String,
    version: String,
    arch: String,
    size: Option<u64>,
}

fn parse_index(text: &str) -> Vec<Listed> {
    text.split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .map(|stanza| {
            let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
            for line in stanza.lines() {
                if let Some((k, v)) = line.split_once(':') {
                    fields.entry(k).or_insert(v);
                }
            }
            Listed {
                name: fields.get("P").unwrap_or(&"").to_string(),
                version: fields.get("V").unwrap_or(&"").to_string(),
                arch: fields.get("A").unwrap_or(&"").to_string(),
                size: fields.get("S").and_then(|s| s.parse().ok()),
            }
        })
        .collect()
}

/// Fetches the owner's key: (PEM, key name from Content-Disposition).
async fn fetch_key(client: &reqwest::Client, base: &str) -> Result<(String, String), String> {
    let response = client
        .get(format!("{base}/{OWNER}/key"))
        .basic_auth(OWNER, Some(TOKEN))
        .send()
        .await
        .map_err(|e| format!("GET /{OWNER}/key: {e}"))?;
    if response.status() != 200 {
        return Err(format!("GET /{OWNER}/key: {}", response.status()));
    }
    let disposition = response
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let keyname = disposition
        .strip_prefix("attachment; filename=\"")
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| format!("key Content-Disposition {disposition:?}"))?
        .to_string();
    let pem = response.text().await.map_err(|e| e.to_string())?;
    Ok((pem, keyname))
}

/// GETs an index and verifies its signatures. `Ok(None)` for 404.
async fn fetch_index(
    client: &reqwest::Client,
    url: &str,
    pem: &str,
    keyname: &str,
) -> Result<Option<Vec<Listed>>, String> {
    let response = client
        .get(url)
        .basic_auth(OWNER, Some(TOKEN))
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    match response.status().as_u16() {
        404 => return Ok(None),
        200 => {}
        status => return Err(format!("GET {url}: {status}")),
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    read_index(url, &bytes, Some((pem, keyname))).map(Some)
}

/// The stanzas of a signed index, its signatures verified with `key` (PEM, key name)
/// when given.
fn read_index(url: &str, bytes: &[u8], key: Option<(&str, &str)>) -> Result<Vec<Listed>, String> {
    let (signatures, signed) =
        sign::split_signed(bytes).map_err(|e| format!("{url}: not a signed index: {e}"))?;
    if signatures.is_empty() {
        return Err(format!("{url}: no signatures"));
    }
    if let Some((pem, keyname)) = key {
        for (entry, signature) in &signatures {
            let (alg, name) = if let Some(name) = entry.strip_prefix(".SIGN.RSA256.") {
                (SignatureAlgorithm::Rsa256, name)
            } else if let Some(name) = entry.strip_prefix(".SIGN.RSA512.") {
                (SignatureAlgorithm::Rsa512, name)
            } else if let Some(name) = entry.strip_prefix(".SIGN.RSA.") {
                (SignatureAlgorithm::Rsa, name)
            } else {
                return Err(format!("{url}: unexpected signature entry {entry:?}"));
            };
            if name != keyname {
                return Err(format!(
                    "{url}: {entry} names another key than /{OWNER}/key ({keyname})"
                ));
            }
            sign::verify(pem, alg, signed, signature)
                .map_err(|e| format!("{url}: {entry} does not verify: {e}"))?;
        }
    }
    let text = std::panic::catch_unwind(|| common::apkindex_text(signed))
        .map_err(|_| format!("{url}: no readable APKINDEX entry"))?;
    Ok(parse_index(&text))
}

/// Read-your-writes while the server runs: right after a 201 the index lists the package
/// (unless someone is deleting it by now), right after a 204 it does not. `None` when the
/// server is gone.
async fn check_index_now(
    shared: &Shared,
    client: &reqwest::Client,
    base: &str,
    index: usize,
    after_delete: bool,
) -> Go {
    let (url, name, version, what) = {
        let model = shared.model.lock().unwrap();
        let pkg = &model.pkgs[index];
        let arch = if pkg.arch == "noarch" {
            "x86_64"
        } else {
            pkg.arch
        };
        let url = format!("{}/{arch}/APKINDEX.tar.gz", repo_url(base, pkg.repo));
        (url, pkg.name.clone(), pkg.version.clone(), pkg.describe())
    };
    let response = client
        .get(&url)
        .basic_auth(OWNER, Some(TOKEN))
        .send()
        .await
        .ok()?;
    let status = response.status();
    let listed = match status.as_u16() {
        404 => false,
        200 => {
            let bytes = response.bytes().await.ok()?;
            match read_index(&url, &bytes, None) {
                Ok(stanzas) => stanzas
                    .iter()
                    .any(|e| e.name == name && e.version == version),
                Err(e) => {
                    shared.error(e);
                    return Some(());
                }
            }
        }
        _ => {
            shared.error(format!("GET {url}: {status}"));
            return Some(());
        }
    };
    let still_present = shared.model.lock().unwrap().pkgs[index].state == PkgState::Present;
    if after_delete && listed {
        shared.error(format!("{url} still lists {what} after its 204"));
    } else if !after_delete && !listed && still_present {
        shared.error(format!("{url} does not list {what} after its 201"));
    }
    Some(())
}

/// One download check: the URL, and the sha256 expected (`None`: 404 expected).
struct Check {
    url: String,
    sha256: Option<String>,
    what: String,
}

async fn run_check(client: &reqwest::Client, check: Check) -> Result<(), String> {
    let response = client
        .get(&check.url)
        .basic_auth(OWNER, Some(TOKEN))
        .send()
        .await
        .map_err(|e| format!("GET {}: {e}", check.url))?;
    let status = response.status();
    match &check.sha256 {
        None if status == 404 => Ok(()),
        None => Err(format!(
            "{}: download is {status}, expected 404 ({})",
            check.url, check.what
        )),
        Some(expected) => {
            if status != 200 {
                return Err(format!(
                    "{}: download is {status}, expected 200 ({})",
                    check.url, check.what
                ));
            }
            let bytes = response
                .bytes()
                .await
                .map_err(|e| format!("GET {}: {e}", check.url))?;
            let got = hex::encode(Sha256::digest(&bytes));
            if &got != expected {
                return Err(format!(
                    "{}: downloaded sha256 {got}, uploaded {expected} ({})",
                    check.url, check.what
                ));
            }
            Ok(())
        }
    }
}

/// Checks the registry against the model, resolving unknown operations. Returns failures.
async fn verify(
    shared: &Shared,
    stats: &mut VerifyCounts,
    server: &Server,
    known_key: &mut Option<String>,
) -> Vec<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let base = &server.base;
    let mut failures = Vec::new();
    let (pem, keyname) = match fetch_key(&client, base).await {
        Ok(key) => key,
        Err(e) => return vec![e],
    };
    match known_key {
        Some(known) if *known != pem => {
            failures.push(format!("the owner key changed across a restart:\n{pem}"))
        }
        _ => *known_key = Some(pem.clone()),
    }

    // (repository, index arch) -> listed stanzas (possibly none); absent key = 404.
    let mut indexes: HashMap<(usize, &str), Vec<Listed>> = HashMap::new();
    for repo in 0..REPOS.len() {
        for &arch in INDEX_ARCHES {
            let url = format!("{}/{arch}/APKINDEX.tar.gz", repo_url(base, repo));
            match fetch_index(&client, &url, &pem, &keyname).await {
                Ok(Some(listed)) => {
                    stats.indexes += 1;
                    shared.served.lock().unwrap().insert((repo, arch));
                    indexes.insert((repo, arch), listed);
                }
                // An architecture once served keeps an index (empty when its packages are
                // gone), so that apk replaces its cached one.
                Ok(None) if shared.served.lock().unwrap().contains(&(repo, arch)) => {
                    failures.push(format!("{url}: served before, now 404"));
                }
                Ok(None) => {}
                Err(e) => failures.push(e),
            }
        }
    }

    let mut checks = Vec::new();
    {
        let mut model = shared.model.lock().unwrap();
        // Every listed stanza is a package we uploaded, with its own architecture (noarch
        // rewritten to the index's), its size, and a download.
        for (&(repo, arch), listed) in &indexes {
            for entry in listed {
                let key = (repo, format!("{}-{}", entry.name, entry.version));
                let what = format!("{}/{}/{arch} lists {}", REPOS[repo].0, REPOS[repo].1, key.1);
                let Some(&i) = model.by_key.get(&key) else {
                    failures.push(format!("{what}: a package never uploaded"));
                    continue;
                };
                let pkg = &model.pkgs[i];
                if pkg.arch != arch && pkg.arch != "noarch" {
                    failures.push(format!("{what}: it is {}", pkg.describe()));
                }
                if entry.arch != arch {
                    failures.push(format!("{what}: with A:{}", entry.arch));
                }
                if entry.size != Some(pkg.size) {
                    failures.push(format!("{what}: S:{:?}, uploaded {}", entry.size, pkg.size));
                }
                checks.push(Check {
                    url: file_url(base, repo, arch, &format!("{}.apk", key.1)),
                    sha256: Some(pkg.sha256.clone()),
                    what,
                });
            }
        }
        // Every package of the model is where its state says.
        for pkg in model.pkgs.iter_mut() {
            let wanted: &[&str] = if pkg.arch == "noarch" {
                INDEX_ARCHES
            } else {
                std::slice::from_ref(&pkg.arch)
            };
            let listed_in: Vec<bool> = wanted
                .iter()
                .map(|&arch| {
                    indexes.get(&(pkg.repo, arch)).is_some_and(|l| {
                        l.iter()
                            .any(|e| e.name == pkg.name && e.version == pkg.version)
                    })
                })
                .collect();
            let everywhere = listed_in.iter().all(|&b| b);
            let nowhere = listed_in.iter().all(|&b| !b);
            match pkg.state {
                PkgState::Present if !everywhere => failures.push(format!(
                    "acknowledged upload missing from index(es) {:?}: {}",
                    wanted, // the arches checked
                    pkg.describe()
                )),
                PkgState::Gone if !nowhere => failures.push(format!(
                    "deleted package still listed: {} (listed in {wanted:?}: {listed_in:?})",
                    pkg.describe()
                )),
                PkgState::UnknownUpload | PkgState::UnknownDelete => {
                    if everywhere {
                        pkg.state = PkgState::Present;
                        stats.resolved_listed += 1;
                    } else if nowhere {
                        pkg.state = PkgState::Gone;
                        pkg.gone_checked = false;
                        stats.resolved_absent += 1;
                    } else {
                        failures.push(format!(
                            "noarch package listed in some indexes only ({wanted:?}: {listed_in:?}): {}",
                            pkg.describe()
                        ));
                    }
                }
                PkgState::Uploading | PkgState::Deleting => failures.push(format!(
                    "internal: request still in flight at verification: {}",
                    pkg.describe()
                )),
                _ => {}
            }
            if pkg.state == PkgState::Gone && !pkg.gone_checked {
                pkg.gone_checked = true;
                let via = if pkg.arch == "noarch" {
                    "x86_64"
                } else {
                    pkg.arch
                };
                checks.push(Check {
                    url: file_url(base, pkg.repo, via, &pkg.file()),
                    sha256: None,
                    what: pkg.describe(),
                });
            }
        }
    }
    stats.downloads += checks.len();
    let results: Vec<Result<(), String>> = futures_util::stream::iter(checks)
        .map(|check| run_check(&client, check))
        .buffer_unordered(6)
        .collect()
        .await;
    failures.extend(results.into_iter().filter_map(Result::err));
    failures
}

/// Verification counters (kept apart from the workers' atomics).
#[derive(Default)]
struct VerifyCounts {
    indexes: usize,
    downloads: usize,
    /// Unknown operations whose package was listed after the restart.
    resolved_listed: usize,
    /// Unknown operations whose package was not listed after the restart.
    resolved_absent: usize,
}

async fn restart_and_verify(
    harness: &mut Harness,
    shared: &Shared,
    counts: &mut VerifyCounts,
    known_key: &mut Option<String>,
) -> Server {
    let server = harness.start().await;
    // Nothing but /readyz has been asked: leftovers are from before the restart.
    let leftovers = harness.staged_leftovers();
    if !leftovers.is_empty() {
        harness.fail(&[format!("temporary files survived a restart: {leftovers:?}")]);
    }
    let mut failures = verify(shared, counts, &server, known_key).await;
    failures.extend(shared.errors.lock().unwrap().drain(..));
    if !failures.is_empty() {
        harness.fail(&failures);
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_acknowledged() {
    let started = Instant::now();
    let seed = match std::env::var("CRASH_SEED") {
        Ok(s) => s.trim().parse().expect("CRASH_SEED is a u64"),
        Err(_) => rand::thread_rng().gen(),
    };
    let kills: usize = std::env::var("CRASH_KILLS")
        .ok()
        .map(|s| s.trim().parse().expect("CRASH_KILLS is a number"))
        .unwrap_or(DEFAULT_KILLS)
        .max(MIN_KILLS);
    eprintln!("crash test: seed {seed} (rerun with CRASH_SEED={seed}), {kills} kills");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut harness = Harness::new(seed);
    let shared = Arc::new(Shared {
        model: Mutex::new(Model::default()),
        stats: Stats::default(),
        next_id: AtomicUsize::new(0),
        errors: Mutex::new(Vec::new()),
        served: Mutex::new(Default::default()),
    });
    let mut counts = VerifyCounts::default();
    let mut known_key = None;
    let mut startup_kills = 0;

    let mut server = harness.start().await;
    for cycle in 0..kills {
        let workers = start_traffic(&shared, &server, &mut rng);
        let delay = rng.gen_range(20..=300);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        kill(&harness, &mut server);
        join_traffic(&harness, workers).await;
        drop(server);
        // Sometimes also kill the next start early, e.g. during recovery.
        if rng.gen_bool(0.2) {
            let mut early = harness.spawn();
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..120))).await;
            if early.child.try_wait().unwrap().is_none() {
                early.child.kill().unwrap();
            }
            let status = early.child.wait().unwrap();
            startup_kills += 1;
            let port_taken =
                std::fs::read_to_string(&early.log).is_ok_and(|log| log.contains("binding"));
            if status.code().is_some_and(|c| c != 0) && !port_taken {
                harness.fail(&[format!(
                    "a start exited with {status} before it was killed\n{}",
                    log_tail(&early.log, 4000)
                )]);
            }
        }
        server = restart_and_verify(&mut harness, &shared, &mut counts, &mut known_key).await;
        let (present, total) = {
            let model = shared.model.lock().unwrap();
            let present = model
                .pkgs
                .iter()
                .filter(|p| p.state == PkgState::Present)
                .count();
            (present, model.pkgs.len())
        };
        eprintln!(
            "cycle {:>2}: killed after {delay:>3} ms; {present} packages present of {total} uploaded; {:.1} s",
            cycle + 1,
            started.elapsed().as_secs_f64()
        );
    }

    // SIGTERM under load: in-flight requests finish, the exit status is 0.
    let workers = start_traffic(&shared, &server, &mut rng);
    tokio::time::sleep(Duration::from_millis(rng.gen_range(20..=300))).await;
    let status = terminate(&harness, &mut server).await;
    join_traffic(&harness, workers).await;
    if !status.success() {
        harness.fail(&[format!(
            "SIGTERM under load: exit {status}\n{}",
            log_tail(&server.log, 4000)
        )]);
    }
    let leftovers = harness.staged_leftovers();
    if !leftovers.is_empty() {
        harness.fail(&[format!(
            "temporary files left by a graceful shutdown: {leftovers:?}"
        )]);
    }
    drop(server);
    let mut server = restart_and_verify(&mut harness, &shared, &mut counts, &mut known_key).await;

    // The final clean shutdown.
    let status = terminate(&harness, &mut server).await;
    if !status.success() {
        harness.fail(&[format!(
            "final SIGTERM: exit {status}\n{}",
            log_tail(&server.log, 4000)
        )]);
    }
    drop(server);
    if let Some(database) = harness.database.take() {
        database.drop_database().await;
    }

    let s = &shared.stats;
    eprintln!(
        "crash test summary (seed {seed}): {kills} kills + {startup_kills} kills during start, \
         {} uploads acknowledged, {} deletes acknowledged, unknown: {} uploads + {} deletes \
         (afterwards {} listed, {} not); {} index and {} download checks; {:.1} s",
        s.uploads_acked.load(Ordering::Relaxed),
        s.deletes_acked.load(Ordering::Relaxed),
        s.unknown_uploads.load(Ordering::Relaxed),
        s.unknown_deletes.load(Ordering::Relaxed),
        counts.resolved_listed,
        counts.resolved_absent,
        counts.indexes,
        counts.downloads,
        started.elapsed().as_secs_f64()
    );
    // The hard paths ran: writes were acknowledged between kills, and kills caught
    // requests in flight whose outcome the restart then resolved.
    let (uploads, deletes) = (
        s.uploads_acked.load(Ordering::Relaxed),
        s.deletes_acked.load(Ordering::Relaxed),
    );
    let unknown =
        s.unknown_uploads.load(Ordering::Relaxed) + s.unknown_deletes.load(Ordering::Relaxed);
    assert!(
        uploads >= kills && deletes >= 1,
        "too little was acknowledged to test anything: {uploads} uploads, {deletes} deletes \
         over {kills} kills"
    );
    assert!(
        unknown >= kills / 4,
        "only {unknown} requests were in flight at {kills} kills: the kills did not land \
         under load"
    );
    assert!(
        counts.indexes >= kills && counts.downloads > 0,
        "{} index and {} download checks after {kills} restarts",
        counts.indexes,
        counts.downloads
    );
}
