-- What package search and the package pages read of every package row, kept beside it so
-- that they never parse index entries: the description, the maintainer (lowercased for
-- case-insensitive search), the names it provides and the names it depends on (the name
-- an atom is about: `so:libfoo.so.1` of `so:libfoo.so.1=1.2`, `bar` of `bar>=2`; conflicts,
-- `!baz`, are not dependencies and are left out).
--
-- The database derives these rows from the stanza itself, by a trigger, in the transaction
-- that inserts the package row; they go with it (ON DELETE CASCADE). So every writer,
-- this version or an older one still running beside it, `migrate-storage` included,
-- keeps them, and the rows that exist now are filled below by the same views. Letters are
-- lowercased as ASCII (SQLite's lower()), as PostgreSQL's catalog does.

CREATE TABLE catalog_files (
    package_id    INTEGER PRIMARY KEY REFERENCES packages(id) ON DELETE CASCADE,
    repository_id INTEGER NOT NULL,
    arch          TEXT NOT NULL,
    name          TEXT NOT NULL,
    version       TEXT NOT NULL,
    description   TEXT NOT NULL,
    -- The `m:` line lowercased; NULL when the package names no maintainer.
    maintainer    TEXT
);
CREATE INDEX catalog_files_name ON catalog_files (name, repository_id);
CREATE INDEX catalog_files_repository ON catalog_files (repository_id, arch);

CREATE TABLE catalog_provides (
    package_id INTEGER NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    folded     TEXT NOT NULL,
    PRIMARY KEY (package_id, name)
) WITHOUT ROWID;
CREATE INDEX catalog_provides_name ON catalog_provides (name);

CREATE TABLE catalog_depends (
    package_id INTEGER NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    PRIMARY KEY (package_id, name)
) WITHOUT ROWID;
CREATE INDEX catalog_depends_name ON catalog_depends (name);

-- A stanza's lines are `X:value\n`; `s` is the stanza between newlines, so that every line,
-- the first and the last too, reads `\nX:value\n`.
CREATE VIEW catalog_stanzas AS
SELECT id AS package_id, repository_id, arch, name, version,
       char(10) || stanza || char(10) AS s
FROM packages;

-- The value of the first `X:` line of each stanza, for the fields the catalog reads.
CREATE VIEW catalog_stanza_lines AS
SELECT package_id, repository_id, arch, name, version, key,
       substr(s, at + 3, instr(substr(s, at + 3), char(10)) - 1) AS value
FROM (SELECT package_stanza.*, keys.key,
             instr(package_stanza.s, char(10) || keys.key || ':') AS at
      FROM catalog_stanzas AS package_stanza,
           (SELECT 'T' AS key UNION ALL SELECT 'm' UNION ALL SELECT 'p' UNION ALL SELECT 'D')
           AS keys)
WHERE at > 0;

-- One row per atom of the `p:` and `D:` lines (space-separated; an atom holds neither
-- white space nor control characters, so the line is a JSON array once quoted), with the
-- name it is about: one leading `!` dropped, cut at the first of `=<>~`.
CREATE VIEW catalog_stanza_atoms AS
SELECT package_id, key, atom,
       substr(bare, 1, min(instr(bare || '=', '='), instr(bare || '<', '<'),
                           instr(bare || '>', '>'), instr(bare || '~', '~')) - 1) AS name
FROM (SELECT line.package_id, line.key, item.value AS atom,
             CASE WHEN substr(item.value, 1, 1) = '!' THEN substr(item.value, 2)
                  ELSE item.value END AS bare
      FROM catalog_stanza_lines AS line,
           json_each('["' || replace(replace(replace(line.value, '\', '\\'), '"', '\"'),
                                     ' ', '","') || '"]') AS item
      WHERE line.key IN ('p', 'D') AND item.value <> '');

CREATE TRIGGER packages_catalog AFTER INSERT ON packages
BEGIN
    INSERT INTO catalog_files (package_id, repository_id, arch, name, version, description,
                               maintainer)
    VALUES (NEW.id, NEW.repository_id, NEW.arch, NEW.name, NEW.version,
            COALESCE((SELECT value FROM catalog_stanza_lines
                      WHERE package_id = NEW.id AND key = 'T'), ''),
            (SELECT lower(value) FROM catalog_stanza_lines
             WHERE package_id = NEW.id AND key = 'm'));
    INSERT OR IGNORE INTO catalog_provides (package_id, name, folded)
    SELECT package_id, name, lower(name) FROM catalog_stanza_atoms
    WHERE package_id = NEW.id AND key = 'p' AND name <> '';
    INSERT OR IGNORE INTO catalog_depends (package_id, name)
    SELECT package_id, name FROM catalog_stanza_atoms
    WHERE package_id = NEW.id AND key = 'D' AND substr(atom, 1, 1) <> '!' AND name <> '';
END;

INSERT INTO catalog_files (package_id, repository_id, arch, name, version, description,
                           maintainer)
SELECT p.id, p.repository_id, p.arch, p.name, p.version,
       COALESCE((SELECT value FROM catalog_stanza_lines
                 WHERE package_id = p.id AND key = 'T'), ''),
       (SELECT lower(value) FROM catalog_stanza_lines WHERE package_id = p.id AND key = 'm')
FROM packages p;
INSERT OR IGNORE INTO catalog_provides (package_id, name, folded)
SELECT package_id, name, lower(name) FROM catalog_stanza_atoms
WHERE key = 'p' AND name <> '';
INSERT OR IGNORE INTO catalog_depends (package_id, name)
SELECT package_id, name FROM catalog_stanza_atoms
WHERE key = 'D' AND substr(atom, 1, 1) <> '!' AND name <> '';
