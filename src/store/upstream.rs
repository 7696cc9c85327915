//! Remote repositories as stored: each one's upstream (URL, keys, refresh period), the
//! upstream's verified index of each architecture with the copy served (re-signed with the
//! owner's keys), and the package files fetched from upstream. Everything an instance
//! serves of a remote repository is read from here, so that every instance on one
//! database serves the same index and the same cached files. The SQL is the same text on
//! both backends (`$n` placeholders).

use serde::{Deserialize, Serialize};

/// A public key the upstream's indexes are signed with, under its apk key name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamKey {
    pub name: String,
    pub pem: String,
}

/// The upstream of a remote repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub repository_id: i64,
    /// The upstream repository's base URL: `{url}/{arch}/APKINDEX.tar.gz`.
    pub url: String,
    pub keys: Vec<UpstreamKey>,
    /// The index of an architecture is fetched again when it is older than this.
    pub refresh_secs: i64,
}

/// The upstream's index of one architecture: as fetched and verified, and as served.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UpstreamIndex {
    pub repository_id: i64,
    pub arch: String,
    /// The upstream's file, exactly as fetched (its own signatures included).
    pub content: Vec<u8>,
    pub sha256: String,
    /// The validators upstream gave it with, for conditional requests.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// When upstream last gave or confirmed (304) this index, Unix milliseconds.
    pub verified_ms: i64,
    /// When it was last asked, successfully or not.
    pub checked_ms: i64,
    /// Why the last attempt failed; None when it did not (the index is fresh).
    pub error: Option<String>,
    /// The same content signed with the owner's keys: what is served.
    pub signed: Vec<u8>,
    pub signed_sha256: String,
    /// The key names of `signed`'s signatures, comma-separated.
    pub signed_keys: String,
    /// When `signed` was made: its `Last-Modified`.
    pub signed_ms: i64,
}

/// How fresh one architecture's upstream index is, without its content.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct UpstreamFreshness {
    pub arch: String,
    /// When upstream last gave or confirmed the index, Unix milliseconds.
    pub verified_ms: i64,
    /// When upstream was last asked.
    pub checked_ms: i64,
    /// Why the last attempt failed (the index served is then the last verified one).
    pub error: Option<String>,
}

/// A package file fetched from upstream, checked and stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UpstreamFile {
    pub repository_id: i64,
    pub arch: String,
    pub filename: String,
    pub sha256: String,
    pub size: i64,
    /// The `C:` of the index entry it was checked against.
    pub checksum: String,
    pub stored_ms: i64,
}

pub(super) const INSERT_UPSTREAM: &str =
    "INSERT INTO upstreams (repository_id, url, keys, refresh_secs) VALUES ($1, $2, $3, $4)";

pub(super) const UPSTREAM: &str =
    "SELECT repository_id, url, keys, refresh_secs FROM upstreams WHERE repository_id = $1";

const INDEX_COLUMNS: &str = "repository_id, arch, content, sha256, etag, last_modified, \
     verified_ms, checked_ms, error, signed, signed_sha256, signed_keys, signed_ms";

/// Decodes the keys column.
pub(super) fn keys_from(text: &str) -> super::StoreResult<Vec<UpstreamKey>> {
    serde_json::from_str(text)
        .map_err(|e| super::StoreError::NotFound(format!("unreadable upstream keys: {e}")))
}

pub(super) fn keys_text(keys: &[UpstreamKey]) -> String {
    serde_json::to_string(keys).expect("keys serialise")
}

