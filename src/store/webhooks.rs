//! Webhooks as stored: the hooks of each owner, the outbox of their deliveries, and the
//! package files a change added to or removed from a repository until the index of that
//! generation is published. The SQL is the same text on both backends (`$n` placeholders).
//!
//! Events enter the outbox in the transaction of the change they report, so that a change
//! and its event are both committed or neither is:
//! - `package.published` and `package.deleted` with the package row's insert or delete,
//!   built from the change's audit entry (who, why) and the row ([`package_event`]);
//! - `index.published` with the publication of the indexes that list the change
//!   ([`index_events`]), from the files the changes of those generations recorded
//!   ([`PENDING_FILE`]).

use serde::Serialize;
use serde_json::json;

use super::{AuditEntry, Package, RenderedIndex};

/// The events a webhook may ask for.
pub const EVENTS: [&str; 3] = ["package.published", "package.deleted", "index.published"];

/// A webhook as listed: never its secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Webhook {
    pub id: i64,
    #[serde(skip)]
    pub owner_id: i64,
    /// The owner's name.
    pub owner: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// The events it is sent (stored comma-separated).
    #[serde(rename = "events", serialize_with = "comma_list")]
    #[schema(value_type = Vec<String>)]
    #[sqlx(rename = "events")]
    pub events_text: String,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// Who added it (a user's name, or `cli:<os user>`).
    pub created_by: String,
    /// The secret, sealed with the master key (see `registry::webhooks`).
    #[serde(skip)]
    pub secret_sealed: String,
}

fn comma_list<S: serde::Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(text.split(',').filter(|e| !e.is_empty()))
}

impl Webhook {
    /// The events it is sent.
    pub fn events(&self) -> Vec<String> {
        self.events_text
            .split(',')
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// A webhook to add.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub owner_id: i64,
    pub url: String,
    pub secret_sealed: String,
    pub events: Vec<String>,
    pub created_ms: i64,
    pub created_by: String,
}

/// One event for one webhook, and how its sending went so far.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Delivery {
    /// Sent as `X-Alpine-Registry-Delivery`.
    pub id: i64,
    pub webhook_id: i64,
    pub event: String,
    /// Unix milliseconds: when the change was committed.
    pub created_ms: i64,
    /// `pending` (to be sent, or sent again at `next_attempt_ms`), `delivered` (a 2xx
    /// answer) or `failed` (retried for `webhooks.retry_for_secs`, then given up).
    pub state: String,
    /// Attempts made.
    pub attempts: i64,
    /// Unix milliseconds: when a pending delivery is sent next.
    pub next_attempt_ms: i64,
    /// Unix milliseconds: the last attempt.
    pub last_attempt_ms: Option<i64>,
    /// The receiver's status code at the last attempt (none when it was not reached).
    pub last_status: Option<i64>,
    /// How long the last attempt took, milliseconds.
    pub last_latency_ms: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// The JSON body sent.
    #[serde(skip)]
    pub payload: String,
}

/// How an attempt went.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    /// `delivered`, `pending` (to be retried at `next_attempt_ms`) or `failed`.
    pub state: &'static str,
    pub at_ms: i64,
    pub next_attempt_ms: i64,
    pub status: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

pub(super) const INSERT: &str = "INSERT INTO webhooks (owner_id, url, secret_sealed, events, \
     created_ms, created_by) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";

pub(super) const COUNT: &str = "SELECT COUNT(*) FROM webhooks WHERE owner_id = $1";

const COLUMNS: &str = "w.id, w.owner_id, o.name AS owner, w.url, w.events, w.created_ms, \
     w.created_by, w.secret_sealed FROM webhooks w JOIN owners o ON o.id = w.owner_id";

pub(super) fn select_by_owner() -> String {
    format!("SELECT {COLUMNS} WHERE w.owner_id = $1 ORDER BY w.id")
}

pub(super) fn select_by_id() -> String {
    format!("SELECT {COLUMNS} WHERE w.id = $1")
}

pub(super) const DELETE: &str = "DELETE FROM webhooks WHERE id = $1";

/// Queues event `$2` with body `$3`, made at `$4`, for each webhook of owner `$1` whose
/// events match the pattern `$5` (see [`event_pattern`]).
pub(super) const ENQUEUE: &str = "INSERT INTO webhook_deliveries (webhook_id, event, payload, \
     created_ms, next_attempt_ms) SELECT id, $2, $3, $4, $4 FROM webhooks \
     WHERE owner_id = $1 AND (',' || events || ',') LIKE $5";

