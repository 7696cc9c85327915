//! Owner signing keys over a registry's lifetime: each owner's first key generated once
//! (race-free), rotation to a new key (generated or imported from abuild), retirement of
//! an old one; every private key stored encrypted with the master key, the active ones
//! cached parsed.
//!
//! Every active key signs every index of its owner, the newest first, so that a client
//! that trusts only an older key keeps verifying during the overlap (apk uses the first
//! signature whose key it has). A key change raises the wanted generation of each of the
//! owner's repositories in its transaction and waits until they are built again. An
//! instance holding an owner's keys parsed compares their ids with the database's active
//! ones before each use, so a change made through another instance or the command line
//! is signed with at the next build.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rand::RngCore;

use serde::Serialize;

use crate::apk::sign::SigningKey;
use crate::clock::SharedClock;
use crate::error::{AppError, AppResult};
use crate::registry::audit::Actor;
use crate::store::{Owner, Repository, Retirement, SigningKeyRecord, Store, StoredKey};
use crate::AppState;

/// Marks a private key encrypted with the master key (AES-256-GCM, owner id as
/// associated data, so a ciphertext cannot be moved to another owner).
const SEALED_PREFIX: &str = "aes256gcm:v1:";

/// The key that encrypts owner private keys at rest.
pub struct MasterKey(Aes256Gcm);

impl MasterKey {
    /// From `signing.master_key` (base64 of 32 bytes) when set, else from
    /// `<data_dir>/master.key`, which is created (mode 0600) on first use.
    pub fn load(configured: &str, data_dir: &Path) -> anyhow::Result<MasterKey> {
        let bytes = match Self::existing(configured, data_dir)? {
            Some(bytes) => bytes,
            None => create_key_file(&data_dir.join("master.key"))?,
        };
        if bytes.len() != 32 {
            bail!("the master key must be 32 bytes (base64 of 32 random bytes)");
        }
        Ok(MasterKey(
            Aes256Gcm::new_from_slice(&bytes).context("master key")?,
        ))
    }

    /// The bytes `load` would use, read without creating anything: from
    /// `signing.master_key` when set, else from `<data_dir>/master.key`; None when that
    /// file does not exist (`load` would create a new key).
    pub fn existing(configured: &str, data_dir: &Path) -> anyhow::Result<Option<Vec<u8>>> {
        if !configured.is_empty() {
            return Ok(Some(
                BASE64
                    .decode(configured.trim())
                    .context("signing.master_key is not base64")?,
            ));
        }
        let path = data_dir.join("master.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                Ok(Some(BASE64.decode(text.trim()).with_context(|| {
                    format!("{} is not base64", path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn seal(&self, owner_id: i64, pem: &str) -> anyhow::Result<String> {
        self.seal_with(&owner_id.to_be_bytes(), pem)
    }

    fn open(&self, owner_id: i64, stored: &str) -> anyhow::Result<String> {
        self.open_with(&owner_id.to_be_bytes(), stored)
    }

    /// Encrypts `pem` bound to `aad`: it only opens with the same `aad`.
    fn seal_with(&self, aad: &[u8], pem: &str) -> anyhow::Result<String> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: pem.as_bytes(),
                    aad,
                },
            )
            .map_err(|_| anyhow::anyhow!("encrypting a private key"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{SEALED_PREFIX}{}", BASE64.encode(out)))
    }

    fn open_with(&self, aad: &[u8], stored: &str) -> anyhow::Result<String> {
        let Some(body) = stored.strip_prefix(SEALED_PREFIX) else {
            bail!("stored private key is not encrypted");
        };
        let raw = BASE64.decode(body).context("stored private key")?;
        if raw.len() < 12 {
            bail!("stored private key is truncated");
        }
        let (nonce, sealed) = raw.split_at(12);
        let pem = self
            .0
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| {
                anyhow::anyhow!("cannot decrypt a stored private key: wrong master key?")
            })?;
        String::from_utf8(pem).context("stored private key")
    }
}

/// Creates the key file: complete and durable before it gets its name, so a crash
/// never leaves an empty key, and the first of concurrent creators wins.
fn create_key_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // tempfile creates it with mode 0600.
    let mut tmp = tempfile::Builder::new()
        .prefix(".master.key.")
        .tempfile_in(dir)?;
    tmp.write_all(BASE64.encode(bytes).as_bytes())?;
    tmp.as_file().sync_all()?;
    match tmp.persist_noclobber(path) {
        Ok(_) => {
            std::fs::File::open(dir)?.sync_all()?;
            Ok(bytes.to_vec())
        }
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path)?;
            Ok(BASE64.decode(text.trim())?)
        }
        Err(e) => Err(e.error).with_context(|| format!("creating {}", path.display())),
    }
}

