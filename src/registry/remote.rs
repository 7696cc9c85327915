//! Remote repositories: caching proxies of an upstream apk repository (such as
//! `https://dl-cdn.alpinelinux.org/alpine/v3.21/main`).
//!
//! - The upstream's `{arch}/APKINDEX.tar.gz` is fetched when first asked for and again once
//!   it is older than the repository's refresh period (a conditional request). It is
//!   stored only when one of its signatures verifies with the upstream's keys, and served
//!   with its content unchanged, signed again with the owner's keys (`Indexer::sign`), so
//!   clients trust the registry's key only and still check every package against the
//!   upstream's `C:`. An index that cannot be fetched or verified is logged and counted;
//!   the last verified one keeps being served (it is then stale).
//! - A package file is fetched when first asked for, streamed to the client while it is
//!   staged, and checked against the index before anything is stored and before its last
//!   bytes are sent (size, and the `C:` identity of its control member): a file that does
//!   not match breaks the client's transfer and is never stored. Once stored it is served
//!   from blob storage. Within one instance, concurrent first requests for one file make
//!   one upstream request (the others wait for it, then read what it stored).
//! - Everything served is in the database and blob store, so every instance on one
//!   database serves the same verified index and the same cached files.
//! - A remote repository takes no uploads, deletes or copies into it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::apk::upstream::{entries, verified_unsigned, UpstreamEntry};
use crate::config::UpstreamConfig;
use crate::error::{AppError, AppResult};
use crate::metrics::UpstreamLabels;
use crate::names::{Arch, PackageFile, RepoAddress};
use crate::registry::audit::Actor;
use crate::store::{
    LockMode, Owner, Repository, StoreError, Upstream, UpstreamFile, UpstreamIndex, UpstreamKey,
};
use crate::AppState;

/// What `create` makes a repository a proxy of.
#[derive(Debug, Clone)]
pub struct NewRemote {
    /// The upstream repository's base URL.
    pub url: String,
    /// Its public keys (PEM) under their apk key names (the key files' names).
    pub keys: Vec<UpstreamKey>,
    /// Seconds after which an index is fetched again; None for
    /// `upstream.default_refresh_secs`.
    pub refresh_secs: Option<u64>,
}

/// Remote repositories as this process serves them: the kind of each repository id (which
/// never changes), the HTTP client, and who is fetching what.
pub struct Remotes {
    client: reqwest::Client,
    config: UpstreamConfig,
    kinds: Mutex<HashMap<i64, Option<Arc<Upstream>>>>,
    refreshing: Locks<(i64, String)>,
    fetching: Locks<(i64, String, String)>,
    /// The `Packages.adb` made of each architecture's upstream index, under the upstream
    /// index's sha256 and the names of the keys that signed it.
    adb: Mutex<HashMap<(i64, String), Arc<RemoteAdb>>>,
}

/// The apk v3 index of a remote repository's upstream index.
pub struct RemoteAdb {
    /// What it was made of: the upstream index's sha256 and the signing key names.
    made_of: String,
    /// The file and its sha256, or why a package cannot be written in that format.
    pub adb: Result<(Bytes, String), String>,
    /// When the upstream index it was made of was signed by the owner (`Last-Modified`).
    pub modified_ms: i64,
}

/// One async lock per key, dropped when nobody holds or waits for it.
pub(crate) struct Locks<K>(Mutex<HashMap<K, Weak<tokio::sync::Mutex<()>>>>);

impl<K: std::hash::Hash + Eq + Clone> Locks<K> {
    pub(crate) fn new() -> Self {
        Locks(Mutex::new(HashMap::new()))
    }

    pub(crate) fn of(&self, key: &K) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = map.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        map.retain(|_, lock| lock.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(key.clone(), Arc::downgrade(&lock));
        lock
    }
}

impl Remotes {
    pub fn new(config: &UpstreamConfig) -> anyhow::Result<Remotes> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs))
            .read_timeout(Duration::from_secs(config.read_timeout_secs))
            .user_agent(concat!("alpine-registry/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client of remote repositories")?;
        Ok(Remotes {
            client,
            config: config.clone(),
            kinds: Mutex::new(HashMap::new()),
            refreshing: Locks::new(),
            fetching: Locks::new(),
            adb: Mutex::new(HashMap::new()),
        })
    }
}

