-- What package search and the package pages read of every package row, kept beside it so
-- that they never parse index entries: the description, the maintainer (lowercased for
-- case-insensitive search), the names it provides and the names it depends on (the name
-- an atom is about: `so:libfoo.so.1` of `so:libfoo.so.1=1.2`, `bar` of `bar>=2`; conflicts,
-- `!baz`, are not dependencies and are left out).
--
-- The database derives these rows from the stanza itself, by a trigger, in the transaction
-- that inserts the package row; they go with it (ON DELETE CASCADE). So every writer,
-- every instance whatever its version and `migrate-storage` included, keeps them, and the
-- rows that exist now are filled below by the same function. Letters are lowercased as
-- ASCII (lower() under the "C" collation), as SQLite's catalog does.

CREATE TABLE catalog_files (
    package_id    BIGINT PRIMARY KEY REFERENCES packages(id) ON DELETE CASCADE,
    repository_id BIGINT NOT NULL,
    arch          TEXT COLLATE "C" NOT NULL,
    name          TEXT COLLATE "C" NOT NULL,
    version       TEXT COLLATE "C" NOT NULL,
    description   TEXT NOT NULL,
    -- The `m:` line lowercased; NULL when the package names no maintainer.
    maintainer    TEXT COLLATE "C"
);
CREATE INDEX catalog_files_name ON catalog_files (name, repository_id);
CREATE INDEX catalog_files_repository ON catalog_files (repository_id, arch);

CREATE TABLE catalog_provides (
    package_id BIGINT NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
    name       TEXT COLLATE "C" NOT NULL,
    folded     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (package_id, name)
);
CREATE INDEX catalog_provides_name ON catalog_provides (name);

CREATE TABLE catalog_depends (
    package_id BIGINT NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
    name       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (package_id, name)
);
CREATE INDEX catalog_depends_name ON catalog_depends (name);

-- The value of the first `X:` line of a stanza (lines are `X:value\n`), or NULL.
CREATE FUNCTION catalog_stanza_line(stanza TEXT, key TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT substring(E'\n' || stanza || E'\n' FROM E'\n' || key || E':([^\n]*)\n')
$$;

-- The name an atom is about: one leading `!` dropped, cut at the first of `=<>~`.
CREATE FUNCTION catalog_atom_name(atom TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT substring(CASE WHEN left(atom, 1) = '!' THEN substr(atom, 2) ELSE atom END
                     FROM '^[^=<>~]*')
$$;

-- The catalog rows of one package row.
CREATE FUNCTION catalog_add(p packages) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO catalog_files (package_id, repository_id, arch, name, version, description,
                               maintainer)
    VALUES (p.id, p.repository_id, p.arch, p.name, p.version,
            COALESCE(catalog_stanza_line(p.stanza, 'T'), ''),
            lower(catalog_stanza_line(p.stanza, 'm') COLLATE "C"));
    INSERT INTO catalog_provides (package_id, name, folded)
    SELECT DISTINCT p.id, n, lower(n COLLATE "C")
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

CREATE FUNCTION packages_catalog() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM catalog_add(NEW);
    RETURN NULL;
END
$$;

CREATE TRIGGER packages_catalog AFTER INSERT ON packages
FOR EACH ROW EXECUTE FUNCTION packages_catalog();

SELECT catalog_add(p) FROM packages p;
