//! The history of what remote and virtual repositories served, and views of it.
//!
//! - Every change of what such a repository lists is recorded (`Store::served_history`):
//!   a remote repository's, when the upstream index it serves has new content; a virtual
//!   repository's, when its index is built (`registry::virtuals`). One row per file and
//!   period it was listed, with its entry, the repository its file comes from and, for a
//!   hosted member's file, its blob (kept from orphan collection while the row exists).
//! - `OWNER/BRANCH/REPOSITORY@TIME/...` and `@SNAPSHOT/...` serve the index of the rows
//!   valid at that moment, rendered and signed with the owner's keys of now (kept in
//!   memory, within a bound), and the package files they list, even after upstream or the
//!   member dropped them: a hosted member's blob, a remote repository's cached file (or
//!   fetched from upstream while its index still lists the same file).
//! - Snapshots name moments: `snapshot create` records the current time under a name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::error::{AppError, AppResult};
use crate::names::{rfc3339_ms, Arch, PackageFile, RepoAddress, SnapshotName, View};
use crate::registry::audit::Actor;
use crate::registry::remote::{Fetched, Locks};
use crate::registry::virtuals::{HasStanza, Kind};
use crate::store::{Owner, Repository, ServedFile, ServedRow, Snapshot, UpstreamIndex};
use crate::AppState;

/// Rendered views kept at most, in bytes of their indexes; past that the table starts
/// over.
const VIEW_CACHE_BYTES: usize = 64 << 20;

/// A view's rows are final once this far in the past: rows are dated by the clock of the
/// instance writing them, when it writes them.
const SETTLED_MS: i64 = 60_000;

/// This process's part of the histories: the upstream index of each remote repository and
/// architecture whose listing it recorded last, and the views it rendered.
pub struct Snapshots {
    recorded: Mutex<HashMap<(i64, String), String>>,
    recording: Locks<(i64, String)>,
    views: Mutex<Views>,
}

impl Default for Snapshots {
    fn default() -> Self {
        Snapshots {
            recorded: Mutex::new(HashMap::new()),
            recording: Locks::new(),
            views: Mutex::new(Views::default()),
        }
    }
}

#[derive(Default)]
struct Views {
    bytes: usize,
    rendered: HashMap<ViewKey, Arc<RenderedView>>,
}

/// A view rendered: of one repository and architecture, at one moment, signed by the keys
/// named.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ViewKey {
    repository_id: i64,
    arch: String,
    at_ms: i64,
    keys: String,
}

/// The index of a moment of a repository's history.
#[derive(Debug)]
pub struct RenderedView {
    pub content: bytes::Bytes,
    pub sha256: String,
    /// `Packages.adb` and its SHA-256, or why there is none.
    pub adb: Result<(bytes::Bytes, String), String>,
    /// The last change of the listing at or before the moment (`Last-Modified`).
    pub modified_ms: i64,
}

impl HasStanza for ServedRow {
    fn stanza(&self) -> &str {
        &self.stanza
    }
}

/// Records the listing of the remote repository's upstream index `index` in its history,
/// unless this process recorded that very index last. The store writes nothing when the
/// upstream index stored is no longer this one: whoever saved the later one records it.
pub async fn record_remote(
    state: &AppState,
    repo: &Repository,
    index: &UpstreamIndex,
) -> AppResult<()> {
    let key = (repo.id, index.arch.clone());
    let done = |state: &AppState| {
        state
            .snapshots
            .recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            == Some(&index.sha256)
    };
    if done(state) {
        return Ok(());
    }
    let lock = state.snapshots.recording.of(&key);
    let _one_at_a_time = lock.lock().await;
    if done(state) {
        return Ok(());
    }
    let content = index.content.clone();
    let limit = state.config.upstream.max_index_bytes;
    let entries = tokio::task::spawn_blocking(move || {
        let (_, unsigned) = crate::apk::sign::split_signed(&content)?;
        crate::apk::upstream::stanzas(unsigned, limit)
    })
    .await
    .context("index reading task")?
    .context("reading a stored upstream index")?;
    let listing: Vec<ServedFile> = entries
        .into_iter()
        .map(|entry| ServedFile {
            filename: entry.filename,
            stanza: entry.stanza,
            member_id: repo.id,
            sha256: None,
        })
        .collect();
    let change = state
        .store
        .record_upstream_listing(
            repo.id,
            &index.arch,
            &index.sha256,
            &listing,
            state.clock.unix_ms(),
        )
        .await?;
    if let Some(change) = change.filter(|c| c.opened > 0 || c.closed > 0) {
        tracing::info!(
            repository = %format!("{}/{}/{}", repo.owner_name, repo.branch, repo.name),
            arch = %index.arch, opened = change.opened, closed = change.closed,
            "upstream listing recorded"
        );
    }
    state
        .snapshots
        .recorded
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, index.sha256.clone());
    Ok(())
}

