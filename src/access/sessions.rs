//! Login sessions of the web pages: started by a login, read back on every page, ended by
//! logout. They live in the database, so every instance sharing it knows every session.
//!
//! A session id is 256 bits from the OS RNG, in hex; the database keeps only its SHA-256,
//! and the session's CSRF token is derived from the id (another SHA-256, apart from the
//! first), so nothing the database holds can act as a session or forge its forms. Reading
//! a session is one indexed query that brings its user and token along: a session ends
//! when it expires, at logout, when its token is revoked (the row goes with it) or
//! expires, when its user is deleted, and when its user's password changes (password
//! sessions keep a fingerprint of the password hash they were made with).

use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::access::{digests_equal, Principal, TokenUse, TOKEN_USE_RESOLUTION_SECS};
use crate::error::{AppError, AppResult};
use crate::store::{NewSession, Role, SessionAdmission, SessionLimits, SessionRecord};
use crate::AppState;

/// 32 bytes from the OS RNG, in hex: session ids, and the login form's CSRF value.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What the database keeps of a session id.
fn digest(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// The token the session's forms carry: derived from the id, which only the visitor and
/// the server know, and told apart from the stored digest by its prefix.
pub fn csrf_token(id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"alpine-registry session csrf\0");
    hasher.update(id.as_bytes());
    hex::encode(hasher.finalize())
}

/// SHA-256 of a password hash: another password, another fingerprint.
fn fingerprint(password_hash: &str) -> String {
    hex::encode(Sha256::digest(password_hash.as_bytes()))
}

