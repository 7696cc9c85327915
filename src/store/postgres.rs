//! The PostgreSQL backend of `Store`: the same records, conflicts and orderings as the
//! SQLite backend.
//!
//! One pool serves reads and writes. SQLite runs one write transaction at a time; here
//! transactions run concurrently (READ COMMITTED), so every transaction that reads before
//! it writes a repository's rows first takes that repository's row lock: package inserts
//! and deletes and index publications of one repository queue behind each other, and each
//! sees what the previous one committed. Index snapshots read in one REPEATABLE READ
//! transaction.
//!
//! Several server instances may share the database. What they must agree on beyond rows
//! (one index build of a repository at a time; no blob deleted while an upload of it is
//! between blob commit and row insert) is held as transaction-level advisory locks, each
//! in a transaction of its own on a connection of a second pool (`locks`): a task holding
//! one may then still take connections of the main pool, and however many tasks hold or
//! wait for locks, the main pool's connections keep being returned. See `AdvisoryLock` for
//! how a lock is released.

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;

use super::audit;
use super::history;
use super::keyring;
use super::keys;
use super::upstream;
use super::webhooks;
use super::*;
use crate::clock::SharedClock;

mod catalog;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub struct PostgresStore {
    pool: PgPool,
    /// Connections that hold advisory locks (see `AdvisoryLock`), apart from `pool`.
    locks: PgPool,
    clock: SharedClock,
}

/// Unique violations (the case-insensitive name indexes among them) are conflicts,
/// reported in the caller's words.
fn repository_gone(repository_id: i64) -> StoreError {
    StoreError::NotFound(format!("repository {repository_id} no longer exists"))
}

fn conflict_or(err: sqlx::Error, message: impl FnOnce() -> String) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(message()),
        _ => StoreError::Database(err),
    }
}

fn role(row: &PgRow, column: &str) -> StoreResult<Role> {
    let text: String = row.try_get(column)?;
    Role::from_str(&text).map_err(|e| StoreError::Database(sqlx::Error::Decode(e.into())))
}

fn user_from(row: &PgRow) -> StoreResult<User> {
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        is_admin: row.try_get("is_admin")?,
        password_hash: row.try_get("password_hash")?,
    })
}

fn key_from(row: &PgRow) -> StoreResult<StoredKey> {
    Ok(StoredKey {
        key_name: row.try_get("key_name")?,
        private_pem: row.try_get("private_pem")?,
        public_pem: row.try_get("public_pem")?,
    })
}

fn owner_from(row: &PgRow) -> StoreResult<Owner> {
    Ok(Owner {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        is_private: row.try_get("is_private")?,
        is_org: row.try_get("is_org")?,
    })
}