/// The functions behind the `Store` methods of remote repositories, for the backend `$db`
/// (a macro: the pool types of the two backends differ); each backend's methods call them
/// with its pool.
macro_rules! upstream_functions {
    ($db:ty) => {
        pub(super) async fn upstream(
            pool: &sqlx::Pool<$db>,
            repository_id: i64,
        ) -> StoreResult<Option<$crate::store::Upstream>> {
            let row: Option<(i64, String, String, i64)> =
                sqlx::query_as($crate::store::upstream::UPSTREAM)
                    .bind(repository_id)
                    .fetch_optional(pool)
                    .await?;
            row.map(|(repository_id, url, keys, refresh_secs)| {
                Ok($crate::store::Upstream {
                    repository_id,
                    url,
                    keys: $crate::store::upstream::keys_from(&keys)?,
                    refresh_secs,
                })
            })
            .transpose()
        }

        pub(super) async fn upstream_index(
            pool: &sqlx::Pool<$db>,
            repository_id: i64,
            arch: &str,
        ) -> StoreResult<Option<$crate::store::UpstreamIndex>> {
            Ok(sqlx::query_as(&$crate::store::upstream::select_index())
                .bind(repository_id)
                .bind(arch)
                .fetch_optional(pool)
                .await?)
        }

        pub(super) async fn save_upstream_index(
            pool: &sqlx::Pool<$db>,
            index: &$crate::store::UpstreamIndex,
        ) -> StoreResult<()> {
            sqlx::query(&$crate::store::upstream::save_index())
                .bind(index.repository_id)
                .bind(&index.arch)
                .bind(&index.content)
                .bind(&index.sha256)
                .bind(&index.etag)
                .bind(&index.last_modified)
                .bind(index.verified_ms)
                .bind(index.checked_ms)
                .bind(&index.error)
                .bind(&index.signed)
                .bind(&index.signed_sha256)
                .bind(&index.signed_keys)
                .bind(index.signed_ms)
                .execute(pool)
                .await?;
            Ok(())
        }

        pub(super) async fn upstream_checked(
            pool: &sqlx::Pool<$db>,
            repository_id: i64,
            arch: &str,
            checked_ms: i64,
            verified: bool,
            error: Option<&str>,
        ) -> StoreResult<()> {
            sqlx::query(
                "UPDATE upstream_indexes SET checked_ms = $3, error = $5, \
                 verified_ms = CASE WHEN $4 THEN $3 ELSE verified_ms END \
                 WHERE repository_id = $1 AND arch = $2",
            )
            .bind(repository_id)
            .bind(arch)
            .bind(checked_ms)
            .bind(verified)
            .bind(error)
            .execute(pool)
            .await?;
            Ok(())
        }

        pub(super) async fn upstream_freshness(
            pool: &sqlx::Pool<$db>,
            repository_id: i64,
        ) -> StoreResult<Vec<$crate::store::UpstreamFreshness>> {
            Ok(sqlx::query_as(
                "SELECT arch, verified_ms, checked_ms, error FROM upstream_indexes \
                 WHERE repository_id = $1 ORDER BY arch",
            )
            .bind(repository_id)
            .fetch_all(pool)
            .await?)
        }

        pub(super) async fn stale_upstream_indexes(pool: &sqlx::Pool<$db>) -> StoreResult<i64> {
            Ok(
                sqlx::query_scalar("SELECT COUNT(*) FROM upstream_indexes WHERE error IS NOT NULL")
                    .fetch_one(pool)
                    .await?,
            )
        }

        pub(super) async fn upstream_file(
            pool: &sqlx::Pool<$db>,
            repository_id: i64,
            arch: &str,
            filename: &str,
        ) -> StoreResult<Option<$crate::store::UpstreamFile>> {
            Ok(sqlx::query_as(
                "SELECT repository_id, arch, filename, sha256, size, checksum, stored_ms \
                 FROM upstream_files WHERE repository_id = $1 AND arch = $2 AND filename = $3",
            )
            .bind(repository_id)
            .bind(arch)
            .bind(filename)
            .fetch_optional(pool)
            .await?)
        }

        pub(super) async fn insert_upstream_file(pool: &sqlx::Pool<$db>, file: &$crate::store::UpstreamFile) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO upstream_files \
                 (repository_id, arch, filename, sha256, size, checksum, stored_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (repository_id, arch, filename) DO NOTHING",
            )
            .bind(file.repository_id)
            .bind(&file.arch)
            .bind(&file.filename)
            .bind(&file.sha256)
            .bind(file.size)
            .bind(&file.checksum)
            .bind(file.stored_ms)
            .execute(pool)
            .await?;
            Ok(())
        }

        pub(super) async fn upstream_files(
            pool: &sqlx::Pool<$db>,
            repository_id: i64,
        ) -> StoreResult<Vec<$crate::store::UpstreamFile>> {
            Ok(sqlx::query_as(
                "SELECT repository_id, arch, filename, sha256, size, checksum, stored_ms \
                 FROM upstream_files WHERE repository_id = $1 ORDER BY arch, filename",
            )
            .bind(repository_id)
            .fetch_all(pool)
            .await?)
        }

        pub(super) async fn remote_repository_ids(pool: &sqlx::Pool<$db>) -> StoreResult<Vec<i64>> {
            Ok(
                sqlx::query_scalar("SELECT repository_id FROM upstreams ORDER BY repository_id")
                    .fetch_all(pool)
                    .await?,
            )
        }
    };
}
pub(crate) use upstream_functions;

pub(super) fn select_index() -> String {
    format!("SELECT {INDEX_COLUMNS} FROM upstream_indexes WHERE repository_id = $1 AND arch = $2")
}

pub(super) fn save_index() -> String {
    format!(
        "INSERT INTO upstream_indexes ({INDEX_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (repository_id, arch) DO UPDATE SET content = excluded.content, \
         sha256 = excluded.sha256, etag = excluded.etag, last_modified = excluded.last_modified, \
         verified_ms = excluded.verified_ms, checked_ms = excluded.checked_ms, \
         error = excluded.error, signed = excluded.signed, signed_sha256 = excluded.signed_sha256, \
         signed_keys = excluded.signed_keys, signed_ms = excluded.signed_ms"
    )
}
