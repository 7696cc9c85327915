//! The registry on a PostgreSQL server that takes connections over TLS only, as managed
//! services do: with `sslmode=verify-full&sslrootcert=<CA>` in `database.url` it runs
//! through TLS; a server certificate its CA did not sign is refused at once, saying so;
//! a plain connection (`sslmode=disable`) is refused by the server; a CA file that cannot
//! be read is named at once.
//!
//! The server is named by `ALPINE_REGISTRY_TEST_POSTGRES_TLS_URL`
//! (`postgres://user:password@127.0.0.1:PORT/db`, a role that may CREATE DATABASE, on a
//! server with `ssl = on` whose pg_hba.conf has `hostssl` lines only) and
//! `ALPINE_REGISTRY_TEST_POSTGRES_TLS_CA` (the CA that signed its certificate, made for
//! 127.0.0.1): `start_postgres --tls` of `.ci/postgres.sh` starts one and sets both.
//! Without them the tests are skipped with a note, unless
//! `ALPINE_REGISTRY_TEST_REQUIRE_POSTGRES=1`: then they fail.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::postgres::{self as pg, TestDatabase};
use common::*;
use sqlx::Connection;

const URL_ENV: &str = "ALPINE_REGISTRY_TEST_POSTGRES_TLS_URL";
const CA_ENV: &str = "ALPINE_REGISTRY_TEST_POSTGRES_TLS_CA";

/// The server's URL (without TLS parameters) and its CA's certificate; None when they are
/// not set (the caller skips). Panics when they are not set but PostgreSQL is required.
fn tls_server() -> Option<(String, PathBuf)> {
    match (std::env::var(URL_ENV), std::env::var(CA_ENV)) {
        (Ok(url), Ok(ca)) if !url.is_empty() && !ca.is_empty() => Some((url, PathBuf::from(ca))),
        _ if std::env::var(pg::REQUIRE_ENV).as_deref() == Ok("1") => panic!(
            "{}=1 but {URL_ENV} and {CA_ENV} are not both set: the PostgreSQL TLS tests \
             cannot run (.ci/postgres.sh: start_postgres --tls)",
            pg::REQUIRE_ENV
        ),
        _ => {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "note: PostgreSQL TLS tests skipped: set {URL_ENV} (a server that \
                     requires TLS) and {CA_ENV} (its CA certificate) to run them"
                );
            });
            None
        }
    }
}

/// `url` with TLS parameters.
fn with_tls(url: &str, sslmode: &str, root_cert: Option<&Path>) -> String {
    let mut query = format!("sslmode={sslmode}");
    if let Some(ca) = root_cert {
        query.push_str(&format!("&sslrootcert={}", ca.display()));
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{query}")
}

/// Runs `serve` on `database_url` and waits (bounded) for it to exit; returns its stderr.
/// A server that is still running after `patience` fails the test.
fn serve_must_fail(database_url: &str, patience: Duration) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut command: Command = cli(dir.path());
    let mut child = command
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .env("ALPINE_REGISTRY__DATABASE__URL", database_url)
        .env("ALPINE_REGISTRY__SIGNING__MASTER_KEY", pg::MASTER_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > patience {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "serve still runs after {patience:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    String::from_utf8(output.stderr).unwrap()
}

/// A self-signed CA certificate of its own, which signed nothing the server holds.
fn other_ca(dir: &Path) -> PathBuf {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::extension::BasicConstraints;
    use openssl::x509::{X509NameBuilder, X509};

    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "another CA").unwrap();
    let name = name.build();
    let mut builder = X509::builder().unwrap();
    builder.set_version(2).unwrap();
    builder.set_subject_name(&name).unwrap();
    builder.set_issuer_name(&name).unwrap();
    builder.set_pubkey(&key).unwrap();
    builder
        .set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    builder
        .set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    builder
        .append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    builder.sign(&key, MessageDigest::sha256()).unwrap();
    let path = dir.join("other-ca.crt");
    std::fs::write(&path, builder.build().to_pem().unwrap()).unwrap();
    path
}

#[tokio::test]
async fn the_registry_runs_on_a_server_that_requires_verified_tls() {
    let Some((server, ca)) = tls_server() else {
        return;
    };
    let database = TestDatabase::create(&with_tls(&server, "verify-full", Some(&ca)));
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.database.url = database.url.clone();
    config.signing.master_key = pg::MASTER_KEY.to_string();
    let registry = TestServer::start_on(config).await;

    let bytes = package("over-tls", "1.0-r0", "x86_64");
    let response = registry.put_admin("/admin/v3.21/main", bytes.clone()).await;
    assert_eq!(response.status(), 201);
    let text = registry
        .verified_index("admin", "/admin/v3.21/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert_eq!(index_names(&text), ["over-tls"]);
    let download = registry
        .get("/admin/v3.21/main/x86_64/over-tls-1.0-r0.apk", None)
        .await;
    assert_eq!(download.status(), 200);
    assert_eq!(download.bytes().await.unwrap(), bytes);

    // Every connection to the registry's database is encrypted: the registry's pool and
    // this one.
    let mut connection = sqlx::postgres::PgConnection::connect(&database.url)
        .await
        .unwrap();
    let (encrypted, plain): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
         FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
         WHERE a.datname = current_database()",
    )
    .fetch_one(&mut connection)
    .await
    .unwrap();
    assert!(encrypted >= 2, "{encrypted} connections over TLS");
    assert_eq!(plain, 0);
    connection.close().await.unwrap();
    registry.stop().await;
    database.drop_database().await;
}

#[test]
fn a_server_certificate_another_ca_signed_is_refused_at_once_saying_so() {
    let Some((server, _)) = tls_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wrong = other_ca(dir.path());
    // Not taken for an outage (which `serve` waits out for a minute): a certificate that
    // does not verify is a configuration to fix.
    let message = serve_must_fail(
        &with_tls(&server, "verify-full", Some(&wrong)),
        Duration::from_secs(30),
    );
    assert!(message.contains("certificate"), "{message}");
    assert!(message.contains("sslrootcert"), "{message}");
    assert!(!message.contains("stayed unreachable"), "{message}");
}

#[test]
fn a_plain_connection_to_a_server_that_requires_tls_is_refused() {
    let Some((server, _)) = tls_server() else {
        return;
    };
    let message = serve_must_fail(&with_tls(&server, "disable", None), Duration::from_secs(30));
    assert!(message.contains("no encryption"), "{message}");
}

#[test]
fn a_ca_file_that_cannot_be_read_is_named_at_once() {
    let Some((server, _)) = tls_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.crt");
    let message = serve_must_fail(
        &with_tls(&server, "verify-full", Some(&missing)),
        Duration::from_secs(30),
    );
    assert!(
        message.contains(&format!(
            "database.url: sslrootcert {} cannot be read",
            missing.display()
        )),
        "{message}"
    );
    assert!(!message.contains("stayed unreachable"), "{message}");
}
