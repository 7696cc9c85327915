//! Configuration errors as the user reads them, from `Config::load` and from the binary:
//! the key as written, where it was written, the value and what was expected, the
//! closest valid key. And host names in `server.listen`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alpine_registry::config::Config;

mod common;
use common::{free_port, BIN};

/// A temporary directory holding `config.toml` with `text`.
fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, text).unwrap();
    (dir, file)
}

/// The message `Config::load` fails with.
fn load_error(file: &Path) -> String {
    match Config::load(Some(file)) {
        Ok(config) => panic!("loaded {config:?}"),
        Err(e) => format!("{e:#}"),
    }
}

/// The binary with its own data directory and no configuration from this environment.
fn binary(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.arg("--data-dir").arg(dir.join("data"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ALPINE_REGISTRY") {
            command.env_remove(name);
        }
    }
    command
}

/// A child process, killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `command`, which must fail within a minute; returns its standard error.
fn failure(command: &mut Command) -> String {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Killed(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("run binary"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "{command:?} is still running");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(log.path()).unwrap();
    assert!(!status.success(), "{command:?} succeeded: {stderr}");
    stderr
}

/// `alpine-registry --config FILE migrate`, which must fail with `message` on a line of
/// its own (after `error: `).
fn assert_binary_says(dir: &Path, file: &Path, message: &str) {
    let stderr = failure(binary(dir).arg("--config").arg(file).arg("migrate"));
    assert!(
        stderr.lines().any(|l| l == format!("error: {message}")),
        "expected {message:?} in:\n{stderr}"
    );
}

#[test]
fn a_misspelt_key_is_named_with_its_file_and_the_closest_key() {
    let (dir, file) = config_file("[server]\nlisen = \"127.0.0.1:8080\"\n");
    let message = format!(
        "unknown key server.lisen in {}; did you mean server.listen?",
        file.display()
    );
    assert_eq!(load_error(&file), message);
    assert_binary_says(dir.path(), &file, &message);
}

#[test]
fn a_misspelt_section_gets_a_suggestion() {
    let (dir, file) = config_file("[sever]\nlisten = \"127.0.0.1:8080\"\n");
    let message = format!(
        "unknown section [sever] in {}; did you mean [server]?",
        file.display()
    );
    assert_eq!(load_error(&file), message);
    assert_binary_says(dir.path(), &file, &message);
}

#[test]
fn a_key_in_the_wrong_section_points_to_the_right_one() {
    let (_dir, file) = config_file("[storage]\nlisten = \"127.0.0.1:8080\"\n");
    assert_eq!(
        load_error(&file),
        format!(
            "unknown key storage.listen in {}; did you mean server.listen?",
            file.display()
        )
    );
}

#[test]
fn an_unknown_key_like_no_other_gets_no_suggestion() {
    let (_dir, file) = config_file("[server]\nfrobnicate = 1\n");
    assert_eq!(
        load_error(&file),
        format!("unknown key server.frobnicate in {}", file.display())
    );
}

#[test]
fn a_bad_listen_address_is_echoed_with_what_is_expected() {
    let (dir, file) = config_file("[server]\nlisten = \"nonsense\"\n");
    let message = format!(
        "server.listen in {}: \"nonsense\" is not HOST:PORT (for example 127.0.0.1:8080, \
         [::]:8080 or localhost:8080)",
        file.display()
    );
    assert_eq!(load_error(&file), message);
    assert_binary_says(dir.path(), &file, &message);

    let (_dir, file) = config_file("[server]\nlisten = \"localhost:99999\"\n");
    assert_eq!(
        load_error(&file),
        format!(
            "server.listen in {}: \"localhost:99999\" is not HOST:PORT: the port \"99999\" \
             is not a number from 0 to 65535",
            file.display()
        )
    );
}

#[test]
fn a_value_of_the_wrong_type_is_echoed() {
    let (dir, file) = config_file("[limits]\nmax_upload_bytes = \"x\"\n");
    let message = format!(
        "limits.max_upload_bytes in {}: \"x\" is not a whole number (0 or more)",
        file.display()
    );
    assert_eq!(load_error(&file), message);
    assert_binary_says(dir.path(), &file, &message);

    let (_dir, file) = config_file("[auth]\nanonymous_read = \"yes\"\n");
    assert_eq!(
        load_error(&file),
        format!(
            "auth.anonymous_read in {}: \"yes\" is not true or false",
            file.display()
        )
    );
}

#[test]
fn environment_variables_are_named_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = failure(
        binary(dir.path())
            .env("ALPINE_REGISTRY__SERVER__LISEN", "127.0.0.1:8080")
            .arg("migrate"),
    );
    assert!(
        stderr.contains(
            "error: unknown key server.lisen in environment variable \
             ALPINE_REGISTRY__SERVER__LISEN; did you mean ALPINE_REGISTRY__SERVER__LISTEN?"
        ),
        "{stderr}"
    );
    let stderr = failure(
        binary(dir.path())
            .env("ALPINE_REGISTRY__LIMITS__MAX_UPLOAD_BYTES", "lots")
            .arg("migrate"),
    );
    assert!(
        stderr.contains(
            "error: limits.max_upload_bytes in environment variable \
             ALPINE_REGISTRY__LIMITS__MAX_UPLOAD_BYTES: \"lots\" is not a whole number \
             (0 or more)"
        ),
        "{stderr}"
    );
}

#[test]
fn listen_takes_a_host_name_and_writes_it_back() {
    let (_dir, file) = config_file("[server]\nlisten = \"localhost:8080\"\n");
    let config = Config::load(Some(&file)).unwrap();
    assert_eq!(config.server.listen.to_string(), "localhost:8080");
    let text = toml::to_string(&config).unwrap();
    assert!(text.contains("listen = \"localhost:8080\""), "{text}");
}

