//! Repositories: created explicitly or by the first upload, listed, removed.

use crate::error::{AppError, AppResult};
use crate::names::{BranchName, OwnerName, RepoAddress, RepoName};
use crate::registry::audit::Actor;
use crate::store::{Owner, RemovedRepository, Repository, RepositorySummary, StoreError};
use crate::AppState;

/// The answer to an upload into a repository that does not exist while
/// `repositories.auto_create` is off.
pub fn missing_for_upload(at: &RepoAddress) -> AppError {
    AppError::NotFound(format!(
        "no repository {at}: an administrator creates it with \
         \"alpine-registry repository create {at}\" (repositories.auto_create is off)"
    ))
}

async fn owner(state: &AppState, name: &OwnerName) -> AppResult<Owner> {
    state
        .store
        .owner_by_name(name.as_str())
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no owner named {:?}", name.as_str())))
}

/// Creates an empty repository of an existing owner; an error when it exists.
pub async fn create(state: &AppState, actor: &Actor, at: &RepoAddress) -> AppResult<Repository> {
    let owner = owner(state, &at.owner).await?;
    let repo = crate::registry::repo_ref(owner.id, at);
    let entry = actor.entry(
        state,
        "repository.create",
        Some(&owner),
        at.to_string(),
        serde_json::json!({}),
    );
    let created = state
        .store
        .create_repository(&repo, Some(&entry))
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                AppError::Conflict(format!("repository {at} already exists"))
            }
            other => other.into(),
        })?;
    crate::registry::keyring::add_to(state, &owner, at).await?;
    Ok(created)
}

/// Every repository, or those of `owner`, with the architectures served, the number of
/// packages and when the newest was uploaded; ordered by owner, branch and name.
pub async fn list(
    state: &AppState,
    owner_name: Option<&OwnerName>,
) -> AppResult<Vec<RepositorySummary>> {
    let owner_id = match owner_name {
        Some(name) => Some(owner(state, name).await?.id),
        None => None,
    };
    Ok(state.store.repository_summaries(owner_id).await?)
}

/// Deletes the repository with its packages and every index, in one transaction: all of
/// its `APKINDEX.tar.gz` and package downloads answer 404 from then on. Blobs no package
/// references any more are left to orphan collection (`storage.orphan_grace_secs`).
pub async fn remove(
    state: &AppState,
    actor: &Actor,
    at: &RepoAddress,
) -> AppResult<RemovedRepository> {
    let owner = owner(state, &at.owner).await?;
    let repo = crate::registry::repo_ref(owner.id, at);
    let entry = actor.entry(
        state,
        "repository.remove",
        Some(&owner),
        at.to_string(),
        serde_json::json!({}),
    );
    state
        .store
        .delete_repository(&repo, Some(&entry))
        .await?
        .ok_or_else(|| {
            AppError::NotFound(format!(
                "no repository {at} (\"alpine-registry repository list --owner {}\" lists those \
             of {})",
                at.owner, at.owner
            ))
        })
}

/// Rebuilds and re-signs the indexes of every repository, or of those `target`
/// (`OWNER[/BRANCH[/REPOSITORY]]`) names; returns their names once every new index is
/// served. A target that matches nothing is an error.
pub async fn reindex(state: &AppState, target: Option<&str>) -> AppResult<Vec<String>> {
    let mut parts = target.unwrap_or("").split('/').filter(|p| !p.is_empty());
    let owner = parts.next().map(OwnerName::parse).transpose()?;
    let branch = parts.next().map(BranchName::parse).transpose()?;
    let repository = parts.next().map(RepoName::parse).transpose()?;
    if parts.next().is_some() {
        return Err(AppError::BadRequest(
            "reindex takes OWNER[/BRANCH[/REPOSITORY]]".into(),
        ));
    }
    let owner_id = match &owner {
        Some(name) => Some(
            crate::registry::accounts::owner(state, name.as_str())
                .await?
                .id,
        ),
        None => None,
    };
    let repositories = state
        .store
        .list_repositories(
            owner_id,
            branch.as_ref().map(BranchName::as_str),
            repository.as_ref().map(RepoName::as_str),
        )
        .await?;
    if let (Some(target), true) = (target.filter(|t| !t.is_empty()), repositories.is_empty()) {
        return Err(AppError::NotFound(format!(
            "no repository matches {target}: check the owner, branch and repository names"
        )));
    }
    let mut reindexed = Vec::new();
    for repo in &repositories {
        let owner = state
            .store
            .owner_by_name(&repo.owner_name)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no owner named {}", repo.owner_name)))?;
        let generation = state.store.bump_generation(repo.id).await?;
        state.indexer.wait_built(&owner, repo, generation).await?;
        reindexed.push(format!("{}/{}/{}", repo.owner_name, repo.branch, repo.name));
    }
    Ok(reindexed)
}
