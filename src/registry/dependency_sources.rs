//! The indexes of other repositories that dependencies may be resolved in
//! (`repositories.dependency_sources`, e.g. Alpine's own `main` and `community` of a
//! branch): read when the server starts and again when they change, looked at every
//! `repositories.dependency_refresh_secs`: files by modification time and size, URLs with
//! conditional requests (`If-None-Match`, `If-Modified-Since`). A source that cannot be
//! read, or whose signature does not verify with its configured key, is logged and
//! skipped (what it last held stays in use): it never holds up or refuses a publish.
//!
//! What is kept of a source is the names it answers (packages and what they provide)
//! with their versions and architectures; lookups are in memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use futures_util::StreamExt;

use crate::apk::depends::provided;
use crate::apk::index::{read_listed_packages, ListedPackage, TrustedKey};
use crate::config::{Config, DependencySource};
use crate::AppState;

/// One answer of a source to a name: the version it is at (None for a name provided
/// without one) and the architecture of the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub version: Option<String>,
    pub arch: String,
}

/// The names a source answers.
#[derive(Debug, Default)]
struct Listing {
    names: HashMap<String, Vec<Offer>>,
}

impl Listing {
    fn from_packages(packages: Vec<ListedPackage>) -> Listing {
        let mut names: HashMap<String, Vec<Offer>> = HashMap::new();
        for package in packages {
            for atom in &package.provides {
                let (name, version) = provided(atom);
                names.entry(name.to_string()).or_default().push(Offer {
                    version: version.map(str::to_string),
                    arch: package.arch.clone(),
                });
            }
            names.entry(package.name).or_default().push(Offer {
                version: Some(package.version),
                arch: package.arch,
            });
        }
        Listing { names }
    }
}

/// What was last read of a source, to tell whether it changed.
#[derive(Debug, Default)]
struct Seen {
    modified: Option<SystemTime>,
    len: u64,
    etag: Option<String>,
    last_modified: Option<String>,
}

struct Source {
    config: DependencySource,
    listing: RwLock<Arc<Listing>>,
    seen: Mutex<Seen>,
}

/// Every configured source, as last read.
pub struct DependencySources {
    sources: Vec<Source>,
    max_bytes: u64,
    timeout: Duration,
    client: Mutex<Option<reqwest::Client>>,
}

