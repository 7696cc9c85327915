//! Retention: rules that delete old versions of packages, the pin that keeps a file from
//! them, and the runs that apply them.
//!
//! A rule applies to an owner, a branch of it or one repository; for a repository the
//! most specific rule that exists applies, alone. Within each package name and
//! architecture, versions are ranked newest first in apk's version order; a rule keeps the
//! newest `keep_versions`, and/or deletes versions uploaded longer than `max_age` ago
//! unless among the newest `keep_min`. Name globs choose the names it applies to. A pinned
//! file is never deleted, and neither is the last file of a name and architecture.
//!
//! Every deletion goes through `publish::delete`, the path of an HTTP DELETE, so the
//! signed index no longer lists a file by the time its deletion is counted. Runs are
//! applied after each publish into a repository with a count rule (spawned, so the
//! publish's answer does not wait), on a schedule (`retention.interval_secs`) by a pass
//! over every rule, and on demand (`apply`). One run of a repository goes at a time among
//! every process on the database (`Store::lock_retention`), and a pin waits for it, so a
//! run never deletes a file pinned after it looked; one scheduled pass goes at a time
//! (`Store::try_lock_retention_pass`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::apk::version;
use crate::error::{AppError, AppResult};
use crate::names::{Arch, BranchName, OwnerName, PackageFile, RepoAddress, RepoName};
use crate::registry::audit::{self, Actor};
use crate::registry::publish::{self, DeleteReason};
use crate::store::{Owner, Repository, RetainedFile, RetentionRule};
use crate::AppState;

/// What one process keeps for retention.
#[derive(Default)]
pub struct Retention {
    /// One run at a time in this process (the database's lock keeps other processes out),
    /// so that runs waiting for each other hold no connection of the lock pool.
    running: tokio::sync::Mutex<()>,
    /// Repositories with a run after a publish waiting to start: a burst of publishes
    /// queues one more run, not one each.
    queued: Mutex<HashSet<i64>>,
    /// The scheduled pass of this process, if one is under way.
    pass: tokio::sync::Mutex<()>,
}

/// What a rule, a plan or an apply is about: `OWNER[/BRANCH[/REPOSITORY]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub owner: OwnerName,
    pub branch: Option<BranchName>,
    pub repository: Option<RepoName>,
}

impl Target {
    /// Parses `OWNER[/BRANCH[/REPOSITORY]]`.
    pub fn parse(text: &str) -> AppResult<Target> {
        let parts: Vec<&str> = text.split('/').collect();
        let refused = || {
            AppError::BadRequest(format!(
                "invalid target {text:?}: expected OWNER, OWNER/BRANCH or \
                 OWNER/BRANCH/REPOSITORY, e.g. acme/edge/main"
            ))
        };
        match parts[..] {
            [owner] => Target::of(owner, None, None),
            [owner, branch] => Target::of(owner, Some(branch), None),
            [owner, branch, repository] => Target::of(owner, Some(branch), Some(repository)),
            _ => Err(refused()),
        }
    }

    /// The target of `owner`, with a branch and, only with one, a repository.
    pub fn of(owner: &str, branch: Option<&str>, repository: Option<&str>) -> AppResult<Target> {
        if branch.is_none() && repository.is_some() {
            return Err(AppError::BadRequest(
                "a repository is named with its branch: give the branch too".into(),
            ));
        }
        Ok(Target {
            owner: OwnerName::parse(owner)?,
            branch: branch.map(BranchName::parse).transpose()?,
            repository: repository.map(RepoName::parse).transpose()?,
        })
    }

    fn branch_str(&self) -> &str {
        self.branch.as_ref().map_or("", BranchName::as_str)
    }

    fn repository_str(&self) -> &str {
        self.repository.as_ref().map_or("", RepoName::as_str)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.owner)?;
        if let Some(branch) = &self.branch {
            write!(f, "/{branch}")?;
        }
        if let Some(repository) = &self.repository {
            write!(f, "/{repository}")?;
        }
        Ok(())
    }
}

