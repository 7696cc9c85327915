-- The audit log: one row per change, inserted in the transaction that makes the change.
--
-- No foreign keys: an entry outlives the owner, user or token it names, so names are kept
-- as they were at the time next to the ids. `detail` is a small JSON object.
CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    at_ms       BIGINT NOT NULL,
    owner_id    BIGINT,
    owner_name  TEXT,
    actor_kind  TEXT NOT NULL,
    actor       TEXT NOT NULL,
    token_id    BIGINT,
    token_label TEXT,
    client      TEXT,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_log_time ON audit_log (at_ms);
CREATE INDEX audit_log_owner ON audit_log (owner_id, id);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_action ON audit_log (action, id);
