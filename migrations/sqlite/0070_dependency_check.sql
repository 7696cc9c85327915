-- The publish-time dependency check: a repository's own setting (NULL: the configured
-- repositories.dependency_check), and the version each provided name is provided at
-- (`1.2` of `so:libfoo.so.1=1.2`; NULL for a name provided without one), so that a
-- versioned dependency is resolved from the catalog without reading index entries.

ALTER TABLE repositories ADD COLUMN dependency_check TEXT
    CHECK (dependency_check IN ('off', 'warn', 'refuse'));

ALTER TABLE catalog_provides ADD COLUMN version TEXT;

DROP TRIGGER packages_catalog;

CREATE TRIGGER packages_catalog AFTER INSERT ON packages
BEGIN
    INSERT INTO catalog_files (package_id, repository_id, arch, name, version, description,
                               maintainer)
    VALUES (NEW.id, NEW.repository_id, NEW.arch, NEW.name, NEW.version,
            COALESCE((SELECT value FROM catalog_stanza_lines
                      WHERE package_id = NEW.id AND key = 'T'), ''),
            (SELECT lower(value) FROM catalog_stanza_lines
             WHERE package_id = NEW.id AND key = 'm'));
    INSERT OR IGNORE INTO catalog_provides (package_id, name, folded, version)
    SELECT package_id, name, lower(name),
           CASE WHEN substr(atom, length(name) + 1, 1) = '=' THEN substr(atom, length(name) + 2)
           END
    FROM catalog_stanza_atoms
    WHERE package_id = NEW.id AND key = 'p' AND name <> '';
    INSERT OR IGNORE INTO catalog_depends (package_id, name)
    SELECT package_id, name FROM catalog_stanza_atoms
    WHERE package_id = NEW.id AND key = 'D' AND substr(atom, 1, 1) <> '!' AND name <> '';
END;

DELETE FROM catalog_provides;
INSERT OR IGNORE INTO catalog_provides (package_id, name, folded, version)
SELECT package_id, name, lower(name),
       CASE WHEN substr(atom, length(name) + 1, 1) = '=' THEN substr(atom, length(name) + 2) END
FROM catalog_stanza_atoms
WHERE key = 'p' AND name <> '';
