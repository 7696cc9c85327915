//! API tokens: generation, digests, constant-time comparison, expiry durations.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every token starts with this, so scanners and people recognise one.
pub const TOKEN_PREFIX: &str = "apkreg_";

/// How precisely `token list` knows when a token was last used.
pub const TOKEN_USE_RESOLUTION_SECS: i64 = 60;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::passwords::{hash_password, verify_password};

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
