-- Remote repositories (caching proxies of an upstream apk repository). A repository is
-- remote when it has a row here, from the transaction that created it on: its kind never
-- changes (repository ids are never reused). keys: the upstream's public keys, a JSON
-- array of {"name", "pem"}.
CREATE TABLE upstreams (
    repository_id BIGINT PRIMARY KEY REFERENCES repositories(id) ON DELETE CASCADE,
    url           TEXT NOT NULL,
    keys          TEXT NOT NULL,
    refresh_secs  BIGINT NOT NULL
);

-- The upstream's index of one architecture, as last fetched and verified with the
-- upstream's keys (content, unchanged), and as served (signed: the same content signed
-- with the owner's keys, whose names signed_keys lists). verified_ms: when upstream last
-- gave or confirmed it (304); checked_ms: the last attempt; error: why that attempt
-- failed, NULL when it did not (the index is stale while it is set).
CREATE TABLE upstream_indexes (
    repository_id  BIGINT NOT NULL REFERENCES upstreams(repository_id) ON DELETE CASCADE,
    arch           TEXT COLLATE "C" NOT NULL,
    content        BYTEA NOT NULL,
    sha256         TEXT NOT NULL,
    etag           TEXT,
    last_modified  TEXT,
    verified_ms    BIGINT NOT NULL,
    checked_ms     BIGINT NOT NULL,
    error          TEXT,
    signed         BYTEA NOT NULL,
    signed_sha256  TEXT NOT NULL,
    signed_keys    TEXT NOT NULL,
    signed_ms      BIGINT NOT NULL,
    PRIMARY KEY (repository_id, arch)
);

-- Package files fetched from upstream, checked against its index (size and C:), and
-- stored as blobs: served from storage from then on.
CREATE TABLE upstream_files (
    repository_id BIGINT NOT NULL REFERENCES upstreams(repository_id) ON DELETE CASCADE,
    arch          TEXT COLLATE "C" NOT NULL,
    filename      TEXT COLLATE "C" NOT NULL,
    sha256        TEXT NOT NULL,
    size          BIGINT NOT NULL,
    checksum      TEXT NOT NULL,
    stored_ms     BIGINT NOT NULL,
    PRIMARY KEY (repository_id, arch, filename)
);
CREATE INDEX upstream_files_sha256 ON upstream_files (sha256);
