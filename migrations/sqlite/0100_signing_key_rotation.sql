-- An owner holds several signing keys over its lifetime. The active ones sign every index
-- (newest first); a retired one signs nothing but is kept, so that its public key is still
-- served. Ids are never reused (AUTOINCREMENT): an instance holding parsed keys compares
-- the ids of the active ones with the database's before each index build.
CREATE TABLE signing_keys_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id    INTEGER NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    key_name    TEXT NOT NULL UNIQUE,
    private_pem TEXT NOT NULL,
    public_pem  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
);
INSERT INTO signing_keys_new (owner_id, key_name, private_pem, public_pem, created_at)
    SELECT owner_id, key_name, private_pem, public_pem, created_at FROM signing_keys
    ORDER BY owner_id;
DROP TABLE signing_keys;
ALTER TABLE signing_keys_new RENAME TO signing_keys;
CREATE INDEX signing_keys_by_owner ON signing_keys (owner_id, id);