fn count(state: &AppState, kind: &'static str, result: &'static str) {
    state
        .metrics
        .upstream
        .requests
        .get_or_create(&UpstreamLabels { kind, result })
        .inc();
}

/// The upstream of repository `id`, None when it is not remote.
pub async fn upstream_of(state: &AppState, id: i64) -> AppResult<Option<Arc<Upstream>>> {
    if let Some(kind) = state
        .remote
        .kinds
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id)
    {
        return Ok(kind.clone());
    }
    // A repository is remote from the transaction that creates it, and ids are never
    // reused: what is read once holds for as long as the id exists.
    let kind = state.store.upstream(id).await?.map(Arc::new);
    state
        .remote
        .kinds
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, kind.clone());
    Ok(kind)
}

/// The answer to a change of the packages of a remote repository.
fn read_only(at: &RepoAddress, what: &str) -> AppError {
    AppError::MethodNotAllowed(format!(
        "{at} is a remote repository (a cache of its upstream): {what} into it are refused; \
         publish into a repository of your own"
    ))
}

/// Refuses uploads, deletes and copies into a remote or virtual repository.
pub async fn refuse_changes(
    state: &AppState,
    owner: &Owner,
    at: &RepoAddress,
    what: &str,
) -> AppResult<()> {
    let repo_ref = crate::registry::repo_ref(owner.id, at);
    match state.store.repository(&repo_ref).await? {
        Some(repository) => refuse_into(state, &repository, at, what).await,
        None => Ok(()),
    }
}

/// `refuse_changes` of a repository read already.
pub async fn refuse_into(
    state: &AppState,
    repository: &Repository,
    at: &RepoAddress,
    what: &str,
) -> AppResult<()> {
    match crate::registry::virtuals::kind_of(state, repository.id).await? {
        crate::registry::virtuals::Kind::Hosted => Ok(()),
        crate::registry::virtuals::Kind::Remote(_) => Err(read_only(at, what)),
        crate::registry::virtuals::Kind::Virtual(_) => {
            Err(crate::registry::virtuals::read_only(at, what))
        }
    }
}

/// Checks what `create` is given: an http(s) URL and at least one readable RSA key.
fn check_new(new: &NewRemote) -> AppResult<()> {
    let url = new.url.trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(['?', '#']) {
        return Err(AppError::BadRequest(format!(
            "the upstream {:?} is not an http(s) URL of a repository (such as \
             https://dl-cdn.alpinelinux.org/alpine/v3.21/main)",
            new.url
        )));
    }
    if new.keys.is_empty() {
        return Err(AppError::BadRequest(
            "an upstream needs at least one key its indexes are signed with (--upstream-key)"
                .into(),
        ));
    }
    for key in &new.keys {
        if key.name.is_empty() || key.name.contains(['/', '\0']) {
            return Err(AppError::BadRequest(format!(
                "{:?} is not a key name (the key file's name, as in /etc/apk/keys)",
                key.name
            )));
        }
        crate::apk::sign::public_key_fingerprint(&key.pem).map_err(|_| {
            AppError::BadRequest(format!(
                "the upstream key {} is not an RSA public key",
                key.name
            ))
        })?;
    }
    if new.refresh_secs == Some(0) {
        return Err(AppError::BadRequest(
            "the refresh period must be at least one second".into(),
        ));
    }
    Ok(())
}

/// Creates the remote repository `at` of an existing owner.
pub async fn create(
    state: &AppState,
    actor: &Actor,
    at: &RepoAddress,
    new: &NewRemote,
) -> AppResult<Repository> {
    check_new(new)?;
    let owner = crate::registry::accounts::owner(state, at.owner.as_str()).await?;
    let refresh_secs = new
        .refresh_secs
        .unwrap_or(state.config.upstream.default_refresh_secs);
    let upstream = Upstream {
        repository_id: 0,
        url: new.url.trim_end_matches('/').to_string(),
        keys: new.keys.clone(),
        refresh_secs: i64::try_from(refresh_secs).unwrap_or(i64::MAX),
    };
    let entry = actor.entry(
        state,
        "repository.create",
        Some(&owner),
        at.to_string(),
        serde_json::json!({
            "upstream": upstream.url,
            "upstream_keys": upstream.keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
            "refresh_secs": refresh_secs,
        }),
    );
    state
        .store
        .create_remote_repository(
            &crate::registry::repo_ref(owner.id, at),
            &upstream,
            Some(&entry),
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                AppError::Conflict(format!("repository {at} already exists"))
            }
            other => other.into(),
        })
}

