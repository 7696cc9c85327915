-- Authentication failures per key (a salted digest of the client's address with or
-- without the user name tried) and when the last one was (Unix milliseconds), for a
-- throttle shared by several processes. The server on SQLite, one process, keeps its
-- throttle in memory; the table keeps both backends alike.
CREATE TABLE auth_failures (
    key      BLOB PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_ms  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX auth_failures_last ON auth_failures (last_ms);
