//! Conditional and range requests (RFC 9110 sections 13 and 14), shared by index and
//! package downloads: given the validators of what is served and the request's method and
//! headers, which answer to send.

use std::cmp::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use axum::http::{header, HeaderMap, HeaderName, Method};

/// Elements of a `Range` header examined at most; a longer header is ignored, which RFC
/// 9110 14.2 allows for headers that look like a broken client or a denial of service.
const MAX_RANGES: usize = 16;

/// The precondition headers every download reads, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct Preconditions {
    /// 412 unless it names the entity tag served (`"<sha256>"`), or is `*`.
    #[param(rename = "If-Match")]
    if_match: Option<String>,
    /// Without `If-Match`: 412 if the file changed after this HTTP date.
    #[param(rename = "If-Unmodified-Since")]
    if_unmodified_since: Option<String>,
    /// 304 when it names the entity tag served.
    #[param(rename = "If-None-Match")]
    if_none_match: Option<String>,
    /// Without `If-None-Match`: 304 unless the file changed after this HTTP date.
    #[param(rename = "If-Modified-Since")]
    if_modified_since: Option<String>,
}

/// The range headers a package download reads (GET only), for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct Ranges {
    /// `bytes=<first>-<last>`, `bytes=<first>-` or `bytes=-<suffix>`: 206 with that part,
    /// 416 when no range is satisfiable; ignored when malformed.
    #[param(rename = "Range")]
    range: Option<String>,
    /// The entity tag or date of the copy the range completes; the whole file when it is
    /// not current.
    #[param(rename = "If-Range")]
    if_range: Option<String>,
}

/// What is being served, as far as validators go.
pub struct Entity {
    /// Quoted strong entity tag.
    pub etag: String,
    /// When this representation became current, Unix milliseconds.
    pub modified_ms: i64,
    pub size: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// `If-Match` or `If-Unmodified-Since` does not hold: 412.
    PreconditionFailed,
    NotModified,
    Full,
    Partial {
        start: u64,
        len: u64,
    },
    Unsatisfiable,
}

impl Entity {
    /// The `Last-Modified` date to send at `now` (Unix seconds).
    ///
    /// HTTP dates have whole seconds, and a date validator is only exact if the date is
    /// not before the change it stands for: this is the change's time rounded *up*, so
    /// that a copy dated by it is known to be at least as new. RFC 9110 8.8.2.1 forbids a
    /// date later than the answer's own, so within the second of the change it is that
    /// second, a date that no later request can validate (a copy sent then may be older
    /// than a change later in the same second).
    pub fn last_modified(&self, now: i64) -> i64 {
        let rounded_up =
            self.modified_ms.div_euclid(1000) + i64::from(self.modified_ms.rem_euclid(1000) > 0);
        rounded_up.min(now)
    }

    /// Whether `last_modified` has reached the value it keeps from now on (the second of
    /// the change has passed), so that an answer made now stays exact.
    pub fn last_modified_is_final(&self) -> bool {
        self.last_modified(unix_now()) == self.last_modified(i64::MAX)
    }

    pub fn last_modified_http(&self) -> String {
        // Clamped to the answer's `Date`, which the HTTP server takes from the system clock.
        let secs = u64::try_from(self.last_modified(unix_now())).unwrap_or(0);
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn etag_matches(&self, list: &str) -> bool {
        list.split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == self.etag)
    }

    /// Whether a copy dated `since` (Unix seconds) must be the current representation:
    /// only if the representation did not change after the start of that second. The
    /// date may be a `Last-Modified` this server sent (never later than the copy's
    /// answer) or, as apk's fetcher sends, the client's own time of download; either way
    /// a copy older than the current representation carries a date before its change.
    fn unchanged_since(&self, since: i64) -> bool {
        self.modified_ms <= since.saturating_mul(1000)
    }

    /// `If-Range` compares strongly (RFC 9110 13.1.5): an entity tag must be ours and not
    /// weak, a date must be exactly the `Last-Modified` a copy of this representation
    /// carries once its second has passed.
    fn if_range_matches(&self, validator: &str) -> bool {
        if validator.starts_with('"') || validator.starts_with("W/") {
            return validator == self.etag;
        }
        http_date(validator)
            .is_some_and(|date| date == self.last_modified(i64::MAX) && self.unchanged_since(date))
    }

