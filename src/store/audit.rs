//! The audit log as stored: its entries, the query that pages through them, and the SQL
//! both backends share (`$n` placeholders read the same on SQLite and PostgreSQL).
//!
//! Every store method that changes something takes an `Option<&AuditEntry>` and inserts it
//! with `INSERT` in its own transaction, only when it changed something: a change that did
//! not happen leaves no entry.

use serde::Serialize;

/// One entry of the audit log: who changed what, when, from where. Never holds a secret
/// (token, password, hash or key material): the service builds entries from names and
/// ids only.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Assigned by the store (0 before the entry is stored); newer entries have larger ids.
    pub id: i64,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// The owner the change concerns, when it concerns one.
    #[serde(skip)]
    pub owner_id: Option<i64>,
    pub owner: Option<String>,
    /// `user` (over HTTP), `cli` (a command run on the server), `retention` (a rule) or
    /// `system` (the server itself).
    pub actor_kind: String,
    /// The user's name, the OS user of a command, or the retention rule's scope.
    pub actor: String,
    /// The token the user authenticated with (none for a password or a command).
    pub token_id: Option<i64>,
    pub token_label: Option<String>,
    /// The client address, as the trusted proxies report it.
    pub client: Option<String>,
    /// What was done, such as `package.publish` or `token.create`.
    pub action: String,
    /// What it was done to: `owner/branch/repository/arch/file`, a user, an owner, a token.
    pub target: String,
    /// `ok`, or `warned` when the change went through with warnings.
    pub outcome: String,
    /// A small object of particulars (a rule's settings, a copy's source, ...).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// Which entries to read: newest first, those matching every filter given.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub owner_id: Option<i64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Unix milliseconds: entries at or after.
    pub since_ms: Option<i64>,
    /// Entries with a smaller id than this (the page continues after it).
    pub before_id: Option<i64>,
    pub limit: i64,
}

pub(super) const INSERT: &str = "INSERT INTO audit_log (at_ms, owner_id, owner_name, \
     actor_kind, actor, token_id, token_label, client, action, target, outcome, detail) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

pub(super) const PRUNE: &str = "DELETE FROM audit_log WHERE at_ms < $1";

/// A value bound to the query `select_sql` builds.
pub(super) enum Bind {
    Int(i64),
    Text(String),
}

/// The SELECT of `query` and its values in placeholder order: only the filters given, so
/// that each reads by its index; ordered by id, newest first.
pub(super) fn select_sql(query: &AuditQuery) -> (String, Vec<Bind>) {
    let mut conditions = Vec::new();
    let mut binds = Vec::new();
    let mut add = |condition: &str, bind: Bind| {
        binds.push(bind);
        conditions.push(format!("{condition} ${}", binds.len()));
    };
    if let Some(owner_id) = query.owner_id {
        add("owner_id =", Bind::Int(owner_id));
    }
    if let Some(actor) = &query.actor {
        add("actor =", Bind::Text(actor.clone()));
    }
    if let Some(action) = &query.action {
        add("action =", Bind::Text(action.clone()));
    }
    if let Some(since) = query.since_ms {
        add("at_ms >=", Bind::Int(since));
    }
    if let Some(before) = query.before_id {
        add("id <", Bind::Int(before));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    binds.push(Bind::Int(query.limit));
    let sql = format!(
        "SELECT id, at_ms, owner_id, owner_name, actor_kind, actor, token_id, token_label, \
         client, action, target, outcome, detail FROM audit_log{filter} ORDER BY id DESC \
         LIMIT ${}",
        binds.len()
    );
    (sql, binds)
}

/// An entry's row, as `select_sql` selects it.
pub(super) type EntryRow = (
    i64,
    i64,
    Option<i64>,
    Option<String>,
    String,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    String,
    String,
    String,
    String,
);

pub(super) fn entry_from(row: EntryRow) -> AuditEntry {
    let (
        id,
        at_ms,
        owner_id,
        owner,
        actor_kind,
        actor,
        token_id,
        token_label,
        client,
        action,
        target,
        outcome,
        detail,
    ) = row;
    AuditEntry {
        id,
        at_ms,
        owner_id,
        owner,
        actor_kind,
        actor,
        token_id,
        token_label,
        client,
        action,
        target,
        outcome,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
    }
}

/// Binds `entry` to `INSERT` (a macro: the query types of the two backends differ).
macro_rules! bind_entry {
    ($query:expr, $entry:expr) => {{
        let entry: &$crate::store::AuditEntry = $entry;
        $query
            .bind(entry.at_ms)
            .bind(entry.owner_id)
            .bind(entry.owner.as_deref())
            .bind(entry.actor_kind.as_str())
            .bind(entry.actor.as_str())
            .bind(entry.token_id)
            .bind(entry.token_label.as_deref())
            .bind(entry.client.as_deref())
            .bind(entry.action.as_str())
            .bind(entry.target.as_str())
            .bind(entry.outcome.as_str())
            .bind(entry.detail.to_string())
    }};
}
pub(super) use bind_entry;

impl AuditEntry {
    /// This entry of a token's creation with the new token's id: its target becomes
    /// `USER/tokens/ID`, as the entry of its revocation names it.
    pub(super) fn with_token_id(&self, id: i64) -> AuditEntry {
        AuditEntry {
            target: format!("{}/tokens/{id}", self.target),
            ..self.clone()
        }
    }
}
