//! What the catalog (package search, package and index pages) asks of the store, and the
//! SQL both backends share for it. Searches read the catalog tables the database keeps
//! beside every package row (migration 0040: descriptions, maintainers, provided and
//! depended-on names), never the index entries themselves; a query that could read
//! without bound is paged or counted in SQL.

use super::Owner;

/// The owners a caller may read, as a predicate the store applies in SQL (built from the
/// identity by `access::read_scope`). An owner is in scope when any clause admits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OwnerScope {
    /// Every owner (a site administrator); only `only` when that is set.
    pub every: bool,
    /// Every public owner.
    pub public: bool,
    /// This user's: every public owner and the private ones the user has a role on; only
    /// `only` when that is set.
    pub member: Option<i64>,
    /// Narrows `every` and `member` to this owner (a token limited to it).
    pub only: Option<i64>,
}

impl OwnerScope {
    /// Whether the scope admits `owner`, on which the `member` user has a role or not:
    /// what the SQL predicate computes.
    pub fn admits(&self, owner: &Owner, is_member: bool) -> bool {
        let fits = self.only.is_none_or(|id| id == owner.id);
        (self.every && fits)
            || (self.public && !owner.is_private)
            || (self.member.is_some() && fits && (!owner.is_private || is_member))
    }
}

/// A package search, validated by the catalog.
#[derive(Debug, Clone)]
pub struct PackageSearch {
    pub scope: OwnerScope,
    pub term: Option<SearchTerm>,
    pub owner: Option<String>,
    pub branch: Option<String>,
    pub repository: Option<String>,
    /// Files of this architecture and noarch files.
    pub arch: Option<String>,
    /// A substring of the maintainer, its letters lowercased as ASCII.
    pub maintainer: Option<String>,
    /// The (name, owner) the page continues after.
    pub after: Option<(String, String)>,
    /// Keys per page.
    pub limit: usize,
}

/// What the name of a package, or a name it provides, must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchTerm {
    /// Contains this text once letters are lowercased (ASCII).
    Substring(String),
    /// Is matched, as written, by this pattern.
    Pattern(Vec<PatternItem>),
}

/// One item of a name pattern: a glob whose letters already stand for both cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternItem {
    Char(char),
    /// Any one character.
    AnyChar,
    /// Any run of characters, the empty one included.
    AnySequence,
    /// One character within (or, negated, outside) these inclusive ranges; never empty,
    /// never NUL.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// The keys of one page of a search.
#[derive(Debug, Clone, Default)]
pub struct SearchPage {
    /// (name, owner) pairs that match, over all pages.
    pub total: u64,
    /// Up to `limit` (name, owner) pairs after `after`, in byte order.
    pub keys: Vec<(String, String)>,
    /// Whether more pairs follow the last of `keys`.
    pub more: bool,
}

/// One matching file of a search page, as the search reads it (no index entry).
#[derive(Debug, Clone)]
pub struct SearchFile {
    pub package_id: i64,
    pub name: String,
    pub owner: String,
    pub version: String,
    pub branch: String,
    pub repository: String,
    pub arch: String,
    /// When the file became current, Unix milliseconds.
    pub modified_ms: i64,
}

/// Takes the files of a search page as the store reads them, in package id order, then
/// names the files whose descriptions it needs, all within the search's one read.
pub trait SearchCollector: Send {
    fn file(&mut self, file: SearchFile);
    fn wanted_descriptions(&self) -> Vec<i64>;
    fn description(&mut self, package_id: i64, description: String);
}

/// A served index as the pages describe it, without its bytes.
#[derive(Debug, Clone)]
pub struct IndexSummary {
    pub arch: String,
    pub generation: i64,
    pub sha256: String,
    /// Unix seconds.
    pub built_at: i64,
    /// Bytes.
    pub size: i64,
    /// Packages listed; None for an index written before this was kept.
    pub entries: Option<i64>,
    /// Signature entry names, in order; None like `entries`.
    pub signatures: Option<Vec<String>>,
}