/// The index of `arch` to serve: the upstream's last verified one, signed with the owner's
/// keys, fetched or refreshed first when it is due. 404 for an architecture upstream has
/// no index of; 502 when upstream fails and nothing verified is stored. Its listing is in
/// the repository's history (`registry::snapshots`) by the time it is returned.
pub async fn index(
    state: &AppState,
    owner: &Owner,
    repo: &Repository,
    upstream: &Upstream,
    arch: &Arch,
) -> AppResult<UpstreamIndex> {
    let index = current_index(state, owner, repo, upstream, arch).await?;
    crate::registry::snapshots::record_remote(state, repo, &index).await?;
    Ok(index)
}

/// The apk v3 index (`Packages.adb`) of `arch`: the packages of the upstream index `index`
/// serves, in its order, signed with the owner's keys. Made once per upstream index and
/// set of keys in each process (the same bytes in every process: the rendering and the
/// signatures are deterministic).
pub async fn adb_index(
    state: &AppState,
    owner: &Owner,
    repo: &Repository,
    upstream: &Upstream,
    arch: &Arch,
) -> AppResult<Arc<RemoteAdb>> {
    let index = index(state, owner, repo, upstream, arch).await?;
    let keys = state.indexer.signing_key_names(owner).await?.join(",");
    let made_of = format!("{} {keys}", index.sha256);
    let key = (repo.id, arch.to_string());
    let cached = |state: &AppState| {
        state
            .remote
            .adb
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .filter(|adb| adb.made_of == made_of)
            .cloned()
    };
    if let Some(adb) = cached(state) {
        return Ok(adb);
    }
    let lock = state.remote.refreshing.of(&key);
    let _one_at_a_time = lock.lock().await;
    if let Some(adb) = cached(state) {
        return Ok(adb);
    }
    let content = index.content.clone();
    let limit = state.config.upstream.max_index_bytes;
    let entries = tokio::task::spawn_blocking(move || {
        let (_, unsigned) = crate::apk::sign::split_signed(&content)?;
        crate::apk::upstream::stanzas(unsigned, limit)
    })
    .await
    .context("reading the upstream index")?
    .context("reading the upstream index")?;
    let place = format!("{}/{}/{}", repo.owner_name, repo.branch, repo.name);
    let rendered = crate::registry::virtuals::render(state, owner, &place, &entries).await?;
    let adb = Arc::new(RemoteAdb {
        made_of,
        adb: rendered.adb.map(|adb| {
            let sha256 = hex::encode(Sha256::digest(&adb));
            (Bytes::from(adb), sha256)
        }),
        modified_ms: index.signed_ms,
    });
    state
        .remote
        .adb
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, adb.clone());
    Ok(adb)
}

/// `index`, without recording its listing.
async fn current_index(
    state: &AppState,
    owner: &Owner,
    repo: &Repository,
    upstream: &Upstream,
    arch: &Arch,
) -> AppResult<UpstreamIndex> {
    let arch = arch.as_str();
    let stored = state.store.upstream_index(repo.id, arch).await?;
    let now = state.clock.unix_ms();
    let due = |index: &Option<UpstreamIndex>| {
        index.as_ref().is_none_or(|i| {
            now.saturating_sub(i.checked_ms) >= upstream.refresh_secs.saturating_mul(1000)
        })
    };
    let stored = if due(&stored) {
        let lock = state.remote.refreshing.of(&(repo.id, arch.to_string()));
        // While another request refreshes it, the stored index is served at once: a slow
        // upstream holds up one request, not every client.
        let _one_at_a_time = match (lock.try_lock(), &stored) {
            (Ok(guard), _) => guard,
            (Err(_), Some(_)) => return sign_current(state, owner, stored).await,
            (Err(_), None) => lock.lock().await,
        };
        // Another request may have refreshed it meanwhile (or another instance).
        let again = state.store.upstream_index(repo.id, arch).await?;
        if due(&again) {
            refresh(state, owner, repo, upstream, arch, again).await?
        } else {
            again
        }
    } else {
        stored
    };
    if stored.is_none() {
        return Err(AppError::NotFound(format!(
            "the upstream of {}/{}/{} has no index for {arch}",
            repo.owner_name, repo.branch, repo.name
        )));
    }
    sign_current(state, owner, stored).await
}

