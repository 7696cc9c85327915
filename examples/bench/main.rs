//! Benchmark: runs the real server binary (release build) on loopback with a fresh data
//! directory, drives it with packages it builds itself, and prints one table per scenario:
//!
//! 1. publish latency into a repository of growing size (and the concurrent fill rate);
//! 2. 32 clients publishing into a fresh repository: publishes/s and index builds;
//! 3. downloads (a 16 KiB package, the index, a 304 revalidation) with wrk, side by side
//!    with nginx serving the same files;
//! 4. one large upload (1 GiB): time and the server's peak memory;
//! 5. time from start to ready, and idle memory, on a data directory with N packages;
//! 6. the catalog: searches, owner and package pages over 3,400 packages with large index
//!    entries (memory, latency, a download's latency meanwhile), and search latency by
//!    catalog size, each on a server of its own.
//!
//! ```sh
//! cargo build --release --bins --examples && target/release/examples/bench
//! target/release/examples/bench --small     # every scenario in a tiny version
//! ```
//!
//! See BENCHMARKS.md for the options and what each figure means. Only talks to 127.0.0.1.

mod bigpkg;
mod catalog;
mod chart;
mod downloads;
mod report;
mod server;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alpine_registry::apk::builder::PackageBuilder;
use anyhow::{bail, Context};
use rand::{RngCore, SeedableRng};
use report::{count, ms, percentile_ms, Table};
use server::{Memory, Server, ServerConfig, TOKEN};

const MAIN_REPO: &str = "admin/v3.21/main";
const CONCURRENT_REPO: &str = "admin/v3.21/concurrent";
const LARGE_REPO: &str = "admin/v3.21/large";
const WARMUP_REPO: &str = "admin/v3.21/warmup";

const USAGE: &str = "usage: bench [--small] [--sizes 1000,10000,50000] [--samples 50]
       [--fill-clients 16] [--clients 32] [--concurrent-packages 2000]
       [--wrk-secs 10] [--wrk-threads 2] [--wrk-connections 64] [--upload-mib 1024]
       [--idle-packages 10000] [--idle-secs 5] [--catalog-packages 3400]
       [--catalog-sizes 10000,40000] [--catalog-searches 16] [--catalog-secs 5]
       [--owner-pages 128] [--scenarios 1,2,3,4,5,6]
       [--key-bits 4096] [--bin PATH] [--out DIR] [--keep]";

struct Options {
    small: bool,
    /// Keep the scratch directory (data directory, server and nginx logs).
    keep: bool,
    sizes: Vec<usize>,
    samples: usize,
    fill_clients: usize,
    clients: usize,
    concurrent_packages: usize,
    wrk_secs: u64,
    wrk_threads: usize,
    wrk_connections: usize,
    upload_mib: u64,
    idle_packages: usize,
    idle_secs: u64,
    /// Scenario 6: packages with large index entries, small-package catalog sizes,
    /// concurrent searches and for how long, concurrent owner pages.
    catalog_packages: usize,
    catalog_sizes: Vec<usize>,
    catalog_searches: usize,
    catalog_secs: u64,
    owner_pages: usize,
    scenarios: BTreeSet<u32>,
    key_bits: usize,
    bin: PathBuf,
    out: PathBuf,
}

fn list<T: std::str::FromStr>(value: &str, what: &str) -> anyhow::Result<Vec<T>> {
    value
        .split(',')
        .map(|v| {
            v.trim()
                .replace('_', "")
                .parse()
                .map_err(|_| anyhow::anyhow!("{what}: {v:?} is not a number"))
        })
        .collect()
}

/// The server binary built beside this example (`<target>/release/alpine-registry` for
/// `<target>/release/examples/bench`), else `target/release/alpine-registry`.
fn default_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("alpine-registry")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("target/release/alpine-registry"))
}