    /// `If-Match` compares strongly (RFC 9110 13.1.1): a weak tag never matches.
    fn etag_matches_strongly(&self, list: &str) -> bool {
        list.split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag == self.etag)
    }

    /// Decides the response to a GET or HEAD with these request headers, in the order of
    /// RFC 9110 13.2.2.
    pub fn plan(&self, method: &Method, headers: &HeaderMap) -> Plan {
        // If-Match, when present, decides alone; If-Unmodified-Since only counts without
        // it (and, as any date, only when valid).
        let mut required = headers.get_all(header::IF_MATCH).iter().peekable();
        if required.peek().is_some() {
            if !required.any(|list| list.to_str().is_ok_and(|l| self.etag_matches_strongly(l))) {
                return Plan::PreconditionFailed;
            }
        } else if let Some(date) = single(headers, header::IF_UNMODIFIED_SINCE).and_then(http_date)
        {
            if !self.unchanged_since(date) {
                return Plan::PreconditionFailed;
            }
        }
        // If-None-Match, when present, decides alone; If-Modified-Since only counts
        // without it.
        let mut tags = headers.get_all(header::IF_NONE_MATCH).iter().peekable();
        if tags.peek().is_some() {
            if tags.any(|list| list.to_str().is_ok_and(|list| self.etag_matches(list))) {
                return Plan::NotModified;
            }
        } else if let Some(since) = single(headers, header::IF_MODIFIED_SINCE).and_then(http_date) {
            if self.unchanged_since(since) {
                return Plan::NotModified;
            }
        }
        // GET is the only method with range semantics (RFC 9110 14.2).
        if method != Method::GET {
            return Plan::Full;
        }
        let Some(range) = single(headers, header::RANGE) else {
            return Plan::Full;
        };
        if headers.contains_key(header::IF_RANGE)
            && !single(headers, header::IF_RANGE).is_some_and(|v| self.if_range_matches(v))
        {
            return Plan::Full;
        }
        // An invalid Range is ignored (RFC 9110 14.2). Of several ranges only the first
        // satisfiable one is sent, as a single part: no multipart/byteranges.
        let Some(ranges) = parse_ranges(range) else {
            return Plan::Full;
        };
        match ranges.iter().find_map(|r| r.within(self.size)) {
            Some((start, len)) => Plan::Partial { start, len },
            None => Plan::Unsatisfiable,
        }
    }
}

/// The refusal of a request whose `If-Match` or `If-Unmodified-Since` does not hold.
pub fn precondition_failed() -> crate::error::AppError {
    crate::error::AppError::PreconditionFailed(
        "If-Match or If-Unmodified-Since does not hold: what is served now is not the copy \
         the request names (fetch it again without the header)"
            .into(),
    )
}

/// The system clock in Unix seconds (what the HTTP server dates answers by).
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The value of a header sent exactly once; `None` when absent, repeated or not text.
fn single(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()
}

/// An HTTP-date as Unix seconds; `None` when invalid (the header is then ignored).
fn http_date(text: &str) -> Option<i64> {
    let time = httpdate::parse_http_date(text).ok()?;
    i64::try_from(time.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()
}

/// One `bytes` range-spec (RFC 9110 14.1.2). Positions larger than u64 saturate: they
/// are well-formed and simply beyond any file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteRange {
    /// `first-last` or `first-`.
    From { first: u64, last: Option<u64> },
    /// `-length`: the final `length` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Start and length of the satisfiable part in an entity of `size` bytes: a last
    /// position past the end, or a suffix longer than the entity, is clipped to it.
    fn within(self, size: u64) -> Option<(u64, u64)> {
        match self {
            ByteRange::From { first, last } => {
                if first >= size {
                    return None;
                }
                let last = last.map_or(size - 1, |last| last.min(size - 1));
                Some((first, last - first + 1))
            }
            ByteRange::Suffix(length) => {
                let len = length.min(size);
                (len > 0).then_some((size - len, len))
            }
        }
    }
}

