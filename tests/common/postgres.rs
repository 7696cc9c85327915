//! Fresh PostgreSQL databases for tests, on the server named by
//! `ALPINE_REGISTRY_TEST_POSTGRES_URL` (a role there may CREATE DATABASE). Each database
//! has a random name and is dropped when its `TestDatabase` goes, even after a failure;
//! one left by a test process that exited first is dropped by a later run on the same
//! machine.
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

/// `signing.master_key` of registries on PostgreSQL, which refuse to start without one
/// (base64 of the 32 bytes `test-master-key-for-postgres-001`).
pub const MASTER_KEY: &str = "dGVzdC1tYXN0ZXIta2V5LWZvci1wb3N0Z3Jlcy0wMDE=";

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
    dropped: bool,
}

impl TestDatabase {
    /// A new, empty database on the server `server` (its URL).
    pub fn create(server: &str) -> TestDatabase {
        let name = format!(
            "{PREFIX}{}_{}_{:016x}",
            host_tag(),
            std::process::id(),
            rand::random::<u64>()
        );
        let admin = server.to_string();
        let statement = format!("CREATE DATABASE \"{name}\"");
        apart(move || async move {
            let mut connection = sqlx::postgres::PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("connecting to {URL_ENV}: {e}"));
            drop_left_over(&mut connection).await;
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
            dropped: false,
        }
    }

    /// A fresh database when `ALPINE_REGISTRY_TEST_POSTGRES_URL` is set, else None.
    pub fn from_env() -> Option<TestDatabase> {
        server_url().map(|server| TestDatabase::create(&server))
    }

    /// Drops the database without blocking the caller's runtime, so that connections a
    /// registry on this runtime is still opening can finish (the server waits for every
    /// connection to get past authentication before it drops a database).
    pub async fn drop_database(mut self) {
        self.dropped = true;
        if let Err(e) = drop_database(&self.server, &self.name).await {
            warn_not_dropped(&self.name, &e);
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropping = std::thread::spawn(move || {
            if let Err(e) = runtime().block_on(drop_database(&server, &name)) {
                warn_not_dropped(&name, &e);
            }
        });
        // On a runtime thread, waiting would stall the connections still opening on it,
        // and the server waits for them: let the drop finish on its own. A database left
        // by a process that exited first is dropped by the next run.
        if tokio::runtime::Handle::try_current().is_err() {
            let _ = dropping.join();
        }
    }
}

const PREFIX: &str = "alpine_registry_test_";

/// FORCE: connections of a registry still running in the test go too. Tried a few times:
/// FORCE fails for a role that may not signal an autovacuum worker busy in the database.
async fn drop_database(server: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut connection = sqlx::postgres::PgConnection::connect(server).await?;
    let statement = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    let mut attempts = 0;
    loop {
        attempts += 1;
        match sqlx::raw_sql(&statement).execute(&mut connection).await {
            Ok(_) => break,
            Err(_) if attempts < 20 => {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await
            }
            Err(e) => return Err(e),
        }
    }
    connection.close().await
}

fn warn_not_dropped(name: &str, error: &sqlx::Error) {
    let _ = writeln!(
        std::io::stderr(),
        "warning: test database {name} was not dropped: {error}"
    );
}

/// Names this machine in database names (8 hex digits), so that only its own left-overs
/// are dropped.
fn host_tag() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let digest = <sha2::Sha256 as sha2::Digest>::digest(host.trim().as_bytes());
    hex::encode(&digest[..4])
}

/// Drops the test databases of this machine's test processes that are gone.
async fn drop_left_over(connection: &mut sqlx::postgres::PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
            .bind(PREFIX)
            .fetch_all(&mut *connection)
            .await
            .unwrap_or_default();
    let host = host_tag();
    for name in names {
        let mut parts = name[PREFIX.len()..].split('_');
        let (Some(tag), Some(pid)) = (parts.next(), parts.next()) else {
            continue;
        };
        if tag != host || pid.is_empty() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut *connection)
            .await;
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