impl Options {
    fn parse() -> anyhow::Result<Options> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let small = args.iter().any(|a| a == "--small");
        let mut o = Options {
            small,
            keep: false,
            sizes: if small {
                vec![50, 200]
            } else {
                vec![1_000, 10_000, 50_000]
            },
            samples: if small { 20 } else { 50 },
            fill_clients: 16,
            clients: 32,
            concurrent_packages: if small { 200 } else { 2_000 },
            wrk_secs: if small { 2 } else { 10 },
            wrk_threads: 2,
            wrk_connections: 64,
            upload_mib: if small { 32 } else { 1024 },
            idle_packages: if small { 200 } else { 10_000 },
            idle_secs: if small { 2 } else { 5 },
            catalog_packages: if small { 200 } else { 3_400 },
            catalog_sizes: if small {
                vec![500, 1_000]
            } else {
                vec![10_000, 40_000]
            },
            catalog_searches: 16,
            catalog_secs: if small { 1 } else { 5 },
            owner_pages: 128,
            scenarios: (1..=6).collect(),
            key_bits: 4096,
            bin: default_bin(),
            out: PathBuf::from("bench-results"),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if arg == "--small" {
                continue;
            }
            if arg == "--keep" {
                o.keep = true;
                continue;
            }
            if arg == "-h" || arg == "--help" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (arg.as_str(), None),
            };
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .with_context(|| format!("{name} needs a value\n{USAGE}"))?,
            };
            let one = |what: &str| -> anyhow::Result<u64> {
                match list::<u64>(&value, what)?.as_slice() {
                    [n] => Ok(*n),
                    _ => bail!("{what} takes one number"),
                }
            };
            match name {
                "--sizes" => o.sizes = list(&value, name)?,
                "--samples" => o.samples = one(name)? as usize,
                "--fill-clients" => o.fill_clients = one(name)? as usize,
                "--clients" => o.clients = one(name)? as usize,
                "--concurrent-packages" => o.concurrent_packages = one(name)? as usize,
                "--wrk-secs" => o.wrk_secs = one(name)?,
                "--wrk-threads" => o.wrk_threads = one(name)? as usize,
                "--wrk-connections" => o.wrk_connections = one(name)? as usize,
                "--upload-mib" => o.upload_mib = one(name)?,
                "--idle-packages" => o.idle_packages = one(name)? as usize,
                "--idle-secs" => o.idle_secs = one(name)?,
                "--catalog-packages" => o.catalog_packages = one(name)? as usize,
                "--catalog-sizes" => o.catalog_sizes = list(&value, name)?,
                "--catalog-searches" => o.catalog_searches = one(name)? as usize,
                "--catalog-secs" => o.catalog_secs = one(name)?,
                "--owner-pages" => o.owner_pages = one(name)? as usize,
                "--scenarios" => o.scenarios = list(&value, name)?.into_iter().collect(),
                "--key-bits" => o.key_bits = one(name)? as usize,
                "--bin" => o.bin = PathBuf::from(value),
                "--out" => o.out = PathBuf::from(value),
                other => bail!("unknown option {other}\n{USAGE}"),
            }
        }
        o.sizes.sort_unstable();
        o.sizes.dedup();
        o.catalog_sizes.sort_unstable();
        o.catalog_sizes.dedup();
        if o.scenarios.iter().any(|s| !(1..=6).contains(s)) {
            bail!("--scenarios takes numbers from 1 to 6");
        }
        if o.catalog_packages <= 12 || o.catalog_searches == 0 || o.owner_pages == 0 {
            bail!(
                "--catalog-packages must be over 12, --catalog-searches and --owner-pages at \
                 least 1"
            );
        }
        if o.samples == 0 || o.fill_clients == 0 || o.clients == 0 || o.wrk_secs == 0 {
            bail!("--samples, --fill-clients, --clients and --wrk-secs must be at least 1");
        }
        Ok(o)
    }

    fn runs(&self, scenario: u32) -> bool {
        self.scenarios.contains(&scenario)
    }
}

/// A small package as the fills and the timed publishes upload it (about 1 KiB).
fn small_package(name: &str) -> Vec<u8> {
    PackageBuilder::new(name, "1.0-r0", "x86_64")
        .field("depend", "musl")
        .file(
            &format!("usr/share/{name}/README"),
            format!("package {name}\n").as_bytes(),
        )
        .build()
}

/// PUTs one package; anything but 201 is an error. Returns the time until the answer.
async fn publish(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
    body: impl Into<reqwest::Body>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let r = client
        .put(format!("{base}/{repo}"))
        .basic_auth("admin", Some(TOKEN))
        .body(body)
        .send()
        .await
        .with_context(|| format!("PUT {repo}"))?;
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    if status != 201 {
        bail!("PUT {repo} answered {status}: {text}");
    }
    Ok(started.elapsed())
}

/// GETs `url`; anything but 200 is an error. Returns the body and the ETag.
async fn download(client: &reqwest::Client, url: &str) -> anyhow::Result<(Vec<u8>, String)> {
    let r = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if r.status() != 200 {
        bail!("GET {url} answered {}", r.status());
    }
    let etag = r
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((r.bytes().await?.to_vec(), etag))
}

