-- Login sessions of the web pages, shared by every instance on the database. A session is
-- found by the SHA-256 of its id (hex): the id itself, which the visitor's cookie holds,
-- is never stored. A token login names its token (revoking or deleting the token ends the
-- session); a password login keeps the SHA-256 of the user's password hash at login, so
-- that another password ends it. Rows past expires_at are pruned on a timer.
CREATE TABLE sessions (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id_hash              TEXT NOT NULL UNIQUE,
    user_id              BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_id             BIGINT REFERENCES tokens(id) ON DELETE CASCADE,
    password_fingerprint TEXT,
    created_at           BIGINT NOT NULL,
    expires_at           BIGINT NOT NULL
);
-- A user's sessions, oldest first (the per-user cap evicts from the front).
CREATE INDEX sessions_user ON sessions (user_id, id);
CREATE INDEX sessions_token ON sessions (token_id) WHERE token_id IS NOT NULL;
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- Successful logins per user, as one time per user (the generic cell rate algorithm):
-- the earliest time, in Unix milliseconds, at which the user's login allowance is full
-- again.
CREATE TABLE login_rates (
    user_id BIGINT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    next_ms BIGINT NOT NULL
);
