//! alpine-registry: a self-hosted registry for Alpine Linux packages.
//!
//! `open` builds the application state from a configuration, `router` the HTTP
//! interface, `serve` runs it until shutdown. The CLI in `cli` drives the same pieces.

pub mod access;
pub mod apk;
pub mod blob;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod http;
pub mod indexer;
pub mod metrics;
pub mod names;
pub mod registry;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;

use crate::blob::{BlobStore, FsBlobStore, S3BlobStore};
use crate::clock::SharedClock;
use crate::config::{Config, DatabaseBackend, StorageBackend};
use crate::indexer::Indexer;
use crate::registry::keys::Keys;
use crate::store::{PostgresStore, SqliteStore, Store};

/// Everything a request handler needs; one pointer to clone (axum clones it for every
/// request).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What an [`AppState`] points to.
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
    /// Small package files kept in memory for downloads (`storage.memory_cache_bytes`).
    pub small_files: Arc<blob::small::SmallFiles>,
    pub keys: Arc<Keys>,
    pub indexer: Arc<Indexer>,
    /// What `/metrics` reports.
    pub metrics: Arc<metrics::Metrics>,
    /// Memory for the chunks of package files being sent (`server.download_buffer_bytes`).
    pub download_buffers: Arc<http::chunks::Budget>,
    /// Complete answers to anonymous downloads, served before routing (`http::ready`).
    pub ready: Arc<http::ready::ReadyAnswers>,
    /// Uploads hold it shared from blob commit to row insert; deletes and the orphan
    /// collector hold it exclusively while deciding whether one blob is still referenced.
    /// Inside it they hold the database's lock of the digest the same way
    /// (`Store::lock_blob`), which keeps other instances on a shared PostgreSQL database
    /// out too.
    pub blob_lock: Arc<tokio::sync::RwLock<()>>,
    pub throttle: Arc<access::Throttle>,
    pub password_checks: Arc<access::PasswordChecks>,
    /// Uploads being received, parsed and validated (`limits.max_concurrent_uploads`,
    /// `limits.max_concurrent_uploads_per_user`); one more is refused.
    pub uploads: Arc<registry::upload_slots::UploadSlots>,
    /// Package parses running at once: one per core, as parsing is CPU-bound.
    pub parses: Arc<tokio::sync::Semaphore>,
    /// Catalog queries (searches, package pages, indexes as JSON) running at once
    /// (`limits.max_concurrent_catalog_queries`, by default one per core).
    pub catalog_queries: Arc<tokio::sync::Semaphore>,
    /// What "now" is: token expiry, dates of rows and indexes, ages of files.
    pub clock: SharedClock,
    /// Retention runs of this process (`registry::retention`).
    pub retention: Arc<registry::retention::Retention>,
    /// The indexes dependencies may be resolved in besides the owner's
    /// (`repositories.dependency_sources`), as last read.
    pub dependency_sources: Arc<registry::dependency_sources::DependencySources>,
    /// Sends webhook deliveries (`registry::webhooks`).
    pub webhooks: Arc<registry::webhooks::Sender>,
    /// Remote repositories' upstream client and fetches (`registry::remote`).
    pub remote: Arc<registry::remote::Remotes>,
    /// Virtual repositories' members and builds (`registry::virtuals`).
    pub virtuals: Arc<registry::virtuals::Virtuals>,
    /// Views of remote and virtual repositories' histories (`registry::snapshots`).
    pub snapshots: Arc<registry::snapshots::Snapshots>,
}

/// Opens the database (migrating it), SQLite or PostgreSQL as `database.url` says, and
/// storage, creating directories as needed.
pub async fn open(config: Config) -> anyhow::Result<AppState> {
    open_with_clock(config, clock::system()).await
}