/// Publishes `{prefix}-{i:06}` for every i in `from..to` with `clients` concurrent
/// uploaders. Returns the elapsed time and every publish's latency.
async fn upload_concurrently(
    client: &reqwest::Client,
    base: &str,
    repo: &'static str,
    prefix: &'static str,
    clients: usize,
    from: usize,
    to: usize,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(from));
    let failed = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, base, next, failed) = (
            client.clone(),
            base.to_string(),
            next.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= to || failed.load(Ordering::Relaxed) {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let bytes = small_package(&format!("{prefix}-{i:06}"));
                match publish(&client, &base, repo, bytes).await {
                    Ok(t) => latencies.push(t),
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
        }));
    }
    let mut all = Vec::new();
    let mut first_error = None;
    for t in tasks {
        match t.await? {
            Ok(latencies) => all.extend(latencies),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok((started.elapsed(), all))
}

fn mib(v: f64) -> String {
    format!("{v:.1}")
}

/// Everything the scenarios share.
struct Bench {
    o: Options,
    dir: tempfile::TempDir,
    config: ServerConfig,
    client: reqwest::Client,
    server: Server,
    /// Whether VmHWM can be reset per scenario (else peaks count from the server's start).
    peak_resets: bool,
    tables: Vec<Table>,
    charts: Vec<PathBuf>,
}

impl Bench {
    fn memory(&self) -> Memory {
        self.server.memory()
    }

    /// Resets the server's peak RSS for a new measurement.
    fn reset_peak(&mut self) {
        self.peak_resets = self.memory().reset_peak() && self.peak_resets;
    }

    fn peak_note(&self) -> String {
        if self.peak_resets {
            "Peak RSS: the server's VmHWM over the measurement, reset before it by writing 5 to /proc/PID/clear_refs.".to_string()
        } else {
            "Peak RSS: the server's VmHWM since it started (the kernel refused to reset it through /proc/PID/clear_refs).".to_string()
        }
    }

    fn emit(&mut self, table: Table) {
        println!("{}", table.render());
        self.tables.push(table);
    }

    /// Stops the server and starts it again on the same data directory; returns the time
    /// from spawning it until `/readyz` answered 200.
    async fn restart(&mut self) -> anyhow::Result<Duration> {
        self.server.stop();
        let (server, ready) = Server::start(&self.config, &self.client).await?;
        self.server = server;
        Ok(ready)
    }

    /// Scenarios 1 and 5: fills the main repository to each size, times sequential
    /// publishes there (1), and restarts the server when it holds N packages (5).
    async fn sizes(&mut self, first_start: (Duration, f64, f64)) -> anyhow::Result<()> {
        let (s1, s5) = (self.o.runs(1), self.o.runs(5));
        let mut stops: BTreeSet<usize> = BTreeSet::new();
        if s1 {
            stops.extend(self.o.sizes.iter().copied());
        }
        if s5 {
            stops.insert(self.o.idle_packages);
        }
        let mut t1 = Table::new(
            &format!(
                "1. Publish latency by repository size ({} sequential PUTs per size, each answered after the new signed index)",
                self.o.samples
            ),
            &[
                "packages",
                "filled from",
                &format!("fill uploads/s ({} clients)", self.o.fill_clients),
                "PUT p50 ms",
                "PUT p99 ms",
                "PUT max ms",
                "sequential publishes/s",
                "DELETE p50 ms",
                "DELETE p99 ms",
                "index KiB",
                "peak RSS MiB",
            ],
        );
        let mut t5 = Table::new(
            "5. Time to ready and idle memory",
            &[
                "packages in the data directory",
                "spawn to /readyz 200 ms",
                &format!("idle RSS after {} s, MiB", self.o.idle_secs),
                "peak RSS during start and idle, MiB",
            ],
        );
        t5.row(vec![
            "0 (first start, empty)".to_string(),
            ms(first_start.0.as_secs_f64() * 1000.0),
            mib(first_start.1),
            mib(first_start.2),
        ]);
        let mut chart_p50 = Vec::new();
        let mut chart_p99 = Vec::new();
        let mut chart_fill = Vec::new();
        // Packages in the main repository, and the next fill number.
        let mut held = 0usize;
        let mut next_fill = 0usize;
        for &stop in &stops {
            self.reset_peak();
            let filled_from = held;
            let mut fill_rate = None;
            // The peak of the fill when the server is restarted after it.
            let mut fill_peak: Option<f64> = None;
            if held < stop {
                let n = stop - held;
                print!(
                    "filling {MAIN_REPO} from {} to {} packages ... ",
                    count(held as u64),
                    count(stop as u64)
                );
                let _ = std::io::Write::flush(&mut std::io::stdout());
                let (took, _) = upload_concurrently(
                    &self.client,
                    &self.server.base,
                    MAIN_REPO,
                    "fill",
                    self.o.fill_clients,
                    next_fill,
                    next_fill + n,
                )
                .await?;
                next_fill += n;
                held = stop;
                let rate = n as f64 / took.as_secs_f64();
                println!("{:.1} s, {rate:.0} uploads/s", took.as_secs_f64());
                fill_rate = Some(rate);
                chart_fill.push((stop as f64, rate));
            }
            if s5 && stop == self.o.idle_packages {
                println!(
                    "restarting the server on {} packages ...",
                    count(held as u64 + 1)
                );
                fill_peak = Some(self.memory().peak_mib()?);
                let ready = self.restart().await?;
                tokio::time::sleep(Duration::from_secs(self.o.idle_secs)).await;
                let m = self.memory();
                t5.row(vec![
                    // The warm-up repository holds one more.
                    format!(
                        "{} ({} in {MAIN_REPO})",
                        count(held as u64 + 1),
                        count(held as u64)
                    ),
                    ms(ready.as_secs_f64() * 1000.0),
                    mib(m.rss_mib()?),
                    mib(m.peak_mib()?),
                ]);
                self.reset_peak();
            }
            if !(s1 && self.o.sizes.contains(&stop)) {
                continue;
            }
            let mut times = Vec::new();
            let started = Instant::now();
            for i in 0..self.o.samples {
                let bytes = small_package(&format!("timed-{stop}-{i:04}"));
                // Only PUT until 201 is timed, not building the package.
                times.push(publish(&self.client, &self.server.base, MAIN_REPO, bytes).await?);
            }
            let total = started.elapsed();
            let (index, _) = download(
                &self.client,
                &format!("{}/{MAIN_REPO}/x86_64/APKINDEX.tar.gz", self.server.base),
            )
            .await?;
            // The timed packages go again, one at a time: the next size starts from this one.
            let mut deletes = Vec::new();
            for i in 0..self.o.samples {
                let url = format!(
                    "{}/{MAIN_REPO}/x86_64/timed-{stop}-{i:04}-1.0-r0.apk",
                    self.server.base
                );
                let started = Instant::now();
                let r = self
                    .client
                    .delete(&url)
                    .basic_auth("admin", Some(TOKEN))
                    .send()
                    .await
                    .with_context(|| format!("DELETE {url}"))?;
                let status = r.status();
                let _ = r.bytes().await;
                if status != 204 {
                    bail!("DELETE {url} answered {status}");
                }
                deletes.push(started.elapsed());
            }
            deletes.sort();
            times.sort();
            let (p50, p99) = (percentile_ms(&times, 0.5), percentile_ms(&times, 0.99));
            t1.row(vec![
                count(stop as u64),
                count(filled_from as u64),
                fill_rate.map_or("-".to_string(), |r| format!("{r:.0}")),
                ms(p50),
                ms(p99),
                ms(percentile_ms(&times, 1.0)),
                format!("{:.1}", self.o.samples as f64 / total.as_secs_f64()),
                ms(percentile_ms(&deletes, 0.5)),
                ms(percentile_ms(&deletes, 0.99)),
                format!("{:.0}", index.len() as f64 / 1024.0),
                mib(self.memory().peak_mib()?.max(fill_peak.unwrap_or(0.0))),
            ]);
            chart_p50.push((stop as f64, p50));
            chart_p99.push((stop as f64, p99));
        }
        if s1 {
            t1.note(format!(
                "packages: what the repository held before the timed PUTs; each timed package is then deleted, one at a time \
                 (DELETE answered 204 after the new signed index). fill uploads/s: filling from the previous size with \
                 concurrent uploaders. index KiB: with the timed packages in it. {}",
                self.peak_note()
            ));
            self.emit(t1);
            if !chart_p50.is_empty() {
                let path = self.o.out.join("publish-latency.png");
                chart::line_chart(
                    &path,
                    "PUT until 201 by repository size",
                    "packages in the repository",
                    "ms",
                    &[
                        chart::Series {
                            name: "p50".into(),
                            color: plotters::style::RGBColor(31, 119, 180),
                            points: chart_p50,
                        },
                        chart::Series {
                            name: "p99".into(),
                            color: plotters::style::RGBColor(214, 39, 40),
                            points: chart_p99,
                        },
                    ],
                )?;
                self.charts.push(path);
            }
            if !chart_fill.is_empty() {
                let path = self.o.out.join("fill-rate.png");
                chart::line_chart(
                    &path,
                    &format!(
                        "Fill rate, {} concurrent uploaders, up to each size",
                        self.o.fill_clients
                    ),
                    "packages in the repository",
                    "uploads/s",
                    &[chart::Series {
                        name: "uploads/s".into(),
                        color: plotters::style::RGBColor(44, 160, 44),
                        points: chart_fill,
                    }],
                )?;
                self.charts.push(path);
            }
        }
        if s5 {
            t5.note(format!(
                "Spawn to ready: from starting the process until GET /readyz answered 200 (polled every 5 ms). \
                 Idle RSS: VmRSS after {} s without requests. The peak (VmHWM) counts from the process's start.",
                self.o.idle_secs
            ));
            self.emit(t5);
        }
        Ok(())
    }

    /// Scenario 2: many clients publishing into a fresh repository at once.
    async fn concurrent(&mut self) -> anyhow::Result<()> {
        let (clients, n) = (self.o.clients, self.o.concurrent_packages);
        let builds_before = server::index_builds(&self.client, &self.server.base).await?;
        self.reset_peak();
        println!("{clients} clients publishing {n} packages into {CONCURRENT_REPO} ...");
        let (took, mut times) = upload_concurrently(
            &self.client,
            &self.server.base,
            CONCURRENT_REPO,
            "conc",
            clients,
            0,
            n,
        )
        .await?;
        let peak = self.memory().peak_mib()?;
        let builds = server::index_builds(&self.client, &self.server.base).await? - builds_before;
        times.sort();
        let mut t = Table::new(
            &format!("2. {clients} clients publishing into a fresh repository"),
            &[
                "clients",
                "packages",
                "seconds",
                "publishes/s",
                "PUT p50 ms",
                "PUT p99 ms",
                "index builds",
                "publishes per build",
                "peak RSS MiB",
            ],
        );
        t.row(vec![
            clients.to_string(),
            count(n as u64),
            format!("{:.1}", took.as_secs_f64()),
            format!("{:.0}", n as f64 / took.as_secs_f64()),
            ms(percentile_ms(&times, 0.5)),
            ms(percentile_ms(&times, 0.99)),
            count(builds),
            if builds > 0 {
                format!("{:.1}", n as f64 / builds as f64)
            } else {
                "-".to_string()
            },
            mib(peak),
        ]);
        t.note(format!(
            "index builds: alpine_registry_index_builds_total of the server's /metrics, before \
             and after (no other repository changes meanwhile), one per index generation \
             published. {}",
            self.peak_note()
        ));
        if builds == 0 {
            bail!("alpine_registry_index_builds_total did not move while publishing into {CONCURRENT_REPO}");
        }
        self.emit(t);
        Ok(())
    }

    /// Scenario 3: wrk against the registry and against nginx serving the same bytes.
    async fn downloads(&mut self) -> anyhow::Result<()> {
        let title = "3. Downloads with wrk: the registry beside nginx";
        let nginx = downloads::find_program("nginx");
        let wrk = downloads::find_program("wrk");
        let (Some(nginx_bin), Some(wrk_bin)) = (nginx.clone(), wrk.clone()) else {
            let missing: Vec<&str> = [("nginx", &nginx), ("wrk", &wrk)]
                .iter()
                .filter(|(_, p)| p.is_none())
                .map(|(n, _)| *n)
                .collect();
            let message = format!(
                "scenario 3 skipped: {} not installed (Debian: apt-get install -y nginx-light wrk)",
                missing.join(" and ")
            );
            // CI installs them: there, a skipped scenario is a failure.
            if std::env::var_os("ALPINE_REGISTRY_BENCH_REQUIRE_DOWNLOADS").is_some() {
                anyhow::bail!("{message}, and ALPINE_REGISTRY_BENCH_REQUIRE_DOWNLOADS is set");
            }
            println!("{message}\n");
            let mut t = Table::new(title, &["skipped"]);
            t.note(message);
            self.tables.push(t);
            return Ok(());
        };
        let base = self.server.base.clone();
        // A package of 16 KiB: incompressible payload, trimmed until the .apk is 16 KiB.
        let mut payload_len = 15_500usize;
        let mut payload = vec![0u8; 32 << 10];
        rand::rngs::StdRng::seed_from_u64(16).fill_bytes(&mut payload);
        let build = |len: usize| {
            PackageBuilder::new("download16k", "1.0-r0", "x86_64")
                .file("usr/share/download16k/data", &payload[..len])
                .build()
        };
        let mut package = build(payload_len);
        for _ in 0..8 {
            if package.len() == 16 << 10 {
                break;
            }
            payload_len = (payload_len as i64 + (16 << 10) - package.len() as i64) as usize;
            package = build(payload_len);
        }
        let package_size = package.len();
        publish(&self.client, &base, MAIN_REPO, package).await?;
        let package_path = format!("{MAIN_REPO}/x86_64/download16k-1.0-r0.apk");
        let index_path = format!("{MAIN_REPO}/x86_64/APKINDEX.tar.gz");
        let (package_bytes, _) = download(&self.client, &format!("{base}/{package_path}")).await?;
        let (index_bytes, registry_etag) =
            download(&self.client, &format!("{base}/{index_path}")).await?;
        if registry_etag.is_empty() {
            bail!("the registry sent no ETag for {index_path}");
        }
        let root = self.dir.path().join("www");
        for (path, bytes) in [(&package_path, &package_bytes), (&index_path, &index_bytes)] {
            let file = root.join(path);
            std::fs::create_dir_all(file.parent().unwrap())?;
            std::fs::write(&file, bytes)?;
        }
        let nginx = downloads::Nginx::start(&nginx_bin, self.dir.path(), &root, &self.client)
            .await
            .context("starting nginx")?;
        for (path, expected) in [(&package_path, &package_bytes), (&index_path, &index_bytes)] {
            let (got, _) = download(&self.client, &format!("{}/{path}", nginx.base)).await?;
            if &got != expected {
                bail!("nginx serves other bytes than the registry for {path}");
            }
        }
        let (_, nginx_etag) =
            download(&self.client, &format!("{}/{index_path}", nginx.base)).await?;
        for (server, etag) in [(&base, &registry_etag), (&nginx.base, &nginx_etag)] {
            let r = self
                .client
                .get(format!("{server}/{index_path}"))
                .header("If-None-Match", etag.as_str())
                .send()
                .await?;
            if r.status() != 304 {
                bail!(
                    "{server}/{index_path} with If-None-Match {etag} answered {}, not 304",
                    r.status()
                );
            }
        }

        let mut t = Table::new(
            title,
            &[
                "GET",
                "registry req/s",
                "registry p50 ms",
                "registry p99 ms",
                "nginx req/s",
                "nginx p50 ms",
                "nginx p99 ms",
                "registry/nginx",
            ],
        );
        let (threads, connections, secs) =
            (self.o.wrk_threads, self.o.wrk_connections, self.o.wrk_secs);
        self.reset_peak();
        let runs = [
            (
                format!("{} KiB package (200)", package_size >> 10),
                &package_path,
                None,
                None,
            ),
            (
                format!("APKINDEX.tar.gz, {} KiB (200)", index_bytes.len() >> 10),
                &index_path,
                None,
                None,
            ),
            (
                "APKINDEX.tar.gz If-None-Match (304)".to_string(),
                &index_path,
                Some(format!("If-None-Match: {registry_etag}")),
                Some(format!("If-None-Match: {nginx_etag}")),
            ),
        ];
        let mut socket_errors = Vec::new();
        for (what, path, registry_header, nginx_header) in runs {
            println!("wrk -t{threads} -c{connections} -d{secs}s: {what} ...");
            let r = downloads::wrk(
                &wrk_bin,
                threads,
                connections,
                secs,
                registry_header.as_deref(),
                &format!("{base}/{path}"),
            )
            .with_context(|| format!("wrk on the registry: {what}"))?;
            let n = downloads::wrk(
                &wrk_bin,
                threads,
                connections,
                secs,
                nginx_header.as_deref(),
                &format!("{}/{path}", nginx.base),
            )
            .with_context(|| format!("wrk on nginx: {what}"))?;
            for (server, result) in [("registry", &r), ("nginx", &n)] {
                if let Some(errors) = &result.socket_errors {
                    socket_errors.push(format!("{server}, {what}: {errors}"));
                }
            }
            t.row(vec![
                what,
                format!("{:.0}", r.requests_per_sec),
                ms(r.p50_ms),
                ms(r.p99_ms),
                format!("{:.0}", n.requests_per_sec),
                ms(n.p50_ms),
                ms(n.p99_ms),
                format!("{:.2}", r.requests_per_sec / n.requests_per_sec),
            ]);
        }
        let peak = self.memory().peak_mib()?;
        drop(nginx);
        if !socket_errors.is_empty() {
            t.note(format!("wrk socket errors: {}.", socket_errors.join("; ")));
        }
        t.note(format!(
            "wrk -t{threads} -c{connections} -d{secs}s --latency, one run per server and URL, the registry first; \
             the 304 runs send the ETag each server gave. nginx: sendfile on, worker_processes auto, \
             access log off (the registry logs a successful anonymous download only at debug). The index is that of {MAIN_REPO}. \
             Registry peak RSS over the wrk runs: {} MiB. {}",
            mib(peak),
            self.peak_note()
        ));
        self.emit(t);
        Ok(())
    }

    /// Scenario 4: one large upload streamed from a file.
    async fn large_upload(&mut self) -> anyhow::Result<()> {
        let payload = self.o.upload_mib << 20;
        let path = self.dir.path().join("large.apk");
        print!(
            "building a package with a {} MiB payload ... ",
            self.o.upload_mib
        );
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let started = Instant::now();
        let name = "large";
        let size = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || bigpkg::write(&path, name, payload)).await??
        };
        println!(
            "{:.1} s, {} bytes",
            started.elapsed().as_secs_f64(),
            count(size)
        );
        let m = self.memory();
        let rss_before = m.rss_mib()?;
        self.reset_peak();
        let file = tokio::fs::File::open(&path).await?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            256 << 10,
        ));
        println!("uploading it to {LARGE_REPO} ...");
        let started = Instant::now();
        let r = self
            .client
            .put(format!("{}/{LARGE_REPO}", self.server.base))
            .basic_auth("admin", Some(TOKEN))
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body)
            .send()
            .await
            .context("PUT of the large package")?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        let took = started.elapsed();
        if status != 201 {
            bail!("PUT of the large package answered {status}: {text}");
        }
        let peak = m.peak_mib()?;
        let rss_after = m.rss_mib()?;
        let url = format!("{}/{LARGE_REPO}/x86_64/{name}-1.0-r0.apk", self.server.base);
        let head = self.client.head(&url).send().await?;
        let served = head
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if head.status() != 200 || served != Some(size) {
            bail!(
                "HEAD {url} answered {} with length {served:?}, not 200 with {size}",
                head.status()
            );
        }
        std::fs::remove_file(&path)?;
        // And back: one download, counted as it streams.
        let started = Instant::now();
        let mut r = self.client.get(&url).send().await?;
        if r.status() != 200 {
            bail!("GET {url} answered {}", r.status());
        }
        let mut received = 0u64;
        while let Some(chunk) = r.chunk().await.with_context(|| format!("GET {url}"))? {
            received += chunk.len() as u64;
        }
        let get_took = started.elapsed();
        if received != size {
            bail!("GET {url} gave {received} bytes, not {size}");
        }
        let mut t = Table::new(
            "4. One large upload",
            &[
                "upload MiB",
                "PUT until 201 s",
                "MiB/s",
                "RSS before MiB",
                "peak RSS MiB",
                "peak growth MiB",
                "RSS after MiB",
                "GET s",
                "GET MiB/s",
            ],
        );
        t.row(vec![
            format!("{:.1}", size as f64 / (1u64 << 20) as f64),
            format!("{:.2}", took.as_secs_f64()),
            format!(
                "{:.0}",
                size as f64 / (1u64 << 20) as f64 / took.as_secs_f64()
            ),
            mib(rss_before),
            mib(peak),
            mib(peak - rss_before),
            mib(rss_after),
            format!("{:.2}", get_took.as_secs_f64()),
            format!(
                "{:.0}",
                size as f64 / (1u64 << 20) as f64 / get_took.as_secs_f64()
            ),
        ]);
        t.note(format!(
            "One file of random content (incompressible), gzip level 1, streamed from disk with Content-Length; \
             limits.max_upload_bytes raised for the benchmark server. \
             RSS after: once the 201 arrived. GET: one download of it afterwards, not counted in the peak. {}",
            self.peak_note()
        ));
        self.emit(t);
        Ok(())
    }
}

