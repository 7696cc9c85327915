//! Owner signing keys: one RSA key per owner, generated once (race-free), cached parsed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;

use crate::apk::sign::SigningKey;
use crate::store::{Owner, Store, StoredKey};

pub struct Keys {
    store: Arc<dyn Store>,
    bits: usize,
    cache: Mutex<HashMap<i64, Arc<SigningKey>>>,
    /// Serialises generation per owner inside this process; the database decides between
    /// processes (first insert wins).
    generating: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
}

impl Keys {
    pub fn new(store: Arc<dyn Store>, bits: usize) -> Keys {
        Keys {
            store,
            bits,
            cache: Mutex::new(HashMap::new()),
            generating: Mutex::new(HashMap::new()),
        }
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
    pub async fn get_or_create(&self, owner: &Owner) -> anyhow::Result<Arc<SigningKey>> {
        if let Some(key) = self.cached(owner.id) {
            return Ok(key);
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
                self.store
                    .insert_signing_key(
                        owner.id,
                        StoredKey {
                            key_name: key.key_name().to_string(),
                            private_pem: key.private_pkcs8_pem(),
                            public_pem: key.public_key_pem(),
                        },
                    )
                    .await?
            }
        };
        let key = Arc::new(
            SigningKey::from_pkcs8_pem(&owner.name, &stored.private_pem)
                .context("stored signing key is unreadable")?,
        );
        self.cache
            .lock()
            .expect("key cache poisoned")
            .insert(owner.id, key.clone());
        Ok(key)
    }

    /// Generates keys for every owner that lacks one (run in the background at start).
    pub async fn create_missing(&self) -> anyhow::Result<()> {
        for owner in self.store.owners_without_key().await? {
            self.get_or_create(&owner).await?;
        }
        Ok(())
    }
}
