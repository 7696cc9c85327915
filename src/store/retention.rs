//! Retention rules and pins as stored: the SQL both backends share (`$n` placeholders read
//! the same on SQLite and PostgreSQL) and the conversion of a rule's row.

use super::RetentionRule;

/// Stores a rule, replacing the one of the same scope.
pub(super) const SET_RULE: &str = "INSERT INTO retention_rules (owner_id, branch, repository, \
     keep_versions, max_age_secs, keep_min, include_globs, exclude_globs, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (owner_id, branch, repository) DO UPDATE SET \
     keep_versions = excluded.keep_versions, max_age_secs = excluded.max_age_secs, \
     keep_min = excluded.keep_min, include_globs = excluded.include_globs, \
     exclude_globs = excluded.exclude_globs, updated_at = excluded.updated_at";

const RULE_COLUMNS: &str = "SELECT owner_id, branch, repository, keep_versions, max_age_secs, \
     keep_min, include_globs, exclude_globs, updated_at FROM retention_rules";

/// Every rule, by owner and scope.
pub(super) fn rules_sql(of_one_owner: bool) -> String {
    if of_one_owner {
        format!("{RULE_COLUMNS} WHERE owner_id = $1 ORDER BY branch, repository")
    } else {
        format!("{RULE_COLUMNS} ORDER BY owner_id, branch, repository")
    }
}

pub(super) const REMOVE_RULE: &str =
    "DELETE FROM retention_rules WHERE owner_id = $1 AND branch = $2 AND repository = $3";

pub(super) const SET_PINNED: &str = "UPDATE packages SET pinned = $1 WHERE id = $2";

/// A rule's row, as `rules_sql` selects it.
pub(super) type RuleRow = (
    i64,
    String,
    String,
    Option<i64>,
    Option<i64>,
    i64,
    String,
    String,
    i64,
);

pub(super) fn rule_from(row: RuleRow) -> RetentionRule {
    let (
        owner_id,
        branch,
        repository,
        keep_versions,
        max_age_secs,
        keep_min,
        include,
        exclude,
        updated_at,
    ) = row;
    RetentionRule {
        owner_id,
        branch,
        repository,
        keep_versions,
        max_age_secs,
        keep_min,
        include: globs_from(&include),
        exclude: globs_from(&exclude),
        updated_at,
    }
}

/// Globs as stored: one per line (a glob holds no line break: `registry::retention`
/// refuses one).
pub(super) fn globs_text(globs: &[String]) -> String {
    globs.join("\n")
}

fn globs_from(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}
