//! Webhooks: per owner, a URL that is sent `package.published`, `package.deleted` and
//! `index.published` events as JSON POSTs signed with HMAC-SHA256 of the body with the
//! webhook's secret (`X-Alpine-Registry-Signature-256: sha256=<hex>`, the form GitHub
//! uses).
//!
//! Events are written to the outbox in the transaction of the change (`store::webhooks`);
//! [`Sender`] sends them in the background on every instance: a receiver that is down or
//! slow never delays a change. Each instance claims due deliveries (on PostgreSQL with
//! `FOR UPDATE SKIP LOCKED`, so that instances take different ones) by moving their next
//! attempt past the send timeout, so each is sent once; a delivery claimed by an instance
//! that dies is sent again once that lease has passed. A failing delivery is retried with
//! exponential backoff for `webhooks.retry_for_secs`.
//!
//! Targets on loopback, link-local, private and other non-public addresses are refused
//! unless `webhooks.allow_private_targets`, when added and at each attempt (the name is
//! resolved by [`GuardedResolver`], which drops such addresses, so a name that later
//! resolves elsewhere is refused too). Redirects are not followed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::config::WebhooksConfig;
use crate::error::{AppError, AppResult};
use crate::metrics::OutcomeLabels;
use crate::registry::audit::Actor;
use crate::store::{AttemptOutcome, Delivery, NewWebhook, Owner, Webhook, WEBHOOK_EVENTS};
use crate::AppState;

/// Longest URL a webhook may have.
const MAX_URL_LEN: usize = 2000;
/// Longest secret.
const MAX_SECRET_LEN: usize = 256;
/// Most deliveries one listing holds.
pub const MAX_DELIVERIES_PAGE: i64 = 1000;

/// A webhook to add, as the adapters give it.
#[derive(Debug, Clone)]
pub struct Spec {
    pub url: String,
    pub secret: String,
    /// The events to send; every event when empty.
    pub events: Vec<String>,
}

/// Adds a webhook to `owner`. Refused (400) for a URL that is not http(s), holds
/// credentials or targets a non-public address (unless allowed), an empty or overlong
/// secret, or an unknown event; (409) past `webhooks.max_per_owner`.
pub async fn add(state: &AppState, actor: &Actor, owner: &Owner, spec: Spec) -> AppResult<Webhook> {
    let url = check_url(&spec.url)?;
    check_target(&url, &state.config.webhooks).await?;
    if spec.secret.is_empty() || spec.secret.len() > MAX_SECRET_LEN {
        return Err(AppError::BadRequest(format!(
            "the secret must be 1 to {MAX_SECRET_LEN} bytes: the receiver checks each \
             delivery's X-Alpine-Registry-Signature-256 with it"
        )));
    }
    let events = check_events(&spec.events)?;
    let secret_sealed = state
        .keys
        .seal_secret(&secret_context(owner.id), &spec.secret)?;
    let entry = actor.entry(
        state,
        "webhook.add",
        Some(owner),
        format!("{}/webhooks", owner.name),
        json!({ "url": url.as_str(), "events": events }),
    );
    let new = NewWebhook {
        owner_id: owner.id,
        url: url.to_string(),
        secret_sealed,
        events,
        created_ms: state.clock.unix_ms(),
        created_by: entry.actor.clone(),
    };
    let max = i64::try_from(state.config.webhooks.max_per_owner).unwrap_or(i64::MAX);
    let webhook = state.store.create_webhook(&new, max, Some(&entry)).await?;
    tracing::info!(owner = %owner.name, webhook = webhook.id, url = %webhook.url, "webhook added");
    Ok(webhook)
}

/// The webhooks of `owner`.
pub async fn list(state: &AppState, owner: &Owner) -> AppResult<Vec<Webhook>> {
    Ok(state.store.webhooks(owner.id).await?)
}

/// Webhook `id`, when it exists and is `owner`'s (any owner's when None: the command
/// line on the server).
pub async fn find(state: &AppState, owner: Option<&Owner>, id: i64) -> AppResult<Webhook> {
    state
        .store
        .webhook(id)
        .await?
        .filter(|w| owner.is_none_or(|o| o.id == w.owner_id))
        .ok_or_else(|| AppError::NotFound(format!("no webhook {id} here")))
}