/// The LIKE pattern that matches a webhook's events when they include `event`.
pub(super) fn event_pattern(event: &str) -> String {
    format!("%,{event},%")
}

/// Keeps that a change of generation `$2` added (`$5` = `added`) or removed file `$4` of
/// architecture `$3` in repository `$1`, when owner `$6` has a webhook for
/// `index.published`.
pub(super) const PENDING_FILE: &str = "INSERT INTO webhook_index_files (repository_id, \
     generation, arch, filename, change) SELECT $1, $2, $3, $4, $5 WHERE EXISTS \
     (SELECT 1 FROM webhooks WHERE owner_id = $6 \
     AND (',' || events || ',') LIKE '%,index.published,%')";

/// Takes the files of repository `$1` whose changes the indexes of generation `$2` list.
pub(super) const TAKE_FILES: &str = "DELETE FROM webhook_index_files \
     WHERE repository_id = $1 AND generation <= $2 RETURNING arch, filename, change";

/// The names of repository `$1` and its owner's id, for an index event.
pub(super) const REPOSITORY_NAMES: &str = "SELECT o.id, o.name, r.branch, r.name \
     FROM repositories r JOIN owners o ON o.id = r.owner_id WHERE r.id = $1";

/// Claims at most `$3` pending deliveries due at `$2` by moving their next attempt to
/// `$1` (past the send timeout), returning them. PostgreSQL adds `FOR UPDATE SKIP
/// LOCKED` to the inner SELECT (`lock` below), so that instances claim different rows.
pub(super) fn claim(lock: &str) -> String {
    format!(
        "UPDATE webhook_deliveries SET next_attempt_ms = $1 WHERE id IN \
         (SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_ms <= $2 \
         ORDER BY next_attempt_ms, id LIMIT $3{lock}) RETURNING {DELIVERY_COLUMNS}"
    )
}

const DELIVERY_COLUMNS: &str = "id, webhook_id, event, created_ms, state, attempts, \
     next_attempt_ms, last_attempt_ms, last_status, last_latency_ms, last_error, payload";

pub(super) fn select_deliveries() -> String {
    format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 \
         ORDER BY id DESC LIMIT $2"
    )
}

/// Records attempt `$1`'s outcome.
pub(super) const FINISH: &str = "UPDATE webhook_deliveries SET state = $2, \
     attempts = attempts + 1, next_attempt_ms = $3, last_attempt_ms = $4, last_status = $5, \
     last_latency_ms = $6, last_error = $7 WHERE id = $1";

/// Deletes the finished deliveries of each webhook but its newest `$1`.
pub(super) const PRUNE: &str = "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM \
     (SELECT id, ROW_NUMBER() OVER (PARTITION BY webhook_id ORDER BY id DESC) AS place \
     FROM webhook_deliveries WHERE state <> 'pending') AS ranked WHERE place > $1)";

/// Binds an attempt's outcome to [`FINISH`] (a macro: the query types of the two backends
/// differ).
macro_rules! bind_outcome {
    ($query:expr, $id:expr, $outcome:expr) => {{
        let outcome: &$crate::store::AttemptOutcome = $outcome;
        $query
            .bind($id)
            .bind(outcome.state)
            .bind(outcome.next_attempt_ms)
            .bind(outcome.at_ms)
            .bind(outcome.status)
            .bind(outcome.latency_ms)
            .bind(outcome.error.as_deref())
    }};
}
pub(super) use bind_outcome;

