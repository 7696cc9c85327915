-- Owner and user names are unique regardless of case, so that nobody can register `Acme`
-- beside `acme`. Pairs created before this migration stay as they are (a unique index
-- would refuse to build over them); every new or renamed row is checked.
CREATE INDEX owners_name_nocase ON owners (name COLLATE NOCASE);
CREATE INDEX users_name_nocase ON users (name COLLATE NOCASE);

CREATE TRIGGER owners_name_nocase_insert BEFORE INSERT ON owners
WHEN EXISTS (SELECT 1 FROM owners WHERE name = NEW.name COLLATE NOCASE)
BEGIN
    SELECT RAISE(ABORT, 'owner name taken regardless of case');
END;

CREATE TRIGGER owners_name_nocase_update BEFORE UPDATE OF name ON owners
WHEN EXISTS (SELECT 1 FROM owners WHERE name = NEW.name COLLATE NOCASE AND id <> NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'owner name taken regardless of case');
END;

CREATE TRIGGER users_name_nocase_insert BEFORE INSERT ON users
WHEN EXISTS (SELECT 1 FROM users WHERE name = NEW.name COLLATE NOCASE)
BEGIN
    SELECT RAISE(ABORT, 'user name taken regardless of case');
END;

CREATE TRIGGER users_name_nocase_update BEFORE UPDATE OF name ON users
WHEN EXISTS (SELECT 1 FROM users WHERE name = NEW.name COLLATE NOCASE AND id <> NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'user name taken regardless of case');
END;

-- Tokens carry a label chosen at creation and the time of their last use (kept to the
-- minute, so that authentication does not write on every request).
ALTER TABLE tokens ADD COLUMN label TEXT;
ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;
