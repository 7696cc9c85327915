//! Every row of a registry database as plain records, for moving an installation from
//! one backend to another (`Store::export` and `Store::import`). Each record holds every
//! column of its table, ids included, so that a copy is exact: ids are preserved, and so
//! are password hashes, token hashes and sealed private keys (sealed with the owner id as
//! associated data).

/// A `users` row.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub created_at: i64,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("is_admin", &self.is_admin)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// An `owners` row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OwnerRow {
    pub id: i64,
    pub name: String,
    pub is_private: bool,
    pub is_org: bool,
    pub created_at: i64,
}

/// An `owner_members` row; `role` is `read`, `write` or `admin`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MemberRow {
    pub owner_id: i64,
    pub user_id: i64,
    pub role: String,
}

/// A `tokens` row (the hash of the secret, never the secret).
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub user_id: i64,
    pub token_hash: String,
    pub prefix: String,
    pub scope: String,
    pub owner_id: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub created_at: i64,
    pub label: Option<String>,
    pub last_used_at: Option<i64>,
}

impl std::fmt::Debug for TokenRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRow")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("prefix", &self.prefix)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// A `signing_keys` row; `private_pem` is sealed with the master key and the owner id.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SigningKeyRow {
    pub id: i64,
    pub owner_id: i64,
    pub key_name: String,
    pub private_pem: String,
    pub public_pem: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for SigningKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRow")
            .field("id", &self.id)
            .field("owner_id", &self.owner_id)
            .field("key_name", &self.key_name)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// A `repositories` row with its generation counters.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RepositoryRow {
    pub id: i64,
    pub owner_id: i64,
    pub branch: String,
    pub name: String,
    pub wanted_gen: i64,
    pub built_gen: i64,
    /// The repository's own dependency check setting, if it has one.
    pub dependency_check: Option<String>,
}

/// A `packages` row; `modified_ms` as stored (NULL for rows older than the column).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PackageRow {
    pub id: i64,
    pub repository_id: i64,
    pub arch: String,
    pub name: String,
    pub version: String,
    pub filename: String,
    pub checksum: String,
    pub sha256: String,
    pub size: i64,
    pub stanza: String,
    pub created_at: i64,
    pub modified_ms: Option<i64>,
    /// Kept from retention rules.
    pub pinned: bool,
}

/// A `retention_rules` row (`''` for a branch or repository: the rule covers them all).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RetentionRuleRow {
    pub owner_id: i64,
    pub branch: String,
    pub repository: String,
    pub keep_versions: Option<i64>,
    pub max_age_secs: Option<i64>,
    pub keep_min: i64,
    pub include_globs: String,
    pub exclude_globs: String,
    pub updated_at: i64,
}

/// A `webhooks` row, its secret as sealed with the master key (the target's must be the
/// source's, as for signing keys). Deliveries are not copied.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WebhookRow {
    pub id: i64,
    pub owner_id: i64,
    pub url: String,
    pub secret_sealed: String,
    pub events: String,
    pub created_ms: i64,
    pub created_by: String,
}

/// An `indexes` row: the served, signed bytes.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct IndexRow {
    pub repository_id: i64,
    pub arch: String,
    pub generation: i64,
    pub content: Vec<u8>,
    pub sha256: String,
    pub built_at: i64,
    pub modified_ms: Option<i64>,
    /// Packages listed and signature entry names (one per line), as written by the build.
    pub entries: Option<i64>,
    pub signatures: Option<String>,
    /// The apk v3 index published with it, when there is one.
    pub adb: Option<Vec<u8>>,
    pub adb_sha256: Option<String>,
}

/// An `owner_keyrings` row: whether the owner publishes its keyring package.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OwnerKeyringRow {
    pub owner_id: i64,
    pub enabled: bool,
}

/// An `upstreams` row: what a remote repository proxies (`keys` as stored, JSON).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UpstreamRow {
    pub repository_id: i64,
    pub url: String,
    pub keys: String,
    pub refresh_secs: i64,
}

