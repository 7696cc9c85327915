-- The publish-time dependency check: a repository's own setting (NULL: the configured
-- repositories.dependency_check), and the version each provided name is provided at
-- (`1.2` of `so:libfoo.so.1=1.2`; NULL for a name provided without one), so that a
-- versioned dependency is resolved from the catalog without reading index entries.

ALTER TABLE repositories ADD COLUMN dependency_check TEXT
    CHECK (dependency_check IN ('off', 'warn', 'refuse'));

ALTER TABLE catalog_provides ADD COLUMN version TEXT COLLATE "C";

-- The version an atom names after `=`, or NULL.
CREATE FUNCTION catalog_atom_version(atom TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT substring(atom FROM '^[^=<>~]*=(.*)$')
$$;

CREATE OR REPLACE FUNCTION catalog_add(p packages) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO catalog_files (package_id, repository_id, arch, name, version, description,
                               maintainer)
    VALUES (p.id, p.repository_id, p.arch, p.name, p.version,
            COALESCE(catalog_stanza_line(p.stanza, 'T'), ''),
            lower(catalog_stanza_line(p.stanza, 'm') COLLATE "C"));
    INSERT INTO catalog_provides (package_id, name, folded, version)
    SELECT DISTINCT ON (n) p.id, n, lower(n COLLATE "C"), catalog_atom_version(atom)
    FROM regexp_split_to_table(catalog_stanza_line(p.stanza, 'p'), ' ') AS atom,
         catalog_atom_name(atom) AS n
    WHERE atom <> '' AND n <> '';
    INSERT INTO catalog_depends (package_id, name)
    SELECT DISTINCT p.id, n
    FROM regexp_split_to_table(catalog_stanza_line(p.stanza, 'D'), ' ') AS atom,
         catalog_atom_name(atom) AS n
    WHERE atom <> '' AND left(atom, 1) <> '!' AND n <> '';
END
$$;

UPDATE catalog_provides cp SET version = v.version
FROM (SELECT DISTINCT ON (p.id, n) p.id, n, catalog_atom_version(atom) AS version
      FROM packages p,
           regexp_split_to_table(catalog_stanza_line(p.stanza, 'p'), ' ') AS atom,
           catalog_atom_name(atom) AS n
      WHERE atom <> '' AND n <> '') AS v
WHERE cp.package_id = v.id AND cp.name = v.n;
