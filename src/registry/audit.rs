//! The audit log: who changed what, when and from where. Every operation that changes the
//! registry takes the [`Actor`] its adapter names and hands the store an entry, which the
//! store inserts in the transaction of the change (`store::audit`). Refused changes are not
//! recorded: nothing changed. Entries are kept `audit.retention_days`, pruned in the
//! background.
//!
//! An entry holds names, ids and settings, never a secret: no token, password, hash or key
//! material is ever passed to [`Actor::entry`].

use std::net::IpAddr;
use std::time::Duration;

use crate::access::{Identity, Principal};
use crate::error::{AppError, AppResult};
use crate::names::RepoAddress;
use crate::store::{AuditEntry, AuditQuery, Owner};
use crate::AppState;

/// Most entries one page holds.
pub const MAX_PAGE: usize = 1000;

/// Who makes a change.
#[derive(Debug, Clone)]
pub struct Actor {
    kind: &'static str,
    name: String,
    token_id: Option<i64>,
    token_label: Option<String>,
    client: Option<IpAddr>,
}

impl Actor {
    /// A user over HTTP, from `client` (as the trusted proxies report it).
    pub fn user(principal: &Principal, client: Option<IpAddr>) -> Actor {
        Actor {
            kind: "user",
            name: principal.user.name.clone(),
            token_id: principal.token.as_ref().map(|t| t.id),
            token_label: principal.token.as_ref().and_then(|t| t.label.clone()),
            client,
        }
    }

    /// Whoever `identity` is, over HTTP from `client` (a change always has a user: an
    /// anonymous one is refused before it is made).
    pub fn of(identity: &Identity, client: Option<IpAddr>) -> Actor {
        match identity {
            Identity::User(principal) => Actor::user(principal, client),
            Identity::Anonymous => Actor {
                kind: "anonymous",
                name: String::new(),
                token_id: None,
                token_label: None,
                client,
            },
        }
    }

    /// A command run on the server, by the operating system user that runs it.
    pub fn cli() -> Actor {
        let os_user = ["USER", "LOGNAME", "USERNAME"]
            .iter()
            .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|| "unknown".into());
        Actor {
            kind: "cli",
            name: os_user,
            token_id: None,
            token_label: None,
            client: None,
        }
    }

    /// A retention rule, named by its scope (`owner[/branch[/repository]]`).
    pub fn retention(rule: &str) -> Actor {
        Actor {
            kind: "retention",
            name: rule.to_string(),
            token_id: None,
            token_label: None,
            client: None,
        }
    }

    /// The server itself (a signing key made on first use).
    pub fn system() -> Actor {
        Actor {
            kind: "system",
            name: "server".into(),
            token_id: None,
            token_label: None,
            client: None,
        }
    }

    /// The entry of `action` on `target` (of `owner`, when the change concerns one), done
    /// now by this actor; `detail` is a JSON object of particulars, never a secret.
    pub fn entry(
        &self,
        state: &AppState,
        action: &str,
        owner: Option<&Owner>,
        target: impl Into<String>,
        detail: serde_json::Value,
    ) -> AuditEntry {
        self.entry_at(state.clock.unix_ms(), action, owner, target, detail)
    }

    /// The same entry, dated `at_ms` (Unix milliseconds).
    pub fn entry_at(
        &self,
        at_ms: i64,
        action: &str,
        owner: Option<&Owner>,
        target: impl Into<String>,
        detail: serde_json::Value,
    ) -> AuditEntry {
        AuditEntry {
            id: 0,
            at_ms,
            owner_id: owner.map(|o| o.id),
            owner: owner.map(|o| o.name.clone()),
            actor_kind: self.kind.to_string(),
            actor: self.name.clone(),
            token_id: self.token_id,
            token_label: self.token_label.clone(),
            client: self.client.map(|ip| ip.to_string()),
            action: action.to_string(),
            target: target.into(),
            outcome: "ok".into(),
            detail,
        }
    }
}

