//! Index publication: coalesced, race-free rebuilds of each repository's signed
//! `APKINDEX.tar.gz` files.
//!
//! Every mutation bumps the repository's wanted generation in the same transaction as its
//! row. `wait_built` returns once an index at least that new is published: one builder per
//! repository runs at a time, renders everything up to the wanted generation it reads from
//! one snapshot, and all waiters whose generation it covered return together. N
//! concurrent uploads therefore cost far fewer than N builds.
//!
//! Several instances sharing one PostgreSQL database build as one: a build first takes
//! this process's lock of the repository (so that one task per process waits below), then
//! the database's lock of the repository's builds (`Store::lock_index_build`, an advisory
//! lock), then reads the built generation again. A waiter on another instance is thus
//! woken when the build that covers its generation has published and released the lock,
//! and returns without building: the lock's release is the notification, no
//! LISTEN/NOTIFY is needed, and a build that dies with its process releases it too. On
//! SQLite the database's lock is a no-op (one process).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::apk::index::{compare_entries, rewrite_arch, sign_index, write_unsigned_index};
use crate::apk::names::KNOWN_ARCHES;
use crate::apk::sign::SignatureAlgorithm;
use crate::clock::SharedClock;
use crate::registry::keys::Keys;
use crate::store::{IndexEntry, Owner, RenderedIndex, Repository, Store, StoreError};

/// The repository was removed before its indexes could be published: nothing was
/// published for it, and nothing will be (repository ids are never reused).
#[derive(Debug, thiserror::Error)]
#[error("repository {0} was removed")]
pub struct RepositoryRemoved(pub String);

impl RepositoryRemoved {
    fn of(repository: &Repository) -> RepositoryRemoved {
        RepositoryRemoved(format!(
            "{}/{}/{}",
            repository.owner_name, repository.branch, repository.name
        ))
    }
}

/// Whether `err` says the repository was removed while its indexes were being built.
pub fn is_removed(err: &anyhow::Error) -> bool {
    err.is::<RepositoryRemoved>()
}

/// A store's NotFound on a repository id means the repository was removed.
fn removed_or(err: StoreError, repository: &Repository) -> anyhow::Error {
    match err {
        StoreError::NotFound(_) => RepositoryRemoved::of(repository).into(),
        other => other.into(),
    }
}

pub struct Indexer {
    store: Arc<dyn Store>,
    keys: Arc<Keys>,
    algorithms: Vec<SignatureAlgorithm>,
    clock: SharedClock,
    locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    builds: AtomicU64,
}