fn machine() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "unknown".into());
    vec![
        ("CPUs".into(), cpus),
        ("CPU model".into(), model),
        ("memory".into(), mem),
        ("kernel".into(), kernel),
    ]
}

fn write_results(bench: &Bench, machine: &[(String, String)], args: &str) -> anyhow::Result<()> {
    let out = &bench.o.out;
    // In the order of their numbers, not the order they ran in.
    let mut tables: Vec<&Table> = bench.tables.iter().collect();
    tables.sort_by_key(|t| {
        t.title
            .split('.')
            .next()
            .and_then(|n| n.parse::<u32>().ok())
    });
    let mut md = String::from("# Benchmark results\n\n");
    md.push_str(&format!("Command: `bench {args}`\n\n"));
    for (k, v) in machine {
        md.push_str(&format!("- {k}: {v}\n"));
    }
    md.push('\n');
    for t in &tables {
        md.push_str(&t.render());
        md.push('\n');
    }
    for c in &bench.charts {
        let name = c.file_name().unwrap().to_string_lossy();
        md.push_str(&format!("![{name}]({name})\n\n"));
    }
    std::fs::write(out.join("results.md"), md)?;
    let json = serde_json::json!({
        "arguments": args,
        "machine": machine.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "tables": tables.iter().map(|t| t.to_json()).collect::<Vec<_>>(),
        "charts": bench.charts.iter().map(|c| c.file_name().unwrap().to_string_lossy().to_string()).collect::<Vec<_>>(),
    });
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    Ok(())
}