/// An owner's active keys, parsed, newest first: what its indexes are signed with.
#[derive(Debug)]
pub struct KeySet {
    /// The keys' row ids, newest first, compared with the database's before each use.
    ids: Vec<i64>,
    keys: Vec<Arc<SigningKey>>,
}

impl KeySet {
    /// The newest active key: the one `/{owner}/key` serves and that signs first.
    pub fn newest(&self) -> &Arc<SigningKey> {
        &self.keys[0]
    }

    /// The active keys, newest first.
    pub fn keys(&self) -> Vec<&SigningKey> {
        self.keys.iter().map(|key| key.as_ref()).collect()
    }

    /// The keys' row ids, newest first: two builds signed with equal ids signed alike.
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }
}

pub struct Keys {
    store: Arc<dyn Store>,
    master: MasterKey,
    bits: usize,
    /// Dates the audit log entry of a key made.
    clock: SharedClock,
    cache: Mutex<HashMap<i64, Arc<KeySet>>>,
    /// Serialises loading and generation per owner inside this process; the database
    /// decides between processes (first insert wins).
    generating: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
}

impl Keys {
    pub fn new(store: Arc<dyn Store>, master: MasterKey, bits: usize, clock: SharedClock) -> Keys {
        Keys {
            clock,
            store,
            master,
            bits,
            cache: Mutex::new(HashMap::new()),
            generating: Mutex::new(HashMap::new()),
        }
    }

    /// Encrypts a secret other than a key (a webhook's) with the master key, bound to
    /// `context`: it opens only with the same context.
    pub fn seal_secret(&self, context: &str, secret: &str) -> anyhow::Result<String> {
        self.master.seal_with(context.as_bytes(), secret)
    }

    /// The secret `seal_secret` sealed with `context`.
    pub fn open_secret(&self, context: &str, sealed: &str) -> anyhow::Result<String> {
        self.master.open_with(context.as_bytes(), sealed)
    }

    fn cached(&self, owner_id: i64) -> Option<Arc<KeySet>> {
        self.cache
            .lock()
            .expect("key cache poisoned")
            .get(&owner_id)
            .cloned()
    }

    /// Drops the owner's parsed keys: the next use reads them again.
    pub fn forget(&self, owner_id: i64) {
        self.cache
            .lock()
            .expect("key cache poisoned")
            .remove(&owner_id);
    }

    /// The owner's newest active key, generating and storing a first key if the owner has
    /// none.
    pub async fn get_or_create(&self, owner: &Owner) -> anyhow::Result<Arc<SigningKey>> {
        Ok(self.key_set(owner).await?.newest().clone())
    }

    /// The owner's active keys, generating and storing a first key if the owner has none.
    /// Generation of a 4096-bit key takes seconds; it runs on the blocking pool.
    ///
    /// Cached keys are checked against the ids of the database's active keys first: a
    /// rotation or retirement through another instance (or the command line), or an owner
    /// deleted and created again under the same id, is seen at the next use.
    pub async fn key_set(&self, owner: &Owner) -> anyhow::Result<Arc<KeySet>> {
        if let Some(set) = self.cached(owner.id) {
            if self.store.active_key_ids(owner.id).await? == set.ids {
                return Ok(set);
            }
            self.forget(owner.id);
        }
        let lock = self
            .generating
            .lock()
            .expect("key locks poisoned")
            .entry(owner.id)
            .or_default()
            .clone();
        let _guard = lock.lock().await;
        // Loaded by another task while this one waited, after the check above.
        if let Some(set) = self.cached(owner.id) {
            return Ok(set);
        }
        let mut records = self.store.signing_keys(owner.id).await?;
        if records.is_empty() {
            self.create_first(owner).await?;
            records = self.store.signing_keys(owner.id).await?;
        }
        let mut ids = Vec::new();
        let mut keys = Vec::new();
        for record in records.iter().filter(|r| r.retired_at.is_none()) {
            ids.push(record.id);
            keys.push(Arc::new(self.open(owner, record)?));
        }
        if keys.is_empty() {
            anyhow::bail!("owner {} has no active signing key", owner.name);
        }
        let set = Arc::new(KeySet { ids, keys });
        self.cache
            .lock()
            .expect("key cache poisoned")
            .insert(owner.id, set.clone());
        Ok(set)
    }

