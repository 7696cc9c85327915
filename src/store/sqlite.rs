//! The SQLite backend of `Store`.
//!
//! Writers go through a one-connection pool and `BEGIN IMMEDIATE`, so write transactions
//! queue instead of failing with SQLITE_BUSY; readers use their own pool and see WAL
//! snapshots. `synchronous = FULL`: a committed row survives a crash or power loss.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use super::audit;
use super::history;
use super::keyring;
use super::keys;
use super::read_cache::{self, ReadCache};
use super::upstream;
use super::webhooks;
use super::*;
use crate::clock::SharedClock;

mod catalog;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
    clock: SharedClock,
    /// The download path's reads; every write below that changes what it reads raises
    /// its epoch after committing.
    cache: Arc<ReadCache>,
}

fn repository_gone(repository_id: i64) -> StoreError {
    StoreError::NotFound(format!("repository {repository_id} no longer exists"))
}

async fn repository_id(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    repo: &RepoRef,
) -> StoreResult<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM repositories WHERE owner_id = ? AND branch = ? AND name = ?",
    )
    .bind(repo.owner_id)
    .bind(&repo.branch)
    .bind(&repo.repository)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Inserts a repository row under an id never used before (migration 0004: SQLite would
/// otherwise give a removed newest repository's id to the next one). Conflict when it
/// exists.
async fn insert_repository(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    repo: &RepoRef,
) -> StoreResult<i64> {
    let id: i64 = sqlx::query_scalar("INSERT INTO repository_ids DEFAULT VALUES RETURNING id")
        .fetch_one(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM repository_ids")
        .execute(&mut **tx)
        .await?;
    sqlx::query("INSERT INTO repositories (id, owner_id, branch, name) VALUES (?, ?, ?, ?)")
        .bind(id)
        .bind(repo.owner_id)
        .bind(&repo.branch)
        .bind(&repo.repository)
        .execute(&mut **tx)
        .await
        .map_err(|e| conflict_or(e, || "the repository already exists".to_string()))?;
    Ok(id)
}

/// Unique violations are conflicts, reported in the caller's words.
fn conflict_or(err: sqlx::Error, message: impl FnOnce() -> String) -> StoreError {
    match &err {
        sqlx::Error::Database(db)
            if db.is_unique_violation() || db.message().contains("regardless of case") =>
        {
            StoreError::Conflict(message())
        }
        _ => StoreError::Database(err),
    }
}

fn role(row: &SqliteRow, column: &str) -> StoreResult<Role> {
    let text: String = row.try_get(column)?;
    Role::from_str(&text).map_err(|e| StoreError::Database(sqlx::Error::Decode(e.into())))
}

fn user_from(row: &SqliteRow) -> StoreResult<User> {
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        is_admin: row.try_get("is_admin")?,
        password_hash: row.try_get("password_hash")?,
    })
}

fn key_from(row: &SqliteRow) -> StoreResult<StoredKey> {
    Ok(StoredKey {
        key_name: row.try_get("key_name")?,
        private_pem: row.try_get("private_pem")?,
        public_pem: row.try_get("public_pem")?,
    })
}

fn owner_from(row: &SqliteRow) -> StoreResult<Owner> {
    Ok(Owner {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        is_private: row.try_get("is_private")?,
        is_org: row.try_get("is_org")?,
    })
}