async fn run(o: Options) -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = args.join(" ");
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("registry-bench")
        .disable_cleanup(o.keep)
        .tempdir()?;
    let config = ServerConfig {
        bin: o.bin.clone(),
        data_dir: dir.path().join("data"),
        log: dir.path().join("server.log"),
        key_bits: o.key_bits,
        // The large upload is over the default limit of 1 GiB by its headers.
        max_upload_bytes: (o.upload_mib << 20).max(1 << 30) * 2,
    };
    let machine = machine();
    println!(
        "alpine-registry benchmark{}",
        if o.small { " (--small)" } else { "" }
    );
    for (k, v) in &machine {
        println!("  {k}: {v}");
    }
    println!(
        "  server: {}\n  scratch directory: {} ({})\n",
        o.bin.display(),
        dir.path().display(),
        if o.keep {
            "kept: --keep"
        } else {
            "removed at the end; --keep keeps it"
        }
    );
    let client = reqwest::Client::new();
    let (server, first_ready) = Server::start(&config, &client).await?;
    let mut bench = Bench {
        o,
        dir,
        config,
        client,
        server,
        peak_resets: true,
        tables: Vec::new(),
        charts: Vec::new(),
    };
    // Idle figures of the first start, then the owner key: generated in the background
    // at the first start, the first publish waits for it.
    tokio::time::sleep(Duration::from_secs(bench.o.idle_secs)).await;
    let first_start = (
        first_ready,
        bench.memory().rss_mib()?,
        bench.memory().peak_mib()?,
    );
    let warmup = publish(
        &bench.client,
        &bench.server.base,
        WARMUP_REPO,
        small_package("warmup"),
    )
    .await?;
    println!(
        "first publish (waits for the owner's {}-bit key): {:.0} ms\n",
        bench.o.key_bits,
        warmup.as_secs_f64() * 1000.0
    );

    let result = async {
        if bench.o.runs(1) || bench.o.runs(5) {
            bench.sizes(first_start).await?;
        }
        if bench.o.runs(2) {
            bench.concurrent().await?;
        }
        if bench.o.runs(3) {
            bench.downloads().await?;
        }
        if bench.o.runs(4) {
            bench.large_upload().await?;
        }
        if bench.o.runs(6) {
            bench.catalog_large().await?;
            bench.catalog_sizes().await?;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    bench.server.stop();
    if let Err(e) = result {
        let log = bench.config.log.clone();
        let tail: Vec<String> = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .rev()
            .take(20)
            .map(str::to_string)
            .collect();
        eprintln!("last lines of the server's log:");
        for line in tail.iter().rev() {
            eprintln!("  {line}");
        }
        return Err(e);
    }
    write_results(&bench, &machine, &args)?;
    println!("results: {}", bench.o.out.join("results.md").display());
    for c in &bench.charts {
        println!("chart: {}", c.display());
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let o = Options::parse()?;
    tokio::runtime::Runtime::new()?.block_on(run(o))
}