/// Parses a `Range` value. `None` when it must be ignored: another unit, invalid syntax
/// (including a last position before the first), no range at all, or more than
/// `MAX_RANGES` elements.
fn parse_ranges(value: &str) -> Option<Vec<ByteRange>> {
    let (unit, set) = value.split_once('=')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut ranges = Vec::new();
    for (i, element) in set.split(',').enumerate() {
        if i == MAX_RANGES {
            return None;
        }
        let element = element.trim_matches([' ', '\t']);
        // Lists may hold empty elements (RFC 9110 5.6.1).
        if !element.is_empty() {
            ranges.push(parse_range(element)?);
        }
    }
    (!ranges.is_empty()).then_some(ranges)
}

fn parse_range(spec: &str) -> Option<ByteRange> {
    let (first, last) = spec.split_once('-')?;
    if first.is_empty() {
        return Some(ByteRange::Suffix(position(last)?));
    }
    let first_pos = position(first)?;
    if last.is_empty() {
        return Some(ByteRange::From {
            first: first_pos,
            last: None,
        });
    }
    let last_pos = position(last)?;
    // Compared as written, so two saturated positions still compare exactly.
    if compare_decimal(last, first) == Ordering::Less {
        return None;
    }
    Some(ByteRange::From {
        first: first_pos,
        last: Some(last_pos),
    })
}

/// `1*DIGIT` as a number, saturating at `u64::MAX`.
fn position(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.bytes().fold(0u64, |n, digit| {
        n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
    }))
}

