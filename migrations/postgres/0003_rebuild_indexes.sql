-- Index builds of earlier versions could leave a package in the served indexes after its
-- delete was acknowledged, when several instances shared this database: an instance
-- applied a change to indexes it had kept while another instance had published newer
-- ones. Raising every repository's wanted generation has the first instance to start
-- render every index again from the rows, which repairs any such index.
UPDATE repositories SET wanted_gen = wanted_gen + 1;
