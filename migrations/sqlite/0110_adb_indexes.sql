-- The apk v3 index (`Packages.adb`) of each served architecture, published with its
-- `APKINDEX.tar.gz` in the same row by the same build. Raising every repository's wanted
-- generation has the first start render every index again, so that each gets one.
ALTER TABLE indexes ADD COLUMN adb BLOB;
ALTER TABLE indexes ADD COLUMN adb_sha256 TEXT;
UPDATE repositories SET wanted_gen = wanted_gen + 1;
