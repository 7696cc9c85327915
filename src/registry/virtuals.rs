//! Virtual repositories: one repository address in front of several repositories of the
//! same owner (hosted or remote), its members, in order.
//!
//! - The index of an architecture lists the packages of every member's index of that
//!   architecture, the first member listing a file name (`{name}-{version}.apk`) winning,
//!   sorted as hosted indexes are, described as the virtual repository and signed with the
//!   owner's keys (`Packages.adb` too, from the same entries). A member's entries are
//!   taken from what it serves: a hosted member's published index (built first when a
//!   change waits for it), a remote member's verified upstream index (refreshed when due).
//! - The built index is kept in the database with a fingerprint of what it was built from
//!   (the members' served indexes and the owner's keys); each request computes the
//!   fingerprint again and builds anew when it differs, so the index follows every change
//!   of a member at the next request and every instance serves the same bytes. Each build
//!   records its listing in the repository's history (`registry::snapshots`), which also
//!   says which member each listed file came from: downloads are resolved through it.
//! - Its kind and its members never change; a member cannot be removed while a virtual
//!   repository lists it. It takes no uploads, deletes or copies.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::apk::adb::IndexPackage;
use crate::apk::upstream::ListedStanza;
use crate::error::{AppError, AppResult};
use crate::names::{Arch, RepoAddress};
use crate::registry::audit::Actor;
use crate::registry::remote::Locks;
use crate::store::{Owner, Repository, ServedFile, StoreError, Upstream, VirtualIndex};
use crate::AppState;

/// Virtual repositories as this process serves them: the members of each repository id
/// (which never change), and one build at a time of each index.
pub struct Virtuals {
    members: Mutex<HashMap<i64, Option<Arc<Vec<i64>>>>>,
    building: Locks<(i64, String)>,
}

impl Default for Virtuals {
    fn default() -> Self {
        Virtuals {
            members: Mutex::new(HashMap::new()),
            building: Locks::new(),
        }
    }
}

/// What a repository is.
#[derive(Debug, Clone)]
pub enum Kind {
    /// Takes uploads: its index is built from its package rows.
    Hosted,
    /// A caching proxy of an upstream repository (`registry::remote`).
    Remote(Arc<Upstream>),
    /// The merged indexes of its members, by repository id, in order.
    Virtual(Arc<Vec<i64>>),
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Hosted => "hosted",
            Kind::Remote(_) => "remote",
            Kind::Virtual(_) => "virtual",
        }
    }
}

/// The members of repository `id`, in order; None when it is not virtual.
pub async fn members_of(state: &AppState, id: i64) -> AppResult<Option<Arc<Vec<i64>>>> {
    if let Some(members) = state
        .virtuals
        .members
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id)
    {
        return Ok(members.clone());
    }
    // Virtual from the transaction that creates it, with members that never change, and
    // ids are never reused: what is read once holds for as long as the id exists.
    let members = state.store.virtual_members(id).await?.map(Arc::new);
    state
        .virtuals
        .members
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, members.clone());
    Ok(members)
}

/// What repository `id` is.
pub async fn kind_of(state: &AppState, id: i64) -> AppResult<Kind> {
    if let Some(upstream) = crate::registry::remote::upstream_of(state, id).await? {
        return Ok(Kind::Remote(upstream));
    }
    Ok(match members_of(state, id).await? {
        Some(members) => Kind::Virtual(members),
        None => Kind::Hosted,
    })
}

/// The answer to a change of the packages of a virtual repository.
pub fn read_only(at: &RepoAddress, what: &str) -> AppError {
    AppError::MethodNotAllowed(format!(
        "{at} is a virtual repository (the merged indexes of its members): {what} into it are \
         refused; publish into one of its members"
    ))
}