/// `index` signed with the owner's keys of now: signed again when they changed since.
async fn sign_current(
    state: &AppState,
    owner: &Owner,
    index: Option<UpstreamIndex>,
) -> AppResult<UpstreamIndex> {
    let Some(mut index) = index else {
        return Err(AppError::NotFound("no upstream index".into()));
    };
    let names = state.indexer.signing_key_names(owner).await?.join(",");
    if index.signed_keys != names {
        let (_, unsigned) = crate::apk::sign::split_signed(&index.content)
            .context("a stored upstream index lost its signatures")?;
        let (signed, names) = state.indexer.sign(owner, unsigned.to_vec()).await?;
        index.signed_sha256 = hex::encode(Sha256::digest(&signed));
        index.signed = signed;
        index.signed_keys = names.join(",");
        index.signed_ms = state.clock.unix_ms();
        state.store.save_upstream_index(&index).await?;
    }
    Ok(index)
}

/// Why an upstream request failed, with what is logged.
#[derive(Debug)]
enum Failure {
    /// Upstream has no such file (404 or 410).
    Missing,
    Other(String),
}

/// Asks upstream for the index of `arch` (conditionally when one is stored), and stores
/// what verifies. Returns the index to serve, None when upstream has none.
async fn refresh(
    state: &AppState,
    owner: &Owner,
    repo: &Repository,
    upstream: &Upstream,
    arch: &str,
    stored: Option<UpstreamIndex>,
) -> AppResult<Option<UpstreamIndex>> {
    let now = state.clock.unix_ms();
    let url = format!("{}/{arch}/APKINDEX.tar.gz", upstream.url);
    let description = format!("{}/{}/{}", repo.owner_name, repo.branch, repo.name);
    let outcome = fetch_index(state, owner, upstream, arch, &url, stored.as_ref(), now).await;
    match outcome {
        Ok(Some(fresh)) => {
            count(state, "index", "fetched");
            state.store.save_upstream_index(&fresh).await?;
            tracing::info!(repository = %description, arch, url = %url, "upstream index fetched");
            Ok(Some(fresh))
        }
        Ok(None) => {
            count(state, "index", "not_modified");
            state
                .store
                .upstream_checked(repo.id, arch, now, true, None)
                .await?;
            Ok(state.store.upstream_index(repo.id, arch).await?)
        }
        Err(Failure::Missing) if stored.is_none() => Ok(None),
        Err(failure) => {
            count(state, "index", "error");
            let reason = match failure {
                Failure::Missing => "answered 404: it has no index for this architecture".into(),
                Failure::Other(reason) => reason,
            };
            match stored {
                Some(_) => {
                    tracing::warn!(
                        repository = %description, arch, url = %url, error = %reason,
                        "upstream index is stale: the last verified index is served"
                    );
                    state
                        .store
                        .upstream_checked(repo.id, arch, now, false, Some(&reason))
                        .await?;
                    Ok(state.store.upstream_index(repo.id, arch).await?)
                }
                None => {
                    tracing::warn!(
                        repository = %description, arch, url = %url, error = %reason,
                        "upstream index cannot be fetched"
                    );
                    Err(AppError::BadGateway(format!(
                        "the upstream index of {description} for {arch} cannot be fetched \
                         or verified ({reason}); try again later"
                    )))
                }
            }
        }
    }
}

