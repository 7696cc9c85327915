//! Owner signing keys: one RSA key per owner, generated once (race-free), stored
//! encrypted with the master key, cached parsed.

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

use crate::apk::sign::SigningKey;
use crate::clock::SharedClock;
use crate::registry::audit::Actor;
use crate::store::{Owner, Store, StoredKey};

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

pub struct Keys {
    store: Arc<dyn Store>,
    master: MasterKey,
    bits: usize,
    /// Dates the audit log entry of a key made.
    clock: SharedClock,
    cache: Mutex<HashMap<i64, Arc<SigningKey>>>,
    /// Serialises generation per owner inside this process; the database decides between
    /// processes (first insert wins).
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

    fn cached(&self, owner_id: i64) -> Option<Arc<SigningKey>> {
        self.cache
            .lock()
            .expect("key cache poisoned")
            .get(&owner_id)
            .cloned()
    }

    /// The owner's key, generating and storing it first if the owner has none. Generation
    /// of a 4096-bit key takes seconds; it runs on the blocking pool.
    ///
    /// A cached key is checked against the database's key name first: an owner deleted
    /// (by another process) and created again may come back under the same id with a new
    /// key, and must never be signed for with the old one.
    pub async fn get_or_create(&self, owner: &Owner) -> anyhow::Result<Arc<SigningKey>> {
        if let Some(key) = self.cached(owner.id) {
            match self.store.signing_key_name(owner.id).await? {
                Some(name) if name == key.key_name() => return Ok(key),
                _ => {
                    self.cache
                        .lock()
                        .expect("key cache poisoned")
                        .remove(&owner.id);
                }
            }
        }
        let lock = self
            .generating
            .lock()
            .expect("key locks poisoned")
            .entry(owner.id)
            .or_default()
            .clone();
        let _guard = lock.lock().await;
        if let Some(key) = self.cached(owner.id) {
            return Ok(key);
        }
        let stored = match self.store.signing_key(owner.id).await? {
            Some(stored) => stored,
            None => {
                let (name, bits) = (owner.name.clone(), self.bits);
                let key = tokio::task::spawn_blocking(move || SigningKey::generate(&name, bits))
                    .await
                    .context("key generation task")??;
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
                    .insert_signing_key(
                        owner.id,
                        StoredKey {
                            key_name: key.key_name().to_string(),
                            private_pem: self.master.seal(owner.id, &key.private_pkcs8_pem()?)?,
                            public_pem: key.public_key_pem()?,
                        },
                        Some(&entry),
                    )
                    .await?
            }
        };
        let pem = self.master.open(owner.id, &stored.private_pem)?;
        let key = Arc::new(
            SigningKey::from_pkcs8_pem(&owner.name, &pem)
                .context("stored signing key is unreadable")?,
        );
        self.cache
            .lock()
            .expect("key cache poisoned")
            .insert(owner.id, key.clone());
        Ok(key)
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
    /// key still being made waits for it (`get_or_create` holds the owner's lock while it
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