/// Creates the virtual repository `at` of an existing owner, listing `members` (hosted
/// or remote repositories of the same owner) in order.
pub async fn create(
    state: &AppState,
    actor: &Actor,
    at: &RepoAddress,
    members: &[RepoAddress],
) -> AppResult<Repository> {
    let owner = crate::registry::accounts::owner(state, at.owner.as_str()).await?;
    if members.is_empty() {
        return Err(AppError::BadRequest(
            "a virtual repository needs at least one member (OWNER/BRANCH/REPOSITORY, \
             comma-separated)"
                .into(),
        ));
    }
    let mut ids = Vec::with_capacity(members.len());
    let mut seen = HashSet::new();
    for member in members {
        if member.owner != at.owner {
            return Err(AppError::BadRequest(format!(
                "{member} is not a repository of {}: the members of a virtual repository are \
                 repositories of its owner",
                at.owner
            )));
        }
        if member == at {
            return Err(AppError::BadRequest(format!(
                "{at} cannot be a member of itself"
            )));
        }
        if !seen.insert(member.clone()) {
            return Err(AppError::BadRequest(format!(
                "{member} is listed twice among the members"
            )));
        }
        let repo = state
            .store
            .repository(&crate::registry::repo_ref(owner.id, member))
            .await?
            .ok_or_else(|| {
                AppError::BadRequest(format!(
                    "no repository {member}: a member must exist (create it first)"
                ))
            })?;
        if members_of(state, repo.id).await?.is_some() {
            return Err(AppError::BadRequest(format!(
                "{member} is a virtual repository: the members of a virtual repository are \
                 hosted or remote repositories"
            )));
        }
        ids.push(repo.id);
    }
    let entry = actor.entry(
        state,
        "repository.create",
        Some(&owner),
        at.to_string(),
        serde_json::json!({
            "members": members.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
    );
    state
        .store
        .create_virtual_repository(&crate::registry::repo_ref(owner.id, at), &ids, Some(&entry))
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                AppError::Conflict(format!("repository {at} already exists"))
            }
            other => other.into(),
        })
}

/// One member of a virtual repository, as shown.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct MemberInfo {
    /// `OWNER/BRANCH/REPOSITORY`.
    pub repository: String,
    /// `hosted` or `remote`.
    pub kind: String,
}

/// The members of repository `id`, in order, with their kinds; None when it is not
/// virtual.
pub async fn members(state: &AppState, id: i64) -> AppResult<Option<Vec<MemberInfo>>> {
    let Some(ids) = members_of(state, id).await? else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(ids.len());
    for member in ids.iter() {
        let Some(repo) = state.store.repository_by_id(*member).await? else {
            continue;
        };
        out.push(MemberInfo {
            repository: format!("{}/{}/{}", repo.owner_name, repo.branch, repo.name),
            kind: kind_of(state, repo.id).await?.name().to_string(),
        });
    }
    Ok(Some(out))
}

/// The members of the repository `owner/branch/repository`, for the pages; None when it
/// is not virtual (or not there).
pub async fn members_by_name(
    state: &AppState,
    owner: &str,
    branch: &str,
    repository: &str,
) -> AppResult<Option<Vec<MemberInfo>>> {
    let Some(owner) = state.store.owner_by_name(owner).await? else {
        return Ok(None);
    };
    let repo_ref = crate::store::RepoRef {
        owner_id: owner.id,
        branch: branch.to_string(),
        repository: repository.to_string(),
    };
    match state.store.repository(&repo_ref).await? {
        Some(repo) => members(state, repo.id).await,
        None => Ok(None),
    }
}

/// What one member serves for an architecture.
struct Source {
    member: Repository,
    /// The SHA-256 of the member's index (a hosted member's as served, a remote member's
    /// upstream content), None when it serves none for the architecture.
    digest: Option<String>,
    /// The index as the member serves it (a remote member: as upstream signed it).
    signed: Option<bytes::Bytes>,
    remote: bool,
}

/// What each member serves for `arch`, in order.
async fn sources(
    state: &AppState,
    owner: &Owner,
    members: &[i64],
    arch: &Arch,
) -> AppResult<Vec<Source>> {
    let mut out = Vec::with_capacity(members.len());
    for id in members {
        // A member removed with its owner meanwhile has nothing to give.
        let Some(member) = state.store.repository_by_id(*id).await? else {
            continue;
        };
        let (digest, signed, remote) = match kind_of(state, member.id).await? {
            Kind::Remote(upstream) => {
                match crate::registry::remote::index(state, owner, &member, &upstream, arch).await {
                    Ok(index) => (
                        Some(index.sha256),
                        Some(bytes::Bytes::from(index.content)),
                        true,
                    ),
                    Err(AppError::NotFound(_)) => (None, None, true),
                    Err(e) => return Err(e),
                }
            }
            Kind::Hosted => {
                match crate::registry::indexes::hosted(state, owner, &member, arch).await? {
                    Some(index) => (Some(index.sha256), Some(index.content), false),
                    None => (None, None, false),
                }
            }
            Kind::Virtual(_) => (None, None, false),
        };
        out.push(Source {
            member,
            digest,
            signed,
            remote,
        });
    }
    Ok(out)
}

