-- Retention: rules that delete old versions of packages, and the pin that keeps a file
-- from them.
--
-- A rule applies to an owner (branch and repository ''), a branch of it (repository '') or
-- one repository; the most specific one that exists applies. Empty strings rather than
-- NULL, so that the primary key holds one rule per scope. Globs are kept one per line.
CREATE TABLE retention_rules (
    owner_id      BIGINT NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    branch        TEXT NOT NULL DEFAULT '',
    repository    TEXT NOT NULL DEFAULT '',
    keep_versions BIGINT,
    max_age_secs  BIGINT,
    keep_min      BIGINT NOT NULL DEFAULT 0,
    include_globs TEXT NOT NULL DEFAULT '',
    exclude_globs TEXT NOT NULL DEFAULT '',
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (owner_id, branch, repository)
);

-- A pinned file is never removed by a retention rule.
ALTER TABLE packages ADD COLUMN pinned BOOLEAN NOT NULL DEFAULT FALSE;
