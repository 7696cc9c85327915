//! Who sent a request. The connection's peer, unless the peer is one of
//! `server.trusted_proxies`: then the client that proxy reports in `X-Forwarded-For` (or,
//! without that header, `Forwarded`), found by the rightmost-untrusted rule. One layer
//! (`resolve`) sets it on every request as [`ClientAddr`], so the failure throttle, the
//! password check cap, the request log and any handler see the same address. The host and
//! scheme a trusted proxy reports (`forwarding`) are read here too, for `origin`.
//!
//! Malformed header values are never an error: they stop the search, and the last address
//! known to come from a trusted proxy (at worst the peer itself) is the client.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName};
use ipnet::IpNet;

use crate::config::Config;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The address of the client that sent a request: a request extension, set before
/// routing for every request that came over a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// The client address of the request these extensions belong to, if it came over a
    /// connection (requests built in memory have none).
    pub fn of(extensions: &axum::http::Extensions) -> Option<IpAddr> {
        extensions.get::<ClientAddr>().map(|client| client.0)
    }
}

/// The client address as an extractor (None for a request built in memory): for handlers
/// that record who did what.
#[derive(Debug, Clone, Copy)]
pub struct Client(pub Option<IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Client, Self::Rejection> {
        Ok(Client(ClientAddr::of(&parts.extensions)))
    }
}

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone)]
pub struct Proxies {
    trusted: Vec<IpNet>,
    /// Elements of a forwarding header read at most, from the right.
    max_hops: usize,
}

impl Proxies {
    pub fn new(trusted: Vec<IpNet>, max_hops: usize) -> Proxies {
        Proxies {
            trusted,
            max_hops: max_hops.max(1),
        }
    }

    pub fn from_config(config: &Config) -> Proxies {
        Proxies::new(config.trusted_proxies(), config.server.max_forwarded_hops)
    }

    /// Whether `ip` is a trusted proxy (an IPv4-mapped IPv6 address counts as its IPv4
    /// address).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that arrived from `peer` with `headers`: `peer` itself
    /// unless it is a trusted proxy; else, going leftwards through the addresses the
    /// proxies appended, the first that is not a trusted proxy. When every address read
    /// is a trusted proxy, the leftmost of them; when an element is not an address, the
    /// one to its right (the proxy that passed it on).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        if headers.contains_key(&X_FORWARDED_FOR) {
            let hops = last_elements(headers, &X_FORWARDED_FOR, false, self.max_hops);
            self.rightmost_untrusted(peer, hops.into_iter().map(|e| node_address(e.trim())))
        } else {
            let hops = last_elements(headers, &header::FORWARDED, true, self.max_hops);
            self.rightmost_untrusted(
                peer,
                hops.into_iter().map(|element| {
                    parse_forwarded_element(element)
                        .and_then(|element| element.r#for)
                        .and_then(|node| node_address(&node))
                }),
            )
        }
    }

    /// Walks `hops` (rightmost first) to the first address that is not a trusted proxy.
    fn rightmost_untrusted(
        &self,
        peer: IpAddr,
        hops: impl Iterator<Item = Option<IpAddr>>,
    ) -> IpAddr {
        let mut client = peer;
        for hop in hops {
            let Some(address) = hop else {
                break;
            };
            client = address.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// Sets [`ClientAddr`] on the request, from its connection's peer and, behind a trusted
/// proxy, the forwarding headers.
pub async fn resolve(State(proxies): State<Arc<Proxies>>, mut request: Request) -> Request {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    if let Some(peer) = peer {
        let client = proxies.client(peer, request.headers());
        request.extensions_mut().insert(ClientAddr(client));
    }
    request
}

/// The scheme and host a trusted proxy says the client used.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Forwarding {
    pub proto: Option<String>,
    pub host: Option<String>,
}

/// What the proxy nearest the registry wrote: the last value of `X-Forwarded-Proto` and
/// of `X-Forwarded-Host`, else `proto` and `host` of the last element of `Forwarded`.
/// Earlier values and elements were written by whoever came before that proxy, the
/// client included. Only for a request whose peer is a trusted proxy.
pub fn forwarding(headers: &HeaderMap) -> Forwarding {
    let last = |name: &HeaderName| {
        last_elements(headers, name, false, 1)
            .pop()
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_string)
    };
    let forwarded = || {
        last_elements(headers, &header::FORWARDED, true, 1)
            .pop()
            .and_then(parse_forwarded_element)
            .unwrap_or_default()
    };
    let (mut proto, mut host) = (last(&X_FORWARDED_PROTO), last(&X_FORWARDED_HOST));
    if proto.is_none() || host.is_none() {
        let element = forwarded();
        proto = proto.or(element.proto);
        host = host.or(element.host);
    }
    Forwarding { proto, host }
}

