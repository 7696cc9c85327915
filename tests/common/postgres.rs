//! Fresh PostgreSQL databases for tests, on the server named by
//! `ALPINE_REGISTRY_TEST_POSTGRES_URL` (a role there may CREATE DATABASE). Each database
//! has a random name and is dropped when its `TestDatabase` goes, even after a failure.
//!
//! Without the variable, PostgreSQL tests are skipped with a note, unless
//! `ALPINE_REGISTRY_TEST_REQUIRE_POSTGRES=1` says they must run: then they fail.

use std::future::Future;
use std::io::Write;

use sqlx::Connection;

/// A PostgreSQL server on which tests may create databases:
/// `postgres://user:password@127.0.0.1:5432/postgres`.
pub const URL_ENV: &str = "ALPINE_REGISTRY_TEST_POSTGRES_URL";
/// `1`: a missing `URL_ENV` fails the PostgreSQL tests instead of skipping them.
pub const REQUIRE_ENV: &str = "ALPINE_REGISTRY_TEST_REQUIRE_POSTGRES";

/// The server URL; None when it is not set (the caller skips). Panics when it is not set
/// but required.
pub fn server_url() -> Option<String> {
    match std::env::var(URL_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") => {
            panic!("{REQUIRE_ENV}=1 but {URL_ENV} is not set: the PostgreSQL tests cannot run")
        }
        _ => None,
    }
}

/// Says, once per test binary and past the test harness's output capture, that the
/// PostgreSQL tests are skipped.
pub fn note_skipped() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "note: PostgreSQL tests skipped: set {URL_ENV}=postgres://user:password@host:port/db \
             (a role that may CREATE DATABASE) to run them"
        );
    });
}

/// One database created for one test, dropped with it.
pub struct TestDatabase {
    server: String,
    name: String,
    /// The URL the registry connects to.
    pub url: String,
}

impl TestDatabase {
    /// A new, empty database on the server `server` (its URL).
    pub fn create(server: &str) -> TestDatabase {
        let name = format!(
            "alpine_registry_test_{}_{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        let admin = server.to_string();
        let statement = format!("CREATE DATABASE \"{name}\"");
        apart(move || async move {
            let mut connection = sqlx::postgres::PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("connecting to {URL_ENV}: {e}"));
            sqlx::raw_sql(&statement)
                .execute(&mut connection)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
            let _ = connection.close().await;
        });
        TestDatabase {
            url: with_database(server, &name),
            server: server.to_string(),
            name,
        }
    }

    /// A fresh database when `ALPINE_REGISTRY_TEST_POSTGRES_URL` is set, else None.
    pub fn from_env() -> Option<TestDatabase> {
        server_url().map(|server| TestDatabase::create(&server))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let server = self.server.clone();
        // FORCE: connections of a registry still running in the test go too.
        let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            runtime().block_on(async move {
                let mut connection = sqlx::postgres::PgConnection::connect(&server).await?;
                sqlx::raw_sql(&statement).execute(&mut connection).await?;
                connection.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            let _ = writeln!(
                std::io::stderr(),
                "warning: test database {} was not dropped: {dropped:?}",
                self.name
            );
        }
    }
}

/// `url` with its database replaced by `name` (user, password, host, port and query kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(at) => url.split_at(at),
        None => (url, ""),
    };
    let authority = base.find("://").map_or(0, |at| at + 3);
    let end = base[authority..]
        .find('/')
        .map_or(base.len(), |at| authority + at);
    format!("{}/{name}{query}", &base[..end])
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `work` to completion on a thread of its own, so that synchronous tests, async
/// tests and `Drop` can all use it.
fn apart<T, F>(work: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: Future<Output = T>,
{
    std::thread::spawn(move || runtime().block_on(work()))
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
