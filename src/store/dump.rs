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
}

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
}

impl TableCounts {
    /// Each table's name with its count, in the order rows are copied.
    pub fn tables(&self) -> [(&'static str, i64); 10] {
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
        ]
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
