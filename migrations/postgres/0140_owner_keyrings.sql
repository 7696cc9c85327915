-- Whether an owner's repositories list its keyring package (<owner>-keys). An owner
-- without a row follows signing.keyring.
CREATE TABLE owner_keyrings (
    owner_id BIGINT PRIMARY KEY REFERENCES owners(id) ON DELETE CASCADE,
    enabled  BOOLEAN NOT NULL
);