/// A `virtuals` row: the repository is virtual.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct VirtualRow {
    pub repository_id: i64,
}

/// A `virtual_members` row: a member of a virtual repository, at its position.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct VirtualMemberRow {
    pub repository_id: i64,
    pub position: i64,
    pub member_id: i64,
}

/// A `virtual_indexes` row: a virtual repository's index of one architecture as built.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct VirtualIndexRow {
    pub repository_id: i64,
    pub arch: String,
    pub fingerprint: String,
    pub content: Vec<u8>,
    pub sha256: String,
    pub adb: Option<Vec<u8>>,
    pub adb_sha256: Option<String>,
    pub adb_error: Option<String>,
    pub entries: i64,
    pub modified_ms: i64,
    pub built_ms: i64,
}

/// A `served_history` row: a file a remote or virtual repository listed, and when.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ServedHistoryRow {
    pub id: i64,
    pub repository_id: i64,
    pub arch: String,
    pub filename: String,
    pub stanza: String,
    pub member_id: i64,
    pub sha256: Option<String>,
    pub first_ms: i64,
    pub last_ms: Option<i64>,
}

/// A `snapshots` row: a named moment of a repository's history.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SnapshotRow {
    pub repository_id: i64,
    pub name: String,
    pub at_ms: i64,
}

/// An `upstream_files` row: a package file cached from upstream (its blob is copied with
/// the packages' blobs).
pub type UpstreamFileRow = super::UpstreamFile;

/// An `upstream_indexes` row: the upstream's verified index and its signed copy.
pub type UpstreamIndexRow = super::UpstreamIndex;

/// Every row of every table, read in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    pub users: Vec<UserRow>,
    pub owners: Vec<OwnerRow>,
    pub members: Vec<MemberRow>,
    pub tokens: Vec<TokenRow>,
    pub signing_keys: Vec<SigningKeyRow>,
    pub repositories: Vec<RepositoryRow>,
    pub packages: Vec<PackageRow>,
    pub indexes: Vec<IndexRow>,
    pub retention_rules: Vec<RetentionRuleRow>,
    pub webhooks: Vec<WebhookRow>,
    pub owner_keyrings: Vec<OwnerKeyringRow>,
    pub upstreams: Vec<UpstreamRow>,
    pub upstream_indexes: Vec<UpstreamIndexRow>,
    pub upstream_files: Vec<UpstreamFileRow>,
    pub virtuals: Vec<VirtualRow>,
    pub virtual_members: Vec<VirtualMemberRow>,
    pub virtual_indexes: Vec<VirtualIndexRow>,
    pub served_history: Vec<ServedHistoryRow>,
    pub snapshots: Vec<SnapshotRow>,
    /// The highest repository id ever handed out (removed repositories included), so
    /// that the target never hands out a removed repository's id either.
    pub last_repository_id: i64,
}

impl Dump {
    /// Rows per table.
    pub fn counts(&self) -> TableCounts {
        let n = |len: usize| len as i64;
        TableCounts {
            users: n(self.users.len()),
            owners: n(self.owners.len()),
            members: n(self.members.len()),
            tokens: n(self.tokens.len()),
            signing_keys: n(self.signing_keys.len()),
            repositories: n(self.repositories.len()),
            packages: n(self.packages.len()),
            indexes: n(self.indexes.len()),
            retention_rules: n(self.retention_rules.len()),
            webhooks: n(self.webhooks.len()),
            owner_keyrings: n(self.owner_keyrings.len()),
            upstreams: n(self.upstreams.len()),
            upstream_indexes: n(self.upstream_indexes.len()),
            upstream_files: n(self.upstream_files.len()),
            virtuals: n(self.virtuals.len()),
            virtual_members: n(self.virtual_members.len()),
            virtual_indexes: n(self.virtual_indexes.len()),
            served_history: n(self.served_history.len()),
            snapshots: n(self.snapshots.len()),
        }
    }
}

