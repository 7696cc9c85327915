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
//!
//! A build costs in proportion to the change, not to the repository: the indexer keeps
//! each repository's indexes as of the generation it last built ([`IncrementalIndex`]:
//! sorted stanzas in separately compressed chunks), reads only the rows added and the
//! rows removed since (`Store::index_changes`), applies them, and re-renders and signs
//! only the architectures they touched; each architecture's `Packages.adb` is updated in
//! place the same way ([`IncrementalAdb`]). The first build of a repository in a process, a
//! change it cannot apply (a new architecture, a raised generation with no change, a gap
//! longer than the store keeps) and a failed build start over from a full read.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::apk::adb::incremental::IncrementalAdb;
use crate::apk::adb::IndexPackage;
use crate::apk::incremental::{EntryKey, IncrementalIndex};
use crate::apk::index::{rewrite_arch, sign_index_by};
use crate::apk::names::KNOWN_ARCHES;
use crate::apk::sign::{SignatureAlgorithm, SigningKey};
use crate::clock::SharedClock;
use crate::metrics::{BuildLabels, Metrics};
use crate::registry::keys::{KeySet, Keys};
use crate::store::{
    IndexChanges, IndexEntry, IndexSnapshot, Owner, RenderedAdb, RenderedIndex, Repository, Store,
    StoreError, CHANGE_WINDOW,
};

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
    cache: Cache,
    builds: AtomicU64,
    incremental_builds: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Indexer {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<Keys>,
        algorithms: Vec<SignatureAlgorithm>,
        clock: SharedClock,
        metrics: Arc<Metrics>,
    ) -> Indexer {
        Indexer {
            store,
            keys,
            algorithms,
            clock,
            locks: Mutex::new(HashMap::new()),
            cache: Cache::default(),
            builds: AtomicU64::new(0),
            incremental_builds: AtomicU64::new(0),
            metrics,
        }
    }

    /// How many index builds this process has run (for tests and metrics).
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }

    /// How many of those updated the indexes kept from the previous build rather than
    /// rendering everything.
    pub fn incremental_builds(&self) -> u64 {
        self.incremental_builds.load(Ordering::Relaxed)
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
        self.build(owner, repository, generation, &[]).await
    }

    /// Publishes an index for `arch` if the repository can serve one: `arch` is an Alpine
    /// architecture, and the repository holds noarch packages (which every architecture
    /// lists) or nothing at all (a repository just created: `apk update` must work before
    /// the first upload). Returns whether one exists now.
    ///
    /// An empty repository gets its signed, empty index for every Alpine architecture at
    /// once: each is then served as any architecture once served is, and keeps its index
    /// when packages of another architecture come, whichever architecture was asked for
    /// first.
    pub async fn ensure_arch(
        &self,
        owner: &Owner,
        repository: &Repository,
        arch: &str,
    ) -> anyhow::Result<bool> {
        if !KNOWN_ARCHES.contains(&arch) {
            return Ok(false);
        }
        if self.store.has_noarch(repository.id).await? {
            self.build(owner, repository, repository.wanted_gen, &[arch])
                .await?;
        } else if self.store.is_empty_repository(repository.id).await? {
            self.build(owner, repository, repository.wanted_gen, KNOWN_ARCHES)
                .await?;
        } else {
            return Ok(false);
        }
        Ok(self.store.index(repository.id, arch).await?.is_some())
    }

    /// Brings the repository's indexes up to `generation`, and publishes indexes for the
    /// architectures of `extra` that lack one, where the repository can serve them (see
    /// `RepoState::full`).
    async fn build(
        &self,
        owner: &Owner,
        repository: &Repository,
        generation: i64,
        extra: &[&str],
    ) -> anyhow::Result<()> {
        let lock = self.lock_for(repository.id);
        let _guard = lock.lock().await;
        if self.is_built(repository, generation, extra).await? {
            return Ok(());
        }
        // Another instance may be building it: once it has published and let go, what it
        // built is read again.
        let instances = self.store.lock_index_build(repository.id).await?;
        if instances.is_held() && self.is_built(repository, generation, extra).await? {
            return Ok(());
        }
        // Out of the cache while it is updated: a build that fails leaves nothing behind,
        // and the next one starts over from the database.
        let started = std::time::Instant::now();
        let cached = self.cache.take(repository.id);
        let build = self.update(owner, repository, cached, extra).await?;
        self.store
            .publish_indexes(
                repository.id,
                build.state.generation,
                build.rendered,
                Vec::new(),
                self.clock.unix_ms(),
            )
            .await
            .map_err(|e| removed_or(e, repository))?;
        self.builds.fetch_add(1, Ordering::Relaxed);
        if build.incremental {
            self.incremental_builds.fetch_add(1, Ordering::Relaxed);
        }
        let kind = if build.incremental {
            "incremental"
        } else {
            "full"
        };
        self.metrics
            .index_builds
            .get_or_create(&BuildLabels { kind })
            .inc();
        self.metrics
            .index_build_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .index_build_packages
            .observe(build.state.packages.len() as f64);
        tracing::debug!(
            repository = %build.state.description,
            generation = build.state.generation,
            incremental = build.incremental,
            "published indexes"
        );
        self.cache.put(repository.id, build.state);
        Ok(())
    }

    /// Whether the published indexes include `generation` (and every one of `extra` has
    /// one).
    async fn is_built(
        &self,
        repository: &Repository,
        generation: i64,
        extra: &[&str],
    ) -> anyhow::Result<bool> {
        let current = self
            .store
            .repository_by_id(repository.id)
            .await?
            .ok_or_else(|| RepositoryRemoved::of(repository))?;
        if current.built_gen < generation {
            return Ok(false);
        }
        for arch in extra {
            if self.store.index(repository.id, arch).await?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Brings `cached` (the repository's indexes as of the generation it last built) up to
    /// the repository's wanted generation and renders the indexes that changed; without a
    /// cache, when the change is not one it can apply, or when the owner's keys changed
    /// since, renders every index from one snapshot.
    ///
    /// The owner's keys are read after the rows: a key change raises the generation in its
    /// transaction, so a build that covers that generation signs with the new keys.
    async fn update(
        &self,
        owner: &Owner,
        repository: &Repository,
        cached: Option<RepoState>,
        extra: &[&str],
    ) -> anyhow::Result<Build> {
        let algorithms = self.algorithms.clone();
        let extra: Vec<String> = extra.iter().map(|arch| arch.to_string()).collect();
        if let Some(state) = cached {
            let changes = self
                .store
                .index_changes(repository.id, state.generation)
                .await
                .map_err(|e| removed_or(e, repository))?;
            let keys = self.keys.key_set(owner).await?;
            let (algorithms, extra) = (algorithms.clone(), extra.clone());
            let updated = tokio::task::spawn_blocking(move || {
                if state.signed_by != keys.ids() {
                    return Ok(None);
                }
                let Some((mut state, touched)) = state.apply(changes, &extra)? else {
                    return Ok(None);
                };
                let rendered = state.render(&touched, &keys, &algorithms)?;
                anyhow::Ok(Some(Build {
                    state,
                    rendered,
                    incremental: true,
                }))
            })
            .await
            .context("index update task")??;
            if let Some(build) = updated {
                return Ok(build);
            }
        }
        let snapshot = self
            .store
            .index_snapshot(repository.id)
            .await
            .map_err(|e| removed_or(e, repository))?;
        let keys = self.keys.key_set(owner).await?;
        let description = describe(repository);
        tokio::task::spawn_blocking(move || {
            let mut state = RepoState::full(description, snapshot, &extra, keys.ids())?;
            let every: BTreeSet<String> = state.arches.keys().cloned().collect();
            let rendered = state.render(&every, &keys, &algorithms)?;
            anyhow::Ok(Build {
                state,
                rendered,
                incremental: false,
            })
        })
        .await
        .context("index render task")?
    }

    /// Renders every index of the repository from one snapshot, as a build without a
    /// cache would: the generation it covers, the indexes, and the architectures whose
    /// index must go (none: a served architecture keeps an index).
    pub async fn render(
        &self,
        owner: &Owner,
        repository: &Repository,
        extra_arch: Option<&str>,
    ) -> anyhow::Result<(i64, Vec<RenderedIndex>, Vec<String>)> {
        let extra: Vec<&str> = extra_arch.into_iter().collect();
        let build = self.update(owner, repository, None, &extra).await?;
        Ok((build.state.generation, build.rendered, Vec::new()))
    }

    /// Signs `unsigned` (an index's gzip stream, such as an upstream's) with the keys and
    /// algorithms the owner's indexes are signed with; the signed index and the names of
    /// the keys that signed it.
    pub async fn sign(
        &self,
        owner: &Owner,
        unsigned: Vec<u8>,
    ) -> anyhow::Result<(Vec<u8>, Vec<String>)> {
        let keys = self.keys.key_set(owner).await?;
        let algorithms = self.algorithms.clone();
        tokio::task::spawn_blocking(move || {
            let signed = sign_index_by(&unsigned, &keys.keys(), &algorithms)?;
            let names = keys
                .keys()
                .iter()
                .map(|k| k.key_name().to_string())
                .collect();
            anyhow::Ok((signed, names))
        })
        .await
        .context("index signing task")?
    }

    /// `Packages.adb` of `packages` (any order: the file lists them sorted) under
    /// `description`, signed with the keys the owner's indexes are signed with, in the same
    /// order.
    pub async fn sign_adb(
        &self,
        owner: &Owner,
        description: String,
        packages: Vec<IndexPackage>,
    ) -> anyhow::Result<Vec<u8>> {
        let keys = self.keys.key_set(owner).await?;
        tokio::task::spawn_blocking(move || {
            anyhow::Ok(crate::apk::adb::signed_index(
                &description,
                packages.iter(),
                &keys.keys(),
                ADB_DEFLATE_LEVEL,
            )?)
        })
        .await
        .context("index signing task")?
    }

    /// The names of the keys `sign` signs the owner's indexes with now.
    pub async fn signing_key_names(&self, owner: &Owner) -> anyhow::Result<Vec<String>> {
        let keys = self.keys.key_set(owner).await?;
        Ok(keys
            .keys()
            .iter()
            .map(|k| k.key_name().to_string())
            .collect())
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

fn describe(repository: &Repository) -> String {
    format!(
        "{}/{}/{}",
        repository.owner_name, repository.branch, repository.name
    )
}

/// The outcome of a build: the repository's indexes as of its generation, and the
/// rendered indexes to publish.
struct Build {
    state: RepoState,
    rendered: Vec<RenderedIndex>,
    incremental: bool,
}

/// Repositories whose indexes are kept between builds, at most [`CACHED_REPOSITORIES`];
/// the one built longest ago goes first.
const CACHED_REPOSITORIES: usize = 64;

#[derive(Default)]
struct Cache {
    repositories: Mutex<HashMap<i64, (u64, RepoState)>>,
    uses: AtomicU64,
}

impl Cache {
    fn take(&self, repository_id: i64) -> Option<RepoState> {
        self.repositories
            .lock()
            .expect("index cache poisoned")
            .remove(&repository_id)
            .map(|(_, state)| state)
    }

    fn put(&self, repository_id: i64, state: RepoState) {
        let used = self.uses.fetch_add(1, Ordering::Relaxed);
        let mut repositories = self.repositories.lock().expect("index cache poisoned");
        repositories.insert(repository_id, (used, state));
        while repositories.len() > CACHED_REPOSITORIES {
            let oldest = repositories
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => repositories.remove(&id),
                None => break,
            };
        }
    }
}

/// A repository's indexes as of `generation`, in the form a change updates in place.
struct RepoState {
    generation: i64,
    description: String,
    /// Every package row's architecture and place in the index, by row id (noarch ones
    /// included, listed in every architecture's index).
    packages: HashMap<i64, (String, EntryKey)>,
    /// The served architectures' indexes.
    arches: BTreeMap<String, IncrementalIndex>,
    /// The ids of the keys that signed them (`KeySet::ids`).
    signed_by: Vec<i64>,
    /// Every package row as the apk v3 index lists it, by row id (a noarch one says
    /// `noarch`: apk 3 fetches it from the `noarch` directory, which serves it).
    adb_packages: HashMap<i64, IndexPackage>,
    /// The served architectures' `Packages.adb`.
    adbs: BTreeMap<String, IncrementalAdb>,
}

fn entry_key(entry: &IndexEntry) -> EntryKey {
    EntryKey {
        name: entry.name.clone(),
        version: entry.version.clone(),
        checksum: entry.checksum.clone(),
        id: entry.id,
    }
}

/// The stanza of `entry` in the index of `arch`: a noarch package's says `A:<arch>`.
fn stanza_for<'a>(entry: &'a IndexEntry, arch: &str) -> Cow<'a, str> {
    if entry.arch == NOARCH {
        Cow::Owned(rewrite_arch(&entry.stanza, arch))
    } else {
        Cow::Borrowed(entry.stanza.as_str())
    }
}

const NOARCH: &str = "noarch";

/// Deflate level of `Packages.adb`: the fastest. A full build compresses the whole file;
/// at 10,000 packages level 6 takes some 70 ms more for a file a fifth smaller.
const ADB_DEFLATE_LEVEL: u32 = 1;

impl RepoState {
    /// Every index the repository serves, from one snapshot: one per architecture with
    /// concrete packages, per architecture already served, and, while noarch packages
    /// exist or the repository holds nothing, for each of `extra`. An architecture once
    /// served keeps an index, empty when its last package goes: a 404 would leave apk
    /// with its cached index, offering packages that are gone.
    fn full(
        description: String,
        snapshot: IndexSnapshot,
        extra: &[String],
        signed_by: &[i64],
    ) -> anyhow::Result<RepoState> {
        let has_noarch = snapshot.packages.iter().any(|p| p.arch == NOARCH);
        let mut names: BTreeSet<&str> = snapshot
            .packages
            .iter()
            .filter(|p| p.arch != NOARCH)
            .map(|p| p.arch.as_str())
            .collect();
        names.extend(snapshot.served_arches.iter().map(String::as_str));
        if has_noarch || snapshot.packages.is_empty() {
            names.extend(extra.iter().map(String::as_str));
        }
        let arches = names
            .iter()
            .map(|&arch| {
                let stanzas: Vec<(EntryKey, Cow<'_, str>)> = snapshot
                    .packages
                    .iter()
                    .filter(|p| p.arch == arch || p.arch == NOARCH)
                    .map(|p| (entry_key(p), stanza_for(p, arch)))
                    .collect();
                let entries = stanzas
                    .iter()
                    .map(|(k, s)| (k.clone(), s.as_ref()))
                    .collect();
                (
                    arch.to_string(),
                    IncrementalIndex::new(&description, entries),
                )
            })
            .collect();
        let packages = snapshot
            .packages
            .iter()
            .map(|p| (p.id, (p.arch.clone(), entry_key(p))))
            .collect();
        let adb_packages = snapshot
            .packages
            .iter()
            .map(|p| Ok((p.id, IndexPackage::from_stanza(&p.stanza)?)))
            .collect::<anyhow::Result<_>>()?;
        let mut state = RepoState {
            generation: snapshot.generation,
            description,
            packages,
            arches,
            signed_by: signed_by.to_vec(),
            adb_packages,
            adbs: BTreeMap::new(),
        };
        for arch in state.arches.keys() {
            state.adbs.insert(arch.clone(), state.full_adb(arch)?);
        }
        Ok(state)
    }

    /// Applies what changed since `self.generation`: removals first (a row id may come
    /// back), then additions. Returns the state and the architectures whose index
    /// changed, or None when the change needs a full build: the served indexes are not
    /// the ones this state rendered (another instance, or another process on the same
    /// database, published since), nothing changed (the generation was raised to have
    /// the indexes signed again), the change reaches back further than the store keeps
    /// removals, an architecture appears or was served elsewhere, or the rows do not
    /// match what is kept.
    ///
    /// Only the architectures a change touches are rendered: the others keep the index
    /// served now, which is right only if that index is the one this state holds. So
    /// whatever another builder published meanwhile (a package this state never saw,
    /// whose removal would otherwise look like a row added and removed within the
    /// change) makes the build start over from the database.
    fn apply(
        mut self,
        changes: IndexChanges,
        extra: &[String],
    ) -> anyhow::Result<Option<(RepoState, BTreeSet<String>)>> {
        let served: BTreeSet<&str> = changes.served_arches.iter().map(String::as_str).collect();
        let cached: BTreeSet<&str> = self.arches.keys().map(String::as_str).collect();
        let needs_full = changes.built_generation != self.generation
            || (changes.added.is_empty() && changes.removed.is_empty())
            || changes.generation - self.generation > CHANGE_WINDOW
            || served != cached
            || extra.iter().any(|arch| !cached.contains(arch.as_str()))
            || changes
                .added
                .iter()
                .any(|p| p.arch != NOARCH && !cached.contains(p.arch.as_str()));
        if needs_full {
            return Ok(None);
        }
        let mut touched = BTreeSet::new();
        for id in &changes.removed {
            // A row this state never held: added and removed within the change, or (had
            // the served generation not been checked above) published by another
            // builder. Telling the two apart is not worth the risk: start over.
            let Some((arch, key)) = self.packages.remove(id) else {
                return Ok(None);
            };
            self.adb_packages.remove(id);
            for (name, adb) in self.adbs.iter_mut() {
                if (arch == NOARCH || *name == arch) && !adb.remove(*id) {
                    return Ok(None);
                }
            }
            for (name, index) in self.arches.iter_mut() {
                if arch == NOARCH || *name == arch {
                    if !index.remove(&key)? {
                        return Ok(None);
                    }
                    touched.insert(name.clone());
                }
            }
        }
        for entry in &changes.added {
            if self.packages.contains_key(&entry.id) {
                return Ok(None);
            }
            let key = entry_key(entry);
            for (name, index) in self.arches.iter_mut() {
                if entry.arch == NOARCH || *name == entry.arch {
                    index.insert(key.clone(), &stanza_for(entry, name))?;
                    touched.insert(name.clone());
                }
            }
            self.packages.insert(entry.id, (entry.arch.clone(), key));
            let package = IndexPackage::from_stanza(&entry.stanza)?;
            for (name, adb) in self.adbs.iter_mut() {
                if (entry.arch == NOARCH || *name == entry.arch)
                    && !adb.insert(entry.id, &package)?
                {
                    return Ok(None);
                }
            }
            self.adb_packages.insert(entry.id, package);
        }
        self.generation = changes.generation;
        Ok(Some((self, touched)))
    }

    /// A full build of the `Packages.adb` of `arch`: the packages its `APKINDEX.tar.gz`
    /// lists, written in index order, so that every instance renders the same bytes from
    /// the same rows.
    fn full_adb(&self, arch: &str) -> anyhow::Result<IncrementalAdb> {
        let listed: Vec<(i64, &IndexPackage)> = self
            .packages
            .iter()
            .filter(|(_, (a, _))| a == arch || a == NOARCH)
            .filter_map(|(id, _)| Some((*id, self.adb_packages.get(id)?)))
            .collect();
        Ok(IncrementalAdb::new(
            &self.description,
            listed,
            ADB_DEFLATE_LEVEL,
        )?)
    }

    /// The `Packages.adb` of `arch` as it stands, signed by `keys` in order (the keys the
    /// v2 index is signed with); built in full again once much of it is garbage.
    fn render_adb(&mut self, arch: &str, keys: &[&SigningKey]) -> anyhow::Result<RenderedAdb> {
        let compact = self
            .adbs
            .get(arch)
            .is_none_or(IncrementalAdb::wants_compaction);
        if compact {
            let full = self.full_adb(arch)?;
            self.adbs.insert(arch.to_string(), full);
        }
        let adb = self.adbs.get_mut(arch).expect("built above");
        let content = adb.render(keys)?;
        Ok(RenderedAdb {
            sha256: hex::encode(Sha256::digest(&content)),
            content,
        })
    }

    /// Signs (with every active key of the owner, newest first) and renders the indexes
    /// of `arches`: each `APKINDEX.tar.gz` and the `Packages.adb` beside it.
    fn render(
        &mut self,
        arches: &BTreeSet<String>,
        keys: &KeySet,
        algorithms: &[SignatureAlgorithm],
    ) -> anyhow::Result<Vec<RenderedIndex>> {
        let keys = keys.keys();
        let mut adbs = HashMap::new();
        for arch in arches.iter() {
            if self.arches.contains_key(arch) {
                adbs.insert(arch.clone(), self.render_adb(arch, &keys)?);
            }
        }
        let mut rendered = Vec::with_capacity(arches.len());
        for (arch, index) in self.arches.iter_mut() {
            if !arches.contains(arch) {
                continue;
            }
            let content = sign_index_by(&index.render()?, &keys, algorithms)?;
            let sha256 = hex::encode(Sha256::digest(&content));
            let (signatures, _) = crate::apk::sign::split_signed(&content)?;
            rendered.push(RenderedIndex {
                arch: arch.clone(),
                sha256,
                entries: index.len(),
                signatures: signatures.into_iter().map(|(name, _)| name).collect(),
                content,
                adb: adbs.remove(arch),
            });
        }
        Ok(rendered)
    }
}