    /// Generates the owner's first key and stores it, unless another process stored one
    /// first.
    async fn create_first(&self, owner: &Owner) -> anyhow::Result<()> {
        let key = generate(&owner.name, self.bits).await?;
        tracing::info!(owner = %owner.name, key = key.key_name(), "generated signing key");
        // The key's file name; never its material.
        let entry = Actor::system().entry_at(
            self.clock.unix_ms(),
            "key.create",
            Some(owner),
            owner.name.as_str(),
            serde_json::json!({ "key_name": key.key_name() }),
        );
        self.store
            .insert_signing_key(owner.id, self.sealed(owner, &key)?, Some(&entry))
            .await?;
        Ok(())
    }

    /// The key as it is stored: its private half sealed with the master key.
    fn sealed(&self, owner: &Owner, key: &SigningKey) -> anyhow::Result<StoredKey> {
        Ok(StoredKey {
            key_name: key.key_name().to_string(),
            private_pem: self.master.seal(owner.id, &key.private_pkcs8_pem()?)?,
            public_pem: key.public_key_pem()?,
        })
    }

    /// A stored key, decrypted and parsed under its stored name.
    fn open(&self, owner: &Owner, record: &SigningKeyRecord) -> anyhow::Result<SigningKey> {
        let pem = self.master.open(owner.id, &record.private_pem)?;
        SigningKey::from_pem_named(&record.key_name, &pem)
            .with_context(|| format!("stored signing key {} is unreadable", record.key_name))
    }

    /// Generates keys for every owner that lacks one.
    pub async fn create_missing(&self) -> anyhow::Result<()> {
        for owner in self.store.owners_without_key().await? {
            self.get_or_create(&owner).await?;
        }
        Ok(())
    }

    /// `create_missing` in a task of its own, tried again while the database is
    /// unreachable: at start, and when an owner is created over the API, which then
    /// answers at once instead of after seconds of key generation. A publish that needs a
    /// key still being made waits for it (`key_set` holds the owner's lock while it
    /// generates).
    pub fn spawn_create_missing(self: &Arc<Self>) {
        let keys = self.clone();
        tokio::spawn(async move {
            let mut wait = std::time::Duration::from_secs(1);
            loop {
                match keys.create_missing().await {
                    Ok(()) => break,
                    Err(e) if crate::error::unreachable_backend_of(&e).is_some() => {
                        tracing::warn!(
                            error = %format!("{e:#}"), retry_in_secs = wait.as_secs(),
                            "generating owner keys: the database is unreachable"
                        );
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(std::time::Duration::from_secs(60));
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "generating owner keys");
                        break;
                    }
                }
            }
        });
    }
}

/// A new key of `bits` bits named for `owner`, made on the blocking pool.
async fn generate(owner: &str, bits: usize) -> anyhow::Result<SigningKey> {
    let owner = owner.to_string();
    Ok(
        tokio::task::spawn_blocking(move || SigningKey::generate(&owner, bits))
            .await
            .context("key generation task")??,
    )
}

/// One key of an owner as the API and `key list` show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    /// The exact name apk expects under /etc/apk/keys/, and in the index signatures.
    pub file_name: String,
    /// `active` (signs every index of the owner) or `retired` (signs nothing; its public
    /// key is still served).
    #[schema(example = "active")]
    pub state: &'static str,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; null while active.
    pub retired_at: Option<i64>,
    /// Hex SHA-256 of the public key's DER (SPKI) encoding.
    pub fingerprint_sha256: String,
    pub bits: usize,
    /// Where its public key is downloaded: "/{owner}/keys/{file_name}".
    pub download_path: String,
}

impl KeyView {
    fn of(owner: &Owner, record: &SigningKeyRecord) -> AppResult<KeyView> {
        // The key is the registry's own: one that does not parse is a fault of the
        // server, not of the request.
        let (fingerprint_sha256, bits) =
            crate::apk::sign::public_key_fingerprint(&record.public_pem)
                .map_err(|e| anyhow::anyhow!("the stored public key {}: {e}", record.key_name))?;
        Ok(KeyView {
            file_name: record.key_name.clone(),
            state: if record.retired_at.is_none() {
                "active"
            } else {
                "retired"
            },
            created_at: record.created_at,
            retired_at: record.retired_at,
            fingerprint_sha256,
            bits,
            download_path: format!("/{}/keys/{}", owner.name, record.key_name),
        })
    }
}

/// What a rotation, an import or a retirement did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyChange {
    /// The key added or retired.
    pub key: KeyView,
    /// The keys that sign the owner's indexes now, newest (first signature) first.
    pub signing: Vec<String>,
    /// The repositories whose indexes were signed again (owner/branch/repository).
    pub resigned: Vec<String>,
}