/// The upstream's index, verified and signed for the owner; None when upstream says it is
/// unchanged since `stored`.
async fn fetch_index(
    state: &AppState,
    owner: &Owner,
    upstream: &Upstream,
    arch: &str,
    url: &str,
    stored: Option<&UpstreamIndex>,
    now: i64,
) -> Result<Option<UpstreamIndex>, Failure> {
    let config = &state.remote.config;
    let mut request = state
        .remote
        .client
        .get(url)
        .timeout(Duration::from_secs(config.index_timeout_secs));
    if let Some(stored) = stored {
        if let Some(etag) = &stored.etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        if let Some(date) = &stored.last_modified {
            request = request.header(reqwest::header::IF_MODIFIED_SINCE, date);
        }
    }
    let response = request
        .send()
        .await
        .map_err(|e| Failure::Other(format!("fetching: {e}")))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_MODIFIED && stored.is_some() {
        return Ok(None);
    }
    if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
        return Err(Failure::Missing);
    }
    if !status.is_success() {
        return Err(Failure::Other(format!("answered {status}")));
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let etag = header(reqwest::header::ETAG);
    let last_modified = header(reqwest::header::LAST_MODIFIED);
    let max = config.max_index_bytes;
    let mut body = response.bytes_stream();
    let mut content = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Failure::Other(format!("fetching: {e}")))?;
        if (content.len() + chunk.len()) as u64 > max {
            return Err(Failure::Other(format!(
                "larger than upstream.max_index_bytes ({max})"
            )));
        }
        content.extend_from_slice(&chunk);
    }
    // Verified with the upstream's keys, and readable, before anything is kept.
    let keys = upstream.keys.clone();
    let (content, unsigned) = tokio::task::spawn_blocking(move || {
        let trusted: Vec<crate::apk::upstream::UpstreamKey<'_>> = keys
            .iter()
            .map(|k| crate::apk::upstream::UpstreamKey {
                pem: &k.pem,
                name: &k.name,
            })
            .collect();
        let (_, unsigned) = verified_unsigned(&content, &trusted)?;
        entries(unsigned, max)?;
        let unsigned = unsigned.to_vec();
        crate::apk::ApkResult::Ok((content, unsigned))
    })
    .await
    .map_err(|e| Failure::Other(format!("verifying: {e}")))?
    .map_err(|e| Failure::Other(format!("refused: {e}")))?;
    let (signed, names) = state
        .indexer
        .sign(owner, unsigned)
        .await
        .map_err(|e| Failure::Other(format!("signing: {e:#}")))?;
    Ok(Some(UpstreamIndex {
        repository_id: upstream.repository_id,
        arch: arch.to_string(),
        sha256: hex::encode(Sha256::digest(&content)),
        content,
        etag,
        last_modified,
        verified_ms: now,
        checked_ms: now,
        error: None,
        signed_sha256: hex::encode(Sha256::digest(&signed)),
        signed,
        signed_keys: names.join(","),
        signed_ms: now,
    }))
}

/// The entry of `file` in a stored upstream index.
pub(crate) async fn entry_of(
    index: &UpstreamIndex,
    file: &PackageFile,
    max_bytes: u64,
) -> AppResult<Option<UpstreamEntry>> {
    let content = index.content.clone();
    let name = file.as_str().to_string();
    let found = tokio::task::spawn_blocking(move || {
        let (_, unsigned) = crate::apk::sign::split_signed(&content)?;
        crate::apk::ApkResult::Ok(entries(unsigned, max_bytes)?.remove(&name))
    })
    .await
    .context("index reading task")?
    .context("reading a stored upstream index")?;
    Ok(found)
}

/// A package file of a remote repository, to be served.
pub enum Fetched {
    /// Stored already (or by the request this one waited for): served from blob storage.
    Stored(UpstreamFile),
    /// Being fetched: its bytes as they come from upstream, `size` in all. The stream
    /// ends with an error instead of its last bytes when the file does not match the
    /// index (nothing is stored then).
    Streaming {
        size: u64,
        body: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    },
}