/// The answer to a view of a repository that keeps no history.
fn no_history(at: &RepoAddress) -> AppError {
    AppError::BadRequest(format!(
        "{at} is a hosted repository: only remote and virtual repositories keep a history \
         of what they served, to be read at REPOSITORY@TIME or REPOSITORY@SNAPSHOT"
    ))
}

/// The moment `view` names of repository `repo` (`at` in messages), in Unix
/// milliseconds: its time, not in the future, or its snapshot's.
pub async fn moment(
    state: &AppState,
    at: &RepoAddress,
    repo: &Repository,
    view: &View,
) -> AppResult<i64> {
    if matches!(
        crate::registry::virtuals::kind_of(state, repo.id).await?,
        Kind::Hosted
    ) {
        return Err(no_history(at));
    }
    match view {
        View::Time(at_ms) => {
            let now = state.clock.unix_ms();
            if *at_ms > now {
                return Err(AppError::BadRequest(format!(
                    "{at}@{view} is in the future (it is {} now): a view shows what was \
                     served at a past moment",
                    rfc3339_ms(now)
                )));
            }
            Ok(*at_ms)
        }
        View::Snapshot(name) => state
            .store
            .snapshot(repo.id, name.as_str())
            .await?
            .map(|snapshot| snapshot.at_ms)
            .ok_or_else(|| {
                AppError::NotFound(format!(
                    "{at} has no snapshot named {name} (alpine-registry snapshot list {at} \
                     lists them)"
                ))
            }),
    }
}

/// The index of `arch` that `repo` served at `at_ms`, rendered and signed with the
/// owner's keys of now. 404 when it listed nothing of `arch` by then.
pub async fn view_index(
    state: &AppState,
    owner: &Owner,
    repo: &Repository,
    view: &View,
    arch: &Arch,
    at_ms: i64,
) -> AppResult<Arc<RenderedView>> {
    let place = format!("{}/{}/{}@{view}", repo.owner_name, repo.branch, repo.name);
    let keys = state.indexer.signing_key_names(owner).await?.join(",");
    let key = ViewKey {
        repository_id: repo.id,
        arch: arch.to_string(),
        at_ms,
        keys,
    };
    if let Some(rendered) = state
        .snapshots
        .views
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .rendered
        .get(&key)
    {
        return Ok(rendered.clone());
    }
    let (first, changed) = state
        .store
        .served_span(repo.id, arch.as_str(), at_ms)
        .await?;
    let (Some(first), Some(changed)) = (first, changed) else {
        return Err(AppError::NotFound(format!(
            "no index for {place}/{arch}: {}",
            match first {
                Some(first) => format!(
                    "the repository first served one for {arch} at {}",
                    rfc3339_ms(first)
                ),
                None => format!("the repository has not served one for {arch}"),
            }
        )));
    };
    let _ = first;
    let mut rows = state
        .store
        .served_files(repo.id, arch.as_str(), Some(at_ms))
        .await?;
    rows.sort_by(|a, b| {
        let (a, b) = (
            crate::apk::index::parse_stanza(&a.stanza),
            crate::apk::index::parse_stanza(&b.stanza),
        );
        crate::apk::index::compare_entries(
            (&a.name, &a.version, &a.checksum),
            (&b.name, &b.version, &b.checksum),
        )
    });
    let rendered = crate::registry::virtuals::render(state, owner, &place, &rows).await?;
    let view = Arc::new(RenderedView {
        sha256: hex::encode(Sha256::digest(&rendered.content)),
        content: bytes::Bytes::from(rendered.content),
        adb: rendered.adb.map(|adb| {
            let sha256 = hex::encode(Sha256::digest(&adb));
            (bytes::Bytes::from(adb), sha256)
        }),
        modified_ms: changed,
    });
    if at_ms < state.clock.unix_ms().saturating_sub(SETTLED_MS) {
        let size = view.content.len() + view.adb.as_ref().map_or(0, |(adb, _)| adb.len());
        let mut views = state
            .snapshots
            .views
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if views.bytes + size > VIEW_CACHE_BYTES {
            views.rendered.clear();
            views.bytes = 0;
        }
        if size <= VIEW_CACHE_BYTES {
            views.bytes += size;
            views.rendered.insert(key, view.clone());
        }
    }
    Ok(view)
}

