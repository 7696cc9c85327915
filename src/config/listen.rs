//! `server.listen`: a host (an address or a name) and a port, written `HOST:PORT`.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What `HOST:PORT` looks like, for messages.
const EXAMPLES: &str = "for example 127.0.0.1:8080, [::]:8080 or localhost:8080";

/// Where to listen: `127.0.0.1:8080`, `[::]:8080`, `localhost:8080`. A host name is
/// resolved when the server binds ([`ListenAddr::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    /// An IP address (IPv6 without brackets) or a host name.
    host: String,
    port: u16,
}

impl ListenAddr {
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address to bind: the host itself when it is an IP address, otherwise the
    /// first address the name resolves to.
    pub async fn resolve(&self) -> std::io::Result<SocketAddr> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .next()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} has no address", self.host),
                )
            })
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> Self {
        ListenAddr {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why a string is not `HOST:PORT`; displayed as what was expected instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddrError {
    /// No `:PORT`, or nothing before it.
    Syntax,
    /// The part after the last `:` is not a port number.
    Port(String),
    /// An IPv6 address without brackets.
    Ipv6Brackets,
    /// Characters no host name has.
    Host(String),
}

impl ListenAddrError {
    /// What was expected, to follow "`VALUE` is not".
    pub fn expected(&self) -> String {
        match self {
            ListenAddrError::Syntax => format!("HOST:PORT ({EXAMPLES})"),
            ListenAddrError::Port(port) => {
                format!("HOST:PORT: the port {port:?} is not a number from 0 to 65535")
            }
            ListenAddrError::Ipv6Brackets => {
                "HOST:PORT: an IPv6 address goes in brackets, as in [::1]:8080".to_string()
            }
            ListenAddrError::Host(host) => {
                format!("HOST:PORT: {host:?} is neither an IP address nor a host name")
            }
        }
    }
}

impl fmt::Display for ListenAddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {}", self.expected())
    }
}

impl std::error::Error for ListenAddrError {}

impl FromStr for ListenAddr {
    type Err = ListenAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, port) = rest.split_once("]:").ok_or(ListenAddrError::Syntax)?;
            host.parse::<Ipv6Addr>()
                .map_err(|_| ListenAddrError::Host(format!("[{host}]")))?;
            (host, port)
        } else {
            let (host, port) = s.rsplit_once(':').ok_or(ListenAddrError::Syntax)?;
            if host.contains(':') {
                return Err(ListenAddrError::Ipv6Brackets);
            }
            if !is_host(host) {
                return Err(if host.is_empty() {
                    ListenAddrError::Syntax
                } else {
                    ListenAddrError::Host(host.to_string())
                });
            }
            (host, port)
        };
        // u16's own parser takes a leading `+`; a port is digits only.
        let port = Some(port)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(|| ListenAddrError::Port(port.to_string()))?;
        Ok(ListenAddr {
            host: host.to_string(),
            port,
        })
    }
}

/// An IPv4 address or a DNS name: dot-separated labels of letters, digits, `-` and `_`.
fn is_host(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl Serialize for ListenAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListenVisitor;

        impl Visitor<'_> for ListenVisitor {
            type Value = ListenAddr;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", ListenAddrError::Syntax.expected())
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ListenAddr, E> {
                v.parse().map_err(|e: ListenAddrError| {
                    let expected = e.expected();
                    E::invalid_value(Unexpected::Str(v), &expected.as_str())
                })
            }
        }

        deserializer.deserialize_str(ListenVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ListenAddr, ListenAddrError> {
        s.parse()
    }

    #[test]
    fn addresses_and_names_parse_and_display_back() {
        for text in [
            "127.0.0.1:8080",
            "[::]:8080",
            "[::1]:0",
            "localhost:8080",
            "registry.example.org.:443",
        ] {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
        let v6 = parse("[::1]:80").unwrap();
        assert_eq!((v6.host(), v6.port()), ("::1", 80));
        assert_eq!(
            ListenAddr::from(SocketAddr::from(([127, 0, 0, 1], 8080))),
            parse("127.0.0.1:8080").unwrap()
        );
    }

    #[test]
    fn malformed_values_say_what_is_wrong() {
        assert_eq!(parse("nonsense"), Err(ListenAddrError::Syntax));
        assert_eq!(parse(":8080"), Err(ListenAddrError::Syntax));
        assert_eq!(parse("[::1]8080"), Err(ListenAddrError::Syntax));
        assert_eq!(
            parse("localhost:http"),
            Err(ListenAddrError::Port("http".into()))
        );
        assert_eq!(
            parse("localhost:65536"),
            Err(ListenAddrError::Port("65536".into()))
        );
        assert_eq!(
            parse("localhost:+80"),
            Err(ListenAddrError::Port("+80".into()))
        );
        assert_eq!(parse("localhost:"), Err(ListenAddrError::Port("".into())));
        assert_eq!(parse("::1:8080"), Err(ListenAddrError::Ipv6Brackets));
        assert_eq!(
            parse("[nope]:80"),
            Err(ListenAddrError::Host("[nope]".into()))
        );
        assert_eq!(parse("a b:80"), Err(ListenAddrError::Host("a b".into())));
        assert_eq!(parse("a..b:80"), Err(ListenAddrError::Host("a..b".into())));
    }
}