/// Rows per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCounts {
    pub users: i64,
    pub owners: i64,
    pub members: i64,
    pub tokens: i64,
    pub signing_keys: i64,
    pub repositories: i64,
    pub packages: i64,
    pub indexes: i64,
    pub retention_rules: i64,
    pub webhooks: i64,
    pub owner_keyrings: i64,
    pub upstreams: i64,
    pub upstream_indexes: i64,
    pub upstream_files: i64,
    pub virtuals: i64,
    pub virtual_members: i64,
    pub virtual_indexes: i64,
    pub served_history: i64,
    pub snapshots: i64,
}

impl TableCounts {
    /// Each table's name with its count, in the order rows are copied.
    pub fn tables(&self) -> [(&'static str, i64); 19] {
        [
            ("users", self.users),
            ("owners", self.owners),
            ("owner_members", self.members),
            ("tokens", self.tokens),
            ("signing_keys", self.signing_keys),
            ("repositories", self.repositories),
            ("packages", self.packages),
            ("indexes", self.indexes),
            ("retention_rules", self.retention_rules),
            ("webhooks", self.webhooks),
            ("owner_keyrings", self.owner_keyrings),
            ("upstreams", self.upstreams),
            ("upstream_indexes", self.upstream_indexes),
            ("upstream_files", self.upstream_files),
            ("virtuals", self.virtuals),
            ("virtual_members", self.virtual_members),
            ("virtual_indexes", self.virtual_indexes),
            ("served_history", self.served_history),
            ("snapshots", self.snapshots),
        ]
    }

    /// The count of `table`, one of `tables`' names.
    fn count_mut(&mut self, table: &str) -> Option<&mut i64> {
        Some(match table {
            "users" => &mut self.users,
            "owners" => &mut self.owners,
            "owner_members" => &mut self.members,
            "tokens" => &mut self.tokens,
            "signing_keys" => &mut self.signing_keys,
            "repositories" => &mut self.repositories,
            "packages" => &mut self.packages,
            "indexes" => &mut self.indexes,
            "retention_rules" => &mut self.retention_rules,
            "webhooks" => &mut self.webhooks,
            "owner_keyrings" => &mut self.owner_keyrings,
            "upstreams" => &mut self.upstreams,
            "upstream_indexes" => &mut self.upstream_indexes,
            "upstream_files" => &mut self.upstream_files,
            "virtuals" => &mut self.virtuals,
            "virtual_members" => &mut self.virtual_members,
            "virtual_indexes" => &mut self.virtual_indexes,
            "served_history" => &mut self.served_history,
            "snapshots" => &mut self.snapshots,
            _ => return None,
        })
    }

    /// Sets the count of `table`, one of `tables`' names.
    pub(super) fn set(&mut self, table: &str, count: i64) {
        *self.count_mut(table).expect("a table TableCounts lists") = count;
    }

    pub fn is_empty(&self) -> bool {
        self.tables().iter().all(|(_, n)| *n == 0)
    }
}

/// The tables that hold rows with their counts ("3 users, 1 owners"), or "no rows".
impl std::fmt::Display for TableCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held: Vec<String> = self
            .tables()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(table, n)| format!("{n} {table}"))
            .collect();
        if held.is_empty() {
            f.write_str("no rows")
        } else {
            f.write_str(&held.join(", "))
        }
    }
}

/// The SELECTs `export` runs, ordered so that parents come before their children (the
/// order `import` inserts in), and the INSERTs of `import`: the same SQL on both backends.
pub(super) const EXPORT_USERS: &str =
    "SELECT id, name, password_hash, is_admin, created_at FROM users ORDER BY id";
pub(super) const EXPORT_OWNERS: &str =
    "SELECT id, name, is_private, is_org, created_at FROM owners ORDER BY id";
pub(super) const EXPORT_MEMBERS: &str =
    "SELECT owner_id, user_id, role FROM owner_members ORDER BY owner_id, user_id";
