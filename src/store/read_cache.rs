//! What the download path reads (owners, repositories, package rows, indexes) kept in
//! memory between changes, so that serving a file or an index asks the database nothing.
//!
//! Validity is one counter, the epoch: every write of this process raises it after its
//! commit, and a watcher raises it when the database says another process committed
//! (SQLite's `PRAGMA data_version`). Entries belong to the epoch they were read in and
//! are dropped together when it moves. A read records the epoch *before* asking the
//! database and keeps its answer only if the epoch has not moved since, so an answer from
//! before a commit can never outlive it: a reader sees this process's writes at once and
//! another process's within [`WATCH_INTERVAL`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use super::{Owner, Package, RepoRef, Repository, StoredIndex};

/// How often the watcher asks the database whether another process wrote.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(50);

/// Entries kept at most; past that the cache starts over (unknown names asked for by
/// anonymous clients must not grow it without bound).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Owner(String),
    Repository(RepoRef),
    Package(RepoRef, String, String),
    Index(i64, String),
}

#[derive(Debug, Clone)]
enum Value {
    Owner(Option<Owner>),
    Repository(Option<Repository>),
    Package(Option<Package>),
    Index(Option<StoredIndex>),
}

#[derive(Default)]
struct Entries {
    epoch: u64,
    values: HashMap<Key, Value>,
}

#[derive(Default)]
pub(crate) struct ReadCache {
    epoch: AtomicU64,
    entries: RwLock<Entries>,
}

/// A read in progress: the epoch it started in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

impl ReadCache {
    /// Something was committed: what was read before is no longer valid.
    pub fn changed(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    fn ticket(&self) -> Ticket {
        Ticket(self.epoch.load(Ordering::SeqCst))
    }

    fn get(&self, key: &Key) -> Result<Value, Ticket> {
        let ticket = self.ticket();
        let entries = self.entries.read().expect("read cache poisoned");
        if entries.epoch == ticket.0 {
            if let Some(value) = entries.values.get(key) {
                return Ok(value.clone());
            }
        }
        Err(ticket)
    }

    fn put(&self, ticket: Ticket, key: Key, value: Value) {
        let mut entries = self.entries.write().expect("read cache poisoned");
        // Checked under the lock: a commit after this check raises the epoch, and the
        // entry dies with the others.
        if self.epoch.load(Ordering::SeqCst) != ticket.0 {
            return;
        }
        if entries.epoch != ticket.0 || entries.values.len() >= MAX_ENTRIES {
            entries.values.clear();
            entries.epoch = ticket.0;
        }
        entries.values.insert(key, value);
    }

    pub fn owner(&self, name: &str) -> Result<Option<Owner>, Ticket> {
        match self.get(&Key::Owner(name.to_string()))? {
            Value::Owner(owner) => Ok(owner),
            _ => Err(self.ticket()),
        }
    }

    pub fn put_owner(&self, ticket: Ticket, name: &str, owner: Option<Owner>) {
        self.put(ticket, Key::Owner(name.to_string()), Value::Owner(owner));
    }

    pub fn repository(&self, repo: &RepoRef) -> Result<Option<Repository>, Ticket> {
        match self.get(&Key::Repository(repo.clone()))? {
            Value::Repository(repository) => Ok(repository),
            _ => Err(self.ticket()),
        }
    }

    pub fn put_repository(&self, ticket: Ticket, repo: &RepoRef, found: Option<Repository>) {
        self.put(
            ticket,
            Key::Repository(repo.clone()),
            Value::Repository(found),
        );
    }

    pub fn package(
        &self,
        repo: &RepoRef,
        arch: &str,
        filename: &str,
    ) -> Result<Option<Package>, Ticket> {
        let key = Key::Package(repo.clone(), arch.to_string(), filename.to_string());
        match self.get(&key)? {
            Value::Package(package) => Ok(package),
            _ => Err(self.ticket()),
        }
    }

    pub fn put_package(
        &self,
        ticket: Ticket,
        repo: &RepoRef,
        arch: &str,
        filename: &str,
        found: Option<Package>,
    ) {
        let key = Key::Package(repo.clone(), arch.to_string(), filename.to_string());
        self.put(ticket, key, Value::Package(found));
    }

    pub fn index(&self, repository_id: i64, arch: &str) -> Result<Option<StoredIndex>, Ticket> {
        match self.get(&Key::Index(repository_id, arch.to_string()))? {
            Value::Index(index) => Ok(index),
            _ => Err(self.ticket()),
        }
    }

    pub fn put_index(
        &self,
        ticket: Ticket,
        repository_id: i64,
        arch: &str,
        found: Option<StoredIndex>,
    ) {
        let key = Key::Index(repository_id, arch.to_string());
        self.put(ticket, key, Value::Index(found));
    }
}

/// Raises the epoch of `cache` whenever `changed` reports a commit by another process;
/// stops when the cache is dropped. While the database cannot be asked, nothing is
/// cached (the epoch moves on every tick).
pub(crate) fn watch<F, Fut>(cache: &Arc<ReadCache>, mut version: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<i64>> + Send,
{
    let cache: Weak<ReadCache> = Arc::downgrade(cache);
    tokio::spawn(async move {
        let mut last = None;
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = version().await;
            let Some(cache) = cache.upgrade() else {
                return;
            };
            if now.is_none() || now != last {
                cache.changed();
            }
            last = now;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(id: i64) -> Owner {
        Owner {
            id,
            name: "acme".into(),
            is_private: false,
            is_org: true,
        }
    }

    #[test]
    fn an_answer_read_across_a_change_is_not_kept() {
        let cache = ReadCache::default();
        let ticket = cache.owner("acme").unwrap_err();
        cache.changed();
        cache.put_owner(ticket, "acme", Some(owner(1)));
        assert!(cache.owner("acme").is_err(), "read before the change");

        let ticket = cache.owner("acme").unwrap_err();
        cache.put_owner(ticket, "acme", Some(owner(2)));
        assert_eq!(cache.owner("acme").unwrap().unwrap().id, 2);
        cache.put_owner(ticket, "nobody", None);
        assert!(
            cache.owner("nobody").unwrap().is_none(),
            "absence is kept too"
        );
        cache.changed();
        assert!(cache.owner("acme").is_err());
        assert!(cache.owner("nobody").is_err());
    }

    #[test]
    fn kinds_do_not_mix() {
        let cache = ReadCache::default();
        let repo = RepoRef {
            owner_id: 1,
            branch: "v1".into(),
            repository: "main".into(),
        };
        let ticket = cache.repository(&repo).unwrap_err();
        cache.put_repository(ticket, &repo, None);
        cache.put_package(ticket, &repo, "x86_64", "a-1.apk", None);
        assert!(cache.repository(&repo).unwrap().is_none());
        assert!(cache.package(&repo, "x86_64", "a-1.apk").unwrap().is_none());
        assert!(cache.package(&repo, "x86_64", "b-1.apk").is_err());
        assert!(cache.index(1, "x86_64").is_err());
    }

    #[test]
    fn the_cache_starts_over_when_full() {
        let cache = ReadCache::default();
        let ticket = cache.owner("x").unwrap_err();
        for i in 0..MAX_ENTRIES + 1 {
            cache.put_owner(ticket, &format!("o{i}"), None);
        }
        assert!(cache.owner("o0").is_err());
        assert!(cache.owner(&format!("o{MAX_ENTRIES}")).is_ok());
    }
}