/// The package file `file` of `arch` of a remote repository: the stored one, or fetched
/// from upstream when the index lists it. 404 when the index does not list it.
pub async fn file(
    state: &AppState,
    owner: &Owner,
    repo: &Repository,
    upstream: &Upstream,
    arch: &Arch,
    file: &PackageFile,
) -> AppResult<Fetched> {
    if let Some(stored) = state
        .store
        .upstream_file(repo.id, arch.as_str(), file.as_str())
        .await?
    {
        count(state, "package", "hit");
        return Ok(Fetched::Stored(stored));
    }
    let index = index(state, owner, repo, upstream, arch).await?;
    let not_listed = || {
        AppError::NotFound(format!(
            "no package file {arch}/{file} in {}/{}/{} (its upstream index does not list it)",
            repo.owner_name, repo.branch, repo.name
        ))
    };
    let entry = entry_of(&index, file, state.config.upstream.max_index_bytes)
        .await?
        .ok_or_else(not_listed)?;
    let limit = state.config.upstream.max_package_bytes;
    if entry.size > limit {
        return Err(AppError::BadGateway(format!(
            "{arch}/{file} is {} bytes upstream, more than upstream.max_package_bytes ({limit})",
            entry.size
        )));
    }
    let key = (repo.id, arch.to_string(), file.to_string());
    let lock = state.remote.fetching.of(&key);
    let guard = lock.lock_owned().await;
    // The request this one waited for may have stored it.
    if let Some(stored) = state
        .store
        .upstream_file(repo.id, arch.as_str(), file.as_str())
        .await?
    {
        count(state, "package", "hit");
        return Ok(Fetched::Stored(stored));
    }
    count(state, "package", "miss");
    let url = format!("{}/{arch}/{file}", upstream.url);
    // Asked before answering: an upstream that cannot be reached or refuses is a 502,
    // not a broken transfer.
    let response =
        match state.remote.client.get(&url).send().await {
            Ok(response) if response.status().is_success() => response,
            failed => {
                count(state, "package", "error");
                let reason = match failed {
                    Ok(response) => format!("answered {}", response.status()),
                    Err(e) => format!("fetching: {e}"),
                };
                tracing::warn!(url = %url, error = %reason, "upstream package cannot be fetched");
                return Err(AppError::BadGateway(format!(
                "{arch}/{file} cannot be fetched from the upstream of {}/{}/{} ({}); try again \
                 later",
                repo.owner_name,
                repo.branch,
                repo.name,
                if reason.starts_with("answered") { reason.as_str() } else { "unreachable" }
            )));
            }
        };
    let (sender, body) = tokio::sync::mpsc::channel(16);
    let size = entry.size;
    let job = Job {
        state: state.clone(),
        url,
        description: format!(
            "{}/{}/{}/{arch}/{file}",
            repo.owner_name, repo.branch, repo.name
        ),
        row: UpstreamFile {
            repository_id: repo.id,
            arch: arch.to_string(),
            filename: file.to_string(),
            sha256: String::new(),
            size: entry.size as i64,
            checksum: entry.checksum.clone(),
            stored_ms: 0,
        },
        entry,
    };
    // The fetch goes on when the client leaves: the file is cached for the next one.
    tokio::spawn(async move {
        let _only_fetch = guard;
        job.run(response, sender).await;
    });
    Ok(Fetched::Streaming { size, body })
}

/// One fetch of a package file from upstream into blob storage and to a client.
struct Job {
    state: AppState,
    url: String,
    description: String,
    entry: UpstreamEntry,
    row: UpstreamFile,
}

/// Where the bytes go besides storage: the client that asked, while it takes them.
struct Client {
    sender: Option<tokio::sync::mpsc::Sender<std::io::Result<Bytes>>>,
    wait: Duration,
}

impl Client {
    async fn send(&mut self, item: std::io::Result<Bytes>) {
        let Some(sender) = &self.sender else { return };
        // A client that takes nothing for this long is left behind (its transfer breaks);
        // the fetch goes on for the next one.
        match tokio::time::timeout(self.wait, sender.send(item)).await {
            Ok(Ok(())) => {}
            _ => self.sender = None,
        }
    }
}