/// What a rule says, as given to `set`.
#[derive(Debug, Clone, Default)]
pub struct RuleSpec {
    pub keep_versions: Option<i64>,
    pub max_age_secs: Option<i64>,
    pub keep_min: Option<i64>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

/// A rule as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Rule {
    /// What the rule applies to: `OWNER`, `OWNER/BRANCH` or `OWNER/BRANCH/REPOSITORY`.
    pub target: String,
    pub owner: String,
    /// None for a rule of the whole owner.
    pub branch: Option<String>,
    /// None for a rule of the owner or of a branch.
    pub repository: Option<String>,
    /// Keeps the newest this many versions of each package name and architecture.
    pub keep_versions: Option<i64>,
    /// Deletes versions uploaded longer ago than this many seconds...
    pub max_age_secs: Option<i64>,
    /// ...unless they are among the newest this many.
    pub keep_min: i64,
    /// Name globs the rule applies to; every name when empty.
    pub include: Vec<String>,
    /// Name globs the rule leaves alone.
    pub exclude: Vec<String>,
    /// When the rule was last set, Unix seconds.
    pub updated_at: i64,
}

impl Rule {
    fn new(owner: &str, rule: &RetentionRule) -> Rule {
        let branch = Some(rule.branch.clone()).filter(|b| !b.is_empty());
        let repository = Some(rule.repository.clone()).filter(|r| !r.is_empty());
        let mut target = owner.to_string();
        for part in [&branch, &repository].into_iter().flatten() {
            target.push('/');
            target.push_str(part);
        }
        Rule {
            target,
            owner: owner.to_string(),
            branch,
            repository,
            keep_versions: rule.keep_versions,
            max_age_secs: rule.max_age_secs,
            keep_min: rule.keep_min,
            include: rule.include.clone(),
            exclude: rule.exclude.clone(),
            updated_at: rule.updated_at,
        }
    }
}

/// Why a file is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// Beyond the newest `keep_versions`.
    Versions,
    /// Older than `max_age`, and not among the newest `keep_min`.
    Age,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::Versions => "versions",
            Reason::Age => "age",
        }
    }
}

/// A file a rule deletes (or deleted).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Deletion {
    /// The download path, relative to the registry's root.
    pub path: String,
    pub arch: String,
    pub file: String,
    pub name: String,
    pub version: String,
    /// When it was uploaded, Unix seconds.
    pub uploaded_at: i64,
    pub reason: Reason,
    /// The reason in words.
    pub why: String,
}

/// What the rules do to one repository.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RepositoryPlan {
    /// `OWNER/BRANCH/REPOSITORY`.
    pub repository: String,
    /// The rule that applies (the most specific); None when no rule does.
    pub rule: Option<Rule>,
    /// The files deleted, oldest version first within each name and architecture.
    pub deletions: Vec<Deletion>,
    /// Pinned files the rule would otherwise have deleted.
    pub pinned: Vec<String>,
}

/// Checks `spec` and stores it as the rule of `target` (of `owner`, whose admin right the
/// caller has checked), replacing any rule of that scope.
pub async fn set(
    state: &AppState,
    actor: &Actor,
    owner: &Owner,
    target: &Target,
    spec: RuleSpec,
) -> AppResult<Rule> {
    if spec.keep_versions.is_none() && spec.max_age_secs.is_none() {
        return Err(AppError::BadRequest(
            "a rule needs keep_versions (--keep-versions N) or max_age (--max-age 90d), or \
             both"
                .into(),
        ));
    }
    if spec.keep_versions.is_some_and(|n| n < 1) {
        return Err(AppError::BadRequest(
            "keep_versions must be at least 1 (the last version is never removed)".into(),
        ));
    }
    if spec.max_age_secs.is_some_and(|secs| secs < 1) {
        return Err(AppError::BadRequest(
            "max_age must be positive, e.g. 90d".into(),
        ));
    }
    if spec.keep_min.is_some() && spec.max_age_secs.is_none() {
        return Err(AppError::BadRequest(
            "keep_min (--keep-min) goes with max_age (--max-age): it says how many of the \
             newest versions an age rule keeps"
                .into(),
        ));
    }
    if spec.keep_min.is_some_and(|n| n < 0) {
        return Err(AppError::BadRequest("keep_min must not be negative".into()));
    }
    for glob in spec.include.iter().chain(&spec.exclude) {
        if glob.is_empty() || glob.contains(['\n', '\r']) {
            return Err(AppError::BadRequest(format!(
                "invalid glob {glob:?}: give a package name pattern such as py3-* on one line"
            )));
        }
        glob::Pattern::new(glob)
            .map_err(|e| AppError::BadRequest(format!("invalid glob {glob:?}: {e}")))?;
    }
    let rule = RetentionRule {
        owner_id: owner.id,
        branch: target.branch_str().to_string(),
        repository: target.repository_str().to_string(),
        keep_versions: spec.keep_versions,
        max_age_secs: spec.max_age_secs,
        keep_min: spec.keep_min.unwrap_or(0),
        include: spec.include,
        exclude: spec.exclude,
        updated_at: state.clock.unix_secs(),
    };
    let entry = actor.entry(
        state,
        "retention.set",
        Some(owner),
        target.to_string(),
        json!({
            "keep_versions": rule.keep_versions,
            "max_age_secs": rule.max_age_secs,
            "keep_min": rule.keep_min,
            "include": rule.include,
            "exclude": rule.exclude,
        }),
    );
    state.store.set_retention_rule(&rule, Some(&entry)).await?;
    tracing::info!(target = %target, "retention rule set");
    Ok(Rule::new(&owner.name, &rule))
}