/// What an index built from `sources` and signed by `keys` would be named by: equal
/// fingerprints, equal bytes.
fn fingerprint(sources: &[Source], keys: &[String]) -> String {
    let mut hasher = Sha256::new();
    for source in sources {
        hasher.update(format!(
            "{} {}\n",
            source.member.id,
            source.digest.as_deref().unwrap_or("-")
        ));
    }
    hasher.update(format!("keys {}\n", keys.join(",")));
    hex::encode(hasher.finalize())
}

/// The index of `arch` of the virtual repository `repo` (whose members are `members`):
/// the one stored when the members serve what it was built from, else built now. 404 when
/// no member serves an index for `arch`.
pub async fn index(
    state: &AppState,
    owner: &Owner,
    repo: &Repository,
    members: &[i64],
    arch: &Arch,
) -> AppResult<VirtualIndex> {
    let keys = state.indexer.signing_key_names(owner).await?;
    let current = sources(state, owner, members, arch).await?;
    let fresh = fingerprint(&current, &keys);
    let stored = state.store.virtual_index(repo.id, arch.as_str()).await?;
    if let Some(stored) = stored.filter(|s| s.fingerprint == fresh) {
        return Ok(stored);
    }
    let lock = state
        .virtuals
        .building
        .of(&(repo.id, arch.as_str().to_string()));
    let _one_at_a_time = lock.lock().await;
    // Read again once it is this request's turn: another may have built it meanwhile,
    // and a build records what the members serve when it starts.
    let built_ms = state.clock.unix_ms();
    let keys = state.indexer.signing_key_names(owner).await?;
    let current = sources(state, owner, members, arch).await?;
    let fresh = fingerprint(&current, &keys);
    let stored = state.store.virtual_index(repo.id, arch.as_str()).await?;
    if let Some(stored) = stored.filter(|s| s.fingerprint == fresh) {
        return Ok(stored);
    }
    if current.iter().all(|s| s.signed.is_none()) {
        return Err(AppError::NotFound(format!(
            "no index for {}/{}/{}/{arch}: no member of the virtual repository serves one",
            repo.owner_name, repo.branch, repo.name
        )));
    }
    build(state, owner, repo, arch, current, fresh, built_ms).await
}

/// A package the merged index lists, and where it comes from.
struct Listed {
    entry: ListedStanza,
    member_id: i64,
    sha256: Option<String>,
}

