//! The catalog's reads on SQLite: the statements of `store::catalog`, bound and read here.

use futures_util::TryStreamExt;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Row, Sqlite};

use super::{owner_from, package_from, SqliteStore, PACKAGE_COLUMNS};
use crate::store::catalog::{self as shared, Arg, Dialect, Sql};
use crate::store::dependencies;
use crate::store::AuditEntry;
use crate::store::{
    CatalogFile, Dependent, IndexSummary, NameProvider, Owner, OwnerScope, PackageSearch, RepoRef,
    SearchCollector, SearchFile, SearchPage, StoreResult,
};

const DIALECT: Dialect = Dialect::Sqlite;

fn query(sql: &Sql) -> sqlx::query::Query<'_, Sqlite, SqliteArguments<'_>> {
    let mut query = sqlx::query(&sql.text);
    for arg in &sql.args {
        query = match arg {
            Arg::Int(value) => query.bind(*value),
            Arg::Text(value) => query.bind(value.as_str()),
        };
    }
    query
}

fn catalog_file(row: &SqliteRow) -> StoreResult<CatalogFile> {
    Ok(CatalogFile {
        package: package_from(row)?,
        branch: row.try_get("branch")?,
        repository: row.try_get("repository")?,
        stanza: row.try_get("stanza")?,
    })
}

impl SqliteStore {
    pub(super) async fn catalog_owners_in(&self, scope: &OwnerScope) -> StoreResult<Vec<Owner>> {
        let sql = shared::owners_in(DIALECT, scope);
        query(&sql)
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(owner_from)
            .collect()
    }

