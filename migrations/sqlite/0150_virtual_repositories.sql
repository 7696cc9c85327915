-- Virtual repositories: one index per architecture merging the indexes of other
-- repositories of the same owner (hosted or remote), in order, the first member listing a
-- file name winning. A repository is virtual when it has a row here, from the transaction
-- that created it on: its kind and its members never change (repository ids are never
-- reused), and a member cannot be removed while a virtual repository lists it.
CREATE TABLE virtuals (
    repository_id INTEGER PRIMARY KEY REFERENCES repositories(id) ON DELETE CASCADE
);

-- The members of each virtual repository, by position (0 first).
CREATE TABLE virtual_members (
    repository_id INTEGER NOT NULL REFERENCES virtuals(repository_id) ON DELETE CASCADE,
    position      INTEGER NOT NULL,
    member_id     INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    PRIMARY KEY (repository_id, position),
    UNIQUE (repository_id, member_id)
);
CREATE INDEX virtual_members_member ON virtual_members (member_id);

-- The merged index of one architecture as last built, what every instance serves:
-- fingerprint names what it was built from (the members' served indexes and the owner's
-- signing keys), so a request that finds the members changed builds it again. adb is the
-- Packages.adb of the same packages, NULL (with adb_error saying why) when a listed
-- package cannot be written in that format. modified_ms: when content became what it is
-- (a build to the same bytes keeps it); built_ms: the last build.
CREATE TABLE virtual_indexes (
    repository_id INTEGER NOT NULL REFERENCES virtuals(repository_id) ON DELETE CASCADE,
    arch          TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    content       BLOB NOT NULL,
    sha256        TEXT NOT NULL,
    adb           BLOB,
    adb_sha256    TEXT,
    adb_error     TEXT,
    entries       INTEGER NOT NULL,
    modified_ms   INTEGER NOT NULL,
    built_ms      INTEGER NOT NULL,
    PRIMARY KEY (repository_id, arch)
);