/// Removes webhook `id` (of `owner` when given) with its deliveries; pending ones are
/// not sent.
pub async fn remove(
    state: &AppState,
    actor: &Actor,
    owner: Option<&Owner>,
    id: i64,
) -> AppResult<Webhook> {
    let webhook = find(state, owner, id).await?;
    let owner = match owner {
        Some(owner) => owner.clone(),
        None => state
            .store
            .owner_by_name(&webhook.owner)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no webhook {id} here")))?,
    };
    let entry = actor.entry(
        state,
        "webhook.remove",
        Some(&owner),
        format!("{}/webhooks/{id}", owner.name),
        json!({ "url": webhook.url }),
    );
    if !state.store.delete_webhook(id, Some(&entry)).await? {
        return Err(AppError::NotFound(format!("no webhook {id} here")));
    }
    tracing::info!(owner = %owner.name, webhook = id, "webhook removed");
    Ok(webhook)
}

/// The newest `limit` deliveries of webhook `id` (of `owner` when given), newest first.
pub async fn deliveries(
    state: &AppState,
    owner: Option<&Owner>,
    id: i64,
    limit: Option<i64>,
) -> AppResult<Vec<Delivery>> {
    let limit = limit.unwrap_or(100);
    if !(1..=MAX_DELIVERIES_PAGE).contains(&limit) {
        return Err(AppError::BadRequest(format!(
            "limit must be a whole number from 1 to {MAX_DELIVERIES_PAGE}"
        )));
    }
    let webhook = find(state, owner, id).await?;
    Ok(state.store.webhook_deliveries(webhook.id, limit).await?)
}

/// What a webhook's secret is sealed with: it opens for its owner only.
fn secret_context(owner_id: i64) -> String {
    format!("webhook-secret:{owner_id}")
}

fn check_url(text: &str) -> AppResult<reqwest::Url> {
    let bad = |why: &str| {
        AppError::BadRequest(format!(
            "webhook URL {:?} {why}",
            text.chars().take(80).collect::<String>()
        ))
    };
    if text.len() > MAX_URL_LEN {
        return Err(bad(&format!("is longer than {MAX_URL_LEN} bytes")));
    }
    let url = reqwest::Url::parse(text).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("is not http or https"));
    }
    if url.host().is_none() {
        return Err(bad("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "holds credentials: they would be listed with it; the receiver checks the \
             signature made with the secret instead",
        ));
    }
    Ok(url)
}

fn check_events(events: &[String]) -> AppResult<Vec<String>> {
    if events.is_empty() {
        return Ok(WEBHOOK_EVENTS.iter().map(|e| e.to_string()).collect());
    }
    let mut chosen = Vec::new();
    for event in events.iter().flat_map(|e| e.split(',')).map(str::trim) {
        if !WEBHOOK_EVENTS.contains(&event) {
            return Err(AppError::BadRequest(format!(
                "unknown event {:?}: the events are {}",
                event.chars().take(40).collect::<String>(),
                WEBHOOK_EVENTS.join(", ")
            )));
        }
        if !chosen.iter().any(|c| c == event) {
            chosen.push(event.to_string());
        }
    }
    Ok(chosen)
}

/// Refuses a URL whose host is, or only resolves to, addresses webhooks may not target.
/// A name that does not resolve now is accepted: each attempt resolves it again.
async fn check_target(url: &reqwest::Url, config: &WebhooksConfig) -> AppResult<()> {
    if config.allow_private_targets {
        return Ok(());
    }
    let refused = || {
        AppError::BadRequest(format!(
            "webhook URL {url} targets a loopback, link-local, private or other non-public \
             address; the server's administrator may allow that with \
             webhooks.allow_private_targets = true"
        ))
    };
    match literal_ip(url) {
        Some(ip) if !is_public(ip) => return Err(refused()),
        Some(_) => return Ok(()),
        None => {}
    }
    let host = url.host_str().unwrap_or_default().to_string();
    let lookup = tokio::time::timeout(
        Duration::from_secs(config.timeout_secs),
        tokio::net::lookup_host((host, 0)),
    )
    .await;
    if let Ok(Ok(addresses)) = lookup {
        let addresses: Vec<SocketAddr> = addresses.collect();
        if !addresses.is_empty() && addresses.iter().all(|a| !is_public(a.ip())) {
            return Err(refused());
        }
    }
    Ok(())
}