/// Orders two strings of decimal digits by value, whatever their length.
fn compare_decimal(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// Changed at 1_700_000_000.250, long ago.
    fn entity() -> Entity {
        Entity {
            etag: "\"abc\"".into(),
            modified_ms: 1_700_000_000_250,
            size: 100,
        }
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn get(pairs: &[(header::HeaderName, &str)]) -> Plan {
        entity().plan(&Method::GET, &headers(pairs))
    }

    fn range(spec: &str) -> Plan {
        get(&[(header::RANGE, spec)])
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn etag_and_date_validators() {
        assert_eq!(
            get(&[(header::IF_NONE_MATCH, "\"abc\"")]),
            Plan::NotModified
        );
        assert_eq!(
            get(&[(header::IF_NONE_MATCH, "\"x\", W/\"abc\"")]),
            Plan::NotModified
        );
        assert_eq!(
            get(&[
                (header::IF_NONE_MATCH, "\"x\""),
                (header::IF_NONE_MATCH, "\"abc\"")
            ]),
            Plan::NotModified,
            "every If-None-Match line counts"
        );
        assert_eq!(get(&[(header::IF_NONE_MATCH, "\"x\"")]), Plan::Full);
        let lm = entity().last_modified_http();
        assert_eq!(get(&[(header::IF_MODIFIED_SINCE, &lm)]), Plan::NotModified);
        assert_eq!(
            get(&[(header::IF_MODIFIED_SINCE, "Mon, 01 Jan 2001 00:00:00 GMT")]),
            Plan::Full
        );
        assert_eq!(
            get(&[(header::IF_MODIFIED_SINCE, "yesterday")]),
            Plan::Full,
            "an invalid date is ignored"
        );
    }

    #[test]
    fn if_match_and_if_unmodified_since_are_preconditions() {
        assert_eq!(get(&[(header::IF_MATCH, "\"abc\"")]), Plan::Full);
        assert_eq!(get(&[(header::IF_MATCH, "\"x\", \"abc\"")]), Plan::Full);
        assert_eq!(get(&[(header::IF_MATCH, "*")]), Plan::Full);
        assert_eq!(
            get(&[(header::IF_MATCH, "\"x\"")]),
            Plan::PreconditionFailed
        );
        assert_eq!(
            get(&[(header::IF_MATCH, "W/\"abc\"")]),
            Plan::PreconditionFailed,
            "If-Match compares strongly"
        );
        let lm = entity().last_modified_http();
        assert_eq!(get(&[(header::IF_UNMODIFIED_SINCE, &lm)]), Plan::Full);
        assert_eq!(
            get(&[(header::IF_UNMODIFIED_SINCE, &date(1_700_000_000))]),
            Plan::PreconditionFailed,
            "changed within the second the date names"
        );
        assert_eq!(
            get(&[(header::IF_UNMODIFIED_SINCE, "yesterday")]),
            Plan::Full,
            "an invalid date is ignored"
        );
        // If-Match decides alone; the precondition comes before If-None-Match and Range.
        assert_eq!(
            get(&[
                (header::IF_MATCH, "\"abc\""),
                (header::IF_UNMODIFIED_SINCE, &date(1_600_000_000))
            ]),
            Plan::Full
        );
        assert_eq!(
            get(&[
                (header::IF_MATCH, "\"x\""),
                (header::IF_NONE_MATCH, "\"abc\"")
            ]),
            Plan::PreconditionFailed
        );
        assert_eq!(
            get(&[(header::IF_MATCH, "\"abc\""), (header::RANGE, "bytes=0-9")]),
            Plan::Partial { start: 0, len: 10 }
        );
        assert_eq!(
            entity().plan(&Method::HEAD, &headers(&[(header::IF_MATCH, "\"x\"")])),
            Plan::PreconditionFailed
        );
    }

    #[test]
    fn if_none_match_takes_precedence_over_if_modified_since() {
        let lm = entity().last_modified_http();
        assert_eq!(
            get(&[
                (header::IF_NONE_MATCH, "\"x\""),
                (header::IF_MODIFIED_SINCE, &lm)
            ]),
            Plan::Full
        );
        assert_eq!(
            get(&[
                (header::IF_NONE_MATCH, "\"abc\""),
                (header::IF_MODIFIED_SINCE, "Mon, 01 Jan 2001 00:00:00 GMT")
            ]),
            Plan::NotModified
        );
    }

    #[test]
    fn ranges() {
        assert_eq!(range("bytes=10-19"), Plan::Partial { start: 10, len: 10 });
        assert_eq!(range("Bytes=10-"), Plan::Partial { start: 10, len: 90 });
        assert_eq!(range("bytes=-10"), Plan::Partial { start: 90, len: 10 });
        assert_eq!(range("bytes=99-"), Plan::Partial { start: 99, len: 1 });
        assert_eq!(range("bytes=200-"), Plan::Unsatisfiable);
        assert_eq!(range("bytes=100-"), Plan::Unsatisfiable);
        assert_eq!(range("pages=1"), Plan::Full);
        assert_eq!(
            get(&[(header::RANGE, "bytes=0-1"), (header::IF_RANGE, "\"old\"")]),
            Plan::Full
        );
        assert_eq!(
            get(&[
                (header::RANGE, "bytes=0-1"),
                (header::IF_RANGE, "W/\"abc\"")
            ]),
            Plan::Full,
            "If-Range compares strongly"
        );
        assert_eq!(
            get(&[(header::RANGE, "bytes=0-1"), (header::IF_RANGE, "\"abc\"")]),
            Plan::Partial { start: 0, len: 2 }
        );
    }

    #[test]
    fn suffix_longer_than_the_entity_selects_all_of_it() {
        assert_eq!(range("bytes=-99999"), Plan::Partial { start: 0, len: 100 });
        assert_eq!(
            range("bytes=-99999999999999999999999"),
            Plan::Partial { start: 0, len: 100 }
        );
    }

    #[test]
    fn last_before_first_makes_the_header_invalid_and_ignored() {
        assert_eq!(range("bytes=5-3"), Plan::Full);
        assert_eq!(range("bytes=0-1,5-3"), Plan::Full);
        assert_eq!(
            range("bytes=99999999999999999999999-99999999999999999999998"),
            Plan::Full
        );
    }

    #[test]
    fn malformed_range_headers_are_ignored() {
        for spec in [
            "bytes=",
            "bytes=,",
            "bytes=-",
            "bytes=a-b",
            "bytes=1-2-3",
            "bytes=+1-2",
            "bytes = 0-1",
            "bytes=0 -1",
            "bytes=0-1;2-3",
            "bytes",
        ] {
            assert_eq!(range(spec), Plan::Full, "{spec}");
        }
        assert_eq!(
            get(&[(header::RANGE, "bytes=0-1"), (header::RANGE, "bytes=2-3")]),
            Plan::Full,
            "two Range lines"
        );
    }

    #[test]
    fn several_ranges_are_served_by_the_first_satisfiable_one() {
        assert_eq!(range("bytes=0-1,0-1"), Plan::Partial { start: 0, len: 2 });
        assert_eq!(range("bytes=200-, 4-7"), Plan::Partial { start: 4, len: 4 });
        assert_eq!(range("bytes=, ,4-7,"), Plan::Partial { start: 4, len: 4 });
        assert_eq!(range("bytes=200-,-0"), Plan::Unsatisfiable);
    }

    #[test]
    fn last_position_beyond_u64_is_clipped() {
        assert_eq!(
            range("bytes=0-99999999999999999999999"),
            Plan::Partial { start: 0, len: 100 }
        );
        assert_eq!(range("bytes=0-00099"), Plan::Partial { start: 0, len: 100 });
    }

    #[test]
    fn first_position_beyond_u64_or_zero_suffix_is_unsatisfiable() {
        assert_eq!(range("bytes=99999999999999999999999-"), Plan::Unsatisfiable);
        assert_eq!(range("bytes=-0"), Plan::Unsatisfiable);
    }

    #[test]
    fn nothing_of_an_empty_entity_is_satisfiable() {
        let empty = Entity {
            size: 0,
            ..entity()
        };
        for spec in ["bytes=0-", "bytes=-1", "bytes=0-0"] {
            assert_eq!(
                empty.plan(&Method::GET, &headers(&[(header::RANGE, spec)])),
                Plan::Unsatisfiable,
                "{spec}"
            );
        }
    }

    #[test]
    fn too_many_ranges_are_ignored() {
        let many = |n| format!("bytes={}", vec!["0-1"; n].join(","));
        assert_eq!(range(&many(MAX_RANGES)), Plan::Partial { start: 0, len: 2 });
        assert_eq!(range(&many(MAX_RANGES + 1)), Plan::Full);
        assert_eq!(range(&many(300)), Plan::Full);
    }

    #[test]
    fn head_ignores_range() {
        assert_eq!(
            entity().plan(&Method::HEAD, &headers(&[(header::RANGE, "bytes=0-1")])),
            Plan::Full
        );
    }

    #[test]
    fn if_range_date_must_equal_last_modified() {
        for other in [1_700_000_000, 1_700_000_002] {
            assert_eq!(
                get(&[
                    (header::RANGE, "bytes=0-1"),
                    (header::IF_RANGE, &date(other))
                ]),
                Plan::Full
            );
        }
        assert_eq!(
            get(&[
                (header::RANGE, "bytes=0-1"),
                (header::IF_RANGE, &date(1_700_000_001))
            ]),
            Plan::Partial { start: 0, len: 2 }
        );
    }

    #[test]
    fn last_modified_is_rounded_up_but_never_later_than_now() {
        let e = entity();
        assert_eq!(e.last_modified(i64::MAX), 1_700_000_001);
        assert_eq!(
            e.last_modified(1_700_000_000),
            1_700_000_000,
            "not in the future"
        );
        let whole = Entity {
            modified_ms: 1_700_000_000_000,
            ..entity()
        };
        assert_eq!(whole.last_modified(i64::MAX), 1_700_000_000);
    }

    #[test]
    fn a_date_within_the_second_of_the_change_is_not_trusted() {
        let plan = |since: u64| get(&[(header::IF_MODIFIED_SINCE, &date(since))]);
        // A copy dated 1_700_000_000 was sent (or, by apk, downloaded) in that second,
        // possibly before the change at .250: it must be sent again.
        assert_eq!(plan(1_700_000_000), Plan::Full);
        assert_eq!(plan(1_699_999_999), Plan::Full);
        assert_eq!(plan(1_700_000_001), Plan::NotModified);
        assert_eq!(plan(1_800_000_000), Plan::NotModified);
        assert_eq!(
            get(&[
                (header::IF_NONE_MATCH, "\"abc\""),
                (header::IF_MODIFIED_SINCE, &date(1_700_000_000))
            ]),
            Plan::NotModified,
            "the entity tag stays exact"
        );
        assert_eq!(
            get(&[
                (header::RANGE, "bytes=0-1"),
                (header::IF_RANGE, &date(1_700_000_000))
            ]),
            Plan::Full
        );
    }

    #[test]
    fn a_change_on_a_whole_second_is_validated_by_that_second() {
        let e = Entity {
            modified_ms: 1_700_000_000_000,
            ..entity()
        };
        let lm = e.last_modified_http();
        assert_eq!(
            e.plan(&Method::GET, &headers(&[(header::IF_MODIFIED_SINCE, &lm)])),
            Plan::NotModified
        );
    }
}