pub(super) const EXPORT_TOKENS: &str = "SELECT id, user_id, token_hash, prefix, scope, \
     owner_id, expires_at, revoked_at, created_at, label, last_used_at FROM tokens ORDER BY id";
pub(super) const EXPORT_SIGNING_KEYS: &str = "SELECT id, owner_id, key_name, private_pem, \
     public_pem, created_at, retired_at FROM signing_keys ORDER BY id";
pub(super) const EXPORT_REPOSITORIES: &str = "SELECT id, owner_id, branch, name, wanted_gen, \
     built_gen, dependency_check FROM repositories ORDER BY id";
pub(super) const EXPORT_PACKAGES: &str = "SELECT id, repository_id, arch, name, version, \
     filename, checksum, sha256, size, stanza, created_at, modified_ms, pinned FROM packages \
     ORDER BY id";
pub(super) const EXPORT_INDEXES: &str = "SELECT repository_id, arch, generation, content, \
     sha256, built_at, modified_ms, entries, signatures, adb, adb_sha256 FROM indexes \
     ORDER BY repository_id, arch";
pub(super) const EXPORT_RETENTION_RULES: &str = "SELECT owner_id, branch, repository, \
     keep_versions, max_age_secs, keep_min, include_globs, exclude_globs, updated_at \
     FROM retention_rules ORDER BY owner_id, branch, repository";
pub(super) const EXPORT_WEBHOOKS: &str = "SELECT id, owner_id, url, secret_sealed, events, \
     created_ms, created_by FROM webhooks ORDER BY id";
pub(super) const EXPORT_OWNER_KEYRINGS: &str =
    "SELECT owner_id, enabled FROM owner_keyrings ORDER BY owner_id";
pub(super) const EXPORT_UPSTREAMS: &str =
    "SELECT repository_id, url, keys, refresh_secs FROM upstreams ORDER BY repository_id";
pub(super) const EXPORT_UPSTREAM_INDEXES: &str = "SELECT repository_id, arch, content, \
     sha256, etag, last_modified, verified_ms, checked_ms, error, signed, signed_sha256, \
     signed_keys, signed_ms FROM upstream_indexes ORDER BY repository_id, arch";
pub(super) const EXPORT_UPSTREAM_FILES: &str = "SELECT repository_id, arch, filename, sha256, \
     size, checksum, stored_ms FROM upstream_files ORDER BY repository_id, arch, filename";
pub(super) const EXPORT_VIRTUALS: &str =
    "SELECT repository_id FROM virtuals ORDER BY repository_id";
pub(super) const EXPORT_VIRTUAL_MEMBERS: &str = "SELECT repository_id, position, member_id \
     FROM virtual_members ORDER BY repository_id, position";
pub(super) const EXPORT_VIRTUAL_INDEXES: &str = "SELECT repository_id, arch, fingerprint, \
     content, sha256, adb, adb_sha256, adb_error, entries, modified_ms, built_ms \
     FROM virtual_indexes ORDER BY repository_id, arch";
pub(super) const EXPORT_SERVED_HISTORY: &str = "SELECT id, repository_id, arch, filename, \
     stanza, member_id, sha256, first_ms, last_ms FROM served_history ORDER BY id";
pub(super) const EXPORT_SNAPSHOTS: &str =
    "SELECT repository_id, name, at_ms FROM snapshots ORDER BY repository_id, name";

