//! The registry under test: the real binary, started on loopback on a data directory of
//! the benchmark's, and its memory as the kernel reports it.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub const TOKEN: &str = "apkreg_bench-token-0123456789abcdefgh";

/// How the benchmark configures every server it starts.
#[derive(Clone)]
pub struct ServerConfig {
    pub bin: PathBuf,
    pub data_dir: PathBuf,
    /// stderr of every start is appended here (`RUST_LOG=info`, as deployed).
    pub log: PathBuf,
    pub key_bits: usize,
    pub max_upload_bytes: u64,
}

pub struct Server {
    child: Child,
    pub base: String,
    pub pid: u32,
}

/// A port nobody listens on now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Server {
    /// Starts the binary and waits until `/readyz` answers 200; returns the server and
    /// the time from spawning it until then.
    pub async fn start(
        config: &ServerConfig,
        client: &reqwest::Client,
    ) -> anyhow::Result<(Server, Duration)> {
        let port = free_port()?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.log)
            .with_context(|| format!("opening {}", config.log.display()))?;
        let spawned = Instant::now();
        let child = Command::new(&config.bin)
            .arg("--data-dir")
            .arg(&config.data_dir)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("ALPINE_REGISTRY_BOOTSTRAP_TOKEN", TOKEN)
            .env(
                "ALPINE_REGISTRY__SIGNING__KEY_BITS",
                config.key_bits.to_string(),
            )
            .env(
                "ALPINE_REGISTRY__LIMITS__MAX_UPLOAD_BYTES",
                config.max_upload_bytes.to_string(),
            )
            // wrk's connections and the benchmark's own all come from 127.0.0.1.
            .env("ALPINE_REGISTRY__SERVER__MAX_CONNECTIONS_PER_IP", "1024")
            // The publishing clients are one user, as many CI jobs with one token: all
            // of the upload slots are theirs to take (by default one user gets half).
            .env(
                "ALPINE_REGISTRY__LIMITS__MAX_CONCURRENT_UPLOADS_PER_USER",
                "64",
            )
            // What a deployment logs: at debug every download would be a log line.
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it first: cargo build --release --bins --examples)",
                    config.bin.display()
                )
            })?;
        let pid = child.id();
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            pid,
        };
        let deadline = spawned + Duration::from_secs(300);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "the server exited at start ({status}); its log is {}",
                    config.log.display()
                );
            }
            if let Ok(r) = client.get(format!("{}/readyz", server.base)).send().await {
                if r.status() == 200 {
                    return Ok((server, spawned.elapsed()));
                }
            }
            if Instant::now() > deadline {
                server.stop();
                bail!("the server was not ready within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGTERM, then waits for the process (SIGKILL after 30 s).
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.wait();
        }
    }

    pub fn memory(&self) -> Memory {
        Memory { pid: self.pid }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server's resident memory from `/proc/<pid>/status`.
#[derive(Clone, Copy)]
pub struct Memory {
    pid: u32,
}

impl Memory {
    fn status_kib(&self, field: &str) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {field} in {path}"))
    }

    /// Resident memory now, in MiB.
    pub fn rss_mib(&self) -> anyhow::Result<f64> {
        Ok(self.status_kib("VmRSS")? as f64 / 1024.0)
    }

    /// Peak resident memory (`VmHWM`) in MiB: since the last [`Memory::reset_peak`], or
    /// since the start when resetting is not allowed.
    pub fn peak_mib(&self) -> anyhow::Result<f64> {
        Ok(self.status_kib("VmHWM")? as f64 / 1024.0)
    }

    /// Resets `VmHWM` to the current RSS (writing 5 to `/proc/<pid>/clear_refs`).
    /// Returns false when the kernel refused, in which case peaks count from the start.
    pub fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5").is_ok()
    }
}

/// Index builds the server has published since it started, from its `/metrics`
/// (`alpine_registry_index_builds_total`, incremental and full).
pub async fn index_builds(client: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let response = client
        .get(format!("{base}/metrics"))
        .basic_auth("admin", Some(TOKEN))
        .send()
        .await
        .context("GET /metrics")?;
    if !response.status().is_success() {
        bail!("GET /metrics answered {}", response.status());
    }
    let text = response.text().await?;
    let mut builds = 0.0;
    for line in text.lines() {
        if let Some(sample) = line.strip_prefix("alpine_registry_index_builds_total{") {
            let value = sample.rsplit(' ').next().unwrap_or_default();
            builds += value
                .parse::<f64>()
                .with_context(|| format!("reading {line:?}"))?;
        }
    }
    Ok(builds as u64)
}