/// `open`, with `clock` for every date the registry reads or writes.
pub async fn open_with_clock(config: Config, clock: SharedClock) -> anyhow::Result<AppState> {
    let config = Arc::new(config);
    let backend = config.database_backend()?;
    if backend == DatabaseBackend::Postgres {
        require_master_key(&config)?;
        require_readable_tls_files(&config.database.url)?;
    }
    std::fs::create_dir_all(&config.storage.data_dir).with_context(|| {
        format!(
            "creating data directory {}",
            config.storage.data_dir.display()
        )
    })?;
    let url = config.database_url();
    let max_connections = config.database.max_connections;
    let store: Arc<dyn Store> = match backend {
        DatabaseBackend::Sqlite => Arc::new(
            SqliteStore::connect(&url, max_connections, clock.clone())
                .await
                .context("opening the database")?,
        ),
        DatabaseBackend::Postgres => Arc::new(
            PostgresStore::connect_with_timeout(
                &url,
                max_connections,
                Duration::from_secs(config.database.acquire_timeout_secs),
                clock.clone(),
            )
            .await
            .map_err(with_tls_advice)
            .with_context(|| {
                format!("opening the database {}", config::without_credentials(&url))
            })?,
        ),
    };
    let blobs: Arc<dyn BlobStore> = match config.storage.backend {
        StorageBackend::Fs => {
            Arc::new(FsBlobStore::new(config.blob_dir()).context("opening blob storage")?)
        }
        StorageBackend::S3 => Arc::new(
            S3BlobStore::new(&config.storage.s3, config.s3_staging_dir())
                .context("opening S3 blob storage (storage.s3)")?,
        ),
    };
    let master =
        registry::keys::MasterKey::load(&config.signing.master_key, &config.storage.data_dir)?;
    let keys = Arc::new(Keys::new(
        store.clone(),
        master,
        config.signing.key_bits,
        clock.clone(),
    ));
    let throttle = access::Throttle::new(
        config.auth.max_failures,
        config.auth.max_failures_per_address,
        access::PasswordChecks::permits_for(config.auth.max_concurrent_password_checks)
            .try_into()
            .unwrap_or(u32::MAX),
        Duration::from_secs(config.auth.failure_window_secs),
        Duration::from_millis(config.auth.failure_delay_ms),
    );
    // Instances sharing a PostgreSQL database count failures together, under keys salted
    // alike by all of them: from the master key they must share.
    let throttle = match backend {
        DatabaseBackend::Sqlite => throttle,
        DatabaseBackend::Postgres => throttle.shared(store.clone(), throttle_salt(&config)?),
    };
    let metrics = Arc::new(metrics::Metrics::new());
    let indexer = Arc::new(Indexer::new(
        store.clone(),
        keys.clone(),
        config.signature_algorithms()?,
        clock.clone(),
        metrics.clone(),
    ));
    Ok(AppState(Arc::new(Shared {
        store,
        blobs,
        small_files: Arc::new(blob::small::SmallFiles::new(
            config.storage.memory_cache_bytes,
        )),
        keys,
        indexer,
        metrics,
        download_buffers: http::chunks::Budget::new(config.server.download_buffer_bytes),
        ready: Arc::new(http::ready::ReadyAnswers::new(
            config.storage.memory_cache_bytes,
        )),
        blob_lock: Arc::new(tokio::sync::RwLock::new(())),
        throttle: Arc::new(throttle),
        password_checks: Arc::new(access::PasswordChecks::new(
            config.auth.max_concurrent_password_checks,
        )),
        uploads: registry::upload_slots::UploadSlots::new(
            config.limits.max_concurrent_uploads,
            config.uploads_per_user(),
        ),
        parses: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        )),
        catalog_queries: Arc::new(tokio::sync::Semaphore::new(
            match config.limits.max_concurrent_catalog_queries {
                0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
                n => n,
            },
        )),
        dependency_sources: Arc::new(registry::dependency_sources::DependencySources::new(
            &config,
        )),
        webhooks: Arc::new(
            registry::webhooks::Sender::new(&config.webhooks)
                .context("making the webhook sender's HTTP client")?,
        ),
        remote: Arc::new(registry::remote::Remotes::new(&config.upstream)?),
        virtuals: Arc::new(registry::virtuals::Virtuals::default()),
        snapshots: Arc::new(registry::snapshots::Snapshots::default()),
        config,
        clock,
        retention: Arc::default(),
    })))
}

/// The salt of the failure throttle's keys in a shared database: derived from the master
/// key, which every instance has and the database does not.
fn throttle_salt(config: &Config) -> anyhow::Result<[u8; 16]> {
    use sha2::{Digest, Sha256};
    let key =
        registry::keys::MasterKey::existing(&config.signing.master_key, &config.storage.data_dir)?
            .context("the master key is needed for the failure throttle")?;
    let mut hasher = Sha256::new();
    hasher.update(b"alpine-registry failure throttle salt\0");
    hasher.update(&key);
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&hasher.finalize()[..16]);
    Ok(salt)
}

/// How long `serve` waits at start for a database that cannot be reached (one starting
/// beside the registry, or restarting) before it gives up.
pub const START_PATIENCE: Duration = Duration::from_secs(60);