/// The last `n` elements of a list header (all its lines, in order), rightmost first.
/// With `quoted` (`Forwarded`), a comma inside an RFC 9110 quoted string does not separate
/// elements. The header is read from the right, so what precedes the elements read (which
/// the client may have written, an unbalanced quote included) cannot change how they
/// split, and no more than `n` elements are looked at. A line that is not visible ASCII
/// is an element that parses as nothing.
fn last_elements<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    quoted: bool,
    n: usize,
) -> Vec<&'a str> {
    let mut kept = Vec::new();
    for value in headers.get_all(name).iter().rev() {
        let Ok(text) = value.to_str() else {
            kept.push("\u{0}");
            return kept;
        };
        let full = if quoted {
            keep_up_to(&mut kept, n, QuotedRSplit::new(text, b','))
        } else {
            keep_up_to(&mut kept, n, text.rsplit(','))
        };
        if full {
            break;
        }
    }
    kept
}

/// Appends `pieces` to `kept` until it holds `n`; whether it does.
fn keep_up_to<'a>(
    kept: &mut Vec<&'a str>,
    n: usize,
    pieces: impl Iterator<Item = &'a str>,
) -> bool {
    for piece in pieces {
        if kept.len() == n {
            return true;
        }
        kept.push(piece);
    }
    kept.len() == n
}

/// Pieces of `text` between `separator`s outside RFC 9110 quoted strings (where a
/// backslash escapes the next character), from the right.
struct QuotedRSplit<'a> {
    rest: Option<&'a str>,
    separator: u8,
}

impl<'a> QuotedRSplit<'a> {
    fn new(text: &'a str, separator: u8) -> QuotedRSplit<'a> {
        QuotedRSplit {
            rest: Some(text),
            separator,
        }
    }
}

impl<'a> Iterator for QuotedRSplit<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let text = self.rest?;
        let bytes = text.as_bytes();
        let mut quoted = false;
        for i in (0..bytes.len()).rev() {
            match bytes[i] {
                b'"' => {
                    let backslashes = bytes[..i].iter().rev().take_while(|&&b| b == b'\\').count();
                    // Inside a quoted string, a quote after an odd number of backslashes
                    // is escaped.
                    if !(quoted && backslashes % 2 == 1) {
                        quoted = !quoted;
                    }
                }
                b if b == self.separator && !quoted => {
                    self.rest = Some(&text[..i]);
                    return Some(&text[i + 1..]);
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(text)
    }
}

/// Pieces of `text` between `separator`s outside RFC 9110 quoted strings, from the left:
/// the parameters of one `Forwarded` element.
struct QuotedSplit<'a> {
    rest: Option<&'a str>,
    separator: u8,
}

impl<'a> QuotedSplit<'a> {
    fn new(text: &'a str, separator: u8) -> QuotedSplit<'a> {
        QuotedSplit {
            rest: Some(text),
            separator,
        }
    }
}

impl<'a> Iterator for QuotedSplit<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let text = self.rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, byte) in text.bytes().enumerate() {
            if escaped {
                escaped = false;
            } else if quoted && byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                quoted = !quoted;
            } else if !quoted && byte == self.separator {
                self.rest = Some(&text[i + 1..]);
                return Some(&text[..i]);
            }
        }
        self.rest = None;
        Some(text)
    }
}

/// The parameters of one `Forwarded` element that matter here.
#[derive(Debug, Default, PartialEq, Eq)]
struct ForwardedElement {
    r#for: Option<String>,
    proto: Option<String>,
    host: Option<String>,
}

/// `for`, `proto` and `host` of one `Forwarded` element (`for=192.0.2.1;proto=https`); None
/// when it is malformed (a pair without `=`, a bad quoted string, a parameter given twice,
/// which RFC 7239 forbids). Other parameters are allowed and ignored.
fn parse_forwarded_element(element: &str) -> Option<ForwardedElement> {
    let mut parsed = ForwardedElement::default();
    let mut by = None;
    for pair in QuotedSplit::new(element, b';') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=')?;
        let value = parameter_value(value.trim())?;
        let slot = match name.trim().to_ascii_lowercase().as_str() {
            "for" => &mut parsed.r#for,
            "proto" => &mut parsed.proto,
            "host" => &mut parsed.host,
            "by" => &mut by,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return None;
        }
    }
    Some(parsed)
}

/// A token, or a quoted string without its quotes and escapes.
fn parameter_value(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        let token = value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b',' | b';' | b'\\'));
        return (token && !value.is_empty()).then(|| value.to_string());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// The address of a node as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`. None for anything else (`unknown`, an obfuscated
