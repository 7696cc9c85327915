//! Passwords: argon2 hashing and verification, and the bound on verifications running at
//! once.

use std::sync::Mutex;
use std::time::Duration;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;
use subtle::ConstantTimeEq;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
