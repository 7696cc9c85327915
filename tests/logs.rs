//! What the real binary logs at the default level: how it started, one line per change
//! and per error answered (4xx included) naming who and from where, no line for a file
//! served, and authentication failures as warnings, without secrets.

mod common;

use alpine_registry::apk::builder::PackageBuilder;
use common::process::ChildServer;

const TOKEN: &str = "apkreg_logs-test-token-0123456789abcdef";

#[tokio::test]
async fn requests_failures_and_start_up_are_logged_at_info() {
    let server = ChildServer::start(TOKEN, &[]);
    let client = reqwest::Client::new();
    let package = PackageBuilder::new("hello", "1.0-r0", "x86_64").build();
    let published = client
        .put(server.url("/admin/v3.21/main"))
        .basic_auth("admin", Some(TOKEN))
        .body(package)
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 201);
    let missing = client
        .get(server.url("/admin/v3.21/main/x86_64/nope-1.0-r0.apk"))
        .send();
    assert_eq!(missing.await.unwrap().status(), 404);
    let served = client
        .get(server.url("/admin/v3.21/main/x86_64/hello-1.0-r0.apk"))
        .send();
    assert_eq!(served.await.unwrap().status(), 200);
    let wrong = client
        .get(server.url("/admin/key"))
        .basic_auth("admin", Some("apkreg_wrong-wrong-wrong-wrong-wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // Lines are written by a thread of their own: the last ones may still be on their way.
    let started = std::time::Instant::now();
    let log = loop {
        let log = std::fs::read_to_string(&server.log).unwrap();
        if log.contains("status=401") || started.elapsed() > std::time::Duration::from_secs(5) {
            break log;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let line = |needles: &[&str]| {
        log.lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .unwrap_or_else(|| panic!("no line with {needles:?} in:\n{log}"))
            .to_string()
    };
    let start = line(&["starting alpine-registry"]);
    for field in [
        "version=",
        "data_dir=",
        "database=sqlite://",
        "config_file=",
        "public_url=",
    ] {
        assert!(start.contains(field), "{field} in {start}");
    }
    line(&["listening on http://127.0.0.1:"]);
    line(&[
        "INFO",
        "package published",
        "user=admin",
        "client=127.0.0.1",
    ]);
    line(&[
        "INFO",
        "answered",
        "status=201",
        "method=PUT",
        "user=admin",
        "bytes=",
    ]);
    line(&[
        "INFO",
        "answered",
        "status=404",
        "path=/admin/v3.21/main/x86_64/nope-1.0-r0.apk",
    ]);
    line(&["WARN", "authentication failed", "client=127.0.0.1"]);
    line(&["INFO", "answered", "status=401", "path=/admin/key"]);
    assert!(
        !log.contains("path=/admin/v3.21/main/x86_64/hello-1.0-r0.apk"),
        "a download answered 200 is logged only at debug:\n{log}"
    );
    assert!(
        !log.contains(TOKEN) && !log.contains("apkreg_wrong"),
        "a secret was logged"
    );
}