impl Job {
    async fn run(
        self,
        response: reqwest::Response,
        sender: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    ) {
        let mut client = Client {
            sender: Some(sender),
            wait: Duration::from_secs(self.state.config.upstream.read_timeout_secs),
        };
        match self.fetch(response, &mut client).await {
            Ok(()) => {}
            Err(reason) => {
                count(&self.state, "package", "error");
                tracing::warn!(
                    file = %self.description, url = %self.url, error = %reason,
                    "upstream package refused: nothing is stored or served"
                );
                client
                    .send(Err(std::io::Error::other(
                        "the upstream file does not match its index",
                    )))
                    .await;
            }
        }
    }

    /// Stages and checks the file `response` brings, stores it, and sends its last bytes only once
    /// it is stored.
    async fn fetch(&self, response: reqwest::Response, client: &mut Client) -> Result<(), String> {
        let state = &self.state;
        let expected = self.entry.size;
        if response
            .content_length()
            .is_some_and(|length| length != expected)
        {
            return Err(format!(
                "its length is {:?}, the index says {expected}",
                response.content_length()
            ));
        }
        let mut staged = state
            .blobs
            .stage()
            .await
            .map_err(|e| format!("staging: {e}"))?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut body = response.bytes_stream();
        // The newest chunk is held back until the one after it comes, so the last bytes
        // reach the client only once the whole file is checked and stored.
        let mut held: Option<Bytes> = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("fetching: {e}"))?;
            size = size.saturating_add(chunk.len() as u64);
            if size > expected {
                return Err(format!("longer than the {expected} bytes the index says"));
            }
            hasher.update(&chunk);
            staged
                .write_all(&chunk)
                .await
                .map_err(|e| format!("staging: {e}"))?;
            state.metrics.upstream.bytes.inc_by(chunk.len() as u64);
            if let Some(previous) = held.replace(chunk) {
                client.send(Ok(previous)).await;
            }
        }
        if size != expected {
            return Err(format!("{size} bytes, the index says {expected}"));
        }
        staged.flush().await.map_err(|e| format!("staging: {e}"))?;
        let path = staged.path().to_path_buf();
        let limits = state.config.apk_limits();
        let parsed = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path)?;
            crate::apk::package::parse_package(std::io::BufReader::new(file), &limits)
                .map_err(std::io::Error::other)
        })
        .await
        .map_err(|e| format!("checking: {e}"))?
        .map_err(|e| format!("not a package the index lists: {e}"))?;
        if parsed.checksum != self.entry.checksum {
            return Err(format!(
                "its control member is {}, the index says {}",
                parsed.checksum, self.entry.checksum
            ));
        }
        let sha256 = hex::encode(hasher.finalize());
        let row = UpstreamFile {
            sha256: sha256.clone(),
            stored_ms: state.clock.unix_ms(),
            ..self.row.clone()
        };
        {
            // As a publish does: orphan collection cannot take the blob before its row.
            let _blob_guard = state.blob_lock.read().await;
            let _instances = state
                .store
                .lock_blob(&sha256, LockMode::Shared)
                .await
                .map_err(|e| format!("storing: {e}"))?;
            state
                .blobs
                .commit(staged, &sha256)
                .await
                .map_err(|e| format!("storing: {e}"))?;
            state
                .store
                .insert_upstream_file(&row)
                .await
                .map_err(|e| format!("storing: {e}"))?;
        }
        tracing::info!(file = %self.description, bytes = size, "upstream package cached");
        if let Some(last) = held {
            client.send(Ok(last)).await;
        }
        Ok(())
    }
}

