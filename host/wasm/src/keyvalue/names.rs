//! The names an app and the host configure: buckets and Redis URLs.

use super::MAX_BUCKETS;

/// Checks a declared bucket name: 1..=63 of `a-z`, `0-9`, `-`, `_`.
///
/// # Errors
/// Why the name is refused.
pub fn validate_bucket(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("bucket `{name}` must be 1 to 63 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "bucket `{name}` may hold only a-z, 0-9, `-` and `_`"
        ));
    }
    Ok(())
}

/// Checks an app's `keyvalue` list: valid names, no repeats, at most
/// [`MAX_BUCKETS`].
///
/// # Errors
/// Why the list is refused.
pub fn validate_buckets(buckets: &[String]) -> Result<(), String> {
    if buckets.len() > MAX_BUCKETS {
        return Err(format!("{} buckets; at most {MAX_BUCKETS}", buckets.len()));
    }
    for (i, b) in buckets.iter().enumerate() {
        validate_bucket(b)?;
        if buckets[..i].contains(b) {
            return Err(format!("bucket `{b}` is listed twice"));
        }
    }
    Ok(())
}

/// Checks that `url` is a Redis URL berth can use (`redis://` or
/// `rediss://`, host, optional credentials and db), without connecting.
///
/// # Errors
/// Why not (never repeating the URL: it may hold a password).
pub fn check_redis_url(url: &str) -> Result<(), String> {
    ::redis::Client::open(url)
        .map(drop)
        .map_err(|e| format!("not a usable Redis URL ({:?})", e.kind()))
}
