//! Metadata storage: the `Store` trait and its records. SQL lives only in the backends.

mod audit;
mod catalog;
mod dependencies;
mod dump;
mod history;
mod keyring;
mod keys;
mod postgres;
mod read_cache;
mod retention;
mod sessions;
mod sqlite;
mod upstream;
mod virtuals;
mod webhooks;

use async_trait::async_trait;
use serde::Serialize;

pub use audit::{AuditEntry, AuditQuery};
pub use catalog::{
    IndexSummary, OwnerScope, PackageSearch, PatternItem, SearchCollector, SearchFile, SearchPage,
    SearchTerm,
};
pub use dependencies::{Dependent, NameProvider};
pub use dump::{
    Dump, IndexRow, MemberRow, OwnerKeyringRow, OwnerRow, PackageRow, RepositoryRow,
    RetentionRuleRow, ServedHistoryRow, SigningKeyRow, SnapshotRow, TableCounts, TokenRow,
    UpstreamRow, UserRow, VirtualIndexRow, VirtualMemberRow, VirtualRow, WebhookRow,
};
pub use history::{HistoryChange, ServedFile, ServedRow, Snapshot};
pub use keys::{Retirement, SigningKeyRecord};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use upstream::{Upstream, UpstreamFile, UpstreamFreshness, UpstreamIndex, UpstreamKey};
pub use virtuals::VirtualIndex;
pub use webhooks::{AttemptOutcome, Delivery, NewWebhook, Webhook, EVENTS as WEBHOOK_EVENTS};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint or a domain rule says the row already exists.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// Whether the database could not be reached (down, restarting, refusing connections,
    /// connection lost): a transient outage rather than a fault of the request or the data.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(err) => is_unavailable(err),
            StoreError::Migrate(sqlx::migrate::MigrateError::Execute(err)) => is_unavailable(err),
            _ => false,
        }
    }
}

/// Whether `err` means the database server is unreachable: I/O failures, a pool that
/// found no live connection in time, a broken protocol stream, and the PostgreSQL errors
/// of class 08 (connection exception), 57P01-57P03 (shut down by the administrator or by
/// a crash, starting up) and 53300 (too many connections). Not so a TLS setup that fails
/// (`sslmode` the server cannot do, an `sslrootcert` that is no certificate) or a server
/// certificate that does not verify: a configuration to fix, which waiting does not cure.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(io) => !is_tls_refusal(io),
        sqlx::Error::Protocol(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_some_and(|pg| {
                let code = pg.code();
                code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
            }),
        sqlx::Error::Migrate(migrate) => match migrate.as_ref() {
            sqlx::migrate::MigrateError::Execute(err) => is_unavailable(err),
            _ => false,
        },
        _ => false,
    }
}

/// Whether a connection's I/O failed because the TLS handshake refused the server (its
/// certificate, or what it offers) or was refused by it, rather than because the
/// connection broke: rustls reports those as invalid data with its error inside.
pub fn is_tls_refusal(err: &std::io::Error) -> bool {
    use rustls::Error as Tls;
    err.kind() == std::io::ErrorKind::InvalidData
        && matches!(
            err.get_ref().and_then(|inner| inner.downcast_ref::<Tls>()),
            Some(
                Tls::InvalidCertificate(_)
                    | Tls::NoCertificatesPresented
                    | Tls::UnsupportedNameType
                    | Tls::PeerIncompatible(_)
                    | Tls::AlertReceived(_)
            )
        )
}

/// A right on an owner, also the scope of a token. Ordered: read < write < admin.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role or scope {other:?}: use read, write or admin"
            )),
        }
    }
}

#[derive(Clone)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub is_admin: bool,
    pub password_hash: Option<String>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("is_admin", &self.is_admin)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct Owner {
    pub id: i64,
    pub name: String,
    pub is_private: bool,
    pub is_org: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenRecord {
    pub id: i64,
    /// SHA-256 of the secret; the secret itself is never stored.
    #[serde(skip)]
    pub token_hash: String,
    pub user_id: i64,
    pub user_name: String,
    pub prefix: String,
    pub scope: Role,
    pub owner_id: Option<i64>,
    pub owner_name: Option<String>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub created_at: i64,
    /// Chosen at creation to say what the token is for.
    pub label: Option<String>,
    /// Unix seconds of the last authentication with it, to the minute.
    pub last_used_at: Option<i64>,
}

pub struct NewToken<'a> {
    pub user_id: i64,
    pub token_hash: &'a str,
    pub prefix: &'a str,
    pub scope: Role,
    pub owner_id: Option<i64>,
    pub expires_at: Option<i64>,
    pub label: Option<&'a str>,
}

/// A login session to store: `create_session` keeps it under `id_hash`, the SHA-256 of
/// its id (never the id).
pub struct NewSession<'a> {
    pub id_hash: &'a str,
    pub user_id: i64,
    /// The token logged in with; None for a password login.
    pub token_id: Option<i64>,
    /// SHA-256 of the user's password hash at login (password logins).
    pub password_fingerprint: Option<&'a str>,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: i64,
}

