//! The base URL a client used to reach the registry, for the URLs in answers: the
//! configured `server.public_url`, or else what the request says (`Host`, and the
//! forwarding headers only from a trusted proxy, as the proxy nearest the registry wrote
//! them: see `client::forwarding`).

use std::net::IpAddr;

use axum::http::{header, HeaderMap, Uri};

use super::client::{self, Forwarding};
use crate::config::Config;

/// Where the request came from, as far as the base URL goes.
pub struct Origin<'a> {
    pub headers: &'a HeaderMap,
    pub uri: &'a Uri,
    /// The connection's peer address, when known.
    pub peer: Option<IpAddr>,
}

/// `scheme://host[:port]`, without a trailing slash.
pub fn base_url(config: &Config, origin: &Origin<'_>) -> String {
    if !config.server.public_url.is_empty() {
        return config.server.public_url.trim_end_matches('/').to_string();
    }
    let trusted = origin.peer.is_some_and(|peer| {
        let peer = peer.to_canonical();
        config
            .trusted_proxies()
            .iter()
            .any(|net| net.contains(&peer))
    });
    // What a trusted proxy says the client used, if it says anything.
    let Forwarding {
        proto: proxy_scheme,
        host: proxy_host,
    } = if trusted {
        client::forwarding(origin.headers)
    } else {
        Forwarding::default()
    };
    let scheme = proxy_scheme
        .map(|p| p.to_ascii_lowercase())
        .filter(|p| p == "http" || p == "https")
        .unwrap_or_else(|| "http".to_string());
    let host = proxy_host
        .or_else(|| {
            origin
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .or_else(|| origin.uri.authority().map(|a| a.to_string()))
        .filter(|h| valid_host(h))
        .unwrap_or_else(|| config.server.listen.to_string());
    format!("{scheme}://{host}")
}

/// A host name or address with an optional port, and nothing that could change the
/// meaning of a URL built from it.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn config(public_url: &str, trusted: &[&str]) -> Config {
        let mut config = Config::default();
        config.server.public_url = public_url.into();
        config.server.trusted_proxies = trusted.iter().map(|s| s.to_string()).collect();
        config
    }

    fn url(config: &Config, peer: &str, pairs: &[(&str, &str)]) -> String {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let uri: Uri = "/admin/v3.21/main".parse().unwrap();
        base_url(
            config,
            &Origin {
                headers: &headers,
                uri: &uri,
                peer: Some(peer.parse().unwrap()),
            },
        )
    }

    #[test]
    fn the_configured_public_url_wins() {
        let c = config("https://apk.example.org/", &[]);
        assert_eq!(
            url(&c, "10.0.0.1", &[("host", "other")]),
            "https://apk.example.org"
        );
    }

    #[test]
    fn the_host_header_names_the_registry() {
        let c = config("", &[]);
        assert_eq!(
            url(&c, "10.0.0.1", &[("host", "apk.lan:8080")]),
            "http://apk.lan:8080"
        );
        assert_eq!(url(&c, "10.0.0.1", &[]), "http://127.0.0.1:8080");
        // Nothing that could turn into another URL.
        assert_eq!(
            url(&c, "10.0.0.1", &[("host", "evil.example/x?")]),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let headers = [
            ("host", "internal:8080"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "apk.example.org"),
        ];
        let untrusted = config("", &[]);
        assert_eq!(
            url(&untrusted, "10.0.0.1", &headers),
            "http://internal:8080"
        );
        let trusted = config("", &["10.0.0.0/8"]);
        assert_eq!(
            url(&trusted, "10.0.0.1", &headers),
            "https://apk.example.org"
        );
        assert_eq!(url(&trusted, "192.0.2.1", &headers), "http://internal:8080");
        let forwarded = [
            ("host", "internal:8080"),
            (
                "forwarded",
                "for=192.0.2.60;proto=https;host=\"apk.example.org\"",
            ),
        ];
        let trusted = config("", &["10.0.0.1"]);
        assert_eq!(
            url(&trusted, "10.0.0.1", &forwarded),
            "https://apk.example.org"
        );
        assert_eq!(
            url(&trusted, "::ffff:10.0.0.1", &forwarded),
            "https://apk.example.org"
        );
    }

    #[test]
    fn what_precedes_the_proxys_own_element_is_not_believed() {
        // The client sent `Forwarded: host=evil.example;proto=https`; a proxy that
        // appends its own element put it after.
        let trusted = config("", &["10.0.0.1"]);
        let appended = [
            ("host", "internal:8080"),
            (
                "forwarded",
                "host=evil.example;proto=https, for=192.0.2.60;host=apk.example.org",
            ),
        ];
        assert_eq!(
            url(&trusted, "10.0.0.1", &appended),
            "http://apk.example.org"
        );
        // One that overwrites it with `for` alone: the Host header.
        let overwritten = [("host", "apk.example.org"), ("forwarded", "for=192.0.2.60")];
        assert_eq!(
            url(&trusted, "10.0.0.1", &overwritten),
            "http://apk.example.org"
        );
        let listed = [
            ("host", "internal:8080"),
            ("x-forwarded-host", "evil.example, apk.example.org"),
            ("x-forwarded-proto", "https, http"),
        ];
        assert_eq!(url(&trusted, "10.0.0.1", &listed), "http://apk.example.org");
    }
}
