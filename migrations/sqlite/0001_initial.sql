-- Users, owners (namespaces), memberships, tokens, signing keys, packages and indexes.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    is_admin      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

CREATE TABLE owners (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    is_private INTEGER NOT NULL DEFAULT 0,
    is_org     INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

CREATE TABLE owner_members (
    owner_id INTEGER NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    user_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role     TEXT NOT NULL CHECK (role IN ('read', 'write', 'admin')),
    PRIMARY KEY (owner_id, user_id)
);

CREATE TABLE tokens (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    prefix     TEXT NOT NULL,
    scope      TEXT NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    owner_id   INTEGER REFERENCES owners(id) ON DELETE CASCADE,
    expires_at INTEGER,
    revoked_at INTEGER,
    created_at INTEGER NOT NULL
);

CREATE TABLE signing_keys (
    owner_id    INTEGER PRIMARY KEY REFERENCES owners(id) ON DELETE CASCADE,
    key_name    TEXT NOT NULL UNIQUE,
    private_pem TEXT NOT NULL,
    public_pem  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- One row per (owner, branch, repository): the index generation counters.
-- A mutation bumps wanted_gen in the same transaction as its package row; the builder
-- renders from a snapshot and records the generation it rendered in built_gen.
CREATE TABLE repositories (
    id         INTEGER PRIMARY KEY,
    owner_id   INTEGER NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    branch     TEXT NOT NULL,
    name       TEXT NOT NULL,
    wanted_gen INTEGER NOT NULL DEFAULT 0,
    built_gen  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (owner_id, branch, name)
);

CREATE TABLE packages (
    id            INTEGER PRIMARY KEY,
    repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    arch          TEXT NOT NULL,
    name          TEXT NOT NULL,
    version       TEXT NOT NULL,
    filename      TEXT NOT NULL,
    checksum      TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    size          INTEGER NOT NULL,
    stanza        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    UNIQUE (repository_id, arch, filename),
    UNIQUE (repository_id, arch, name, version)
);
CREATE INDEX packages_name_version ON packages (repository_id, name, version);
CREATE INDEX packages_sha256 ON packages (sha256);

-- The served indexes, swapped atomically by replacing the row.
CREATE TABLE indexes (
    repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    arch          TEXT NOT NULL,
    generation    INTEGER NOT NULL,
    content       BLOB NOT NULL,
    sha256        TEXT NOT NULL,
    built_at      INTEGER NOT NULL,
    PRIMARY KEY (repository_id, arch)
);