/// Every key of the owner, newest first, retired ones included.
pub async fn list(state: &AppState, owner: &Owner) -> AppResult<Vec<KeyView>> {
    state
        .store
        .signing_keys(owner.id)
        .await?
        .iter()
        .map(|record| KeyView::of(owner, record))
        .collect()
}

/// The public key of the owner's key `name`, active or retired; None when the owner has
/// no key of that name.
pub async fn public_key(
    state: &AppState,
    owner: &Owner,
    name: &str,
) -> AppResult<Option<SigningKeyRecord>> {
    Ok(state
        .store
        .signing_keys(owner.id)
        .await?
        .into_iter()
        .find(|record| record.key_name == name))
}

/// Makes a new key (of `signing.key_bits`) the owner's first signing key: every index is
/// signed by it first and by the keys active before after it, and is signed again before
/// this returns.
pub async fn rotate(state: &AppState, actor: &Actor, owner: &Owner) -> AppResult<KeyChange> {
    room_for_another(state, owner).await?;
    // A generated name is unique but for a clash of 32 bits: then another key is made.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let key = generate(&owner.name, state.config.signing.key_bits).await?;
        match add(state, actor, owner, &key, "key.rotate").await {
            Err(AppError::Conflict(_)) if attempts < 3 => continue,
            outcome => return outcome,
        }
    }
}

/// Makes an existing abuild private key (PEM, PKCS#1 or PKCS#8, of
/// `signing.import_min_bits` to `signing.import_max_bits` bits) the owner's first signing
/// key, as `rotate` does, under `name` (default: `<owner>-<8 hex digits>.rsa.pub`, like a
/// generated key). 400 for a key that is malformed, encrypted, weak or too large, or a
/// bad name; 409 when a key of that name exists.
pub async fn import(
    state: &AppState,
    actor: &Actor,
    owner: &Owner,
    private_pem: &str,
    name: Option<&str>,
) -> AppResult<KeyChange> {
    room_for_another(state, owner).await?;
    let (min, max) = (
        state.config.signing.import_min_bits,
        state.config.signing.import_max_bits,
    );
    let pem = private_pem.to_string();
    let owner_name = owner.name.clone();
    let key = tokio::task::spawn_blocking(move || parse_import(&owner_name, &pem, min, max))
        .await
        .context("key import task")??;
    let key = match name {
        Some(name) => key
            .renamed(name)
            .map_err(|e| AppError::BadRequest(e.to_string()))?,
        None => key,
    };
    add(state, actor, owner, &key, "key.import").await
}

/// Refuses (409) a new key for an owner with `signing.max_active_keys` active keys, before
/// any work; the store checks again in the transaction that adds the key.
async fn room_for_another(state: &AppState, owner: &Owner) -> AppResult<()> {
    let max = state.config.signing.max_active_keys;
    let active = state.store.active_key_ids(owner.id).await?.len();
    if active >= max {
        return Err(AppError::Conflict(format!(
            "{} has {active} active keys, as many as it may have (signing.max_active_keys = \
             {max}), each signing every index: retire one first (key retire {} KEYNAME)",
            owner.name, owner.name
        )));
    }
    Ok(())
}

/// The key of an import, or why it is refused.
fn parse_import(owner: &str, pem: &str, min: usize, max: usize) -> AppResult<SigningKey> {
    if pem.contains("ENCRYPTED") {
        return Err(AppError::BadRequest(
            "the private key is encrypted: decrypt it first (openssl pkey -in KEY -out \
             PLAIN.pem) and import the plain PEM"
                .into(),
        ));
    }
    let bits = crate::apk::sign::private_key_bits(pem).map_err(|_| {
        AppError::BadRequest(
            "not an RSA private key in PEM form: expected abuild's private key file \
             (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)"
                .into(),
        )
    })?;
    if bits < min {
        return Err(AppError::BadRequest(format!(
            "the key has {bits} bits, too weak: keys of {min} to {max} bits are taken \
             (signing.import_min_bits)"
        )));
    }
    if bits > max {
        return Err(AppError::BadRequest(format!(
            "the key has {bits} bits: keys of {min} to {max} bits are taken \
             (signing.import_max_bits)"
        )));
    }
    SigningKey::from_pkcs8_pem(owner, pem).map_err(|e| {
        AppError::BadRequest(format!("the private key cannot be used for signing: {e}"))
    })
}

