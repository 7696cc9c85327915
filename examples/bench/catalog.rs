//! Scenario 6: the catalog (package search, owner and package pages) over a large catalog,
//! each part on a server of its own with a fresh data directory, so that the other
//! scenarios' packages are not in it.
//!
//! 6a. `--catalog-packages` packages with large index entries (a 4 KiB description and 150
//!     provides each, about 9 KiB, within `limits.max_stanza_bytes`): one search at a
//!     time, `--catalog-searches` concurrent anonymous searches (JSON API and web page) for
//!     `--catalog-secs`, `--owner-pages` concurrent owner pages, and a package page; with
//!     the server's peak RSS over each and a package download's latency on a connection of
//!     its own meanwhile.
//! 6b. Search latency by catalog size: the catalog filled with small packages up to each
//!     of `--catalog-sizes`, then searches and package pages one at a time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alpine_registry::apk::builder::PackageBuilder;
use anyhow::{bail, Context};

use super::report::{count, ms, percentile_ms, Table};
use super::server::{Memory, Server, ServerConfig};
use super::{mib, publish, upload_concurrently, Bench};

const LARGE_REPO: &str = "admin/v3.21/catalog";
const SMALL_REPO: &str = "admin/v3.21/small";
const PROBE_REPO: &str = "admin/v3.21/probe";
const PROVIDES: usize = 150;

/// A package whose index entry is about 9 KiB: a 4 KiB description, 150 provides.
fn large_package(i: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "library", "for", "parsing", "large", "catalogs", "of", "alpine", "packages",
    ];
    let mut description = format!("big{i}:");
    let mut k = i;
    while description.len() < 4_000 {
        k = k.wrapping_mul(31).wrapping_add(7);
        description.push(' ');
        description.push_str(WORDS[k % WORDS.len()]);
    }
    let provides: Vec<String> = (0..PROVIDES)
        .map(|k| format!("so:libbig{i}-part{k}.so.1=1.0"))
        .collect();
    PackageBuilder::new(&format!("big{i:05}"), "1.0-r0", "x86_64")
        .without_field("pkgdesc")
        .field("pkgdesc", &description)
        .field("provides", &provides.join(" "))
        .file("usr/lib/big", &i.to_le_bytes())
        .build()
}

/// Publishes `large_package(i)` for every i below `n` with `clients` uploaders.
async fn fill_large(
    client: &reqwest::Client,
    base: &str,
    n: usize,
    clients: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, base, next, failed) = (
                client.clone(),
                base.to_string(),
                next.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n || failed.load(Ordering::Relaxed) {
                        return Ok::<_, anyhow::Error>(());
                    }
                    if let Err(e) = publish(&client, &base, LARGE_REPO, large_package(i)).await {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

/// GETs `url`, which must answer 200; returns the time to the whole body.
async fn get(client: &reqwest::Client, url: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    response.bytes().await?;
    if status != 200 {
        bail!("GET {url} answered {status}");
    }
    Ok(started.elapsed())
}

/// Sorted latencies of `paths` requested one after another, `rounds` times.
async fn one_at_a_time(
    client: &reqwest::Client,
    base: &str,
    paths: &[String],
    rounds: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    for _ in 0..rounds {
        for path in paths {
            latencies.push(get(client, &format!("{base}{path}")).await?);
        }
    }
    latencies.sort();
    Ok(latencies)
}

/// `paths` requested all at once, each on a connection of its own, in rounds until
/// `at_least` has passed (one round at least). Returns the sorted latencies.
async fn all_at_once(
    base: &str,
    paths: &[String],
    at_least: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let started = Instant::now();
    let mut latencies = Vec::new();
    while latencies.is_empty() || started.elapsed() < at_least {
        let round: Vec<_> = paths
            .iter()
            .map(|path| {
                let url = format!("{base}{path}");
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    get(&client, &url).await
                })
            })
            .collect();
        for request in round {
            latencies.push(request.await??);
        }
    }
    latencies.sort();
    Ok(latencies)
}

/// A package download repeated on one connection of its own (about a hundred a second)
/// until stopped; its sorted latencies.
struct DownloadProbe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<Vec<Duration>>>,
}

impl DownloadProbe {
    fn start(url: String) -> DownloadProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                latencies.push(get(&client, &url).await?);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            latencies.sort();
            Ok(latencies)
        });
        DownloadProbe { stop, task }
    }

    async fn finish(self) -> anyhow::Result<Vec<Duration>> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?
    }
}