/// How signature names are kept in one column.
pub(super) fn join_signatures(names: &[String]) -> String {
    names.join("\n")
}

pub(super) fn split_signatures(column: Option<String>) -> Option<Vec<String>> {
    column.map(|text| text.lines().map(str::to_string).collect())
}

/// The SQL dialect a statement is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

/// A value bound to a statement built by `Sql`.
#[derive(Debug, Clone)]
pub(super) enum Arg {
    Int(i64),
    Text(String),
}

/// A statement under construction: its text with the dialect's placeholders, and the
/// values bound to them in order.
pub(super) struct Sql {
    pub text: String,
    pub args: Vec<Arg>,
    dialect: Dialect,
}

impl Sql {
    pub fn new(dialect: Dialect) -> Sql {
        Sql {
            text: String::new(),
            args: Vec::new(),
            dialect,
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder bound to `arg`.
    pub fn arg(&mut self, arg: Arg) -> &mut Sql {
        self.args.push(arg);
        match self.dialect {
            Dialect::Sqlite => self.text.push('?'),
            Dialect::Postgres => {
                let n = self.args.len();
                self.text.push_str(&format!("${n}"));
            }
        }
        self
    }

    pub fn text(&mut self, value: &str) -> &mut Sql {
        self.arg(Arg::Text(value.to_string()))
    }

    pub fn int(&mut self, value: i64) -> &mut Sql {
        self.arg(Arg::Int(value))
    }

    /// `haystack` contains the bound `needle`.
    fn contains(&mut self, haystack: &str, needle: &str) -> &mut Sql {
        match self.dialect {
            Dialect::Sqlite => self.push("instr(").push(haystack).push(", "),
            Dialect::Postgres => self.push("strpos(").push(haystack).push(", "),
        };
        self.text(needle).push(") > 0")
    }

    /// `column` is matched, whole, by the bound pattern.
    fn matches(&mut self, column: &str, pattern: &[PatternItem]) -> &mut Sql {
        match self.dialect {
            Dialect::Sqlite => {
                let glob = glob_pattern(pattern);
                self.push(column).push(" GLOB ").text(&glob)
            }
            Dialect::Postgres => {
                let regex = regex_pattern(pattern);
                self.push(column).push(" ~ ").text(&regex)
            }
        }
    }

    /// The rows of owners `o` in `scope`.
    pub fn scope(&mut self, scope: &OwnerScope) -> &mut Sql {
        let mut clauses = 0;
        let mut clause = |sql: &mut Sql| {
            sql.push(if clauses == 0 { "(" } else { " OR " });
            clauses += 1;
        };
        let only = |sql: &mut Sql| {
            match scope.only {
                Some(id) => sql.push("o.id = ").int(id),
                None => sql.push("TRUE"),
            };
        };
        if scope.every {
            clause(self);
            only(self);
        }
        if scope.public {
            clause(self);
            self.push("NOT o.is_private");
        }
        if let Some(user) = scope.member {
            clause(self);
            self.push("(");
            only(self);
            self.push(
                " AND (NOT o.is_private OR EXISTS (SELECT 1 FROM owner_members m \
                 WHERE m.owner_id = o.id AND m.user_id = ",
            )
            .int(user)
            .push(")))");
        }
        if clauses == 0 {
            self.push("FALSE")
        } else {
            self.push(")")
        }
    }

    /// The conditions of a search on catalog files `c` of repositories `r` of owners `o`.
    fn search_conditions(&mut self, search: &PackageSearch) -> &mut Sql {
        self.scope(&search.scope);
        if let Some(owner) = &search.owner {
            self.push(" AND o.name = ").text(owner);
        }
        if let Some(branch) = &search.branch {
            self.push(" AND r.branch = ").text(branch);
        }
        if let Some(repository) = &search.repository {
            self.push(" AND r.name = ").text(repository);
        }
        if let Some(arch) = &search.arch {
            self.push(" AND c.arch IN (").text(arch).push(", 'noarch')");
        }
        if let Some(maintainer) = &search.maintainer {
            self.push(" AND ").contains("c.maintainer", maintainer);
        }
        match &search.term {
            None => {}
            Some(SearchTerm::Substring(needle)) => {
                self.push(" AND (")
                    .contains("lower(c.name)", needle)
                    .push(
                        " OR EXISTS (SELECT 1 FROM catalog_provides cp \
                         WHERE cp.package_id = c.package_id AND ",
                    )
                    .contains("cp.folded", needle)
                    .push("))");
            }
            Some(SearchTerm::Pattern(pattern)) => {
                self.push(" AND (")
                    .matches("c.name", pattern)
                    .push(
                        " OR EXISTS (SELECT 1 FROM catalog_provides cp \
                         WHERE cp.package_id = c.package_id AND ",
                    )
                    .matches("cp.name", pattern)
                    .push("))");
            }
        }
        self
    }
}

const SEARCH_FROM: &str = " FROM catalog_files c JOIN repositories r ON r.id = c.repository_id \
     JOIN owners o ON o.id = r.owner_id";

/// The statement giving, in one read, the number of matching (name, owner) pairs (the row
/// whose name is NULL) and up to `limit + 1` of them after `after`, in byte order.
pub(super) fn search_keys(dialect: Dialect, search: &PackageSearch) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("WITH hits AS (SELECT DISTINCT c.name AS name, o.name AS owner")
        .push(SEARCH_FROM)
        .push(" WHERE ")
        .search_conditions(search)
        .push(
            ") SELECT NULL AS name, NULL AS owner, COUNT(*) AS total FROM hits \
             UNION ALL SELECT name, owner, NULL FROM (SELECT name, owner FROM hits",
        );
    if let Some((name, owner)) = &search.after {
        sql.push(" WHERE (name, owner) > (")
            .text(name)
            .push(", ")
            .text(owner)
            .push(")");
    }
    sql.push(" ORDER BY name, owner LIMIT ")
        .int(search.limit as i64 + 1)
        .push(") AS page");
    sql
}

/// When a package row `p` became current; rows from before milliseconds were kept fall
/// back to the end of their second.
const PACKAGE_MODIFIED_MS: &str = "COALESCE(p.modified_ms, p.created_at * 1000 + 999)";

/// The statement giving the matching files of the keys from `first` to `last` (the keys
/// of a page), by package id.
pub(super) fn search_files(
    dialect: Dialect,
    search: &PackageSearch,
    first: &(String, String),
    last: &(String, String),
) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push(
        "SELECT c.package_id, c.name, o.name AS owner, c.version, r.branch, \
         r.name AS repository, c.arch, ",
    )
    .push(PACKAGE_MODIFIED_MS)
    .push(" AS modified_ms")
    .push(SEARCH_FROM)
    .push(" JOIN packages p ON p.id = c.package_id WHERE ")
    .search_conditions(search)
    .push(" AND (c.name, o.name) >= (")
    .text(&first.0)
    .push(", ")
    .text(&first.1)
    .push(") AND (c.name, o.name) <= (")
    .text(&last.0)
    .push(", ")
    .text(&last.1)
    .push(") ORDER BY c.package_id");
    sql
}

