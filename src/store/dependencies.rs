//! What the publish-time dependency check asks of the store, and the SQL both backends
//! share for it: who provides a name among an owner's repositories of one branch, and
//! which packages of a repository depend on a name. Both read the catalog tables kept
//! beside every package row (names, provided names with their versions, depended-on
//! names), by their name indexes, never the index entries of other packages.

use super::catalog::{Dialect, Sql};

/// A package answering a name: a package of that name (`version` its own), or one
/// providing it (`version` the version it provides it at, None without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameProvider {
    pub package_id: i64,
    /// The name answered.
    pub name: String,
    pub version: Option<String>,
    pub arch: String,
}

/// A package that depends on a name, with its index stanza (whose `D:` line says how).
#[derive(Debug, Clone)]
pub struct Dependent {
    pub package_id: i64,
    pub arch: String,
    pub filename: String,
    pub stanza: String,
}

/// The repository's own dependency check setting (`off`, `warn`, `refuse`; NULL for the
/// configured one); no row when the repository does not exist. The same SQL on both
/// backends.
pub(super) const DEPENDENCY_CHECK: &str =
    "SELECT dependency_check FROM repositories WHERE owner_id = $1 AND branch = $2 AND name = $3";

/// Sets it; no row changed when the repository does not exist.
pub(super) const SET_DEPENDENCY_CHECK: &str = "UPDATE repositories SET dependency_check = $1 \
     WHERE owner_id = $2 AND branch = $3 AND name = $4";

/// Names bound to one query at most: well under either database's limit of bound
/// values, whatever a package declares.
pub const NAMES_PER_QUERY: usize = 500;

/// `(name, ...)`: the names bound one by one (a package's dependencies are few), which
/// both databases match by the name indexes.
fn names_in(sql: &mut Sql, names: &[String]) {
    sql.push("(");
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.text(name);
    }
    sql.push(")");
}

/// The packages of the owner's repositories of `branch` named one of `names` (not empty)
/// or providing one of them.
pub(super) fn name_providers(
    dialect: Dialect,
    owner_id: i64,
    branch: &str,
    names: &[String],
) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push(
        "SELECT c.package_id, c.name, c.version, c.arch FROM catalog_files c \
         JOIN repositories r ON r.id = c.repository_id WHERE c.name IN ",
    );
    names_in(&mut sql, names);
    sql.push(" AND r.owner_id = ")
        .int(owner_id)
        .push(" AND r.branch = ")
        .text(branch)
        .push(
            " UNION ALL SELECT c.package_id, cp.name, cp.version, c.arch FROM catalog_provides cp \
         JOIN catalog_files c ON c.package_id = cp.package_id \
         JOIN repositories r ON r.id = c.repository_id WHERE cp.name IN ",
        );
    names_in(&mut sql, names);
    sql.push(" AND r.owner_id = ")
        .int(owner_id)
        .push(" AND r.branch = ")
        .text(branch);
    sql
}

/// The packages of the repository that depend on one of `names` (not empty), with their
/// stanzas.
pub(super) fn dependents(dialect: Dialect, repository_id: i64, names: &[String]) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push(
        "SELECT DISTINCT p.id AS package_id, p.arch, p.filename, p.stanza \
         FROM catalog_depends d JOIN packages p ON p.id = d.package_id WHERE d.name IN ",
    );
    names_in(&mut sql, names);
    sql.push(" AND p.repository_id = ")
        .int(repository_id)
        .push(" ORDER BY p.id");
    sql
}
