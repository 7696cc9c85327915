//! The real server binary as a child process: started on a free port with its own data
//! directory and environment, its log kept in a file, its memory read from /proc.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::backends::Backends;
use super::{free_port, wait_listening, BIN};

pub struct ChildServer {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    /// The database and bucket prefix it runs on, when not the embedded default (dropped
    /// after the child is killed).
    pub backends: Backends,
}

impl ChildServer {
    /// Starts `serve` with the bootstrap token `token`, 1024-bit keys (the format is the
    /// same at 4096) and `env` on top, and waits until it accepts connections.
    pub fn start(token: &str, env: &[(&str, &str)]) -> ChildServer {
        Self::start_with(Command::new(BIN), token, env)
    }

    /// Like `start`, on the backends the test environment names (see `backends`): a fresh
    /// PostgreSQL database and bucket prefix when they are set.
    pub fn start_on_backends(token: &str, env: &[(&str, &str)]) -> ChildServer {
        Self::start_with_on_backends(Command::new(BIN), token, env)
    }

    /// `start_with` on the backends the test environment names.
    pub fn start_with_on_backends(
        mut command: Command,
        token: &str,
        env: &[(&str, &str)],
    ) -> ChildServer {
        let backends = Backends::from_env();
        backends.apply(&mut command);
        let mut server = Self::start_with(command, token, env);
        server.backends = backends;
        server
    }

    /// Like `start`, with `command` (e.g. a `prlimit` wrapper whose last argument is the
    /// binary) in place of the bare binary.
    pub fn start_with(mut command: Command, token: &str, env: &[(&str, &str)]) -> ChildServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = dir.path().join("server.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        command
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("ALPINE_REGISTRY_BOOTSTRAP_TOKEN", token)
            .env("ALPINE_REGISTRY__SIGNING__KEY_BITS", "1024")
            .env("ALPINE_REGISTRY__SIGNING__KEYRING", "false")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("spawn server");
        wait_listening(port);
        ChildServer {
            child,
            port,
            dir,
            log,
            backends: Backends::embedded(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Peak resident set size so far.
    pub fn peak_rss(&self) -> u64 {
        super::peak_rss(self.child.id())
    }

    pub fn rss(&self) -> u64 {
        super::proc_status_bytes(self.child.id(), "VmRSS:")
    }

    /// Resets the peak resident set size to the current one (writing 5 to
    /// `/proc/<pid>/clear_refs`), so that `peak_rss` is the peak of what follows; false
    /// when the kernel refused.
    pub fn reset_peak_rss(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").is_ok()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
