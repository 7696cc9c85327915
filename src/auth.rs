//! Credentials: API tokens, passwords, and who may do what on an owner.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

use crate::store::{Owner, Role, TokenRecord, User};

/// Every token starts with this, so scanners and people recognise one.
pub const TOKEN_PREFIX: &str = "apkreg_";

/// A freshly generated token: the secret (shown once) and what is stored.
pub struct NewTokenSecret {
    pub secret: String,
    pub hash: String,
    pub display_prefix: String,
}

impl std::fmt::Debug for NewTokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewTokenSecret")
            .field("display_prefix", &self.display_prefix)
            .finish_non_exhaustive()
    }
}

pub fn generate_token() -> NewTokenSecret {
    let mut bytes = [0u8; 30];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    token_from_secret(secret)
}

/// Wraps a caller-chosen secret (the bootstrap token from the environment).
pub fn token_from_secret(secret: String) -> NewTokenSecret {
    NewTokenSecret {
        hash: hash_token(&secret),
        display_prefix: secret.chars().take(TOKEN_PREFIX.len() + 6).collect(),
        secret,
    }
}

/// Tokens carry 240 bits of entropy, so a fast hash is enough; the database only ever
/// sees this digest.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two token digests without an early exit.
pub fn digests_equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

/// A real argon2 hash of nothing in particular, verified against when the user does not
/// exist, so that the answer takes as long as for a wrong password.
pub fn dummy_password_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("not a password").unwrap_or_default())
}

/// Constant-time by construction (argon2 compares digests in constant time).
pub fn verify_password(password: &str, hash: &str) -> bool {
    verify_password_in(password, hash, &mut Vec::new())
}

/// Verifies with `memory` as argon2's working memory (grown to what the hash's
/// parameters need), so that a caller can reuse one buffer instead of allocating ~19 MiB
/// per check, which the allocator tends to keep per thread afterwards.
fn verify_password_in(password: &str, hash: &str, memory: &mut Vec<argon2::Block>) -> bool {
    let mut check = || -> Option<bool> {
        let parsed = PasswordHash::new(hash).ok()?;
        let algorithm = argon2::Algorithm::try_from(parsed.algorithm).ok()?;
        let version = match parsed.version {
            Some(v) => argon2::Version::try_from(v).ok()?,
            None => argon2::Version::default(),
        };
        let params = argon2::Params::try_from(&parsed).ok()?;
        let expected = parsed.hash?;
        let mut salt = [0u8; 64];
        let salt = parsed.salt?.decode_b64(&mut salt).ok()?;
        memory.resize(params.block_count(), argon2::Block::default());
        let mut out = vec![0u8; expected.len()];
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..])
            .ok()?;
        Some(out.ct_eq(expected.as_bytes()).into())
    };
    check().unwrap_or(false)
}

/// Parses a duration with its unit, `90d`, `12h`, `30m`, `3600s`, `2w` or `1y`, into
/// seconds. A bare number is refused rather than taken as seconds: `--expires-in 3`
/// meaning three seconds surprises everybody.
pub fn parse_duration(text: &str) -> anyhow::Result<i64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    if text.starts_with('-') {
        anyhow::bail!("invalid duration {text:?}: it must be positive, e.g. 90d");
    }
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        "y" => 365 * 86400,
        "" => {
            anyhow::bail!("invalid duration {text:?}: give a unit, s, m, h, d, w or y (e.g. 90d)")
        }
        _ => anyhow::bail!("invalid duration unit in {text:?}: use s, m, h, d, w or y"),
    };
    let n: i64 = digits
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid duration {text:?}: expected e.g. 90d, 12h, 30m"))?;
    if n == 0 {
        anyhow::bail!("invalid duration {text:?}: it must be positive, e.g. 90d");
    }
    n.checked_mul(factor)
        .ok_or_else(|| anyhow::anyhow!("invalid duration {text:?}: too long"))
}

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

