//! The pages that read the catalog: home, search, owner, setup, package, index status.
//! Each reads through `registry::catalog`, which applies the apk routes' access rules; an
//! owner the visitor may not read is a plain 404 page, logged in or not.

use std::collections::{BTreeMap, BTreeSet};

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::Visitor;
use super::view::{self, query_value};
use super::{render, Nav, PageError};
use crate::access::Identity;
use crate::error::AppError;
use crate::http::origin::{base_url, Origin};
use crate::registry::catalog::{self, Link, PackageFile, PackageQuery};
use crate::AppState;

/// Results per search page.
const SEARCH_PAGE_SIZE: usize = 25;

/// A refusal to read an owner reads as "not found" on the pages: a browser has no use
/// for the apk routes' 401, and a private owner must not be told apart from a missing one.
fn hidden(err: AppError) -> AppError {
    match err {
        AppError::Unauthorized(_) | AppError::Forbidden(_) => AppError::NotFound(
            "not found: check the spelling; private owners are shown to their members once \
             they log in"
                .into(),
        ),
        other => other,
    }
}

/// The address the visitor reached the registry at, for URLs to copy.
fn origin(state: &AppState, visitor: &Visitor, headers: &HeaderMap, uri: &Uri) -> String {
    base_url(
        &state.config,
        &Origin {
            headers,
            uri,
            peer: visitor.peer,
        },
    )
}

/// Without `auth.anonymous_read` nothing is readable anonymously: every page sends an
/// anonymous visitor to the login form first (and back), whatever the page is about.
fn login_first(state: &AppState, visitor: &Visitor, uri: &Uri) -> Option<Response> {
    if state.config.auth.anonymous_read || !matches!(visitor.identity, Identity::Anonymous) {
        return None;
    }
    let here = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    Some(Redirect::to(&format!("/-/login?next={}", query_value(here))).into_response())
}

fn last_publish(ms: Option<i64>) -> String {
    ms.map_or_else(|| "never".to_string(), view::time_ms)
}

// ---- home ----

struct RepoRow {
    branch: String,
    repository: String,
    arches: String,
    packages: i64,
    last_publish: String,
}

struct OwnerRow {
    name: String,
    is_private: bool,
    packages: i64,
    last_publish: String,
    repositories: Vec<RepoRow>,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    nav: Nav,
    owners: Vec<OwnerRow>,
}

/// `GET /`: the search box, and every owner the visitor can see.
pub async fn home(
    State(state): State<AppState>,
    visitor: Visitor,
    uri: Uri,
) -> Result<Response, PageError> {
    if let Some(login) = login_first(&state, &visitor, &uri) {
        return Ok(login);
    }
    let owners = catalog::owners(&state, &visitor.identity).await?;
    let owners = owners
        .into_iter()
        .map(|o| OwnerRow {
            repositories: o
                .repositories
                .iter()
                .map(|r| RepoRow {
                    branch: r.branch.clone(),
                    repository: r.repository.clone(),
                    arches: r.arches.join(", "),
                    packages: r.packages,
                    last_publish: last_publish(r.last_publish_ms),
                })
                .collect(),
            name: o.name,
            is_private: o.is_private,
            packages: o.packages,
            last_publish: last_publish(o.last_publish_ms),
        })
        .collect();
    render(&HomePage {
        nav: Nav::of(&visitor),
        owners,
    })
}

// ---- search ----

#[derive(Debug, Default, Deserialize)]
pub struct SearchParams {
    #[serde(flatten)]
    query: PackageQuery,
    after: Option<String>,
    /// Results per page (1..=100); text, as flattened query fields arrive.
    limit: Option<String>,
}