/// The functions that write the outbox in the transaction of a change, for the backend
/// `$db` (a macro: the transaction types of the two backends differ); each backend
/// invokes it once, beside its `record` of audit entries.
macro_rules! outbox_functions {
    ($db:ty) => {
        /// Records the insert (`change` = `added`) or delete (`removed`) of `package` at
        /// `generation`, in `tx`: its audit entry, its webhook event (`store::webhooks`), and the
        /// file the event of the index that lists the change will name.
        async fn record_package_change(
            tx: &mut sqlx::Transaction<'static, $db>,
            audit: Option<&AuditEntry>,
            owner_id: i64,
            generation: i64,
            package: &Package,
            change: &str,
        ) -> StoreResult<()> {
            record(tx, audit).await?;
            if let Some(entry) = audit {
                if let Some((event, body)) = $crate::store::webhooks::package_event(entry, package)
                {
                    enqueue(tx, owner_id, event, &body, entry.at_ms).await?;
                }
            }
            sqlx::query($crate::store::webhooks::PENDING_FILE)
                .bind(package.repository_id)
                .bind(generation)
                .bind(&package.arch)
                .bind(&package.filename)
                .bind(change)
                .bind(owner_id)
                .execute(&mut **tx)
                .await?;
            Ok(())
        }

        /// Queues `event` with `body` for every webhook of the owner that wants it, in `tx`.
        async fn enqueue(
            tx: &mut sqlx::Transaction<'static, $db>,
            owner_id: i64,
            event: &str,
            body: &str,
            at_ms: i64,
        ) -> StoreResult<()> {
            sqlx::query($crate::store::webhooks::ENQUEUE)
                .bind(owner_id)
                .bind(event)
                .bind(body)
                .bind(at_ms)
                .bind($crate::store::webhooks::event_pattern(event))
                .execute(&mut **tx)
                .await?;
            Ok(())
        }

        /// Queues the `index.published` events of the indexes of `generation` just written in
        /// `tx` (`published`), naming the files the changes they list recorded.
        async fn enqueue_index_events(
            tx: &mut sqlx::Transaction<'static, $db>,
            repository_id: i64,
            generation: i64,
            published: &[&RenderedIndex],
            now_ms: i64,
        ) -> StoreResult<()> {
            let files: Vec<$crate::store::webhooks::PendingFile> =
                sqlx::query_as($crate::store::webhooks::TAKE_FILES)
                    .bind(repository_id)
                    .bind(generation)
                    .fetch_all(&mut **tx)
                    .await?;
            if files.is_empty() {
                return Ok(());
            }
            let (owner_id, owner, branch, name): (i64, String, String, String) =
                sqlx::query_as($crate::store::webhooks::REPOSITORY_NAMES)
                    .bind(repository_id)
                    .fetch_one(&mut **tx)
                    .await?;
            let names = (owner.as_str(), branch.as_str(), name.as_str());
            for body in
                $crate::store::webhooks::index_events(names, generation, published, &files, now_ms)
            {
                enqueue(tx, owner_id, "index.published", &body, now_ms).await?;
            }
            Ok(())
        }
    };
}
pub(super) use outbox_functions;

/// The event a package change sends, with its body, from the change's audit entry (its
/// action, actor and particulars) and the package row: `package.published` for an upload
/// or a copy, `package.deleted` for a delete; None for other actions.
pub(super) fn package_event(
    entry: &AuditEntry,
    package: &Package,
) -> Option<(&'static str, String)> {
    let event = match entry.action.as_str() {
        "package.publish" | "package.copy" => "package.published",
        "package.delete" => "package.deleted",
        _ => return None,
    };
    // The target is owner/branch/repository/arch/file (names hold no slash).
    let mut parts = entry.target.splitn(5, '/');
    let (owner, branch, repository) = (parts.next()?, parts.next()?, parts.next()?);
    let reason = match entry.action.as_str() {
        "package.copy" => "copy",
        "package.publish" => "upload",
        _ => entry
            .detail
            .get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or("request"),
    };
    let mut body = json!({
        "event": event,
        "at": rfc3339(entry.at_ms),
        "owner": owner,
        "branch": branch,
        "repository": repository,
        "arch": package.arch,
        "file": package.filename,
        "path": format!("{owner}/{branch}/{repository}/{}/{}", package.arch, package.filename),
        "name": package.name,
        "version": package.version,
        "sha256": package.sha256,
        "size": package.size,
        "reason": reason,
        "actor": {
            "kind": entry.actor_kind,
            "name": entry.actor,
            "token_label": entry.token_label,
        },
    });
    if let Some(source) = entry.detail.get("source") {
        body["source"] = source.clone();
    }
    Some((event, body.to_string()))
}

/// A file a change added to or removed from a repository, as [`TAKE_FILES`] returns it.
pub(super) type PendingFile = (String, String, String);

