-- When package files last lost a reference (a package deleted, its repository or owner
-- removed): orphan collection keeps such a file for storage.orphan_grace_secs from then,
-- so that a database dump taken before a copy of the blobs finds in the copy every file
-- it lists. Rows older than the grace period are forgotten.
CREATE TABLE blob_releases (
    sha256      TEXT PRIMARY KEY,
    released_ms BIGINT NOT NULL
);
