//! What the registry counts, in Prometheus' text format (version 0.0.4) at `/metrics`.
//!
//! Labels are bounded by construction: a route pattern (never a path), a method, a status
//! code, a kind of download or an outcome. No owner, repository or package name is ever a
//! label. What the database holds (packages, bytes, repositories, owners) is read when
//! scraped.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::store::Store;

/// `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route pattern (`/{owner}/{branch}/{repository}`), `unmatched` for none.
    pub route: String,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DownloadLabels {
    /// `package`, `index` or `key`.
    pub kind: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok`, `refused` (the client's fault: 4xx) or `failed` (the server's: 5xx).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetentionLabels {
    /// `versions` (beyond a rule's newest N) or `age` (older than its max age).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// `incremental` (only what changed was read and rendered) or `full`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// `index` or `package`.
    pub kind: &'static str,
    /// For indexes: `fetched`, `not_modified` or `error`; for packages: `hit` (served
    /// from storage), `miss` (fetched from upstream) or `error` (upstream failed or its
    /// file did not match the index).
    pub result: &'static str,
}

/// What remote repositories count (`registry::remote`).
pub struct UpstreamMetrics {
    pub requests: Family<UpstreamLabels, Counter>,
    /// Bytes of package files received from upstreams.
    pub bytes: Counter,
    /// Upstream indexes whose last refresh failed, of every remote repository.
    pub stale: Gauge,
}

/// Every metric of one process.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub downloads: Family<DownloadLabels, Counter>,
    pub publishes: Family<OutcomeLabels, Counter>,
    pub publish_duration: Histogram,
    pub deletes: Family<OutcomeLabels, Counter>,
    pub delete_duration: Histogram,
    pub copies: Family<OutcomeLabels, Counter>,
    pub copy_duration: Histogram,
    pub retention_deletions: Family<RetentionLabels, Counter>,
    /// Webhook delivery attempts, by outcome: delivered, retry, failed.
    pub webhook_attempts: Family<OutcomeLabels, Counter>,
    pub webhook_attempt_duration: Histogram,
    pub index_builds: Family<BuildLabels, Counter>,
    pub index_build_duration: Histogram,
    pub index_build_packages: Histogram,
    pub publish_to_index: Histogram,
    pub upstream: UpstreamMetrics,
    packages: Gauge,
    stored_bytes: Gauge,
    repositories: Gauge,
    owners: Gauge,
    /// One scrape at a time reads the database and encodes.
    scrape: tokio::sync::Mutex<()>,
    /// Set when a scrape could not read the database; its gauges keep their last values.
    scrape_errors: Mutex<u64>,
    scrape_failures: Counter,
}

/// A thread's counters by (metrics, route string, its length, method, status, index).
type CounterKey = (usize, usize, usize, &'static str, u16, bool);

type CachedCounters = std::collections::HashMap<CounterKey, (Counter, Option<Counter>)>;

thread_local! {
    static COUNTERS: std::cell::RefCell<CachedCounters> = Default::default();
}

/// Entries a thread keeps at most (routes × methods × statuses is far fewer).
const MAX_CACHED_COUNTERS: usize = 4096;

/// Seconds, from a millisecond to about nine minutes.
fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 20)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("alpine_registry");
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by matched route, method and status",
            http_requests.clone(),
        );
        let downloads = Family::<DownloadLabels, Counter>::default();
        registry.register(
            "downloads",
            "Downloads (GET and HEAD) of packages, indexes and keys, by status",
            downloads.clone(),
        );
        let publishes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "publishes",
            "Package uploads, by outcome",
            publishes.clone(),
        );
        let publish_duration = Histogram::new(seconds_buckets());
        registry.register_with_unit(
            "publish_duration",
            "Time from the start of an upload to its acknowledgement (the signed index served)",
            Unit::Seconds,
            publish_duration.clone(),
        );
        let deletes = Family::<OutcomeLabels, Counter>::default();
        registry.register("deletes", "Package deletions, by outcome", deletes.clone());
        let delete_duration = Histogram::new(seconds_buckets());
        registry.register_with_unit(
            "delete_duration",
            "Time from a delete request to its acknowledgement (the signed index served)",
            Unit::Seconds,
            delete_duration.clone(),
        );
        let copies = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "copies",
            "Package copies and moves between repositories, by outcome",
            copies.clone(),
        );
        let copy_duration = Histogram::new(seconds_buckets());
        registry.register_with_unit(
            "copy_duration",
            "Time from a copy request to its acknowledgement (the target's signed index \
             served, and for a move the source's)",
            Unit::Seconds,
            copy_duration.clone(),
        );
        let retention_deletions = Family::<RetentionLabels, Counter>::default();
        registry.register(
            "retention_deletions",
            "Package files deleted by retention rules, by reason",
            retention_deletions.clone(),
        );
        let webhook_attempts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts, by outcome (delivered, retry: to be sent again, \
             failed: given up)",
            webhook_attempts.clone(),
        );
        let webhook_attempt_duration = Histogram::new(seconds_buckets());
        registry.register_with_unit(
            "webhook_attempt_duration",
            "Time of one webhook delivery attempt, to the receiver's answer",
            Unit::Seconds,
            webhook_attempt_duration.clone(),
        );
        let index_builds = Family::<BuildLabels, Counter>::default();
        registry.register(
            "index_builds",
            "Index publications (every architecture a change touched, signed), by kind",
            index_builds.clone(),
        );
        let index_build_duration = Histogram::new(seconds_buckets());
        registry.register_with_unit(
            "index_build_duration",
            "Time to read, render, sign and store the indexes of one build",
            Unit::Seconds,
            index_build_duration.clone(),
        );
        let index_build_packages = Histogram::new(exponential_buckets(1.0, 4.0, 10));
        registry.register(
            "index_build_packages",
            "Packages in the repository an index build published",
            index_build_packages.clone(),
        );
        let publish_to_index = Histogram::new(seconds_buckets());
        registry.register_with_unit(
            "publish_to_index",
            "Lag from a package's row being committed to a signed index listing it being served",
            Unit::Seconds,
            publish_to_index.clone(),
        );
        let upstream = UpstreamMetrics {
            requests: Family::default(),
            bytes: Counter::default(),
            stale: Gauge::default(),
        };
        registry.register(
            "upstream_requests",
            "Requests of remote repositories' indexes and packages, by kind and result",
            upstream.requests.clone(),
        );
        registry.register_with_unit(
            "upstream_received",
            "Bytes of package files received from upstreams",
            Unit::Bytes,
            upstream.bytes.clone(),
        );
        registry.register(
            "upstream_stale_indexes",
            "Upstream indexes whose last refresh failed: the last verified one is served",
            upstream.stale.clone(),
        );
        let packages = Gauge::default();
        registry.register(
            "packages",
            "Package files in the database",
            packages.clone(),
        );
        let stored_bytes = Gauge::default();
        registry.register_with_unit(
            "stored",
            "Bytes of the distinct package files stored",
            Unit::Bytes,
            stored_bytes.clone(),
        );
        let repositories = Gauge::default();
        registry.register("repositories", "Repositories", repositories.clone());
        let owners = Gauge::default();
        registry.register("owners", "Owners (users and organisations)", owners.clone());
        let scrape_failures = Counter::default();
        registry.register(
            "scrape_database_failures",
            "Scrapes whose database figures could not be read (the gauges then keep their last values)",
            scrape_failures.clone(),
        );
        Metrics {
            registry,
            http_requests,
            downloads,
            publishes,
            publish_duration,
            deletes,
            delete_duration,
            copies,
            retention_deletions,
            webhook_attempts,
            webhook_attempt_duration,
            copy_duration,
            index_builds,
            index_build_duration,
            index_build_packages,
            publish_to_index,
            upstream,
            packages,
            stored_bytes,
            repositories,
            owners,
            scrape: tokio::sync::Mutex::new(()),
            scrape_errors: Mutex::new(0),
            scrape_failures,
        }
    }

    /// Counts one answered request (and a download, if it was one); `index_file` says
    /// whether its path names an `APKINDEX.tar.gz`. `route` is the router's own string
    /// for the matched pattern, the same allocation for every request it matches.
    ///
    /// Called for every request, downloads from memory included, so the counters are
    /// found through a cache of this thread (an HTTP worker's): a family lookup takes a
    /// lock shared by every thread, and its labels an allocation.
    pub fn request(&self, route: &str, index_file: bool, method: &axum::http::Method, status: u16) {
        let method = method_label(method);
        let key = (
            self as *const Metrics as usize,
            route.as_ptr() as usize,
            route.len(),
            method,
            status,
            index_file,
        );
        COUNTERS.with(|counters| {
            let mut counters = counters.borrow_mut();
            if counters.len() > MAX_CACHED_COUNTERS {
                counters.clear();
            }
            let (request, download) = counters.entry(key).or_insert_with(|| {
                let request = self
                    .http_requests
                    .get_or_create(&RequestLabels {
                        route: route.to_string(),
                        method,
                        status,
                    })
                    .clone();
                let download = matches!(method, "GET" | "HEAD")
                    .then(|| download_kind(route, index_file))
                    .flatten()
                    .map(|kind| {
                        self.downloads
                            .get_or_create(&DownloadLabels { kind, status })
                            .clone()
                    });
                (request, download)
            });
            request.inc();
            if let Some(download) = download {
                download.inc();
            }
        });
    }

    /// Counts one publish, delete or copy by the status it answers.
    pub fn change(
        family: &Family<OutcomeLabels, Counter>,
        duration: &Histogram,
        status: u16,
        took: Duration,
    ) {
        let outcome = match status {
            200..=299 => "ok",
            400..=499 => "refused",
            _ => "failed",
        };
        family.get_or_create(&OutcomeLabels { outcome }).inc();
        if outcome == "ok" {
            duration.observe(took.as_secs_f64());
        }
    }

    /// The text format, with the database figures read now.
    pub async fn render(&self, store: &dyn Store) -> String {
        let _one_at_a_time = self.scrape.lock().await;
        match store.table_counts().await {
            Ok(counts) => {
                self.packages.set(counts.packages);
                self.repositories.set(counts.repositories);
                self.owners.set(counts.owners);
            }
            Err(e) => self.scrape_failed(&e),
        }
        match store.stored_bytes().await {
            Ok(bytes) => {
                self.stored_bytes.set(bytes);
            }
            Err(e) => self.scrape_failed(&e),
        }
        match store.stale_upstream_indexes().await {
            Ok(stale) => {
                self.upstream.stale.set(stale);
            }
            Err(e) => self.scrape_failed(&e),
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }

    fn scrape_failed(&self, e: &dyn std::fmt::Display) {
        self.scrape_failures.inc();
        let mut errors = self
            .scrape_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *errors += 1;
        if *errors == 1 || (*errors).is_power_of_two() {
            tracing::warn!(error = %e, failures = *errors, "metrics: reading the database");
        }
    }
}

fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// What a GET matched by `route` downloads, if anything.
fn download_kind(route: &str, index_file: bool) -> Option<&'static str> {
    if route.ends_with("/{arch}/{file}") {
        // Index and package share the route.
        return Some(if index_file { "index" } else { "package" });
    }
    if route.ends_with("/key") || route.ends_with("/keys/{keyname}") {
        return Some("key");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_download_routes_count_as_downloads() {
        let file = "/{owner}/{branch}/{repository}/{arch}/{file}";
        assert_eq!(download_kind("/{owner}/key", false), Some("key"));
        assert_eq!(
            download_kind("/api/packages/{owner}/alpine/keys/{keyname}", false),
            Some("key")
        );
        assert_eq!(download_kind(file, true), Some("index"));
        assert_eq!(download_kind(file, false), Some("package"));
        assert_eq!(download_kind("/{owner}/{branch}/{repository}", false), None);
        assert_eq!(download_kind("/healthz", false), None);
    }
}
