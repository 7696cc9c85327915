//! Copying a package file into another repository (promotion, say from `edge` to a
//! release branch), of the same owner or another, and moving it (the copy, then the
//! delete of the source).
//!
//! A copy stores no bytes: the new row names the blob of the source by its sha256 (blobs
//! are shared by content), and goes through the path of an upload (`publish::record`), so
//! the target's index, signed with the target owner's key, lists it before the copy is
//! acknowledged, and a file already stored under its name answers as an upload of it
//! would. A move then deletes the source as a delete does, and returns once the source's
//! index no longer lists it. The blob stays while any row names it; once none does, orphan
//! collection keeps it for `storage.orphan_grace_secs` after the last delete.

use crate::error::{AppError, AppResult};
use crate::names::{Arch, PackageFile, RepoAddress};
use crate::registry::audit::{self, Actor};
use crate::registry::publish::{self, Content, DeleteReason, Published};
use crate::store::{NewPackage, Owner, Package};
use crate::AppState;
use serde_json::json;

/// The file to copy: `at`/`arch`/`file` of `owner` (a noarch package under any
/// architecture).
pub struct Source<'a> {
    pub owner: &'a Owner,
    pub at: &'a RepoAddress,
    pub arch: &'a Arch,
    pub file: &'a PackageFile,
}

/// The repository to copy into: `at` of `owner`.
pub struct Target<'a> {
    pub owner: &'a Owner,
    pub at: &'a RepoAddress,
}

/// What a copy did.
#[derive(Debug, Clone)]
pub struct Copied {
    /// The source's row, as it was found.
    pub source: Package,
    /// The target's row, as an upload of the file answers it.
    pub published: Published,
    /// Whether the source was deleted (a move).
    pub moved: bool,
}

/// Copies the file `source` names into `target` (the caller has checked read on the
/// source's owner and write on the target's); with `remove_source`, then deletes the
/// source. `name`, when given, is the package name the file must have. Returns once the
/// target's index lists the file and, for a move, the source's no longer does.
pub async fn copy(
    state: &AppState,
    actor: &Actor,
    source: &Source<'_>,
    name: Option<&str>,
    target: &Target<'_>,
    remove_source: bool,
) -> AppResult<Copied> {
    let started = std::time::Instant::now();
    let result = copy_counted(state, actor, source, name, target, remove_source).await;
    publish::count(
        &state.metrics.copies,
        &state.metrics.copy_duration,
        &result,
        started,
    );
    result
}

async fn copy_counted(
    state: &AppState,
    actor: &Actor,
    source: &Source<'_>,
    name: Option<&str>,
    target: &Target<'_>,
    remove_source: bool,
) -> AppResult<Copied> {
    if source.owner.id == target.owner.id
        && source.at.branch == target.at.branch
        && source.at.repository == target.at.repository
    {
        return Err(AppError::BadRequest(format!(
            "{} is the repository the file is in: name another branch, repository or owner \
             to copy it to",
            target.at
        )));
    }
    crate::registry::remote::refuse_changes(state, target.owner, target.at, "copies").await?;
    let gone = || {
        AppError::NotFound(format!(
            "{}/{}/{} not found",
            source.at, source.arch, source.file
        ))
    };
    let found = publish::find(state, source.owner, source.at, source.arch, source.file).await?;
    if name.is_some_and(|name| name != found.name) {
        return Err(AppError::NotFound(format!(
            "{}/{}/{} is a file of package {}, not of {}",
            source.at,
            source.arch,
            source.file,
            found.name,
            name.unwrap_or_default()
        )));
    }
    crate::registry::keyring::refuse_name(state, target.owner, &found.name).await?;
    publish::precheck(state, target.owner, target.at, None).await?;
    // The row may have gone since it was found; its stanza is read with it or not at all.
    let stanza = state
        .store
        .package_stanza(found.id)
        .await?
        .ok_or_else(gone)?;
    let new_package = NewPackage {
        arch: found.arch.clone(),
        name: found.name.clone(),
        version: found.version.clone(),
        filename: found.filename.clone(),
        checksum: found.checksum.clone(),
        sha256: found.sha256.clone(),
        size: found.size,
        stanza,
    };
    let entry = actor.entry(
        state,
        "package.copy",
        Some(target.owner),
        audit::file_target(target.at, &found.arch, &found.filename),
        json!({
            "source": audit::file_target(source.at, &found.arch, &found.filename),
            "move": remove_source,
        }),
    );
    let published = publish::record(
        state,
        target.owner,
        target.at,
        new_package,
        Content::Stored,
        &entry,
    )
    .await?;
    tracing::info!(
        from = %format!("{}/{}/{}", source.at, found.arch, found.filename),
        to = %target.at, "package copied"
    );
    if published.repository_created {
        crate::registry::keyring::add_to(state, target.owner, target.at).await?;
    }
    if remove_source {
        remove(state, actor, source, &found).await?;
    }
    Ok(Copied {
        source: found,
        published,
        moved: remove_source,
    })
}

/// The delete of a move, once the target lists the file: the row found (by its own
/// architecture, so a noarch file found under another goes), unless it went meanwhile.
async fn remove(
    state: &AppState,
    actor: &Actor,
    source: &Source<'_>,
    found: &Package,
) -> AppResult<()> {
    let arch = Arch::parse(&found.arch)?;
    let file = PackageFile::parse(&found.filename)?;
    match publish::delete(
        state,
        actor,
        DeleteReason::Move,
        source.owner,
        source.at,
        &arch,
        &file,
    )
    .await
    {
        Ok(_) | Err(AppError::NotFound(_)) => Ok(()),
        Err(AppError::BackendUnavailable { cause, .. }) => Err(AppError::BackendUnavailable {
            message: format!(
                "{}/{}/{} was copied, then the database or blob storage became unreachable \
                 before the source was deleted: delete it once they are back",
                source.at, found.arch, found.filename
            ),
            cause,
        }),
        Err(other) => Err(other),
    }
}