fn p(sorted: &[Duration], q: f64) -> String {
    ms(percentile_ms(sorted, q))
}

/// The peak RSS growth over `before`, in MiB, as text.
fn growth(memory: &Memory, before: f64) -> anyhow::Result<String> {
    Ok(mib(memory.peak_mib()? - before))
}

impl Bench {
    /// A server of its own for a part of scenario 6, on a fresh data directory, with the
    /// probe package published (which waits for the owner key).
    async fn catalog_server(&self, name: &str) -> anyhow::Result<(Server, String)> {
        let config = ServerConfig {
            data_dir: self.dir.path().join(format!("{name}-data")),
            log: self.dir.path().join(format!("{name}-server.log")),
            ..self.config.clone()
        };
        let (server, _) = Server::start(&config, &self.client).await?;
        let probe = PackageBuilder::new("probe", "1.0-r0", "x86_64")
            .file("usr/share/probe/data", &[7u8; 16 << 10])
            .build();
        publish(&self.client, &server.base, PROBE_REPO, probe).await?;
        let url = format!("{}/{PROBE_REPO}/x86_64/probe-1.0-r0.apk", server.base);
        Ok((server, url))
    }

    /// Scenario 6a: the catalog with large index entries.
    pub async fn catalog_large(&mut self) -> anyhow::Result<()> {
        let n = self.o.catalog_packages;
        let (server, probe_url) = self.catalog_server("catalog-large").await?;
        let memory = server.memory();
        let base = server.base.clone();
        print!(
            "filling {LARGE_REPO} with {} large packages ... ",
            count(n as u64)
        );
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let fill = fill_large(&self.client, &base, n, self.o.fill_clients).await?;
        println!("{:.1} s", fill.as_secs_f64());
        let searches = |web: bool| -> Vec<String> {
            let prefix = if web {
                "/-/search?"
            } else {
                "/api/v1/packages?"
            };
            ["q=part7.so", "q=big001*", "limit=100"]
                .iter()
                .map(|q| format!("{prefix}{q}"))
                .collect()
        };
        let mut sequential_paths = searches(false);
        sequential_paths.extend(searches(true));
        let mut t = Table::new(
            &format!(
                "6a. Catalog of {} packages with large index entries (4 KiB description, {PROVIDES} provides, about 9 KiB each)",
                count(n as u64)
            ),
            &[
                "requests",
                "answered",
                "p50 ms",
                "p99 ms",
                "max ms",
                "peak RSS growth MiB",
                "download p50 ms",
                "download p99 ms",
                "download max ms",
            ],
        );

        self.peak_resets = memory.reset_peak() && self.peak_resets;
        let before = memory.rss_mib()?;
        let one = one_at_a_time(&self.client, &base, &sequential_paths, 5).await?;
        t.row(vec![
            "one search at a time (API and web: a provided-name substring, a name glob, everything)"
                .into(),
            one.len().to_string(),
            p(&one, 0.5),
            p(&one, 0.99),
            p(&one, 1.0),
            growth(&memory, before)?,
            "-".into(),
            "-".into(),
            "-".into(),
        ]);

        let concurrent: Vec<String> = (0..self.o.catalog_searches)
            .map(|i| sequential_paths[i % sequential_paths.len()].clone())
            .collect();
        self.peak_resets = memory.reset_peak() && self.peak_resets;
        let before = memory.rss_mib()?;
        let probe = DownloadProbe::start(probe_url.clone());
        let at_once =
            all_at_once(&base, &concurrent, Duration::from_secs(self.o.catalog_secs)).await?;
        let downloads = probe.finish().await?;
        t.row(vec![
            format!(
                "{} concurrent anonymous searches (half API, half web), rounds for {} s",
                self.o.catalog_searches, self.o.catalog_secs
            ),
            at_once.len().to_string(),
            p(&at_once, 0.5),
            p(&at_once, 0.99),
            p(&at_once, 1.0),
            growth(&memory, before)?,
            p(&downloads, 0.5),
            p(&downloads, 0.99),
            p(&downloads, 1.0),
        ]);

        let owner_pages = vec!["/admin".to_string(); self.o.owner_pages];
        self.peak_resets = memory.reset_peak() && self.peak_resets;
        let before = memory.rss_mib()?;
        let probe = DownloadProbe::start(probe_url.clone());
        let pages = all_at_once(&base, &owner_pages, Duration::ZERO).await?;
        let downloads = probe.finish().await?;
        t.row(vec![
            format!(
                "{} concurrent owner pages (/admin), once",
                self.o.owner_pages
            ),
            pages.len().to_string(),
            p(&pages, 0.5),
            p(&pages, 0.99),
            p(&pages, 1.0),
            growth(&memory, before)?,
            p(&downloads, 0.5),
            p(&downloads, 0.99),
            p(&downloads, 1.0),
        ]);

        self.peak_resets = memory.reset_peak() && self.peak_resets;
        let before = memory.rss_mib()?;
        let package_pages = vec![
            "/api/v1/owners/admin/packages/big00007".to_string(),
            "/admin/-/packages/big00007".to_string(),
        ];
        let one = one_at_a_time(&self.client, &base, &package_pages, 10).await?;
        t.row(vec![
            "one package page at a time (API and web)".into(),
            one.len().to_string(),
            p(&one, 0.5),
            p(&one, 0.99),
            p(&one, 1.0),
            growth(&memory, before)?,
            "-".into(),
            "-".into(),
            "-".into(),
        ]);
        t.note(format!(
            "Filled by {} uploaders in {:.1} s, into one repository. Searches are anonymous, each on a new connection; \
             the download (a 16 KiB package) is repeated about a hundred times a second on a connection of its own. \
             Peak RSS growth: the server's VmHWM over the requests minus its RSS before them. {}",
            self.o.fill_clients,
            fill.as_secs_f64(),
            self.peak_note()
        ));
        drop(server);
        self.emit(t);
        Ok(())
    }

