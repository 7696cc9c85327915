//! Credentials: API tokens, passwords, and who may do what on an owner.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
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
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Parses `90d`, `12h`, `30m`, `3600s` or `3600` (seconds) into seconds.
pub fn parse_duration(text: &str) -> anyhow::Result<i64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: i64 = digits
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid duration {text:?}: expected e.g. 90d, 12h, 30m"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        "y" => 365 * 86400,
        _ => anyhow::bail!("invalid duration unit in {text:?}: use s, m, h, d, w or y"),
    };
    n.checked_mul(factor)
        .filter(|s| *s > 0)
        .ok_or_else(|| anyhow::anyhow!("invalid duration {text:?}"))
}

/// Who a throttled attempt is from: the address and the user name tried (empty for
/// tokens). Keyed by both, so one valid credential cannot clear the count of guesses at
/// another user's password, and a user behind the same address as an attacker is not
/// slowed down for the attacker's guesses.
pub type ThrottleKey = (std::net::IpAddr, String);

/// Slows down repeated authentication failures: after `limit` failures of one key
/// within `window`, every further attempt with it waits `delay`, doubling per failure up
/// to 30 s, until the window passes without failures or that key succeeds.
pub struct Throttle {
    failures: std::sync::Mutex<std::collections::HashMap<ThrottleKey, (u32, std::time::Instant)>>,
    limit: u32,
    window: std::time::Duration,
    delay: std::time::Duration,
}

impl Throttle {
    pub fn new(limit: u32, window: std::time::Duration, delay: std::time::Duration) -> Throttle {
        Throttle {
            failures: std::sync::Mutex::new(std::collections::HashMap::new()),
            limit,
            window,
            delay,
        }
    }

    /// How long an attempt with `key` must wait before it is checked.
    pub fn delay_for(&self, key: &ThrottleKey) -> Option<std::time::Duration> {
        let failures = self.failures.lock().expect("throttle poisoned");
        let (count, since) = failures.get(key)?;
        if since.elapsed() > self.window || *count < self.limit || self.delay.is_zero() {
            return None;
        }
        let doublings = (*count - self.limit).min(16);
        Some(
            self.delay
                .saturating_mul(1 << doublings)
                .min(std::time::Duration::from_secs(30)),
        )
    }

    pub fn record_failure(&self, key: ThrottleKey) {
        let mut failures = self.failures.lock().expect("throttle poisoned");
        if failures.len() > 100_000 {
            let window = self.window;
            failures.retain(|_, (_, since)| since.elapsed() <= window);
        }
        let entry = failures
            .entry(key)
            .or_insert((0, std::time::Instant::now()));
        if entry.1.elapsed() > self.window {
            *entry = (0, std::time::Instant::now());
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = std::time::Instant::now();
    }

    pub fn record_success(&self, key: &ThrottleKey) {
        self.failures.lock().expect("throttle poisoned").remove(key);
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

    #[test]
    fn repeated_failures_are_slowed_down_until_success() {
        let ip: std::net::IpAddr = [10, 0, 0, 1].into();
        let alice = (ip, "alice".to_string());
        let t = Throttle::new(
            3,
            std::time::Duration::from_secs(60),
            std::time::Duration::from_millis(100),
        );
        for _ in 0..3 {
            assert_eq!(t.delay_for(&alice), None);
            t.record_failure(alice.clone());
        }
        assert_eq!(
            t.delay_for(&alice),
            Some(std::time::Duration::from_millis(100))
        );
        t.record_failure(alice.clone());
        assert_eq!(
            t.delay_for(&alice),
            Some(std::time::Duration::from_millis(200))
        );
        assert_eq!(t.delay_for(&([10, 0, 0, 2].into(), "alice".into())), None);
        // Another user's success from the same address does not clear alice's count.
        let bob = (ip, "bob".to_string());
        assert_eq!(t.delay_for(&bob), None);
        t.record_success(&bob);
        assert!(t.delay_for(&alice).is_some());
        t.record_success(&alice);
        assert_eq!(t.delay_for(&alice), None);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90d").unwrap(), 90 * 86400);
        assert_eq!(parse_duration("3600").unwrap(), 3600);
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("0d").is_err());
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