/// The bounds `create_session` keeps, in the transaction that inserts the session.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Live sessions per user: the user's oldest go to make room for the new one.
    pub per_user: i64,
    /// Live sessions in all: a login past this is refused (no other user's session goes).
    pub total: i64,
    /// Successful logins per user, by the generic cell rate algorithm: one login every
    /// `login_interval_ms`, with bursts of up to `login_burst_ms / login_interval_ms + 1`.
    pub login_interval_ms: i64,
    pub login_burst_ms: i64,
    /// Unix milliseconds.
    pub now_ms: i64,
}

/// What `create_session` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionAdmission {
    /// Stored; `evicted` sessions of the same user went to make room.
    Created { evicted: u64 },
    /// The user logged in too often: the next login is allowed in `retry_after_ms`.
    TooSoon { retry_after_ms: i64 },
    /// `SessionLimits::total` sessions are live; the first of them ends at `next_expiry`
    /// (Unix seconds).
    Full { next_expiry: i64 },
}

/// A session as read back, with its user and its token as they are now.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id_hash: String,
    pub user: User,
    pub token: Option<SessionToken>,
    pub password_fingerprint: Option<String>,
    /// Unix seconds.
    pub expires_at: i64,
}

/// The token a session was made with, as it is now.
#[derive(Debug, Clone)]
pub struct SessionToken {
    pub id: i64,
    pub scope: Role,
    pub owner_id: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// Authentication failures counted under one throttle key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureCount {
    pub key: Vec<u8>,
    pub failures: i64,
    /// Unix milliseconds of the last failure.
    pub last_ms: i64,
}

/// A user as listed by administrators.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UserSummary {
    pub id: i64,
    pub name: String,
    pub is_admin: bool,
    pub has_password: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Tokens neither revoked nor expired.
    pub active_tokens: i64,
    /// Owners the user has a role on.
    pub memberships: i64,
}

/// An owner as listed by administrators.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OwnerSummary {
    pub id: i64,
    pub name: String,
    pub is_private: bool,
    pub is_org: bool,
    /// Unix seconds.
    pub created_at: i64,
    pub members: i64,
    pub repositories: i64,
    pub packages: i64,
}

/// A user's role on an owner.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Member {
    pub user_id: i64,
    pub user_name: String,
    pub role: Role,
}

pub struct StoredKey {
    pub key_name: String,
    pub private_pem: String,
    pub public_pem: String,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

/// Identifies one repository of an owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoRef {
    pub owner_id: i64,
    pub branch: String,
    pub repository: String,
}

#[derive(Debug, Clone)]
pub struct Repository {
    pub id: i64,
    pub owner_id: i64,
    pub owner_name: String,
    pub branch: String,
    pub name: String,
    pub wanted_gen: i64,
    pub built_gen: i64,
}

#[derive(Debug, Clone)]
pub struct NewPackage {
    pub arch: String,
    pub name: String,
    pub version: String,
    pub filename: String,
    pub checksum: String,
    pub sha256: String,
    pub size: i64,
    pub stanza: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Package {
    pub id: i64,
    pub repository_id: i64,
    pub arch: String,
    pub name: String,
    pub version: String,
    pub filename: String,
    pub checksum: String,
    pub sha256: String,
    pub size: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// When this file became current at its download path, Unix milliseconds.
    pub modified_ms: i64,
}

/// A package row with the repository it is in and its index stanza, as the catalog reads
/// it.
#[derive(Debug, Clone)]
pub struct CatalogFile {
    pub package: Package,
    pub branch: String,
    pub repository: String,
    /// The stanza the index lists for it (every Alpine field).
    pub stanza: String,
}

/// A retention rule as stored (what it means: `registry::retention`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRule {
    pub owner_id: i64,
    /// Empty for a rule of the whole owner.
    pub branch: String,
    /// Empty for a rule of the owner or of a branch.
    pub repository: String,
    /// Keeps the newest this many versions of each name and architecture.
    pub keep_versions: Option<i64>,
    /// Deletes versions uploaded longer ago than this, unless among the newest `keep_min`.
    pub max_age_secs: Option<i64>,
    pub keep_min: i64,
    /// Name globs the rule applies to (all names when empty), and names it leaves alone.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Unix seconds.
    pub updated_at: i64,
}

/// A package row with its pin, as retention reads it.
#[derive(Debug, Clone)]
pub struct RetainedFile {
    pub package: Package,
    /// A pinned file is never removed by a retention rule.
    pub pinned: bool,
}

/// What `insert_package` did.
#[derive(Debug, Clone)]
pub struct InsertedPackage {
    pub package: Package,
    /// The wanted generation that includes the package.
    pub generation: i64,
    /// Whether this insert created the repository.
    pub repository_created: bool,
}