/// The rules of `owner`, or of every owner.
pub async fn show(state: &AppState, owner: Option<&Owner>) -> AppResult<Vec<Rule>> {
    let rules = state.store.retention_rules(owner.map(|o| o.id)).await?;
    let names: BTreeMap<i64, String> = match owner {
        Some(owner) => BTreeMap::from([(owner.id, owner.name.clone())]),
        None if rules.is_empty() => BTreeMap::new(),
        None => state
            .store
            .list_owners()
            .await?
            .into_iter()
            .map(|o| (o.id, o.name))
            .collect(),
    };
    Ok(rules
        .iter()
        .map(|rule| {
            let name = names
                .get(&rule.owner_id)
                .map_or_else(|| rule.owner_id.to_string(), String::clone);
            Rule::new(&name, rule)
        })
        .collect())
}

/// Removes the rule of exactly `target`.
pub async fn remove(
    state: &AppState,
    actor: &Actor,
    owner: &Owner,
    target: &Target,
) -> AppResult<()> {
    let entry = actor.entry(
        state,
        "retention.remove",
        Some(owner),
        target.to_string(),
        json!({}),
    );
    let removed = state
        .store
        .remove_retention_rule(
            owner.id,
            target.branch_str(),
            target.repository_str(),
            Some(&entry),
        )
        .await?;
    if !removed {
        return Err(AppError::NotFound(format!(
            "no retention rule for {target} (retention show lists the rules)"
        )));
    }
    tracing::info!(target = %target, "retention rule removed");
    Ok(())
}

/// What the rules would delete in the repositories of `target` now; changes nothing.
pub async fn plan(
    state: &AppState,
    owner: &Owner,
    target: &Target,
) -> AppResult<Vec<RepositoryPlan>> {
    let rules = state.store.retention_rules(Some(owner.id)).await?;
    let mut plans = Vec::new();
    for repo in repositories(state, owner, target).await? {
        let files = state.store.retained_files(repo.id).await?;
        plans.push(plan_of(state, owner, &repo, &rules, &files));
    }
    Ok(plans)
}

/// Applies the rules to the repositories of `target` now; returns what each deleted.
pub async fn apply(
    state: &AppState,
    owner: &Owner,
    target: &Target,
) -> AppResult<Vec<RepositoryPlan>> {
    let mut applied = Vec::new();
    for repo in repositories(state, owner, target).await? {
        applied.push(run(state, owner, &repo).await?);
    }
    Ok(applied)
}

/// Pins (or unpins) the file at `at`/`arch`/`file`: a retention rule never deletes a pinned
/// file. Waits for a retention run of the repository under way, so that none deletes the
/// file after this returns.
pub async fn pin(
    state: &AppState,
    actor: &Actor,
    owner: &Owner,
    at: &RepoAddress,
    arch: &Arch,
    file: &PackageFile,
    pinned: bool,
) -> AppResult<crate::store::Package> {
    let found = publish::find(state, owner, at, arch, file).await?;
    let _running = state.retention.running.lock().await;
    let _lock = state.store.lock_retention(found.repository_id).await?;
    let entry = actor.entry(
        state,
        if pinned {
            "package.pin"
        } else {
            "package.unpin"
        },
        Some(owner),
        audit::file_target(at, &found.arch, &found.filename),
        json!({}),
    );
    if !state
        .store
        .set_pinned(found.id, pinned, Some(&entry))
        .await?
    {
        return Err(AppError::NotFound(format!("{at}/{arch}/{file} not found")));
    }
    tracing::info!(
        file = %format!("{at}/{}/{}", found.arch, found.filename), pinned, "package pin set"
    );
    Ok(found)
}