/// Which entries to list, as the adapters give them.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Unix milliseconds: entries at or after (see [`parse_since`]).
    pub since_ms: Option<i64>,
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// Entries per page, 1 to [`MAX_PAGE`]; [`DEFAULT_PAGE`] when None.
    pub limit: Option<usize>,
}

/// Entries per page unless asked otherwise.
pub const DEFAULT_PAGE: usize = 100;

/// A page of entries, newest first, and where the next one starts.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Page {
    pub entries: Vec<AuditEntry>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A page of the entries of `owner` (of every owner, and the changes of no owner, when
/// None) matching `filter`, newest first. Who may read them is the adapter's decision
/// (`access`).
pub async fn list(state: &AppState, owner: Option<&Owner>, filter: Filter) -> AppResult<Page> {
    let limit = filter.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AppError::BadRequest(format!(
            "limit must be a whole number from 1 to {MAX_PAGE}"
        )));
    }
    let before_id =
        match filter.after.as_deref().filter(|a| !a.is_empty()) {
            Some(after) => Some(after.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(
                || {
                    AppError::BadRequest(
                "after is not a position this server gave: pass the `next` of the previous \
                 page unchanged"
                    .into(),
            )
                },
            )?),
            None => None,
        };
    let query = AuditQuery {
        owner_id: owner.map(|o| o.id),
        actor: filter.actor.filter(|a| !a.is_empty()),
        action: filter.action.filter(|a| !a.is_empty()),
        since_ms: filter.since_ms,
        before_id,
        limit: limit as i64 + 1,
    };
    let mut entries = state.store.audit_entries(&query).await?;
    let next = if entries.len() > limit {
        entries.truncate(limit);
        entries.last().map(|e| e.id.to_string())
    } else {
        None
    };
    Ok(Page { entries, next })
}

/// `since` as Unix milliseconds: an RFC 3339 time (`2026-01-31T12:00:00Z`), a date
/// (`2026-01-31`, midnight UTC), or a duration back from now (`7d`, `12h`).
pub fn parse_since(text: &str, now_ms: i64) -> AppResult<i64> {
    use time::format_description::well_known::Rfc3339;
    let text = text.trim();
    let bad = || {
        AppError::BadRequest(format!(
            "since {:?} is not a time: give 2026-01-31T12:00:00Z, 2026-01-31 or a duration \
             back from now such as 7d",
            text.chars().take(40).collect::<String>()
        ))
    };
    if let Ok(at) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return i64::try_from(at.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad());
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = time::Date::parse(text, &date_format) {
        return Ok(date.midnight().assume_utc().unix_timestamp() * 1000);
    }
    let secs = crate::access::parse_duration(text).map_err(|_| bad())?;
    Ok(now_ms.saturating_sub(secs.saturating_mul(1000)))
}

/// Deletes the entries older than `audit.retention_days`; returns how many.
pub async fn prune(state: &AppState) -> AppResult<u64> {
    let keep_ms = i64::try_from(state.config.audit.retention_days)
        .unwrap_or(i64::MAX / 86_400_000)
        .saturating_mul(86_400_000);
    let before = state.clock.unix_ms().saturating_sub(keep_ms);
    Ok(state.store.prune_audit(before).await?)
}

/// Prunes old entries every `audit.prune_interval_secs` (every instance on a shared
/// database does; the deletes are idempotent).
pub fn spawn_pruner(state: AppState) {
    tokio::spawn(async move {
        let period = Duration::from_secs(state.config.audit.prune_interval_secs.max(1));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match prune(&state).await {
                Ok(0) => {}
                Ok(pruned) => tracing::debug!(pruned, "pruned old audit log entries"),
                Err(e) if e.is_backend_unavailable() => {
                    tracing::warn!(error = %e, "pruning the audit log: the database is unreachable")
                }
                Err(e) => tracing::error!(error = %e, "pruning the audit log"),
            }
        }
    });
}

/// The target of a change to one file: `owner/branch/repository/arch/file`.
pub fn file_target(at: &RepoAddress, arch: &str, file: &str) -> String {
    format!("{at}/{arch}/{file}")
}