impl Indexer {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<Keys>,
        algorithms: Vec<SignatureAlgorithm>,
        clock: SharedClock,
    ) -> Indexer {
        Indexer {
            store,
            keys,
            algorithms,
            clock,
            locks: Mutex::new(HashMap::new()),
            builds: AtomicU64::new(0),
        }
    }

    /// How many index builds this process has run (for tests and metrics).
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }

    fn lock_for(&self, repository_id: i64) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .expect("indexer locks poisoned")
            .entry(repository_id)
            .or_default()
            .clone()
    }

    /// Returns once the repository's published indexes include `generation`. Fails with
    /// `RepositoryRemoved` when the repository no longer exists.
    pub async fn wait_built(
        &self,
        owner: &Owner,
        repository: &Repository,
        generation: i64,
    ) -> anyhow::Result<()> {
        self.build(owner, repository, generation, None).await
    }

    /// Publishes an index for `arch` if the repository can serve one (it has noarch
    /// packages and `arch` is an Alpine architecture). Returns whether one exists now.
    pub async fn ensure_arch(
        &self,
        owner: &Owner,
        repository: &Repository,
        arch: &str,
    ) -> anyhow::Result<bool> {
        if !KNOWN_ARCHES.contains(&arch) || !self.store.has_noarch(repository.id).await? {
            return Ok(false);
        }
        self.build(owner, repository, repository.wanted_gen, Some(arch))
            .await?;
        Ok(self.store.index(repository.id, arch).await?.is_some())
    }

    async fn build(
        &self,
        owner: &Owner,
        repository: &Repository,
        generation: i64,
        extra_arch: Option<&str>,
    ) -> anyhow::Result<()> {
        let lock = self.lock_for(repository.id);
        let _guard = lock.lock().await;
        if self.is_built(repository, generation, extra_arch).await? {
            return Ok(());
        }
        // Another instance may be building it: once it has published and let go, what it
        // built is read again.
        let instances = self.store.lock_index_build(repository.id).await?;
        if instances.is_held() && self.is_built(repository, generation, extra_arch).await? {
            return Ok(());
        }
        let (generation, rendered, removed) = self.render(owner, repository, extra_arch).await?;
        self.store
            .publish_indexes(
                repository.id,
                generation,
                rendered,
                removed,
                self.clock.unix_ms(),
            )
            .await
            .map_err(|e| removed_or(e, repository))?;
        self.builds.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            repository = %format!("{}/{}/{}", repository.owner_name, repository.branch, repository.name),
            generation,
            "published indexes"
        );
        Ok(())
    }

    /// Whether the published indexes include `generation` (and `extra_arch` has one).
    async fn is_built(
        &self,
        repository: &Repository,
        generation: i64,
        extra_arch: Option<&str>,
    ) -> anyhow::Result<bool> {
        let current = self
            .store
            .repository_by_id(repository.id)
            .await?
            .ok_or_else(|| RepositoryRemoved::of(repository))?;
        let arch_missing = match extra_arch {
            Some(arch) => self.store.index(repository.id, arch).await?.is_none(),
            None => false,
        };
        Ok(current.built_gen >= generation && !arch_missing)
    }

    /// Renders every index of the repository from one snapshot: the generation it
    /// covers, the indexes, and the architectures whose index must go.
    pub async fn render(
        &self,
        owner: &Owner,
        repository: &Repository,
        extra_arch: Option<&str>,
    ) -> anyhow::Result<(i64, Vec<RenderedIndex>, Vec<String>)> {
        let key = self.keys.get_or_create(owner).await?;
        let snapshot = self
            .store
            .index_snapshot(repository.id)
            .await
            .map_err(|e| removed_or(e, repository))?;
        let description = format!(
            "{}/{}/{}",
            repository.owner_name, repository.branch, repository.name
        );
        let algorithms = self.algorithms.clone();
        let extra = extra_arch.map(str::to_string);
        let generation = snapshot.generation;
        let (rendered, removed) = tokio::task::spawn_blocking(move || {
            render_all(
                &description,
                snapshot.packages,
                &snapshot.served_arches,
                extra.as_deref(),
                |unsigned| sign_index(unsigned, &key, &algorithms),
            )
        })
        .await
        .context("index render task")??;
        Ok((generation, rendered, removed))
    }

    /// Rebuilds every repository whose built generation lags (after a crash). One
    /// removed meanwhile is skipped. Returns how many were rebuilt.
    pub async fn rebuild_stale(&self) -> anyhow::Result<usize> {
        let stale = self.store.stale_repositories().await?;
        self.rebuild(&stale).await
    }

    /// Rebuilds the repositories whose built generation lagged the same wanted generation
    /// at the previous call (`seen` remembers them): a change no live process is
    /// publishing, as after an instance died between committing a row and publishing its
    /// index while the others go on. A lag that moves, or that a build ends, is left to
    /// the build under way. Returns how many were rebuilt.
    pub async fn rebuild_abandoned(&self, seen: &mut HashMap<i64, i64>) -> anyhow::Result<usize> {
        let stale = self.store.stale_repositories().await?;
        let abandoned: Vec<Repository> = stale
            .iter()
            .filter(|r| seen.get(&r.id) == Some(&r.wanted_gen))
            .cloned()
            .collect();
        *seen = stale.iter().map(|r| (r.id, r.wanted_gen)).collect();
        self.rebuild(&abandoned).await
    }

    async fn rebuild(&self, stale: &[Repository]) -> anyhow::Result<usize> {
        let mut rebuilt = 0;
        for repository in stale {
            let Some(owner) = self.store.owner_by_name(&repository.owner_name).await? else {
                continue;
            };
            match self
                .wait_built(&owner, repository, repository.wanted_gen)
                .await
            {
                Ok(()) => rebuilt += 1,
                Err(e) if is_removed(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(rebuilt)
    }
}

/// Renders the index of every architecture the repository serves: those with concrete
/// packages, those already served, and, while noarch packages exist, `extra`. An
/// architecture once served keeps an index, empty when its last package goes: a 404 would
/// leave apk with its cached index, offering packages that are gone. Returns the rendered
/// indexes and the architectures whose index must go (none today: a served architecture
/// is kept, and removing a repository deletes its indexes with it).
fn render_all(
    description: &str,
    mut packages: Vec<IndexEntry>,
    served: &[String],
    extra: Option<&str>,
    sign: impl Fn(&[u8]) -> crate::apk::ApkResult<Vec<u8>>,
) -> anyhow::Result<(Vec<RenderedIndex>, Vec<String>)> {
    packages.sort_by(|a, b| {
        compare_entries(
            (&a.name, &a.version, &a.checksum),
            (&b.name, &b.version, &b.checksum),
        )
    });
    let has_noarch = packages.iter().any(|p| p.arch == "noarch");
    let mut arches: BTreeSet<&str> = packages
        .iter()
        .filter(|p| p.arch != "noarch")
        .map(|p| p.arch.as_str())
        .collect();
    arches.extend(served.iter().map(String::as_str));
    if has_noarch {
        arches.extend(extra);
    }
    let mut rendered = Vec::with_capacity(arches.len());
    for arch in &arches {
        let rewritten: Vec<std::borrow::Cow<'_, str>> = packages
            .iter()
            .filter(|p| p.arch == *arch || p.arch == "noarch")
            .map(|p| {
                if p.arch == "noarch" {
                    std::borrow::Cow::Owned(rewrite_arch(&p.stanza, arch))
                } else {
                    std::borrow::Cow::Borrowed(p.stanza.as_str())
                }
            })
            .collect();
        let stanzas: Vec<&str> = rewritten.iter().map(|s| s.as_ref()).collect();
        let unsigned = write_unsigned_index(description, &stanzas)?;
        let content = sign(&unsigned)?;
        let sha256 = hex::encode(Sha256::digest(&content));
        rendered.push(RenderedIndex {
            arch: arch.to_string(),
            content,
            sha256,
        });
    }
    let removed = served
        .iter()
        .filter(|a| !arches.contains(a.as_str()))
        .cloned()
        .collect();
    Ok((rendered, removed))
}
