//! The SQL of login sessions and of the shared failure throttle, the same text on both
//! backends (`$n` placeholders, and CASE where one would write GREATEST or MAX).

/// The user's login allowance (the generic cell rate algorithm): `$1` user, `$2` now,
/// `$3` the interval, `$4` the burst tolerance, all in milliseconds. Returns the new
/// `next_ms` when the login is allowed; no row (and no change) when it is not.
pub(super) const TAKE_LOGIN: &str = "INSERT INTO login_rates (user_id, next_ms) \
     VALUES ($1, $2 + $3) \
     ON CONFLICT (user_id) DO UPDATE SET next_ms = \
     CASE WHEN login_rates.next_ms > $2 THEN login_rates.next_ms ELSE $2 END + $3 \
     WHERE CASE WHEN login_rates.next_ms > $2 THEN login_rates.next_ms ELSE $2 END - $2 <= $4 \
     RETURNING next_ms";

pub(super) const LOGIN_NEXT: &str = "SELECT next_ms FROM login_rates WHERE user_id = $1";

/// Deletes user `$1`'s sessions expired by `$2`, and their live ones but the newest `$3`.
pub(super) const EVICT_OWN: &str = "DELETE FROM sessions WHERE user_id = $1 AND \
     (expires_at <= $2 OR id NOT IN (SELECT id FROM sessions WHERE user_id = $1 \
     AND expires_at > $2 ORDER BY id DESC LIMIT $3))";

/// Live sessions at `$1`, and the end of the first of them.
pub(super) const LIVE: &str =
    "SELECT COUNT(*), MIN(expires_at) FROM sessions WHERE expires_at > $1";

pub(super) const INSERT: &str = "INSERT INTO sessions (id_hash, user_id, token_id, \
     password_fingerprint, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)";

/// One session with its user and token: by the unique index on `id_hash`, then by
/// primary keys.
pub(super) const SELECT: &str = "SELECT u.id, u.name, u.password_hash, u.is_admin, \
     s.id_hash, s.password_fingerprint, s.expires_at, s.token_id, t.scope, t.owner_id, \
     t.expires_at AS token_expires_at, t.revoked_at, t.last_used_at \
     FROM sessions s JOIN users u ON u.id = s.user_id LEFT JOIN tokens t ON t.id = s.token_id \
     WHERE s.id_hash = $1 AND s.expires_at > $2";

pub(super) const DELETE: &str = "DELETE FROM sessions WHERE id_hash = $1";

pub(super) const PRUNE: &str = "DELETE FROM sessions WHERE expires_at <= $1";

pub(super) const COUNT: &str =
    "SELECT COUNT(*) FROM sessions WHERE CAST($1 AS BIGINT) IS NULL OR user_id = $1";

/// What ends with a password: the user's sessions made with one.
pub(super) const END_PASSWORD_SESSIONS: &str =
    "DELETE FROM sessions WHERE user_id = $1 AND token_id IS NULL";

pub(super) const END_TOKEN_SESSIONS: &str = "DELETE FROM sessions WHERE token_id = $1";

pub(super) const FAILURES: &str =
    "SELECT key, failures, last_ms FROM auth_failures WHERE key IN ($1, $2)";

/// One failure more under keys `$1` and `$2` at `$3`; counts last failed before `$4` start
/// again. The last failure never moves back (instances' clocks may differ a little).
pub(super) const RECORD_FAILURE: &str = "INSERT INTO auth_failures (key, failures, last_ms) \
     VALUES ($1, 1, $3), ($2, 1, $3) \
     ON CONFLICT (key) DO UPDATE SET \
     failures = CASE WHEN auth_failures.last_ms < $4 THEN 1 ELSE auth_failures.failures + 1 END, \
     last_ms = CASE WHEN auth_failures.last_ms > $3 THEN auth_failures.last_ms ELSE $3 END";

pub(super) const CLEAR_FAILURES: &str = "DELETE FROM auth_failures WHERE key = $1";

pub(super) const PRUNE_FAILURES: &str = "DELETE FROM auth_failures WHERE last_ms < $1";