    pub(super) async fn catalog_search(
        &self,
        search: &PackageSearch,
        collector: &mut dyn SearchCollector,
    ) -> StoreResult<SearchPage> {
        // One read transaction: one WAL snapshot for the count, the keys and the files.
        let mut tx = self.reader.begin().await?;
        let keys = shared::search_keys(DIALECT, search);
        let mut page = SearchPage::default();
        for row in query(&keys).fetch_all(&mut *tx).await? {
            match row.try_get::<Option<String>, _>("name")? {
                None => page.total = row.try_get::<i64, _>("total")?.max(0) as u64,
                Some(name) => page.keys.push((name, row.try_get("owner")?)),
            }
        }
        if page.keys.len() > search.limit {
            page.keys.truncate(search.limit);
            page.more = true;
        }
        if let (Some(first), Some(last)) = (page.keys.first(), page.keys.last()) {
            let files = shared::search_files(DIALECT, search, first, last);
            let mut rows = query(&files).fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                collector.file(SearchFile {
                    package_id: row.try_get("package_id")?,
                    name: row.try_get("name")?,
                    owner: row.try_get("owner")?,
                    version: row.try_get("version")?,
                    branch: row.try_get("branch")?,
                    repository: row.try_get("repository")?,
                    arch: row.try_get("arch")?,
                    modified_ms: row.try_get("modified_ms")?,
                });
            }
            drop(rows);
            let wanted = collector.wanted_descriptions();
            if !wanted.is_empty() {
                let descriptions = shared::descriptions(DIALECT, &wanted);
                for row in query(&descriptions).fetch_all(&mut *tx).await? {
                    collector.description(row.try_get("package_id")?, row.try_get("description")?);
                }
            }
        }
        tx.commit().await?;
        Ok(page)
    }

    pub(super) async fn catalog_package_files(
        &self,
        owner_id: i64,
        name: &str,
    ) -> StoreResult<Vec<CatalogFile>> {
        sqlx::query(&format!(
            "SELECT {PACKAGE_COLUMNS}, p.stanza, r.branch, r.name AS repository \
             FROM packages p JOIN repositories r ON r.id = p.repository_id \
             WHERE r.owner_id = ? AND p.name = ? ORDER BY p.id"
        ))
        .bind(owner_id)
        .bind(name)
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(catalog_file)
        .collect()
    }

    pub(super) async fn catalog_index_files(
        &self,
        repository_id: i64,
        arch: &str,
    ) -> StoreResult<Vec<CatalogFile>> {
        sqlx::query(&format!(
            "SELECT {PACKAGE_COLUMNS}, p.stanza, r.branch, r.name AS repository \
             FROM packages p JOIN repositories r ON r.id = p.repository_id \
             WHERE p.repository_id = ? AND p.arch IN (?, 'noarch') ORDER BY p.id"
        ))
        .bind(repository_id)
        .bind(arch)
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(catalog_file)
        .collect()
    }

    pub(super) async fn catalog_providers(
        &self,
        owner_id: i64,
        names: &[String],
    ) -> StoreResult<Vec<(String, String)>> {
        let list = serde_json::to_string(names).map_err(|e| sqlx::Error::Encode(e.into()))?;
        let sql = shared::providers(DIALECT, owner_id, &list);
        let mut found = Vec::new();
        for row in query(&sql).fetch_all(&self.reader).await? {
            if let Some(provider) = row.try_get::<Option<String>, _>("provider")? {
                found.push((row.try_get("name")?, provider));
            }
        }
        Ok(found)
    }

    pub(super) async fn catalog_required_by(
        &self,
        owner_id: i64,
        name: &str,
        limit: usize,
    ) -> StoreResult<(Vec<String>, u64)> {
        let sql = shared::required_by(DIALECT, owner_id, name, limit);
        let mut names = Vec::new();
        let mut total = 0;
        for row in query(&sql).fetch_all(&self.reader).await? {
            match row.try_get::<Option<String>, _>("name")? {
                None => total = row.try_get::<i64, _>("total")?.max(0) as u64,
                Some(name) => names.push(name),
            }
        }
        Ok((names, total))
    }

    pub(super) async fn catalog_index_summaries(
        &self,
        repository_id: i64,
    ) -> StoreResult<Vec<IndexSummary>> {
        // length() of a blob reads its size from the record header, not the blob.
        sqlx::query(
            "SELECT arch, generation, sha256, built_at, length(content) AS size, entries, \
             signatures FROM indexes WHERE repository_id = ? ORDER BY arch",
        )
        .bind(repository_id)
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(|row| {
            Ok(IndexSummary {
                arch: row.try_get("arch")?,
                generation: row.try_get("generation")?,
                sha256: row.try_get("sha256")?,
                built_at: row.try_get("built_at")?,
                size: row.try_get("size")?,
                entries: row.try_get("entries")?,
                signatures: shared::split_signatures(row.try_get("signatures")?),
            })
        })
        .collect()
    }

    pub(super) async fn catalog_name_providers(
        &self,
        owner_id: i64,
        branch: &str,
        names: &[String],
    ) -> StoreResult<Vec<NameProvider>> {
        let mut found = Vec::new();
        for names in names.chunks(dependencies::NAMES_PER_QUERY) {
            let sql = dependencies::name_providers(DIALECT, owner_id, branch, names);
            for row in query(&sql).fetch_all(&self.reader).await? {
                found.push(NameProvider {
                    package_id: row.try_get("package_id")?,
                    name: row.try_get("name")?,
                    version: row.try_get("version")?,
                    arch: row.try_get("arch")?,
                });
            }
        }
        Ok(found)
    }

    pub(super) async fn catalog_dependents(
        &self,
        repository_id: i64,
        names: &[String],
    ) -> StoreResult<Vec<Dependent>> {
        let mut found: Vec<Dependent> = Vec::new();
        for names in names.chunks(dependencies::NAMES_PER_QUERY) {
            let sql = dependencies::dependents(DIALECT, repository_id, names);
            for row in query(&sql).fetch_all(&self.reader).await? {
                found.push(Dependent {
                    package_id: row.try_get("package_id")?,
                    arch: row.try_get("arch")?,
                    filename: row.try_get("filename")?,
                    stanza: row.try_get("stanza")?,
                });
            }
        }
        // A package depending on names of several chunks comes once.
        found.sort_by_key(|d| d.package_id);
        found.dedup_by_key(|d| d.package_id);
        Ok(found)
    }

    pub(super) async fn catalog_dependency_check(
        &self,
        repo: &RepoRef,
    ) -> StoreResult<Option<Option<String>>> {
        Ok(sqlx::query_scalar(dependencies::DEPENDENCY_CHECK)
            .bind(repo.owner_id)
            .bind(&repo.branch)
            .bind(&repo.repository)
            .fetch_optional(&self.reader)
            .await?)
    }

    pub(super) async fn catalog_set_dependency_check(
        &self,
        repo: &RepoRef,
        value: Option<&str>,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(dependencies::SET_DEPENDENCY_CHECK)
            .bind(value)
            .bind(repo.owner_id)
            .bind(&repo.branch)
            .bind(&repo.repository)
            .execute(&mut *tx)
            .await?;
        let changed = done.rows_affected() > 0;
        if changed {
            super::record(&mut tx, audit).await?;
        }
        tx.commit().await?;
        self.cache.changed();
        Ok(changed)
    }
}
