-- When each package file and index became current, in milliseconds. HTTP dates have whole
-- seconds; knowing whether a change came after the start of the second a client's date
-- names is what makes If-Modified-Since exact. Rows from before this migration fall back
-- to the end of their second.
ALTER TABLE packages ADD COLUMN modified_ms INTEGER;
ALTER TABLE indexes ADD COLUMN modified_ms INTEGER;
