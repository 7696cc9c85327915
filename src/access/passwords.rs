//! Passwords: argon2 hashing and verification, bounded. Every argon2 computation of the
//! server (a password checked, set or changed, by any route or command) runs through
//! [`PasswordChecks`], at most a few at once, each reusing working memory.

use std::sync::Mutex;
use std::time::Duration;

use argon2::password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;

/// Hashes `password` with a fresh buffer: for tests and tools that run outside a server.
/// The server hashes through [`PasswordChecks::hash`], which bounds and reuses memory.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    hash_password_in(password, &mut Vec::new())
}

/// Hashes with argon2's default parameters (argon2id, 19 MiB, 2 passes) and a random
/// salt, with `memory` as its working memory (grown to what the parameters need).
fn hash_password_in(password: &str, memory: &mut Vec<Block>) -> anyhow::Result<String> {
    let fail = |e: &dyn std::fmt::Display| anyhow::anyhow!("hashing a password: {e}");
    let params = Params::default();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(|e| fail(&e))?;
    memory.resize(params.block_count(), Block::default());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    argon2
        .hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, &mut memory[..])
        .map_err(|e| fail(&e))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| fail(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| fail(&e))?),
    };
    Ok(hash.to_string())
}

/// A real argon2 hash (of "not a password", with the parameters [`PasswordChecks::hash`]
/// uses), verified against when the user does not exist, so that the answer takes as long
/// as for a wrong password.
pub fn dummy_password_hash() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$Iaa8GkqEDzgpfbgB39UNHQ$4ZH2vNr2glO5YOS5rzQEI25K3AH7mei30Y7yanpreu0"
}

/// Constant-time by construction (argon2 compares digests in constant time). With a fresh
/// buffer: for tests; the server verifies through [`PasswordChecks::verify`].
pub fn verify_password(password: &str, hash: &str) -> bool {
    verify_password_in(password, hash, &mut Vec::new())
}

/// Verifies with `memory` as argon2's working memory (grown to what the hash's
/// parameters need), so that a caller can reuse one buffer instead of allocating ~19 MiB
/// per check, which the allocator tends to keep per thread afterwards.
fn verify_password_in(password: &str, hash: &str, memory: &mut Vec<Block>) -> bool {
    let mut check = || -> Option<bool> {
        let parsed = PasswordHash::new(hash).ok()?;
        let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(&parsed).ok()?;
        let expected = parsed.hash?;
        let mut salt = [0u8; 64];
        let salt = parsed.salt?.decode_b64(&mut salt).ok()?;
        memory.resize(params.block_count(), Block::default());
        let mut out = vec![0u8; expected.len()];
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..])
            .ok()?;
        Some(out.ct_eq(expected.as_bytes()).into())
    };
    check().unwrap_or(false)
}

/// Why a password was not checked or hashed: too many are under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Bounds argon2, the one thing an anonymous client can make expensive (a password
/// check), and that an administrator's script setting many passwords at once would make
/// expensive too: each computation takes about 19 MiB and tens of milliseconds of a core.
/// Verifications and hashes share the bound: at most `permits` run at once (on the
/// blocking pool, whose other threads stay free for file I/O), each reusing the working
/// memory of one finished before (the allocator would otherwise keep a fresh 19 MiB per
/// blocking thread); a few more wait briefly for a turn; the rest are refused at once.
pub struct PasswordChecks {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
    max_waiting: usize,
    max_wait: Duration,
    /// Working memory of finished computations, reused by the next: at most one per
    /// permit.
    memory: std::sync::Arc<Mutex<Vec<Vec<Block>>>>,
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
        // A panicked verification is a failed one.
        let verified = self
            .run(move |memory| verify_password_in(&password, &hash, memory))
            .await?;
        Ok(verified.unwrap_or(false))
    }

    /// Hashes a new `password` (argon2id, default parameters, random salt) under the same
    /// bound as checks, or answers `Busy`.
    pub async fn hash(&self, password: String) -> Result<anyhow::Result<String>, Busy> {
        let hashed = self
            .run(move |memory| hash_password_in(&password, memory))
            .await?;
        Ok(hashed.unwrap_or_else(|| Err(anyhow::anyhow!("the password hashing task failed"))))
    }

    /// Runs `work` with a permit and reused working memory on the blocking pool; None when
    /// it panicked.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<Option<T>, Busy> {
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
        let done = tokio::task::spawn_blocking(move || {
            let mut blocks = memory.lock().expect("poisoned").pop().unwrap_or_default();
            let result = work(&mut blocks);
            memory.lock().expect("poisoned").push(blocks);
            drop(permit);
            result
        })
        .await;
        Ok(done.ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dummy_hash_costs_what_a_real_one_does() {
        let parsed = PasswordHash::new(dummy_password_hash()).unwrap();
        assert_eq!(parsed.algorithm, Algorithm::Argon2id.ident());
        let (params, default) = (Params::try_from(&parsed).unwrap(), Params::default());
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (default.m_cost(), default.t_cost(), default.p_cost())
        );
        assert!(verify_password("not a password", dummy_password_hash()));
    }

    #[tokio::test]
    async fn hashes_made_under_the_bound_verify() {
        let checks = PasswordChecks::new(1);
        let hash = checks.hash("s3cret".into()).await.unwrap().unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(checks.verify("s3cret".into(), hash.clone()).await.unwrap());
        assert!(!checks.verify("s3cret!".into(), hash.clone()).await.unwrap());
        assert!(verify_password("s3cret", &hash), "a standard argon2 hash");
        let again = checks.hash("s3cret".into()).await.unwrap().unwrap();
        assert_ne!(hash, again, "a fresh salt each time");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_checks_beyond_the_cap_are_refused() {
        let checks = std::sync::Arc::new(PasswordChecks::new(1));
        let hash = dummy_password_hash().to_string();
        // Hashes of new passwords take the same places as checks.
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let checks = checks.clone();
                let hash = hash.clone();
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        checks.verify("wrong".into(), hash).await
                    } else {
                        checks.hash("new".into()).await.map(|h| h.is_err())
                    }
                })
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
