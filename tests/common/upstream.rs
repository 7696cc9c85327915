//! A local upstream for remote repositories: packages indexed with the registry's own
//! index writer, signed with a key the test makes (standing in for Alpine's), served by a
//! small HTTP server that counts requests, can hold package answers, and can be stopped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alpine_registry::apk::index::{sign_index, write_unsigned_index};
use alpine_registry::apk::package::{parse_package, Limits};
use alpine_registry::apk::sign::{SignatureAlgorithm, SigningKey};
use alpine_registry::store::UpstreamKey;
use axum::http::{HeaderMap, StatusCode, Uri};
use bytes::Bytes;
use sha2::Digest;

/// What the upstream serves and what it was asked.
#[derive(Default)]
pub struct Served {
    pub files: HashMap<String, Bytes>,
    /// Every request: its path and `If-None-Match`.
    pub requests: Vec<(String, Option<String>)>,
    /// Package answers wait while this is set.
    pub held: bool,
    /// Index answers wait while this is set.
    pub held_index: bool,
    /// Stopped: connections kept open answer 503 (new ones are refused).
    pub down: bool,
}

/// A static HTTP server standing in for an Alpine mirror.
pub struct Upstream {
    pub addr: SocketAddr,
    pub served: Arc<Mutex<Served>>,
    release: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
    pub key: SigningKey,
}

async fn answer(
    served: Arc<Mutex<Served>>,
    release: Arc<tokio::sync::Notify>,
    uri: Uri,
    headers: HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = uri.path().to_string();
    let condition = headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = {
        let mut served = served.lock().unwrap();
        if served.down {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        served.requests.push((path.clone(), condition.clone()));
        served.files.get(&path).cloned()
    };
    let Some(body) = body else {
        return StatusCode::NOT_FOUND.into_response();
    };
    loop {
        let notified = release.notified();
        {
            let served = served.lock().unwrap();
            let held = if path.ends_with(".apk") {
                served.held
            } else {
                served.held_index
            };
            if !held {
                break;
            }
        }
        notified.await;
    }
    let etag = format!("\"{}\"", hex::encode(sha2::Sha256::digest(&body)));
    if condition.as_deref() == Some(etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, [("etag", etag)]).into_response();
    }
    (StatusCode::OK, [("etag", etag)], body).into_response()
}

impl Upstream {
    /// An upstream whose x86_64 index, signed by a key of its own, lists `packages`.
    pub async fn start(packages: &[Vec<u8>]) -> Upstream {
        let key = SigningKey::generate("alpine-devel@example.org", 1024).unwrap();
        let served = Arc::new(Mutex::new(Served::default()));
        let release = Arc::new(tokio::sync::Notify::new());
        let app = {
            let (served, release) = (served.clone(), release.clone());
            axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
                answer(served.clone(), release.clone(), uri, headers)
            })
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let upstream = Upstream {
            addr,
            served,
            release,
            task,
            key,
        };
        upstream.publish(packages, &upstream.key);
        upstream
    }

    pub fn url(&self) -> String {
        format!("http://{}/alpine/v3.21/main", self.addr)
    }

    /// Serves `packages` and their index, signed by `key`.
    pub fn publish(&self, packages: &[Vec<u8>], key: &SigningKey) {
        let mut stanzas = Vec::new();
        let mut served = self.served.lock().unwrap();
        for bytes in packages {
            let parsed = parse_package(&bytes[..], &Limits::default()).unwrap();
            let file = format!("{}-{}.apk", parsed.info.pkgname, parsed.info.pkgver);
            served.files.insert(
                format!("/alpine/v3.21/main/x86_64/{file}"),
                Bytes::from(bytes.clone()),
            );
            stanzas.push(parsed.stanza);
        }
        let stanzas: Vec<&str> = stanzas.iter().map(String::as_str).collect();
        let unsigned = write_unsigned_index("upstream main", &stanzas).unwrap();
        let signed = sign_index(&unsigned, key, &[SignatureAlgorithm::Rsa]).unwrap();
        served.files.insert(
            "/alpine/v3.21/main/x86_64/APKINDEX.tar.gz".into(),
            Bytes::from(signed),
        );
    }

    pub fn index(&self) -> Bytes {
        self.served.lock().unwrap().files["/alpine/v3.21/main/x86_64/APKINDEX.tar.gz"].clone()
    }

    pub fn replace(&self, file: &str, bytes: Vec<u8>) {
        self.served.lock().unwrap().files.insert(
            format!("/alpine/v3.21/main/x86_64/{file}"),
            Bytes::from(bytes),
        );
    }

    /// Requests for paths ending in `suffix`, with their `If-None-Match`.
    pub fn requests(&self, suffix: &str) -> Vec<Option<String>> {
        self.served
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(path, _)| path.ends_with(suffix))
            .map(|(_, condition)| condition.clone())
            .collect()
    }

    pub fn hold(&self, held: bool) {
        self.served.lock().unwrap().held = held;
        self.release.notify_waiters();
    }

    pub fn hold_index(&self, held: bool) {
        self.served.lock().unwrap().held_index = held;
        self.release.notify_waiters();
    }

    /// Stops answering: connections are refused from now on.
    pub async fn stop(&self) {
        self.served.lock().unwrap().down = true;
        self.task.abort();
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(self.addr).await.is_ok() {
            assert!(Instant::now() < deadline, "the upstream did not stop");
            tokio::task::yield_now().await;
        }
    }

    pub fn trusted(&self) -> Vec<UpstreamKey> {
        vec![UpstreamKey {
            name: self.key.key_name().to_string(),
            pem: self.key.public_key_pem().unwrap(),
        }]
    }
}
