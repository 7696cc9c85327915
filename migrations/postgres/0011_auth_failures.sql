-- The authentication failure throttle shared by every instance on the database: failures
-- per key, a salted digest of the client's address with or without the user name tried
-- (16 bytes; the salt is derived from the master key that every instance shares), and
-- when the last one was (Unix milliseconds). UNLOGGED: a crash forgets recent failures,
-- nothing else. Rows older than the failure window are pruned on a timer.
CREATE UNLOGGED TABLE auth_failures (
    key      BYTEA PRIMARY KEY,
    failures BIGINT NOT NULL,
    last_ms  BIGINT NOT NULL
);
CREATE INDEX auth_failures_last ON auth_failures (last_ms);