struct ResultRow {
    owner: String,
    name: String,
    version: String,
    description: String,
    branches: String,
    repositories: String,
    arches: String,
    files: usize,
    last_publish: String,
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    nav: Nav,
    q: String,
    owner: String,
    branch: String,
    repository: String,
    arch: String,
    maintainer: String,
    rows: Vec<ResultRow>,
    total: u64,
    /// The query string of the next page, when there is one.
    next: Option<String>,
    /// The query string of the first page, when this is not it.
    first: Option<String>,
}

/// `GET /-/search?q=&owner=&branch=&repository=&arch=&maintainer=&after=`
pub async fn search(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(params): Query<SearchParams>,
    uri: Uri,
) -> Result<Response, PageError> {
    if let Some(login) = login_first(&state, &visitor, &uri) {
        return Ok(login);
    }
    let query = params.query;
    let limit = match params.limit.as_deref().filter(|l| !l.is_empty()) {
        None => SEARCH_PAGE_SIZE,
        Some(text) => text.parse().map_err(|_| {
            AppError::BadRequest(format!("limit must be a number of results, not {text:?}"))
        })?,
    };
    let page = catalog::search(
        &state,
        &visitor.identity,
        &query,
        params.after.as_deref(),
        limit,
    )
    .await?;
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let filters: Vec<(&str, String)> = [
        ("q", text(&query.q)),
        ("owner", text(&query.owner)),
        ("branch", text(&query.branch)),
        ("repository", text(&query.repository)),
        ("arch", text(&query.arch)),
        ("maintainer", text(&query.maintainer)),
        (
            "limit",
            if limit == SEARCH_PAGE_SIZE {
                String::new()
            } else {
                limit.to_string()
            },
        ),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .collect();
    let query_string = |after: Option<&str>| {
        let mut pairs: Vec<String> = filters
            .iter()
            .map(|(k, v)| format!("{k}={}", query_value(v)))
            .collect();
        if let Some(after) = after {
            pairs.push(format!("after={}", query_value(after)));
        }
        pairs.join("&")
    };
    let rows = page
        .items
        .into_iter()
        .map(|p| ResultRow {
            owner: p.owner,
            name: p.name,
            version: p.latest_version,
            description: p.description,
            branches: p.branches.join(", "),
            repositories: p.repositories.join(", "),
            arches: p.arches.join(", "),
            files: p.files,
            last_publish: view::time_ms(p.last_publish_ms),
        })
        .collect();
    render(&SearchPage {
        nav: Nav::of(&visitor),
        next: page.next.as_deref().map(|n| query_string(Some(n))),
        first: params
            .after
            .as_deref()
            .filter(|a| !a.is_empty())
            .map(|_| query_string(None)),
        q: text(&query.q),
        owner: text(&query.owner),
        branch: text(&query.branch),
        repository: text(&query.repository),
        arch: text(&query.arch),
        maintainer: text(&query.maintainer),
        rows,
        total: page.total,
    })
}

// ---- owner ----

/// One cell of the owner's matrix: the packages the index of that architecture lists.
struct Cell {
    entries: Option<usize>,
}

struct MatrixRow {
    branch: String,
    repository: String,
    packages: i64,
    last_publish: String,
    cells: Vec<Cell>,
    noarch: bool,
    /// For a remote repository: its upstream, and how fresh its indexes are.
    remote: Option<RemoteView>,
    /// For a virtual repository: its members, in order (empty for the others).
    members: Vec<String>,
}

struct RemoteView {
    url: String,
    /// Per architecture: when upstream last gave or confirmed its index, and whether the
    /// last refresh failed (the last verified index is served: stale).
    indexes: Vec<(String, String, Option<String>)>,
}

struct KeyView {
    file_name: String,
    fingerprint: String,
    file_sha256: String,
    bits: usize,
    algorithms: String,
    download_path: String,
}

impl From<catalog::KeyInfo> for KeyView {
    fn from(k: catalog::KeyInfo) -> KeyView {
        KeyView {
            file_name: k.file_name,
            fingerprint: k.fingerprint_sha256,
            file_sha256: k.file_sha256,
            bits: k.bits,
            algorithms: k.algorithms.join(", "),
            download_path: k.download_path,
        }
    }
}

#[derive(Template)]
#[template(path = "owner.html")]
struct OwnerPage {
    nav: Nav,
    name: String,
    is_private: bool,
    packages: i64,
    last_publish: String,
    arches: Vec<String>,
    rows: Vec<MatrixRow>,
    key: Option<KeyView>,
    /// Whether the visitor administers the owner (and may see its activity).
    is_admin: bool,
}

/// `GET /{owner}`: branches × repositories × architectures, with package counts, and the
/// signing key.
pub async fn owner(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(owner): Path<String>,
    uri: Uri,
) -> Result<Response, PageError> {
    if let Some(login) = login_first(&state, &visitor, &uri) {
        return Ok(login);
    }
    let detail = catalog::owner(&state, &visitor.identity, &owner)
        .await
        .map_err(hidden)?;
    let overview = detail.overview;
    // Architectures with an index of their own, as columns; noarch files are in each.
    let arches: Vec<String> = overview
        .repositories
        .iter()
        .flat_map(|r| r.arches.iter())
        .filter(|a| a.as_str() != "noarch")
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut rows = Vec::new();
    for repo in &overview.repositories {
        let indexes = catalog::index_status(
            &state,
            &visitor.identity,
            &overview.name,
            &repo.branch,
            &repo.repository,
        )
        .await
        .map_err(hidden)?;
        let entries: BTreeMap<&str, usize> = indexes
            .iter()
            .map(|i| (i.arch.as_str(), i.entries))
            .collect();
        let remote = crate::registry::remote::freshness(
            &state,
            &overview.name,
            &repo.branch,
            &repo.repository,
        )
        .await
        .map_err(hidden)?
        .map(|(url, indexes)| RemoteView {
            url,
            indexes: indexes
                .into_iter()
                .map(|i| (i.arch, view::time_ms(i.verified_ms), i.error))
                .collect(),
        });
        rows.push(MatrixRow {
            remote,
            members: repo.members.clone(),
            branch: repo.branch.clone(),
            repository: repo.repository.clone(),
            packages: repo.packages,
            last_publish: last_publish(repo.last_publish_ms),
            cells: arches
                .iter()
                .map(|a| Cell {
                    entries: entries.get(a.as_str()).copied(),
                })
                .collect(),
            noarch: repo.arches.iter().any(|a| a == "noarch"),
        });
    }
    let is_admin = match crate::names::OwnerName::parse(&overview.name) {
        Ok(name) => {
            crate::access::authorize(&state, &visitor.identity, &name, crate::store::Role::Admin)
                .await
                .is_ok()
        }
        Err(_) => false,
    };
    render(&OwnerPage {
        nav: Nav::of(&visitor),
        is_admin,
        name: overview.name,
        is_private: overview.is_private,
        packages: overview.packages,
        last_publish: last_publish(overview.last_publish_ms),
        arches,
        rows,
        key: detail.key.map(KeyView::from),
    })
}

// ---- setup ----

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage {
    nav: Nav,
    owner: String,
    branch: String,
    repository: String,
    is_private: bool,
    key: Option<KeyView>,
    script: String,
    arches: String,
}

/// Quotes `s` for POSIX sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The commands that set a machine up for one repository: the key under its exact file
/// name, its fingerprint checked, the repository line added once, the index fetched.
fn setup_script(
    origin: &str,
    owner: &str,
    branch: &str,
    repository: &str,
    private: bool,
    key: &KeyView,
) -> String {
    let base = if private {
        // USER and TOKEN are placeholders the reader replaces.
        match origin.split_once("://") {
            Some((scheme, host)) => format!("{scheme}://USER:TOKEN@{host}"),
            None => origin.to_string(),
        }
    } else {
        origin.to_string()
    };
    let key_path = format!("/etc/apk/keys/{}", key.file_name);
    let key_url = format!("{base}{}", key.download_path);
    let line = format!("{base}/{owner}/{branch}/{repository}");
    // In a subshell, so that pasted into a login shell, a failure ends the snippet and
    // not the shell. Only what stock Alpine has (busybox's wget, sha256sum, mktemp): the
    // key is checked before it is moved into /etc/apk/keys, so a tampered one is never
    // trusted, not even for a moment.
    let mut script = String::from("(\nset -eu\n");
    if private {
        script.push_str(&format!(
            "# USER:TOKEN: a member and a read token of theirs, made with\n\
             # alpine-registry token create --user USER --scope read --owner {owner}\n"
        ));
    }
    script.push_str(&format!(
        "for tool in wget sha256sum mktemp; do\n\
         \x20 command -v \"$tool\" >/dev/null || {{ echo \"$tool is needed (busybox has it)\" >&2; exit 1; }}\n\
         done\n\
         # The signing key, downloaded aside and checked before apk trusts it.\n\
         tmp=$(mktemp)\n\
         trap 'rm -f \"$tmp\"' EXIT\n\
         wget -q -O \"$tmp\" {ku}\n\
         # The key file's SHA-256 must be {fs}.\n\
         sum=$(sha256sum < \"$tmp\" | cut -d' ' -f1)\n\
         [ \"$sum\" = {fs} ] || {{ echo \"wrong key file (SHA-256 $sum): not installed\" >&2; exit 1; }}\n\
         # Under the exact name apk looks for.\n\
         chmod 644 \"$tmp\"\n\
         mv \"$tmp\" {kp}\n\
         # The repository, added once.\n\
         grep -qxF {l} /etc/apk/repositories || echo {l} >> /etc/apk/repositories\n\
         apk update\n\
         )\n",
        kp = sh_quote(&key_path),
        ku = sh_quote(&key_url),
        fs = key.file_sha256,
        l = sh_quote(&line),
    ));
    script
}

/// `GET /{owner}/-/setup/{branch}/{repository}`: the setup snippet of one repository.
pub async fn setup(
    State(state): State<AppState>,
    visitor: Visitor,
    Path((owner, branch, repository)): Path<(String, String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, PageError> {
    if let Some(login) = login_first(&state, &visitor, &uri) {
        return Ok(login);
    }
    let detail = catalog::owner(&state, &visitor.identity, &owner)
        .await
        .map_err(hidden)?;
    let overview = detail.overview;
    let repo = overview
        .repositories
        .iter()
        .find(|r| r.branch == branch && r.repository == repository)
        .ok_or_else(|| {
            AppError::NotFound(format!(
                "{owner} has no repository {branch}/{repository}",
                owner = overview.name
            ))
        })?;
    let key = detail.key.map(KeyView::from);
    let origin = origin(&state, &visitor, &headers, &uri);
    let script = key
        .as_ref()
        .map(|k| {
            setup_script(
                &origin,
                &overview.name,
                &repo.branch,
                &repo.repository,
                overview.is_private,
                k,
            )
        })
        .unwrap_or_default();
    render(&SetupPage {
        nav: Nav::of(&visitor),
        owner: overview.name.clone(),
        branch: repo.branch.clone(),
        repository: repo.repository.clone(),
        is_private: overview.is_private,
        arches: repo.arches.join(", "),
        key,
        script,
    })
}

// ---- package ----

struct FileView {
    branch: String,
    repository: String,
    arch: String,
    noarch: bool,
    version: String,
    filename: String,
    size: String,
    sha256: String,
    download_path: String,
    /// `?branch=..&repository=..&arch=..&file=..` of the delete confirmation.
    delete_query: String,
    fields: Vec<(&'static str, String)>,
}

struct MatrixCell {
    files: Vec<usize>,
}

struct AvailabilityRow {
    branch: String,
    cells: Vec<MatrixCell>,
}

struct LinkView {
    text: String,
    href: Option<String>,
}

#[derive(Template)]
#[template(path = "package.html")]
struct PackagePage {
    nav: Nav,
    owner: String,
    name: String,
    description: String,
    versions: Vec<String>,
    arches: Vec<String>,
    rows: Vec<AvailabilityRow>,
    files: Vec<FileView>,
    depends: Vec<LinkView>,
    install_if: Vec<LinkView>,
    provides: Vec<String>,
    required_by: Vec<String>,
    /// Packages requiring it beyond those named (`limits.max_required_by`).
    required_by_more: u64,
    can_delete: bool,
}

fn link_view(link: Link) -> LinkView {
    LinkView {
        href: link
            .target
            .map(|t| format!("/{}/-/packages/{}", t.owner, t.name)),
        text: link.text,
    }
}

/// Every index field of a file, as the index names it.
fn index_fields(f: &PackageFile) -> Vec<(&'static str, String)> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let num = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
    let fields = vec![
        ("P: name", f.name.clone()),
        ("V: version", f.version.clone()),
        ("A: architecture", f.arch.clone()),
        ("S: size", f.size.to_string()),
        ("I: installed size", num(f.installed_size)),
        ("T: description", f.description.clone()),
        ("U: url", f.url.clone()),
        ("L: license", f.license.clone()),
        ("o: origin", opt(&f.origin)),
        ("m: maintainer", opt(&f.maintainer)),
        (
            "t: build time",
            f.build_time
                .map(|t| format!("{t} ({})", view::time_secs(t)))
                .unwrap_or_default(),
        ),
        ("c: commit", opt(&f.commit)),
        ("k: provider priority", num(f.provider_priority)),
        ("D: depends", f.depends.join(" ")),
        ("p: provides", f.provides.join(" ")),
        ("i: install_if", f.install_if.join(" ")),
        ("C: checksum", f.checksum.clone()),
        ("sha256", f.sha256.clone()),
        ("uploaded", view::time_ms(f.uploaded_ms)),
    ];
    fields.into_iter().filter(|(_, v)| !v.is_empty()).collect()
}

/// `GET /{owner}/-/packages/{name}`
pub async fn package(
    State(state): State<AppState>,
    visitor: Visitor,
    Path((owner, name)): Path<(String, String)>,
    uri: Uri,
) -> Result<Response, PageError> {
    if let Some(login) = login_first(&state, &visitor, &uri) {
        return Ok(login);
    }
    let detail = catalog::package(&state, &visitor.identity, &owner, &name)
        .await
        .map_err(hidden)?;
    let record = view::readable_owner(&state, &visitor.identity, &detail.owner).await?;
    let can_delete =
        visitor.session.is_some() && view::can_write(&state, &visitor.identity, &record).await;
    // Columns: the architectures of the files, noarch last.
    let mut arches: Vec<String> = detail
        .files
        .iter()
        .map(|f| f.arch.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if let Some(i) = arches.iter().position(|a| a == "noarch") {
        let noarch = arches.remove(i);
        arches.push(noarch);
    }
    let branches: Vec<String> = detail
        .files
        .iter()
        .map(|f| f.branch.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let rows = branches
        .iter()
        .map(|b| AvailabilityRow {
            branch: b.clone(),
            cells: arches
                .iter()
                .map(|a| MatrixCell {
                    files: detail
                        .files
                        .iter()
                        .enumerate()
                        .filter(|(_, f)| &f.branch == b && &f.arch == a)
                        .map(|(i, _)| i)
                        .collect(),
                })
                .collect(),
        })
        .collect();
    let description = detail
        .files
        .first()
        .map(|f| f.description.clone())
        .unwrap_or_default();
    let files = detail
        .files
        .iter()
        .map(|f| FileView {
            branch: f.branch.clone(),
            repository: f.repository.clone(),
            arch: f.arch.clone(),
            noarch: f.noarch,
            version: f.version.clone(),
            filename: f.filename.clone(),
            size: view::size(f.size),
            sha256: f.sha256.clone(),
            download_path: f.download_path.clone(),
            delete_query: format!(
                "branch={}&repository={}&arch={}&file={}",
                query_value(&f.branch),
                query_value(&f.repository),
                query_value(&f.arch),
                query_value(&f.filename)
            ),
            fields: index_fields(f),
        })
        .collect();
    render(&PackagePage {
        nav: Nav::of(&visitor),
        owner: detail.owner,
        name: detail.name,
        description,
        versions: detail.versions,
        arches,
        rows,
        files,
        depends: detail.depends.into_iter().map(link_view).collect(),
        install_if: detail.install_if.into_iter().map(link_view).collect(),
        provides: detail.provides,
        required_by_more: detail
            .required_by_total
            .saturating_sub(detail.required_by.len() as u64),
        required_by: detail.required_by,
        can_delete,
    })
}

// ---- index status ----

struct IndexView {
    arch: String,
    generation: i64,
    built_at: String,
    sha256: String,
    size: String,
    bytes: usize,
    entries: usize,
    signatures: Vec<String>,
    download_path: String,
}

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage {
    nav: Nav,
    owner: String,
    branch: String,
    repository: String,
    indexes: Vec<IndexView>,
}

/// `GET /{owner}/-/index/{branch}/{repository}`
pub async fn index_status(
    State(state): State<AppState>,
    visitor: Visitor,
    Path((owner, branch, repository)): Path<(String, String, String)>,
    uri: Uri,
) -> Result<Response, PageError> {
    if let Some(login) = login_first(&state, &visitor, &uri) {
        return Ok(login);
    }
    let indexes = catalog::index_status(&state, &visitor.identity, &owner, &branch, &repository)
        .await
        .map_err(hidden)?;
    render(&IndexPage {
        nav: Nav::of(&visitor),
        owner,
        branch,
        repository,
        indexes: indexes
            .into_iter()
            .map(|i| IndexView {
                arch: i.arch,
                generation: i.generation,
                built_at: view::time_secs(i.built_at),
                sha256: i.sha256,
                size: view::size(i.size as i64),
                bytes: i.size,
                entries: i.entries,
                signatures: i.signatures,
                download_path: i.download_path,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> KeyView {
        KeyView {
            file_name: "acme-65a1b2c3.rsa.pub".into(),
            fingerprint: "ab".repeat(32),
            file_sha256: "cd".repeat(32),
            bits: 4096,
            algorithms: "RSA256 (SHA-256)".into(),
            download_path: "/acme/key".into(),
        }
    }

    #[test]
    fn setup_saves_the_key_under_its_exact_name_and_adds_the_line_once() {
        let script = setup_script(
            "http://apk.lan:8080",
            "acme",
            "v3.21",
            "main",
            false,
            &key(),
        );
        assert!(script.contains("wget -q -O \"$tmp\" 'http://apk.lan:8080/acme/key'"));
        assert!(script.contains("mv \"$tmp\" '/etc/apk/keys/acme-65a1b2c3.rsa.pub'"));
        assert!(script.contains(
            "grep -qxF 'http://apk.lan:8080/acme/v3.21/main' /etc/apk/repositories || echo \
             'http://apk.lan:8080/acme/v3.21/main' >> /etc/apk/repositories"
        ));
        assert!(script.contains(&"cd".repeat(32)));
    }

    #[test]
    fn setup_of_a_private_owner_puts_credentials_in_the_urls() {
        let script = setup_script(
            "https://apk.example.org",
            "acme",
            "edge",
            "main",
            true,
            &key(),
        );
        assert!(script.contains("'https://USER:TOKEN@apk.example.org/acme/edge/main'"));
        assert!(script.contains("'https://USER:TOKEN@apk.example.org/acme/key'"));
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(sh_quote("a'b"), "'a'\\''b'");
    }
}
