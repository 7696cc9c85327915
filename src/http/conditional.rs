//! Conditional and range requests: ETag / Last-Modified validation and single byte
//! ranges, shared by index and package downloads.

use std::time::{Duration, UNIX_EPOCH};

use axum::http::{header, HeaderMap};

/// What is being served, as far as validators go.
pub struct Entity {
    /// Quoted strong entity tag.
    pub etag: String,
    pub last_modified: i64,
    pub size: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    NotModified,
    Full,
    Partial { start: u64, len: u64 },
    Unsatisfiable,
}

impl Entity {
    pub fn last_modified_http(&self) -> String {
        let secs = u64::try_from(self.last_modified).unwrap_or(0);
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn etag_matches(&self, list: &str) -> bool {
        list.split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == self.etag)
    }

    fn modified_since(&self, since: &str) -> bool {
        match httpdate::parse_http_date(since) {
            Ok(since) => {
                let secs = u64::try_from(self.last_modified).unwrap_or(0);
                UNIX_EPOCH + Duration::from_secs(secs) > since
            }
            Err(_) => true,
        }
    }

    /// Decides the response to a GET or HEAD with these request headers.
    pub fn plan(&self, headers: &HeaderMap) -> Plan {
        let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(list) = text(header::IF_NONE_MATCH) {
            if self.etag_matches(list) {
                return Plan::NotModified;
            }
        } else if let Some(since) = text(header::IF_MODIFIED_SINCE) {
            if !self.modified_since(since) {
                return Plan::NotModified;
            }
        }
        let Some(range) = text(header::RANGE) else {
            return Plan::Full;
        };
        if let Some(if_range) = text(header::IF_RANGE) {
            let fresh = if if_range.starts_with('"') || if_range.starts_with("W/") {
                if_range == self.etag
            } else {
                !self.modified_since(if_range)
            };
            if !fresh {
                return Plan::Full;
            }
        }
        // A syntactically invalid Range is ignored (RFC 9110 14.2); several ranges are
        // answered with the whole entity, which the RFC allows.
        let Ok(parsed) = http_range_header::parse_range_header(range) else {
            return Plan::Full;
        };
        match parsed.validate(self.size) {
            Ok(ranges) if ranges.len() == 1 => {
                let (start, end) = (*ranges[0].start(), *ranges[0].end());
                Plan::Partial {
                    start,
                    len: end - start + 1,
                }
            }
            Ok(_) => Plan::Full,
            Err(_) => Plan::Unsatisfiable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn entity() -> Entity {
        Entity {
            etag: "\"abc\"".into(),
            last_modified: 1_700_000_000,
            size: 100,
        }
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn etag_and_date_validators() {
        let e = entity();
        assert_eq!(
            e.plan(&headers(&[(header::IF_NONE_MATCH, "\"abc\"")])),
            Plan::NotModified
        );
        assert_eq!(
            e.plan(&headers(&[(header::IF_NONE_MATCH, "\"x\", W/\"abc\"")])),
            Plan::NotModified
        );
        assert_eq!(
            e.plan(&headers(&[(header::IF_NONE_MATCH, "\"x\"")])),
            Plan::Full
        );
        let lm = e.last_modified_http();
        assert_eq!(
            e.plan(&headers(&[(header::IF_MODIFIED_SINCE, &lm)])),
            Plan::NotModified
        );
        assert_eq!(
            e.plan(&headers(&[(
                header::IF_MODIFIED_SINCE,
                "Mon, 01 Jan 2001 00:00:00 GMT"
            )])),
            Plan::Full
        );
    }

    #[test]
    fn ranges() {
        let e = entity();
        assert_eq!(
            e.plan(&headers(&[(header::RANGE, "bytes=10-19")])),
            Plan::Partial { start: 10, len: 10 }
        );
        assert_eq!(
            e.plan(&headers(&[(header::RANGE, "bytes=-10")])),
            Plan::Partial { start: 90, len: 10 }
        );
        assert_eq!(
            e.plan(&headers(&[(header::RANGE, "bytes=200-")])),
            Plan::Unsatisfiable
        );
        assert_eq!(e.plan(&headers(&[(header::RANGE, "pages=1")])), Plan::Full);
        assert_eq!(
            e.plan(&headers(&[
                (header::RANGE, "bytes=0-1"),
                (header::IF_RANGE, "\"old\"")
            ])),
            Plan::Full
        );
    }
}