impl DependencySources {
    /// The sources `config` names, none read yet.
    pub fn new(config: &Config) -> DependencySources {
        let repositories = &config.repositories;
        DependencySources {
            sources: repositories
                .dependency_sources
                .iter()
                .map(|config| Source {
                    config: config.clone(),
                    listing: RwLock::new(Arc::new(Listing::default())),
                    seen: Mutex::new(Seen::default()),
                })
                .collect(),
            max_bytes: repositories.dependency_source_max_bytes,
            timeout: Duration::from_secs(repositories.dependency_fetch_timeout_secs),
            client: Mutex::new(None),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// What the sources serving `branch` answer to `name`.
    pub fn offers(&self, branch: &str, name: &str) -> Vec<Offer> {
        let mut out = Vec::new();
        for source in &self.sources {
            let branches = &source.config.branches;
            if !branches.is_empty() && !branches.iter().any(|b| b == branch) {
                continue;
            }
            let listing = source
                .listing
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(offers) = listing.names.get(name) {
                out.extend(offers.iter().cloned());
            }
        }
        out
    }

    /// Reads every source that changed since it was last read; a source that fails is
    /// logged and keeps what it held.
    pub async fn refresh(&self) {
        for source in &self.sources {
            let location = source.config.location.trim();
            match self.refresh_one(source).await {
                Ok(Some(names)) => {
                    tracing::info!(source = %location, names, "dependency source read")
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    source = %location, error = %format!("{e:#}"),
                    "dependency source skipped: it cannot be read"
                ),
            }
        }
    }

    /// Reads the source if it changed; the number of names it answers when it was read.
    async fn refresh_one(&self, source: &Source) -> anyhow::Result<Option<usize>> {
        let location = source.config.location.trim();
        let data = if location.starts_with("http://") || location.starts_with("https://") {
            self.fetch(source, location).await?
        } else {
            let path = PathBuf::from(location.strip_prefix("file://").unwrap_or(location));
            self.read_file(source, &path).await?
        };
        let Some((data, seen)) = data else {
            return Ok(None);
        };
        let key = match &source.config.key {
            Some(path) => Some(read_key(path).await?),
            None => None,
        };
        let max_bytes = self.max_bytes;
        let listing = tokio::task::spawn_blocking(move || {
            let key = key.as_ref().map(|(pem, name)| TrustedKey { pem, name });
            read_listed_packages(&data, key, max_bytes).map(Listing::from_packages)
        })
        .await
        .context("index reader task")??;
        let names = listing.names.len();
        *source.listing.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(listing);
        *source.seen.lock().unwrap_or_else(|e| e.into_inner()) = seen;
        Ok(Some(names))
    }

    /// The file's bytes, unless its modification time and size are those last read.
    async fn read_file(
        &self,
        source: &Source,
        path: &Path,
    ) -> anyhow::Result<Option<(Vec<u8>, Seen)>> {
        let metadata = tokio::fs::metadata(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let modified = metadata.modified().ok();
        {
            let seen = source.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.modified.is_some() && seen.modified == modified && seen.len == metadata.len() {
                return Ok(None);
            }
        }
        if metadata.len() > self.max_bytes {
            anyhow::bail!(
                "{} is larger than repositories.dependency_source_max_bytes ({})",
                path.display(),
                self.max_bytes
            );
        }
        let data = tokio::fs::read(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(Some((
            data,
            Seen {
                modified,
                len: metadata.len(),
                ..Seen::default()
            },
        )))
    }

    /// The body of the URL, unless it answers 304 to the validators last seen.
    async fn fetch(&self, source: &Source, url: &str) -> anyhow::Result<Option<(Vec<u8>, Seen)>> {
        let client = {
            let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
            match &*client {
                Some(client) => client.clone(),
                None => {
                    let built = reqwest::Client::builder()
                        .timeout(self.timeout)
                        .connect_timeout(self.timeout)
                        .build()
                        .context("building the HTTP client of dependency sources")?;
                    *client = Some(built.clone());
                    built
                }
            }
        };
        let mut request = client.get(url);
        {
            let seen = source.seen.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(etag) = &seen.etag {
                request = request.header(reqwest::header::IF_NONE_MATCH, etag);
            }
            if let Some(date) = &seen.last_modified {
                request = request.header(reqwest::header::IF_MODIFIED_SINCE, date);
            }
        }
        let response = request.send().await.context("fetching")?;
        if response.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if !response.status().is_success() {
            anyhow::bail!("answered {}", response.status());
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let seen = Seen {
            etag: header(reqwest::header::ETAG),
            last_modified: header(reqwest::header::LAST_MODIFIED),
            ..Seen::default()
        };
        let mut body = response.bytes_stream();
        let mut data = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.context("fetching")?;
            if (data.len() + chunk.len()) as u64 > self.max_bytes {
                anyhow::bail!(
                    "larger than repositories.dependency_source_max_bytes ({})",
                    self.max_bytes
                );
            }
            data.extend_from_slice(&chunk);
        }
        Ok(Some((data, seen)))
    }
}

/// A public key file and its apk key name (its file name).
async fn read_key(path: &Path) -> anyhow::Result<(String, String)> {
    let pem = tokio::fs::read_to_string(path)
        .await
        .with_context(|| format!("reading the key {}", path.display()))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("the key {} has no file name", path.display()))?
        .to_string();
    Ok((pem, name))
}

/// Reads the sources at once, then every `repositories.dependency_refresh_secs`.
pub fn spawn_refresher(state: AppState) {
    if state.dependency_sources.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let period = Duration::from_secs(state.config.repositories.dependency_refresh_secs);
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            state.dependency_sources.refresh().await;
        }
    });
}
