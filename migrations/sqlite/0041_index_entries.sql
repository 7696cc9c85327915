-- What the pages say of a served index without reading it: how many packages it lists and
-- its signature entries (`.SIGN.RSA256.<key name>`, one per line), written with the index
-- by its build. Raising every repository's wanted generation has the first start render
-- every index again, so that no row is left without them (one written by an older
-- version still running beside this one is described from its bytes until rebuilt).
ALTER TABLE indexes ADD COLUMN entries INTEGER;
ALTER TABLE indexes ADD COLUMN signatures TEXT;
UPDATE repositories SET wanted_gen = wanted_gen + 1;