/// After a publish into repository `repository_id` of `owner`: applies its rule, if that
/// has a count, in a task of its own.
pub fn after_publish(state: &AppState, owner: &Owner, repository_id: i64) {
    if !state
        .retention
        .queued
        .lock()
        .expect("retention queue poisoned")
        .insert(repository_id)
    {
        return;
    }
    let (state, owner) = (state.clone(), owner.clone());
    tokio::spawn(async move {
        let result = async {
            let rules = state.store.retention_rules(Some(owner.id)).await?;
            let Some(repo) = state.store.repository_by_id(repository_id).await? else {
                return Ok(());
            };
            if effective(&rules, &repo).is_some_and(|r| r.keep_versions.is_some()) {
                run_queued(&state, &owner, &repo).await?;
            }
            Ok::<_, AppError>(())
        }
        .await;
        // Also when no run started (no count rule, an error before it).
        state
            .retention
            .queued
            .lock()
            .expect("retention queue poisoned")
            .remove(&repository_id);
        if let Err(e) = result {
            tracing::warn!(error = %e, repository_id, "applying retention after a publish");
        }
    });
}

/// A run queued by `after_publish`: leaves the queue once it holds the locks, so that a
/// publish after this reads the files gets a run of its own.
async fn run_queued(state: &AppState, owner: &Owner, repo: &Repository) -> AppResult<()> {
    let running = state.retention.running.lock().await;
    state
        .retention
        .queued
        .lock()
        .expect("retention queue poisoned")
        .remove(&repo.id);
    run_locked(state, owner, repo, running).await.map(drop)
}

/// The scheduled pass: applies every rule to every repository it covers, unless another
/// process's pass is under way. Returns the files deleted.
pub async fn pass(state: &AppState) -> AppResult<usize> {
    let Ok(_local) = state.retention.pass.try_lock() else {
        return Ok(0);
    };
    let Some(_shared) = state.store.try_lock_retention_pass().await? else {
        tracing::debug!("retention pass: another instance's is under way");
        return Ok(0);
    };
    let rules = state.store.retention_rules(None).await?;
    let owners: std::collections::BTreeSet<i64> = rules.iter().map(|r| r.owner_id).collect();
    let mut deleted = 0;
    for owner_id in owners {
        for repo in state
            .store
            .list_repositories(Some(owner_id), None, None)
            .await?
        {
            let Some(owner) = state.store.owner_by_name(&repo.owner_name).await? else {
                continue;
            };
            deleted += run(state, &owner, &repo).await?.deletions.len();
        }
    }
    Ok(deleted)
}

/// Runs `pass` every `retention.interval_secs`, the first at start.
pub fn spawn_schedule(state: AppState) {
    tokio::spawn(async move {
        let mut ticks =
            tokio::time::interval(Duration::from_secs(state.config.retention.interval_secs));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match pass(&state).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "retention pass"),
                Err(e) if e.is_backend_unavailable() => {
                    tracing::warn!(error = %e, "retention pass: skipped, a backend is unreachable")
                }
                Err(e) => tracing::error!(error = %e, "retention pass"),
            }
        }
    });
}

/// The repositories `target` names (of `owner`); NotFound when none.
async fn repositories(
    state: &AppState,
    owner: &Owner,
    target: &Target,
) -> AppResult<Vec<Repository>> {
    let found = state
        .store
        .list_repositories(
            Some(owner.id),
            target.branch.as_ref().map(BranchName::as_str),
            target.repository.as_ref().map(RepoName::as_str),
        )
        .await?;
    if found.is_empty() && target.branch.is_some() {
        return Err(AppError::NotFound(format!(
            "no repository matches {target}: check the branch and repository names"
        )));
    }
    Ok(found)
}

/// Applies the rule of `repo` now, under the locks.
async fn run(state: &AppState, owner: &Owner, repo: &Repository) -> AppResult<RepositoryPlan> {
    let running = state.retention.running.lock().await;
    run_locked(state, owner, repo, running).await
}