/// The descriptions of these catalog files.
pub(super) fn descriptions(dialect: Dialect, ids: &[i64]) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("SELECT package_id, description FROM catalog_files WHERE package_id IN (");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.int(*id);
    }
    sql.push(")");
    sql
}

/// The owners in `scope`, by name.
pub(super) fn owners_in(dialect: Dialect, scope: &OwnerScope) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("SELECT o.id, o.name, o.is_private, o.is_org FROM owners o WHERE ")
        .scope(scope)
        .push(" ORDER BY o.name");
    sql
}

/// The owner's packages that depend on `name` or on a name it provides (`name` aside),
/// counted (the row whose name is NULL) and the first `limit` by name.
pub(super) fn required_by(dialect: Dialect, owner_id: i64, name: &str, limit: usize) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("WITH answers(n) AS (SELECT CAST(")
        .text(name)
        .push(
            " AS TEXT) UNION SELECT cp.name FROM catalog_provides cp \
             JOIN catalog_files c ON c.package_id = cp.package_id \
             JOIN repositories r ON r.id = c.repository_id WHERE r.owner_id = ",
        )
        .int(owner_id)
        .push(" AND c.name = ")
        .text(name)
        .push(
            "), users AS (SELECT DISTINCT c.name AS name FROM catalog_depends d \
             JOIN catalog_files c ON c.package_id = d.package_id \
             JOIN repositories r ON r.id = c.repository_id WHERE r.owner_id = ",
        )
        .int(owner_id)
        .push(" AND c.name <> ")
        .text(name)
        .push(
            " AND d.name IN (SELECT n FROM answers)) \
             SELECT NULL AS name, COUNT(*) AS total FROM users \
             UNION ALL SELECT name, NULL FROM (SELECT name FROM users ORDER BY name LIMIT ",
        )
        .int(limit as i64)
        .push(") AS page");
    sql
}

