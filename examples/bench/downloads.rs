//! Downloads measured with wrk, on the registry and on nginx serving the same files.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::server::free_port;

/// `name` on `PATH`, or in the sbin directories (Debian installs nginx in /usr/sbin).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// nginx with a configuration of the benchmark's, serving `root` on loopback.
pub struct Nginx {
    child: Child,
    pub base: String,
}

impl Nginx {
    pub async fn start(
        bin: &Path,
        dir: &Path,
        root: &Path,
        client: &reqwest::Client,
    ) -> anyhow::Result<Nginx> {
        let port = free_port()?;
        let d = dir.display();
        // As root the master would switch the workers to an unprivileged user, who cannot
        // read the benchmark's private temporary directory.
        let user = if rustix::process::geteuid().is_root() {
            "user root;\n"
        } else {
            ""
        };
        let config = format!(
            "{user}worker_processes auto;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/nginx-body;
    proxy_temp_path {d}/nginx-proxy;
    fastcgi_temp_path {d}/nginx-fastcgi;
    uwsgi_temp_path {d}/nginx-uwsgi;
    scgi_temp_path {d}/nginx-scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
",
            root = root.display()
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config)?;
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("nginx-error.log"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "nginx exited at start ({status}); see {}",
                    dir.join("nginx-error.log").display()
                );
            }
            if client.get(format!("{base}/")).send().await.is_ok() {
                return Ok(Nginx { child, base });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("nginx did not accept connections within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master stops its workers too.
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = self.child.wait();
    }
}

/// What one wrk run measured.
#[derive(Clone, Default)]
pub struct WrkResult {
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    /// wrk's "Socket errors:" line (connect, read, write, timeout), when it printed one.
    pub socket_errors: Option<String>,
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.00s`, `1.00m`.
fn duration_ms(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        _ => return None,
    })
}

/// Parses the figures of `wrk --latency`; an answer other than 2xx/3xx, or none at all,
/// is an error.
pub fn parse_wrk(out: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    let mut p50 = None;
    let mut p99 = None;
    let mut rps = None;
    for line in out.lines() {
        let line = line.trim();
        if let Some(errors) = line.strip_prefix("Socket errors:") {
            r.socket_errors = Some(errors.trim().to_string());
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => rps = v.parse().ok(),
            ["50%", v] => p50 = duration_ms(v),
            ["99%", v] => p99 = duration_ms(v),
            [n, "requests", "in", ..] => r.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                bail!("wrk got {n} answers other than 2xx/3xx:\n{out}")
            }
            _ => {}
        }
    }
    match (rps, p50, p99) {
        (Some(rps), Some(p50), Some(p99)) if r.requests > 0 => {
            r.requests_per_sec = rps;
            r.p50_ms = p50;
            r.p99_ms = p99;
            Ok(r)
        }
        _ => bail!("could not read wrk's figures from:\n{out}"),
    }
}

/// `wrk -t{threads} -c{connections} -d{secs}s --latency [-H header] url`.
pub fn wrk(
    bin: &Path,
    threads: usize,
    connections: usize,
    secs: u64,
    header: Option<&str>,
    url: &str,
) -> anyhow::Result<WrkResult> {
    let mut cmd = Command::new(bin);
    cmd.arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"))
        .arg("--latency");
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let out = "Running 2s test @ http://127.0.0.1:1/x
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.71ms    1.02ms  20.31ms   87.21%
    Req/Sec    19.40k     1.87k   22.16k    75.00%
  Latency Distribution
     50%    1.50ms
     75%    2.01ms
     90%    2.77ms
     99%  812.00us
  77232 requests in 2.00s, 1.23GB read
Requests/sec:  38609.12
Transfer/sec:    630.51MB
";
        let r = parse_wrk(out).unwrap();
        assert_eq!(r.requests, 77232);
        assert!((r.requests_per_sec - 38609.12).abs() < 1e-6);
        assert!((r.p50_ms - 1.5).abs() < 1e-9);
        assert!((r.p99_ms - 0.812).abs() < 1e-9);
        assert_eq!(r.socket_errors, None);
        let errors = out.replace(
            "Requests/sec:",
            "  Socket errors: connect 0, read 0, write 0, timeout 3\nRequests/sec:",
        );
        let r = parse_wrk(&errors).unwrap();
        assert_eq!(
            r.socket_errors.as_deref(),
            Some("connect 0, read 0, write 0, timeout 3")
        );
        let bad = format!("{out}  Non-2xx or 3xx responses: 12\n");
        assert!(parse_wrk(&bad).is_err());
    }
}
