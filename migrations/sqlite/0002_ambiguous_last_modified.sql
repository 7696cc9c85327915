-- Last-Modified has one-second resolution. When a representation replaces another at the
-- same URL within one second, that date no longer tells a client which one it holds.
-- `earlier_modified_at` is the newest Last-Modified (Unix seconds) of an earlier
-- representation at the same URL when it is not before this one's, else NULL; a date up to
-- it proves nothing, so If-Modified-Since and If-Range by date do not match it.
ALTER TABLE packages ADD COLUMN earlier_modified_at INTEGER;
ALTER TABLE indexes ADD COLUMN earlier_modified_at INTEGER;

-- Files that went away (deleted packages, removed indexes) with the newest Last-Modified a
-- copy of them can carry, so that a new file at the same URL within that second is known to
-- be ambiguous. Only recent ones matter; each write that adds one prunes the old ones.
CREATE TABLE tombstones (
    repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    arch          TEXT NOT NULL,
    filename      TEXT NOT NULL,
    last_modified INTEGER NOT NULL
);
CREATE INDEX tombstones_file ON tombstones (repository_id, filename);
CREATE INDEX tombstones_last_modified ON tombstones (last_modified);