/// Builds, signs and stores the index of `arch` from `sources`.
async fn build(
    state: &AppState,
    owner: &Owner,
    repo: &Repository,
    arch: &Arch,
    sources: Vec<Source>,
    fingerprint: String,
    built_ms: i64,
) -> AppResult<VirtualIndex> {
    let description = format!("{}/{}/{}", repo.owner_name, repo.branch, repo.name);
    let mut listed: Vec<Listed> = Vec::new();
    let mut names = HashSet::new();
    for source in sources {
        let Some(signed) = source.signed else {
            continue;
        };
        let limit = if source.remote {
            state.config.upstream.max_index_bytes
        } else {
            // The registry's own output.
            u64::MAX
        };
        let entries = tokio::task::spawn_blocking(move || {
            let (_, unsigned) = crate::apk::sign::split_signed(&signed)?;
            crate::apk::upstream::stanzas(unsigned, limit)
        })
        .await
        .context("index reading task")?
        .with_context(|| {
            format!(
                "reading the index of {}/{}/{}",
                source.member.owner_name, source.member.branch, source.member.name
            )
        })?;
        // A hosted member's files by name, to keep the blob of each in the history.
        let blobs: HashMap<String, (String, String)> = if source.remote {
            HashMap::new()
        } else {
            state
                .store
                .list_packages(source.member.id)
                .await?
                .into_iter()
                .filter(|p| p.arch == arch.as_str() || p.arch == "noarch")
                .map(|p| (p.filename, (p.checksum, p.sha256)))
                .collect()
        };
        for entry in entries {
            if !names.insert(entry.filename.clone()) {
                continue;
            }
            let sha256 = blobs
                .get(&entry.filename)
                .filter(|(checksum, _)| *checksum == entry.checksum)
                .map(|(_, sha256)| sha256.clone());
            listed.push(Listed {
                entry,
                member_id: source.member.id,
                sha256,
            });
        }
    }
    listed.sort_by(|a, b| {
        crate::apk::index::compare_entries(
            (&a.entry.name, &a.entry.version, &a.entry.checksum),
            (&b.entry.name, &b.entry.version, &b.entry.checksum),
        )
    });
    let rendered = render(state, owner, &description, &listed).await?;
    let index = VirtualIndex {
        repository_id: repo.id,
        arch: arch.to_string(),
        fingerprint,
        sha256: hex::encode(Sha256::digest(&rendered.content)),
        content: rendered.content,
        adb_sha256: rendered
            .adb
            .as_ref()
            .ok()
            .map(|adb| hex::encode(Sha256::digest(adb))),
        adb_error: rendered.adb.as_ref().err().cloned(),
        adb: rendered.adb.ok(),
        entries: listed.len() as i64,
        modified_ms: built_ms,
        built_ms,
    };
    let files: Vec<ServedFile> = listed
        .into_iter()
        .map(|l| ServedFile {
            filename: l.entry.filename,
            stanza: l.entry.stanza,
            member_id: l.member_id,
            sha256: l.sha256,
        })
        .collect();
    match state.store.save_virtual_index(&index, &files).await? {
        Some(change) => tracing::info!(
            repository = %description, arch = %arch, entries = index.entries,
            opened = change.opened, closed = change.closed,
            "virtual index built"
        ),
        None => tracing::debug!(
            repository = %description, arch = %arch,
            "virtual index built from a later reading is stored already"
        ),
    }
    state
        .store
        .virtual_index(repo.id, arch.as_str())
        .await?
        .ok_or_else(|| AppError::NotFound(format!("repository {description} was removed")))
}

/// An index rendered and signed: `APKINDEX.tar.gz`, and `Packages.adb` or why there is
/// none.
pub struct Rendered {
    pub content: Vec<u8>,
    pub adb: Result<Vec<u8>, String>,
}

/// Any type that holds an index entry.
pub trait HasStanza: Sync {
    fn stanza(&self) -> &str;
}

impl HasStanza for crate::apk::upstream::ListedStanza {
    fn stanza(&self) -> &str {
        &self.stanza
    }
}

impl HasStanza for Listed {
    fn stanza(&self) -> &str {
        &self.entry.stanza
    }
}

/// Renders the index of `entries` (in index order) under `description`, signed with the
/// owner's keys, with its `Packages.adb` unless an entry cannot be written in that format.
pub async fn render<T: HasStanza>(
    state: &AppState,
    owner: &Owner,
    description: &str,
    entries: &[T],
) -> AppResult<Rendered> {
    let stanzas: Vec<String> = entries.iter().map(|e| e.stanza().to_string()).collect();
    let text = description.to_string();
    let (unsigned, packages) = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = stanzas.iter().map(String::as_str).collect();
        let unsigned = crate::apk::index::write_unsigned_index(&text, &refs)?;
        let packages: Result<Vec<IndexPackage>, String> = stanzas
            .iter()
            .map(|s| IndexPackage::from_stanza(s).map_err(|e| e.to_string()))
            .collect();
        crate::apk::ApkResult::Ok((unsigned, packages))
    })
    .await
    .context("index rendering task")?
    .context("rendering an index")?;
    let (content, _) = state.indexer.sign(owner, unsigned).await?;
    let adb = match packages {
        Ok(packages) => Ok(state
            .indexer
            .sign_adb(owner, description.to_string(), packages)
            .await?),
        Err(reason) => Err(reason),
    };
    Ok(Rendered { content, adb })
}
