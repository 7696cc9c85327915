//! Virtual repositories as stored: each one's members in order, and the merged index of
//! each architecture as last built (with its `Packages.adb`), which every instance on one
//! database serves. The SQL is the same text on both backends (`$n` placeholders); the
//! functions that run inside a transaction take it from the backend, which opens it (and,
//! on PostgreSQL, locks the repository row first).

/// The merged index of one architecture of a virtual repository.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VirtualIndex {
    pub repository_id: i64,
    pub arch: String,
    /// What it was built from: the members' served indexes and the owner's signing keys.
    pub fingerprint: String,
    /// The signed `APKINDEX.tar.gz`.
    pub content: Vec<u8>,
    pub sha256: String,
    /// The signed `Packages.adb` of the same packages; None with `adb_error` saying why.
    pub adb: Option<Vec<u8>>,
    pub adb_sha256: Option<String>,
    pub adb_error: Option<String>,
    /// How many packages it lists.
    pub entries: i64,
    /// When `content` became what it is, Unix milliseconds (`Last-Modified`): a build to
    /// the same bytes keeps the date of the first.
    pub modified_ms: i64,
    /// When it was last built.
    pub built_ms: i64,
}

const INDEX_COLUMNS: &str = "repository_id, arch, fingerprint, content, sha256, adb, \
     adb_sha256, adb_error, entries, modified_ms, built_ms";

pub(super) fn select_index() -> String {
    format!("SELECT {INDEX_COLUMNS} FROM virtual_indexes WHERE repository_id = $1 AND arch = $2")
}

/// Upserts an index; one with the bytes already stored keeps its `modified_ms`.
pub(super) fn save_index() -> String {
    format!(
        "INSERT INTO virtual_indexes ({INDEX_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (repository_id, arch) DO UPDATE SET fingerprint = excluded.fingerprint, \
         content = excluded.content, adb = excluded.adb, adb_sha256 = excluded.adb_sha256, \
         adb_error = excluded.adb_error, entries = excluded.entries, \
         modified_ms = CASE WHEN virtual_indexes.sha256 = excluded.sha256 \
             AND COALESCE(virtual_indexes.adb_sha256, '') = COALESCE(excluded.adb_sha256, '') \
             THEN virtual_indexes.modified_ms ELSE excluded.modified_ms END, \
         sha256 = excluded.sha256, built_ms = excluded.built_ms"
    )
}

/// The repositories that list repository `$1` as a member, as `owner/branch/repository`.
pub(super) const VIRTUALS_OF_MEMBER: &str = "SELECT o.name || '/' || r.branch || '/' || r.name \
     FROM virtual_members m JOIN repositories r ON r.id = m.repository_id \
     JOIN owners o ON o.id = r.owner_id WHERE m.member_id = $1 ORDER BY r.id";

/// The functions behind the `Store` methods of virtual repositories, for the backend `$db`
/// (a macro: the pool types of the two backends differ).
macro_rules! virtual_functions {
    ($db:ty) => {
        /// Makes repository `id`, inserted in `tx`, virtual with `members` in order.
        pub(super) async fn insert_virtual(
            tx: &mut sqlx::Transaction<'static, $db>,
            id: i64,
            members: &[i64],
        ) -> StoreResult<()> {
            sqlx::query("INSERT INTO virtuals (repository_id) VALUES ($1)")
                .bind(id)
                .execute(&mut **tx)
                .await?;
            for (position, member) in members.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO virtual_members (repository_id, position, member_id) \
                     VALUES ($1, $2, $3)",
                )
                .bind(id)
                .bind(position as i64)
                .bind(member)
                .execute(&mut **tx)
                .await?;
            }
            Ok(())
        }

        pub(super) async fn virtual_members(
            pool: &sqlx::Pool<$db>,
            repository_id: i64,
        ) -> StoreResult<Option<Vec<i64>>> {
            let rows: Vec<(i64, Option<i64>)> = sqlx::query_as(
                "SELECT v.repository_id, m.member_id FROM virtuals v \
                 LEFT JOIN virtual_members m ON m.repository_id = v.repository_id \
                 WHERE v.repository_id = $1 ORDER BY m.position",
            )
            .bind(repository_id)
            .fetch_all(pool)
            .await?;
            if rows.is_empty() {
                return Ok(None);
            }
            Ok(Some(rows.into_iter().filter_map(|(_, m)| m).collect()))
        }

        pub(super) async fn virtual_index(
            pool: &sqlx::Pool<$db>,
            repository_id: i64,
            arch: &str,
        ) -> StoreResult<Option<$crate::store::VirtualIndex>> {
            Ok(sqlx::query_as(&$crate::store::virtuals::select_index())
                .bind(repository_id)
                .bind(arch)
                .fetch_optional(pool)
                .await?)
        }

        /// Stores `index` and brings the history of its architecture to `listing`, in `tx`,
        /// unless the index stored was built from a later reading of the members.
        pub(super) async fn save_virtual_index(
            tx: &mut sqlx::Transaction<'static, $db>,
            index: &$crate::store::VirtualIndex,
            listing: &[$crate::store::ServedFile],
        ) -> StoreResult<Option<$crate::store::HistoryChange>> {
            let stored: Option<i64> = sqlx::query_scalar(
                "SELECT built_ms FROM virtual_indexes WHERE repository_id = $1 AND arch = $2",
            )
            .bind(index.repository_id)
            .bind(&index.arch)
            .fetch_optional(&mut **tx)
            .await?;
            if stored.is_some_and(|built_ms| built_ms > index.built_ms) {
                return Ok(None);
            }
            let change = super::history_fns::apply_listing(
                tx,
                index.repository_id,
                &index.arch,
                listing,
                index.built_ms,
            )
            .await?;
            sqlx::query(&$crate::store::virtuals::save_index())
                .bind(index.repository_id)
                .bind(&index.arch)
                .bind(&index.fingerprint)
                .bind(&index.content)
                .bind(&index.sha256)
                .bind(&index.adb)
                .bind(&index.adb_sha256)
                .bind(&index.adb_error)
                .bind(index.entries)
                .bind(index.modified_ms)
                .bind(index.built_ms)
                .execute(&mut **tx)
                .await?;
            Ok(Some(change))
        }

        /// Conflict when repository `id` is a member of a virtual repository.
        pub(super) async fn refuse_member_removal(
            tx: &mut sqlx::Transaction<'static, $db>,
            id: i64,
        ) -> StoreResult<()> {
            let virtuals: Vec<String> =
                sqlx::query_scalar($crate::store::virtuals::VIRTUALS_OF_MEMBER)
                    .bind(id)
                    .fetch_all(&mut **tx)
                    .await?;
            if virtuals.is_empty() {
                return Ok(());
            }
            Err(StoreError::Conflict(format!(
                "the repository is a member of the virtual repository {}: remove {} first",
                virtuals.join(", "),
                if virtuals.len() == 1 { "it" } else { "them" }
            )))
        }
    };
}
pub(crate) use virtual_functions;