/// One repository as listed for administrators.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RepositorySummary {
    pub owner: String,
    pub branch: String,
    pub repository: String,
    /// Architectures with a served index (for remote and virtual repositories, those
    /// fetched or built so far), plus `noarch` when the repository holds noarch packages
    /// (listed in the index of every architecture); sorted.
    pub arches: Vec<String>,
    pub packages: i64,
    /// When the newest package was uploaded, Unix milliseconds; None when it has none.
    pub last_publish_ms: Option<i64>,
    /// `hosted` (takes uploads), `remote` (a cache of an upstream repository) or
    /// `virtual` (the merged indexes of its members).
    pub kind: String,
    /// The members of a virtual repository, in order (`OWNER/BRANCH/REPOSITORY`); empty
    /// for the others.
    pub members: Vec<String>,
}

/// What `delete_repository` removed with the repository row.
#[derive(Debug, Clone, Serialize)]
pub struct RemovedRepository {
    pub packages: i64,
    /// Architectures whose index was served until then.
    pub arches: Vec<String>,
}

/// How many generations of removals a repository keeps: changes since an older generation
/// are incomplete, and a build from that far back reads everything instead.
pub const CHANGE_WINDOW: i64 = 10_000;

/// What changed in a repository after a generation, read from one snapshot.
#[derive(Debug, Clone)]
pub struct IndexChanges {
    /// The wanted generation the changes run up to.
    pub generation: i64,
    /// The generation of the indexes served now (`built_gen`), whoever built them: a
    /// build that kept the indexes of another generation cannot apply these changes to
    /// them.
    pub built_generation: i64,
    /// Rows inserted after the generation asked for and still present.
    pub added: Vec<IndexEntry>,
    /// Ids of the rows removed after it (in any order; an id may have been inserted and
    /// removed within the range, and SQLite may give a removed id to a later row).
    pub removed: Vec<i64>,
    /// Architectures that currently have a served index.
    pub served_arches: Vec<String>,
}

/// What an index build renders from: one consistent read of a repository.
#[derive(Debug, Clone)]
pub struct IndexSnapshot {
    pub generation: i64,
    pub packages: Vec<IndexEntry>,
    /// Architectures that currently have a served index.
    pub served_arches: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct IndexEntry {
    /// The package row's id.
    pub id: i64,
    pub arch: String,
    pub name: String,
    pub version: String,
    pub checksum: String,
    pub stanza: String,
}

#[derive(Debug, Clone)]
pub struct RenderedIndex {
    pub arch: String,
    pub content: Vec<u8>,
    pub sha256: String,
    /// Packages it lists.
    pub entries: usize,
    /// Its signature entry names, in order.
    pub signatures: Vec<String>,
    /// The apk v3 index of the same packages (`Packages.adb`), when rendered.
    pub adb: Option<RenderedAdb>,
}

/// A rendered `Packages.adb`.
#[derive(Debug, Clone)]
pub struct RenderedAdb {
    pub content: Vec<u8>,
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct StoredIndex {
    pub generation: i64,
    pub content: bytes::Bytes,
    pub sha256: String,
    /// Unix seconds: when these bytes were first published.
    pub built_at: i64,
    /// The same, Unix milliseconds (what `Last-Modified` is derived from).
    pub modified_ms: i64,
    /// The apk v3 index published with it (`Packages.adb`) and its SHA-256; None for a row
    /// published before there was one.
    pub adb: Option<(bytes::Bytes, String)>,
}

/// The metadata store: `SqliteStore` or `PostgresStore`, with the same behaviour.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Whether the database answers.
    async fn ping(&self) -> StoreResult<()>;
    /// A counter that moves whenever anything read from this store may have changed (by
    /// this process at once, by another within its watch interval), for answers kept in
    /// memory above the store; None when the store keeps no such counter (every read asks
    /// the database).
    fn read_epoch(&self) -> Option<u64> {
        None
    }