/// `open`, tried again while the database is unreachable, for up to `patience`; then the
/// error says so.
pub async fn open_when_reachable(config: Config, patience: Duration) -> anyhow::Result<AppState> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut wait = Duration::from_millis(500);
    loop {
        let err = match open(config.clone()).await {
            Err(e) if error::unreachable_backend_of(&e).is_some() => e,
            other => return other,
        };
        if tokio::time::Instant::now() + wait > deadline {
            return Err(err.context(format!(
                "the database stayed unreachable for {} s: is it running, and is \
                 database.url right?",
                patience.as_secs()
            )));
        }
        tracing::warn!(
            error = %format!("{err:#}"), retry_in_ms = wait.as_millis() as u64,
            "the database is unreachable; waiting for it"
        );
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// The files `database.url` names for TLS (`sslrootcert`, `sslcert`, `sslkey`) can be
/// read: one that cannot would fail every connection attempt as an I/O error, which is
/// taken for an unreachable server and waited out.
fn require_readable_tls_files(url: &str) -> anyhow::Result<()> {
    let Some((_, query)) = url.split_once('?') else {
        return Ok(());
    };
    let parameters: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .context("database.url: the query (after ?) is not key=value&...")?;
    for (key, value) in parameters {
        let names_a_file = matches!(
            key.as_str(),
            "sslrootcert"
                | "ssl-root-cert"
                | "ssl-ca"
                | "sslcert"
                | "ssl-cert"
                | "sslkey"
                | "ssl-key"
        );
        // A value that is the PEM itself names no file.
        if names_a_file && !value.trim_start().starts_with("-----BEGIN") {
            std::fs::File::open(&value)
                .with_context(|| format!("database.url: {key} {value} cannot be read"))?;
        }
    }
    Ok(())
}

/// A TLS handshake that refused the database server: says what to check.
fn with_tls_advice(err: store::StoreError) -> anyhow::Error {
    let refused = matches!(
        &err,
        store::StoreError::Database(sqlx::Error::Io(io)) if store::is_tls_refusal(io)
    );
    let err = anyhow::Error::from(err);
    if refused {
        err.context(
            "the TLS handshake with the database server failed: check that sslrootcert in \
             database.url names the CA that signed the server's certificate, and (with \
             sslmode=verify-full) that the host in database.url is a name the certificate \
             carries",
        )
    } else {
        err
    }
}

/// Environment variable of `signing.master_key`.
const MASTER_KEY_ENV: &str = "ALPINE_REGISTRY__SIGNING__MASTER_KEY";

/// Several instances may share a PostgreSQL database, and every one of them must open the
/// owner keys stored there: a key file of each instance's own (`<data_dir>/master.key`)
/// would let each encrypt keys the others cannot read. So the key must be configured.
fn require_master_key(config: &Config) -> anyhow::Result<()> {
    if !config.signing.master_key.trim().is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "signing.master_key is not set: with a PostgreSQL database (which several instances \
         may share) every instance must use the same master key, so it must be configured \
         rather than taken from <data_dir>/master.key. Generate one with \
         `head -c 32 /dev/urandom | base64` and set it as signing.master_key in the \
         configuration file or as {MASTER_KEY_ENV} on every instance (a registry that has \
         run with {}/master.key already: use that file's content)",
        config.storage.data_dir.display()
    )
}

/// The application router.
pub fn build_app(state: AppState) -> Router {
    http::router(state)
}

/// Work done when the server starts: staged files of interrupted uploads are removed,
/// indexes behind their wanted generation rebuilt, and orphan blobs older than the grace
/// period collected. Run before the listener accepts anything.
///
/// On SQLite the database, and so the storage, is this process's alone: every staged file
/// is left over from an interrupted upload; so it is with S3, whose uploads are staged in
/// the instance's own data directory. On PostgreSQL with a blob directory, other instances
/// may share it and be receiving uploads into it right now: only staged files untouched
/// for `storage.orphan_grace_secs` are removed (an upload in progress writes to its file as
/// the body arrives).
pub async fn recover(state: &AppState) -> anyhow::Result<()> {
    // With S3, uploads are staged in this instance's own data directory.
    let shared_staging = state.config.database_backend()? == DatabaseBackend::Postgres
        && state.config.storage.backend == config::StorageBackend::Fs;
    let staged_grace = if shared_staging {
        Duration::from_secs(state.config.storage.orphan_grace_secs)
    } else {
        Duration::ZERO
    };
    registry::fsck::collect_staged(state, staged_grace).await?;
    remove_legacy_tmp(
        &state.config.storage.data_dir,
        staged_grace,
        state.clock.now(),
    )
    .await?;
    let rebuilt = state.indexer.rebuild_stale().await?;
    if rebuilt > 0 {
        tracing::info!(rebuilt, "rebuilt stale indexes");
    }
    registry::fsck::collect_orphans(
        state,
        Duration::from_secs(state.config.storage.orphan_grace_secs),
    )
    .await?;
    Ok(())
}