#[test]
fn serve_listens_on_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Killed(
        binary(dir.path())
            .args(["serve", "--listen", &format!("localhost:{port}")])
            .env("ALPINE_REGISTRY_BOOTSTRAP_TOKEN", common::ADMIN_TOKEN)
            .env("ALPINE_REGISTRY__SIGNING__KEY_BITS", "1024")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://localhost:{port}/healthz");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = reqwest::blocking::get(&url) {
            assert_eq!(response.status(), 200);
            break;
        }
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("server exited with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on localhost:{port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_refuses_a_malformed_listen_flag() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = failure(binary(dir.path()).args(["serve", "--listen", "nonsense"]));
    assert!(
        stderr.contains("expected HOST:PORT (for example 127.0.0.1:8080"),
        "{stderr}"
    );
}

#[test]
fn an_unresolvable_name_fails_at_start_naming_key_and_value() {
    let port = free_port();
    let (dir, file) = config_file(&format!(
        "[server]\nlisten = \"nonexistent.invalid:{port}\"\n"
    ));
    let stderr = failure(
        binary(dir.path())
            .arg("--config")
            .arg(&file)
            .arg("serve")
            .env("ALPINE_REGISTRY__SIGNING__KEY_BITS", "1024"),
    );
    assert!(
        stderr.contains(&format!(
            "error: server.listen: cannot resolve \"nonexistent.invalid:{port}\""
        )),
        "{stderr}"
    );
}

#[test]
fn the_s3_backend_is_configured_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: the start fails reaching the bucket, and says which.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let stderr = failure(
        binary(dir.path())
            .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
            .env("ALPINE_REGISTRY__STORAGE__BACKEND", "s3")
            .env("ALPINE_REGISTRY__STORAGE__S3__BUCKET", "registry-bucket")
            .env("ALPINE_REGISTRY__STORAGE__S3__PREFIX", "alpine/blobs")
            .env("ALPINE_REGISTRY__STORAGE__S3__ENDPOINT", &endpoint)
            .env("ALPINE_REGISTRY__STORAGE__S3__ALLOW_HTTP", "true")
            .env("ALPINE_REGISTRY__STORAGE__S3__PATH_STYLE", "true")
            .env("ALPINE_REGISTRY__STORAGE__S3__REGION", "eu-west-1")
            .env("ALPINE_REGISTRY__STORAGE__S3__ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env(
                "ALPINE_REGISTRY__STORAGE__S3__SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI-env-s3cret",
            )
            .env("ALPINE_REGISTRY__SIGNING__KEY_BITS", "1024")
            .env("ALPINE_REGISTRY_BOOTSTRAP_TOKEN", common::ADMIN_TOKEN)
            // The start message is at info.
            .env("RUST_LOG", "info"),
    );
    assert!(
        stderr.contains("S3 bucket registry-bucket/alpine/blobs"),
        "{stderr}"
    );
    assert!(
        stderr.contains("storage=s3 bucket registry-bucket"),
        "{stderr}"
    );
    assert!(stderr.contains(&endpoint), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

#[test]
fn the_s3_backend_without_a_bucket_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = failure(
        binary(dir.path())
            .env("ALPINE_REGISTRY__STORAGE__BACKEND", "s3")
            .arg("migrate"),
    );
    assert!(
        stderr.contains(
            "error: storage.backend is \"s3\" but storage.s3.bucket is not set: name the \
             bucket (ALPINE_REGISTRY__STORAGE__S3__BUCKET), or use backend \"fs\""
        ),
        "{stderr}"
    );
    let stderr = failure(
        binary(dir.path())
            .env("ALPINE_REGISTRY__STORAGE__BACKEND", "gcs")
            .arg("migrate"),
    );
    assert!(
        stderr
            .contains("storage.backend in environment variable ALPINE_REGISTRY__STORAGE__BACKEND"),
        "{stderr}"
    );
    assert!(stderr.contains("\"gcs\""), "{stderr}");
}

/// The deployment example (`deploy/registry.toml`, used by `deploy/compose.yaml`) is a
/// valid configuration of PostgreSQL-ready instances on an S3-compatible bucket, as the
/// README describes it.
#[test]
fn the_deployment_example_configures_instances_on_a_bucket() {
    use alpine_registry::config::StorageBackend;
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/registry.toml");
    let config = Config::load_file_only(&file).unwrap();
    assert_eq!(config.storage.backend, StorageBackend::S3);
    let s3 = &config.storage.s3;
    assert_eq!(s3.bucket, "alpine-registry");
    assert_eq!(s3.endpoint, "http://minio:9000");
    assert!(s3.path_style && s3.allow_http);
    // Secrets come from the environment, never from the file.
    assert!(s3.access_key_id.is_empty() && s3.secret_access_key.is_empty());
    assert!(config.signing.master_key.is_empty());
    assert!(config.database.url.is_empty());
    assert!(!config.server.trusted_proxies.is_empty());
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");

    // The compose file mounts this configuration into both instances and passes the
    // secrets the file leaves out.
    let compose = std::fs::read_to_string(file.with_file_name("compose.yaml")).unwrap();
    for needed in [
        "./registry.toml:/etc/alpine-registry/registry.toml",
        "ALPINE_REGISTRY__DATABASE__URL",
        "ALPINE_REGISTRY__SIGNING__MASTER_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "registry-1:",
        "registry-2:",
    ] {
        assert!(compose.contains(needed), "compose.yaml lacks {needed}");
    }
}