fn token_from(row: &SqliteRow) -> StoreResult<TokenRecord> {
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

fn session_from(row: &SqliteRow) -> StoreResult<SessionRecord> {
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

fn package_from(row: &SqliteRow) -> StoreResult<Package> {
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

fn repository_from(row: &SqliteRow) -> StoreResult<Repository> {
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
fn index_entry_from(row: &SqliteRow) -> StoreResult<IndexEntry> {
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

/// When an index became current; rows from before milliseconds were kept fall back to
/// the end of their second.
const INDEX_MODIFIED_MS: &str = "COALESCE(modified_ms, built_at * 1000 + 999) AS modified_ms";

/// The `Packages.adb` of an index row (None in a row written before it was rendered).
fn stored_adb(row: &sqlx::sqlite::SqliteRow) -> StoreResult<Option<(bytes::Bytes, String)>> {
    let content: Option<Vec<u8>> = row.try_get("adb")?;
    let sha256: Option<String> = row.try_get("adb_sha256")?;
    Ok(content.zip(sha256).map(|(c, s)| (bytes::Bytes::from(c), s)))
}

/// Finds the package served at `{arch}/{filename}`, preferring the exact architecture.
const PACKAGE_LOOKUP: &str = "FROM packages p JOIN repositories r ON r.id = p.repository_id \
     WHERE r.owner_id = ? AND r.branch = ? AND r.name = ? AND p.filename = ? \
     AND p.arch IN (?, 'noarch') ORDER BY p.arch = 'noarch' LIMIT 1";

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` and applies the migrations; rows
    /// are dated by `clock`.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        clock: SharedClock,
    ) -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .connect_with(options.clone().read_only(true))
            .await?;
        // Commits by other processes (the CLI on the same database) are seen through a
        // connection of its own: its data_version moves when anyone else commits.
        let watcher = Arc::new(tokio::sync::Mutex::new(
            sqlx::ConnectOptions::connect(&options.read_only(true)).await?,
        ));
        let cache = Arc::new(ReadCache::new(Box::new(move || {
            let watcher = watcher.clone();
            Box::pin(async move {
                let mut connection = watcher.lock().await;
                sqlx::query_scalar::<_, i64>("PRAGMA data_version")
                    .fetch_one(&mut *connection)
                    .await
                    .ok()
            })
        })));
        cache.check_version().await;
        read_cache::watch(&cache);
        Ok(SqliteStore {
            reader,
            writer,
            clock,
            cache,
        })
    }

    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// The package rows of an owner, for `release_blobs`.
const OWNER_PACKAGES: &str = "repository_id IN (SELECT id FROM repositories WHERE owner_id = ?)";

/// Raises the wanted generation of every repository of the owner (its key set changed);
/// returns them.
async fn bump_owner_repositories(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
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
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    entry: Option<&AuditEntry>,
) -> StoreResult<()> {
    if let Some(entry) = entry {
        audit::bind_entry!(sqlx::query(audit::INSERT), entry)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

webhooks::outbox_functions!(sqlx::Sqlite);

/// Records that the package rows `rows` selects (with `id` bound) lose their blobs'
/// reference at `now_ms`; called in the transaction that deletes them, before it does.
/// In digest order, so that two such transactions lock shared rows in the same order.
async fn release_blobs(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    rows: &str,
    id: i64,
    now_ms: i64,
) -> StoreResult<()> {
    sqlx::query(&format!(
        "INSERT INTO blob_releases (sha256, released_ms) \
         SELECT DISTINCT sha256, ? FROM packages WHERE {rows} \
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
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    rows: &str,
    id: i64,
    now_ms: i64,
) -> StoreResult<()> {
    for table in ["upstream_files", "served_history"] {
        sqlx::query(&format!(
            "INSERT INTO blob_releases (sha256, released_ms) \
             SELECT DISTINCT sha256, ? FROM {table} WHERE sha256 IS NOT NULL AND {rows} \
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
    crate::store::upstream::upstream_functions!(sqlx::Sqlite);
}

mod virtual_fns {
    use crate::store::{StoreError, StoreResult};
    crate::store::virtuals::virtual_functions!(sqlx::Sqlite);
}

mod history_fns {
    use crate::store::{StoreError, StoreResult};
    crate::store::history::history_functions!(sqlx::Sqlite);
}

mod dump_fns {
    crate::store::dump::dump_functions!(sqlx::Sqlite);
}

#[async_trait]
impl Store for SqliteStore {
    fn read_epoch(&self) -> Option<u64> {
        Some(self.cache.epoch())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn count_users(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.reader)
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
        let mut tx = self.begin_write().await?;
        let user_id: i64 = sqlx::query_scalar(
            "INSERT INTO users (name, password_hash, is_admin, created_at) VALUES (?, ?, ?, ?) \
             RETURNING id",
        )
        .bind(name)
        .bind(password_hash)
        .bind(is_admin)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, || format!("user {name:?} already exists")))?;
        let owner_id: i64 = sqlx::query_scalar(
            "INSERT INTO owners (name, is_private, is_org, created_at) VALUES (?, 0, 0, ?) \
             RETURNING id",
        )
        .bind(name)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, || format!("an owner named {name:?} already exists")))?;
        sqlx::query("INSERT INTO owner_members (owner_id, user_id, role) VALUES (?, ?, 'admin')")
            .bind(owner_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        self.cache.changed();
        Ok(User {
            id: user_id,
            name: name.to_string(),
            is_admin,
            password_hash: password_hash.map(str::to_string),
        })
    }

    async fn user_by_name(&self, name: &str) -> StoreResult<Option<User>> {
        sqlx::query("SELECT id, name, password_hash, is_admin FROM users WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.reader)
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
        let mut tx = self.begin_write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO owners (name, is_private, is_org, created_at) VALUES (?, ?, ?, ?) \
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
        self.cache.changed();
        Ok(Owner {
            id,
            name: name.to_string(),
            is_private,
            is_org,
        })
    }

    async fn owner_by_name(&self, name: &str) -> StoreResult<Option<Owner>> {
        let ticket = match self.cache.owner(name) {
            Ok(hit) => return Ok(hit),
            Err(ticket) => ticket,
        };
        let found = sqlx::query("SELECT id, name, is_private, is_org FROM owners WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(owner_from)
            .transpose()?;
        // Another process may have committed before this read: what is kept from
        // before goes before this answer is given.
        self.cache.check_version().await;
        self.cache.put_owner(ticket, name, found.clone());
        Ok(found)
    }

    async fn set_member(
        &self,
        owner_id: i64,
        user_id: i64,
        role: Role,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO owner_members (owner_id, user_id, role) VALUES (?, ?, ?) \
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
        sqlx::query("SELECT role FROM owner_members WHERE owner_id = ? AND user_id = ?")
            .bind(owner_id)
            .bind(user_id)
            .fetch_optional(&self.reader)
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
        let mut tx = self.begin_write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO tokens (user_id, token_hash, prefix, scope, owner_id, expires_at, \
             created_at, label) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
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
        sqlx::query(&format!("{TOKEN_SELECT} WHERE t.token_hash = ?"))
            .bind(token_hash)
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(token_from)
            .transpose()
    }

    async fn list_tokens(&self, user_id: Option<i64>) -> StoreResult<Vec<TokenRecord>> {
        sqlx::query(&format!(
            "{TOKEN_SELECT} WHERE ?1 IS NULL OR t.user_id = ?1 ORDER BY t.id"
        ))
        .bind(user_id)
        .fetch_all(&self.reader)
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
        let mut tx = self.begin_write().await?;
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
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
            .fetch_optional(&self.reader)
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
        // First writer wins (writes are serialised); everyone else adopts its key.
        let mut tx = self.begin_write().await?;
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
            .fetch_all(&self.reader)
            .await?)
    }

    async fn active_key_ids(&self, owner_id: i64) -> StoreResult<Vec<i64>> {
        Ok(sqlx::query_scalar(keys::ACTIVE_IDS)
            .bind(owner_id)
            .fetch_all(&self.reader)
            .await?)
    }

    async fn add_signing_key(
        &self,
        owner_id: i64,
        key: StoredKey,
        max_active: i64,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Vec<Repository>> {
        let mut tx = self.begin_write().await?;
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
        self.cache.changed();
        Ok(repositories)
    }

    async fn retire_signing_key(
        &self,
        owner_id: i64,
        key_name: &str,
        now: i64,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Retirement> {
        let mut tx = self.begin_write().await?;
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
        self.cache.changed();
        Ok(Retirement::Retired(repositories))
    }

    async fn keyring_enabled(&self, owner_id: i64) -> StoreResult<Option<bool>> {
        Ok(sqlx::query_scalar(keyring::ENABLED)
            .bind(owner_id)
            .fetch_optional(&self.reader)
            .await?)
    }

    async fn set_keyring_enabled(
        &self,
        owner_id: i64,
        enabled: bool,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
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
        sqlx::query(
            "SELECT id, name, is_private, is_org FROM owners \
             WHERE id NOT IN (SELECT owner_id FROM signing_keys) ORDER BY id",
        )
        .fetch_all(&self.reader)
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
        let mut tx = self.begin_write().await?;
        // Decided under the write lock, in the transaction of the insert: a repository
        // removed after any earlier check is missing here, and is only created again when
        // the caller allows it.
        let (repository_id, repository_created) = match repository_id(&mut tx, repo).await? {
            Some(id) => (id, false),
            None if create_repository => (insert_repository(&mut tx, repo).await?, true),
            None => return Err(StoreError::NotFound("no such repository".into())),
        };
        // noarch and concrete architectures share one download path, so the same name and
        // version may exist either as noarch or under concrete architectures, not both.
        let clash: Option<String> = sqlx::query_scalar(
            "SELECT arch FROM packages WHERE repository_id = ? AND name = ? AND version = ? \
             AND ((? = 'noarch') <> (arch = 'noarch')) LIMIT 1",
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
            "UPDATE repositories SET wanted_gen = wanted_gen + 1 WHERE id = ? \
             RETURNING wanted_gen",
        )
        .bind(repository_id)
        .fetch_one(&mut *tx)
        .await?;
        let row = sqlx::query(&format!(
            "INSERT INTO packages (repository_id, arch, name, version, filename, checksum, \
             sha256, size, stanza, created_at, modified_ms, generation) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {}",
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
        self.cache.changed();
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
        let ticket = match self.cache.package(repo, arch, filename) {
            Ok(hit) => return Ok(hit),
            Err(ticket) => ticket,
        };
        let found = sqlx::query(&format!("SELECT {PACKAGE_COLUMNS} {PACKAGE_LOOKUP}"))
            .bind(repo.owner_id)
            .bind(&repo.branch)
            .bind(&repo.repository)
            .bind(filename)
            .bind(arch)
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(package_from)
            .transpose()?;
        // Another process may have committed before this read: what is kept from
        // before goes before this answer is given.
        self.cache.check_version().await;
        self.cache
            .put_package(ticket, repo, arch, filename, found.clone());
        Ok(found)
    }

    async fn package_stanza(&self, package_id: i64) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(super::PACKAGE_STANZA)
            .bind(package_id)
            .fetch_optional(&self.reader)
            .await?)
    }

    async fn delete_package(
        &self,
        repo: &RepoRef,
        arch: &str,
        filename: &str,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Option<(Package, i64)>> {
        let mut tx = self.begin_write().await?;
        let Some(row) = sqlx::query(&format!("SELECT {PACKAGE_COLUMNS} {PACKAGE_LOOKUP}"))
            .bind(repo.owner_id)
            .bind(&repo.branch)
            .bind(&repo.repository)
            .bind(filename)
            .bind(arch)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let package = package_from(&row)?;
        release_blobs(&mut tx, "id = ?", package.id, self.clock.unix_ms()).await?;
        sqlx::query("DELETE FROM packages WHERE id = ?")
            .bind(package.id)
            .execute(&mut *tx)
            .await?;
        let generation: i64 = sqlx::query_scalar(
            "UPDATE repositories SET wanted_gen = wanted_gen + 1 WHERE id = ? \
             RETURNING wanted_gen",
        )
        .bind(package.repository_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO package_removals (repository_id, generation, package_id) \
             VALUES (?, ?, ?)",
        )
        .bind(package.repository_id)
        .bind(generation)
        .bind(package.id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM package_removals WHERE repository_id = ? AND generation < ?")
            .bind(package.repository_id)
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
        self.cache.changed();
        Ok(Some((package, generation)))
    }

    async fn set_pinned(
        &self,
        package_id: i64,
        pinned: bool,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
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
        self.cache.changed();
        Ok(changed)
    }

    async fn retained_files(&self, repository_id: i64) -> StoreResult<Vec<RetainedFile>> {
        sqlx::query(&format!(
            "SELECT {PACKAGE_COLUMNS}, p.pinned FROM packages p WHERE p.repository_id = $1 \
             ORDER BY p.id"
        ))
        .bind(repository_id)
        .fetch_all(&self.reader)
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
        let mut tx = self.begin_write().await?;
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
        self.cache.changed();
        Ok(())
    }

    async fn retention_rules(&self, owner_id: Option<i64>) -> StoreResult<Vec<RetentionRule>> {
        let sql = super::retention::rules_sql(owner_id.is_some());
        let mut query = sqlx::query_as::<_, super::retention::RuleRow>(&sql);
        if let Some(owner_id) = owner_id {
            query = query.bind(owner_id);
        }
        Ok(query
            .fetch_all(&self.reader)
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
        let mut tx = self.begin_write().await?;
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
        self.cache.changed();
        Ok(removed)
    }

    async fn blob_referenced(&self, sha256: &str) -> StoreResult<bool> {
        Ok(sqlx::query_scalar(history::BLOB_REFERENCED)
            .bind(sha256)
            .fetch_one(&self.writer)
            .await?)
    }

    async fn referenced_blobs(&self) -> StoreResult<std::collections::HashSet<String>> {
        Ok(sqlx::query_scalar(history::REFERENCED_BLOBS)
            .fetch_all(&self.writer)
            .await?
            .into_iter()
            .collect())
    }

    async fn released_blobs(
        &self,
        since_ms: i64,
    ) -> StoreResult<std::collections::HashSet<String>> {
        Ok(
            sqlx::query_scalar("SELECT sha256 FROM blob_releases WHERE released_ms >= ?")
                .bind(since_ms)
                .fetch_all(&self.writer)
                .await?
                .into_iter()
                .collect(),
        )
    }

    async fn blob_released_since(&self, sha256: &str, since_ms: i64) -> StoreResult<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM blob_releases WHERE sha256 = ? \
             AND released_ms >= ?)",
        )
        .bind(sha256)
        .bind(since_ms)
        .fetch_one(&self.writer)
        .await?)
    }

    async fn forget_releases(&self, before_ms: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM blob_releases WHERE released_ms < ?")
            .bind(before_ms)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn list_packages(&self, repository_id: i64) -> StoreResult<Vec<Package>> {
        sqlx::query(&format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages p WHERE p.repository_id = ? \
             ORDER BY p.arch, p.filename"
        ))
        .bind(repository_id)
        .fetch_all(&self.reader)
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
        let ticket = match self.cache.repository(repo) {
            Ok(hit) => return Ok(hit),
            Err(ticket) => ticket,
        };
        let found = sqlx::query(&format!(
            "{REPOSITORY_SELECT} WHERE r.owner_id = ? AND r.branch = ? AND r.name = ?"
        ))
        .bind(repo.owner_id)
        .bind(&repo.branch)
        .bind(&repo.repository)
        .fetch_optional(&self.reader)
        .await?
        .as_ref()
        .map(repository_from)
        .transpose()?;
        // Another process may have committed before this read: what is kept from
        // before goes before this answer is given.
        self.cache.check_version().await;
        self.cache.put_repository(ticket, repo, found.clone());
        Ok(found)
    }

    async fn repository_by_id(&self, id: i64) -> StoreResult<Option<Repository>> {
        // From the writer: the builder must see the generation it is about to compare.
        sqlx::query(&format!("{REPOSITORY_SELECT} WHERE r.id = ?"))
            .bind(id)
            .fetch_optional(&self.writer)
            .await?
            .as_ref()
            .map(repository_from)
            .transpose()
    }

    async fn has_noarch(&self, repository_id: i64) -> StoreResult<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM packages WHERE repository_id = ? AND arch = 'noarch')",
        )
        .bind(repository_id)
        .fetch_one(&self.reader)
        .await?)
    }

    async fn is_empty_repository(&self, repository_id: i64) -> StoreResult<bool> {
        Ok(sqlx::query_scalar(
            "SELECT NOT EXISTS \
             (SELECT 1 FROM packages WHERE repository_id = ?)",
        )
        .bind(repository_id)
        .fetch_one(&self.reader)
        .await?)
    }

    async fn list_repositories(
        &self,
        owner_id: Option<i64>,
        branch: Option<&str>,
        repository: Option<&str>,
    ) -> StoreResult<Vec<Repository>> {
        sqlx::query(&format!(
            "{REPOSITORY_SELECT} WHERE (?1 IS NULL OR r.owner_id = ?1) \
             AND (?2 IS NULL OR r.branch = ?2) AND (?3 IS NULL OR r.name = ?3) ORDER BY r.id"
        ))
        .bind(owner_id)
        .bind(branch)
        .bind(repository)
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(repository_from)
        .collect()
    }

    async fn stale_repositories(&self) -> StoreResult<Vec<Repository>> {
        sqlx::query(&format!(
            "{REPOSITORY_SELECT} WHERE r.built_gen < r.wanted_gen ORDER BY r.id"
        ))
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(repository_from)
        .collect()
    }

    async fn bump_generation(&self, repository_id: i64) -> StoreResult<i64> {
        let generation: Option<i64> = sqlx::query_scalar(
            "UPDATE repositories SET wanted_gen = wanted_gen + 1 WHERE id = ? \
             RETURNING wanted_gen",
        )
        .bind(repository_id)
        .fetch_optional(&self.writer)
        .await?;
        self.cache.changed();
        generation.ok_or_else(|| StoreError::NotFound("no such repository".into()))
    }

    async fn index_changes(&self, repository_id: i64, since: i64) -> StoreResult<IndexChanges> {
        // One snapshot: the generation, the rows and the removals belong together.
        let mut tx = self.reader.begin().await?;
        let (generation, built_generation): (i64, i64) =
            sqlx::query_as("SELECT wanted_gen, built_gen FROM repositories WHERE id = ?")
                .bind(repository_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| repository_gone(repository_id))?;
        let added = sqlx::query(
            "SELECT id, arch, name, version, checksum, stanza FROM packages \
             WHERE repository_id = ? AND generation > ?",
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
             WHERE repository_id = ? AND generation > ?",
        )
        .bind(repository_id)
        .bind(since)
        .fetch_all(&mut *tx)
        .await?;
        let served_arches =
            sqlx::query_scalar("SELECT arch FROM indexes WHERE repository_id = ? ORDER BY arch")
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
        let mut tx = self.begin_write().await?;
        // A build that started before its repository was removed publishes nothing. Ids
        // are never reused, so a later repository cannot be mistaken for it.
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM repositories WHERE id = ?)")
                .bind(repository_id)
                .fetch_one(&mut *tx)
                .await?;
        if !exists {
            return Err(repository_gone(repository_id));
        }
        let mut published = Vec::with_capacity(indexes.len());
        for index in &indexes {
            let current = sqlx::query(&format!(
                "SELECT generation, sha256, built_at, {INDEX_MODIFIED_MS} FROM indexes \
                 WHERE repository_id = ? AND arch = ?"
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
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
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
                "DELETE FROM indexes WHERE repository_id = ? AND arch = ? AND generation <= ?",
            )
            .bind(repository_id)
            .bind(arch)
            .bind(generation)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE repositories SET built_gen = MAX(built_gen, ?) WHERE id = ?")
            .bind(generation)
            .bind(repository_id)
            .execute(&mut *tx)
            .await?;
        enqueue_index_events(&mut tx, repository_id, generation, &published, now_ms).await?;
        tx.commit().await?;
        self.cache.changed();
        Ok(())
    }

    async fn index(&self, repository_id: i64, arch: &str) -> StoreResult<Option<StoredIndex>> {
        let ticket = match self.cache.index(repository_id, arch) {
            Ok(hit) => return Ok(hit),
            Err(ticket) => ticket,
        };
        let row = sqlx::query(&format!(
            "SELECT generation, content, sha256, built_at, {INDEX_MODIFIED_MS}, adb, adb_sha256 \
                 FROM indexes WHERE repository_id = ? AND arch = ?"
        ))
        .bind(repository_id)
        .bind(arch)
        .fetch_optional(&self.reader)
        .await?;
        let found: Option<StoredIndex> = row
            .map(|row| -> StoreResult<StoredIndex> {
                Ok(StoredIndex {
                    generation: row.try_get("generation")?,
                    content: bytes::Bytes::from(row.try_get::<Vec<u8>, _>("content")?),
                    sha256: row.try_get("sha256")?,
                    built_at: row.try_get("built_at")?,
                    modified_ms: row.try_get("modified_ms")?,
                    adb: stored_adb(&row)?,
                })
            })
            .transpose()?;
        // Another process may have committed before this read: what is kept from
        // before goes before this answer is given.
        self.cache.check_version().await;
        self.cache
            .put_index(ticket, repository_id, arch, found.clone());
        Ok(found)
    }

    async fn create_repository(
        &self,
        repo: &RepoRef,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Repository> {
        let mut tx = self.begin_write().await?;
        let id = insert_repository(&mut tx, repo).await?;
        let row = sqlx::query(&format!("{REPOSITORY_SELECT} WHERE r.id = ?"))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let created = repository_from(&row)?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        self.cache.changed();
        Ok(created)
    }

    async fn create_remote_repository(
        &self,
        repo: &RepoRef,
        upstream: &Upstream,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Repository> {
        let mut tx = self.begin_write().await?;
        let id = insert_repository(&mut tx, repo).await?;
        sqlx::query(upstream::INSERT_UPSTREAM)
            .bind(id)
            .bind(&upstream.url)
            .bind(upstream::keys_text(&upstream.keys))
            .bind(upstream.refresh_secs)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(&format!("{REPOSITORY_SELECT} WHERE r.id = ?"))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let created = repository_from(&row)?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        self.cache.changed();
        Ok(created)
    }

    async fn upstream(&self, repository_id: i64) -> StoreResult<Option<Upstream>> {
        upstream_fns::upstream(&self.writer, repository_id).await
    }

    async fn remote_repository_ids(&self) -> StoreResult<Vec<i64>> {
        upstream_fns::remote_repository_ids(&self.writer).await
    }

    async fn upstream_index(
        &self,
        repository_id: i64,
        arch: &str,
    ) -> StoreResult<Option<UpstreamIndex>> {
        upstream_fns::upstream_index(&self.writer, repository_id, arch).await
    }

    async fn save_upstream_index(&self, index: &UpstreamIndex) -> StoreResult<()> {
        upstream_fns::save_upstream_index(&self.writer, index).await
    }

    async fn upstream_checked(
        &self,
        repository_id: i64,
        arch: &str,
        checked_ms: i64,
        verified: bool,
        error: Option<&str>,
    ) -> StoreResult<()> {
        upstream_fns::upstream_checked(
            &self.writer,
            repository_id,
            arch,
            checked_ms,
            verified,
            error,
        )
        .await
    }

    async fn upstream_freshness(&self, repository_id: i64) -> StoreResult<Vec<UpstreamFreshness>> {
        upstream_fns::upstream_freshness(&self.writer, repository_id).await
    }

    async fn stale_upstream_indexes(&self) -> StoreResult<i64> {
        upstream_fns::stale_upstream_indexes(&self.writer).await
    }

    async fn upstream_file(
        &self,
        repository_id: i64,
        arch: &str,
        filename: &str,
    ) -> StoreResult<Option<UpstreamFile>> {
        upstream_fns::upstream_file(&self.writer, repository_id, arch, filename).await
    }

    async fn insert_upstream_file(&self, file: &UpstreamFile) -> StoreResult<()> {
        upstream_fns::insert_upstream_file(&self.writer, file).await
    }

    async fn upstream_files(&self, repository_id: i64) -> StoreResult<Vec<UpstreamFile>> {
        upstream_fns::upstream_files(&self.writer, repository_id).await
    }

    async fn create_virtual_repository(
        &self,
        repo: &RepoRef,
        members: &[i64],
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Repository> {
        let mut tx = self.begin_write().await?;
        let id = insert_repository(&mut tx, repo).await?;
        virtual_fns::insert_virtual(&mut tx, id, members).await?;
        let row = sqlx::query(&format!("{REPOSITORY_SELECT} WHERE r.id = ?"))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let created = repository_from(&row)?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        self.cache.changed();
        Ok(created)
    }

    async fn virtual_members(&self, repository_id: i64) -> StoreResult<Option<Vec<i64>>> {
        virtual_fns::virtual_members(&self.writer, repository_id).await
    }

    async fn virtual_index(
        &self,
        repository_id: i64,
        arch: &str,
    ) -> StoreResult<Option<VirtualIndex>> {
        virtual_fns::virtual_index(&self.writer, repository_id, arch).await
    }

    async fn save_virtual_index(
        &self,
        index: &VirtualIndex,
        listing: &[ServedFile],
    ) -> StoreResult<Option<HistoryChange>> {
        let mut tx = self.begin_write().await?;
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
        let mut tx = self.begin_write().await?;
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
        history_fns::served_files(&self.writer, repository_id, arch, at_ms).await
    }

    async fn served_file(
        &self,
        repository_id: i64,
        arch: &str,
        filename: &str,
        at_ms: Option<i64>,
    ) -> StoreResult<Option<ServedRow>> {
        history_fns::served_file(&self.writer, repository_id, arch, filename, at_ms).await
    }

    async fn served_span(
        &self,
        repository_id: i64,
        arch: &str,
        at_ms: i64,
    ) -> StoreResult<(Option<i64>, Option<i64>)> {
        history_fns::served_span(&self.writer, repository_id, arch, at_ms).await
    }

    async fn served_history(&self, repository_id: i64) -> StoreResult<Vec<ServedRow>> {
        history_fns::served_history(&self.writer, repository_id).await
    }

    async fn create_snapshot(
        &self,
        repository_id: i64,
        snapshot: &Snapshot,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
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
        let mut tx = self.begin_write().await?;
        let deleted = history_fns::delete_snapshot(&mut tx, repository_id, name).await?;
        if deleted {
            record(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn snapshots(&self, repository_id: i64) -> StoreResult<Vec<Snapshot>> {
        history_fns::snapshots(&self.writer, repository_id).await
    }

    async fn snapshot(&self, repository_id: i64, name: &str) -> StoreResult<Option<Snapshot>> {
        history_fns::snapshot(&self.writer, repository_id, name).await
    }

    async fn repository_summaries(
        &self,
        owner_id: Option<i64>,
    ) -> StoreResult<Vec<RepositorySummary>> {
        // One read transaction: counts and architectures from the same snapshot.
        let mut tx = self.reader.begin().await?;
        let rows = sqlx::query(
            "SELECT r.id, o.name AS owner_name, r.branch, r.name, \
             (SELECT COUNT(*) FROM packages p WHERE p.repository_id = r.id) AS packages, \
             (SELECT MAX(COALESCE(p.modified_ms, p.created_at * 1000 + 999)) FROM packages p \
              WHERE p.repository_id = r.id) AS last_publish_ms, \
             CASE WHEN EXISTS (SELECT 1 FROM upstreams u WHERE u.repository_id = r.id) \
             THEN 'remote' WHEN EXISTS (SELECT 1 FROM virtuals v WHERE v.repository_id = r.id) \
             THEN 'virtual' ELSE 'hosted' END AS kind \
             FROM repositories r JOIN owners o ON o.id = r.owner_id \
             WHERE ?1 IS NULL OR r.owner_id = ?1 ORDER BY o.name, r.branch, r.name",
        )
        .bind(owner_id)
        .fetch_all(&mut *tx)
        .await?;
        // Served indexes, and noarch for repositories holding noarch packages.
        let arch_rows = sqlx::query(
            "SELECT repository_id, arch FROM indexes WHERE repository_id IN \
             (SELECT id FROM repositories WHERE ?1 IS NULL OR owner_id = ?1) \
             UNION SELECT DISTINCT repository_id, arch FROM packages WHERE arch = 'noarch' \
             AND repository_id IN (SELECT id FROM repositories WHERE ?1 IS NULL OR owner_id = ?1) \
             UNION SELECT repository_id, arch FROM upstream_indexes WHERE repository_id IN \
             (SELECT id FROM repositories WHERE ?1 IS NULL OR owner_id = ?1) \
             UNION SELECT repository_id, arch FROM virtual_indexes WHERE repository_id IN \
             (SELECT id FROM repositories WHERE ?1 IS NULL OR owner_id = ?1)",
        )
        .bind(owner_id)
        .fetch_all(&mut *tx)
        .await?;
        let member_rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT m.repository_id, o.name || '/' || r.branch || '/' || r.name \
             FROM virtual_members m JOIN repositories r ON r.id = m.member_id \
             JOIN owners o ON o.id = r.owner_id WHERE m.repository_id IN \
             (SELECT id FROM repositories WHERE ?1 IS NULL OR owner_id = ?1) \
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
        let mut tx = self.begin_write().await?;
        let Some(id) = repository_id(&mut tx, repo).await? else {
            return Ok(None);
        };
        virtual_fns::refuse_member_removal(&mut tx, id).await?;
        let packages: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM packages WHERE repository_id = ?")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        let arches: Vec<String> =
            sqlx::query_scalar("SELECT arch FROM indexes WHERE repository_id = ? ORDER BY arch")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        release_blobs(&mut tx, "repository_id = ?", id, self.clock.unix_ms()).await?;
        release_upstream_blobs(&mut tx, "repository_id = ?", id, self.clock.unix_ms()).await?;
        // Packages and indexes go with the row (ON DELETE CASCADE; every connection is
        // opened with foreign keys on), so every index disappears in this one commit.
        sqlx::query("DELETE FROM repositories WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        self.cache.changed();
        Ok(Some(RemovedRepository { packages, arches }))
    }

    async fn owner_by_name_ignoring_case(&self, name: &str) -> StoreResult<Option<Owner>> {
        sqlx::query(
            "SELECT id, name, is_private, is_org FROM owners WHERE name = ?1 COLLATE NOCASE \
             ORDER BY name = ?1 DESC, id LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&self.reader)
        .await?
        .as_ref()
        .map(owner_from)
        .transpose()
    }

    async fn user_by_name_ignoring_case(&self, name: &str) -> StoreResult<Option<User>> {
        sqlx::query(
            "SELECT id, name, password_hash, is_admin FROM users WHERE name = ?1 COLLATE NOCASE \
             ORDER BY name = ?1 DESC, id LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&self.reader)
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
              AND (t.expires_at IS NULL OR t.expires_at > ?)) AS active_tokens, \
             (SELECT COUNT(*) FROM owner_members m WHERE m.user_id = u.id) AS memberships \
             FROM users u ORDER BY u.name",
        )
        .bind(self.clock.unix_secs())
        .fetch_all(&self.reader)
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
        .fetch_all(&self.reader)
        .await?)
    }

    async fn list_members(&self, owner_id: i64) -> StoreResult<Vec<Member>> {
        let rows = sqlx::query(
            "SELECT m.user_id, u.name AS user_name, m.role FROM owner_members m \
             JOIN users u ON u.id = m.user_id WHERE m.owner_id = ? ORDER BY u.name",
        )
        .bind(owner_id)
        .fetch_all(&self.reader)
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
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM owner_members WHERE owner_id = ? AND user_id = ?")
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
        let mut tx = self.begin_write().await?;
        if let Some(owner_id) = namespace {
            release_blobs(&mut tx, OWNER_PACKAGES, owner_id, self.clock.unix_ms()).await?;
            release_upstream_blobs(&mut tx, OWNER_PACKAGES, owner_id, self.clock.unix_ms()).await?;
            sqlx::query("DELETE FROM owners WHERE id = ?")
                .bind(owner_id)
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound("the user no longer exists".into()));
        }
        record(&mut tx, audit).await?;
        tx.commit().await?;
        self.cache.changed();
        Ok(())
    }

    async fn delete_owner(&self, owner_id: i64, audit: Option<&AuditEntry>) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        release_blobs(&mut tx, OWNER_PACKAGES, owner_id, self.clock.unix_ms()).await?;
        release_upstream_blobs(&mut tx, OWNER_PACKAGES, owner_id, self.clock.unix_ms()).await?;
        let done = sqlx::query("DELETE FROM owners WHERE id = ?")
            .bind(owner_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound("the owner no longer exists".into()));
        }
        record(&mut tx, audit).await?;
        tx.commit().await?;
        self.cache.changed();
        Ok(())
    }

    async fn set_owner_private(
        &self,
        owner_id: i64,
        is_private: bool,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE owners SET is_private = ? WHERE id = ?")
            .bind(is_private)
            .bind(owner_id)
            .execute(&mut *tx)
            .await?;
        record(&mut tx, audit).await?;
        tx.commit().await?;
        self.cache.changed();
        Ok(())
    }

    async fn set_password(
        &self,
        user_id: i64,
        password_hash: Option<&str>,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
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
        sqlx::query("UPDATE tokens SET last_used_at = ? WHERE id = ?")
            .bind(now)
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn create_session(
        &self,
        session: NewSession<'_>,
        limits: SessionLimits,
    ) -> StoreResult<SessionAdmission> {
        let mut tx = self.begin_write().await?;
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
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(session_from)
            .transpose()
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<bool> {
        let done = sqlx::query(sessions::DELETE)
            .bind(id_hash)
            .execute(&self.writer)
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
            .fetch_all(&self.reader)
            .await?
            .into_iter()
            .map(audit::entry_from)
            .collect())
    }

    async fn prune_audit(&self, before_ms: i64) -> StoreResult<u64> {
        Ok(sqlx::query(audit::PRUNE)
            .bind(before_ms)
            .execute(&self.writer)
            .await?
            .rows_affected())
    }

    async fn create_webhook(
        &self,
        webhook: &NewWebhook,
        max_per_owner: i64,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Webhook> {
        let mut tx = self.begin_write().await?;
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
            .fetch_all(&self.reader)
            .await?)
    }

    async fn webhook(&self, id: i64) -> StoreResult<Option<Webhook>> {
        Ok(sqlx::query_as(&webhooks::select_by_id())
            .bind(id)
            .fetch_optional(&self.reader)
            .await?)
    }

    async fn delete_webhook(&self, id: i64, audit: Option<&AuditEntry>) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
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
            .fetch_all(&self.reader)
            .await?)
    }

    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>> {
        Ok(sqlx::query_as(&webhooks::claim(""))
            .bind(lease_until_ms)
            .bind(now_ms)
            .bind(limit)
            .fetch_all(&self.writer)
            .await?)
    }

    async fn finish_delivery(&self, id: i64, outcome: &AttemptOutcome) -> StoreResult<()> {
        webhooks::bind_outcome!(sqlx::query(webhooks::FINISH), id, outcome)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn prune_deliveries(&self, keep: i64) -> StoreResult<u64> {
        Ok(sqlx::query(webhooks::PRUNE)
            .bind(keep)
            .execute(&self.writer)
            .await?
            .rows_affected())
    }

    async fn prune_sessions(&self, now: i64) -> StoreResult<u64> {
        Ok(sqlx::query(sessions::PRUNE)
            .bind(now)
            .execute(&self.writer)
            .await?
            .rows_affected())
    }

    async fn count_sessions(&self, user_id: Option<i64>) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(sessions::COUNT)
            .bind(user_id)
            .fetch_one(&self.reader)
            .await?)
    }

    async fn auth_failures(&self, keys: [&[u8]; 2]) -> StoreResult<Vec<FailureCount>> {
        let rows: Vec<(Vec<u8>, i64, i64)> = sqlx::query_as(sessions::FAILURES)
            .bind(keys[0])
            .bind(keys[1])
            .fetch_all(&self.reader)
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
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn clear_auth_failures(&self, key: &[u8]) -> StoreResult<()> {
        sqlx::query(sessions::CLEAR_FAILURES)
            .bind(key)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn prune_auth_failures(&self, before_ms: i64) -> StoreResult<u64> {
        Ok(sqlx::query(sessions::PRUNE_FAILURES)
            .bind(before_ms)
            .execute(&self.writer)
            .await?
            .rows_affected())
    }

    async fn export(&self) -> StoreResult<Dump> {
        // One read transaction: a WAL snapshot, whatever writers do meanwhile.
        let mut tx = self.reader.begin().await?;
        // Migration 0004: repository ids come from the AUTOINCREMENT sequence of
        // repository_ids, which remembers removed repositories.
        let last_repository_id: i64 = sqlx::query_scalar(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence \
             WHERE name = 'repository_ids'), 0), COALESCE((SELECT MAX(id) FROM repositories), 0))",
        )
        .fetch_one(&mut *tx)
        .await?;
        let dump = dump_fns::export_rows(&mut tx, last_repository_id).await?;
        tx.commit().await?;
        Ok(dump)
    }

    async fn table_counts(&self) -> StoreResult<TableCounts> {
        let mut tx = self.reader.begin().await?;
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
        .fetch_one(&self.reader)
        .await?;
        Ok(bytes)
    }

    async fn import(&self, dump: &Dump) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        dump_fns::import_rows(&mut tx, dump).await?;
        // New repositories take ids above every copied one, removed ones included (the
        // AUTOINCREMENT sequence keeps the largest id ever inserted).
        let last = dump
            .repositories
            .iter()
            .map(|r| r.id)
            .fold(dump.last_repository_id, i64::max);
        if last > 0 {
            sqlx::query("INSERT INTO repository_ids (id) VALUES (?)")
                .bind(last)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM repository_ids")
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.cache.changed();
        Ok(())
    }

    // One process uses a SQLite database: its in-process locks are enough.

    async fn lock_index_build(&self, _repository_id: i64) -> StoreResult<StoreLock> {
        Ok(StoreLock::none())
    }

    async fn lock_blob(&self, _sha256: &str, _mode: LockMode) -> StoreResult<StoreLock> {
        Ok(StoreLock::none())
    }

    async fn lock_retention(&self, _repository_id: i64) -> StoreResult<StoreLock> {
        Ok(StoreLock::none())
    }

    async fn try_lock_retention_pass(&self) -> StoreResult<Option<StoreLock>> {
        Ok(Some(StoreLock::none()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open(dir: &std::path::Path, readers: u32) -> SqliteStore {
        let url = format!("sqlite://{}", dir.join("registry.db").display());
        SqliteStore::connect(&url, readers, crate::clock::system())
            .await
            .unwrap()
    }

    fn package(name: &str) -> NewPackage {
        NewPackage {
            arch: "x86_64".into(),
            name: name.into(),
            version: "1.0-r0".into(),
            filename: format!("{name}-1.0-r0.apk"),
            checksum: "Q1".into(),
            sha256: "00".repeat(32),
            size: 1,
            stanza: format!("P:{name}\n"),
        }
    }

    #[tokio::test]
    async fn every_connection_enforces_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 4).await;
        // Held at once, so each is a distinct connection of its pool.
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(store.reader.acquire().await.unwrap());
        }
        held.push(store.writer.acquire().await.unwrap());
        for connection in &mut held {
            let on: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(&mut **connection)
                .await
                .unwrap();
            assert_eq!(on, 1);
        }
    }

    #[tokio::test]
    async fn removal_takes_everything_and_ids_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 2).await;
        let owner = store.create_owner("acme", false, true, None).await.unwrap();
        let repo = RepoRef {
            owner_id: owner.id,
            branch: "edge".into(),
            repository: "main".into(),
        };
        let first = store
            .insert_package(&repo, package("a"), true, None)
            .await
            .unwrap();
        assert!(first.repository_created);
        let second = store
            .insert_package(&repo, package("b"), false, None)
            .await
            .unwrap();
        assert!(!second.repository_created);
        let id = first.package.repository_id;
        store
            .publish_indexes(
                id,
                second.generation,
                vec![RenderedIndex {
                    arch: "x86_64".into(),
                    content: b"index".to_vec(),
                    sha256: "11".repeat(32),
                    entries: 0,
                    signatures: Vec::new(),
                    adb: None,
                }],
                Vec::new(),
                1,
            )
            .await
            .unwrap();

        let removed = store.delete_repository(&repo, None).await.unwrap().unwrap();
        assert_eq!(removed.packages, 2);
        assert_eq!(removed.arches, ["x86_64"]);
        let left: (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM packages), (SELECT COUNT(*) FROM indexes)",
        )
        .fetch_one(&store.writer)
        .await
        .unwrap();
        assert_eq!(left, (0, 0));
        assert!(store
            .delete_repository(&repo, None)
            .await
            .unwrap()
            .is_none());

        // Without leave to create, the insert finds it missing and changes nothing.
        let refused = store.insert_package(&repo, package("c"), false, None).await;
        assert!(
            matches!(refused, Err(StoreError::NotFound(_))),
            "{refused:?}"
        );
        assert!(store.repository(&repo).await.unwrap().is_none());
        // A build that began before the removal publishes nothing.
        assert!(matches!(
            store.index_snapshot(id).await,
            Err(StoreError::NotFound(_))
        ));
        let late = store
            .publish_indexes(id, 9, Vec::new(), Vec::new(), 1)
            .await;
        assert!(matches!(late, Err(StoreError::NotFound(_))), "{late:?}");

        // The removed repository was the newest; its id is not handed out again.
        let again = store.create_repository(&repo, None).await.unwrap();
        assert!(again.id > id, "{} reused {id}", again.id);
        assert!(matches!(
            store.create_repository(&repo, None).await,
            Err(StoreError::Conflict(_))
        ));
    }
}