    async fn count_users(&self) -> StoreResult<i64>;
    /// Creates a user together with its personal namespace (an owner of the same name,
    /// with the user as its admin).
    async fn create_user(
        &self,
        name: &str,
        password_hash: Option<&str>,
        is_admin: bool,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<User>;
    async fn user_by_name(&self, name: &str) -> StoreResult<Option<User>>;

    async fn create_owner(
        &self,
        name: &str,
        is_private: bool,
        is_org: bool,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Owner>;
    async fn owner_by_name(&self, name: &str) -> StoreResult<Option<Owner>>;
    async fn set_member(
        &self,
        owner_id: i64,
        user_id: i64,
        role: Role,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()>;
    async fn member_role(&self, owner_id: i64, user_id: i64) -> StoreResult<Option<Role>>;

    async fn insert_token(
        &self,
        token: NewToken<'_>,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<i64>;
    async fn token_by_hash(&self, token_hash: &str) -> StoreResult<Option<TokenRecord>>;
    async fn list_tokens(&self, user_id: Option<i64>) -> StoreResult<Vec<TokenRecord>>;
    /// Returns false when no unrevoked token has that id. The sessions logged in with the
    /// token end with it.
    async fn revoke_token(
        &self,
        id: i64,
        now: i64,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<bool>;

    /// The owner's newest active key: the one that signs first.
    async fn signing_key(&self, owner_id: i64) -> StoreResult<Option<StoredKey>>;
    /// Stores `key` unless the owner already has a key; returns the owner's newest active
    /// key either way.
    async fn insert_signing_key(
        &self,
        owner_id: i64,
        key: StoredKey,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<StoredKey>;
    /// Every key of the owner, retired ones included, newest first.
    async fn signing_keys(&self, owner_id: i64) -> StoreResult<Vec<SigningKeyRecord>>;
    /// The ids of the owner's active keys, newest first (a cheap check of cached keys).
    async fn active_key_ids(&self, owner_id: i64) -> StoreResult<Vec<i64>>;
    /// Adds `key` as the owner's newest active key and raises the wanted generation of
    /// every repository of the owner, in one transaction; returns those repositories.
    /// Conflict when a key of that name exists (in any owner), or when the owner has
    /// `max_active` active keys already.
    async fn add_signing_key(
        &self,
        owner_id: i64,
        key: StoredKey,
        max_active: i64,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Vec<Repository>>;
    /// Retires the owner's key `key_name` at `now` (Unix seconds) unless it is its last
    /// active one, and raises the wanted generation of every repository of the owner, in
    /// one transaction.
    async fn retire_signing_key(
        &self,
        owner_id: i64,
        key_name: &str,
        now: i64,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Retirement>;
    async fn owners_without_key(&self) -> StoreResult<Vec<Owner>>;
    /// Whether the owner's keyring package is on; None when it was never switched (the
    /// owner follows `signing.keyring`).
    async fn keyring_enabled(&self, owner_id: i64) -> StoreResult<Option<bool>>;
    /// Switches the owner's keyring package on or off.
    async fn set_keyring_enabled(
        &self,
        owner_id: i64,
        enabled: bool,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()>;

    /// Inserts a package row and bumps the repository's wanted generation in one
    /// transaction. A missing repository is created in the same transaction when
    /// `create_repository` is true, else NotFound (and nothing changes). Conflict when the
    /// file, or the same name and version under `noarch` versus a concrete architecture,
    /// exists.
    async fn insert_package(
        &self,
        repo: &RepoRef,
        package: NewPackage,
        create_repository: bool,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<InsertedPackage>;
    /// The package served at `{arch}/{filename}`: the row of that architecture, else the
    /// `noarch` row.
    async fn find_package(
        &self,
        repo: &RepoRef,
        arch: &str,
        filename: &str,
    ) -> StoreResult<Option<Package>>;
    /// The index stanza of the package row `package_id` (every Alpine field, as its upload
    /// parsed them); None when the row is gone.
    async fn package_stanza(&self, package_id: i64) -> StoreResult<Option<String>>;
    /// Deletes what `find_package` would return, bumping the wanted generation; returns
    /// the deleted row and the generation that excludes it.
    async fn delete_package(
        &self,
        repo: &RepoRef,
        arch: &str,
        filename: &str,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Option<(Package, i64)>>;
    /// Pins or unpins package row `package_id`; false when the row is gone.
    async fn set_pinned(
        &self,
        package_id: i64,
        pinned: bool,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<bool>;
    /// Every package row of a repository with its pin, by row id.
    async fn retained_files(&self, repository_id: i64) -> StoreResult<Vec<RetainedFile>>;
    /// Stores `rule`, replacing the one of its scope.
    async fn set_retention_rule(
        &self,
        rule: &RetentionRule,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()>;
    /// The rules of one owner, or of all; by owner, branch and repository.
    async fn retention_rules(&self, owner_id: Option<i64>) -> StoreResult<Vec<RetentionRule>>;
    /// Whether a rule of that scope existed.
    async fn remove_retention_rule(
        &self,
        owner_id: i64,
        branch: &str,
        repository: &str,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<bool>;
    /// Whether any package row, cached upstream file or row of a served history
    /// references the blob.
    async fn blob_referenced(&self, sha256: &str) -> StoreResult<bool>;
    /// Every blob digest a package row, cached upstream file or row of a served history
    /// references.
    async fn referenced_blobs(&self) -> StoreResult<std::collections::HashSet<String>>;
    /// Digests of blobs that lost a reference at or after `since_ms`: a package row that
    /// referenced them was deleted (alone, or with its repository or owner) then. Every
    /// deletion of package rows records it in its transaction, dated by the store's clock.
    async fn released_blobs(&self, since_ms: i64)
        -> StoreResult<std::collections::HashSet<String>>;
    /// Whether the blob lost a reference at or after `since_ms`.
    async fn blob_released_since(&self, sha256: &str, since_ms: i64) -> StoreResult<bool>;
    /// Forgets the releases before `before_ms`.
    async fn forget_releases(&self, before_ms: i64) -> StoreResult<()>;
    /// The packages of one repository.
    async fn list_packages(&self, repository_id: i64) -> StoreResult<Vec<Package>>;

    // The catalog: what people browse, read from the catalog tables (see `catalog`).

    /// The owners in `scope`, by name.
    async fn owners_in(&self, scope: &OwnerScope) -> StoreResult<Vec<Owner>>;
    /// A page of a package search, in one read: how many (name, owner) pairs match, the
    /// page's pairs, and the page's matching files given to `collector` by package id,
    /// then the descriptions it asks for.
    async fn search_packages(
        &self,
        search: &PackageSearch,
        collector: &mut dyn SearchCollector,
    ) -> StoreResult<SearchPage>;
    /// Every file of one package name of the owner, with its place and stanza, by row id.
    async fn package_files(&self, owner_id: i64, name: &str) -> StoreResult<Vec<CatalogFile>>;
    /// The files the index of one architecture of a repository lists (that architecture's
    /// and the noarch ones), with their stanzas, by row id.
    async fn index_files(&self, repository_id: i64, arch: &str) -> StoreResult<Vec<CatalogFile>>;
    /// For each of `names` that the owner has: the owner's package of that name, else the
    /// first by name of its packages providing it; (name, package) pairs in no order.
    async fn providers(
        &self,
        owner_id: i64,
        names: &[String],
    ) -> StoreResult<Vec<(String, String)>>;
    /// The owner's packages (by name, other than `name`) that depend on `name` or on a
    /// name one of its files provides: the first `limit` by name, and how many there are.
    async fn required_by(
        &self,
        owner_id: i64,
        name: &str,
        limit: usize,
    ) -> StoreResult<(Vec<String>, u64)>;
    // The publish-time dependency check (see `dependencies`).

    /// The packages of the owner's repositories of `branch` named one of `names` or
    /// providing one of them, in no order.
    async fn name_providers(
        &self,
        owner_id: i64,
        branch: &str,
        names: &[String],
    ) -> StoreResult<Vec<NameProvider>>;
    /// The packages of the repository that depend on one of `names`, by row id.
    async fn dependents(&self, repository_id: i64, names: &[String])
        -> StoreResult<Vec<Dependent>>;
    /// The repository's own dependency check setting (`off`, `warn`, `refuse`, or None for
    /// the configured one); None when the repository does not exist.
    async fn dependency_check(&self, repo: &RepoRef) -> StoreResult<Option<Option<String>>>;
    /// Sets (None: clears) the repository's own setting; false when it does not exist.
    async fn set_dependency_check(
        &self,
        repo: &RepoRef,
        value: Option<&str>,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<bool>;
    /// The served indexes of a repository, by architecture, without their bytes.
    async fn index_summaries(&self, repository_id: i64) -> StoreResult<Vec<IndexSummary>>;

    async fn repository(&self, repo: &RepoRef) -> StoreResult<Option<Repository>>;
    async fn repository_by_id(&self, id: i64) -> StoreResult<Option<Repository>>;
    /// Whether the repository holds any noarch package.
    async fn has_noarch(&self, repository_id: i64) -> StoreResult<bool>;
    /// Whether the repository holds no package at all.
    async fn is_empty_repository(&self, repository_id: i64) -> StoreResult<bool>;
    /// Repositories matching the optional filters.
    async fn list_repositories(
        &self,
        owner_id: Option<i64>,
        branch: Option<&str>,
        repository: Option<&str>,
    ) -> StoreResult<Vec<Repository>>;
    /// Repositories whose built generation lags the wanted one.
    async fn stale_repositories(&self) -> StoreResult<Vec<Repository>>;
    /// Bumps the wanted generation (forces a rebuild); returns the new generation.
    async fn bump_generation(&self, repository_id: i64) -> StoreResult<i64>;

    /// One consistent read of everything an index build needs. NotFound when the
    /// repository does not exist (it was removed).
    async fn index_snapshot(&self, repository_id: i64) -> StoreResult<IndexSnapshot> {
        // Every row is newer than generation -1 (rows older than the column say 0).
        let all = self.index_changes(repository_id, -1).await?;
        Ok(IndexSnapshot {
            generation: all.generation,
            packages: all.added,
            served_arches: all.served_arches,
        })
    }
    /// The rows inserted and removed after generation `since`, up to the repository's
    /// wanted generation, from one snapshot; complete only while `since` is within
    /// [`CHANGE_WINDOW`] generations of it. NotFound when the repository is gone.
    async fn index_changes(&self, repository_id: i64, since: i64) -> StoreResult<IndexChanges>;
    /// Publishes the indexes rendered at `generation`: replaces the rows of `indexes`,
    /// removes those of `removed`, raises built_gen. Rows already at a newer generation
    /// (written by another builder) are left alone. An index with the bytes already served
    /// keeps its dates; a new one is dated now. NotFound, writing nothing, when the
    /// repository no longer exists.
    async fn publish_indexes(
        &self,
        repository_id: i64,
        generation: i64,
        indexes: Vec<RenderedIndex>,
        removed: Vec<String>,
        now_ms: i64,
    ) -> StoreResult<()>;
    async fn index(&self, repository_id: i64, arch: &str) -> StoreResult<Option<StoredIndex>>;

    /// The owner whose name equals `name` ignoring ASCII case (the exact spelling first).
    async fn owner_by_name_ignoring_case(&self, name: &str) -> StoreResult<Option<Owner>>;
    /// The user whose name equals `name` ignoring ASCII case (the exact spelling first).
    async fn user_by_name_ignoring_case(&self, name: &str) -> StoreResult<Option<User>>;
    async fn list_users(&self) -> StoreResult<Vec<UserSummary>>;
    async fn list_owners(&self) -> StoreResult<Vec<OwnerSummary>>;
    async fn list_members(&self, owner_id: i64) -> StoreResult<Vec<Member>>;
    /// Whether the user had a role on the owner.
    async fn remove_member(
        &self,
        owner_id: i64,
        user_id: i64,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<bool>;
    /// Deletes the user (its tokens and memberships go with it) and, in the same
    /// transaction, `namespace` with everything in it.
    async fn delete_user(
        &self,
        user_id: i64,
        namespace: Option<i64>,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()>;
    /// Deletes the owner with its key, members, owner-limited tokens, repositories,
    /// packages and indexes, in one transaction.
    async fn delete_owner(&self, owner_id: i64, audit: Option<&AuditEntry>) -> StoreResult<()>;
    async fn set_owner_private(
        &self,
        owner_id: i64,
        is_private: bool,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()>;
    /// Sets the password; the user's password sessions end with the old one.
    async fn set_password(
        &self,
        user_id: i64,
        password_hash: Option<&str>,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()>;
    /// Records that the token authenticated at `now`.
    async fn touch_token(&self, id: i64, now: i64) -> StoreResult<()>;
    /// Creates an empty repository. Conflict when it exists.
    async fn create_repository(
        &self,
        repo: &RepoRef,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Repository>;
    /// Every repository, or those of one owner, with what it serves; ordered by owner,
    /// branch and name.
    async fn repository_summaries(
        &self,
        owner_id: Option<i64>,
    ) -> StoreResult<Vec<RepositorySummary>>;
    /// Deletes the repository, its packages and its indexes in one transaction (blobs are
    /// left to orphan collection). None when it does not exist. Repository ids are never
    /// reused, so nothing keyed by the old id can reach a later repository.
    async fn delete_repository(
        &self,
        repo: &RepoRef,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Option<RemovedRepository>>;

    // The audit log (see `audit`); entries are inserted by the methods that change things.

    /// The entries `query` selects, newest first.
    async fn audit_entries(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>>;
    /// Deletes the entries older than `before_ms`; returns how many.
    async fn prune_audit(&self, before_ms: i64) -> StoreResult<u64>;

    // Webhooks (see `webhooks`); their events are queued by the methods that make the
    // changes, in the same transaction.

    /// Adds a webhook unless its owner has `max_per_owner` already (Conflict).
    async fn create_webhook(
        &self,
        webhook: &NewWebhook,
        max_per_owner: i64,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Webhook>;
    async fn webhooks(&self, owner_id: i64) -> StoreResult<Vec<Webhook>>;
    async fn webhook(&self, id: i64) -> StoreResult<Option<Webhook>>;
    /// Deletes the webhook with its deliveries; whether it existed.
    async fn delete_webhook(&self, id: i64, audit: Option<&AuditEntry>) -> StoreResult<bool>;
    /// The newest `limit` deliveries of a webhook, newest first.
    async fn webhook_deliveries(&self, webhook_id: i64, limit: i64) -> StoreResult<Vec<Delivery>>;
    /// Claims at most `limit` pending deliveries due at `now_ms`: none is claimed again
    /// (by any instance) before `lease_until_ms` unless its attempt is recorded.
    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>>;
    /// Records how an attempt at delivery `id` went.
    async fn finish_delivery(&self, id: i64, outcome: &AttemptOutcome) -> StoreResult<()>;
    /// Deletes the finished deliveries of each webhook but its newest `keep`; how many.
    async fn prune_deliveries(&self, keep: i64) -> StoreResult<u64>;

    // Login sessions of the web pages.

    /// Stores a session within `limits`, in one transaction: refused (nothing written)
    /// when the user logged in too often or when `limits.total` sessions are live; else
    /// the user's expired sessions and, past `limits.per_user`, their oldest live ones are
    /// deleted and the new one inserted.
    async fn create_session(
        &self,
        session: NewSession<'_>,
        limits: SessionLimits,
    ) -> StoreResult<SessionAdmission>;
    /// The session stored under `id_hash`, unless it expired by `now` (Unix seconds): one
    /// indexed query, with its user and token.
    async fn session(&self, id_hash: &str, now: i64) -> StoreResult<Option<SessionRecord>>;
    /// Whether a session was stored under `id_hash`.
    async fn delete_session(&self, id_hash: &str) -> StoreResult<bool>;
    /// Deletes the sessions that expired by `now`; returns how many.
    async fn prune_sessions(&self, now: i64) -> StoreResult<u64>;
    /// Sessions stored (expired ones included until pruned), of one user or of all.
    async fn count_sessions(&self, user_id: Option<i64>) -> StoreResult<i64>;

    // The authentication failure throttle shared by the processes on one database.

    /// The counts of `keys` (those that have one; in no particular order): one indexed
    /// query.
    async fn auth_failures(&self, keys: [&[u8]; 2]) -> StoreResult<Vec<FailureCount>>;
    /// Counts one failure under each of `keys` at `now_ms`; a count whose last failure is
    /// older than `window_ms` starts again from one.
    async fn record_auth_failure(
        &self,
        keys: [&[u8]; 2],
        now_ms: i64,
        window_ms: i64,
    ) -> StoreResult<()>;
    /// Forgets the failures of `key` (a success).
    async fn clear_auth_failures(&self, key: &[u8]) -> StoreResult<()>;
    /// Forgets every count whose last failure is before `before_ms`; returns how many.
    async fn prune_auth_failures(&self, before_ms: i64) -> StoreResult<u64>;

    // Moving an installation to another backend (`registry::migrate`).

    /// Every row of every table, read in one transaction (one consistent snapshot), with
    /// the highest repository id ever handed out.
    async fn export(&self) -> StoreResult<Dump>;
    /// Rows per table, read in one statement.
    async fn table_counts(&self) -> StoreResult<TableCounts>;
    /// Bytes of the distinct package files the rows name.
    async fn stored_bytes(&self) -> StoreResult<i64>;
    /// Writes every row of `dump`, ids as they are, into this database in one
    /// transaction, then moves the id sequences past the copied ids (and past
    /// `dump.last_repository_id`), so that new rows take fresh ids. Conflict, writing
    /// nothing, when the database holds any row.
    async fn import(&self, dump: &Dump) -> StoreResult<()>;

    // Remote repositories (see `upstream`).

    /// Creates a remote repository of `upstream` (whose `repository_id` is ignored) in one
    /// transaction: it is remote from the moment it exists. Conflict when it exists.
    async fn create_remote_repository(
        &self,
        repo: &RepoRef,
        upstream: &Upstream,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Repository>;
    /// The upstream of a repository; None for one that is not remote.
    async fn upstream(&self, repository_id: i64) -> StoreResult<Option<Upstream>>;
    /// The ids of every remote repository.
    async fn remote_repository_ids(&self) -> StoreResult<Vec<i64>>;
    /// The upstream index of one architecture, as last verified and as served.
    async fn upstream_index(
        &self,
        repository_id: i64,
        arch: &str,
    ) -> StoreResult<Option<UpstreamIndex>>;
    /// Stores an index verified now, replacing the one of its architecture.
    async fn save_upstream_index(&self, index: &UpstreamIndex) -> StoreResult<()>;
    /// Records an attempt to refresh an index at `checked_ms`: confirmed by upstream
    /// (`verified`, a 304), or failed with `error` (the index stays as it was).
    async fn upstream_checked(
        &self,
        repository_id: i64,
        arch: &str,
        checked_ms: i64,
        verified: bool,
        error: Option<&str>,
    ) -> StoreResult<()>;
    /// How fresh each architecture's upstream index of the repository is.
    async fn upstream_freshness(&self, repository_id: i64) -> StoreResult<Vec<UpstreamFreshness>>;
    /// How many upstream indexes, of every remote repository, failed their last refresh.
    async fn stale_upstream_indexes(&self) -> StoreResult<i64>;
    /// A file cached from upstream.
    async fn upstream_file(
        &self,
        repository_id: i64,
        arch: &str,
        filename: &str,
    ) -> StoreResult<Option<UpstreamFile>>;
    /// Records a file fetched, checked and committed to blob storage; one recorded already
    /// (by another instance) is kept.
    async fn insert_upstream_file(&self, file: &UpstreamFile) -> StoreResult<()>;
    /// Every file cached of a remote repository.
    async fn upstream_files(&self, repository_id: i64) -> StoreResult<Vec<UpstreamFile>>;

    // Virtual repositories (see `virtuals`).

    /// Creates a virtual repository listing `members` (repository ids, in order) in one
    /// transaction: it is virtual from the moment it exists. Conflict when it exists.
    async fn create_virtual_repository(
        &self,
        repo: &RepoRef,
        members: &[i64],
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Repository>;
    /// The members of a virtual repository, in order; None for one that is not virtual.
    async fn virtual_members(&self, repository_id: i64) -> StoreResult<Option<Vec<i64>>>;
    /// The merged index of one architecture, as last built.
    async fn virtual_index(
        &self,
        repository_id: i64,
        arch: &str,
    ) -> StoreResult<Option<VirtualIndex>>;
    /// Stores a merged index, replacing the one of its architecture (one with the same
    /// bytes keeps its `modified_ms`), and brings the history of that architecture to
    /// `listing` at `index.built_ms`, in one transaction; None, writing nothing, when the
    /// index stored was built from a later reading of the members (a larger `built_ms`).
    /// NotFound when the repository is gone.
    async fn save_virtual_index(
        &self,
        index: &VirtualIndex,
        listing: &[ServedFile],
    ) -> StoreResult<Option<HistoryChange>>;

    // What remote and virtual repositories served (see `history`).

    /// Brings the history of `arch` of the remote repository to `listing`, the files of
    /// its upstream index whose content has the SHA-256 `upstream_sha256`, at `now_ms`, in
    /// one transaction: rows of files gone or changed are closed, rows of files new or
    /// changed opened. None, writing nothing, when the upstream index stored is no longer
    /// that one (a later one is recorded by whoever saved it). NotFound when the
    /// repository is gone.
    async fn record_upstream_listing(
        &self,
        repository_id: i64,
        arch: &str,
        upstream_sha256: &str,
        listing: &[ServedFile],
        now_ms: i64,
    ) -> StoreResult<Option<HistoryChange>>;
    /// The files `arch` of the repository listed at `at_ms` (None: lists now), by name.
    async fn served_files(
        &self,
        repository_id: i64,
        arch: &str,
        at_ms: Option<i64>,
    ) -> StoreResult<Vec<ServedRow>>;
    /// One of `served_files`.
    async fn served_file(
        &self,
        repository_id: i64,
        arch: &str,
        filename: &str,
        at_ms: Option<i64>,
    ) -> StoreResult<Option<ServedRow>>;
    /// When the repository first listed a file of `arch` (None: never), and the last
    /// change of that listing at or before `at_ms` (None: none by then).
    async fn served_span(
        &self,
        repository_id: i64,
        arch: &str,
        at_ms: i64,
    ) -> StoreResult<(Option<i64>, Option<i64>)>;
    /// Every row of the repository's history, by architecture, file and date.
    async fn served_history(&self, repository_id: i64) -> StoreResult<Vec<ServedRow>>;
    /// Records a named moment of the repository's history. Conflict when the name is
    /// taken.
    async fn create_snapshot(
        &self,
        repository_id: i64,
        snapshot: &Snapshot,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()>;
    /// Whether the snapshot existed.
    async fn delete_snapshot(
        &self,
        repository_id: i64,
        name: &str,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<bool>;
    /// The repository's snapshots, oldest first.
    async fn snapshots(&self, repository_id: i64) -> StoreResult<Vec<Snapshot>>;
    async fn snapshot(&self, repository_id: i64, name: &str) -> StoreResult<Option<Snapshot>>;

    // Coordination of the processes that use one database. Only PostgreSQL is shared by
    // several server instances; on SQLite these return at once with a guard that holds
    // nothing, and the in-process locks do the work.

    /// Waits for, then holds until the guard is dropped, the lock that lets one index build
    /// of the repository run at a time among every process on this database.
    async fn lock_index_build(&self, repository_id: i64) -> StoreResult<StoreLock>;
    /// Waits for, then holds until the guard is dropped, the lock of one blob digest:
    /// `Shared` for an upload from blob commit to row insert, `Exclusive` for whoever checks
    /// that no row references the blob and deletes it.
    async fn lock_blob(&self, sha256: &str, mode: LockMode) -> StoreResult<StoreLock>;
    /// Waits for, then holds, the lock that lets one retention run (or pin) of the
    /// repository go at a time among every process on this database.
    async fn lock_retention(&self, repository_id: i64) -> StoreResult<StoreLock>;
    /// The lock of the scheduled retention pass, if no other process holds it; None when
    /// one does (that pass is under way).
    async fn try_lock_retention_pass(&self) -> StoreResult<Option<StoreLock>>;
}

/// How a lock is held: any number of shared holders, or one exclusive holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// A lock held in the database until the guard is dropped; on a backend that one process
/// uses alone, a guard of nothing.
#[must_use = "the lock is released when the guard is dropped"]
pub struct StoreLock {
    held: Option<Box<dyn Send>>,
}

impl StoreLock {
    /// A guard that holds nothing.
    pub fn none() -> StoreLock {
        StoreLock { held: None }
    }

    /// A guard releasing `held`'s lock when it is dropped (through `held`'s `Drop`).
    pub fn holding(held: impl Send + 'static) -> StoreLock {
        StoreLock {
            held: Some(Box::new(held)),
        }
    }

    /// Whether the guard holds a lock in the database (false on SQLite).
    pub fn is_held(&self) -> bool {
        self.held.is_some()
    }
}

impl std::fmt::Debug for StoreLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreLock")
            .field("held", &self.is_held())
            .finish()
    }
}

/// The stanza of package row `$1`; the same SQL on both backends.
const PACKAGE_STANZA: &str = "SELECT stanza FROM packages WHERE id = $1";
