//! The publish-time dependency check (`repositories.dependency_check`, or a repository's
//! own setting): every dependency of an uploaded package must be answered by the package
//! itself, by a package of the owner's repositories of the same branch, or by a
//! dependency source; a delete must not leave a package of its repository depending on
//! what only the deleted package answered. `warn` lets the change through and names
//! what is unsatisfied; `refuse` changes nothing and answers 422.
//!
//! It reads the catalog tables by the names asked about (never the other packages'
//! index entries), so it costs an upload two indexed queries whatever the size of the
//! registry. It is a check, not an invariant: a change made meanwhile by another client
//! is not seen.

use crate::apk::depends::{provided, Dependency};
use crate::apk::pkginfo::PkgInfo;
use crate::config::DependencyCheck;
use crate::error::{AppError, AppResult};
use crate::names::RepoAddress;
use crate::registry::audit::Actor;
use crate::store::{NameProvider, Owner, Package};
use crate::AppState;

/// The check that applies to the repository `at`: its own setting, else the configured
/// one (also for a repository that does not exist yet).
pub async fn mode(state: &AppState, owner: &Owner, at: &RepoAddress) -> AppResult<DependencyCheck> {
    let own = state
        .store
        .dependency_check(&crate::registry::repo_ref(owner.id, at))
        .await?
        .flatten();
    Ok(match own.as_deref().map(str::parse::<DependencyCheck>) {
        Some(Ok(own)) => own,
        _ => state.config.repositories.dependency_check,
    })
}

/// Whether a package of `needing`'s architecture can use one of `offered`'s.
fn arch_fits(needing: &str, offered: &str) -> bool {
    needing == "noarch" || offered == "noarch" || needing == offered
}

/// What answers a dependency of a package of architecture `arch`.
struct Answers<'a> {
    state: &'a AppState,
    branch: &'a str,
    providers: Vec<NameProvider>,
}

impl Answers<'_> {
    /// Whether `dep` of a package of `arch` is satisfied; else the versions of its name
    /// found for that architecture, to say why not.
    fn satisfies(&self, dep: &Dependency<'_>, arch: &str) -> Result<(), Vec<String>> {
        let mut found = Vec::new();
        let local = self
            .providers
            .iter()
            .filter(|p| p.name == dep.name)
            .map(|p| (p.version.clone(), p.arch.clone()));
        let external = self
            .state
            .dependency_sources
            .offers(self.branch, dep.name)
            .into_iter()
            .map(|o| (o.version, o.arch));
        for (version, offered_arch) in local.chain(external) {
            if !arch_fits(arch, &offered_arch) {
                continue;
            }
            if dep.allows(version.as_deref()) {
                return Ok(());
            }
            found.push(version.unwrap_or_else(|| "without a version".into()));
        }
        Err(found)
    }
}

/// Why `dep` is unsatisfied, given the versions of its name that were found.
fn unsatisfied(atom: &str, at: &RepoAddress, found: &[String]) -> String {
    if found.is_empty() {
        format!(
            "unsatisfied dependency {atom}: no package of {}/{} or of a dependency source \
             provides it",
            at.owner, at.branch
        )
    } else {
        const SHOWN: usize = 5;
        let mut versions = found
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if found.len() > SHOWN {
            versions += ", ...";
        }
        format!("unsatisfied dependency {atom}: only {versions} found, which does not satisfy it")
    }
}

/// The refusal of a change that leaves `problems`.
fn refusal(what: String, problems: Vec<String>) -> AppError {
    AppError::UnsatisfiedDependencies {
        message: format!(
            "{what} refused (the dependency check of this repository is refuse): {}",
            problems.join("; ")
        ),
        unsatisfied: problems,
    }
}

/// Checks the dependencies of the package `info` describes, uploaded into `at`: the
/// unsatisfied ones under `warn`, none under `off`, a refusal under `refuse`.
pub async fn check_upload(
    state: &AppState,
    owner: &Owner,
    at: &RepoAddress,
    info: &PkgInfo,
) -> AppResult<Vec<String>> {
    let mode = mode(state, owner, at).await?;
    if mode == DependencyCheck::Off {
        return Ok(Vec::new());
    }
    // What the package answers itself.
    let own = |dep: &Dependency<'_>| {
        (dep.name == info.pkgname && dep.allows(Some(&info.pkgver)))
            || info.provides.iter().any(|atom| {
                let (name, version) = provided(atom);
                name == dep.name && dep.allows(version)
            })
    };
    let open: Vec<(&str, Dependency<'_>)> = info
        .depends
        .iter()
        .filter_map(|atom| Some((atom.as_str(), Dependency::parse(atom)?)))
        .filter(|(_, dep)| !dep.conflict && !own(dep))
        .collect();
    if open.is_empty() {
        return Ok(Vec::new());
    }
    let mut names: Vec<String> = open.iter().map(|(_, d)| d.name.to_string()).collect();
    names.sort();
    names.dedup();
    let answers = Answers {
        state,
        branch: at.branch.as_str(),
        providers: state
            .store
            .name_providers(owner.id, at.branch.as_str(), &names)
            .await?,
    };
    let problems: Vec<String> = open
        .iter()
        .filter_map(|(atom, dep)| {
            answers
                .satisfies(dep, &info.arch)
                .err()
                .map(|found| unsatisfied(atom, at, &found))
        })
        .collect();
    if problems.is_empty() {
        return Ok(problems);
    }
    let file = format!("{}/{}-{}.apk", info.arch, info.pkgname, info.pkgver);
    if mode == DependencyCheck::Refuse {
        return Err(refusal(format!("the upload of {file}"), problems));
    }
    tracing::warn!(
        owner = %at.owner, branch = %at.branch, repository = %at.repository,
        file = %file, unsatisfied = problems.len(), "package accepted with unsatisfied dependencies"
    );
    Ok(problems)
}

