//! The per-owner switch of the keyring package, as stored: the SQL both backends share.

/// Whether the owner's keyring is on; no row: the owner follows `signing.keyring`.
pub(super) const ENABLED: &str = "SELECT enabled FROM owner_keyrings WHERE owner_id = $1";

pub(super) const SET: &str = "INSERT INTO owner_keyrings (owner_id, enabled) VALUES ($1, $2) \
     ON CONFLICT (owner_id) DO UPDATE SET enabled = excluded.enabled";