/// Why a password check was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Bounds password verification, the one thing an anonymous client can make expensive:
/// each argon2 verification takes about 19 MiB and tens of milliseconds of a core. At most
/// `permits` run at once (on the blocking pool, whose other threads stay free for file
/// I/O); a few more wait briefly for a turn; the rest are refused at once.
pub struct PasswordChecks {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
    max_waiting: usize,
    max_wait: Duration,
    /// Working memory of finished checks, reused by the next: at most one per permit.
    memory: std::sync::Arc<Mutex<Vec<Vec<argon2::Block>>>>,
}

impl PasswordChecks {
    /// `permits` = 0 means one per available core.
    pub fn new(permits: usize) -> PasswordChecks {
        let permits = Self::permits_for(permits);
        PasswordChecks {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(permits)),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            max_waiting: permits * 4,
            max_wait: Duration::from_secs(5),
            memory: Default::default(),
        }
    }

    /// The number of checks run at once for a configured value (0: one per core).
    pub fn permits_for(configured: usize) -> usize {
        if configured == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            configured
        }
    }

    /// Verifies `password` against `hash`, or answers `Busy` when too many checks are
    /// running and waiting.
    pub async fn verify(&self, password: String, hash: String) -> Result<bool, Busy> {
        use std::sync::atomic::Ordering;
        // The permit moves into the blocking task: a client that hangs up mid-check does
        // not free its place while the hash still runs.
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(Busy);
                }
                let acquired =
                    tokio::time::timeout(self.max_wait, self.permits.clone().acquire_owned()).await;
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                match acquired {
                    Ok(Ok(permit)) => permit,
                    _ => return Err(Busy),
                }
            }
        };
        let memory = self.memory.clone();
        let verified = tokio::task::spawn_blocking(move || {
            let mut blocks = memory.lock().expect("poisoned").pop().unwrap_or_default();
            let ok = verify_password_in(&password, &hash, &mut blocks);
            memory.lock().expect("poisoned").push(blocks);
            drop(permit);
            ok
        })
        .await;
        // A panicked verification is a failed one.
        Ok(verified.unwrap_or(false))
    }
}

/// Who is asking: nobody, or a user with the scope of the credential used.
#[derive(Debug, Clone)]
pub enum Identity {
    Anonymous,
    User(Principal),
}

#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    /// The token's scope; a password grants everything the user has.
    pub scope: Role,
    /// A token limited to one owner.
    pub only_owner: Option<i64>,
}

impl Principal {
    pub fn from_token(user: User, token: &TokenRecord) -> Principal {
        Principal {
            user,
            scope: token.scope,
            only_owner: token.owner_id,
        }
    }
}

/// The outcome of an access check, before it becomes an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Granted,
    /// No credentials, and they are needed.
    NeedCredentials,
    /// Authenticated, may see the owner, lacks the right.
    Denied,
    /// Authenticated, may not even know the owner exists.
    Hidden,
}

