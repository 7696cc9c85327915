-- Webhooks: per owner, the URL to POST events to, its secret (sealed with the master key)
-- and the events it wants, comma-separated.
CREATE TABLE webhooks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id      INTEGER NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    url           TEXT NOT NULL,
    secret_sealed TEXT NOT NULL,
    events        TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    created_by    TEXT NOT NULL
);
CREATE INDEX webhooks_owner ON webhooks (owner_id);

-- The outbox: one row per event and webhook, inserted in the transaction of the change.
-- A pending row is sent when next_attempt_ms has come; a worker claims it by moving
-- next_attempt_ms past its send timeout, so that no other worker takes it meanwhile.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id      INTEGER NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_ms      INTEGER NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_attempt_ms INTEGER,
    last_status     INTEGER,
    last_latency_ms INTEGER,
    last_error      TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_ms)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id);

-- The package files a change added to or removed from a repository, kept (only while an
-- owner has a webhook for index.published) until the index of that generation is
-- published, which sends them in its event.
CREATE TABLE webhook_index_files (
    repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    generation    INTEGER NOT NULL,
    arch          TEXT NOT NULL,
    filename      TEXT NOT NULL,
    change        TEXT NOT NULL CHECK (change IN ('added', 'removed'))
);
CREATE INDEX webhook_index_files_generation ON webhook_index_files (repository_id, generation);
