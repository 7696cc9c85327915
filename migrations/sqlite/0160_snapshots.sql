-- Everything a remote or virtual repository ever served: one row per file of an
-- architecture's index and period it was listed, first_ms (inclusive) to last_ms
-- (exclusive; NULL while it is listed). stanza: its index entry as served; member_id: the
-- repository its file comes from (a remote repository's own id; a virtual repository's
-- member; not a foreign key, so that the rows outlive a member); sha256: the blob of a
-- hosted member's file (kept from orphan collection while the row exists), NULL for a
-- file of a remote repository (found by its checksum among the files cached). Each change
-- of the listing closes the rows of the files gone or changed and opens rows for the new
-- ones, in one transaction; at most one open row per file.
CREATE TABLE served_history (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    arch          TEXT NOT NULL,
    filename      TEXT NOT NULL,
    stanza        TEXT NOT NULL,
    member_id     INTEGER NOT NULL,
    sha256        TEXT,
    first_ms      INTEGER NOT NULL,
    last_ms       INTEGER
);
CREATE UNIQUE INDEX served_history_open ON served_history (repository_id, arch, filename)
    WHERE last_ms IS NULL;
CREATE INDEX served_history_file ON served_history (repository_id, arch, filename, first_ms);
CREATE INDEX served_history_first ON served_history (repository_id, arch, first_ms);
CREATE INDEX served_history_sha256 ON served_history (sha256) WHERE sha256 IS NOT NULL;

-- Named moments of a remote or virtual repository's history: REPOSITORY@name serves what
-- it served at at_ms.
CREATE TABLE snapshots (
    repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    at_ms         INTEGER NOT NULL,
    PRIMARY KEY (repository_id, name)
);
