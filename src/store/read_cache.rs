//! What the download path reads (owners, repositories, package rows, indexes) kept in
//! memory between changes, so that serving a file or an index asks the database nothing.
//!
//! Validity is one counter, the epoch: every write of this process raises it after its
//! commit, and it is raised when the database says another process committed (SQLite's
//! `PRAGMA data_version`), which a watcher asks every [`WATCH_INTERVAL`]. Entries belong
//! to the epoch they were read in and are dropped together when it moves. A read records
//! the epoch *before* asking the database and keeps its answer only if the epoch has not
//! moved since, so an answer from before a commit can never outlive it.
//!
//! A reader sees this process's writes at once and another process's within
//! [`WATCH_INTERVAL`], and never goes back: a read that misses asks the database for its
//! version again *after* reading, and if another process committed meanwhile, the epoch
//! moves before the answer is returned, so no older entry is served after a newer answer.

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

/// Asks the database for its version: what moves when another connection commits.
pub(crate) type VersionSource =
    Box<dyn Fn() -> futures_util::future::BoxFuture<'static, Option<i64>> + Send + Sync>;

#[derive(Default)]
pub(crate) struct ReadCache {
    epoch: AtomicU64,
    entries: RwLock<Entries>,
    /// Without one, nothing another process commits is seen: only for a database no other
    /// process opens (tests of the cache itself).
    version: Option<VersionSource>,
    /// The version last seen.
    seen: tokio::sync::Mutex<Option<i64>>,
}

/// A read in progress: the epoch it started in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

impl ReadCache {
    pub fn new(version: VersionSource) -> ReadCache {
        ReadCache {
            version: Some(version),
            ..ReadCache::default()
        }
    }

    /// Asks the database whether another process committed since the last time, and if
    /// so (or if it cannot tell) moves the epoch. Called after every read that missed,
    /// and by the watcher.
    pub async fn check_version(&self) {
        let Some(version) = &self.version else {
            return;
        };
        let mut seen = self.seen.lock().await;
        let now = version().await;
        if now.is_none() || now != *seen {
            self.changed();
        }
        *seen = now;
    }

    /// Something was committed: what was read before is no longer valid.
    pub fn changed(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
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

/// Checks the database's version every [`WATCH_INTERVAL`] until the cache is dropped.
pub(crate) fn watch(cache: &Arc<ReadCache>) {
    let cache: Weak<ReadCache> = Arc::downgrade(cache);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(cache) = cache.upgrade() else {
                return;
            };
            cache.check_version().await;
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

    #[tokio::test]
    async fn a_new_database_version_moves_the_epoch() {
        use std::sync::atomic::AtomicI64;
        let version = Arc::new(AtomicI64::new(1));
        let source = version.clone();
        let cache = ReadCache::new(Box::new(move || {
            let v = source.load(Ordering::SeqCst);
            Box::pin(async move { Some(v) })
        }));
        cache.check_version().await;
        let ticket = cache.owner("acme").unwrap_err();
        cache.put_owner(ticket, "acme", Some(owner(1)));
        cache.check_version().await;
        assert!(cache.owner("acme").is_ok(), "same version: kept");
        version.store(2, Ordering::SeqCst);
        cache.check_version().await;
        assert!(cache.owner("acme").is_err(), "another commit: dropped");
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