async fn run_locked(
    state: &AppState,
    owner: &Owner,
    repo: &Repository,
    _running: tokio::sync::MutexGuard<'_, ()>,
) -> AppResult<RepositoryPlan> {
    let _lock = state.store.lock_retention(repo.id).await?;
    // Read under the lock: what another run deleted is gone, what a pin kept is pinned.
    let rules = state.store.retention_rules(Some(owner.id)).await?;
    let files = state.store.retained_files(repo.id).await?;
    let mut plan = plan_of(state, owner, repo, &rules, &files);
    let at = RepoAddress::parse(&owner.name, &repo.branch, &repo.name)?;
    let rule = plan
        .rule
        .as_ref()
        .map_or(String::new(), |r| r.target.clone());
    let mut deleted = Vec::with_capacity(plan.deletions.len());
    for deletion in std::mem::take(&mut plan.deletions) {
        let arch = Arch::parse(&deletion.arch)?;
        let file = PackageFile::parse(&deletion.file)?;
        let by_rule = Actor::retention(&rule);
        let deleting = publish::delete(
            state,
            &by_rule,
            DeleteReason::Retention,
            owner,
            &at,
            &arch,
            &file,
        );
        match deleting.await {
            Ok(_) => {}
            // Deleted meanwhile (by hand): nothing to count.
            Err(AppError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        }
        state
            .metrics
            .retention_deletions
            .get_or_create(&crate::metrics::RetentionLabels {
                reason: deletion.reason.label(),
            })
            .inc();
        tracing::info!(
            file = %deletion.path, rule = %rule, reason = deletion.reason.label(),
            why = %deletion.why, "deleted by retention"
        );
        deleted.push(deletion);
    }
    plan.deletions = deleted;
    Ok(plan)
}

/// The rule that applies to `repo`: its own, else its branch's, else its owner's.
fn effective<'a>(rules: &'a [RetentionRule], repo: &Repository) -> Option<&'a RetentionRule> {
    let of = |branch: &str, repository: &str| {
        rules.iter().find(|r| {
            r.owner_id == repo.owner_id && r.branch == branch && r.repository == repository
        })
    };
    of(&repo.branch, &repo.name)
        .or_else(|| of(&repo.branch, ""))
        .or_else(|| of("", ""))
}

fn plan_of(
    state: &AppState,
    owner: &Owner,
    repo: &Repository,
    rules: &[RetentionRule],
    files: &[RetainedFile],
) -> RepositoryPlan {
    let address = format!("{}/{}/{}", owner.name, repo.branch, repo.name);
    let rule = effective(rules, repo);
    // The owner's keyring is kept by the registry, never by a rule: its current version
    // is what clients need to follow a key rotation.
    let keyring = crate::registry::keyring::package_name(owner);
    let files: Vec<RetainedFile> = files
        .iter()
        .filter(|f| f.package.name != keyring)
        .cloned()
        .collect();
    let (deletions, pinned) = match rule {
        Some(rule) => select(rule, &files, state.clock.unix_secs()),
        None => (Vec::new(), Vec::new()),
    };
    let describe = |(file, reason): (&RetainedFile, Reason)| {
        let package = &file.package;
        Deletion {
            path: format!("/{address}/{}/{}", package.arch, package.filename),
            arch: package.arch.clone(),
            file: package.filename.clone(),
            name: package.name.clone(),
            version: package.version.clone(),
            uploaded_at: package.created_at,
            reason,
            why: rule.map_or(String::new(), |rule| why(rule, reason)),
        }
    };
    RepositoryPlan {
        rule: rule.map(|r| Rule::new(&owner.name, r)),
        deletions: deletions.into_iter().map(describe).collect(),
        pinned: pinned
            .into_iter()
            .map(|f| format!("/{address}/{}/{}", f.package.arch, f.package.filename))
            .collect(),
        repository: address,
    }
}

fn why(rule: &RetentionRule, reason: Reason) -> String {
    match reason {
        Reason::Versions => format!(
            "beyond the newest {} versions",
            rule.keep_versions.unwrap_or_default()
        ),
        Reason::Age => format!(
            "uploaded more than {} ago and not among the newest {}",
            describe_secs(rule.max_age_secs.unwrap_or_default()),
            rule.keep_min
        ),
    }
}

