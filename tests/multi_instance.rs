//! Several instances on one PostgreSQL database behave as one registry.
//!
//! The main test runs three server processes (the real binary) on different ports, sharing
//! one fresh PostgreSQL database, one blob directory (or one S3 bucket, see below) and one
//! master key, each with a data directory of its own. 32 clients upload 300 distinct
//! packages round-robin over the instances into one repository; one instance is SIGKILLed
//! mid-run (uploads it was serving may fail: only 201s count) and the clients go on with
//! the others. Then every surviving instance serves the same signed index, listing every
//! acknowledged package; every acknowledged package downloads from every survivor with its
//! sha256; a delete through one instance is gone through the others; the key is the same
//! everywhere; the killed instance starts again beside the live ones without removing
//! their uploads in progress; an index build left behind (a row committed, its index not
//! published) is caught up by the live instances; and far fewer index builds ran than
//! uploads.
//!
//! The other tests check the database locks themselves: they exclude across connections
//! (as across instances), are released when their guard is dropped (also when the caller
//! gave up waiting), 32 concurrent uploads and deletes on 8 connections (and on 1) finish,
//! and orphan collection on one instance never removes a blob that an upload on another
//! is publishing. One checks the start-up clean-up of staged files on PostgreSQL, and one
//! that searches and package pages through one instance show what another published or
//! deleted at once.
//!
//! PostgreSQL tests: skipped with a note unless `ALPINE_REGISTRY_TEST_POSTGRES_URL` is
//! set, required with `ALPINE_REGISTRY_TEST_REQUIRE_POSTGRES=1` (see tests/common/postgres.rs).
//! With `ALPINE_REGISTRY_TEST_S3_ENDPOINT`, `_ACCESS_KEY`, `_SECRET_KEY` and `_BUCKET` set,
//! the instances share that S3 bucket (under a random prefix) instead of a blob directory.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use alpine_registry::apk::builder::PackageBuilder;
use alpine_registry::apk::sign::{self, SignatureAlgorithm};
use alpine_registry::store::{LockMode, PostgresStore, Store, StoreLock};
use common::postgres::{self as pg, TestDatabase};
use common::process::ChildServer;
use common::{index_names, package, TestServer, ADMIN_TOKEN};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

const TOKEN: &str = "apkreg_multi-instance-token-0123456789ab";
const INSTANCES: usize = 3;
const UPLOADS: usize = 300;
const CLIENTS: usize = 32;
/// The instance that is killed, once this many uploads are acknowledged.
const VICTIM: usize = 2;
const KILL_AFTER: usize = 100;
const REPO: &str = "/admin/v3.21/main";
const ARCH: &str = "x86_64";
const INDEX: &str = "/admin/v3.21/main/x86_64/APKINDEX.tar.gz";

/// S3 settings for the instances when the test's S3 variables are all set.
fn s3_env() -> Option<Vec<(String, String)>> {
    let var = |name: &str| {
        std::env::var(format!("ALPINE_REGISTRY_TEST_S3_{name}"))
            .ok()
            .filter(|v| !v.is_empty())
    };
    let endpoint = var("ENDPOINT")?;
    let (access, secret, bucket) = (var("ACCESS_KEY")?, var("SECRET_KEY")?, var("BUCKET")?);
    let prefix = format!("multi-instance-{:016x}", rand::random::<u64>());
    let s3 = |key: &str, value: &str| {
        (
            format!("ALPINE_REGISTRY__STORAGE__S3__{key}"),
            value.to_string(),
        )
    };
    Some(vec![
        ("ALPINE_REGISTRY__STORAGE__BACKEND".into(), "s3".into()),
        s3("BUCKET", &bucket),
        s3("ENDPOINT", &endpoint),
        s3("ACCESS_KEY_ID", &access),
        s3("SECRET_ACCESS_KEY", &secret),
        s3("ALLOW_HTTP", "true"),
        s3("PATH_STYLE", "true"),
        s3("REGION", "us-east-1"),
        s3("PREFIX", &prefix),
    ])
}

fn start_instance(env: &[(String, String)]) -> ChildServer {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ChildServer::start(TOKEN, &env)
}

fn log_of(server: &ChildServer) -> String {
    std::fs::read_to_string(&server.log).unwrap_or_default()
}

/// Index builds an instance logged.
fn builds_in(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("published indexes"))
        .count()
}

struct Upload {
    name: String,
    file: String,
    bytes: Vec<u8>,
    sha256: String,
}

fn uploads() -> Vec<Upload> {
    (0..UPLOADS)
        .map(|i| {
            let name = format!("multi-{i:03}");
            let bytes = PackageBuilder::new(&name, "1.0-r0", ARCH)
                .file(
                    &format!("usr/share/{name}/data"),
                    format!("{name} payload {i}\n").repeat(1 + i % 7).as_bytes(),
                )
                .build();
            Upload {
                file: format!("{name}-1.0-r0.apk"),
                sha256: hex::encode(Sha256::digest(&bytes)),
                name,
                bytes,
            }
        })
        .collect()
}

#[derive(Default)]
struct Outcomes {
    /// Uploads answered 201 (by position in `uploads()`).
    acked: BTreeSet<usize>,
    /// Uploads the killed instance stored before dying: a retry elsewhere was answered
    /// 409 with `"identical": true` (counted in `acked` too: they are listed).
    retried_identical: BTreeSet<usize>,
    /// Answers that are wrong whatever the timing.
    errors: Vec<String>,
    /// Uploads that the killed instance was serving when it died.
    interrupted: usize,
}

