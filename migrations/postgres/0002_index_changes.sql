-- What changed in a repository since a generation, so that an index build applies the
-- change instead of reading every row: the generation at which each package row was
-- inserted (0 for rows older than this column: every reader that reads changes started
-- from a full read), and one row per removed package.
ALTER TABLE packages ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
CREATE INDEX packages_generation ON packages (repository_id, generation);

CREATE TABLE package_removals (
    repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    generation    BIGINT NOT NULL,
    package_id    BIGINT NOT NULL
);
CREATE INDEX package_removals_generation ON package_removals (repository_id, generation);
