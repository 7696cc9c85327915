-- Repository ids are never reused. SQLite gives a new row the largest id + 1, so removing
-- the newest repository would hand its id to the next one created, and an index build
-- still running for the removed repository could publish into the new one. New
-- repositories take their id from this AUTOINCREMENT sequence, which only grows; the table
-- itself stays empty.
CREATE TABLE repository_ids (id INTEGER PRIMARY KEY AUTOINCREMENT);
INSERT INTO repository_ids (id) SELECT id FROM repositories ORDER BY id DESC LIMIT 1;
DELETE FROM repository_ids;