/// Stores `key` as the owner's newest active key and has every index signed again.
async fn add(
    state: &AppState,
    actor: &Actor,
    owner: &Owner,
    key: &SigningKey,
    action: &str,
) -> AppResult<KeyChange> {
    let stored = state.keys.sealed(owner, key)?;
    let (fingerprint, bits) = crate::apk::sign::public_key_fingerprint(&stored.public_pem)
        .map_err(|e| anyhow::anyhow!("the new public key {}: {e}", key.key_name()))?;
    // Names and the fingerprint; never key material.
    let entry = actor.entry(
        state,
        action,
        Some(owner),
        key.key_name(),
        serde_json::json!({
            "key_name": key.key_name(),
            "fingerprint_sha256": fingerprint,
            "bits": bits,
        }),
    );
    let repositories = state
        .store
        .add_signing_key(
            owner.id,
            stored,
            state.config.signing.max_active_keys as i64,
            Some(&entry),
        )
        .await?;
    tracing::info!(owner = %owner.name, key = key.key_name(), action, "added signing key");
    changed(state, owner, key.key_name(), &repositories).await
}

/// Stops signing with the owner's key `name`; its public key is still served. Refused
/// (409) for the owner's last active key and for a key retired before; 404 for a name
/// the owner has no key of.
pub async fn retire(
    state: &AppState,
    actor: &Actor,
    owner: &Owner,
    name: &str,
) -> AppResult<KeyChange> {
    let entry = actor.entry(
        state,
        "key.retire",
        Some(owner),
        name,
        serde_json::json!({ "key_name": name }),
    );
    let now = state.clock.unix_secs();
    match state
        .store
        .retire_signing_key(owner.id, name, now, Some(&entry))
        .await?
    {
        Retirement::Retired(repositories) => changed(state, owner, name, &repositories).await,
        Retirement::NoSuchKey => {
            let names: Vec<String> = state
                .store
                .signing_keys(owner.id)
                .await?
                .into_iter()
                .map(|r| r.key_name)
                .collect();
            Err(AppError::NotFound(format!(
                "{} has no key named {name}; its keys: {}",
                owner.name,
                names.join(", ")
            )))
        }
        Retirement::AlreadyRetired => Err(AppError::Conflict(format!("{name} is retired already"))),
        Retirement::LastActive => Err(AppError::Conflict(format!(
            "{name} is the only active key of {}: its indexes would be unsigned; rotate to a \
             new key (or import one) first, then retire this one",
            owner.name
        ))),
    }
}

/// After a key change: every repository of the owner built again (signed by the new key
/// set) before the answer.
async fn changed(
    state: &AppState,
    owner: &Owner,
    name: &str,
    repositories: &[Repository],
) -> AppResult<KeyChange> {
    state.keys.forget(owner.id);
    let signing = state
        .keys
        .key_set(owner)
        .await?
        .keys()
        .iter()
        .map(|key| key.key_name().to_string())
        .collect();
    let mut resigned = Vec::with_capacity(repositories.len());
    for repository in repositories {
        match state
            .indexer
            .wait_built(owner, repository, repository.wanted_gen)
            .await
        {
            Ok(()) => resigned.push(format!(
                "{}/{}/{}",
                repository.owner_name, repository.branch, repository.name
            )),
            Err(e) if crate::indexer::is_removed(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The keyring's new version before the answer, so that clients can fetch the new key.
    crate::registry::keyring::sync(state, owner).await?;
    let record = public_key(state, owner, name)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("the key {name} of {} is gone", owner.name)))?;
    Ok(KeyChange {
        key: KeyView::of(owner, &record)?,
        signing,
        resigned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_for_their_owner_and_master_key() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::load("", dir.path()).unwrap();
        let file = dir.path().join("master.key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = master.seal(7, "-----BEGIN PRIVATE KEY-----\nabc").unwrap();
        assert!(sealed.starts_with(SEALED_PREFIX));
        assert!(!sealed.contains("BEGIN"));
        assert_eq!(
            master.open(7, &sealed).unwrap(),
            "-----BEGIN PRIVATE KEY-----\nabc"
        );
        assert!(master.open(8, &sealed).is_err(), "bound to the owner");
        // The same file gives the same key; another key cannot open it.
        let again = MasterKey::load("", dir.path()).unwrap();
        assert!(again.open(7, &sealed).is_ok());
        let other = MasterKey::load(&BASE64.encode([9u8; 32]), dir.path()).unwrap();
        assert!(other.open(7, &sealed).is_err());
        assert!(MasterKey::load("c2hvcnQ=", dir.path()).is_err());
    }
}