/// For each of `names` (a JSON array of strings): the owner's package of that name, else
/// the first (by name) of its packages providing it, else NULL.
pub(super) fn providers(dialect: Dialect, owner_id: i64, names: &str) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("WITH wanted(n) AS (SELECT DISTINCT ");
    match dialect {
        Dialect::Sqlite => sql.push("value FROM json_each(").text(names).push(")"),
        Dialect::Postgres => sql
            .push("jsonb_array_elements_text(CAST(")
            .text(names)
            .push(" AS JSONB))"),
    };
    sql.push(
        ") SELECT w.n AS name, COALESCE((SELECT c.name FROM catalog_files c \
         JOIN repositories r ON r.id = c.repository_id WHERE r.owner_id = ",
    )
    .int(owner_id)
    .push(
        " AND c.name = w.n LIMIT 1), (SELECT MIN(c.name) FROM catalog_provides cp \
         JOIN catalog_files c ON c.package_id = cp.package_id \
         JOIN repositories r ON r.id = c.repository_id WHERE r.owner_id = ",
    )
    .int(owner_id)
    .push(" AND cp.name = w.n)) AS provider FROM wanted w");
    sql
}

/// A pattern as SQLite's GLOB reads it: `*`, `?` and `[...]` (`[^...]` negated), special
/// characters written as one-character classes.
pub(super) fn glob_pattern(pattern: &[PatternItem]) -> String {
    let mut out = String::new();
    for item in pattern {
        match item {
            PatternItem::Char(c @ ('*' | '?' | '[')) => {
                out.push('[');
                out.push(*c);
                out.push(']');
            }
            PatternItem::Char(c) => out.push(*c),
            PatternItem::AnyChar => out.push('?'),
            PatternItem::AnySequence => out.push('*'),
            PatternItem::Class { negated, ranges } => glob_class(&mut out, *negated, ranges),
        }
    }
    out
}

/// A class in GLOB's syntax, where `]` is literal only first, `-` only first or last, and
/// `^` anywhere but first: those three are taken out of the ranges and placed so.
fn glob_class(out: &mut String, negated: bool, ranges: &[(char, char)]) {
    const SPECIAL: [char; 3] = ['-', ']', '^'];
    let mut special = [false; 3];
    let mut plain: Vec<(char, char)> = Vec::new();
    for &(start, end) in ranges {
        let mut from = start;
        for (i, s) in SPECIAL.iter().enumerate() {
            if (from..=end).contains(s) {
                special[i] = true;
                if from < *s {
                    plain.push((from, prev_char(*s)));
                }
                from = next_char(*s);
            }
        }
        if from <= end {
            plain.push((from, end));
        }
    }
    let [dash, bracket, caret] = special;
    if !negated && plain.is_empty() && !dash && !bracket && caret {
        // "[^]" would read as a negation: a lone `^` is written as itself.
        out.push('^');
        return;
    }
    out.push('[');
    if negated {
        out.push('^');
    }
    if bracket {
        out.push(']');
    }
    if dash {
        out.push('-');
    }
    for (start, end) in plain {
        out.push(start);
        if end != start {
            out.push('-');
            out.push(end);
        }
    }
    if caret {
        out.push('^');
    }
    out.push(']');
}