/// Whether `id` is shaped like a session id: anything else is not looked up.
fn well_formed(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Starts a session for `principal`, who logged in with the token whose digest is
/// `token_hash` (None: with a password), and returns its id, for the cookie. Within the
/// limits of `auth`: past `max_logins_per_user` recent logins, 429; with `max_sessions`
/// live sessions, 503 (no other user's session is ended to make room); past
/// `max_sessions_per_user`, the user's own oldest session ends.
pub async fn start(
    state: &AppState,
    principal: &Principal,
    token_hash: Option<&str>,
) -> AppResult<String> {
    let user = &principal.user;
    let token_id = match token_hash {
        Some(hash) => Some(
            state
                .store
                .token_by_hash(hash)
                .await?
                .ok_or_else(|| {
                    AppError::Unauthorized(
                        "this token no longer exists: log in again with another".into(),
                    )
                })?
                .id,
        ),
        None => None,
    };
    let password_fingerprint = match token_id {
        Some(_) => None,
        None => user.password_hash.as_deref().map(fingerprint),
    };
    let auth = &state.config.auth;
    let id = random_token();
    let id_hash = digest(&id);
    let now = state.clock.unix_secs();
    let lifetime = i64::try_from(auth.session_lifetime_secs).unwrap_or(i64::MAX);
    let window_ms = i64::try_from(auth.login_window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let interval_ms = (window_ms / i64::from(auth.max_logins_per_user.max(1))).max(1);
    let limits = SessionLimits {
        per_user: i64::try_from(auth.max_sessions_per_user).unwrap_or(i64::MAX),
        total: i64::try_from(auth.max_sessions).unwrap_or(i64::MAX),
        login_interval_ms: interval_ms,
        login_burst_ms: window_ms.saturating_sub(interval_ms),
        now_ms: state.clock.unix_ms(),
    };
    let admission = state
        .store
        .create_session(
            NewSession {
                id_hash: &id_hash,
                user_id: user.id,
                token_id,
                password_fingerprint: password_fingerprint.as_deref(),
                created_at: now,
                expires_at: now.saturating_add(lifetime),
            },
            limits,
        )
        .await?;
    match admission {
        SessionAdmission::Created { evicted } => {
            if evicted > 0 {
                tracing::info!(
                    user = %user.name, evicted,
                    "ended the user's oldest login sessions (auth.max_sessions_per_user)"
                );
            }
            Ok(id)
        }
        SessionAdmission::TooSoon { retry_after_ms } => {
            let retry_after = u64::try_from(retry_after_ms.saturating_add(999) / 1000)
                .unwrap_or(1)
                .max(1);
            Err(AppError::TooManyRequests {
                message: format!(
                    "{} logged in {} times within {} s, as often as a user may: retry in \
                     {retry_after} s, or send the credentials in an Authorization header, \
                     which needs no login",
                    user.name, auth.max_logins_per_user, auth.login_window_secs
                ),
                retry_after,
            })
        }
        SessionAdmission::Full { next_expiry } => {
            tracing::warn!(
                max_sessions = auth.max_sessions,
                "a login was refused: the registry holds auth.max_sessions login sessions"
            );
            Err(AppError::Overloaded {
                message: "the registry holds as many login sessions as it may: retry later, \
                          or send the credentials in an Authorization header, which needs no \
                          login"
                    .into(),
                retry_after: u64::try_from(next_expiry.saturating_sub(now))
                    .unwrap_or(1)
                    .max(1),
            })
        }
    }
}

/// Who session `id` is, if it is still valid. An invalid one (its token revoked or
/// expired, its user's password changed) is deleted.
pub async fn resume(state: &AppState, id: &str) -> AppResult<Option<Principal>> {
    if !well_formed(id) {
        return Ok(None);
    }
    let id_hash = digest(id);
    let now = state.clock.unix_secs();
    let Some(record) = state.store.session(&id_hash, now).await? else {
        return Ok(None);
    };
    // The lookup is by digest; comparing it again in constant time keeps the decision
    // itself free of early exits.
    if !digests_equal(&record.id_hash, &id_hash) {
        return Ok(None);
    }
    match still_valid(state, record, now) {
        Some(principal) => Ok(Some(principal)),
        None => {
            state.store.delete_session(&id_hash).await?;
            Ok(None)
        }
    }
}

/// The principal of a session read back, or None when what it was made with no longer
/// holds.
fn still_valid(state: &AppState, record: SessionRecord, now: i64) -> Option<Principal> {
    if let Some(token) = record.token {
        if token.revoked_at.is_some() || token.expires_at.is_some_and(|at| at <= now) {
            return None;
        }
        // As when the token itself authenticates: kept to the minute, off the path.
        if token
            .last_used_at
            .is_none_or(|at| now - at >= TOKEN_USE_RESOLUTION_SECS)
        {
            let store = state.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.touch_token(token.id, now).await {
                    tracing::warn!(token = token.id, error = %e, "could not record the token's use");
                }
            });
        }
        return Some(Principal {
            user: record.user,
            scope: token.scope,
            only_owner: token.owner_id,
            token: Some(TokenUse {
                id: token.id,
                label: None,
            }),
        });
    }
    let current = record.user.password_hash.as_deref().map(fingerprint)?;
    let at_login = record.password_fingerprint?;
    if !digests_equal(&current, &at_login) {
        return None;
    }
    Some(Principal {
        user: record.user,
        scope: Role::Admin,
        only_owner: None,
        token: None,
    })
}

/// Ends session `id` (logout), on every instance.
pub async fn end(state: &AppState, id: &str) -> AppResult<()> {
    if well_formed(id) {
        state.store.delete_session(&digest(id)).await?;
    }
    Ok(())
}

/// How often expired sessions are pruned.
pub fn prune_interval(state: &AppState) -> Duration {
    Duration::from_secs(state.config.auth.session_lifetime_secs)
        .clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Deletes the sessions that expired; returns how many.
pub async fn prune(state: &AppState) -> AppResult<u64> {
    Ok(state.store.prune_sessions(state.clock.unix_secs()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_digest_and_the_csrf_token_are_apart_and_fixed_per_id() {
        let id = random_token();
        assert!(well_formed(&id));
        assert_ne!(random_token(), id);
        assert_eq!(csrf_token(&id), csrf_token(&id));
        assert_ne!(csrf_token(&id), digest(&id));
        assert_ne!(csrf_token(&id), csrf_token(&random_token()));
        assert!(!well_formed(&id[..63]));
        assert!(!well_formed(&format!("{}g", &id[..63])));
    }
}