/// Seconds in the largest unit that divides them: `90d`, `12h`, `45s`.
pub fn describe_secs(secs: i64) -> String {
    for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if secs % size == 0 {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// What `rule` deletes of `files` at `now` (Unix seconds), each with its reason, and the
/// pinned files it would have deleted.
fn select<'a>(
    rule: &RetentionRule,
    files: &'a [RetainedFile],
    now: i64,
) -> (Vec<(&'a RetainedFile, Reason)>, Vec<&'a RetainedFile>) {
    let patterns = |globs: &[String]| -> Vec<glob::Pattern> {
        globs
            .iter()
            .filter_map(|g| glob::Pattern::new(g).ok())
            .collect()
    };
    let (include, exclude) = (patterns(&rule.include), patterns(&rule.exclude));
    let mut groups: BTreeMap<(&str, &str), Vec<&RetainedFile>> = BTreeMap::new();
    for file in files {
        let name = file.package.name.as_str();
        let included = include.is_empty() || include.iter().any(|p| p.matches(name));
        if included && !exclude.iter().any(|p| p.matches(name)) {
            groups
                .entry((name, file.package.arch.as_str()))
                .or_default()
                .push(file);
        }
    }
    let cutoff = rule.max_age_secs.map(|age| now.saturating_sub(age));
    let (mut deleted, mut pinned) = (Vec::new(), Vec::new());
    for group in groups.values_mut() {
        // Newest first; the later upload first among equal versions.
        group.sort_by(|a, b| {
            version::compare(&b.package.version, &a.package.version)
                .then(b.package.created_at.cmp(&a.package.created_at))
                .then(b.package.id.cmp(&a.package.id))
        });
        let mut chosen: Vec<(&RetainedFile, Reason)> = Vec::new();
        let mut kept = 0;
        for (rank, file) in group.iter().enumerate() {
            let rank = rank as i64;
            let reason = if rule.keep_versions.is_some_and(|n| rank >= n) {
                Some(Reason::Versions)
            } else if cutoff.is_some_and(|c| file.package.created_at < c) && rank >= rule.keep_min {
                Some(Reason::Age)
            } else {
                None
            };
            match reason {
                Some(_) if file.pinned => {
                    pinned.push(*file);
                    kept += 1;
                }
                Some(reason) => chosen.push((file, reason)),
                None => kept += 1,
            }
        }
        // Never the last file of a name and architecture: the newest one stays.
        if kept == 0 && !chosen.is_empty() {
            chosen.remove(0);
        }
        // Oldest version first.
        deleted.extend(chosen.into_iter().rev());
    }
    (deleted, pinned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Package;

    fn file(id: i64, name: &str, version: &str, created_at: i64, pinned: bool) -> RetainedFile {
        RetainedFile {
            package: Package {
                id,
                repository_id: 1,
                arch: "x86_64".into(),
                name: name.into(),
                version: version.into(),
                filename: format!("{name}-{version}.apk"),
                checksum: String::new(),
                sha256: String::new(),
                size: 1,
                created_at,
                modified_ms: created_at * 1000,
            },
            pinned,
        }
    }

    fn rule(keep_versions: Option<i64>, max_age_secs: Option<i64>, keep_min: i64) -> RetentionRule {
        RetentionRule {
            owner_id: 1,
            branch: String::new(),
            repository: String::new(),
            keep_versions,
            max_age_secs,
            keep_min,
            include: Vec::new(),
            exclude: Vec::new(),
            updated_at: 0,
        }
    }

    fn versions(selected: &[(&RetainedFile, Reason)]) -> Vec<String> {
        selected
            .iter()
            .map(|(f, _)| f.package.version.clone())
            .collect()
    }

    #[test]
    fn versions_are_ranked_in_apk_order_not_by_upload_or_text() {
        // 1.10 is newer than 1.9, and 1.0_rc1 older than 1.0, whatever the upload order.
        let files = [
            file(1, "a", "1.10-r0", 10, false),
            file(2, "a", "1.9-r0", 20, false),
            file(3, "a", "1.0-r0", 30, false),
            file(4, "a", "1.0_rc1-r0", 40, false),
        ];
        let (deleted, _) = select(&rule(Some(2), None, 0), &files, 100);
        assert_eq!(versions(&deleted), ["1.0_rc1-r0", "1.0-r0"]);
    }

    #[test]
    fn an_age_rule_keeps_the_newest_m_and_never_the_last_version() {
        let files = [
            file(1, "a", "1-r0", 10, false),
            file(2, "a", "2-r0", 20, false),
            file(3, "a", "3-r0", 30, false),
        ];
        let (deleted, _) = select(&rule(None, Some(5), 1), &files, 100);
        assert_eq!(versions(&deleted), ["1-r0", "2-r0"]);
        // Every version old and none kept by count: the newest stays.
        let (deleted, _) = select(&rule(None, Some(5), 0), &files, 100);
        assert_eq!(versions(&deleted), ["1-r0", "2-r0"]);
        assert!(deleted.iter().all(|(_, r)| *r == Reason::Age));
    }
}