/// The special characters of a class are ASCII punctuation with ordinary neighbours.
fn prev_char(c: char) -> char {
    char::from_u32(c as u32 - 1).unwrap_or(c)
}

fn next_char(c: char) -> char {
    char::from_u32(c as u32 + 1).unwrap_or(c)
}

/// A pattern as a PostgreSQL regular expression matching whole text, every character
/// other than an ASCII letter or digit written as an escape (`\U` and eight hex digits).
pub(super) fn regex_pattern(pattern: &[PatternItem]) -> String {
    fn literal(out: &mut String, c: char) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else {
            out.push_str(&format!("\\U{:08x}", c as u32));
        }
    }
    let mut out = String::from("^");
    for item in pattern {
        match item {
            PatternItem::Char(c) => literal(&mut out, *c),
            PatternItem::AnyChar => out.push('.'),
            PatternItem::AnySequence => out.push_str(".*"),
            PatternItem::Class { negated, ranges } => {
                out.push('[');
                if *negated {
                    out.push('^');
                }
                for &(start, end) in ranges {
                    literal(&mut out, start);
                    if end != start {
                        out.push('-');
                        literal(&mut out, end);
                    }
                }
                out.push(']');
            }
        }
    }
    out.push('$');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use PatternItem::*;

    #[test]
    fn glob_classes_place_their_special_characters_where_glob_reads_them_literally() {
        let class = |negated, ranges: &[(char, char)]| {
            glob_pattern(&[Class {
                negated,
                ranges: ranges.to_vec(),
            }])
        };
        assert_eq!(class(false, &[('a', 'z')]), "[a-z]");
        assert_eq!(class(true, &[('a', 'a'), ('A', 'A')]), "[^aA]");
        assert_eq!(class(false, &[('^', '^'), ('x', 'x')]), "[x^]");
        assert_eq!(class(false, &[('^', '^')]), "^");
        assert_eq!(class(true, &[('^', '^')]), "[^^]");
        assert_eq!(class(false, &[(']', ']'), ('-', '-')]), "[]-]");
        // A range over `]` and `^` keeps what lies between and around them.
        assert_eq!(class(false, &[('Z', 'a')]), "[]Z-\\_-a^]");
        assert_eq!(
            glob_pattern(&[Char('*'), AnyChar, Char('['), AnySequence, Char(']')]),
            "[*]?[[]*]"
        );
    }

    #[test]
    fn regex_patterns_escape_everything_but_letters_and_digits() {
        assert_eq!(
            regex_pattern(&[Char('a'), Char('.'), AnySequence, AnyChar]),
            "^a\\U0000002e.*.$"
        );
        assert_eq!(
            regex_pattern(&[Class {
                negated: true,
                ranges: vec![('a', 'f'), ('-', '-')]
            }]),
            "^[^a-f\\U0000002d]$"
        );
    }

    #[test]
    fn scopes_admit_what_their_clauses_say() {
        let owner = |id, private| Owner {
            id,
            name: "o".into(),
            is_private: private,
            is_org: true,
        };
        let anonymous = OwnerScope {
            public: true,
            ..OwnerScope::default()
        };
        assert!(anonymous.admits(&owner(1, false), false));
        assert!(!anonymous.admits(&owner(1, true), true));
        let limited = OwnerScope {
            member: Some(7),
            only: Some(2),
            ..OwnerScope::default()
        };
        assert!(limited.admits(&owner(2, true), true));
        assert!(!limited.admits(&owner(2, true), false));
        assert!(!limited.admits(&owner(3, false), true));
        assert!(!OwnerScope::default().admits(&owner(1, false), true));
    }
}