/// `_name`, garbage).
fn node_address(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = node.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    node.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<std::net::Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(trusted: &[&str]) -> Proxies {
        Proxies::new(
            trusted
                .iter()
                .map(|net| {
                    net.parse()
                        .unwrap_or_else(|_| IpNet::from(net.parse::<IpAddr>().unwrap()))
                })
                .collect(),
            16,
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        headers
    }

    fn client(proxies: &Proxies, peer: &str, pairs: &[(&str, &str)]) -> String {
        proxies
            .client(peer.parse().unwrap(), &headers(pairs))
            .to_string()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let p = proxies(&["10.0.0.1"]);
        let spoof = [
            ("x-forwarded-for", "198.51.100.7"),
            ("forwarded", "for=198.51.100.7"),
        ];
        assert_eq!(client(&p, "192.0.2.1", &spoof), "192.0.2.1");
        assert_eq!(client(&proxies(&[]), "10.0.0.1", &spoof), "10.0.0.1");
    }

    #[test]
    fn the_rightmost_address_that_is_not_a_trusted_proxy_is_the_client() {
        let p = proxies(&["10.0.0.1"]);
        // The client put 198.51.100.7 there itself; the proxy appended 192.0.2.9.
        assert_eq!(
            client(
                &p,
                "10.0.0.1",
                &[("x-forwarded-for", "198.51.100.7, 192.0.2.9")]
            ),
            "192.0.2.9"
        );
        // Several header lines are one list, in order.
        assert_eq!(
            client(
                &p,
                "10.0.0.1",
                &[
                    ("x-forwarded-for", "198.51.100.7"),
                    ("x-forwarded-for", "192.0.2.9")
                ]
            ),
            "192.0.2.9"
        );
        // A trusted peer that sent nothing is the client.
        assert_eq!(client(&p, "10.0.0.1", &[]), "10.0.0.1");
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked_leftwards() {
        let p = proxies(&["10.0.0.0/8", "172.16.0.1"]);
        // client 192.0.2.9 -> CDN edge 172.16.0.1 -> balancer 10.0.0.2 -> nginx 10.0.0.1
        let chain = [(
            "x-forwarded-for",
            "198.51.100.7, 192.0.2.9, 172.16.0.1, 10.0.0.2",
        )];
        assert_eq!(client(&p, "10.0.0.1", &chain), "192.0.2.9");
        // Every address a trusted proxy: the leftmost is as far as anyone knows.
        assert_eq!(
            client(&p, "10.0.0.1", &[("x-forwarded-for", "10.0.0.9, 10.0.0.2")]),
            "10.0.0.9"
        );
        // Only the last max_forwarded_hops elements are read.
        let short = Proxies::new(p.trusted.clone(), 2);
        assert_eq!(client(&short, "10.0.0.1", &chain), "172.16.0.1");
        // A client far to the left of a long list is never reached.
        let long = format!("192.0.2.9{}", ", 10.0.0.7".repeat(10_000));
        assert_eq!(
            client(&short, "10.0.0.1", &[("x-forwarded-for", &long)]),
            "10.0.0.7"
        );
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let p = proxies(&["10.0.0.1", "2001:db8:ffff::1"]);
        let cases = [
            ("for=192.0.2.43", "192.0.2.43"),
            ("for=\"192.0.2.43:47011\"", "192.0.2.43"),
            ("for=\"[2001:db8::1]:4711\"", "2001:db8::1"),
            ("For=\"[2001:db8::1]\";proto=https", "2001:db8::1"),
            ("for=198.51.100.7, for=192.0.2.43;by=10.0.0.1", "192.0.2.43"),
            ("for=192.0.2.43, for=\"[2001:db8:ffff::1]\"", "192.0.2.43"),
            // Extension parameters are allowed.
            ("for=192.0.2.43;secret=\"a;b,c\"", "192.0.2.43"),
        ];
        for (value, expected) in cases {
            assert_eq!(
                client(&p, "10.0.0.1", &[("forwarded", value)]),
                expected,
                "{value}"
            );
        }
        // X-Forwarded-For, when present, is the one read.
        assert_eq!(
            client(
                &p,
                "10.0.0.1",
                &[
                    ("forwarded", "for=198.51.100.7"),
                    ("x-forwarded-for", "192.0.2.9")
                ]
            ),
            "192.0.2.9"
        );
    }

    #[test]
    fn a_quoted_comma_does_not_start_an_element() {
        // A proxy quoting a client's Host header that carries `, for=...`: the element
        // stays one, and the address the proxy wrote is the client.
        let p = proxies(&["10.0.0.1"]);
        let value = "for=192.0.2.43;host=\"x, for=198.51.100.7\"";
        assert_eq!(
            client(&p, "10.0.0.1", &[("forwarded", value)]),
            "192.0.2.43"
        );
        let value = "for=192.0.2.43;host=\"x\\\", for=198.51.100.7\"";
        assert_eq!(
            client(&p, "10.0.0.1", &[("forwarded", value)]),
            "192.0.2.43"
        );
    }

    #[test]
    fn what_the_client_wrote_cannot_swallow_what_the_proxy_appended() {
        // An unbalanced quote before the proxy's element: it is read from the right.
        let p = proxies(&["10.0.0.1"]);
        assert_eq!(
            client(&p, "10.0.0.1", &[("forwarded", "for=\", for=192.0.2.9")]),
            "192.0.2.9"
        );
        assert_eq!(
            client(&p, "10.0.0.1", &[("x-forwarded-for", "\", 192.0.2.9")]),
            "192.0.2.9"
        );
        assert_eq!(
            client(&p, "10.0.0.1", &[("x-forwarded-for", "\"[, 192.0.2.9")]),
            "192.0.2.9"
        );
    }

    #[test]
    fn garbage_falls_back_to_the_last_address_a_trusted_proxy_gave() {
        let p = proxies(&["10.0.0.1", "10.0.0.2"]);
        for garbage in [
            "",
            "unknown",
            "_hidden",
            "not an address",
            "192.0.2.300",
            "[192.0.2.1]",
            "2001:db8::1]:80",
            ",,,",
            "192.0.2.1 192.0.2.2",
        ] {
            assert_eq!(
                client(&p, "10.0.0.1", &[("x-forwarded-for", garbage)]),
                "10.0.0.1",
                "X-Forwarded-For: {garbage:?}"
            );
            assert_eq!(
                client(&p, "10.0.0.1", &[("forwarded", &format!("for={garbage}"))]),
                "10.0.0.1",
                "Forwarded: for={garbage}"
            );
        }
        // Garbage left of a trusted hop: that hop passed it on.
        assert_eq!(
            client(&p, "10.0.0.1", &[("x-forwarded-for", "unknown, 10.0.0.2")]),
            "10.0.0.2"
        );
        // Not ASCII.
        assert_eq!(
            client(&p, "10.0.0.1", &[("x-forwarded-for", "19\u{e9}.0.2.1")]),
            "10.0.0.1"
        );
        // Malformed Forwarded elements: no `=`, an unterminated quote, `for` twice, no `for`.
        for value in [
            "for",
            "for=\"192.0.2.43",
            "for=192.0.2.43;for=198.51.100.7",
            "proto=https",
            "for=192.0.2.43\"",
        ] {
            assert_eq!(
                client(&p, "10.0.0.1", &[("forwarded", value)]),
                "10.0.0.1",
                "Forwarded: {value}"
            );
        }
    }

    #[test]
    fn ipv4_mapped_addresses_are_their_ipv4_address() {
        let p = proxies(&["127.0.0.1"]);
        assert_eq!(
            client(
                &p,
                "::ffff:127.0.0.1",
                &[("x-forwarded-for", "::ffff:192.0.2.9")]
            ),
            "192.0.2.9"
        );
        assert_eq!(client(&proxies(&[]), "::ffff:192.0.2.9", &[]), "192.0.2.9");
    }

    #[test]
    fn the_host_and_scheme_are_what_the_nearest_proxy_wrote() {
        let forwarding = |pairs: &[(&str, &str)]| forwarding(&headers(pairs));
        // The client's own Forwarded element comes first; the proxy's is last.
        assert_eq!(
            forwarding(&[(
                "forwarded",
                "host=evil.example;proto=https, for=192.0.2.1;host=\"apk.example.org:8443\";proto=http"
            )]),
            Forwarding {
                proto: Some("http".into()),
                host: Some("apk.example.org:8443".into())
            }
        );
        assert_eq!(
            forwarding(&[("forwarded", "host=evil.example;proto=https, for=192.0.2.1")]),
            Forwarding::default()
        );
        // X-Forwarded-* first, their last value.
        assert_eq!(
            forwarding(&[
                ("x-forwarded-host", "evil.example, apk.example.org"),
                ("x-forwarded-proto", "https"),
                ("forwarded", "host=other.example;proto=http"),
            ]),
            Forwarding {
                proto: Some("https".into()),
                host: Some("apk.example.org".into())
            }
        );
        assert_eq!(
            forwarding(&[
                ("x-forwarded-host", "evil.example"),
                ("x-forwarded-host", "apk.example.org"),
                ("forwarded", "proto=https"),
            ]),
            Forwarding {
                proto: Some("https".into()),
                host: Some("apk.example.org".into())
            }
        );
    }
}