fn token_from(row: &PgRow) -> StoreResult<TokenRecord> {
    Ok(TokenRecord {
        id: row.try_get("id")?,
        token_hash: row.try_get("token_hash")?,
        user_id: row.try_get("user_id")?,
        user_name: row.try_get("user_name")?,
        prefix: row.try_get("prefix")?,
        scope: role(row, "scope")?,
        owner_id: row.try_get("owner_id")?,
        owner_name: row.try_get("owner_name")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        created_at: row.try_get("created_at")?,
        label: row.try_get("label")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

fn session_from(row: &PgRow) -> StoreResult<SessionRecord> {
    let token = match row.try_get::<Option<i64>, _>("token_id")? {
        Some(id) => Some(SessionToken {
            id,
            scope: role(row, "scope")?,
            owner_id: row.try_get("owner_id")?,
            expires_at: row.try_get("token_expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
            last_used_at: row.try_get("last_used_at")?,
        }),
        None => None,
    };
    Ok(SessionRecord {
        id_hash: row.try_get("id_hash")?,
        user: user_from(row)?,
        token,
        password_fingerprint: row.try_get("password_fingerprint")?,
        expires_at: row.try_get("expires_at")?,
    })
}

fn package_from(row: &PgRow) -> StoreResult<Package> {
    Ok(Package {
        id: row.try_get("id")?,
        repository_id: row.try_get("repository_id")?,
        arch: row.try_get("arch")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        filename: row.try_get("filename")?,
        checksum: row.try_get("checksum")?,
        sha256: row.try_get("sha256")?,
        size: row.try_get("size")?,
        created_at: row.try_get("created_at")?,
        modified_ms: row.try_get("modified_ms")?,
    })
}

fn repository_from(row: &PgRow) -> StoreResult<Repository> {
    Ok(Repository {
        id: row.try_get("id")?,
        owner_id: row.try_get("owner_id")?,
        owner_name: row.try_get("owner_name")?,
        branch: row.try_get("branch")?,
        name: row.try_get("name")?,
        wanted_gen: row.try_get("wanted_gen")?,
        built_gen: row.try_get("built_gen")?,
    })
}

/// A package row as an index build reads it.
fn index_entry_from(row: &PgRow) -> StoreResult<IndexEntry> {
    Ok(IndexEntry {
        id: row.try_get("id")?,
        arch: row.try_get("arch")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        checksum: row.try_get("checksum")?,
        stanza: row.try_get("stanza")?,
    })
}

const TOKEN_SELECT: &str =
    "SELECT t.id, t.token_hash, t.user_id, u.name AS user_name, t.prefix, t.scope, \
     t.owner_id, o.name AS owner_name, t.expires_at, t.revoked_at, t.created_at, t.label, \
     t.last_used_at \
     FROM tokens t JOIN users u ON u.id = t.user_id LEFT JOIN owners o ON o.id = t.owner_id";

const REPOSITORY_SELECT: &str = "SELECT r.id, r.owner_id, o.name AS owner_name, r.branch, \
     r.name, r.wanted_gen, r.built_gen FROM repositories r JOIN owners o ON o.id = r.owner_id";

const PACKAGE_COLUMNS: &str = "p.id, p.repository_id, p.arch, p.name, p.version, p.filename, \
     p.checksum, p.sha256, p.size, p.created_at, \
     COALESCE(p.modified_ms, p.created_at * 1000 + 999) AS modified_ms";

/// When an index became current; rows without milliseconds fall back to the end of their
/// second.
const INDEX_MODIFIED_MS: &str = "COALESCE(modified_ms, built_at * 1000 + 999) AS modified_ms";

/// The `Packages.adb` of an index row (None in a row written before it was rendered).
fn stored_adb(row: &sqlx::postgres::PgRow) -> StoreResult<Option<(bytes::Bytes, String)>> {
    let content: Option<Vec<u8>> = row.try_get("adb")?;
    let sha256: Option<String> = row.try_get("adb_sha256")?;
    Ok(content.zip(sha256).map(|(c, s)| (bytes::Bytes::from(c), s)))
}

/// Finds the package served at `{arch}/{filename}`, preferring the exact architecture.
const PACKAGE_LOOKUP: &str = "FROM packages p JOIN repositories r ON r.id = p.repository_id \
     WHERE r.owner_id = $1 AND r.branch = $2 AND r.name = $3 AND p.filename = $4 \
     AND p.arch IN ($5, 'noarch') ORDER BY p.arch = 'noarch' LIMIT 1";

const USER_COLUMNS: &str = "id, name, password_hash, is_admin";
const OWNER_COLUMNS: &str = "id, name, is_private, is_org";

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:5432/db`), which
    /// must exist, and applies the migrations. The pool holds `max_connections` + 1
    /// connections: as many as the SQLite backend's readers and writer together. Up to
    /// `max_connections` more, opened when needed, hold the locks between instances.
    /// Rows are dated by `clock`.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        clock: SharedClock,
    ) -> StoreResult<PostgresStore> {
        Self::connect_with_timeout(
            url,
            max_connections,
            std::time::Duration::from_secs(5),
            clock,
        )
        .await
    }

    /// Like `connect`, waiting at most `acquire_timeout` for a connection. One is handed
    /// out only after a round trip shows it alive, so none broken by a server restart is
    /// used; the pool opens new ones as needed, retrying refused connections until the
    /// timeout (then `PoolTimedOut`, which `StoreError::is_unavailable` reports as an
    /// outage). So the pool recovers by itself once the server is back.
    pub async fn connect_with_timeout(
        url: &str,
        max_connections: u32,
        acquire_timeout: std::time::Duration,
        clock: SharedClock,
    ) -> StoreResult<PostgresStore> {
        // Notices ("relation _sqlx_migrations already exists, skipping" at every start)
        // would be logged as info lines; warnings still are.
        let options =
            PgConnectOptions::from_str(url)?.options([("client_min_messages", "warning")]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1).saturating_add(1))
            .acquire_timeout(acquire_timeout)
            .test_before_acquire(true)
            .connect_with(options.clone())
            .await?;
        // A lock connection sits idle in its transaction while the lock is held, and waits
        // in a statement for as long as another instance holds the lock: server-wide
        // timeouts for either would end the transaction, and the lock with it, early.
        let locks = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .min_connections(0)
            .idle_timeout(Some(std::time::Duration::from_secs(60)))
            .connect_lazy_with(options.options([
                ("idle_in_transaction_session_timeout", "0"),
                ("statement_timeout", "0"),
                ("lock_timeout", "0"),
            ]));
        // Concurrent starts are safe: the migrator holds an advisory lock while it runs.
        MIGRATOR.run(&pool).await?;
        Ok(PostgresStore { pool, locks, clock })
    }

    /// Takes the advisory lock `key` in a new transaction on a connection of `locks`.
    ///
    /// The lock is taken in a task of its own: a caller that stops waiting (a client that
    /// went away) must not leave a connection with its transaction open or its lock
    /// request pending. The task always runs to its end, and a guard nobody claims is
    /// dropped there, which releases the lock.
    async fn advisory_lock(&self, key: i64, mode: LockMode) -> StoreResult<StoreLock> {
        let pool = self.locks.clone();
        let statement = match mode {
            LockMode::Shared => "SELECT pg_advisory_xact_lock_shared($1)",
            LockMode::Exclusive => "SELECT pg_advisory_xact_lock($1)",
        };
        let task = tokio::spawn(async move {
            let mut lock = AdvisoryLock {
                connection: Some(pool.acquire().await?),
            };
            let connection = lock.connection.as_mut().expect("just acquired");
            take_advisory_lock(connection, statement, key).await?;
            Ok::<_, StoreError>(lock)
        });
        let lock = task
            .await
            .map_err(|e| StoreError::Database(sqlx::Error::Io(std::io::Error::other(e))))??;
        Ok(StoreLock::holding(lock))
    }

    /// Locks the repository row until the transaction ends; None when it does not exist.
    async fn lock_repository(
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        repo: &RepoRef,
    ) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM repositories WHERE owner_id = $1 AND branch = $2 AND name = $3 \
             FOR NO KEY UPDATE",
        )
        .bind(repo.owner_id)
        .bind(&repo.branch)
        .bind(&repo.repository)
        .fetch_optional(&mut **tx)
        .await?)
    }
}

/// Locks the row of repository `id` until the transaction ends (NO KEY UPDATE): the
/// changes of a remote or virtual repository's history queue behind each other, on every
/// instance. NotFound when the repository is gone.
async fn lock_repository_id(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    id: i64,
) -> StoreResult<()> {
    sqlx::query_scalar::<_, i64>("SELECT id FROM repositories WHERE id = $1 FOR NO KEY UPDATE")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .map(|_| ())
        .ok_or_else(|| repository_gone(id))
}

/// The key of the advisory lock of a repository's index builds: 64 bits of a digest of
/// the id, in a space of its own.
fn index_build_key(repository_id: i64) -> i64 {
    named_key(&format!("alpine-registry index build {repository_id}"))
}

/// The key of an advisory lock named `name`: the first 64 bits of its SHA-256.
fn named_key(name: &str) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name);
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The key of the advisory lock of a blob: its digest's first 64 bits (any string that
/// is not a digest is hashed first). Two digests sharing them only wait for each other.
fn blob_key(sha256: &str) -> i64 {
    let bytes = match hex::decode(sha256.get(..16).unwrap_or_default()) {
        Ok(bytes) if bytes.len() == 8 => bytes,
        _ => {
            use sha2::Digest;
            sha2::Sha256::digest(sha256.as_bytes())[..8].to_vec()
        }
    };
    i64::from_be_bytes(bytes.try_into().expect("8 bytes"))
}

/// A connection of the lock pool in a transaction that holds an advisory lock (or is on
/// its way to one).
///
/// Dropping it ends the transaction with an explicit ROLLBACK before the connection goes
/// back to its pool: a connection returned with its transaction open would keep the lock
/// for as long as it sits idle, and a transaction dropped through sqlx's `Transaction`
/// only queues its rollback for the connection's next use. When the ROLLBACK fails, or no
/// runtime is left to run it, the connection is closed instead, and the server ends the
/// transaction and releases the lock with it (as when a process dies holding locks).
struct AdvisoryLock {
    connection: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
}

/// Opens a transaction on `connection` and takes the advisory lock `key` in it with
/// `statement`.
async fn take_advisory_lock(
    connection: &mut sqlx::PgConnection,
    statement: &'static str,
    key: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("BEGIN").execute(&mut *connection).await?;
    sqlx::query(statement).bind(key).execute(connection).await?;
    Ok(())
}

async fn rollback(connection: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("ROLLBACK").execute(connection).await?;
    Ok(())
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        let Some(mut connection) = self.connection.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = rollback(&mut connection).await {
                        tracing::warn!(error = %e, "releasing a lock: closing its connection");
                        let _ = connection.close().await;
                    }
                });
            }
            // Dropping the bare connection closes its socket.
            Err(_) => drop(connection.detach()),
        }
    }
}

/// The package rows of an owner, for `release_blobs`.
const OWNER_PACKAGES: &str = "repository_id IN (SELECT id FROM repositories WHERE owner_id = $2)";

/// Serialises the key changes of one owner (its row locked until the transaction ends;
/// NO KEY UPDATE, so that inserts referencing the owner, which take KEY SHARE, go on).
/// NotFound when the owner is gone.
async fn lock_owner_keys(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    owner_id: i64,
) -> StoreResult<()> {
    sqlx::query("SELECT id FROM owners WHERE id = $1 FOR NO KEY UPDATE")
        .bind(owner_id)
        .fetch_optional(&mut **tx)
        .await?
        .map(|_| ())
        .ok_or_else(|| StoreError::NotFound(format!("owner {owner_id} no longer exists")))
}

/// Raises the wanted generation of every repository of the owner (its key set changed);
/// returns them.
async fn bump_owner_repositories(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    owner_id: i64,
) -> StoreResult<Vec<Repository>> {
    sqlx::query(keys::BUMP_OWNER_REPOSITORIES)
        .bind(owner_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query(&format!(
        "{REPOSITORY_SELECT} WHERE r.owner_id = $1 ORDER BY r.id"
    ))
    .bind(owner_id)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(repository_from)
    .collect()
}

/// Inserts `entry`, when there is one, in `tx`: the transaction of the change it records.
async fn record(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    entry: Option<&AuditEntry>,
) -> StoreResult<()> {
    if let Some(entry) = entry {
        audit::bind_entry!(sqlx::query(audit::INSERT), entry)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

webhooks::outbox_functions!(sqlx::Postgres);

/// Records that the package rows `rows` selects (with `id` bound) lose their blobs'
/// reference at `now_ms`; called in the transaction that deletes them, before it does.
/// In digest order, so that two such transactions lock shared rows in the same order.
async fn release_blobs(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    rows: &str,
    id: i64,
    now_ms: i64,
) -> StoreResult<()> {
    sqlx::query(&format!(
        "INSERT INTO blob_releases (sha256, released_ms) \
         SELECT DISTINCT sha256, $1 FROM packages WHERE {rows} \
         ORDER BY sha256 ON CONFLICT (sha256) DO UPDATE SET released_ms = excluded.released_ms"
    ))
    .bind(now_ms)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `release_blobs` for the files cached of remote repositories and the files of hosted
/// repositories the histories of remote and virtual repositories name, that `rows` selects
/// (by `repository_id`), deleted with their repository or owner.
async fn release_upstream_blobs(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    rows: &str,
    id: i64,
    now_ms: i64,
) -> StoreResult<()> {
    for table in ["upstream_files", "served_history"] {
        sqlx::query(&format!(
            "INSERT INTO blob_releases (sha256, released_ms) \
             SELECT DISTINCT sha256, $1 FROM {table} WHERE sha256 IS NOT NULL AND {rows} \
             ORDER BY sha256 ON CONFLICT (sha256) DO UPDATE SET released_ms = excluded.released_ms"
        ))
        .bind(now_ms)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

mod upstream_fns {
    use crate::store::StoreResult;
    crate::store::upstream::upstream_functions!(sqlx::Postgres);
}

mod virtual_fns {
    use crate::store::{StoreError, StoreResult};
    crate::store::virtuals::virtual_functions!(sqlx::Postgres);
}

mod history_fns {
    use crate::store::{StoreError, StoreResult};
    crate::store::history::history_functions!(sqlx::Postgres);
}

mod dump_fns {
    crate::store::dump::dump_functions!(sqlx::Postgres);
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn count_users(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn create_user(
        &self,
        name: &str,
        password_hash: Option<&str>,
        is_admin: bool,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<User> {
        let now = self.clock.unix_secs();
        let mut tx = self.pool.begin().await?;
        let user_id: i64 = sqlx::query_scalar(
            "INSERT INTO users (name, password_hash, is_admin, created_at) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(name)
        .bind(password_hash)
        .bind(is_admin)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, || format!("user {name:?} already exists")))?;
        let owner_id: i64 = sqlx::query_scalar(
            "INSERT INTO owners (name, is_private, is_org, created_at) \
             VALUES ($1, FALSE, FALSE, $2) RETURNING id",
        )
        .bind(name)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, || format!("an owner named {name:?} already exists")))?;
        sqlx::query("INSERT INTO owner_members (owner_id, user_id, role) VALUES ($1, $2, 'admin')")
            .bind(owner_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(User {
            id: user_id,
            name: name.to_string(),
            is_admin,
            password_hash: password_hash.map(str::to_string),
        })
    }

    async fn user_by_name(&self, name: &str) -> StoreResult<Option<User>> {
        sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from)
            .transpose()
    }

    async fn create_owner(
        &self,
        name: &str,
        is_private: bool,
        is_org: bool,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Owner> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO owners (name, is_private, is_org, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING id",
        )
        .bind(name)
        .bind(is_private)
        .bind(is_org)
        .bind(self.clock.unix_secs())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, || format!("owner {name:?} already exists")))?;
        let audit = audit.map(|entry| AuditEntry {
            owner_id: Some(id),
            owner: Some(name.to_string()),
            ..entry.clone()
        });
        record(&mut tx, audit.as_ref()).await?;
        tx.commit().await?;
        Ok(Owner {
            id,
            name: name.to_string(),
            is_private,
            is_org,
        })
    }

    async fn owner_by_name(&self, name: &str) -> StoreResult<Option<Owner>> {
        sqlx::query(&format!(
            "SELECT {OWNER_COLUMNS} FROM owners WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(owner_from)
        .transpose()
    }

    async fn set_member(
        &self,
        owner_id: i64,
        user_id: i64,
        role: Role,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO owner_members (owner_id, user_id, role) VALUES ($1, $2, $3) \
             ON CONFLICT (owner_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(owner_id)
        .bind(user_id)
        .bind(role.as_str())
        .execute(&mut *tx)
        .await?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn member_role(&self, owner_id: i64, user_id: i64) -> StoreResult<Option<Role>> {
        sqlx::query("SELECT role FROM owner_members WHERE owner_id = $1 AND user_id = $2")
            .bind(owner_id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(|row| role(row, "role"))
            .transpose()
    }

    async fn insert_token(
        &self,
        token: NewToken<'_>,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<i64> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO tokens (user_id, token_hash, prefix, scope, owner_id, expires_at, \
             created_at, label) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(token.user_id)
        .bind(token.token_hash)
        .bind(token.prefix)
        .bind(token.scope.as_str())
        .bind(token.owner_id)
        .bind(token.expires_at)
        .bind(self.clock.unix_secs())
        .bind(token.label)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, || "token collision, try again".to_string()))?;
        record(&mut tx, audit.map(|entry| entry.with_token_id(id)).as_ref()).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn token_by_hash(&self, token_hash: &str) -> StoreResult<Option<TokenRecord>> {
        sqlx::query(&format!("{TOKEN_SELECT} WHERE t.token_hash = $1"))
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(token_from)
            .transpose()
    }

    async fn list_tokens(&self, user_id: Option<i64>) -> StoreResult<Vec<TokenRecord>> {
        sqlx::query(&format!(
            "{TOKEN_SELECT} WHERE $1::BIGINT IS NULL OR t.user_id = $1 ORDER BY t.id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(token_from)
        .collect()
    }

    async fn revoke_token(
        &self,
        id: i64,
        now: i64,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        sqlx::query(sessions::END_TOKEN_SESSIONS)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let revoked = done.rows_affected() == 1;
        if revoked {
            record(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    async fn signing_key(&self, owner_id: i64) -> StoreResult<Option<StoredKey>> {
        sqlx::query(keys::NEWEST_ACTIVE)
            .bind(owner_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(key_from)
            .transpose()
    }

    async fn insert_signing_key(
        &self,
        owner_id: i64,
        key: StoredKey,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<StoredKey> {
        let mut tx = self.pool.begin().await?;
        // First writer wins; everyone else adopts its key. A concurrent insert for the same
        // owner waits here for the first to commit, then finds its key.
        lock_owner_keys(&mut tx, owner_id).await?;
        let held: i64 = sqlx::query_scalar(keys::COUNT_KEYS)
            .bind(owner_id)
            .fetch_one(&mut *tx)
            .await?;
        if held == 0 {
            sqlx::query(keys::INSERT)
                .bind(owner_id)
                .bind(&key.key_name)
                .bind(&key.private_pem)
                .bind(&key.public_pem)
                .bind(self.clock.unix_secs())
                .execute(&mut *tx)
                .await
                .map_err(|e| conflict_or(e, || keys::name_taken(&key.key_name)))?;
            record(&mut tx, audit).await?;
        }
        let stored = key_from(
            &sqlx::query(keys::NEWEST_ACTIVE)
                .bind(owner_id)
                .fetch_one(&mut *tx)
                .await?,
        )?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn signing_keys(&self, owner_id: i64) -> StoreResult<Vec<SigningKeyRecord>> {
        Ok(sqlx::query_as(keys::KEYS)
            .bind(owner_id)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn active_key_ids(&self, owner_id: i64) -> StoreResult<Vec<i64>> {
        Ok(sqlx::query_scalar(keys::ACTIVE_IDS)
            .bind(owner_id)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn add_signing_key(
        &self,
        owner_id: i64,
        key: StoredKey,
        max_active: i64,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Vec<Repository>> {
        let mut tx = self.pool.begin().await?;
        lock_owner_keys(&mut tx, owner_id).await?;
        let active: i64 = sqlx::query_scalar(keys::COUNT_ACTIVE)
            .bind(owner_id)
            .fetch_one(&mut *tx)
            .await?;
        if active >= max_active {
            return Err(StoreError::Conflict(keys::too_many(active)));
        }
        sqlx::query(keys::INSERT)
            .bind(owner_id)
            .bind(&key.key_name)
            .bind(&key.private_pem)
            .bind(&key.public_pem)
            .bind(self.clock.unix_secs())
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_or(e, || keys::name_taken(&key.key_name)))?;
        let repositories = bump_owner_repositories(&mut tx, owner_id).await?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(repositories)
    }

    async fn retire_signing_key(
        &self,
        owner_id: i64,
        key_name: &str,
        now: i64,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Retirement> {
        let mut tx = self.pool.begin().await?;
        // Two retirements at once must not leave the owner without an active key.
        lock_owner_keys(&mut tx, owner_id).await?;
        let retired: Option<Option<i64>> = sqlx::query_scalar(keys::RETIRED_AT)
            .bind(owner_id)
            .bind(key_name)
            .fetch_optional(&mut *tx)
            .await?;
        match retired {
            None => return Ok(Retirement::NoSuchKey),
            Some(Some(_)) => return Ok(Retirement::AlreadyRetired),
            Some(None) => {}
        }
        let active: i64 = sqlx::query_scalar(keys::COUNT_ACTIVE)
            .bind(owner_id)
            .fetch_one(&mut *tx)
            .await?;
        if active <= 1 {
            return Ok(Retirement::LastActive);
        }
        sqlx::query(keys::RETIRE)
            .bind(owner_id)
            .bind(key_name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let repositories = bump_owner_repositories(&mut tx, owner_id).await?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Retirement::Retired(repositories))
    }

    async fn keyring_enabled(&self, owner_id: i64) -> StoreResult<Option<bool>> {
        Ok(sqlx::query_scalar(keyring::ENABLED)
            .bind(owner_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn set_keyring_enabled(
        &self,
        owner_id: i64,
        enabled: bool,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(keyring::SET)
            .bind(owner_id)
            .bind(enabled)
            .execute(&mut *tx)
            .await?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn owners_without_key(&self) -> StoreResult<Vec<Owner>> {
        sqlx::query(&format!(
            "SELECT {OWNER_COLUMNS} FROM owners \
             WHERE id NOT IN (SELECT owner_id FROM signing_keys) ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(owner_from)
        .collect()
    }

    async fn insert_package(
        &self,
        repo: &RepoRef,
        package: NewPackage,
        create_repository: bool,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<InsertedPackage> {
        let now_ms = self.clock.unix_ms();
        let mut tx = self.pool.begin().await?;
        // Either way the repository row stays locked until commit: the clash check below
        // sees every package committed before, and none can be added meanwhile. A
        // repository removed after any earlier check is missing here, and is only created
        // again when the caller allows it.
        let (repository_id, repository_created) = match Self::lock_repository(&mut tx, repo).await?
        {
            Some(id) => (id, false),
            None if create_repository => {
                let created: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO repositories (owner_id, branch, name) VALUES ($1, $2, $3) \
                     ON CONFLICT (owner_id, branch, name) DO NOTHING RETURNING id",
                )
                .bind(repo.owner_id)
                .bind(&repo.branch)
                .bind(&repo.repository)
                .fetch_optional(&mut *tx)
                .await?;
                match created {
                    Some(id) => (id, true),
                    // Created by a concurrent upload since the lookup: lock that one.
                    None => (
                        Self::lock_repository(&mut tx, repo)
                            .await?
                            .ok_or_else(|| StoreError::NotFound("no such repository".into()))?,
                        false,
                    ),
                }
            }
            None => return Err(StoreError::NotFound("no such repository".into())),
        };
        // noarch and concrete architectures share one download path, so the same name and
        // version may exist either as noarch or under concrete architectures, not both.
        let clash: Option<String> = sqlx::query_scalar(
            "SELECT arch FROM packages WHERE repository_id = $1 AND name = $2 AND version = $3 \
             AND (($4 = 'noarch') <> (arch = 'noarch')) LIMIT 1",
        )
        .bind(repository_id)
        .bind(&package.name)
        .bind(&package.version)
        .bind(&package.arch)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(arch) = clash {
            return Err(StoreError::Conflict(format!(
                "{}-{} already exists in this repository as {arch}; a package is either \
                 noarch or built per architecture, delete the other first",
                package.name, package.version
            )));
        }
        // The generation first: the row carries it, so that an index build can read
        // what changed since the generation it last built.
        let generation: i64 = sqlx::query_scalar(
            "UPDATE repositories SET wanted_gen = wanted_gen + 1 WHERE id = $1 \
             RETURNING wanted_gen",
        )
        .bind(repository_id)
        .fetch_one(&mut *tx)
        .await?;
        let row = sqlx::query(&format!(
            "INSERT INTO packages (repository_id, arch, name, version, filename, checksum, \
             sha256, size, stanza, created_at, modified_ms, generation) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {}",
            PACKAGE_COLUMNS.replace("p.", "")
        ))
        .bind(repository_id)
        .bind(&package.arch)
        .bind(&package.name)
        .bind(&package.version)
        .bind(&package.filename)
        .bind(&package.checksum)
        .bind(&package.sha256)
        .bind(package.size)
        .bind(&package.stanza)
        .bind(now_ms.div_euclid(1000))
        .bind(now_ms)
        .bind(generation)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            conflict_or(e, || {
                format!(
                    "{}/{} already exists; delete it before uploading it again",
                    package.arch, package.filename
                )
            })
        })?;
        let stored = package_from(&row)?;
        record_package_change(&mut tx, audit, repo.owner_id, generation, &stored, "added").await?;
        tx.commit().await?;
        Ok(InsertedPackage {
            package: stored,
            generation,
            repository_created,
        })
    }

    async fn find_package(
        &self,
        repo: &RepoRef,
        arch: &str,
        filename: &str,
    ) -> StoreResult<Option<Package>> {
        sqlx::query(&format!("SELECT {PACKAGE_COLUMNS} {PACKAGE_LOOKUP}"))
            .bind(repo.owner_id)
            .bind(&repo.branch)
            .bind(&repo.repository)
            .bind(filename)
            .bind(arch)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(package_from)
            .transpose()
    }

    async fn package_stanza(&self, package_id: i64) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(super::PACKAGE_STANZA)
            .bind(package_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn delete_package(
        &self,
        repo: &RepoRef,
        arch: &str,
        filename: &str,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Option<(Package, i64)>> {
        let mut tx = self.pool.begin().await?;
        // Two deletes of one file queue here; the second no longer finds it.
        let Some(repository_id) = Self::lock_repository(&mut tx, repo).await? else {
            return Ok(None);
        };
        let Some(row) = sqlx::query(&format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages p WHERE p.repository_id = $1 \
             AND p.filename = $2 AND p.arch IN ($3, 'noarch') \
             ORDER BY p.arch = 'noarch' LIMIT 1"
        ))
        .bind(repository_id)
        .bind(filename)
        .bind(arch)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let package = package_from(&row)?;
        release_blobs(&mut tx, "id = $2", package.id, self.clock.unix_ms()).await?;
        sqlx::query("DELETE FROM packages WHERE id = $1")
            .bind(package.id)
            .execute(&mut *tx)
            .await?;
        let generation: i64 = sqlx::query_scalar(
            "UPDATE repositories SET wanted_gen = wanted_gen + 1 WHERE id = $1 \
             RETURNING wanted_gen",
        )
        .bind(repository_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO package_removals (repository_id, generation, package_id) \
             VALUES ($1, $2, $3)",
        )
        .bind(repository_id)
        .bind(generation)
        .bind(package.id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM package_removals WHERE repository_id = $1 AND generation < $2")
            .bind(repository_id)
            .bind(generation - CHANGE_WINDOW)
            .execute(&mut *tx)
            .await?;
        record_package_change(
            &mut tx,
            audit,
            repo.owner_id,
            generation,
            &package,
            "removed",
        )
        .await?;
        tx.commit().await?;
        Ok(Some((package, generation)))
    }

    async fn set_pinned(
        &self,
        package_id: i64,
        pinned: bool,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(super::retention::SET_PINNED)
            .bind(pinned)
            .bind(package_id)
            .execute(&mut *tx)
            .await?;
        let changed = done.rows_affected() > 0;
        if changed {
            record(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn retained_files(&self, repository_id: i64) -> StoreResult<Vec<RetainedFile>> {
        sqlx::query(&format!(
            "SELECT {PACKAGE_COLUMNS}, p.pinned FROM packages p WHERE p.repository_id = $1 \
             ORDER BY p.id"
        ))
        .bind(repository_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(RetainedFile {
                package: package_from(row)?,
                pinned: row.try_get("pinned")?,
            })
        })
        .collect()
    }

    async fn set_retention_rule(
        &self,
        rule: &RetentionRule,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(super::retention::SET_RULE)
            .bind(rule.owner_id)
            .bind(&rule.branch)
            .bind(&rule.repository)
            .bind(rule.keep_versions)
            .bind(rule.max_age_secs)
            .bind(rule.keep_min)
            .bind(super::retention::globs_text(&rule.include))
            .bind(super::retention::globs_text(&rule.exclude))
            .bind(rule.updated_at)
            .execute(&mut *tx)
            .await?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn retention_rules(&self, owner_id: Option<i64>) -> StoreResult<Vec<RetentionRule>> {
        let sql = super::retention::rules_sql(owner_id.is_some());
        let mut query = sqlx::query_as::<_, super::retention::RuleRow>(&sql);
        if let Some(owner_id) = owner_id {
            query = query.bind(owner_id);
        }
        Ok(query
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(super::retention::rule_from)
            .collect())
    }

    async fn remove_retention_rule(
        &self,
        owner_id: i64,
        branch: &str,
        repository: &str,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(super::retention::REMOVE_RULE)
            .bind(owner_id)
            .bind(branch)
            .bind(repository)
            .execute(&mut *tx)
            .await?;
        let removed = done.rows_affected() > 0;
        if removed {
            record(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    async fn blob_referenced(&self, sha256: &str) -> StoreResult<bool> {
        Ok(sqlx::query_scalar(history::BLOB_REFERENCED)
            .bind(sha256)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn referenced_blobs(&self) -> StoreResult<std::collections::HashSet<String>> {
        Ok(sqlx::query_scalar(history::REFERENCED_BLOBS)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .collect())
    }

    async fn released_blobs(
        &self,
        since_ms: i64,
    ) -> StoreResult<std::collections::HashSet<String>> {
        Ok(
            sqlx::query_scalar("SELECT sha256 FROM blob_releases WHERE released_ms >= $1")
                .bind(since_ms)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .collect(),
        )
    }

    async fn blob_released_since(&self, sha256: &str, since_ms: i64) -> StoreResult<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM blob_releases WHERE sha256 = $1 \
             AND released_ms >= $2)",
        )
        .bind(sha256)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn forget_releases(&self, before_ms: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM blob_releases WHERE released_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_packages(&self, repository_id: i64) -> StoreResult<Vec<Package>> {
        sqlx::query(&format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages p WHERE p.repository_id = $1 \
             ORDER BY p.arch, p.filename"
        ))
        .bind(repository_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(package_from)
        .collect()
    }

    async fn owners_in(&self, scope: &OwnerScope) -> StoreResult<Vec<Owner>> {
        self.catalog_owners_in(scope).await
    }

    async fn search_packages(
        &self,
        search: &PackageSearch,
        collector: &mut dyn SearchCollector,
    ) -> StoreResult<SearchPage> {
        self.catalog_search(search, collector).await
    }

    async fn package_files(&self, owner_id: i64, name: &str) -> StoreResult<Vec<CatalogFile>> {
        self.catalog_package_files(owner_id, name).await
    }

    async fn index_files(&self, repository_id: i64, arch: &str) -> StoreResult<Vec<CatalogFile>> {
        self.catalog_index_files(repository_id, arch).await
    }

    async fn providers(
        &self,
        owner_id: i64,
        names: &[String],
    ) -> StoreResult<Vec<(String, String)>> {
        self.catalog_providers(owner_id, names).await
    }

    async fn required_by(
        &self,
        owner_id: i64,
        name: &str,
        limit: usize,
    ) -> StoreResult<(Vec<String>, u64)> {
        self.catalog_required_by(owner_id, name, limit).await
    }

    async fn name_providers(
        &self,
        owner_id: i64,
        branch: &str,
        names: &[String],
    ) -> StoreResult<Vec<crate::store::NameProvider>> {
        self.catalog_name_providers(owner_id, branch, names).await
    }

    async fn dependents(
        &self,
        repository_id: i64,
        names: &[String],
    ) -> StoreResult<Vec<crate::store::Dependent>> {
        self.catalog_dependents(repository_id, names).await
    }

    async fn dependency_check(&self, repo: &RepoRef) -> StoreResult<Option<Option<String>>> {
        self.catalog_dependency_check(repo).await
    }

    async fn set_dependency_check(
        &self,
        repo: &RepoRef,
        value: Option<&str>,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<bool> {
        self.catalog_set_dependency_check(repo, value, audit).await
    }

    async fn index_summaries(&self, repository_id: i64) -> StoreResult<Vec<IndexSummary>> {
        self.catalog_index_summaries(repository_id).await
    }

    async fn repository(&self, repo: &RepoRef) -> StoreResult<Option<Repository>> {
        sqlx::query(&format!(
            "{REPOSITORY_SELECT} WHERE r.owner_id = $1 AND r.branch = $2 AND r.name = $3"
        ))
        .bind(repo.owner_id)
        .bind(&repo.branch)
        .bind(&repo.repository)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(repository_from)
        .transpose()
    }

    async fn repository_by_id(&self, id: i64) -> StoreResult<Option<Repository>> {
        sqlx::query(&format!("{REPOSITORY_SELECT} WHERE r.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(repository_from)
            .transpose()
    }

    async fn has_noarch(&self, repository_id: i64) -> StoreResult<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM packages WHERE repository_id = $1 AND arch = 'noarch')",
        )
        .bind(repository_id)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn is_empty_repository(&self, repository_id: i64) -> StoreResult<bool> {
        Ok(sqlx::query_scalar(
            "SELECT NOT EXISTS \
             (SELECT 1 FROM packages WHERE repository_id = $1)",
        )
        .bind(repository_id)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn list_repositories(
        &self,
        owner_id: Option<i64>,
        branch: Option<&str>,
        repository: Option<&str>,
    ) -> StoreResult<Vec<Repository>> {
        sqlx::query(&format!(
            "{REPOSITORY_SELECT} WHERE ($1::BIGINT IS NULL OR r.owner_id = $1) \
             AND ($2::TEXT IS NULL OR r.branch = $2) AND ($3::TEXT IS NULL OR r.name = $3) \
             ORDER BY r.id"
        ))
        .bind(owner_id)
        .bind(branch)
        .bind(repository)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(repository_from)
        .collect()
    }

    async fn stale_repositories(&self) -> StoreResult<Vec<Repository>> {
        sqlx::query(&format!(
            "{REPOSITORY_SELECT} WHERE r.built_gen < r.wanted_gen ORDER BY r.id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(repository_from)
        .collect()
    }

    async fn bump_generation(&self, repository_id: i64) -> StoreResult<i64> {
        let generation: Option<i64> = sqlx::query_scalar(
            "UPDATE repositories SET wanted_gen = wanted_gen + 1 WHERE id = $1 \
             RETURNING wanted_gen",
        )
        .bind(repository_id)
        .fetch_optional(&self.pool)
        .await?;
        generation.ok_or_else(|| StoreError::NotFound("no such repository".into()))
    }

    async fn index_changes(&self, repository_id: i64, since: i64) -> StoreResult<IndexChanges> {
        // One snapshot: the generation, the rows and the removals belong together.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let (generation, built_generation): (i64, i64) =
            sqlx::query_as("SELECT wanted_gen, built_gen FROM repositories WHERE id = $1")
                .bind(repository_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| repository_gone(repository_id))?;
        let added = sqlx::query(
            "SELECT id, arch, name, version, checksum, stanza FROM packages \
             WHERE repository_id = $1 AND generation > $2",
        )
        .bind(repository_id)
        .bind(since)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(index_entry_from)
        .collect::<StoreResult<Vec<_>>>()?;
        let removed = sqlx::query_scalar(
            "SELECT package_id FROM package_removals \
             WHERE repository_id = $1 AND generation > $2",
        )
        .bind(repository_id)
        .bind(since)
        .fetch_all(&mut *tx)
        .await?;
        let served_arches =
            sqlx::query_scalar("SELECT arch FROM indexes WHERE repository_id = $1 ORDER BY arch")
                .bind(repository_id)
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(IndexChanges {
            generation,
            built_generation,
            added,
            removed,
            served_arches,
        })
    }

    async fn publish_indexes(
        &self,
        repository_id: i64,
        generation: i64,
        indexes: Vec<RenderedIndex>,
        removed: Vec<String>,
        now_ms: i64,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // First, so that the row lock orders concurrent publications of this repository:
        // each compares against the index rows the previous one committed.
        // A build that started before its repository was removed publishes nothing. Ids
        // are never reused (identity column), so a later repository cannot be mistaken
        // for it.
        let updated = sqlx::query(
            "UPDATE repositories SET built_gen = GREATEST(built_gen, $1) WHERE id = $2",
        )
        .bind(generation)
        .bind(repository_id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(repository_gone(repository_id));
        }
        let mut published = Vec::with_capacity(indexes.len());
        for index in &indexes {
            let current = sqlx::query(&format!(
                "SELECT generation, sha256, built_at, {INDEX_MODIFIED_MS} FROM indexes \
                 WHERE repository_id = $1 AND arch = $2"
            ))
            .bind(repository_id)
            .bind(&index.arch)
            .fetch_optional(&mut *tx)
            .await?;
            let (built_at, modified_ms) = match current {
                Some(row) if row.try_get::<i64, _>("generation")? > generation => continue,
                // The same bytes are the same representation: its dates stay valid.
                Some(row) if row.try_get::<String, _>("sha256")? == index.sha256 => {
                    (row.try_get("built_at")?, row.try_get("modified_ms")?)
                }
                _ => (now_ms.div_euclid(1000), now_ms),
            };
            sqlx::query(
                "INSERT INTO indexes (repository_id, arch, generation, content, sha256, \
                 built_at, modified_ms, entries, signatures, adb, adb_sha256) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (repository_id, arch) DO UPDATE SET \
                 generation = excluded.generation, content = excluded.content, \
                 sha256 = excluded.sha256, built_at = excluded.built_at, \
                 modified_ms = excluded.modified_ms, entries = excluded.entries, \
                 signatures = excluded.signatures, adb = excluded.adb, \
                 adb_sha256 = excluded.adb_sha256",
            )
            .bind(repository_id)
            .bind(&index.arch)
            .bind(generation)
            .bind(&index.content)
            .bind(&index.sha256)
            .bind(built_at)
            .bind(modified_ms)
            .bind(index.entries as i64)
            .bind(super::catalog::join_signatures(&index.signatures))
            .bind(index.adb.as_ref().map(|adb| &adb.content))
            .bind(index.adb.as_ref().map(|adb| &adb.sha256))
            .execute(&mut *tx)
            .await?;
            published.push(index);
        }
        for arch in &removed {
            sqlx::query(
                "DELETE FROM indexes WHERE repository_id = $1 AND arch = $2 \
                 AND generation <= $3",
            )
            .bind(repository_id)
            .bind(arch)
            .bind(generation)
            .execute(&mut *tx)
            .await?;
        }
        enqueue_index_events(&mut tx, repository_id, generation, &published, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn index(&self, repository_id: i64, arch: &str) -> StoreResult<Option<StoredIndex>> {
        let row = sqlx::query(&format!(
            "SELECT generation, content, sha256, built_at, {INDEX_MODIFIED_MS}, adb, adb_sha256 \
                 FROM indexes WHERE repository_id = $1 AND arch = $2"
        ))
        .bind(repository_id)
        .bind(arch)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(StoredIndex {
                generation: row.try_get("generation")?,
                content: bytes::Bytes::from(row.try_get::<Vec<u8>, _>("content")?),
                sha256: row.try_get("sha256")?,
                built_at: row.try_get("built_at")?,
                modified_ms: row.try_get("modified_ms")?,
                adb: stored_adb(&row)?,
            })
        })
        .transpose()
    }

    async fn owner_by_name_ignoring_case(&self, name: &str) -> StoreResult<Option<Owner>> {
        // lower() under "C" folds ASCII letters only, as the unique index does.
        sqlx::query(&format!(
            "SELECT {OWNER_COLUMNS} FROM owners WHERE lower(name) = lower($1 COLLATE \"C\") \
             ORDER BY name = $1 DESC, id LIMIT 1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(owner_from)
        .transpose()
    }

    async fn user_by_name_ignoring_case(&self, name: &str) -> StoreResult<Option<User>> {
        sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE lower(name) = lower($1 COLLATE \"C\") \
             ORDER BY name = $1 DESC, id LIMIT 1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(user_from)
        .transpose()
    }

    async fn list_users(&self) -> StoreResult<Vec<UserSummary>> {
        Ok(sqlx::query_as(
            "SELECT u.id, u.name, u.is_admin, u.password_hash IS NOT NULL AS has_password, \
             u.created_at, \
             (SELECT COUNT(*) FROM tokens t WHERE t.user_id = u.id AND t.revoked_at IS NULL \
              AND (t.expires_at IS NULL OR t.expires_at > $1)) AS active_tokens, \
             (SELECT COUNT(*) FROM owner_members m WHERE m.user_id = u.id) AS memberships \
             FROM users u ORDER BY u.name",
        )
        .bind(self.clock.unix_secs())
        .fetch_all(&self.pool)
        .await?)
    }

    async fn list_owners(&self) -> StoreResult<Vec<OwnerSummary>> {
        Ok(sqlx::query_as(
            "SELECT o.id, o.name, o.is_private, o.is_org, o.created_at, \
             (SELECT COUNT(*) FROM owner_members m WHERE m.owner_id = o.id) AS members, \
             (SELECT COUNT(*) FROM repositories r WHERE r.owner_id = o.id) AS repositories, \
             (SELECT COUNT(*) FROM packages p JOIN repositories r ON r.id = p.repository_id \
              WHERE r.owner_id = o.id) AS packages \
             FROM owners o ORDER BY o.name",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn list_members(&self, owner_id: i64) -> StoreResult<Vec<Member>> {
        let rows = sqlx::query(
            "SELECT m.user_id, u.name AS user_name, m.role FROM owner_members m \
             JOIN users u ON u.id = m.user_id WHERE m.owner_id = $1 ORDER BY u.name",
        )
        .bind(owner_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Member {
                    user_id: row.try_get("user_id")?,
                    user_name: row.try_get("user_name")?,
                    role: role(row, "role")?,
                })
            })
            .collect()
    }

    async fn remove_member(
        &self,
        owner_id: i64,
        user_id: i64,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM owner_members WHERE owner_id = $1 AND user_id = $2")
            .bind(owner_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let removed = done.rows_affected() == 1;
        if removed {
            record(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    async fn delete_user(
        &self,
        user_id: i64,
        namespace: Option<i64>,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        if let Some(owner_id) = namespace {
            release_blobs(&mut tx, OWNER_PACKAGES, owner_id, self.clock.unix_ms()).await?;
            release_upstream_blobs(&mut tx, OWNER_PACKAGES, owner_id, self.clock.unix_ms()).await?;
            sqlx::query("DELETE FROM owners WHERE id = $1")
                .bind(owner_id)
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound("the user no longer exists".into()));
        }
        record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_owner(&self, owner_id: i64, audit: Option<&AuditEntry>) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        release_blobs(&mut tx, OWNER_PACKAGES, owner_id, self.clock.unix_ms()).await?;
        release_upstream_blobs(&mut tx, OWNER_PACKAGES, owner_id, self.clock.unix_ms()).await?;
        let done = sqlx::query("DELETE FROM owners WHERE id = $1")
            .bind(owner_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound("the owner no longer exists".into()));
        }
        record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_owner_private(
        &self,
        owner_id: i64,
        is_private: bool,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE owners SET is_private = $1 WHERE id = $2")
            .bind(is_private)
            .bind(owner_id)
            .execute(&mut *tx)
            .await?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_password(
        &self,
        user_id: i64,
        password_hash: Option<&str>,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(sessions::END_PASSWORD_SESSIONS)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn touch_token(&self, id: i64, now: i64) -> StoreResult<()> {
        sqlx::query("UPDATE tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn create_repository(
        &self,
        repo: &RepoRef,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Repository> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO repositories (owner_id, branch, name) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(repo.owner_id)
        .bind(&repo.branch)
        .bind(&repo.repository)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, || "the repository already exists".to_string()))?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        self.repository_by_id(id)
            .await?
            .ok_or_else(|| repository_gone(id))
    }

    async fn create_remote_repository(
        &self,
        repo: &RepoRef,
        upstream: &Upstream,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Repository> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO repositories (owner_id, branch, name) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(repo.owner_id)
        .bind(&repo.branch)
        .bind(&repo.repository)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, || "the repository already exists".to_string()))?;
        sqlx::query(upstream::INSERT_UPSTREAM)
            .bind(id)
            .bind(&upstream.url)
            .bind(upstream::keys_text(&upstream.keys))
            .bind(upstream.refresh_secs)
            .execute(&mut *tx)
            .await?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        self.repository_by_id(id)
            .await?
            .ok_or_else(|| repository_gone(id))
    }

    async fn upstream(&self, repository_id: i64) -> StoreResult<Option<Upstream>> {
        upstream_fns::upstream(&self.pool, repository_id).await
    }

    async fn remote_repository_ids(&self) -> StoreResult<Vec<i64>> {
        upstream_fns::remote_repository_ids(&self.pool).await
    }

    async fn upstream_index(
        &self,
        repository_id: i64,
        arch: &str,
    ) -> StoreResult<Option<UpstreamIndex>> {
        upstream_fns::upstream_index(&self.pool, repository_id, arch).await
    }

    async fn save_upstream_index(&self, index: &UpstreamIndex) -> StoreResult<()> {
        upstream_fns::save_upstream_index(&self.pool, index).await
    }

    async fn upstream_checked(
        &self,
        repository_id: i64,
        arch: &str,
        checked_ms: i64,
        verified: bool,
        error: Option<&str>,
    ) -> StoreResult<()> {
        upstream_fns::upstream_checked(&self.pool, repository_id, arch, checked_ms, verified, error)
            .await
    }

    async fn upstream_freshness(&self, repository_id: i64) -> StoreResult<Vec<UpstreamFreshness>> {
        upstream_fns::upstream_freshness(&self.pool, repository_id).await
    }

    async fn stale_upstream_indexes(&self) -> StoreResult<i64> {
        upstream_fns::stale_upstream_indexes(&self.pool).await
    }

    async fn upstream_file(
        &self,
        repository_id: i64,
        arch: &str,
        filename: &str,
    ) -> StoreResult<Option<UpstreamFile>> {
        upstream_fns::upstream_file(&self.pool, repository_id, arch, filename).await
    }

    async fn insert_upstream_file(&self, file: &UpstreamFile) -> StoreResult<()> {
        upstream_fns::insert_upstream_file(&self.pool, file).await
    }

    async fn upstream_files(&self, repository_id: i64) -> StoreResult<Vec<UpstreamFile>> {
        upstream_fns::upstream_files(&self.pool, repository_id).await
    }

    async fn create_virtual_repository(
        &self,
        repo: &RepoRef,
        members: &[i64],
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Repository> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO repositories (owner_id, branch, name) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(repo.owner_id)
        .bind(&repo.branch)
        .bind(&repo.repository)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, || "the repository already exists".to_string()))?;
        virtual_fns::insert_virtual(&mut tx, id, members).await?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        self.repository_by_id(id)
            .await?
            .ok_or_else(|| repository_gone(id))
    }

    async fn virtual_members(&self, repository_id: i64) -> StoreResult<Option<Vec<i64>>> {
        virtual_fns::virtual_members(&self.pool, repository_id).await
    }

    async fn virtual_index(
        &self,
        repository_id: i64,
        arch: &str,
    ) -> StoreResult<Option<VirtualIndex>> {
        virtual_fns::virtual_index(&self.pool, repository_id, arch).await
    }

    async fn save_virtual_index(
        &self,
        index: &VirtualIndex,
        listing: &[ServedFile],
    ) -> StoreResult<Option<HistoryChange>> {
        let mut tx = self.pool.begin().await?;
        lock_repository_id(&mut tx, index.repository_id).await?;
        let change = virtual_fns::save_virtual_index(&mut tx, index, listing).await?;
        tx.commit().await?;
        Ok(change)
    }

    async fn record_upstream_listing(
        &self,
        repository_id: i64,
        arch: &str,
        upstream_sha256: &str,
        listing: &[ServedFile],
        now_ms: i64,
    ) -> StoreResult<Option<HistoryChange>> {
        let mut tx = self.pool.begin().await?;
        lock_repository_id(&mut tx, repository_id).await?;
        if !history_fns::upstream_is(&mut tx, repository_id, arch, upstream_sha256).await? {
            return Ok(None);
        }
        let change =
            history_fns::apply_listing(&mut tx, repository_id, arch, listing, now_ms).await?;
        tx.commit().await?;
        Ok(Some(change))
    }

    async fn served_files(
        &self,
        repository_id: i64,
        arch: &str,
        at_ms: Option<i64>,
    ) -> StoreResult<Vec<ServedRow>> {
        history_fns::served_files(&self.pool, repository_id, arch, at_ms).await
    }

    async fn served_file(
        &self,
        repository_id: i64,
        arch: &str,
        filename: &str,
        at_ms: Option<i64>,
    ) -> StoreResult<Option<ServedRow>> {
        history_fns::served_file(&self.pool, repository_id, arch, filename, at_ms).await
    }

    async fn served_span(
        &self,
        repository_id: i64,
        arch: &str,
        at_ms: i64,
    ) -> StoreResult<(Option<i64>, Option<i64>)> {
        history_fns::served_span(&self.pool, repository_id, arch, at_ms).await
    }

    async fn served_history(&self, repository_id: i64) -> StoreResult<Vec<ServedRow>> {
        history_fns::served_history(&self.pool, repository_id).await
    }

    async fn create_snapshot(
        &self,
        repository_id: i64,
        snapshot: &Snapshot,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        history_fns::insert_snapshot(&mut tx, repository_id, snapshot).await?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_snapshot(
        &self,
        repository_id: i64,
        name: &str,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let deleted = history_fns::delete_snapshot(&mut tx, repository_id, name).await?;
        if deleted {
            record(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn snapshots(&self, repository_id: i64) -> StoreResult<Vec<Snapshot>> {
        history_fns::snapshots(&self.pool, repository_id).await
    }

    async fn snapshot(&self, repository_id: i64, name: &str) -> StoreResult<Option<Snapshot>> {
        history_fns::snapshot(&self.pool, repository_id, name).await
    }

    async fn repository_summaries(
        &self,
        owner_id: Option<i64>,
    ) -> StoreResult<Vec<RepositorySummary>> {
        // One snapshot: counts and architectures belong together.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let rows = sqlx::query(
            "SELECT r.id, o.name AS owner_name, r.branch, r.name, \
             (SELECT COUNT(*) FROM packages p WHERE p.repository_id = r.id) AS packages, \
             (SELECT MAX(COALESCE(p.modified_ms, p.created_at * 1000 + 999)) FROM packages p \
              WHERE p.repository_id = r.id) AS last_publish_ms, \
             CASE WHEN EXISTS (SELECT 1 FROM upstreams u WHERE u.repository_id = r.id) \
             THEN 'remote' WHEN EXISTS (SELECT 1 FROM virtuals v WHERE v.repository_id = r.id) \
             THEN 'virtual' ELSE 'hosted' END AS kind \
             FROM repositories r JOIN owners o ON o.id = r.owner_id \
             WHERE $1::BIGINT IS NULL OR r.owner_id = $1 ORDER BY o.name, r.branch, r.name",
        )
        .bind(owner_id)
        .fetch_all(&mut *tx)
        .await?;
        // Served indexes, and noarch for repositories holding noarch packages.
        let arch_rows = sqlx::query(
            "SELECT repository_id, arch FROM indexes WHERE repository_id IN \
             (SELECT id FROM repositories WHERE $1::BIGINT IS NULL OR owner_id = $1) \
             UNION SELECT DISTINCT repository_id, arch FROM packages WHERE arch = 'noarch' \
             AND repository_id IN \
             (SELECT id FROM repositories WHERE $1::BIGINT IS NULL OR owner_id = $1) \
             UNION SELECT repository_id, arch FROM upstream_indexes WHERE repository_id IN \
             (SELECT id FROM repositories WHERE $1::BIGINT IS NULL OR owner_id = $1) \
             UNION SELECT repository_id, arch FROM virtual_indexes WHERE repository_id IN \
             (SELECT id FROM repositories WHERE $1::BIGINT IS NULL OR owner_id = $1)",
        )
        .bind(owner_id)
        .fetch_all(&mut *tx)
        .await?;
        let member_rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT m.repository_id, o.name || '/' || r.branch || '/' || r.name \
             FROM virtual_members m JOIN repositories r ON r.id = m.member_id \
             JOIN owners o ON o.id = r.owner_id WHERE m.repository_id IN \
             (SELECT id FROM repositories WHERE $1::BIGINT IS NULL OR owner_id = $1) \
             ORDER BY m.repository_id, m.position",
        )
        .bind(owner_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut members: std::collections::HashMap<i64, Vec<String>> =
            std::collections::HashMap::new();
        for (id, member) in member_rows {
            members.entry(id).or_default().push(member);
        }
        let mut arches: std::collections::HashMap<i64, std::collections::BTreeSet<String>> =
            std::collections::HashMap::new();
        for row in &arch_rows {
            arches
                .entry(row.try_get("repository_id")?)
                .or_default()
                .insert(row.try_get("arch")?);
        }
        rows.iter()
            .map(|row| {
                let id: i64 = row.try_get("id")?;
                Ok(RepositorySummary {
                    owner: row.try_get("owner_name")?,
                    branch: row.try_get("branch")?,
                    repository: row.try_get("name")?,
                    arches: arches.remove(&id).unwrap_or_default().into_iter().collect(),
                    packages: row.try_get("packages")?,
                    last_publish_ms: row.try_get("last_publish_ms")?,
                    kind: row.try_get("kind")?,
                    members: members.remove(&id).unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn delete_repository(
        &self,
        repo: &RepoRef,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Option<RemovedRepository>> {
        let mut tx = self.pool.begin().await?;
        let Some(id) = Self::lock_repository(&mut tx, repo).await? else {
            return Ok(None);
        };
        virtual_fns::refuse_member_removal(&mut tx, id).await?;
        let packages: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM packages WHERE repository_id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        let arches: Vec<String> =
            sqlx::query_scalar("SELECT arch FROM indexes WHERE repository_id = $1 ORDER BY arch")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        release_blobs(&mut tx, "repository_id = $2", id, self.clock.unix_ms()).await?;
        release_upstream_blobs(&mut tx, "repository_id = $2", id, self.clock.unix_ms()).await?;
        // Packages and indexes go with the row (ON DELETE CASCADE), in this one commit.
        sqlx::query("DELETE FROM repositories WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Some(RemovedRepository { packages, arches }))
    }

    async fn create_session(
        &self,
        session: NewSession<'_>,
        limits: SessionLimits,
    ) -> StoreResult<SessionAdmission> {
        let mut tx = self.pool.begin().await?;
        // Taking the allowance also locks the user's row of it: one user's logins on
        // every connection queue here, so the per-user cap holds exactly.
        let burst = limits.login_burst_ms;
        let allowed: Option<i64> = sqlx::query_scalar(sessions::TAKE_LOGIN)
            .bind(session.user_id)
            .bind(limits.now_ms)
            .bind(limits.login_interval_ms)
            .bind(burst)
            .fetch_optional(&mut *tx)
            .await?;
        if allowed.is_none() {
            let next: i64 = sqlx::query_scalar(sessions::LOGIN_NEXT)
                .bind(session.user_id)
                .fetch_one(&mut *tx)
                .await?;
            return Ok(SessionAdmission::TooSoon {
                retry_after_ms: (next - burst - limits.now_ms).max(1),
            });
        }
        let evicted = sqlx::query(sessions::EVICT_OWN)
            .bind(session.user_id)
            .bind(session.created_at)
            .bind((limits.per_user - 1).max(0))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let (live, first_end): (i64, Option<i64>) = sqlx::query_as(sessions::LIVE)
            .bind(session.created_at)
            .fetch_one(&mut *tx)
            .await?;
        if live >= limits.total {
            return Ok(SessionAdmission::Full {
                next_expiry: first_end.unwrap_or(session.expires_at),
            });
        }
        sqlx::query(sessions::INSERT)
            .bind(session.id_hash)
            .bind(session.user_id)
            .bind(session.token_id)
            .bind(session.password_fingerprint)
            .bind(session.created_at)
            .bind(session.expires_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_or(e, || "the session id is taken".to_string()))?;
        tx.commit().await?;
        Ok(SessionAdmission::Created { evicted })
    }

    async fn session(&self, id_hash: &str, now: i64) -> StoreResult<Option<SessionRecord>> {
        sqlx::query(sessions::SELECT)
            .bind(id_hash)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(session_from)
            .transpose()
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<bool> {
        let done = sqlx::query(sessions::DELETE)
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn audit_entries(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let (sql, binds) = audit::select_sql(query);
        let mut select = sqlx::query_as::<_, audit::EntryRow>(&sql);
        for value in binds {
            select = match value {
                audit::Bind::Int(v) => select.bind(v),
                audit::Bind::Text(v) => select.bind(v),
            };
        }
        Ok(select
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(audit::entry_from)
            .collect())
    }

    async fn prune_audit(&self, before_ms: i64) -> StoreResult<u64> {
        Ok(sqlx::query(audit::PRUNE)
            .bind(before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn create_webhook(
        &self,
        webhook: &NewWebhook,
        max_per_owner: i64,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Webhook> {
        let mut tx = self.pool.begin().await?;
        // Concurrent adds to one owner count one after the other.
        sqlx::query("SELECT id FROM owners WHERE id = $1 FOR UPDATE")
            .bind(webhook.owner_id)
            .execute(&mut *tx)
            .await?;
        let count: i64 = sqlx::query_scalar(webhooks::COUNT)
            .bind(webhook.owner_id)
            .fetch_one(&mut *tx)
            .await?;
        if count >= max_per_owner {
            return Err(StoreError::Conflict(format!(
                "the owner has {count} webhooks, the most it may have \
                 (webhooks.max_per_owner): remove one first"
            )));
        }
        let id: i64 = sqlx::query_scalar(webhooks::INSERT)
            .bind(webhook.owner_id)
            .bind(&webhook.url)
            .bind(&webhook.secret_sealed)
            .bind(webhook.events.join(","))
            .bind(webhook.created_ms)
            .bind(&webhook.created_by)
            .fetch_one(&mut *tx)
            .await?;
        let owner: String = sqlx::query_scalar("SELECT name FROM owners WHERE id = $1")
            .bind(webhook.owner_id)
            .fetch_one(&mut *tx)
            .await?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Webhook {
            id,
            owner_id: webhook.owner_id,
            owner,
            url: webhook.url.clone(),
            events_text: webhook.events.join(","),
            created_ms: webhook.created_ms,
            created_by: webhook.created_by.clone(),
            secret_sealed: webhook.secret_sealed.clone(),
        })
    }

    async fn webhooks(&self, owner_id: i64) -> StoreResult<Vec<Webhook>> {
        Ok(sqlx::query_as(&webhooks::select_by_owner())
            .bind(owner_id)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn webhook(&self, id: i64) -> StoreResult<Option<Webhook>> {
        Ok(sqlx::query_as(&webhooks::select_by_id())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn delete_webhook(&self, id: i64, audit: Option<&AuditEntry>) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query(webhooks::DELETE)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if deleted {
            record(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn webhook_deliveries(&self, webhook_id: i64, limit: i64) -> StoreResult<Vec<Delivery>> {
        Ok(sqlx::query_as(&webhooks::select_deliveries())
            .bind(webhook_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>> {
        Ok(sqlx::query_as(&webhooks::claim(" FOR UPDATE SKIP LOCKED"))
            .bind(lease_until_ms)
            .bind(now_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn finish_delivery(&self, id: i64, outcome: &AttemptOutcome) -> StoreResult<()> {
        webhooks::bind_outcome!(sqlx::query(webhooks::FINISH), id, outcome)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn prune_deliveries(&self, keep: i64) -> StoreResult<u64> {
        Ok(sqlx::query(webhooks::PRUNE)
            .bind(keep)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn prune_sessions(&self, now: i64) -> StoreResult<u64> {
        Ok(sqlx::query(sessions::PRUNE)
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn count_sessions(&self, user_id: Option<i64>) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(sessions::COUNT)
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn auth_failures(&self, keys: [&[u8]; 2]) -> StoreResult<Vec<FailureCount>> {
        let rows: Vec<(Vec<u8>, i64, i64)> = sqlx::query_as(sessions::FAILURES)
            .bind(keys[0])
            .bind(keys[1])
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(key, failures, last_ms)| FailureCount {
                key,
                failures,
                last_ms,
            })
            .collect())
    }

    async fn record_auth_failure(
        &self,
        keys: [&[u8]; 2],
        now_ms: i64,
        window_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(sessions::RECORD_FAILURE)
            .bind(keys[0])
            .bind(keys[1])
            .bind(now_ms)
            .bind(now_ms.saturating_sub(window_ms))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn clear_auth_failures(&self, key: &[u8]) -> StoreResult<()> {
        sqlx::query(sessions::CLEAR_FAILURES)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn prune_auth_failures(&self, before_ms: i64) -> StoreResult<u64> {
        Ok(sqlx::query(sessions::PRUNE_FAILURES)
            .bind(before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn export(&self) -> StoreResult<Dump> {
        // One snapshot for every table.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        // The identity sequence remembers removed repositories: the last id it handed out,
        // or the one before the next when it was set without being used (as `import`
        // leaves it).
        let sequence: String =
            sqlx::query_scalar("SELECT pg_get_serial_sequence('repositories', 'id')")
                .fetch_one(&mut *tx)
                .await?;
        let last_repository_id: i64 = sqlx::query_scalar(&format!(
            "SELECT GREATEST(CASE WHEN is_called THEN last_value ELSE last_value - 1 END, \
             COALESCE((SELECT MAX(id) FROM repositories), 0)) FROM {sequence}"
        ))
        .fetch_one(&mut *tx)
        .await?;
        let dump = dump_fns::export_rows(&mut tx, last_repository_id).await?;
        tx.commit().await?;
        Ok(dump)
    }

    async fn table_counts(&self) -> StoreResult<TableCounts> {
        let mut tx = self.pool.begin().await?;
        let counts = dump_fns::count_rows(&mut tx).await?;
        tx.commit().await?;
        Ok(counts)
    }

    async fn stored_bytes(&self) -> StoreResult<i64> {
        // Files are stored once per digest, however many rows name them.
        let bytes: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM \
             (SELECT sha256, MAX(size) AS size FROM packages GROUP BY sha256) AS files",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(bytes)
    }

    async fn import(&self, dump: &Dump) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // Nobody else writes until the copy commits, so the database stays empty but for it.
        sqlx::query(
            "LOCK TABLE users, owners, owner_members, tokens, signing_keys, repositories, \
             packages, indexes, owner_keyrings, upstreams, virtuals, served_history \
             IN SHARE ROW EXCLUSIVE MODE",
        )
        .execute(&mut *tx)
        .await?;
        dump_fns::import_rows(&mut tx, dump).await?;
        // Rows inserted with their ids leave the identity sequences where they were: move
        // each past the largest copied id (repositories also past every id the source ever
        // handed out), so that the next row takes a fresh id.
        for table in [
            "users",
            "owners",
            "tokens",
            "packages",
            "signing_keys",
            "webhooks",
            "served_history",
        ] {
            sqlx::query(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                 COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
            ))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "SELECT setval(pg_get_serial_sequence('repositories', 'id'), \
             GREATEST(COALESCE((SELECT MAX(id) FROM repositories), 0), $1) + 1, false)",
        )
        .bind(dump.last_repository_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // Advisory locks between the instances sharing this database.

    async fn lock_index_build(&self, repository_id: i64) -> StoreResult<StoreLock> {
        self.advisory_lock(index_build_key(repository_id), LockMode::Exclusive)
            .await
    }

    async fn lock_blob(&self, sha256: &str, mode: LockMode) -> StoreResult<StoreLock> {
        self.advisory_lock(blob_key(sha256), mode).await
    }

    async fn lock_retention(&self, repository_id: i64) -> StoreResult<StoreLock> {
        self.advisory_lock(
            named_key(&format!("alpine-registry retention {repository_id}")),
            LockMode::Exclusive,
        )
        .await
    }

    async fn try_lock_retention_pass(&self) -> StoreResult<Option<StoreLock>> {
        let mut lock = AdvisoryLock {
            connection: Some(self.locks.acquire().await?),
        };
        let connection = lock.connection.as_mut().expect("just acquired");
        sqlx::query("BEGIN").execute(&mut **connection).await?;
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(named_key("alpine-registry retention pass"))
            .fetch_one(&mut **connection)
            .await?;
        // Not taken: dropping the guard ends the transaction.
        Ok(taken.then(|| StoreLock::holding(lock)))
    }
}
