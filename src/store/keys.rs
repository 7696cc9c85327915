//! Signing keys as stored: the SQL both backends share (`$n` placeholders read the same on
//! SQLite and PostgreSQL), the row of a key, and what a retirement found.
//!
//! An owner's keys are ordered by id: the newest active key signs first. A key change
//! raises the wanted generation of every repository of the owner in its transaction, so
//! that the indexes are signed again by the new key set (see `indexer`).

use super::Repository;

/// A key as stored, retired or not; `private_pem` is sealed with the master key. `Debug`
/// shows no key material.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SigningKeyRecord {
    pub id: i64,
    pub key_name: String,
    pub private_pem: String,
    pub public_pem: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; None while the key signs.
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("id", &self.id)
            .field("key_name", &self.key_name)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// What retiring a key did.
#[derive(Debug)]
pub enum Retirement {
    /// Retired; the owner's repositories, whose wanted generation was raised.
    Retired(Vec<Repository>),
    /// The owner has no key of that name.
    NoSuchKey,
    /// The key was retired before.
    AlreadyRetired,
    /// The key is the owner's only active one: the indexes would be left unsigned.
    LastActive,
}

/// Every key of an owner, newest first.
pub(super) const KEYS: &str = "SELECT id, key_name, private_pem, public_pem, created_at, \
     retired_at FROM signing_keys WHERE owner_id = $1 ORDER BY id DESC";

/// The newest active key of an owner.
pub(super) const NEWEST_ACTIVE: &str = "SELECT key_name, private_pem, public_pem \
     FROM signing_keys WHERE owner_id = $1 AND retired_at IS NULL ORDER BY id DESC LIMIT 1";

/// The ids of an owner's active keys, newest first: what a cached key set is checked
/// against.
pub(super) const ACTIVE_IDS: &str =
    "SELECT id FROM signing_keys WHERE owner_id = $1 AND retired_at IS NULL ORDER BY id DESC";

/// How many keys an owner has, retired ones included.
pub(super) const COUNT_KEYS: &str = "SELECT COUNT(*) FROM signing_keys WHERE owner_id = $1";

/// How many active keys an owner has.
pub(super) const COUNT_ACTIVE: &str =
    "SELECT COUNT(*) FROM signing_keys WHERE owner_id = $1 AND retired_at IS NULL";

pub(super) const INSERT: &str = "INSERT INTO signing_keys \
     (owner_id, key_name, private_pem, public_pem, created_at) VALUES ($1, $2, $3, $4, $5)";

/// When the owner's key of that name was retired (no row: no such key).
pub(super) const RETIRED_AT: &str =
    "SELECT retired_at FROM signing_keys WHERE owner_id = $1 AND key_name = $2";

pub(super) const RETIRE: &str = "UPDATE signing_keys SET retired_at = $3 \
     WHERE owner_id = $1 AND key_name = $2 AND retired_at IS NULL";

/// Has every index of the owner built again.
pub(super) const BUMP_OWNER_REPOSITORIES: &str =
    "UPDATE repositories SET wanted_gen = wanted_gen + 1 WHERE owner_id = $1";

/// The message of an owner with as many active keys as it may have.
pub(super) fn too_many(active: i64) -> String {
    format!(
        "the owner has {active} active keys, as many as it may have (signing.max_active_keys): \
         retire one first"
    )
}

/// The message of a key name that is taken.
pub(super) fn name_taken(name: &str) -> String {
    format!(
        "a signing key named {name} exists already (key names are unique in the registry, \
         as in a client's /etc/apk/keys): choose another name"
    )
}
