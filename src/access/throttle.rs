//! The authentication failure throttle: per address and name, and per address; shared
//! through the database by every process on it when that is PostgreSQL.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};

/// Entries the failure throttle keeps in memory at most; past this the least recently
/// seen are evicted, so no stream of fresh names or addresses can grow it further.
pub const THROTTLE_CAPACITY: usize = 100_000;

/// Longest delay the throttle asks a client to wait.
const MAX_DELAY: Duration = Duration::from_secs(30);

/// A fixed-size, salted digest of who an attempt is from, so that an entry costs the same
/// whatever the client sent and its contents are of no use to anyone reading memory or
/// the database.
type ThrottleKey = [u8; 16];

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Failures counted in memory (none when they are counted in the database).
    failures: u32,
    /// Password checks from this address admitted and not finished (address keys only).
    checking: u32,
    last: Instant,
}

/// Why an attempt was refused before it was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many recent failures: retry after this long.
    Failures(Duration),
    /// As many password checks from this address are under way as it may have at once.
    Checking,
}

/// Counts authentication failures and refuses attempts for a while after repeated ones,
/// and bounds the password checks one address has under way.
///
/// Failures are counted per address and user name (so one user's typos do not slow down
/// another user behind the same address, and a valid credential cannot clear the count
/// of guesses at another user's password), and per address whatever the name (so fresh
/// names do not pass). IPv6 addresses count by their /64 prefix, which one client usually
/// holds whole. After `limit` failures of one name from one address (or `address_limit`
/// from one address), further attempts are refused for `delay`, doubling per further
/// failure up to 30 s, measured from the last failure; a window of `window` without
/// failures forgets them.
///
/// Failures are counted in memory, or, for processes sharing a PostgreSQL database
/// (`shared`), in the database, where every instance counts and reads the same failures:
/// an attempt then reads both of its counts with one indexed query, a failure is recorded
/// before it is answered, and a success clears its name's count off the request's path.
///
/// Before any password is hashed, the attempt is admitted per address: at most
/// `checks_per_address` run (or wait for a turn) at once in this process, so concurrent
/// guesses cannot all start before the first failures are counted, and one address cannot
/// take every place in this process's queue of password checks. Entries are pruned on a
/// timer (`prune`) and capped in memory at [`THROTTLE_CAPACITY`].
pub struct Throttle {
    entries: Mutex<HashMap<ThrottleKey, Entry>>,
    /// Where failures are counted when other processes share them; None: in `entries`.
    shared: Option<Arc<dyn Store>>,
    salt: [u8; 16],
    limit: u32,
    address_limit: u32,
    checks_per_address: u32,
    window: Duration,
    delay: Duration,
    capacity: usize,
}

