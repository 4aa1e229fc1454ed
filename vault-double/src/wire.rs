//! Vault's wire formats shared by the handlers: Go-style durations,
//! Vault-style random identifiers, timestamps and path globs.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Vault's stock mount default and max lease TTL (768h), used wherever a
/// role or mount leaves a TTL at zero.
pub(crate) const SYSTEM_MAX_TTL: u64 = 768 * 3600;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A random base62 string, like Vault's `base62.Random` (lease suffixes,
/// token bodies, accessors).
pub(crate) fn base62(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(BASE62[rng.random_range(0..BASE62.len())]))
        .collect()
}

/// A random RFC 4122 version-4 UUID string (request ids, pod uids).
pub(crate) fn uuid() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    format_uuid(bytes)
}

/// A UUID-shaped string derived from `seed`, so the same service account
/// always gets the same uid and entity id.
pub(crate) fn stable_uuid(seed: &str) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    format_uuid(bytes)
}

fn format_uuid(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{byte:02x}");
    }
    s
}

/// Whole unix seconds of `t` (Vault truncates all TTL math to seconds).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The instant `secs` whole seconds after the unix epoch.
pub(crate) fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Whole seconds from `now` until `until`, zero when already past.
pub(crate) fn secs_until(until: SystemTime, now: SystemTime) -> u64 {
    until.duration_since(now).unwrap_or_default().as_secs()
}

/// Formats `t` like Go's `time.RFC3339Nano` in UTC (fraction with trailing
/// zeros trimmed, omitted when zero).
pub(crate) fn rfc3339_nano(t: SystemTime) -> String {
    let dur = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(dur.as_secs()).unwrap_or(i64::MAX);
    let Ok(dt) = time::OffsetDateTime::from_unix_timestamp(secs) else {
        return String::new();
    };
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    let nanos = dur.subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Formats whole seconds like Vault's `humanDuration`, the form its
/// TTL-capping warnings use: Go's `time.Duration.String()` with every zero
/// unit left out (`"1h"`, `"9m50s"`, `"1h5s"`, `"30s"`; `"0s"` for zero).
pub(crate) fn go_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".to_owned();
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    for (value, unit) in [(h, 'h'), (m, 'm'), (s, 's')] {
        if value > 0 {
            let _ = write!(out, "{value}{unit}");
        }
    }
    out
}

/// Go's `time.Duration.String()` for whole seconds (`1h0m0s`, `10m0s`,
/// `30s`), what `%q` of a duration prints in Vault's PKI warnings.
pub(crate) fn go_duration_string(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// Parses a Vault duration field: a JSON integer of seconds, or a string
/// holding either an integer of seconds or a Go duration (`"1h30m"`,
/// `"90s"`, `"1.5h"`, `"2d"`). Returns whole seconds, `None` if invalid.
pub(crate) fn parse_duration_value(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(f64_to_secs)
        }),
        Value::String(s) => parse_duration_str(s),
        Value::Null => Some(0),
        _ => None,
    }
}

/// Parses a duration string (see [`parse_duration_value`]) like Vault's
/// `parseutil.ParseDurationSecond`: empty is zero, an integer is seconds,
/// anything else a Go duration (`d` for days allowed), read by the parser
/// the driver uses too (`go_duration`).
pub(crate) fn parse_duration_str(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    go_duration::parse_secs_f64(s, go_duration::Units::WithDays)
        .ok()
        .map(f64_to_secs)
}

fn f64_to_secs(f: f64) -> u64 {
    // Durations here are far below 2^52 seconds; truncation to whole
    // seconds mirrors Vault's second-granular TTLs.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let secs = f.floor() as u64;
    secs
}

/// Wraps `body` as a PEM block with the given label (64-column base64).
pub(crate) fn pem(label: &str, body: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(body);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    let _ = write!(out, "-----END {label}-----");
    out
}

/// `t` as an RFC 1123 HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT`), the
/// `Retry-After` form of older Vault versions.
pub(crate) fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// Simple glob where `*` matches any run of characters (Vault's
/// `strutil.StrListContainsGlob` for bound service account names).
pub(crate) fn glob_match(pattern: &str, value: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == value;
    };
    let Some(mut remaining) = value.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('*').collect();
    let (last, middle) = parts.split_last().unwrap_or((&"", &[]));
    for part in middle {
        match remaining.find(part) {
            Some(i) => remaining = &remaining[i + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

/// The effective max TTL: zero means the system max, and nothing exceeds it.
pub fn effective_max(max: u64) -> u64 {
    if max == 0 {
        SYSTEM_MAX_TTL
    } else {
        max.min(SYSTEM_MAX_TTL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_duration_trims_zero_units() {
        assert_eq!(go_duration(3600), "1h");
        assert_eq!(go_duration(590), "9m50s");
        assert_eq!(go_duration(30), "30s");
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(120), "2m");
        assert_eq!(go_duration(3605), "1h5s");
        assert_eq!(go_duration(3660), "1h1m");
        assert_eq!(go_duration(5400), "1h30m");
        assert_eq!(go_duration(768 * 3600), "768h");
    }

    #[test]
    fn go_duration_string_prints_every_unit() {
        assert_eq!(go_duration_string(3600), "1h0m0s");
        assert_eq!(go_duration_string(600), "10m0s");
        assert_eq!(go_duration_string(30), "30s");
        assert_eq!(go_duration_string(0), "0s");
        assert_eq!(go_duration_string(3605), "1h0m5s");
    }

    #[test]
    fn parses_go_durations_and_seconds() {
        assert_eq!(parse_duration_str("30s"), Some(30));
        assert_eq!(parse_duration_str("1h30m"), Some(5400));
        assert_eq!(parse_duration_str("1.5h"), Some(5400));
        assert_eq!(parse_duration_str("90"), Some(90));
        assert_eq!(parse_duration_str("2d"), Some(172_800));
        assert_eq!(parse_duration_str("abc"), None);
        assert_eq!(parse_duration_value(&serde_json::json!(45)), Some(45));
    }

    #[test]
    fn rfc3339_nano_trims_fraction() {
        let t = UNIX_EPOCH + Duration::new(1_521_685_446, 945_319_000);
        assert_eq!(rfc3339_nano(t), "2018-03-22T02:24:06.945319Z");
        assert_eq!(
            rfc3339_nano(UNIX_EPOCH + Duration::from_secs(1)),
            "1970-01-01T00:00:01Z"
        );
    }

    #[test]
    fn glob_matches_stars() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("app-*", "app-1"));
        assert!(!glob_match("app-*", "web-1"));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("a*c*e", "abcd"));
        assert!(glob_match("vault-auth", "vault-auth"));
    }

    #[test]
    fn uuids_are_shaped() {
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(stable_uuid("x"), stable_uuid("x"));
        assert_ne!(stable_uuid("x"), stable_uuid("y"));
    }
}
