//! What remote and virtual repositories served, as stored: one row per file of an
//! architecture's index and period it was listed (`served_history`), and named moments of
//! that history (`snapshots`). The SQL is the same text on both backends (`$n`
//! placeholders); the functions that run inside a transaction take it from the backend.

use serde::Serialize;

/// A file an index lists, as a change of the listing records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedFile {
    /// `{name}-{version}.apk`.
    pub filename: String,
    /// Its index entry as served, ending with its blank line.
    pub stanza: String,
    /// The repository its file comes from: a remote repository's own id, or the member of
    /// a virtual repository that listed it.
    pub member_id: i64,
    /// The blob of a hosted member's file; None for a file of a remote repository.
    pub sha256: Option<String>,
}

/// One period a file was listed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ServedRow {
    pub arch: String,
    pub filename: String,
    pub stanza: String,
    pub member_id: i64,
    pub sha256: Option<String>,
    /// Listed from (Unix milliseconds, inclusive) ...
    pub first_ms: i64,
    /// ... until (exclusive); None while it is listed.
    pub last_ms: Option<i64>,
}

/// What a change of a listing did to its history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryChange {
    /// Rows opened: files listed anew, or listed with another entry.
    pub opened: u64,
    /// Rows closed: files gone, or listed with another entry.
    pub closed: u64,
}

/// A named moment of a repository's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Snapshot {
    pub name: String,
    /// Unix milliseconds.
    pub at_ms: i64,
}

pub(super) const ROW_COLUMNS: &str = "arch, filename, stanza, member_id, sha256, first_ms, last_ms";

/// Rows per statement when many are inserted or closed at once (within every backend's
/// limit of bound parameters).
pub(super) const CHUNK: usize = 500;

