//! `/metrics` through real HTTP: who may read it, what it counts after real publishes,
//! downloads and deletes, the text format Prometheus reads, labels that never name an
//! owner or a package, and `server.metrics_listen` on the real binary.

mod common;

use std::collections::HashMap;

use alpine_registry::store::Role;
use common::process::ChildServer;
use common::*;

const ADMIN: Option<(&str, &str)> = Some(("admin", ADMIN_TOKEN));

/// Samples of the text format: `name{labels}` → value. Every line must be a comment or a
/// sample; anything else fails the test.
fn samples(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP alpine_registry_")
                    || comment.starts_with("TYPE alpine_registry_")
                    || comment.starts_with("UNIT alpine_registry_")
                    || comment == "EOF",
                "unexpected comment: {line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(series.starts_with("alpine_registry_"), "{line}");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        samples.insert(series.to_string(), value);
    }
    samples
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {:#?}", samples.keys().collect::<Vec<_>>()))
}

async fn scrape(server: &TestServer) -> (String, HashMap<String, f64>) {
    let response = server.get("/metrics", ADMIN).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let parsed = samples(&text);
    (text, parsed)
}

#[tokio::test]
async fn metrics_are_for_administrators_on_the_main_listener() {
    let server = TestServer::start().await;
    let response = server.get("/metrics", None).await;
    assert_eq!(response.status(), 401);
    let token = server
        .user_with_token("reader", Role::Admin, None, None)
        .await;
    let response = server.get("/metrics", Some(("reader", &token))).await;
    assert_eq!(
        response.status(),
        403,
        "a user who is not a site administrator"
    );
    assert_eq!(server.get("/metrics", ADMIN).await.status(), 200);
}

#[tokio::test]
async fn publishes_downloads_deletes_and_builds_are_counted() {
    let server = TestServer::start().await;
    let bytes = package("secret-name", "1.0-r0", "x86_64");
    let response = server.put_admin("/admin/v3.21/main", bytes.clone()).await;
    assert_eq!(response.status(), 201);
    let path = "/admin/v3.21/main/x86_64/secret-name-1.0-r0.apk";
    // Refused: the same file again, and garbage.
    assert_eq!(
        server
            .put_admin("/admin/v3.21/main", bytes.clone())
            .await
            .status(),
        409
    );
    assert_eq!(
        server
            .put_admin("/admin/v3.21/main", b"not a package".to_vec())
            .await
            .status(),
        400
    );
    // Past the second of the last change, repeated downloads are answered from memory
    // before routing (`http::ready`): they count the same.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for _ in 0..3 {
        assert_eq!(server.get(path, None).await.status(), 200);
    }
    let index = "/admin/v3.21/main/x86_64/APKINDEX.tar.gz";
    for _ in 0..2 {
        assert_eq!(server.get(index, None).await.status(), 200);
    }
    assert_eq!(server.get("/admin/key", None).await.status(), 200);
    assert_eq!(
        server
            .get("/admin/v3.21/main/x86_64/missing-1.0-r0.apk", None)
            .await
            .status(),
        404
    );

    let (text, before) = scrape(&server).await;
    assert_eq!(
        value(&before, r#"alpine_registry_publishes_total{outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        value(
            &before,
            r#"alpine_registry_publishes_total{outcome="refused"}"#
        ),
        2.0
    );
    assert_eq!(
        value(&before, "alpine_registry_publish_duration_seconds_count"),
        1.0
    );
    assert_eq!(
        value(&before, "alpine_registry_publish_to_index_seconds_count"),
        1.0
    );
    assert_eq!(
        value(
            &before,
            r#"alpine_registry_downloads_total{kind="package",status="200"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            &before,
            r#"alpine_registry_downloads_total{kind="package",status="404"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &before,
            r#"alpine_registry_downloads_total{kind="index",status="200"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &before,
            r#"alpine_registry_downloads_total{kind="key",status="200"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &before,
            r#"alpine_registry_http_requests_total{route="/{owner}/{branch}/{repository}",method="PUT",status="201"}"#
        ),
        1.0
    );
    let builds = value(
        &before,
        r#"alpine_registry_index_builds_total{kind="full"}"#,
    ) + before
        .get(r#"alpine_registry_index_builds_total{kind="incremental"}"#)
        .copied()
        .unwrap_or(0.0);
    assert!(builds >= 1.0, "{builds}");
    assert_eq!(
        value(
            &before,
            "alpine_registry_index_build_duration_seconds_count"
        ),
        builds
    );
    assert_eq!(value(&before, "alpine_registry_packages"), 1.0);
    assert_eq!(
        value(&before, "alpine_registry_stored_bytes"),
        bytes.len() as f64
    );
    // Bounded labels: no owner, repository or package name, no path.
    for forbidden in ["secret-name", "\"admin\"", "/admin/", "v3.21"] {
        assert!(
            !text.contains(forbidden),
            "{forbidden} in the metrics:\n{text}"
        );
    }

    assert_eq!(server.delete(path, ADMIN).await.status(), 204);
    assert_eq!(server.delete(path, ADMIN).await.status(), 404);
    let (_, after) = scrape(&server).await;
    assert_eq!(
        value(&after, r#"alpine_registry_deletes_total{outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        value(
            &after,
            r#"alpine_registry_deletes_total{outcome="refused"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&after, "alpine_registry_delete_duration_seconds_count"),
        1.0
    );
    assert_eq!(value(&after, "alpine_registry_packages"), 0.0);
    assert_eq!(value(&after, "alpine_registry_stored_bytes"), 0.0);
    assert!(value(&after, "alpine_registry_index_build_duration_seconds_count") > builds);
}

#[test]
fn a_metrics_listener_serves_anyone_and_the_main_one_no_longer_does() {
    let metrics_port = free_port();
    let server = ChildServer::start_on_backends(
        ADMIN_TOKEN,
        &[(
            "ALPINE_REGISTRY__SERVER__METRICS_LISTEN",
            &format!("127.0.0.1:{metrics_port}"),
        )],
    );
    wait_listening(metrics_port);
    let client = reqwest::blocking::Client::new();
    let response = client
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let parsed = samples(&response.text().unwrap());
    assert_eq!(value(&parsed, "alpine_registry_packages"), 0.0);
    // Nothing else is served there.
    let response = client
        .get(format!("http://127.0.0.1:{metrics_port}/admin/key"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 404);
    // On the main listener /metrics is not served, even to an administrator: the 404 says
    // where it is.
    let response = client
        .get(server.url("/metrics"))
        .basic_auth("admin", Some(ADMIN_TOKEN))
        .send()
        .unwrap();
    assert_eq!(response.status(), 404);
    let body = response.text().unwrap();
    assert!(
        body.contains("server.metrics_listen") && !body.contains("alpine_registry_"),
        "{body}"
    );
}