/// Checks what deleting `package` from `at` leaves: the packages of the repository that
/// depend on a name only it answered (for their architecture and version constraint).
/// Their problems under `warn`, none under `off`, a refusal under `refuse`.
pub async fn check_delete(
    state: &AppState,
    owner: &Owner,
    at: &RepoAddress,
    package: &Package,
) -> AppResult<Vec<String>> {
    let mode = mode(state, owner, at).await?;
    if mode == DependencyCheck::Off {
        return Ok(Vec::new());
    }
    let Some(stanza) = state.store.package_stanza(package.id).await? else {
        return Ok(Vec::new());
    };
    // What the package answers: its name at its version, and what it provides.
    let mut answered: Vec<(String, Option<String>)> =
        vec![(package.name.clone(), Some(package.version.clone()))];
    if let Some(line) = stanza_line(&stanza, 'p') {
        for atom in line.split_whitespace() {
            let (name, version) = provided(atom);
            answered.push((name.to_string(), version.map(str::to_string)));
        }
    }
    let mut names: Vec<String> = answered.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    names.dedup();
    let dependents: Vec<_> = state
        .store
        .dependents(package.repository_id, &names)
        .await?
        .into_iter()
        .filter(|d| d.package_id != package.id)
        .collect();
    if dependents.is_empty() {
        return Ok(Vec::new());
    }
    let mut providers = state
        .store
        .name_providers(owner.id, at.branch.as_str(), &names)
        .await?;
    providers.retain(|p| p.package_id != package.id);
    let answers = Answers {
        state,
        branch: at.branch.as_str(),
        providers,
    };
    let mut problems = Vec::new();
    for dependent in &dependents {
        let Some(line) = stanza_line(&dependent.stanza, 'D') else {
            continue;
        };
        for atom in line.split_whitespace() {
            let Some(dep) = Dependency::parse(atom) else {
                continue;
            };
            let was_answered = !dep.conflict
                && arch_fits(&dependent.arch, &package.arch)
                && answered
                    .iter()
                    .any(|(name, version)| name == dep.name && dep.allows(version.as_deref()));
            if was_answered && answers.satisfies(&dep, &dependent.arch).is_err() {
                problems.push(format!(
                    "{}/{} depends on {atom}, which nothing else provides",
                    dependent.arch, dependent.filename
                ));
            }
        }
    }
    if problems.is_empty() {
        return Ok(problems);
    }
    let file = format!("{}/{}", package.arch, package.filename);
    if mode == DependencyCheck::Refuse {
        return Err(refusal(format!("deleting {file}"), problems));
    }
    tracing::warn!(
        owner = %at.owner, branch = %at.branch, repository = %at.repository,
        file = %file, unsatisfied = problems.len(), "package deleted that others depend on"
    );
    Ok(problems)
}

/// The value of the stanza's `X:` line.
fn stanza_line(stanza: &str, key: char) -> Option<&str> {
    stanza.lines().find_map(|line| {
        let mut chars = line.chars();
        (chars.next() == Some(key) && chars.next() == Some(':')).then(|| &line[2..])
    })
}

/// Sets the dependency check of the repository `at` (None: the configured one); returns
/// the check that applies from now on.
pub async fn set(
    state: &AppState,
    actor: &Actor,
    at: &RepoAddress,
    check: Option<DependencyCheck>,
) -> AppResult<DependencyCheck> {
    let owner = crate::registry::accounts::owner(state, at.owner.as_str()).await?;
    let repo = crate::registry::repo_ref(owner.id, at);
    let entry = actor.entry(
        state,
        "repository.settings",
        Some(&owner),
        at.to_string(),
        serde_json::json!({ "dependency_check": check.map(DependencyCheck::as_str) }),
    );
    if !state
        .store
        .set_dependency_check(&repo, check.map(DependencyCheck::as_str), Some(&entry))
        .await?
    {
        return Err(no_repository(at));
    }
    Ok(check.unwrap_or(state.config.repositories.dependency_check))
}

/// The repository's own setting (None: it follows the configuration) and the check that
/// applies.
pub async fn get(
    state: &AppState,
    owner: &Owner,
    at: &RepoAddress,
) -> AppResult<(Option<DependencyCheck>, DependencyCheck)> {
    let own = state
        .store
        .dependency_check(&crate::registry::repo_ref(owner.id, at))
        .await?
        .ok_or_else(|| no_repository(at))?
        .and_then(|own| own.parse::<DependencyCheck>().ok());
    Ok((
        own,
        own.unwrap_or(state.config.repositories.dependency_check),
    ))
}

fn no_repository(at: &RepoAddress) -> AppError {
    AppError::NotFound(format!(
        "no repository {at} (\"alpine-registry repository list --owner {}\" lists those of {})",
        at.owner, at.owner
    ))
}
