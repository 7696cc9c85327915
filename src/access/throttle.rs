//! The authentication failure throttle: per address and name, and per address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Entries the failure throttle keeps at most; past this the least recently seen are
/// evicted, so no stream of fresh names or addresses can grow it further.
pub const THROTTLE_CAPACITY: usize = 100_000;

/// Longest delay the throttle asks a client to wait.
const MAX_DELAY: Duration = Duration::from_secs(30);

/// A fixed-size, salted digest of who an attempt is from, so that an entry costs the same
/// whatever the client sent and its contents are of no use to anyone reading memory.
type ThrottleKey = [u8; 16];

#[derive(Debug, Clone, Copy)]
struct Entry {
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
/// Before any password is hashed, the attempt is admitted per address: at most
/// `checks_per_address` run (or wait for a turn) at once, so concurrent guesses cannot
/// all start before the first failures are counted, and one address cannot take every
/// place in the queue of password checks. Entries are pruned on a timer (`prune`) and
/// capped at [`THROTTLE_CAPACITY`].
pub struct Throttle {
    entries: Mutex<HashMap<ThrottleKey, Entry>>,
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
    throttle: std::sync::Arc<Throttle>,
    user: ThrottleKey,
    address: ThrottleKey,
    password: bool,
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
        f.debug_struct("Throttle").finish_non_exhaustive()
    }
}

impl Throttle {
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
            salt,
            limit,
            address_limit,
            checks_per_address: checks_per_address.max(1),
            window,
            delay,
            capacity: THROTTLE_CAPACITY,
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

    /// How long an entry with these failures is still refused, if at all.
    fn wait(&self, entry: &Entry, limit: u32, now: Instant) -> Option<Duration> {
        let since = now.saturating_duration_since(entry.last);
        if self.delay.is_zero() || entry.failures < limit || since > self.window {
            return None;
        }
        let doublings = (entry.failures - limit).min(16);
        let delay = self.delay.saturating_mul(1 << doublings).min(MAX_DELAY);
        delay.checked_sub(since).filter(|d| !d.is_zero())
    }