/// Versions that staged uploads in `<data_dir>/tmp` may have left files of interrupted
/// uploads there: those untouched for `grace` are removed (an instance of such a version
/// sharing the data directory may still be writing the others), then the directory once
/// it is empty.
async fn remove_legacy_tmp(
    data_dir: &std::path::Path,
    grace: Duration,
    now: SystemTime,
) -> anyhow::Result<()> {
    let tmp = data_dir.join("tmp");
    let mut entries = match tokio::fs::read_dir(&tmp).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", tmp.display())),
    };
    let cutoff = now.checked_sub(grace).unwrap_or(UNIX_EPOCH);
    let mut kept = 0;
    while let Some(entry) = entries.next_entry().await? {
        if !entry.file_type().await?.is_file() {
            continue;
        }
        let old = match entry.metadata().await.and_then(|m| m.modified()) {
            Ok(modified) => grace.is_zero() || modified < cutoff,
            // Removed meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", tmp.display())),
        };
        if old {
            match tokio::fs::remove_file(entry.path()).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        } else {
            kept += 1;
        }
    }
    if kept > 0 {
        return Ok(());
    }
    if let Err(e) = tokio::fs::remove_dir(&tmp).await {
        tracing::warn!(error = %e, dir = %tmp.display(), "could not remove the old upload directory");
    }
    Ok(())
}

/// Serves on `listener` until `shutdown` completes, then lets in-flight requests finish
/// (up to `server.shutdown_grace_secs`). Connections are capped and idle ones closed: see
/// `http::connections`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Keys are also made on first use.
    state.keys.spawn_create_missing();
    registry::fsck::spawn_orphan_collector(state.clone());
    registry::keyring::spawn_catch_up(state.clone());
    if state.config.database_backend().ok() == Some(DatabaseBackend::Postgres) {
        spawn_abandoned_index_rebuilder(state.clone());
    }
    spawn_throttle_pruner(state.throttle.clone());
    spawn_session_pruner(state.clone());
    registry::audit::spawn_pruner(state.clone());
    registry::retention::spawn_schedule(state.clone());
    registry::dependency_sources::spawn_refresher(state.clone());
    registry::webhooks::spawn_sender(state.clone());
    let config = state.config.clone();
    let early = {
        let state = state.clone();
        http::connections::Early::new(move |method, path, headers| {
            state.ready.answer(&state, method, path, headers)
        })
    };
    http::connections::serve(listener, build_app(state), Some(early), &config, shutdown).await
}

/// How often an instance on PostgreSQL looks for index builds that no instance is doing.
const ABANDONED_INDEX_CHECK: Duration = Duration::from_secs(10);

/// On PostgreSQL, an instance may die between committing a change and publishing its
/// index while the others keep serving, and no restart need follow to rebuild it (as
/// `recover` does): every instance looks for such a lag on a timer and rebuilds it.
fn spawn_abandoned_index_rebuilder(state: AppState) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(ABANDONED_INDEX_CHECK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = std::collections::HashMap::new();
        loop {
            ticks.tick().await;
            match state.indexer.rebuild_abandoned(&mut seen).await {
                Ok(0) => {}
                Ok(rebuilt) => tracing::info!(rebuilt, "rebuilt indexes left behind"),
                Err(e) if error::unreachable_backend_of(&e).is_some() => {
                    tracing::warn!(error = %format!("{e:#}"), "rebuilding indexes left behind: skipped")
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "rebuilding indexes left behind")
                }
            }
        }
    });
}

/// Forgets expired authentication failures on a timer, so the throttle's memory follows
/// recent attempts only.
fn spawn_throttle_pruner(throttle: Arc<access::Throttle>) {
    let weak = Arc::downgrade(&throttle);
    let period = throttle.prune_interval();
    drop(throttle);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(throttle) = weak.upgrade() else {
                break;
            };
            if let Err(e) = throttle.prune().await {
                tracing::warn!(error = %e, "pruning authentication failures");
            }
        }
    });
}

/// Deletes expired login sessions on a timer (every instance on a shared database does;
/// the deletes are idempotent).
fn spawn_session_pruner(state: AppState) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(access::sessions::prune_interval(&state));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match access::sessions::prune(&state).await {
                Ok(0) => {}
                Ok(pruned) => tracing::debug!(pruned, "pruned expired login sessions"),
                Err(e) if e.is_backend_unavailable() => {
                    tracing::warn!(error = %e, "pruning login sessions: the database is unreachable")
                }
                Err(e) => tracing::error!(error = %e, "pruning login sessions"),
            }
        }
    });
}

/// Resolves on SIGTERM or ctrl-c.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    // Registered now, not when first awaited: a SIGTERM that comes as soon as the port
    // accepts connections must stop the server gracefully, not kill it.
    #[cfg(unix)]
    let (mut terminate, mut interrupt) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        tokio::select! {
            _ = received(&mut terminate) => {},
            _ = received(&mut interrupt) => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    }
}

/// Resolves when `signal` arrives; never when it could not be registered.
#[cfg(unix)]
async fn received(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}
