//! How values read on a page: sizes, dates, query strings, and owner access for pages.

use crate::access::Identity;
use crate::error::AppError;
use crate::names::OwnerName;
use crate::store::{Owner, Role};
use crate::AppState;

/// `1.5 MiB`, `812 B`.
pub fn size(bytes: i64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `2026-12-05 12:40 UTC`, from Unix milliseconds.
pub fn time_ms(ms: i64) -> String {
    time_secs(ms.div_euclid(1000))
}

/// `2026-12-05 12:40 UTC`, from Unix seconds.
pub fn time_secs(secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(at) => at
            .format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .unwrap_or_else(|_| secs.to_string()),
        Err(_) => secs.to_string(),
    }
}

/// A query string value, percent-encoded (everything but RFC 3986's unreserved
/// characters).
pub fn query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The owner a page is about, if the visitor may read it. To a visitor who may not, an
/// owner that exists reads exactly like one that does not: the web pages answer 404 to
/// both, anonymous or not (a browser has no use for the apk routes' 401).
pub async fn readable_owner(
    state: &AppState,
    identity: &Identity,
    owner: &str,
) -> Result<Owner, AppError> {
    let not_found = || {
        AppError::NotFound(format!(
            "no owner {owner:?} here: check the spelling; private owners are shown to their \
             members once they log in"
        ))
    };
    let name = OwnerName::parse(owner).map_err(|_| not_found())?;
    match crate::http::authorize(state, identity, &name, Role::Read).await {
        Ok(record) => Ok(record),
        Err(AppError::NotFound(_) | AppError::Unauthorized(_) | AppError::Forbidden(_)) => {
            Err(not_found())
        }
        Err(e) => Err(e),
    }
}

/// Whether the visitor may change what `owner` holds (delete buttons are shown to them).
pub async fn can_write(state: &AppState, identity: &Identity, owner: &Owner) -> bool {
    let Identity::User(principal) = identity else {
        return false;
    };
    let role = state
        .store
        .member_role(owner.id, principal.user.id)
        .await
        .ok()
        .flatten();
    crate::access::decide(
        identity,
        role,
        owner,
        Role::Write,
        state.config.auth.anonymous_read,
    ) == crate::access::Access::Granted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(size(812), "812 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn dates_are_utc_minutes() {
        assert_eq!(time_secs(0), "1970-01-01 00:00 UTC");
        assert_eq!(time_ms(1_700_000_000_123), "2023-11-14 22:13 UTC");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_value("/a b?c=d&e"), "%2Fa%20b%3Fc%3Dd%26e");
        assert_eq!(query_value("so:libc.so.6"), "so%3Alibc.so.6");
    }
}