/// The address a URL's host is written as, when it is one.
fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Whether `ip` is a public unicast address: not loopback, unspecified, link-local,
/// private (RFC 1918, unique local), shared (RFC 6598), multicast, broadcast,
/// documentation or benchmarking; an IPv4-mapped IPv6 address is judged as its IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_link_local()
                || v4.is_private()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// Resolves webhook hosts, keeping only the addresses webhooks may target.
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address (webhooks.allow_private_targets)"
                )
                .into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// `sha256=<hex>` of HMAC-SHA256 of `body` with `secret`: the value of
/// `X-Alpine-Registry-Signature-256`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends the outbox: one per process.
pub struct Sender {
    client: reqwest::Client,
    wake: tokio::sync::Notify,
}

impl Sender {
    pub fn new(config: &WebhooksConfig) -> anyhow::Result<Sender> {
        let timeout = Duration::from_secs(config.timeout_secs);
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("alpine-registry/", env!("CARGO_PKG_VERSION")));
        if !config.allow_private_targets {
            builder = builder.dns_resolver(Arc::new(GuardedResolver));
        }
        Ok(Sender {
            client: builder.build()?,
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Sends what is due now rather than at the next poll (after a change through this
    /// instance).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Sends due deliveries until the process ends: at once when woken, else every
/// `webhooks.poll_interval_ms`; prunes finished deliveries every `audit.prune_interval_secs`.
pub fn spawn_sender(state: AppState) {
    tokio::spawn(async move {
        let config = state.config.webhooks.clone();
        let poll = Duration::from_millis(config.poll_interval_ms);
        let prune_every = Duration::from_secs(state.config.audit.prune_interval_secs.max(1));
        let mut pruned_at = Instant::now();
        loop {
            match send_due(&state).await {
                // A full batch: more may be due.
                Ok(sent) if sent >= config.concurrency => continue,
                Ok(_) => {}
                Err(e) if e.is_backend_unavailable() => {
                    tracing::warn!(error = %e, "sending webhooks: the database is unreachable")
                }
                Err(e) => tracing::error!(error = %e, "sending webhooks"),
            }
            if pruned_at.elapsed() >= prune_every {
                pruned_at = Instant::now();
                let keep = i64::try_from(config.keep_deliveries).unwrap_or(i64::MAX);
                if let Err(e) = state.store.prune_deliveries(keep).await {
                    tracing::warn!(error = %e, "pruning webhook deliveries");
                }
            }
            let _ = tokio::time::timeout(poll, state.webhooks.wake.notified()).await;
        }
    });
}

/// Claims the deliveries due now (at most `webhooks.concurrency`) and sends them at once;
/// returns how many it claimed.
pub async fn send_due(state: &AppState) -> AppResult<usize> {
    let config = &state.config.webhooks;
    let now = state.clock.unix_ms();
    // Past the longest an attempt may take (its timeout, and the time to record it):
    // nobody else claims them meanwhile.
    let lease = i64::try_from(config.timeout_secs.saturating_mul(2).saturating_add(5))
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    let claimed = state
        .store
        .claim_deliveries(now, now.saturating_add(lease), config.concurrency as i64)
        .await?;
    let count = claimed.len();
    futures_util::future::join_all(claimed.into_iter().map(|d| attempt(state, d))).await;
    Ok(count)
}

/// One attempt at `delivery`, its outcome recorded.
async fn attempt(state: &AppState, delivery: Delivery) {
    let started = Instant::now();
    let result = post(state, &delivery).await;
    let latency = started.elapsed();
    let config = &state.config.webhooks;
    let now = state.clock.unix_ms();
    let (status, error) = match result {
        Ok(status) if (200..300).contains(&status) => (Some(status), None),
        Ok(status) => (
            Some(status),
            Some(format!("the receiver answered {status}")),
        ),
        Err(error) => (None, Some(error)),
    };
    let delivered = error.is_none();
    // Waits double from retry_base_secs, at most retry_max_interval_secs.
    let wait_secs = config
        .retry_base_secs
        .saturating_mul(1u64 << delivery.attempts.clamp(0, 30))
        .min(config.retry_max_interval_secs);
    let next =
        now.saturating_add(i64::try_from(wait_secs.saturating_mul(1000)).unwrap_or(i64::MAX));
    let give_up_at = delivery.created_ms.saturating_add(
        i64::try_from(config.retry_for_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
    );
    let outcome_state = if delivered {
        "delivered"
    } else if next > give_up_at {
        "failed"
    } else {
        "pending"
    };
    let label = match outcome_state {
        "pending" => "retry",
        other => other,
    };
    state
        .metrics
        .webhook_attempts
        .get_or_create(&OutcomeLabels { outcome: label })
        .inc();
    state
        .metrics
        .webhook_attempt_duration
        .observe(latency.as_secs_f64());
    match (&error, outcome_state) {
        (None, _) => tracing::debug!(
            delivery = delivery.id, webhook = delivery.webhook_id, event = %delivery.event,
            status = status.unwrap_or_default(), "webhook delivered"
        ),
        (Some(error), "failed") => tracing::warn!(
            delivery = delivery.id, webhook = delivery.webhook_id, event = %delivery.event,
            attempts = delivery.attempts + 1, %error,
            "webhook delivery failed; not retried any more (webhooks.retry_for_secs)"
        ),
        (Some(error), _) => tracing::info!(
            delivery = delivery.id, webhook = delivery.webhook_id, event = %delivery.event,
            attempts = delivery.attempts + 1, %error, retry_in_secs = wait_secs,
            "webhook delivery failed; to be retried"
        ),
    }
    let outcome = AttemptOutcome {
        state: outcome_state,
        at_ms: now,
        next_attempt_ms: if outcome_state == "pending" {
            next
        } else {
            now
        },
        status,
        latency_ms: i64::try_from(latency.as_millis()).unwrap_or(i64::MAX),
        error,
    };
    if let Err(e) = state.store.finish_delivery(delivery.id, &outcome).await {
        // Its lease runs out and it is sent again: at least once.
        tracing::warn!(delivery = delivery.id, error = %e, "recording a webhook attempt");
    }
}

/// POSTs the delivery; the receiver's status code, or why it could not be reached.
async fn post(state: &AppState, delivery: &Delivery) -> Result<i64, String> {
    let webhook = match state.store.webhook(delivery.webhook_id).await {
        Ok(Some(webhook)) => webhook,
        Ok(None) => return Err("the webhook was removed".into()),
        Err(e) => return Err(format!("reading the webhook: {e}")),
    };
    let secret = state
        .keys
        .open_secret(&secret_context(webhook.owner_id), &webhook.secret_sealed)
        .map_err(|e| format!("{e:#}"))?;
    let url = reqwest::Url::parse(&webhook.url).map_err(|e| e.to_string())?;
    if !state.config.webhooks.allow_private_targets
        && literal_ip(&url).is_some_and(|ip| !is_public(ip))
    {
        return Err("the URL targets a non-public address (webhooks.allow_private_targets)".into());
    }
    let body = delivery.payload.as_bytes().to_vec();
    let response = state
        .webhooks
        .client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Alpine-Registry-Event", &delivery.event)
        .header("X-Alpine-Registry-Delivery", delivery.id.to_string())
        .header(
            "X-Alpine-Registry-Signature-256",
            signature(secret.as_bytes(), &body),
        )
        .body(body)
        .send()
        .await
        .map_err(describe_error)?;
    Ok(i64::from(response.status().as_u16()))
}

/// What a failed attempt says: the whole chain of causes (a refused address is one).
fn describe_error(error: reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_one_github_receivers_check() {
        // The example of GitHub's documentation on validating webhook deliveries.
        assert_eq!(
            signature(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn only_public_unicast_addresses_are_targets() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn urls_with_credentials_or_other_schemes_are_refused() {
        assert!(check_url("https://hooks.example.org/alpine").is_ok());
        assert!(check_url("ftp://hooks.example.org/").is_err());
        assert!(check_url("https://user:pw@hooks.example.org/").is_err());
        assert!(check_url("not a url").is_err());
    }

    #[test]
    fn events_are_checked_and_default_to_all() {
        assert_eq!(check_events(&[]).unwrap().len(), 3);
        assert_eq!(
            check_events(&["index.published,package.deleted".into()]).unwrap(),
            vec!["index.published", "package.deleted"]
        );
        assert!(check_events(&["package.pushed".into()]).is_err());
    }
}