/// The functions behind the `Store` methods of the served history and snapshots, for the
/// backend `$db` (a macro: the pool types of the two backends differ).
macro_rules! history_functions {
    ($db:ty) => {
        /// Brings the open rows of `arch` of the repository to `listing` at `now_ms`, in
        /// `tx`: the rows of files gone or listed with another entry (or from another
        /// member) are closed, rows are opened for files new or changed, the others are
        /// left as they are. NotFound when the repository is gone.
        pub(super) async fn apply_listing(
            tx: &mut sqlx::Transaction<'static, $db>,
            repository_id: i64,
            arch: &str,
            listing: &[$crate::store::ServedFile],
            now_ms: i64,
        ) -> StoreResult<$crate::store::HistoryChange> {
            use std::collections::HashMap;
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT id FROM repositories WHERE id = $1")
                    .bind(repository_id)
                    .fetch_optional(&mut **tx)
                    .await?;
            if exists.is_none() {
                return Err(StoreError::NotFound(format!(
                    "repository {repository_id} no longer exists"
                )));
            }
            let open: Vec<(i64, String, String, i64, Option<String>)> = sqlx::query_as(
                "SELECT id, filename, stanza, member_id, sha256 FROM served_history \
                 WHERE repository_id = $1 AND arch = $2 AND last_ms IS NULL",
            )
            .bind(repository_id)
            .bind(arch)
            .fetch_all(&mut **tx)
            .await?;
            let mut open: HashMap<String, (i64, String, i64, Option<String>)> = open
                .into_iter()
                .map(|(id, filename, stanza, member, sha256)| {
                    (filename, (id, stanza, member, sha256))
                })
                .collect();
            let mut close = Vec::new();
            let mut insert = Vec::new();
            for file in listing {
                match open.remove(&file.filename) {
                    Some((_, stanza, member, _))
                        if stanza == file.stanza && member == file.member_id => {}
                    Some((id, ..)) => {
                        close.push(id);
                        insert.push(file);
                    }
                    None => insert.push(file),
                }
            }
            close.extend(open.into_values().map(|(id, ..)| id));
            close.sort_unstable();
            for ids in close.chunks($crate::store::history::CHUNK) {
                let mut update = sqlx::QueryBuilder::<$db>::new(
                    "UPDATE served_history SET last_ms = CASE WHEN first_ms > ",
                );
                update
                    .push_bind(now_ms)
                    .push(" THEN first_ms ELSE ")
                    .push_bind(now_ms)
                    .push(" END WHERE id IN (");
                let mut separated = update.separated(", ");
                for id in ids {
                    separated.push_bind(*id);
                }
                update.push(")");
                update.build().execute(&mut **tx).await?;
            }
            for files in insert.chunks($crate::store::history::CHUNK) {
                let mut rows = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO served_history \
                     (repository_id, arch, filename, stanza, member_id, sha256, first_ms) ",
                );
                rows.push_values(files, |mut row, file| {
                    row.push_bind(repository_id)
                        .push_bind(arch.to_string())
                        .push_bind(file.filename.clone())
                        .push_bind(file.stanza.clone())
                        .push_bind(file.member_id)
                        .push_bind(file.sha256.clone())
                        .push_bind(now_ms);
                });
                rows.build()
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| match &e {
                        sqlx::Error::Database(db) if db.is_unique_violation() => {
                            StoreError::Conflict(
                                "another listing of this index was recorded at the same time"
                                    .into(),
                            )
                        }
                        _ => StoreError::Database(e),
                    })?;
            }
            Ok($crate::store::HistoryChange {
                opened: insert.len() as u64,
                closed: close.len() as u64,
            })
        }

        pub(super) async fn served_files(
            pool: &sqlx::Pool<$db>,
            repository_id: i64,
            arch: &str,
            at_ms: Option<i64>,
        ) -> StoreResult<Vec<$crate::store::ServedRow>> {
            let columns = $crate::store::history::ROW_COLUMNS;
            let rows = match at_ms {
                None => {
                    sqlx::query_as(&format!(
                        "SELECT {columns} FROM served_history WHERE repository_id = $1 \
                     AND arch = $2 AND last_ms IS NULL ORDER BY filename"
                    ))
                    .bind(repository_id)
                    .bind(arch)
                    .fetch_all(pool)
                    .await?
                }
                Some(at) => {
                    sqlx::query_as(&format!(
                        "SELECT {columns} FROM served_history WHERE repository_id = $1 \
                     AND arch = $2 AND first_ms <= $3 AND (last_ms IS NULL OR last_ms > $3) \
                     ORDER BY filename"
                    ))
                    .bind(repository_id)
                    .bind(arch)
                    .bind(at)
                    .fetch_all(pool)
                    .await?
                }
            };
            Ok(rows)
        }

        pub(super) async fn served_file(
            pool: &sqlx::Pool<$db>,
            repository_id: i64,
            arch: &str,
            filename: &str,
            at_ms: Option<i64>,
        ) -> StoreResult<Option<$crate::store::ServedRow>> {
            let columns = $crate::store::history::ROW_COLUMNS;
            let row = match at_ms {
                None => {
                    sqlx::query_as(&format!(
                        "SELECT {columns} FROM served_history WHERE repository_id = $1 \
                     AND arch = $2 AND filename = $3 AND last_ms IS NULL"
                    ))
                    .bind(repository_id)
                    .bind(arch)
                    .bind(filename)
                    .fetch_optional(pool)
                    .await?
                }
                Some(at) => {
                    sqlx::query_as(&format!(
                        "SELECT {columns} FROM served_history WHERE repository_id = $1 \
                     AND arch = $2 AND filename = $3 AND first_ms <= $4 \
                     AND (last_ms IS NULL OR last_ms > $4) ORDER BY first_ms DESC LIMIT 1"
                    ))
                    .bind(repository_id)
                    .bind(arch)
                    .bind(filename)
                    .bind(at)
                    .fetch_optional(pool)
                    .await?
                }
            };
            Ok(row)
        }

        pub(super) async fn served_span(
            pool: &sqlx::Pool<$db>,
            repository_id: i64,
            arch: &str,
            at_ms: i64,
        ) -> StoreResult<(Option<i64>, Option<i64>)> {
            Ok(sqlx::query_as(
                "SELECT MIN(first_ms), MAX(CASE WHEN first_ms > $3 THEN NULL \
                 WHEN last_ms IS NOT NULL AND last_ms <= $3 THEN last_ms ELSE first_ms END) \
                 FROM served_history WHERE repository_id = $1 AND arch = $2",
            )
            .bind(repository_id)
            .bind(arch)
            .bind(at_ms)
            .fetch_one(pool)
            .await?)
        }

        /// Whether the upstream index of `arch` stored in `tx`'s view is still the one
        /// whose content has the SHA-256 `sha256`.
        pub(super) async fn upstream_is(
            tx: &mut sqlx::Transaction<'static, $db>,
            repository_id: i64,
            arch: &str,
            sha256: &str,
        ) -> StoreResult<bool> {
            let stored: Option<String> = sqlx::query_scalar(
                "SELECT sha256 FROM upstream_indexes WHERE repository_id = $1 AND arch = $2",
            )
            .bind(repository_id)
            .bind(arch)
            .fetch_optional(&mut **tx)
            .await?;
            Ok(stored.as_deref() == Some(sha256))
        }

        pub(super) async fn served_history(
            pool: &sqlx::Pool<$db>,
            repository_id: i64,
        ) -> StoreResult<Vec<$crate::store::ServedRow>> {
            let columns = $crate::store::history::ROW_COLUMNS;
            Ok(sqlx::query_as(&format!(
                "SELECT {columns} FROM served_history WHERE repository_id = $1 \
                 ORDER BY arch, filename, first_ms, id"
            ))
            .bind(repository_id)
            .fetch_all(pool)
            .await?)
        }

        pub(super) async fn insert_snapshot(
            tx: &mut sqlx::Transaction<'static, $db>,
            repository_id: i64,
            snapshot: &$crate::store::Snapshot,
        ) -> StoreResult<()> {
            sqlx::query("INSERT INTO snapshots (repository_id, name, at_ms) VALUES ($1, $2, $3)")
                .bind(repository_id)
                .bind(&snapshot.name)
                .bind(snapshot.at_ms)
                .execute(&mut **tx)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(
                        format!("a snapshot named {} exists already", snapshot.name),
                    ),
                    sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                        StoreError::NotFound(format!("repository {repository_id} no longer exists"))
                    }
                    _ => StoreError::Database(e),
                })?;
            Ok(())
        }

        pub(super) async fn delete_snapshot(
            tx: &mut sqlx::Transaction<'static, $db>,
            repository_id: i64,
            name: &str,
        ) -> StoreResult<bool> {
            let done = sqlx::query("DELETE FROM snapshots WHERE repository_id = $1 AND name = $2")
                .bind(repository_id)
                .bind(name)
                .execute(&mut **tx)
                .await?;
            Ok(done.rows_affected() > 0)
        }

        pub(super) async fn snapshots(
            pool: &sqlx::Pool<$db>,
            repository_id: i64,
        ) -> StoreResult<Vec<$crate::store::Snapshot>> {
            Ok(sqlx::query_as(
                "SELECT name, at_ms FROM snapshots WHERE repository_id = $1 ORDER BY at_ms, name",
            )
            .bind(repository_id)
            .fetch_all(pool)
            .await?)
        }

        pub(super) async fn snapshot(
            pool: &sqlx::Pool<$db>,
            repository_id: i64,
            name: &str,
        ) -> StoreResult<Option<$crate::store::Snapshot>> {
            Ok(sqlx::query_as(
                "SELECT name, at_ms FROM snapshots WHERE repository_id = $1 AND name = $2",
            )
            .bind(repository_id)
            .bind(name)
            .fetch_optional(pool)
            .await?)
        }
    };
}
pub(crate) use history_functions;

/// Whether a row references blob `$1`: a package, a file cached from upstream, or a file
/// a remote or virtual repository served (which its snapshots keep serving).
pub(super) const BLOB_REFERENCED: &str =
    "SELECT EXISTS (SELECT 1 FROM packages WHERE sha256 = $1) \
     OR EXISTS (SELECT 1 FROM upstream_files WHERE sha256 = $1) \
     OR EXISTS (SELECT 1 FROM served_history WHERE sha256 = $1)";

/// Every blob a row references, as `BLOB_REFERENCED` says.
pub(super) const REFERENCED_BLOBS: &str = "SELECT sha256 FROM packages \
     UNION SELECT sha256 FROM upstream_files \
     UNION SELECT sha256 FROM served_history WHERE sha256 IS NOT NULL";