/// Decides access of `identity` (whose role on the owner is `member_role`) to `owner`.
pub fn decide(
    identity: &Identity,
    member_role: Option<Role>,
    owner: &Owner,
    need: Role,
    anonymous_read: bool,
) -> Access {
    let principal = match identity {
        Identity::Anonymous => {
            return if need == Role::Read && !owner.is_private && anonymous_read {
                Access::Granted
            } else {
                Access::NeedCredentials
            };
        }
        Identity::User(principal) => principal,
    };
    let token_fits = principal.only_owner.is_none_or(|id| id == owner.id);
    let role = if !token_fits {
        // A token limited to another owner carries no role here; but a public owner that
        // anyone may read anonymously is readable with it too (refusing would only make
        // the client drop its credentials to get the same answer).
        (!owner.is_private && anonymous_read).then_some(Role::Read)
    } else if principal.user.is_admin {
        Some(Role::Admin)
    } else if owner.is_private {
        member_role
    } else {
        // Any signed-in user may read a public owner.
        member_role.max(Some(Role::Read))
    };
    let effective = role.map(|r| r.min(principal.scope));
    match effective {
        Some(r) if r >= need => Access::Granted,
        _ if owner.is_private && effective.is_none() => Access::Hidden,
        _ => Access::Denied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(private: bool) -> Owner {
        Owner {
            id: 1,
            name: "acme".into(),
            is_private: private,
            is_org: true,
        }
    }

    fn user(scope: Role, only_owner: Option<i64>) -> Identity {
        Identity::User(Principal {
            user: User {
                id: 7,
                name: "u".into(),
                is_admin: false,
                password_hash: None,
            },
            scope,
            only_owner,
        })
    }

    #[test]
    fn token_scope_caps_member_role() {
        let id = user(Role::Read, None);
        assert_eq!(
            decide(&id, Some(Role::Admin), &owner(false), Role::Write, true),
            Access::Denied
        );
        let id = user(Role::Write, None);
        assert_eq!(
            decide(&id, Some(Role::Write), &owner(true), Role::Write, true),
            Access::Granted
        );
    }

    #[test]
    fn private_owner_is_hidden_from_outsiders() {
        let id = user(Role::Admin, None);
        assert_eq!(
            decide(&id, None, &owner(true), Role::Read, true),
            Access::Hidden
        );
        assert_eq!(
            decide(&Identity::Anonymous, None, &owner(true), Role::Read, true),
            Access::NeedCredentials
        );
        let other_owner_token = user(Role::Admin, Some(99));
        assert_eq!(
            decide(
                &other_owner_token,
                Some(Role::Admin),
                &owner(true),
                Role::Read,
                true
            ),
            Access::Hidden
        );
    }

    #[test]
    fn anonymous_reads_public_only_when_allowed() {
        assert_eq!(
            decide(&Identity::Anonymous, None, &owner(false), Role::Read, true),
            Access::Granted
        );
        assert_eq!(
            decide(&Identity::Anonymous, None, &owner(false), Role::Read, false),
            Access::NeedCredentials
        );
        assert_eq!(
            decide(&Identity::Anonymous, None, &owner(false), Role::Write, true),
            Access::NeedCredentials
        );
    }

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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_checks_beyond_the_cap_are_refused() {
        let checks = std::sync::Arc::new(PasswordChecks::new(1));
        let hash = dummy_password_hash().to_string();
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let checks = checks.clone();
                let hash = hash.clone();
                tokio::spawn(async move { checks.verify("wrong".into(), hash).await })
            })
            .collect();
        let mut busy = 0;
        let mut checked = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(ok) => {
                    assert!(!ok);
                    checked += 1;
                }
                Err(Busy) => busy += 1,
            }
        }
        assert!(busy > 0, "some checks must be refused");
        assert!(checked >= 1, "some checks must run");
        assert!(
            checks
                .verify("not a password".into(), hash)
                .await
                .expect("free again"),
            "the right password verifies"
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90d").unwrap(), 90 * 86400);
        assert_eq!(parse_duration("3600s").unwrap(), 3600);
        assert_eq!(parse_duration("2w").unwrap(), 14 * 86400);
        let message = |text| parse_duration(text).unwrap_err().to_string();
        assert!(message("3").contains("give a unit"), "{}", message("3"));
        assert!(message("0d").contains("must be positive"));
        assert!(message("-5d").contains("must be positive"));
        assert!(message("5x").contains("use s, m, h, d, w or y"));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("99999999999999y").is_err());
    }

    #[test]
    fn tokens_are_prefixed_and_hash_stably() {
        let t = generate_token();
        assert!(t.secret.starts_with(TOKEN_PREFIX));
        assert_eq!(t.hash, hash_token(&t.secret));
        assert!(!format!("{t:?}").contains(&t.secret));
        let p = hash_password("hunter2").unwrap();
        assert!(verify_password("hunter2", &p));
        assert!(!verify_password("hunter3", &p));
    }
}