/// The `index.published` bodies of one publication: one per published index whose
/// architecture the taken `files` touch (a noarch file touches every architecture), each
/// naming the files it added and removed. `names` is (owner, branch, repository).
pub(super) fn index_events(
    names: (&str, &str, &str),
    generation: i64,
    indexes: &[&RenderedIndex],
    files: &[PendingFile],
    at_ms: i64,
) -> Vec<String> {
    let (owner, branch, repository) = names;
    indexes
        .iter()
        .filter_map(|index| {
            let touching = |change: &str| -> Vec<&str> {
                files
                    .iter()
                    .filter(|(arch, _, c)| c == change && (arch == &index.arch || arch == "noarch"))
                    .map(|(_, file, _)| file.as_str())
                    .collect()
            };
            let (added, removed) = (touching("added"), touching("removed"));
            if added.is_empty() && removed.is_empty() {
                return None;
            }
            Some(
                json!({
                    "event": "index.published",
                    "at": rfc3339(at_ms),
                    "owner": owner,
                    "branch": branch,
                    "repository": repository,
                    "arch": index.arch,
                    "generation": generation,
                    "path": format!("{owner}/{branch}/{repository}/{}/APKINDEX.tar.gz", index.arch),
                    "sha256": index.sha256,
                    "packages": index.entries,
                    "added": added,
                    "removed": removed,
                })
                .to_string(),
            )
        })
        .collect()
}

fn rfc3339(at_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(arch: &str, filename: &str) -> Package {
        Package {
            id: 1,
            repository_id: 1,
            arch: arch.into(),
            name: "hello".into(),
            version: "1.0-r0".into(),
            filename: filename.into(),
            checksum: "Q1x".into(),
            sha256: "ab".into(),
            size: 10,
            created_at: 0,
            modified_ms: 0,
        }
    }

    fn entry(action: &str, detail: serde_json::Value) -> AuditEntry {
        AuditEntry {
            id: 0,
            at_ms: 1_767_225_600_000,
            owner_id: Some(1),
            owner: Some("acme".into()),
            actor_kind: "retention".into(),
            actor: "acme/edge".into(),
            token_id: None,
            token_label: None,
            client: None,
            action: action.into(),
            target: "acme/edge/main/x86_64/hello-1.0-r0.apk".into(),
            outcome: "ok".into(),
            detail,
        }
    }

    #[test]
    fn a_delete_by_a_rule_says_who_and_why() {
        let (event, body) = package_event(
            &entry("package.delete", json!({"reason": "retention"})),
            &package("x86_64", "hello-1.0-r0.apk"),
        )
        .unwrap();
        assert_eq!(event, "package.deleted");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["reason"], "retention");
        assert_eq!(body["actor"]["kind"], "retention");
        assert_eq!(body["actor"]["name"], "acme/edge");
        assert_eq!(body["path"], "acme/edge/main/x86_64/hello-1.0-r0.apk");
        assert_eq!(body["at"], "2026-01-01T00:00:00Z");
    }

    #[test]
    fn only_package_changes_are_package_events() {
        let other = entry("package.pin", json!({}));
        assert!(package_event(&other, &package("x86_64", "hello-1.0-r0.apk")).is_none());
    }

    #[test]
    fn a_noarch_file_is_in_the_event_of_every_index_it_touches() {
        let index = |arch: &str| RenderedIndex {
            arch: arch.into(),
            content: Vec::new(),
            sha256: format!("sum-{arch}"),
            entries: 3,
            signatures: Vec::new(),
            adb: None,
        };
        let files = vec![
            (
                "noarch".to_string(),
                "doc-1-r0.apk".to_string(),
                "added".to_string(),
            ),
            (
                "x86_64".to_string(),
                "a-1-r0.apk".to_string(),
                "removed".to_string(),
            ),
        ];
        let events = index_events(
            ("acme", "edge", "main"),
            7,
            &[&index("aarch64"), &index("x86_64")],
            &files,
            0,
        );
        let events: Vec<serde_json::Value> = events
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["arch"], "aarch64");
        assert_eq!(events[0]["added"], json!(["doc-1-r0.apk"]));
        assert_eq!(events[0]["removed"], json!([]));
        assert_eq!(events[1]["removed"], json!(["a-1-r0.apk"]));
        assert_eq!(events[1]["sha256"], "sum-x86_64");
        assert_eq!(events[1]["generation"], 7);
    }
}