/// A package file a remote or virtual repository lists (now, or at a moment of its
/// history), as it is served.
pub enum ServedPackage {
    /// A stored blob.
    Blob {
        sha256: String,
        size: u64,
        /// When it became current at its path.
        modified_ms: i64,
    },
    /// A remote repository's file, stored or being fetched.
    Fetched(Fetched),
}

/// The package file `file` of `arch` that `repo` lists at `at_ms` (None: now), as the
/// repository its row names serves it.
pub async fn file(
    state: &AppState,
    owner: &Owner,
    repo: &Repository,
    arch: &Arch,
    file: &PackageFile,
    at_ms: Option<i64>,
) -> AppResult<ServedPackage> {
    let place = format!("{}/{}/{}", repo.owner_name, repo.branch, repo.name);
    let not_listed = || {
        AppError::NotFound(format!(
            "no package file {arch}/{file} in {place}{} (its index does not list it)",
            match at_ms {
                Some(at_ms) => format!(" at {}", rfc3339_ms(at_ms)),
                None => String::new(),
            }
        ))
    };
    let mut row = state
        .store
        .served_file(repo.id, arch.as_str(), file.as_str(), at_ms)
        .await?;
    if row.is_none() && at_ms.is_none() {
        // Not listed by the index built last: build it, if the members changed.
        if let Kind::Virtual(members) = crate::registry::virtuals::kind_of(state, repo.id).await? {
            match crate::registry::virtuals::index(state, owner, repo, &members, arch).await {
                Ok(_) | Err(AppError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            row = state
                .store
                .served_file(repo.id, arch.as_str(), file.as_str(), None)
                .await?;
        }
    }
    let row = row.ok_or_else(not_listed)?;
    let fields = crate::apk::index::parse_stanza(&row.stanza);
    if let Some(sha256) = row.sha256 {
        let size = match fields.size {
            Some(size) => size,
            None => state.blobs.size(&sha256).await?,
        };
        return Ok(ServedPackage::Blob {
            sha256,
            size,
            modified_ms: row.first_ms,
        });
    }
    let never_cached = || {
        AppError::NotFound(format!(
            "{arch}/{file} of {place}{} was never cached, and the upstream no longer lists \
             that file",
            match at_ms {
                Some(at_ms) => format!(" at {}", rfc3339_ms(at_ms)),
                None => String::new(),
            }
        ))
    };
    let member = state
        .store
        .repository_by_id(row.member_id)
        .await?
        .ok_or_else(never_cached)?;
    let Kind::Remote(upstream) = crate::registry::virtuals::kind_of(state, member.id).await? else {
        return Err(never_cached());
    };
    match state
        .store
        .upstream_file(member.id, arch.as_str(), file.as_str())
        .await?
    {
        Some(stored) if stored.checksum == fields.checksum => {
            return Ok(ServedPackage::Fetched(Fetched::Stored(stored)))
        }
        Some(_) => return Err(never_cached()),
        None => {}
    }
    // Fetched from upstream only while its index lists the very file this row lists.
    let index = crate::registry::remote::index(state, owner, &member, &upstream, arch).await?;
    let listed =
        crate::registry::remote::entry_of(&index, file, state.config.upstream.max_index_bytes)
            .await?;
    if listed.is_none_or(|entry| entry.checksum != fields.checksum) {
        return Err(never_cached());
    }
    Ok(ServedPackage::Fetched(
        crate::registry::remote::file(state, owner, &member, &upstream, arch, file).await?,
    ))
}

/// The repository `at` names, of an existing owner, when it keeps a history.
async fn with_history(state: &AppState, at: &RepoAddress) -> AppResult<(Owner, Repository)> {
    let owner = crate::registry::accounts::owner(state, at.owner.as_str()).await?;
    let repo = state
        .store
        .repository(&crate::registry::repo_ref(owner.id, at))
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no repository {at}")))?;
    if matches!(
        crate::registry::virtuals::kind_of(state, repo.id).await?,
        Kind::Hosted
    ) {
        return Err(no_history(at));
    }
    Ok((owner, repo))
}

/// The default name of a snapshot taken at `at_ms`: `20261206t223000z`.
pub fn default_name(at_ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(at_ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!("[year][month][day]t[hour][minute][second]z");
    at.format(&format).unwrap_or_else(|_| at_ms.to_string())
}

/// Records the current time under `name` (default: the time, `default_name`) as a
/// snapshot of the remote or virtual repository `at`. 409 when the name is taken.
pub async fn create(
    state: &AppState,
    actor: &Actor,
    at: &RepoAddress,
    name: Option<SnapshotName>,
) -> AppResult<Snapshot> {
    let (owner, repo) = with_history(state, at).await?;
    let at_ms = state.clock.unix_ms();
    let name = match name {
        Some(name) => name,
        None => SnapshotName::parse(&default_name(at_ms))?,
    };
    let snapshot = Snapshot {
        name: name.to_string(),
        at_ms,
    };
    let entry = actor.entry(
        state,
        "snapshot.create",
        Some(&owner),
        format!("{at}@{name}"),
        serde_json::json!({ "at": rfc3339_ms(at_ms) }),
    );
    state
        .store
        .create_snapshot(repo.id, &snapshot, Some(&entry))
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(_) => AppError::Conflict(format!(
                "{at} has a snapshot named {name} already: choose another name"
            )),
            other => other.into(),
        })?;
    Ok(snapshot)
}

/// The snapshots of the remote or virtual repository `at`, oldest first.
pub async fn list(state: &AppState, at: &RepoAddress) -> AppResult<Vec<Snapshot>> {
    let (_, repo) = with_history(state, at).await?;
    Ok(state.store.snapshots(repo.id).await?)
}

/// Removes the snapshot `name` of `at` (its moment stays readable by its time). 404 when
/// there is none of that name.
pub async fn remove(
    state: &AppState,
    actor: &Actor,
    at: &RepoAddress,
    name: &SnapshotName,
) -> AppResult<()> {
    let (owner, repo) = with_history(state, at).await?;
    let entry = actor.entry(
        state,
        "snapshot.remove",
        Some(&owner),
        format!("{at}@{name}"),
        serde_json::json!({}),
    );
    if state
        .store
        .delete_snapshot(repo.id, name.as_str(), Some(&entry))
        .await?
    {
        Ok(())
    } else {
        Err(AppError::NotFound(format!(
            "{at} has no snapshot named {name}"
        )))
    }
}

/// What `fsck` finds wrong with the history of a virtual repository: a hosted member's
/// file that its history lists, missing from blob storage (its views would fail to serve
/// it).
pub async fn check(state: &AppState, repo: &Repository) -> anyhow::Result<Vec<String>> {
    let place = format!("{}/{}/{}", repo.owner_name, repo.branch, repo.name);
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for row in state.store.served_history(repo.id).await? {
        let Some(sha256) = row.sha256 else { continue };
        if !seen.insert(sha256.clone()) {
            continue;
        }
        match state.blobs.size(&sha256).await {
            Ok(_) => {}
            Err(crate::blob::BlobError::NotFound(_)) => problems.push(format!(
                "{place}/{}/{}: the blob {sha256} its history lists is missing",
                row.arch, row.filename
            )),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(problems)
}