/// What `fsck` finds wrong with a remote repository: a cached file missing from blob
/// storage, or whose bytes are not those checked when it was stored (size, sha256, and
/// the `C:` its index gives it), and a served index that is not the upstream's content
/// signed by the owner.
pub async fn check(
    state: &AppState,
    owner: &Owner,
    repo: &Repository,
) -> anyhow::Result<Vec<String>> {
    let place = format!("{}/{}/{}", repo.owner_name, repo.branch, repo.name);
    let mut problems = Vec::new();
    let mut listed: HashMap<String, HashMap<String, UpstreamEntry>> = HashMap::new();
    for file in state.store.upstream_files(repo.id).await? {
        let name = format!("{place}/{}/{}", file.arch, file.filename);
        if !listed.contains_key(&file.arch) {
            let entries = match state.store.upstream_index(repo.id, &file.arch).await? {
                Some(index) => {
                    let (_, unsigned) = crate::apk::sign::split_signed(&index.content)?;
                    entries(unsigned, state.config.upstream.max_index_bytes)?
                }
                None => HashMap::new(),
            };
            listed.insert(file.arch.clone(), entries);
        }
        // A file upstream no longer lists keeps the identity it was checked against.
        let expected = listed[&file.arch]
            .get(&file.filename)
            .map_or(file.checksum.clone(), |entry| entry.checksum.clone());
        let size = match state.blobs.size(&file.sha256).await {
            Err(crate::blob::BlobError::NotFound(_)) => {
                problems.push(format!("{name}: cached blob {} is missing", file.sha256));
                continue;
            }
            Err(e) => return Err(e.into()),
            Ok(size) => size,
        };
        if size != file.size as u64 {
            problems.push(format!(
                "{name}: cached blob is {size} bytes, the index says {}",
                file.size
            ));
            continue;
        }
        // Copied to a file while hashed, then parsed from it: never whole in memory.
        let mut reader = state.blobs.open_range(&file.sha256, 0, size).await?.body;
        let copy = tempfile::NamedTempFile::new()?;
        let mut writer = tokio::fs::File::from_std(copy.reopen()?);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut reader, &mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            writer.write_all(&buf[..n]).await?;
        }
        writer.flush().await?;
        let sha256 = hex::encode(hasher.finalize());
        let limits = state.config.apk_limits();
        let parsed = tokio::task::spawn_blocking(move || {
            let file = std::io::BufReader::new(copy.reopen()?);
            std::io::Result::Ok(
                crate::apk::package::parse_package(file, &limits)
                    .map(|p| p.checksum)
                    .map_err(|e| e.to_string()),
            )
        })
        .await??;
        let checked = (sha256, parsed);
        match checked {
            (sha256, _) if sha256 != file.sha256 => problems.push(format!(
                "{name}: cached blob content has sha256 {sha256}, expected {}",
                file.sha256
            )),
            (_, Err(e)) => problems.push(format!("{name}: cached file is not a package: {e}")),
            (_, Ok(checksum)) if checksum != expected => problems.push(format!(
                "{name}: cached file's control member is {checksum}, the index says {expected}"
            )),
            _ => {}
        }
    }
    let key = state.keys.get_or_create(owner).await?;
    let public_pem = key.public_key_pem()?;
    for freshness in state.store.upstream_freshness(repo.id).await? {
        let arch = &freshness.arch;
        let Some(index) = state.store.upstream_index(repo.id, arch).await? else {
            continue;
        };
        let served =
            crate::apk::index::verified_content(&index.signed, &public_pem, key.key_name());
        let unsigned = |signed: &[u8]| {
            crate::apk::sign::split_signed(signed)
                .map(|(_, unsigned)| unsigned.to_vec())
                .ok()
        };
        let same = unsigned(&index.signed).is_some()
            && unsigned(&index.signed) == unsigned(&index.content);
        match (served, same) {
            (Err(e), _) => problems.push(format!(
                "{place}/{arch}: served index does not verify with the owner's key: {e}"
            )),
            (Ok(_), true) => {}
            _ => problems.push(format!(
                "{place}/{arch}: served index is not the upstream's content"
            )),
        }
    }
    Ok(problems)
}

/// What the web pages say of a repository that is remote: its upstream and how fresh
/// each index is. None for a repository that is not remote.
pub async fn freshness(
    state: &AppState,
    owner: &str,
    branch: &str,
    repository: &str,
) -> AppResult<Option<(String, Vec<crate::store::UpstreamFreshness>)>> {
    let Some(owner) = state.store.owner_by_name(owner).await? else {
        return Ok(None);
    };
    let repo_ref = crate::store::RepoRef {
        owner_id: owner.id,
        branch: branch.to_string(),
        repository: repository.to_string(),
    };
    let Some(repo) = state.store.repository(&repo_ref).await? else {
        return Ok(None);
    };
    let Some(upstream) = upstream_of(state, repo.id).await? else {
        return Ok(None);
    };
    Ok(Some((
        upstream.url.clone(),
        state.store.upstream_freshness(repo.id).await?,
    )))
}