/// An attempt admitted by [`Throttle::begin`]. Report its outcome with `finish`; dropped
/// unfinished (the client went away), it is forgotten and gives its place back.
#[derive(Debug)]
pub struct Attempt {
    throttle: Arc<Throttle>,
    user: ThrottleKey,
    address: ThrottleKey,
    password: bool,
    /// Whether failures of this name were counted when it began (a success clears them).
    user_failed: bool,
    finished: bool,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// Not decided (a server fault, or no place to check it): counts neither way.
    Undecided,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

/// Unix milliseconds: the time of failures counted in the database, which every instance
/// compares with its own clock.
fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Throttle {
    /// A throttle that counts failures in this process's memory.
    pub fn new(
        limit: u32,
        address_limit: u32,
        checks_per_address: u32,
        window: Duration,
        delay: Duration,
    ) -> Throttle {
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        Throttle {
            entries: Mutex::new(HashMap::new()),
            shared: None,
            salt,
            limit,
            address_limit,
            checks_per_address: checks_per_address.max(1),
            window,
            delay,
            capacity: THROTTLE_CAPACITY,
        }
    }

    /// Counts failures in `store`, under keys salted with `salt`: every process sharing
    /// the store must be given the same salt, so that they count the same keys.
    pub fn shared(self, store: Arc<dyn Store>, salt: [u8; 16]) -> Throttle {
        Throttle {
            shared: Some(store),
            salt,
            ..self
        }
    }

    fn key(&self, address: &[u8], name: Option<&str>) -> ThrottleKey {
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        hasher.update([address.len() as u8]);
        hasher.update(address);
        match name {
            Some(name) => {
                hasher.update([1]);
                hasher.update(name.as_bytes());
            }
            None => hasher.update([0]),
        }
        let digest = hasher.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        key
    }

    /// How long a key with `failures`, the last `since` ago, is still refused, if at all.
    fn wait(&self, failures: i64, since: Duration, limit: u32) -> Option<Duration> {
        if self.delay.is_zero() || failures < i64::from(limit) || since > self.window {
            return None;
        }
        let doublings = (failures - i64::from(limit)).min(16) as u32;
        let delay = self.delay.saturating_mul(1 << doublings).min(MAX_DELAY);
        delay.checked_sub(since).filter(|d| !d.is_zero())
    }

    /// Admits an attempt by `name` (empty for tokens) from `ip`, a password attempt
    /// when `password`, or says why not. Errs only when the shared counts cannot be read.
    pub async fn begin(
        self: &Arc<Self>,
        ip: IpAddr,
        name: &str,
        password: bool,
    ) -> Result<Result<Attempt, Refusal>, StoreError> {
        let address: Vec<u8> = match ip.to_canonical() {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets()[..8].to_vec(),
        };
        let user = self.key(&address, Some(name));
        let address = self.key(&address, None);
        let limit_of = |key: &[u8]| {
            if key == user {
                Some(self.limit)
            } else if key == address {
                Some(self.address_limit)
            } else {
                None
            }
        };
        let (wait, user_failed) = match &self.shared {
            Some(store) => {
                let counts = store.auth_failures([&user, &address]).await?;
                let now = unix_ms();
                let wait = counts
                    .iter()
                    .filter_map(|count| {
                        let since = Duration::from_millis(
                            u64::try_from(now.saturating_sub(count.last_ms)).unwrap_or(0),
                        );
                        self.wait(count.failures, since, limit_of(&count.key)?)
                    })
                    .max();
                (wait, counts.iter().any(|count| count.key == user))
            }
            None => {
                let now = Instant::now();
                let entries = self.entries.lock().expect("throttle poisoned");
                let wait = [user, address]
                    .iter()
                    .filter_map(|key| {
                        let entry = entries.get(key)?;
                        let since = now.saturating_duration_since(entry.last);
                        self.wait(i64::from(entry.failures), since, limit_of(key)?)
                    })
                    .max();
                (wait, entries.contains_key(&user))
            }
        };
        if let Some(wait) = wait {
            return Ok(Err(Refusal::Failures(wait)));
        }
        if password {
            let mut entries = self.entries.lock().expect("throttle poisoned");
            let checking = entries.get(&address).map_or(0, |e| e.checking);
            if checking >= self.checks_per_address {
                return Ok(Err(Refusal::Checking));
            }
            self.entry(&mut entries, address, Instant::now()).checking += 1;
        }
        Ok(Ok(Attempt {
            throttle: self.clone(),
            user,
            address,
            password,
            user_failed,
            finished: false,
        }))
    }

    /// The entry of `key`, made (with room made for it) if missing.
    fn entry<'a>(
        &self,
        entries: &'a mut HashMap<ThrottleKey, Entry>,
        key: ThrottleKey,
        now: Instant,
    ) -> &'a mut Entry {
        if !entries.contains_key(&key) && entries.len() >= self.capacity {
            self.make_room(entries, now);
        }
        let window = self.window;
        let entry = entries.entry(key).or_insert(Entry {
            failures: 0,
            checking: 0,
            last: now,
        });
        if now.saturating_duration_since(entry.last) > window {
            entry.failures = 0;
        }
        entry
    }

    /// What an outcome changes in memory: the place of a password check, and the counts
    /// when they are kept here.
    fn finish_here(&self, attempt: &Attempt, outcome: Outcome) {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("throttle poisoned");
        if attempt.password {
            if let Some(entry) = entries.get_mut(&attempt.address) {
                entry.checking = entry.checking.saturating_sub(1);
            }
        }
        if self.shared.is_none() {
            match outcome {
                Outcome::Success => {
                    entries.remove(&attempt.user);
                }
                Outcome::Failure => {
                    for key in [attempt.user, attempt.address] {
                        let entry = self.entry(&mut entries, key, now);
                        entry.failures = entry.failures.saturating_add(1);
                        entry.last = now;
                    }
                }
                Outcome::Undecided => {}
            }
        }
        if entries
            .get(&attempt.address)
            .is_some_and(|e| e.failures == 0 && e.checking == 0)
        {
            entries.remove(&attempt.address);
        }
    }

    /// Evicts expired entries, or failing that the least recently seen one; entries of
    /// checks under way stay.
    fn make_room(&self, entries: &mut HashMap<ThrottleKey, Entry>, now: Instant) {
        let window = self.window;
        entries.retain(|_, e| e.checking > 0 || now.saturating_duration_since(e.last) <= window);
        if entries.len() >= self.capacity {
            if let Some(oldest) = entries
                .iter()
                .filter(|(_, e)| e.checking == 0)
                .min_by_key(|(_, e)| e.last)
                .map(|(k, _)| *k)
            {
                entries.remove(&oldest);
            }
        }
    }

    /// Forgets failures whose window has passed; run on a timer.
    pub async fn prune(&self) -> Result<(), StoreError> {
        let now = Instant::now();
        let window = self.window;
        self.entries
            .lock()
            .expect("throttle poisoned")
            .retain(|_, e| e.checking > 0 || now.saturating_duration_since(e.last) <= window);
        if let Some(store) = &self.shared {
            store
                .prune_auth_failures(unix_ms().saturating_sub(millis(window)))
                .await?;
        }
        Ok(())
    }

    /// Entries currently kept in memory.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("throttle poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How often `prune` should run.
    pub fn prune_interval(&self) -> Duration {
        self.window
            .clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

impl Attempt {
    /// Records the outcome. A failure counted in the database is recorded before this
    /// returns (the next attempt, on any instance, must see it), by a task of its own, so
    /// that a client that goes away meanwhile cannot keep it from being counted.
    pub async fn finish(mut self, outcome: Outcome) {
        self.finished = true;
        self.throttle.finish_here(&self, outcome);
        let Some(store) = self.throttle.shared.clone() else {
            return;
        };
        match outcome {
            Outcome::Failure => {
                let keys = (self.user, self.address);
                let window = millis(self.throttle.window);
                let recording = tokio::spawn(async move {
                    store
                        .record_auth_failure([&keys.0, &keys.1], unix_ms(), window)
                        .await
                });
                match recording.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "could not count a failed authentication")
                    }
                    Err(e) => tracing::warn!(error = %e, "could not count a failed authentication"),
                }
            }
            // Off the request's path: a valid credential waits on one query, no more.
            Outcome::Success if self.user_failed => {
                let user = self.user;
                tokio::spawn(async move {
                    if let Err(e) = store.clear_auth_failures(&user).await {
                        tracing::warn!(error = %e, "could not clear authentication failures");
                    }
                });
            }
            _ => {}
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.finished {
            self.throttle.finish_here(self, Outcome::Undecided);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    fn throttle_of(limit: u32, address_limit: u32) -> Throttle {
        Throttle::new(
            limit,
            address_limit,
            2,
            Duration::from_secs(60),
            Duration::from_millis(100),
        )
    }

    fn throttle(limit: u32, address_limit: u32) -> Arc<Throttle> {
        Arc::new(throttle_of(limit, address_limit))
    }

    async fn begin(
        t: &Arc<Throttle>,
        ip: IpAddr,
        name: &str,
        password: bool,
    ) -> Result<Attempt, Refusal> {
        t.begin(ip, name, password)
            .await
            .expect("the counts are read")
    }

    async fn fail(t: &Arc<Throttle>, ip: IpAddr, name: &str) {
        begin(t, ip, name, true)
            .await
            .expect("admitted")
            .finish(Outcome::Failure)
            .await;
    }

    #[tokio::test]
    async fn repeated_failures_are_refused_until_success() {
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t = throttle(3, 100);
        for _ in 0..3 {
            fail(&t, ip, "alice").await;
        }
        let Err(Refusal::Failures(wait)) = begin(&t, ip, "alice", true).await else {
            panic!("refused");
        };
        assert!(wait > Duration::from_millis(50) && wait <= Duration::from_millis(100));
        // Another address and another user are not affected.
        begin(&t, [10, 0, 0, 2].into(), "alice", true)
            .await
            .expect("other address");
        let bob = begin(&t, ip, "bob", true).await.expect("other user");
        // Bob's success does not clear alice's count.
        bob.finish(Outcome::Success).await;
        assert!(begin(&t, ip, "alice", true).await.is_err());
    }

    #[tokio::test]
    async fn delay_doubles_per_failure_after_the_limit() {
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t = Arc::new(Throttle::new(
            1,
            100,
            2,
            Duration::from_secs(60),
            Duration::from_millis(1),
        ));
        fail(&t, ip, "alice").await;
        std::thread::sleep(Duration::from_millis(5));
        fail(&t, ip, "alice").await;
        let Err(Refusal::Failures(wait)) = begin(&t, ip, "alice", true).await else {
            panic!("refused");
        };
        assert!(wait > Duration::from_millis(1) && wait <= Duration::from_millis(2));
    }

    #[tokio::test]
    async fn success_clears_the_users_count() {
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t = throttle(3, 100);
        for _ in 0..2 {
            fail(&t, ip, "alice").await;
        }
        begin(&t, ip, "alice", true)
            .await
            .unwrap()
            .finish(Outcome::Success)
            .await;
        for _ in 0..3 {
            fail(&t, ip, "alice").await;
        }
        assert!(begin(&t, ip, "alice", true).await.is_err());
    }

    #[tokio::test]
    async fn fresh_user_names_from_one_address_are_refused_past_the_address_limit() {
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t = throttle(3, 20);
        for i in 0..20 {
            fail(&t, ip, &format!("nouser{i}")).await;
        }
        assert!(begin(&t, ip, "nouser20", true).await.is_err());
        assert!(begin(&t, [10, 0, 0, 2].into(), "nouser20", true)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn concurrent_password_checks_per_address_are_bounded() {
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t = throttle(5, 100);
        let first = begin(&t, ip, "alice", true).await.unwrap();
        let second = begin(&t, ip, "nouser", true).await.unwrap();
        assert_eq!(
            begin(&t, ip, "bob", true).await.unwrap_err(),
            Refusal::Checking
        );
        // Another address has its own places; tokens are cheap and not bounded here.
        let other = begin(&t, [10, 0, 0, 2].into(), "alice", true)
            .await
            .unwrap();
        let mut tokens = Vec::new();
        for _ in 0..50 {
            tokens.push(begin(&t, ip, "", false).await.unwrap());
        }
        // A finished check, or one whose client went away, gives its place back.
        first.finish(Outcome::Failure).await;
        let third = begin(&t, ip, "bob", true).await.unwrap();
        drop(second);
        let fourth = begin(&t, ip, "carol", true).await.unwrap();
        drop((third, fourth, other, tokens));
    }

    #[tokio::test]
    async fn concurrent_successes_are_never_refused() {
        // Many parallel requests with one valid token (a CI job uploading in parallel).
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t = throttle(3, 10);
        let mut attempts = Vec::new();
        for _ in 0..100 {
            attempts.push(begin(&t, ip, "", false).await.expect("admitted"));
        }
        for attempt in attempts {
            attempt.finish(Outcome::Success).await;
        }
        assert!(t.is_empty());
    }

    #[tokio::test]
    async fn ipv6_clients_count_by_their_64_prefix() {
        let t = throttle(2, 100);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        fail(&t, a, "alice").await;
        fail(&t, b, "alice").await;
        assert!(begin(&t, a, "alice", true).await.is_err());
        assert!(begin(&t, "2001:db8:1:3::1".parse().unwrap(), "alice", true)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn throttle_entries_are_fixed_size_and_capped() {
        let mut t = Throttle::new(
            10,
            1_000_000,
            2,
            Duration::from_secs(60),
            Duration::from_millis(100),
        );
        t.capacity = 1000;
        let t = Arc::new(t);
        let long_name = "x".repeat(200_000);
        for i in 0..5000u32 {
            let ip: IpAddr = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8].into();
            fail(&t, ip, &format!("{long_name}{i}")).await;
        }
        assert!(t.len() <= 1000, "{} entries", t.len());
    }

    #[tokio::test]
    async fn expired_entries_are_pruned() {
        let t = Arc::new(Throttle::new(
            3,
            100,
            2,
            Duration::from_millis(1),
            Duration::from_millis(100),
        ));
        fail(&t, [10, 0, 0, 1].into(), "alice").await;
        assert_eq!(t.len(), 2);
        std::thread::sleep(Duration::from_millis(5));
        t.prune().await.unwrap();
        assert!(t.is_empty());
    }

    /// Two processes on one database, as the server's instances on PostgreSQL: each
    /// counts what the other saw.
    #[tokio::test]
    async fn throttles_sharing_a_store_count_each_others_failures() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("registry.db").display());
        let store: Arc<dyn Store> = Arc::new(
            crate::store::SqliteStore::connect(&url, 2, crate::clock::system())
                .await
                .unwrap(),
        );
        let salt = [7u8; 16];
        let instance = || Arc::new(throttle_of(3, 5).shared(store.clone(), salt));
        let (a, b) = (instance(), instance());
        let ip: IpAddr = [10, 0, 0, 1].into();
        fail(&a, ip, "alice").await;
        fail(&b, ip, "alice").await;
        fail(&a, ip, "alice").await;
        for t in [&a, &b] {
            let Err(Refusal::Failures(wait)) = begin(t, ip, "alice", true).await else {
                panic!("refused");
            };
            assert!(wait > Duration::from_millis(50) && wait <= Duration::from_millis(100));
        }
        // Per address: two more names over both, then any name.
        fail(&b, ip, "bob").await;
        fail(&a, ip, "carol").await;
        assert!(begin(&b, ip, "dave", true).await.is_err());
        assert!(begin(&a, [10, 0, 0, 2].into(), "dave", true).await.is_ok());
        // Counts live in the store, not in memory; a success clears its name's count on
        // every instance (off the request's path: polled).
        assert!(a.is_empty() && b.is_empty());
        let other: IpAddr = [10, 0, 0, 3].into();
        for _ in 0..2 {
            fail(&a, other, "erin").await;
        }
        begin(&b, other, "erin", true)
            .await
            .unwrap()
            .finish(Outcome::Success)
            .await;
        let erin = a.key(&[10, 0, 0, 3], Some("erin"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !store
            .auth_failures([&erin, &erin])
            .await
            .unwrap()
            .is_empty()
        {
            assert!(
                Instant::now() < deadline,
                "the success never cleared the count"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for _ in 0..2 {
            fail(&b, other, "erin").await;
        }
        assert!(begin(&a, other, "erin", true).await.is_ok());
    }
}