    /// Scenario 6b: search latency by catalog size, with small packages.
    pub async fn catalog_sizes(&mut self) -> anyhow::Result<()> {
        let (server, _) = self.catalog_server("catalog-sizes").await?;
        let base = server.base.clone();
        let mut t = Table::new(
            "6b. Search latency by catalog size (small packages, one request at a time)",
            &[
                "packages",
                "substring p50 ms",
                "substring p99 ms",
                "glob p50 ms",
                "glob p99 ms",
                "first page p50 ms",
                "first page p99 ms",
                "package page p50 ms",
                "package page p99 ms",
            ],
        );
        let mut held = 0;
        for &size in &self.o.catalog_sizes {
            if held < size {
                print!(
                    "filling {SMALL_REPO} to {} small packages ... ",
                    count(size as u64)
                );
                let _ = std::io::Write::flush(&mut std::io::stdout());
                let (took, _) = upload_concurrently(
                    &self.client,
                    &base,
                    SMALL_REPO,
                    "small",
                    self.o.fill_clients,
                    held,
                    size,
                )
                .await?;
                println!("{:.1} s", took.as_secs_f64());
                held = size;
            }
            let rounds = 10;
            let measure = |paths: Vec<String>| {
                let (client, base) = (self.client.clone(), base.clone());
                async move { one_at_a_time(&client, &base, &paths, rounds).await }
            };
            // A name that several packages contain, a glob over a tenth of them, the
            // first page of everything; the JSON API and the web page alike.
            let substring = measure(vec![
                "/api/v1/packages?q=small-00012".into(),
                "/-/search?q=small-00012".into(),
            ])
            .await?;
            let glob = measure(vec![
                "/api/v1/packages?q=small-0000*".into(),
                "/-/search?q=small-0000*".into(),
            ])
            .await?;
            let first = measure(vec![
                "/api/v1/packages?limit=100".into(),
                "/-/search".into(),
            ])
            .await?;
            let package = measure(vec![
                "/api/v1/owners/admin/packages/small-000012".into(),
                "/admin/-/packages/small-000012".into(),
            ])
            .await?;
            t.row(vec![
                count(size as u64),
                p(&substring, 0.5),
                p(&substring, 0.99),
                p(&glob, 0.5),
                p(&glob, 0.99),
                p(&first, 0.5),
                p(&first, 0.99),
                p(&package, 0.5),
                p(&package, 0.99),
            ]);
        }
        t.note(
            "Small packages (about 1 KiB, one dependency) filled into one repository; each figure over 20 requests, \
             half to the JSON API, half to the web page.",
        );
        drop(server);
        self.emit(t);
        Ok(())
    }
}