    /// Admits an attempt by `name` (empty for tokens) from `ip`, a password attempt
    /// when `password`, or says why not.
    pub fn begin(
        self: &std::sync::Arc<Self>,
        ip: IpAddr,
        name: &str,
        password: bool,
    ) -> Result<Attempt, Refusal> {
        let address: Vec<u8> = match ip.to_canonical() {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets()[..8].to_vec(),
        };
        let user = self.key(&address, Some(name));
        let address = self.key(&address, None);
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("throttle poisoned");
        let waits = [(user, self.limit), (address, self.address_limit)];
        if let Some(wait) = waits
            .iter()
            .filter_map(|(key, limit)| self.wait(entries.get(key)?, *limit, now))
            .max()
        {
            return Err(Refusal::Failures(wait));
        }
        if password {
            let checking = entries.get(&address).map_or(0, |e| e.checking);
            if checking >= self.checks_per_address {
                return Err(Refusal::Checking);
            }
            self.entry(&mut entries, address, now).checking += 1;
        }
        Ok(Attempt {
            throttle: self.clone(),
            user,
            address,
            password,
            finished: false,
        })
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

    fn finish(&self, attempt: &Attempt, outcome: Outcome) {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("throttle poisoned");
        if attempt.password {
            if let Some(entry) = entries.get_mut(&attempt.address) {
                entry.checking = entry.checking.saturating_sub(1);
            }
        }
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

    /// Forgets entries whose window has passed; run on a timer.
    pub fn prune(&self) {
        let now = Instant::now();
        let window = self.window;
        self.entries
            .lock()
            .expect("throttle poisoned")
            .retain(|_, e| e.checking > 0 || now.saturating_duration_since(e.last) <= window);
    }

    /// Entries currently kept.
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
    pub fn finish(mut self, outcome: Outcome) {
        self.finished = true;
        self.throttle.finish(&self, outcome);
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.finished {
            self.throttle.finish(self, Outcome::Undecided);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    fn throttle(limit: u32, address_limit: u32) -> Arc<Throttle> {
        Arc::new(Throttle::new(
            limit,
            address_limit,
            2,
            Duration::from_secs(60),
            Duration::from_millis(100),
        ))
    }

    fn fail(t: &Arc<Throttle>, ip: IpAddr, name: &str) {
        t.begin(ip, name, true)
            .expect("admitted")
            .finish(Outcome::Failure);
    }

    #[test]
    fn repeated_failures_are_refused_until_success() {
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t = throttle(3, 100);
        for _ in 0..3 {
            fail(&t, ip, "alice");
        }
        let Err(Refusal::Failures(wait)) = t.begin(ip, "alice", true) else {
            panic!("refused");
        };
        assert!(wait > Duration::from_millis(50) && wait <= Duration::from_millis(100));
        // Another address and another user are not affected.
        t.begin([10, 0, 0, 2].into(), "alice", true)
            .expect("other address");
        let bob = t.begin(ip, "bob", true).expect("other user");
        // Bob's success does not clear alice's count.
        bob.finish(Outcome::Success);
        assert!(t.begin(ip, "alice", true).is_err());
    }

    #[test]
    fn delay_doubles_per_failure_after_the_limit() {
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t = Arc::new(Throttle::new(
            1,
            100,
            2,
            Duration::from_secs(60),
            Duration::from_millis(1),
        ));
        fail(&t, ip, "alice");
        std::thread::sleep(Duration::from_millis(5));
        fail(&t, ip, "alice");
        let Err(Refusal::Failures(wait)) = t.begin(ip, "alice", true) else {
            panic!("refused");
        };
        assert!(wait > Duration::from_millis(1) && wait <= Duration::from_millis(2));
    }

    #[test]
    fn success_clears_the_users_count() {
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t = throttle(3, 100);
        for _ in 0..2 {
            fail(&t, ip, "alice");
        }
        t.begin(ip, "alice", true).unwrap().finish(Outcome::Success);
        for _ in 0..3 {
            fail(&t, ip, "alice");
        }
        assert!(t.begin(ip, "alice", true).is_err());
    }

    #[test]
    fn fresh_user_names_from_one_address_are_refused_past_the_address_limit() {
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t = throttle(3, 20);
        for i in 0..20 {
            fail(&t, ip, &format!("nouser{i}"));
        }
        assert!(t.begin(ip, "nouser20", true).is_err());
        assert!(t.begin([10, 0, 0, 2].into(), "nouser20", true).is_ok());
    }

    #[test]
    fn concurrent_password_checks_per_address_are_bounded() {
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t = throttle(5, 100);
        let first = t.begin(ip, "alice", true).unwrap();
        let second = t.begin(ip, "nouser", true).unwrap();
        assert_eq!(t.begin(ip, "bob", true).unwrap_err(), Refusal::Checking);
        // Another address has its own places; tokens are cheap and not bounded here.
        let other = t.begin([10, 0, 0, 2].into(), "alice", true).unwrap();
        let tokens: Vec<_> = (0..50).map(|_| t.begin(ip, "", false).unwrap()).collect();
        // A finished check, or one whose client went away, gives its place back.
        first.finish(Outcome::Failure);
        let third = t.begin(ip, "bob", true).unwrap();
        drop(second);
        let fourth = t.begin(ip, "carol", true).unwrap();
        drop((third, fourth, other, tokens));
    }

    #[test]
    fn concurrent_successes_are_never_refused() {
        // Many parallel requests with one valid token (a CI job uploading in parallel).
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t = throttle(3, 10);
        let attempts: Vec<_> = (0..100)
            .map(|_| t.begin(ip, "", false).expect("admitted"))
            .collect();
        for attempt in attempts {
            attempt.finish(Outcome::Success);
        }
        assert!(t.is_empty());
    }

    #[test]
    fn ipv6_clients_count_by_their_64_prefix() {
        let t = throttle(2, 100);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        fail(&t, a, "alice");
        fail(&t, b, "alice");
        assert!(t.begin(a, "alice", true).is_err());
        assert!(t
            .begin("2001:db8:1:3::1".parse().unwrap(), "alice", true)
            .is_ok());
    }

    #[test]
    fn throttle_entries_are_fixed_size_and_capped() {
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
            fail(&t, ip, &format!("{long_name}{i}"));
        }
        assert!(t.len() <= 1000, "{} entries", t.len());
    }

    #[test]
    fn expired_entries_are_pruned() {
        let t = Arc::new(Throttle::new(
            3,
            100,
            2,
            Duration::from_millis(1),
            Duration::from_millis(100),
        ));
        fail(&t, [10, 0, 0, 1].into(), "alice");
        assert_eq!(t.len(), 2);
        std::thread::sleep(Duration::from_millis(5));
        t.prune();
        assert!(t.is_empty());
    }
}