/// Fetches `/admin/key`: (bytes, key file name from Content-Disposition).
async fn fetch_key(client: &reqwest::Client, base: &str) -> (Vec<u8>, String) {
    let response = client
        .get(format!("{base}/admin/key"))
        .basic_auth("admin", Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{base}/admin/key");
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    let name = disposition
        .strip_prefix("attachment; filename=\"")
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_else(|| panic!("Content-Disposition {disposition:?}"))
        .to_string();
    (response.bytes().await.unwrap().to_vec(), name)
}

async fn fetch_index(client: &reqwest::Client, base: &str) -> Vec<u8> {
    let response = client
        .get(format!("{base}{INDEX}"))
        .basic_auth("admin", Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{base}{INDEX}");
    response.bytes().await.unwrap().to_vec()
}

/// The names an index lists, after checking its signatures against the key.
fn verified_names(index: &[u8], key_pem: &str, key_name: &str) -> Vec<String> {
    let (signatures, signed) = sign::split_signed(index).expect("a signed index");
    assert!(!signatures.is_empty());
    for (entry, signature) in &signatures {
        let (alg, name) = if let Some(name) = entry.strip_prefix(".SIGN.RSA256.") {
            (SignatureAlgorithm::Rsa256, name)
        } else if let Some(name) = entry.strip_prefix(".SIGN.RSA.") {
            (SignatureAlgorithm::Rsa, name)
        } else {
            panic!("unexpected signature entry {entry:?}");
        };
        assert_eq!(name, key_name, "the index is signed with the served key");
        sign::verify(key_pem, alg, signed, signature).expect("the index signature verifies");
    }
    index_names(&common::apkindex_text(signed))
}

/// Sets a file's modification time `age` in the past.
fn age(path: &Path, age: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_on_one_database_serve_one_registry() {
    let Some(server) = pg::server_url() else {
        pg::note_skipped();
        return;
    };
    let database = TestDatabase::create(&server);
    let blobs = tempfile::tempdir().unwrap();
    let s3 = s3_env();
    let master_key = base64_key();
    let mut env: Vec<(String, String)> = vec![
        (
            "ALPINE_REGISTRY__DATABASE__URL".into(),
            database.url.clone(),
        ),
        (
            "ALPINE_REGISTRY__DATABASE__MAX_CONNECTIONS".into(),
            "8".into(),
        ),
        ("ALPINE_REGISTRY__SIGNING__MASTER_KEY".into(), master_key),
        // Index builds are logged at debug level: they are counted below.
        (
            "RUST_LOG".into(),
            "info,alpine_registry::indexer=debug".into(),
        ),
    ];
    match &s3 {
        Some(settings) => env.extend(settings.iter().cloned()),
        None => env.push((
            "ALPINE_REGISTRY__STORAGE__BLOB_DIR".into(),
            blobs.path().display().to_string(),
        )),
    }

    // Started together: on an empty database they migrate and bootstrap concurrently.
    let starting: Vec<_> = (0..INSTANCES)
        .map(|_| {
            let env = env.clone();
            tokio::task::spawn_blocking(move || start_instance(&env))
        })
        .collect();
    let mut servers = Vec::new();
    for instance in starting {
        servers.push(instance.await.unwrap());
    }
    let bases: Arc<Vec<String>> = Arc::new(servers.iter().map(|s| s.url("")).collect());
    let pids: Vec<u32> = servers.iter().map(|s| s.child.id()).collect();

    let uploads = Arc::new(uploads());
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let dead: Arc<Vec<AtomicBool>> =
        Arc::new((0..INSTANCES).map(|_| AtomicBool::new(false)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let acked_count = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();

    // The killer: SIGKILL once a third of the uploads are acknowledged, while the clients
    // have requests in flight on every instance.
    let killer = {
        let (dead, acked_count) = (dead.clone(), acked_count.clone());
        let pid = pids[VICTIM];
        tokio::spawn(async move {
            while acked_count.load(Ordering::SeqCst) < KILL_AFTER {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            dead[VICTIM].store(true, Ordering::SeqCst);
            let killed = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
            assert!(killed.success(), "kill -KILL {pid}");
            acked_count.load(Ordering::SeqCst)
        })
    };

    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (uploads, outcomes, dead, next, acked_count, bases) = (
                uploads.clone(),
                outcomes.clone(),
                dead.clone(),
                next.clone(),
                acked_count.clone(),
                bases.clone(),
            );
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= UPLOADS {
                        break;
                    }
                    let upload = &uploads[i];
                    // Round-robin, skipping the instance known dead.
                    let mut target = i % INSTANCES;
                    let mut interrupted = false;
                    loop {
                        while dead[target].load(Ordering::SeqCst) {
                            target = (target + 1) % INSTANCES;
                        }
                        let answer = client
                            .put(format!("{}{REPO}", bases[target]))
                            .basic_auth("admin", Some(TOKEN))
                            .body(upload.bytes.clone())
                            .send()
                            .await;
                        let (status, identical) = match answer {
                            Ok(response) => {
                                let status = response.status().as_u16();
                                let body: Option<serde_json::Value> = response.json().await.ok();
                                let identical = body.and_then(|b| b["identical"].as_bool());
                                (Some(status), identical)
                            }
                            Err(_) => (None, None),
                        };
                        let mut outcomes = outcomes.lock().unwrap();
                        match status {
                            Some(201) => {
                                outcomes.acked.insert(i);
                                acked_count.fetch_add(1, Ordering::SeqCst);
                            }
                            // The killed instance stored it before dying: the retry is told
                            // that these very bytes are there, once the index lists them.
                            Some(409) if interrupted && identical == Some(true) => {
                                outcomes.acked.insert(i);
                                outcomes.retried_identical.insert(i);
                            }
                            _ if target == VICTIM && dead[VICTIM].load(Ordering::SeqCst) => {
                                // Served by the instance that was killed: try a survivor.
                                if !interrupted {
                                    outcomes.interrupted += 1;
                                }
                                interrupted = true;
                                continue;
                            }
                            other => outcomes.errors.push(format!(
                                "upload {} to instance {target}: {other:?}",
                                upload.file
                            )),
                        }
                        break;
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let upload_time = started.elapsed();
    let acked_at_kill = tokio::time::timeout(Duration::from_secs(10), killer)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "instance {VICTIM} was never killed: fewer than {KILL_AFTER} uploads \
                 acknowledged ({:?})",
                outcomes.lock().unwrap().errors
            )
        })
        .unwrap();
    let mut victim = servers.remove(VICTIM);
    victim.child.wait().unwrap();
    let victim_log = log_of(&victim);

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let logs = || {
        servers
            .iter()
            .map(|s| format!("--- {} ---\n{}", s.log.display(), log_of(s)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        outcomes.errors.is_empty(),
        "wrong answers: {:?}\n{}",
        outcomes.errors,
        logs()
    );
    // Each upload was answered, by a survivor at the latest.
    assert_eq!(outcomes.acked.len(), UPLOADS);
    // The kill landed under load: uploads were in flight on the victim.
    assert!(
        outcomes.interrupted > 0,
        "no upload was in flight on instance {VICTIM} when it was killed"
    );

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let survivors: Vec<String> = servers.iter().map(|s| s.url("")).collect();

    // One key everywhere.
    let (key_pem, key_name) = fetch_key(&client, &survivors[0]).await;
    for base in &survivors[1..] {
        assert_eq!(
            fetch_key(&client, base).await,
            (key_pem.clone(), key_name.clone()),
            "{base} serves another key"
        );
    }
    let key_pem = String::from_utf8(key_pem).unwrap();

    // One index everywhere, listing every acknowledged package and nothing never uploaded.
    let index = fetch_index(&client, &survivors[0]).await;
    for base in &survivors[1..] {
        assert!(
            fetch_index(&client, base).await == index,
            "{base} serves other index bytes"
        );
    }
    let listed: BTreeSet<String> = verified_names(&index, &key_pem, &key_name)
        .into_iter()
        .collect();
    for &i in &outcomes.acked {
        assert!(
            listed.contains(&uploads[i].name),
            "{} was acknowledged but is not listed",
            uploads[i].name
        );
    }
    let by_name: HashMap<&str, usize> = uploads
        .iter()
        .enumerate()
        .map(|(i, u)| (u.name.as_str(), i))
        .collect();
    for name in &listed {
        let known = by_name
            .get(name.as_str())
            .is_some_and(|i| outcomes.acked.contains(i));
        assert!(known, "{name} is listed but was never uploaded");
    }

    // Every listed package downloads intact from every survivor.
    let downloads: Vec<(String, String)> = listed
        .iter()
        .flat_map(|name| {
            let upload = &uploads[by_name[name.as_str()]];
            survivors.iter().map(move |base| {
                (
                    format!("{base}{REPO}/{ARCH}/{}", upload.file),
                    upload.sha256.clone(),
                )
            })
        })
        .collect();
    let checked = downloads.len();
    let failures: Vec<String> = futures_util::stream::iter(downloads)
        .map(|(url, sha256)| {
            let client = client.clone();
            async move {
                let response = client
                    .get(&url)
                    .basic_auth("admin", Some(TOKEN))
                    .send()
                    .await
                    .map_err(|e| format!("GET {url}: {e}"))?;
                if response.status() != 200 {
                    return Err(format!("GET {url}: {}", response.status()));
                }
                let bytes = response.bytes().await.map_err(|e| e.to_string())?;
                let actual = hex::encode(Sha256::digest(&bytes));
                if actual != sha256 {
                    return Err(format!("GET {url}: sha256 {actual}, expected {sha256}"));
                }
                Ok(())
            }
        })
        .buffer_unordered(16)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await;
    assert!(failures.is_empty(), "downloads: {failures:?}");

    // A delete through one instance is gone through the others.
    let gone = &uploads[*outcomes.acked.first().unwrap()];
    let response = client
        .delete(format!("{}{REPO}/{ARCH}/{}", survivors[0], gone.file))
        .basic_auth("admin", Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    for base in &survivors {
        let response = client
            .get(format!("{base}{REPO}/{ARCH}/{}", gone.file))
            .basic_auth("admin", Some(TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{base} still serves {}", gone.file);
        let names = verified_names(&fetch_index(&client, base).await, &key_pem, &key_name);
        assert!(
            !names.contains(&gone.name),
            "{base} still lists {}",
            gone.name
        );
        assert_eq!(names.len(), listed.len() - 1);
    }
    if s3.is_none() {
        let blob = blobs
            .path()
            .join("sha256")
            .join(&gone.sha256[..2])
            .join(&gone.sha256);
        assert!(
            blob.exists(),
            "the deleted package's blob stays for storage.orphan_grace_secs"
        );
    }

    // The killed instance starts again beside the live ones. Its start-up clean-up leaves
    // fresh staged files alone: they may be uploads the others are receiving.
    let (fresh, stale) = (
        blobs.path().join(".staging/upload-in-progress"),
        blobs.path().join(".staging/upload-interrupted"),
    );
    if s3.is_none() {
        std::fs::write(&fresh, b"partial").unwrap();
        std::fs::write(&stale, b"partial").unwrap();
        age(&stale, Duration::from_secs(2 * 3600));
    }
    let restarted = tokio::task::spawn_blocking({
        let env = env.clone();
        move || start_instance(&env)
    })
    .await
    .unwrap();
    if s3.is_none() {
        assert!(
            fresh.exists(),
            "another instance's upload in progress was removed"
        );
        assert!(
            !stale.exists(),
            "an interrupted upload's staged file was kept"
        );
    }
    let base = restarted.url("");
    assert!(fetch_index(&client, &base).await == fetch_index(&client, &survivors[0]).await);
    let (pem, name) = fetch_key(&client, &base).await;
    assert_eq!(
        (pem, name.as_str()),
        (key_pem.clone().into_bytes(), key_name.as_str())
    );
    let upload = &uploads[*outcomes.acked.last().unwrap()];
    let response = client
        .get(format!("{base}{REPO}/{ARCH}/{}", upload.file))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // A change committed by an instance that died before publishing its index, while the
    // others go on: one of them notices the lag that does not move, and rebuilds.
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&database.url)
        .await
        .unwrap();
    let wanted: i64 = sqlx::query_scalar(
        "UPDATE repositories SET wanted_gen = wanted_gen + 1 RETURNING wanted_gen",
    )
    .fetch_one(&mut connection)
    .await
    .unwrap();
    let abandoned_at = Instant::now();
    loop {
        let built: i64 = sqlx::query_scalar("SELECT built_gen FROM repositories")
            .fetch_one(&mut connection)
            .await
            .unwrap();
        if built >= wanted {
            break;
        }
        assert!(
            abandoned_at.elapsed() < Duration::from_secs(60),
            "an abandoned index build was not caught up within 60 s\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let caught_up = abandoned_at.elapsed();
    drop(connection);

    let builds: usize =
        servers.iter().map(|s| builds_in(&log_of(s))).sum::<usize>() + builds_in(&victim_log);
    eprintln!(
        "multi-instance: {} uploads acknowledged, {} of them by a retry told \"identical\" \
         (instance {VICTIM} killed after {acked_at_kill} acknowledgements, {} of its uploads \
         in flight) in {:.1} s; {builds} index builds in all; {checked} downloads checked; \
         an abandoned build caught up in {:.1} s",
        outcomes.acked.len(),
        outcomes.retried_identical.len(),
        outcomes.interrupted,
        upload_time.as_secs_f64(),
        caught_up.as_secs_f64(),
    );
    assert!(
        builds > 0 && builds <= outcomes.acked.len() / 4,
        "{builds} index builds for {} uploads: builds are not coalesced across instances",
        outcomes.acked.len()
    );

    drop(restarted);
    drop(servers);
    database.drop_database().await;
}

/// The environment of instances sharing `database`, the master key and (with the S3
/// variables) a bucket, else the blob directory `blobs`.
fn shared_env(database: &TestDatabase, blobs: &Path) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        (
            "ALPINE_REGISTRY__DATABASE__URL".into(),
            database.url.clone(),
        ),
        ("ALPINE_REGISTRY__SIGNING__MASTER_KEY".into(), base64_key()),
    ];
    match s3_env() {
        Some(settings) => env.extend(settings),
        None => env.push((
            "ALPINE_REGISTRY__STORAGE__BLOB_DIR".into(),
            blobs.display().to_string(),
        )),
    }
    env
}

const MODEL_REPO: &str = "/admin/v3.21/model";
/// The architectures whose indexes are compared; a package of each that is never deleted
/// keeps both served from the start.
const MODEL_ARCHES: [&str; 2] = ["x86_64", "aarch64"];
const MODEL_CHANGES: usize = 240;
/// Every this many changes, one instance is restarted: it starts with nothing kept.
const MODEL_RESTART_EVERY: usize = 60;
/// Every this many changes, a burst of concurrent changes through random instances.
const MODEL_BURST_EVERY: usize = 8;
const MODEL_BURST: usize = 4;

/// One file the model check publishes and deletes: (name, version, arch).
type ModelFile = (String, String, String);

fn model_files() -> Vec<ModelFile> {
    let mut files = Vec::new();
    for n in 0..8 {
        // Concrete packages of both architectures and noarch ones, listed in both.
        let arch = ["x86_64", "aarch64", "noarch"][n % 3];
        for version in ["1.0-r0", "1.1-r0"] {
            files.push((format!("model{n}"), version.to_string(), arch.to_string()));
        }
    }
    files
}

/// `P:` and `V:` of every entry of an APKINDEX text.
fn listed(text: &str) -> BTreeSet<(String, String)> {
    let mut entries = BTreeSet::new();
    let mut name = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("P:") {
            name = Some(n.to_string());
        } else if let Some(v) = line.strip_prefix("V:") {
            entries.insert((name.take().expect("P: before V:"), v.to_string()));
        }
    }
    entries
}

/// What the index of `arch` must list, given the files acknowledged as present.
fn expected(
    present: &BTreeSet<usize>,
    files: &[ModelFile],
    arch: &str,
) -> BTreeSet<(String, String)> {
    let mut entries: BTreeSet<(String, String)> = present
        .iter()
        .map(|&i| &files[i])
        .filter(|(_, _, a)| a == arch || a == "noarch")
        .map(|(n, v, _)| (n.clone(), v.clone()))
        .collect();
    entries.insert((format!("base-{arch}"), "1.0-r0".into()));
    entries
}

/// A publish (the file is absent) or a delete (present) of `files[i]` through `base`;
/// the status it must get.
async fn model_change(
    client: &reqwest::Client,
    base: &str,
    files: &[ModelFile],
    i: usize,
    present: bool,
) -> (u16, u16) {
    let (name, version, arch) = &files[i];
    let response = if present {
        client
            .delete(format!("{base}{MODEL_REPO}/{arch}/{name}-{version}.apk"))
            .basic_auth("admin", Some(TOKEN))
            .send()
            .await
    } else {
        client
            .put(format!("{base}{MODEL_REPO}"))
            .basic_auth("admin", Some(TOKEN))
            .body(package(name, version, arch))
            .send()
            .await
    };
    let status = response.expect("the change is answered").status().as_u16();
    (status, if present { 204 } else { 201 })
}

/// Random publishes and deletes through three instances on one database (and one
/// bucket), one at a time and in concurrent bursts, one instance restarted now and then so
/// that it starts with nothing kept. After every acknowledged change, the index of every
/// architecture served by every instance is fetched, its signature verified, and its
/// entries compared with the files acknowledged as present; each changed file downloads
/// (or answers 404) through every instance. Instances used to apply a change to the
/// indexes they had kept while another instance had published newer ones: a delete
/// answered 204 left the package in every index (25 of 30 deletes through round-robin).
/// `ALPINE_REGISTRY_TEST_SEED` replays a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interleaved_changes_through_any_instance_leave_every_index_exact() {
    use rand::{Rng, SeedableRng};
    let Some(server) = pg::server_url() else {
        pg::note_skipped();
        return;
    };
    let database = TestDatabase::create(&server);
    let blobs = tempfile::tempdir().unwrap();
    let env = shared_env(&database, blobs.path());
    let seed: u64 = std::env::var("ALPINE_REGISTRY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("model check: seed {seed} (ALPINE_REGISTRY_TEST_SEED replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let mut servers: Vec<ChildServer> = Vec::new();
    for _ in 0..INSTANCES {
        let env = env.clone();
        servers.push(
            tokio::task::spawn_blocking(move || start_instance(&env))
                .await
                .unwrap(),
        );
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    for arch in MODEL_ARCHES {
        let response = client
            .put(servers[0].url(MODEL_REPO))
            .basic_auth("admin", Some(TOKEN))
            .body(package(&format!("base-{arch}"), "1.0-r0", arch))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let (key, key_name) = fetch_key(&client, &servers[0].url("")).await;
    let key = String::from_utf8(key).unwrap();

    let files = model_files();
    let mut present = BTreeSet::new();
    let (mut changes, mut in_bursts, mut restarts, mut compared) = (0, 0, 0, 0);
    let started = Instant::now();
    let mut restart_at = MODEL_RESTART_EVERY;
    while changes < MODEL_CHANGES {
        if changes >= restart_at {
            restart_at += MODEL_RESTART_EVERY;
            let victim = rng.gen_range(0..INSTANCES);
            let env = env.clone();
            let fresh = tokio::task::spawn_blocking(move || start_instance(&env))
                .await
                .unwrap();
            // Dropping the old one kills it.
            servers[victim] = fresh;
            restarts += 1;
        }
        // Distinct files, each published if absent and deleted if present, through a
        // random instance: one alone, or a burst at once.
        let count = if changes % MODEL_BURST_EVERY == MODEL_BURST_EVERY - 1 {
            MODEL_BURST
        } else {
            1
        };
        let mut chosen = BTreeSet::new();
        while chosen.len() < count {
            chosen.insert(rng.gen_range(0..files.len()));
        }
        let mut requests = Vec::new();
        for &i in &chosen {
            let base = servers[rng.gen_range(0..INSTANCES)].url("");
            let (client, files, is_present) = (client.clone(), files.clone(), present.contains(&i));
            requests.push(tokio::spawn(async move {
                let answer = model_change(&client, &base, &files, i, is_present).await;
                (i, base, answer)
            }));
        }
        for request in requests {
            let (i, base, (status, wanted)) = request.await.unwrap();
            assert_eq!(
                status, wanted,
                "change {changes}: {:?} through {base} (seed {seed})",
                files[i]
            );
            if !present.remove(&i) {
                present.insert(i);
            }
            changes += 1;
        }
        if count > 1 {
            in_bursts += count;
        }
        for server in &servers {
            let base = server.url("");
            for arch in MODEL_ARCHES {
                let response = client
                    .get(format!("{base}{MODEL_REPO}/{arch}/APKINDEX.tar.gz"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let index = response.bytes().await.unwrap();
                let (signatures, signed) = sign::split_signed(&index).expect("a signed index");
                for (entry, signature) in &signatures {
                    let alg = if entry.starts_with(".SIGN.RSA256.") {
                        SignatureAlgorithm::Rsa256
                    } else {
                        SignatureAlgorithm::Rsa
                    };
                    assert!(entry.ends_with(&key_name), "{entry}");
                    sign::verify(&key, alg, signed, signature).expect("signature verifies");
                }
                assert_eq!(
                    listed(&common::apkindex_text(signed)),
                    expected(&present, &files, arch),
                    "index of {arch} through {base} after {changes} changes (seed {seed})"
                );
                compared += 1;
            }
            for &i in &chosen {
                let (name, version, arch) = &files[i];
                let path = format!("{base}{MODEL_REPO}/{arch}/{name}-{version}.apk");
                let status = client.get(&path).send().await.unwrap().status();
                let wanted = if present.contains(&i) { 200 } else { 404 };
                assert_eq!(status, wanted, "GET {path} (seed {seed})");
            }
        }
    }
    eprintln!(
        "model check: {changes} changes ({in_bursts} in bursts of {MODEL_BURST}) through \
         {INSTANCES} instances, {restarts} restarts with nothing kept, {compared} indexes \
         compared with the acknowledged state, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(servers);
    database.drop_database().await;
}

/// A random master key, as `head -c 32 /dev/urandom | base64` makes one.
fn base64_key() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

/// Two stores on one database, as two instances have; `connections` each.
async fn two_stores(database: &TestDatabase, connections: u32) -> (PostgresStore, PostgresStore) {
    let a = PostgresStore::connect(&database.url, connections, alpine_registry::clock::system())
        .await
        .unwrap();
    let b = PostgresStore::connect(&database.url, connections, alpine_registry::clock::system())
        .await
        .unwrap();
    (a, b)
}

/// Whether `lock` is granted within `wait` (the attempt is abandoned otherwise).
async fn granted(
    lock: impl std::future::Future<Output = alpine_registry::store::StoreResult<StoreLock>>,
    wait: Duration,
) -> Option<StoreLock> {
    tokio::time::timeout(wait, lock)
        .await
        .ok()
        .map(|r| r.unwrap())
}

/// Advisory locks granted in the database `url` now.
async fn advisory_locks(url: &str) -> i64 {
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&mut connection)
    .await
    .unwrap()
}

async fn until_no_advisory_locks(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held = advisory_locks(url).await;
        if held == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{held} advisory locks still held after every guard was dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_locks_exclude_across_stores_and_go_with_their_guard() {
    let Some(database) = TestDatabase::from_env() else {
        pg::note_skipped();
        return;
    };
    // Server settings that would end a held lock early (an idle transaction is ended) or
    // fail a wait for one (lock and statement timeouts): lock connections override them.
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&database.url)
        .await
        .unwrap();
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    for setting in [
        "idle_in_transaction_session_timeout = '200ms'",
        "lock_timeout = '100ms'",
    ] {
        sqlx::raw_sql(&format!("ALTER DATABASE \"{name}\" SET {setting}"))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    drop(admin);
    // One lock connection each: a lock that was not released would block the next one
    // (and a held lock, or an abandoned wait for one, occupies that connection).
    let (a, b) = two_stores(&database, 1).await;
    let short = Duration::from_millis(300);
    let long = Duration::from_secs(10);

    // Index builds: one holder per repository, for as long as it likes.
    let held = a.lock_index_build(1).await.unwrap();
    assert!(held.is_held());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let other = granted(b.lock_index_build(2), long)
        .await
        .expect("another repository's lock is free");
    drop(other);
    assert!(granted(b.lock_index_build(1), short).await.is_none());
    drop(held);
    let held = granted(b.lock_index_build(1), long)
        .await
        .expect("released on drop");
    drop(held);

    // Blobs: shared with shared, exclusive with nothing.
    let digest = "ab".repeat(32);
    let shared_a = a.lock_blob(&digest, LockMode::Shared).await.unwrap();
    let shared_b = granted(b.lock_blob(&digest, LockMode::Shared), long)
        .await
        .expect("shared locks coexist");
    drop(shared_b);
    assert!(granted(b.lock_blob(&digest, LockMode::Exclusive), short)
        .await
        .is_none());
    drop(shared_a);
    let exclusive = granted(b.lock_blob(&digest, LockMode::Exclusive), long)
        .await
        .expect("exclusive once the shared ones are released");
    let other = granted(a.lock_blob(&"cd".repeat(32), LockMode::Exclusive), long)
        .await
        .expect("another digest is another lock");
    drop(other);
    assert!(granted(a.lock_blob(&digest, LockMode::Shared), short)
        .await
        .is_none());
    drop(exclusive);

    // A waiter that gave up gets the lock later, on its own, and lets it go with its
    // connection.
    let held = granted(a.lock_blob(&digest, LockMode::Exclusive), long)
        .await
        .expect("the abandoned shared attempt let go");
    assert!(granted(b.lock_blob(&digest, LockMode::Exclusive), short)
        .await
        .is_none());
    drop(held);
    let again = granted(b.lock_blob(&digest, LockMode::Exclusive), long)
        .await
        .expect("the abandoned attempt released its lock and its connection");
    drop(again);
    let again = granted(a.lock_blob(&digest, LockMode::Exclusive), long).await;
    assert!(again.is_some());
    drop(again);

    // Taken and dropped many times in turn on one connection each: nothing accumulates.
    for round in 0..40 {
        let store = if round % 2 == 0 { &a } else { &b };
        let lock = granted(store.lock_index_build(7), long)
            .await
            .unwrap_or_else(|| panic!("round {round}: the previous lock was not released"));
        drop(lock);
    }
    until_no_advisory_locks(&database.url).await;
    drop((a, b));
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_and_deletes_on_few_connections_finish() {
    if pg::server_url().is_none() {
        pg::note_skipped();
        return;
    }
    for connections in [8, 1] {
        uploads_and_deletes_on(connections).await;
    }
}

async fn uploads_and_deletes_on(connections: u32) {
    // One user's 32 uploads at once: each may have an upload slot.
    let server = TestServer::start_with(|c| {
        c.database.max_connections = connections;
        c.limits.max_concurrent_uploads_per_user = 32;
    })
    .await;
    let server = Arc::new(server);
    // 32 at once: distinct packages, and the same content in 8 repositories, whose
    // uploads share one digest's lock while deletes of it take it exclusively.
    let same = package("same", "1.0-r0", "x86_64");
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let server = server.clone();
            let same = same.clone();
            tokio::spawn(async move {
                let (repo, bytes) = if i % 4 == 0 {
                    (format!("/admin/v1/r{}", i / 4), same)
                } else {
                    (
                        "/admin/v1/main".to_string(),
                        package(&format!("p{i}"), "1.0-r0", "x86_64"),
                    )
                };
                let status = server.put_admin(&repo, bytes).await.status();
                assert_eq!(status, 201, "upload {i}");
                if i % 8 == 0 {
                    let path = format!("{repo}/x86_64/same-1.0-r0.apk");
                    let status = server
                        .delete(&path, Some(("admin", ADMIN_TOKEN)))
                        .await
                        .status();
                    assert_eq!(status, 204, "delete {path}");
                }
            })
        })
        .collect();
    let all = futures_util::future::join_all(tasks);
    let results = tokio::time::timeout(Duration::from_secs(180), all)
        .await
        .unwrap_or_else(|_| {
            panic!("32 uploads on {connections} connections did not finish (deadlock?)")
        });
    for result in results {
        result.unwrap();
    }
    // The shared content is still there for the repositories that kept it.
    let response = server
        .get("/admin/v1/r1/x86_64/same-1.0-r0.apk", None)
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), same.as_slice());
    let text = server
        .verified_index("admin", "/admin/v1/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert_eq!(index_names(&text).len(), 24);
    Arc::into_inner(server).unwrap().stop().await;
}

#[tokio::test]
async fn startup_clean_up_on_postgres_spares_fresh_staged_files() {
    if pg::server_url().is_none() {
        pg::note_skipped();
        return;
    }
    // A blob directory several instances share (with S3 each stages in its own).
    let server = TestServer::start_with(common::on_fs).await;
    let staging = server.staging_dir();
    let fresh = staging.join("upload-fresh");
    let stale = staging.join("upload-stale");
    std::fs::write(&fresh, b"partial").unwrap();
    std::fs::write(&stale, b"partial").unwrap();
    age(&stale, Duration::from_secs(2 * 3600));
    let legacy = server.dir.path().join("tmp");
    std::fs::create_dir(&legacy).unwrap();
    std::fs::write(legacy.join("upload-fresh.apk"), b"partial").unwrap();
    std::fs::write(legacy.join("upload-stale.apk"), b"partial").unwrap();
    age(
        &legacy.join("upload-stale.apk"),
        Duration::from_secs(2 * 3600),
    );

    alpine_registry::recover(&server.state).await.unwrap();
    assert!(
        fresh.exists(),
        "possibly another instance's upload in progress"
    );
    assert!(!stale.exists());
    assert!(legacy.join("upload-fresh.apk").exists());
    assert!(!legacy.join("upload-stale.apk").exists());
    server.stop().await;
}

/// A registry opened on `url` and `blob_dir` with a data directory of its own: another
/// instance, in this process.
async fn open_instance(url: &str, blob_dir: &Path, data_dir: &Path) -> alpine_registry::AppState {
    let mut config = common::test_config(data_dir);
    config.database.url = url.to_string();
    config.signing.master_key = pg::MASTER_KEY.to_string();
    config.storage.blob_dir = Some(blob_dir.to_path_buf());
    alpine_registry::open(config).await.expect("open registry")
}

/// An upload on one instance and, on another, a delete of the same content (in another
/// repository) followed by orphan collection without grace, at the same moment, again and
/// again: the collection must never take the blob the upload's row is about to
/// reference. Each instance's in-process lock sees only its own requests; only the
/// database's lock of the digest keeps them apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orphan_collection_on_one_instance_never_takes_a_blob_another_is_publishing() {
    use alpine_registry::names::{Arch, PackageFile, RepoAddress};
    use alpine_registry::registry::{fsck, publish};

    let Some(database) = TestDatabase::from_env() else {
        pg::note_skipped();
        return;
    };
    let blobs = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open_instance(&database.url, blobs.path(), dir_a.path()).await;
    alpine_registry::registry::accounts::bootstrap(&a, Some(ADMIN_TOKEN.to_string()))
        .await
        .unwrap();
    let b = open_instance(&database.url, blobs.path(), dir_b.path()).await;
    let owner = a.store.owner_by_name("admin").await.unwrap().unwrap();
    let admin = a.store.user_by_name("admin").await.unwrap().unwrap();
    let uploader = publish::Uploader::User(admin.id);
    let (x, y) = (
        RepoAddress::parse("admin", "v1", "x").unwrap(),
        RepoAddress::parse("admin", "v1", "y").unwrap(),
    );
    let arch = Arch::parse("x86_64").unwrap();
    let file = PackageFile::parse("race-1.0-r0.apk").unwrap();
    let bytes = package("race", "1.0-r0", "x86_64");
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let blob = blobs.path().join("sha256").join(&sha256[..2]).join(&sha256);
    let body = |bytes: &Vec<u8>| {
        futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(bytes.clone()))])
    };

    let delete_and_collect = |state: &alpine_registry::AppState, at: &RepoAddress| {
        let (state, at, owner, arch, file) = (
            state.clone(),
            at.clone(),
            owner.clone(),
            arch.clone(),
            file.clone(),
        );
        async move {
            publish::delete(
                &state,
                &alpine_registry::registry::audit::Actor::cli(),
                publish::DeleteReason::Request,
                &owner,
                &at,
                &arch,
                &file,
            )
            .await
            .unwrap();
            fsck::collect_orphans(&state, std::time::Duration::ZERO)
                .await
                .unwrap();
        }
    };

    publish::publish(
        &b,
        &alpine_registry::registry::audit::Actor::cli(),
        uploader,
        &owner,
        &y,
        None,
        body(&bytes),
    )
    .await
    .unwrap();
    for round in 0..60 {
        // In y (through b), not in x: a publish into x through a races a delete from y
        // through b.
        let actor = alpine_registry::registry::audit::Actor::cli();
        let (published, ()) = tokio::join!(
            publish::publish(&a, &actor, uploader, &owner, &x, None, body(&bytes)),
            delete_and_collect(&b, &y),
        );
        published.unwrap();
        assert!(
            blob.exists(),
            "round {round}: the blob of the package just published in x was deleted"
        );
        // And the other way round: into y through b, out of x through a.
        let actor = alpine_registry::registry::audit::Actor::cli();
        let (published, ()) = tokio::join!(
            publish::publish(&b, &actor, uploader, &owner, &y, None, body(&bytes)),
            delete_and_collect(&a, &x),
        );
        published.unwrap();
        assert!(
            blob.exists(),
            "round {round}: the blob of the package just published in y was deleted"
        );
    }
    drop((a, b));
    database.drop_database().await;
}

/// What a search through `server` answers for `query`: (name, latest version,
/// description, files) per item, and the total.
async fn searched(server: &TestServer, query: &str) -> (Vec<(String, String, String, u64)>, u64) {
    let response = server.get(&format!("/api/v1/packages?{query}"), None).await;
    assert_eq!(response.status(), 200, "{query}");
    let page: serde_json::Value = response.json().await.unwrap();
    let items = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["name"].as_str().unwrap().to_string(),
                item["latest_version"].as_str().unwrap().to_string(),
                item["description"].as_str().unwrap().to_string(),
                item["files"].as_u64().unwrap(),
            )
        })
        .collect();
    (items, page["total"].as_u64().unwrap())
}

/// Two instances on one database: what is published or deleted through one is what a
/// search, a package page (its dependencies and reverse dependencies) and the maintainer
/// filter show through the other at once, both having answered searches before. The
/// catalog is kept in the database with the package rows, never in an instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_through_one_instance_shows_what_another_published() {
    let Some(database) = TestDatabase::from_env() else {
        pg::note_skipped();
        return;
    };
    let blobs = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = |dir: &Path| {
        let mut config = common::test_config(dir);
        config.database.url = database.url.clone();
        config.signing.master_key = pg::MASTER_KEY.to_string();
        config.storage.blob_dir = Some(blobs.path().to_path_buf());
        config
    };
    let a = TestServer::start_on(config(dir_a.path())).await;
    let b = TestServer::start_on(config(dir_b.path())).await;
    for server in [&a, &b] {
        assert_eq!(searched(server, "q=widget").await, (vec![], 0));
    }

    let widget = |version: &str, description: &str| {
        PackageBuilder::new("widget", version, "x86_64")
            .without_field("pkgdesc")
            .field("pkgdesc", description)
            .field("provides", "cmd:widgetctl so:libwidget.so.1=1")
            .field("maintainer", "Wanda Widget <wanda@example.org>")
            .build()
    };
    async fn put(server: &TestServer, bytes: Vec<u8>) {
        assert_eq!(server.put_admin(REPO, bytes).await.status(), 201);
    }
    put(&a, widget("1.0-r0", "Widgets, first of their name")).await;
    let first = (
        "widget".to_string(),
        "1.0-r0".to_string(),
        "Widgets, first of their name".to_string(),
        1,
    );
    for query in [
        "q=widget",
        "q=CMD:WidgetCtl",
        "q=so:libwidget*",
        "maintainer=WANDA",
    ] {
        assert_eq!(
            searched(&b, query).await,
            (vec![first.clone()], 1),
            "{query}"
        );
    }

    // A newer version through b is the latest through a.
    put(&b, widget("2.0-r0", "Widgets, second edition")).await;
    let both = (
        "widget".to_string(),
        "2.0-r0".to_string(),
        "Widgets, second edition".to_string(),
        2,
    );
    assert_eq!(searched(&a, "q=widget").await, (vec![both], 1));

    // A package depending on what widget provides, through a: b's page of widget
    // lists it as requiring widget, and b's page of it links to widget.
    put(
        &a,
        PackageBuilder::new("gadget", "1.0-r0", "x86_64")
            .field("depend", "so:libwidget.so.1")
            .build(),
    )
    .await;
    let page: serde_json::Value = b
        .get("/api/v1/owners/admin/packages/widget", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["versions"], serde_json::json!(["2.0-r0", "1.0-r0"]));
    assert_eq!(page["required_by"], serde_json::json!(["gadget"]));
    let page: serde_json::Value = b
        .get("/api/v1/owners/admin/packages/gadget", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        page["depends"],
        serde_json::json!([{"text": "so:libwidget.so.1",
                            "target": {"owner": "admin", "name": "widget"}}])
    );

    // Deletes through either instance are gone from the other's answers.
    let file = |version: &str| format!("{REPO}/{ARCH}/widget-{version}.apk");
    let admin = Some(("admin", ADMIN_TOKEN));
    assert_eq!(a.delete(&file("2.0-r0"), admin).await.status(), 204);
    assert_eq!(searched(&b, "q=widget").await, (vec![first], 1));
    assert_eq!(b.delete(&file("1.0-r0"), admin).await.status(), 204);
    assert_eq!(searched(&a, "q=widget").await, (vec![], 0));
    assert_eq!(
        a.get("/api/v1/owners/admin/packages/widget", None)
            .await
            .status(),
        404
    );
    let page: serde_json::Value = a
        .get("/api/v1/owners/admin/packages/gadget", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["depends"][0]["target"], serde_json::Value::Null);

    a.stop().await;
    b.stop().await;
    database.drop_database().await;
}