/// `export` and `import` but for what differs between the backends (the transaction, the
/// last repository id, the identity sequences), for the backend `$db` (a macro: the
/// transaction types of the two backends differ).
macro_rules! dump_functions {
    ($db:ty) => {
        /// Every row of every table, read in `tx`; `last_repository_id` as given.
        pub(super) async fn export_rows(
            tx: &mut sqlx::Transaction<'static, $db>,
            last_repository_id: i64,
        ) -> $crate::store::StoreResult<$crate::store::Dump> {
            use $crate::store::dump::*;
            Ok($crate::store::Dump {
                users: sqlx::query_as(EXPORT_USERS).fetch_all(&mut **tx).await?,
                owners: sqlx::query_as(EXPORT_OWNERS).fetch_all(&mut **tx).await?,
                members: sqlx::query_as(EXPORT_MEMBERS).fetch_all(&mut **tx).await?,
                tokens: sqlx::query_as(EXPORT_TOKENS).fetch_all(&mut **tx).await?,
                signing_keys: sqlx::query_as(EXPORT_SIGNING_KEYS)
                    .fetch_all(&mut **tx)
                    .await?,
                repositories: sqlx::query_as(EXPORT_REPOSITORIES)
                    .fetch_all(&mut **tx)
                    .await?,
                packages: sqlx::query_as(EXPORT_PACKAGES).fetch_all(&mut **tx).await?,
                indexes: sqlx::query_as(EXPORT_INDEXES).fetch_all(&mut **tx).await?,
                retention_rules: sqlx::query_as(EXPORT_RETENTION_RULES)
                    .fetch_all(&mut **tx)
                    .await?,
                webhooks: sqlx::query_as(EXPORT_WEBHOOKS).fetch_all(&mut **tx).await?,
                owner_keyrings: sqlx::query_as(EXPORT_OWNER_KEYRINGS)
                    .fetch_all(&mut **tx)
                    .await?,
                upstreams: sqlx::query_as(EXPORT_UPSTREAMS).fetch_all(&mut **tx).await?,
                upstream_indexes: sqlx::query_as(EXPORT_UPSTREAM_INDEXES)
                    .fetch_all(&mut **tx)
                    .await?,
                upstream_files: sqlx::query_as(EXPORT_UPSTREAM_FILES)
                    .fetch_all(&mut **tx)
                    .await?,
                virtuals: sqlx::query_as(EXPORT_VIRTUALS).fetch_all(&mut **tx).await?,
                virtual_members: sqlx::query_as(EXPORT_VIRTUAL_MEMBERS)
                    .fetch_all(&mut **tx)
                    .await?,
                virtual_indexes: sqlx::query_as(EXPORT_VIRTUAL_INDEXES)
                    .fetch_all(&mut **tx)
                    .await?,
                served_history: sqlx::query_as(EXPORT_SERVED_HISTORY)
                    .fetch_all(&mut **tx)
                    .await?,
                snapshots: sqlx::query_as(EXPORT_SNAPSHOTS).fetch_all(&mut **tx).await?,
                last_repository_id,
            })
        }

        /// Rows per table, read in `tx`.
        pub(super) async fn count_rows(
            tx: &mut sqlx::Transaction<'static, $db>,
        ) -> $crate::store::StoreResult<$crate::store::TableCounts> {
            let mut counts = $crate::store::TableCounts::default();
            for (table, _) in $crate::store::TableCounts::default().tables() {
                let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
                    .fetch_one(&mut **tx)
                    .await?;
                counts.set(table, count);
            }
            Ok(counts)
        }

        /// Inserts every row of `dump` with its ids in `tx`, parents first; refuses a
        /// database that holds rows.
        pub(super) async fn import_rows(
            tx: &mut sqlx::Transaction<'static, $db>,
            dump: &$crate::store::Dump,
        ) -> $crate::store::StoreResult<()> {
            let counts = count_rows(tx).await?;
            if !counts.is_empty() {
                return Err($crate::store::StoreError::Conflict(format!(
                    "the database is not empty: {counts}"
                )));
            }
            for user in &dump.users {
                sqlx::query(
                    "INSERT INTO users (id, name, password_hash, is_admin, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(user.id)
                .bind(&user.name)
                .bind(&user.password_hash)
                .bind(user.is_admin)
                .bind(user.created_at)
                .execute(&mut **tx)
                .await?;
            }
            for owner in &dump.owners {
                sqlx::query(
                    "INSERT INTO owners (id, name, is_private, is_org, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(owner.id)
                .bind(&owner.name)
                .bind(owner.is_private)
                .bind(owner.is_org)
                .bind(owner.created_at)
                .execute(&mut **tx)
                .await?;
            }
            for member in &dump.members {
                sqlx::query(
                    "INSERT INTO owner_members (owner_id, user_id, role) VALUES ($1, $2, $3)",
                )
                .bind(member.owner_id)
                .bind(member.user_id)
                .bind(&member.role)
                .execute(&mut **tx)
                .await?;
            }
            for token in &dump.tokens {
                sqlx::query(
                    "INSERT INTO tokens (id, user_id, token_hash, prefix, scope, owner_id, \
                     expires_at, revoked_at, created_at, label, last_used_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(token.id)
                .bind(token.user_id)
                .bind(&token.token_hash)
                .bind(&token.prefix)
                .bind(&token.scope)
                .bind(token.owner_id)
                .bind(token.expires_at)
                .bind(token.revoked_at)
                .bind(token.created_at)
                .bind(&token.label)
                .bind(token.last_used_at)
                .execute(&mut **tx)
                .await?;
            }
            for key in &dump.signing_keys {
                sqlx::query(
                    "INSERT INTO signing_keys (id, owner_id, key_name, private_pem, \
                     public_pem, created_at, retired_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(key.id)
                .bind(key.owner_id)
                .bind(&key.key_name)
                .bind(&key.private_pem)
                .bind(&key.public_pem)
                .bind(key.created_at)
                .bind(key.retired_at)
                .execute(&mut **tx)
                .await?;
            }
            for keyring in &dump.owner_keyrings {
                sqlx::query("INSERT INTO owner_keyrings (owner_id, enabled) VALUES ($1, $2)")
                    .bind(keyring.owner_id)
                    .bind(keyring.enabled)
                    .execute(&mut **tx)
                    .await?;
            }
            for repository in &dump.repositories {
                sqlx::query(
                    "INSERT INTO repositories (id, owner_id, branch, name, wanted_gen, \
                     built_gen, dependency_check) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(repository.id)
                .bind(repository.owner_id)
                .bind(&repository.branch)
                .bind(&repository.name)
                .bind(repository.wanted_gen)
                .bind(repository.built_gen)
                .bind(&repository.dependency_check)
                .execute(&mut **tx)
                .await?;
            }
            for package in &dump.packages {
                sqlx::query(
                    "INSERT INTO packages (id, repository_id, arch, name, version, filename, \
                     checksum, sha256, size, stanza, created_at, modified_ms, pinned) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(package.id)
                .bind(package.repository_id)
                .bind(&package.arch)
                .bind(&package.name)
                .bind(&package.version)
                .bind(&package.filename)
                .bind(&package.checksum)
                .bind(&package.sha256)
                .bind(package.size)
                .bind(&package.stanza)
                .bind(package.created_at)
                .bind(package.modified_ms)
                .bind(package.pinned)
                .execute(&mut **tx)
                .await?;
            }
            for webhook in &dump.webhooks {
                sqlx::query(
                    "INSERT INTO webhooks (id, owner_id, url, secret_sealed, events, \
                     created_ms, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(webhook.id)
                .bind(webhook.owner_id)
                .bind(&webhook.url)
                .bind(&webhook.secret_sealed)
                .bind(&webhook.events)
                .bind(webhook.created_ms)
                .bind(&webhook.created_by)
                .execute(&mut **tx)
                .await?;
            }
            for rule in &dump.retention_rules {
                sqlx::query(
                    "INSERT INTO retention_rules (owner_id, branch, repository, \
                     keep_versions, max_age_secs, keep_min, include_globs, exclude_globs, \
                     updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(rule.owner_id)
                .bind(&rule.branch)
                .bind(&rule.repository)
                .bind(rule.keep_versions)
                .bind(rule.max_age_secs)
                .bind(rule.keep_min)
                .bind(&rule.include_globs)
                .bind(&rule.exclude_globs)
                .bind(rule.updated_at)
                .execute(&mut **tx)
                .await?;
            }
            for index in &dump.indexes {
                sqlx::query(
                    "INSERT INTO indexes (repository_id, arch, generation, content, sha256, \
                     built_at, modified_ms, entries, signatures, adb, adb_sha256) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(index.repository_id)
                .bind(&index.arch)
                .bind(index.generation)
                .bind(&index.content)
                .bind(&index.sha256)
                .bind(index.built_at)
                .bind(index.modified_ms)
                .bind(index.entries)
                .bind(&index.signatures)
                .bind(&index.adb)
                .bind(&index.adb_sha256)
                .execute(&mut **tx)
                .await?;
            }
            for upstream in &dump.upstreams {
                sqlx::query(
                    "INSERT INTO upstreams (repository_id, url, keys, refresh_secs) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(upstream.repository_id)
                .bind(&upstream.url)
                .bind(&upstream.keys)
                .bind(upstream.refresh_secs)
                .execute(&mut **tx)
                .await?;
            }
            for index in &dump.upstream_indexes {
                sqlx::query(
                    "INSERT INTO upstream_indexes (repository_id, arch, content, sha256, \
                     etag, last_modified, verified_ms, checked_ms, error, signed, \
                     signed_sha256, signed_keys, signed_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
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
                .execute(&mut **tx)
                .await?;
            }
            for file in &dump.upstream_files {
                sqlx::query(
                    "INSERT INTO upstream_files (repository_id, arch, filename, sha256, size, \
                     checksum, stored_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(file.repository_id)
                .bind(&file.arch)
                .bind(&file.filename)
                .bind(&file.sha256)
                .bind(file.size)
                .bind(&file.checksum)
                .bind(file.stored_ms)
                .execute(&mut **tx)
                .await?;
            }
            for row in &dump.virtuals {
                sqlx::query("INSERT INTO virtuals (repository_id) VALUES ($1)")
                    .bind(row.repository_id)
                    .execute(&mut **tx)
                    .await?;
            }
            for row in &dump.virtual_members {
                sqlx::query(
                    "INSERT INTO virtual_members (repository_id, position, member_id) \
                     VALUES ($1, $2, $3)",
                )
                .bind(row.repository_id)
                .bind(row.position)
                .bind(row.member_id)
                .execute(&mut **tx)
                .await?;
            }
            for row in &dump.virtual_indexes {
                sqlx::query(
                    "INSERT INTO virtual_indexes (repository_id, arch, fingerprint, content, \
                     sha256, adb, adb_sha256, adb_error, entries, modified_ms, built_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(row.repository_id)
                .bind(&row.arch)
                .bind(&row.fingerprint)
                .bind(&row.content)
                .bind(&row.sha256)
                .bind(&row.adb)
                .bind(&row.adb_sha256)
                .bind(&row.adb_error)
                .bind(row.entries)
                .bind(row.modified_ms)
                .bind(row.built_ms)
                .execute(&mut **tx)
                .await?;
            }
            for row in &dump.served_history {
                sqlx::query(
                    "INSERT INTO served_history (id, repository_id, arch, filename, stanza, \
                     member_id, sha256, first_ms, last_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(row.id)
                .bind(row.repository_id)
                .bind(&row.arch)
                .bind(&row.filename)
                .bind(&row.stanza)
                .bind(row.member_id)
                .bind(&row.sha256)
                .bind(row.first_ms)
                .bind(row.last_ms)
                .execute(&mut **tx)
                .await?;
            }
            for row in &dump.snapshots {
                sqlx::query(
                    "INSERT INTO snapshots (repository_id, name, at_ms) VALUES ($1, $2, $3)",
                )
                .bind(row.repository_id)
                .bind(&row.name)
                .bind(row.at_ms)
                .execute(&mut **tx)
                .await?;
            }
            Ok(())
        }
    };
}
pub(super) use dump_functions;
