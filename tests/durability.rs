//! Durability of an acknowledged publish on the embedded default: the system calls the
//! real binary makes, seen with strace. SIGKILL keeps the page cache, so the crash test
//! cannot tell a synced write from one that only reached the cache; this test can. Before
//! the 201, the package file is synced before it is renamed into place, its directory
//! after, and each SQLite commit syncs the write-ahead log (`synchronous = FULL`): with
//! `NORMAL`, or without a `sync_all`, a power loss could lose what was acknowledged.
//!
//! Needs `strace` (Debian: apt-get install strace); skipped with a note without it, unless
//! `ALPINE_REGISTRY_TEST_REQUIRE_TOOLS` is set (as CI does): then it fails.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::ChildServer;
use sha2::{Digest, Sha256};

const TOKEN: &str = "apkreg_durability-test-token-0123456789ab";

fn strace_available() -> bool {
    let found = Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("ALPINE_REGISTRY_TEST_REQUIRE_TOOLS").is_none(),
            "strace is missing (ALPINE_REGISTRY_TEST_REQUIRE_TOOLS is set)"
        );
        eprintln!("durability test skipped: strace is missing (apt-get install strace)");
    }
    found
}

/// strace attached to every thread of `pid`, recording the sync calls with the paths of
/// their descriptors.
struct Tracer {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Tracer {
    fn attach(pid: u32, dir: &Path) -> Tracer {
        let log = dir.join("strace.log");
        let attached = dir.join("strace.err");
        let child = Command::new("strace")
            .args(["-f", "-y", "-e", "trace=fsync,fdatasync,sync_file_range"])
            .arg("-o")
            .arg(&log)
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&attached).unwrap())
            .spawn()
            .expect("strace starts");
        // strace says "Process N attached" for each thread it took: wait for the first
        // line, then for the list to stop growing (it attaches thread by thread).
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = 0;
        loop {
            let now = std::fs::read_to_string(&attached)
                .unwrap_or_default()
                .matches("attached")
                .count();
            if now > 0 && now == seen {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "strace did not attach: {}",
                std::fs::read_to_string(&attached).unwrap_or_default()
            );
            seen = now;
            std::thread::sleep(Duration::from_millis(200));
        }
        Tracer { child, log }
    }

    /// Detaches and returns the recorded calls.
    fn finish(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The calls in `trace` that synced a descriptor whose path satisfies `matches`.
fn synced<'a>(trace: &'a str, matches: impl Fn(&str) -> bool + 'a) -> Vec<&'a str> {
    trace
        .lines()
        .filter(|line| line.contains("sync") && line.contains("= 0"))
        .filter(|line| {
            line.split_once('<')
                .and_then(|(_, rest)| rest.split_once('>'))
                .is_some_and(|(path, _)| matches(path))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_publish_is_synced_to_disk() {
    if !strace_available() {
        return;
    }
    let server = ChildServer::start(TOKEN, &[]);
    let client = reqwest::Client::new();
    let publish = |name: &str| {
        let bytes = common::package(name, "1.0-r0", "x86_64");
        let request = client
            .put(server.url("/admin/v3.21/main"))
            .basic_auth("admin", Some(TOKEN))
            .body(bytes.clone());
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 201);
            hex::encode(Sha256::digest(&bytes))
        }
    };
    // The first publish makes the key, the directories and the repository.
    publish("warmup").await;

    let scratch = tempfile::tempdir().unwrap();
    let tracer = Tracer::attach(server.child.id(), scratch.path());
    let sha256 = publish("durable").await;
    let trace = tracer.finish();

    let data = std::fs::canonicalize(server.dir.path().join("data")).unwrap();
    let data = data.to_str().unwrap().to_string();
    let blobs = format!("{data}/blobs/");
    let staged_file = synced(&trace, |p| p.starts_with(&format!("{blobs}.staging/")));
    let blob_dir = synced(&trace, |p| p == format!("{blobs}sha256/{}", &sha256[..2]));
    let wal = synced(&trace, |p| p == format!("{data}/registry.db-wal"));
    eprintln!(
        "durability: {} sync calls during one publish: {} of the staged package file, {} of \
         its directory, {} of the write-ahead log",
        trace.lines().filter(|l| l.contains("sync")).count(),
        staged_file.len(),
        blob_dir.len(),
        wal.len()
    );
    assert!(
        !staged_file.is_empty(),
        "the package file was not synced before it was renamed into place:\n{trace}"
    );
    assert!(
        !blob_dir.is_empty(),
        "the directory the package file was renamed into was not synced:\n{trace}"
    );
    // The row, then the index: each commit syncs the log with synchronous = FULL.
    assert!(
        wal.len() >= 2,
        "{} syncs of the write-ahead log for a row and an index committed:\n{trace}",
        wal.len()
    );
    // Blob before row: the file is durable before the row that points to it is.
    let position = |line: &str| trace.lines().position(|l| l == line).unwrap();
    assert!(
        position(staged_file[0]) < position(wal[wal.len() - 1]),
        "the row was committed before the package file was synced:\n{trace}"
    );
}
