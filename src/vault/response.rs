//! Vault's answers read into the driver's types: the envelope of a login,
//! a secret, a renewal; `Retry-After`. Pure functions of the bytes, so the
//! fuzz targets reach them.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::{AuthToken, Error, LeaseId, SecretResponse};
use crate::secret::Secret;

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    auth: Option<AuthBlock>,
    #[serde(default)]
    lease_id: Option<String>,
    #[serde(default)]
    lease_duration: Option<u64>,
    #[serde(default)]
    renewable: Option<bool>,
    #[serde(default)]
    warnings: Option<Vec<String>>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct AuthBlock {
    client_token: String,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
    #[serde(default)]
    token_type: Option<String>,
}

/// What a lease renewal granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// The new time to live.
    pub ttl: Duration,
    /// Vault's warnings (e.g. "TTL value is capped accordingly").
    pub warnings: Vec<String>,
}

/// Longest `Retry-After` believed: a hostile or broken server must not put
/// work off for days.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(300);

fn parse<'a, T: Deserialize<'a>>(operation: &'static str, body: &'a [u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::InvalidResponse {
        operation,
        reason: format!(
            "the body is not the JSON Vault sends ({})",
            e.classify_name()
        ),
    })
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected shape",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

impl SecretResponse {
    /// Parses a secret read or write response body. Public so the fuzz
    /// targets can reach it; the body is kept (never logged) for templates.
    pub fn from_body(
        operation: &'static str,
        path: &str,
        raw: Secret<Vec<u8>>,
    ) -> Result<Self, Error> {
        let parsed: Envelope = parse(operation, raw.expose())?;
        let Some(data) = parsed.data.as_ref().filter(|d| !d.is_null()) else {
            return Err(Error::InvalidResponse {
                operation,
                reason: format!(
                    "the response for {path:?} has no `data`; is it a path that returns a secret?"
                ),
            });
        };
        // `expiration` is a certificate's NotAfter only on an answer that
        // carries a certificate; in KV v1 it is just a key of the user's.
        let has_certificate = ["certificate", "serial_number"]
            .iter()
            .any(|k| data.get(k).is_some_and(Value::is_string));
        let expiration = has_certificate
            .then(|| data.get("expiration").and_then(Value::as_u64))
            .flatten();
        let lease_id = parsed.lease_id.filter(|l| !l.is_empty()).map(LeaseId::new);
        let rotation = (lease_id.is_none() && is_static_credentials_path(path))
            .then(|| data.get("ttl").and_then(Value::as_u64))
            .flatten()
            .map(super::ttl_from_secs);
        Ok(Self {
            lease_id,
            lease_duration: super::ttl_from_secs(parsed.lease_duration.unwrap_or(0)),
            renewable: parsed.renewable.unwrap_or(false),
            expiration,
            rotation,
            raw,
            fetched_at: Instant::now(),
        })
    }

    /// The answer to a LIST Vault answered 404: no keys, as Vault's Go
    /// client (and so consul-template's `secrets`) reads it.
    pub fn empty_list() -> Self {
        Self {
            lease_id: None,
            lease_duration: Duration::ZERO,
            renewable: false,
            expiration: None,
            rotation: None,
            raw: Secret::new(br#"{"data":{"keys":[]}}"#.to_vec()),
            fetched_at: Instant::now(),
        }
    }

    /// The answer to a write Vault acknowledged with 204 and no body: a
    /// success with no data and no lease.
    pub fn no_content() -> Self {
        Self {
            lease_id: None,
            lease_duration: Duration::ZERO,
            renewable: false,
            expiration: None,
            rotation: None,
            raw: Secret::new(br#"{"data":{}}"#.to_vec()),
            fetched_at: Instant::now(),
        }
    }
}

/// `<mount>/static-creds/<role>` (database) or `<mount>/static-cred/<role>`
/// (LDAP): credentials Vault rotates itself, answered without a lease and
/// with `data.ttl` until the next rotation.
fn is_static_credentials_path(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    segments.len() >= 3
        && segments[..segments.len() - 1]
            .iter()
            .skip(1)
            .any(|s| *s == "static-creds" || *s == "static-cred")
}

/// Parses `Retry-After` as Vault sends it: whole seconds (`0` included),
/// or an RFC 1123 HTTP-date (older Vault versions), relative to `now`;
/// capped at [`RETRY_AFTER_CAP`], so a hostile or broken server cannot put
/// work off for days.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        super::ttl_from_secs(secs)
    } else {
        httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    };
    Some(wait.min(RETRY_AFTER_CAP))
}

/// The capabilities a `sys/capabilities-self` answer gives for `path`
/// (under the path's own key, or `capabilities` as older servers answer).
pub(super) fn capabilities(
    operation: &'static str,
    path: &str,
    body: &Secret<Vec<u8>>,
) -> Result<Vec<String>, Error> {
    let value: Value = parse(operation, body.expose())?;
    let listed = value
        .get(path)
        .or_else(|| value.get("data").and_then(|d| d.get(path)))
        .or_else(|| value.get("capabilities"))
        .and_then(Value::as_array)
        .ok_or_else(|| Error::InvalidResponse {
            operation,
            reason: format!("the answer lists no capabilities for {path}"),
        })?;
    Ok(listed
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect())
}

impl Renewal {
    /// Parses a `sys/leases/renew` response body.
    pub fn from_body(operation: &'static str, body: &Secret<Vec<u8>>) -> Result<Self, Error> {
        let parsed: Envelope = parse(operation, body.expose())?;
        Ok(Self {
            ttl: super::ttl_from_secs(parsed.lease_duration.unwrap_or(0)),
            warnings: parsed.warnings.unwrap_or_default(),
        })
    }
}

impl AuthToken {
    /// Parses a login or `renew-self` response body.
    pub fn from_body(operation: &'static str, body: &Secret<Vec<u8>>) -> Result<Self, Error> {
        let parsed: Envelope = parse(operation, body.expose())?;
        let auth = parsed.auth.ok_or_else(|| Error::InvalidResponse {
            operation,
            reason: "the response has no `auth` block".to_owned(),
        })?;
        if auth.client_token.is_empty() {
            return Err(Error::InvalidResponse {
                operation,
                reason: "the response's `auth.client_token` is empty".to_owned(),
            });
        }
        Ok(Self {
            token: Secret::new(auth.client_token),
            ttl: super::ttl_from_secs(auth.lease_duration),
            renewable: auth.renewable,
            warnings: parsed.warnings.unwrap_or_default(),
            batch: auth.token_type.as_deref() == Some("batch"),
            obtained_at: Instant::now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hostile Vault's huge TTLs are clamped instead of overflowing
    /// deadline arithmetic.
    #[test]
    fn absurd_ttls_are_clamped() {
        let body = br#"{"lease_id":"x/1","lease_duration":18446744073709551615,"renewable":true,"data":{"a":1},"auth":{"client_token":"t","lease_duration":18446744073709551615,"renewable":true}}"#;
        let secret = SecretResponse::from_body("read", "x", Secret::new(body.to_vec())).unwrap();
        assert_eq!(secret.lease_duration, crate::vault::MAX_TTL);
        let _ = tokio::time::Instant::now() + secret.lease_duration;
        let auth = AuthToken::from_body("login", &Secret::new(body.to_vec())).unwrap();
        assert_eq!(auth.ttl, crate::vault::MAX_TTL);
    }

    /// `Retry-After` in seconds or as an HTTP date, capped.
    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        // (header, wait)
        let table = [
            ("7", Some(Duration::from_secs(7))),
            (" 0 ", Some(Duration::ZERO)),
            ("86400", Some(RETRY_AFTER_CAP)),
            // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT.
            (
                "Sun, 06 Nov 1994 08:50:07 GMT",
                Some(Duration::from_secs(30)),
            ),
            ("Sun, 06 Nov 1994 08:49:00 GMT", Some(Duration::ZERO)),
            ("Mon, 07 Nov 1994 08:49:37 GMT", Some(RETRY_AFTER_CAP)),
            ("soon", None),
            ("-3", None),
        ];
        for (header, wait) in table {
            assert_eq!(parse_retry_after(header, now), wait, "{header:?}");
        }
    }

    /// `data.expiration` is a NotAfter only next to a certificate; KV v1
    /// data with an `expiration` key (zero, or milliseconds) is the user's.
    #[test]
    fn expiration_is_read_only_from_certificates() {
        let table: [(&str, Option<u64>); 5] = [
            (r#"{"data":{"expiration":0}}"#, None),
            (
                r#"{"data":{"expiration":1700000000000,"password":"x"}}"#,
                None,
            ),
            (
                r#"{"data":{"certificate":"PEM","expiration":1700000000}}"#,
                Some(1_700_000_000),
            ),
            (
                r#"{"data":{"serial_number":"01:02","expiration":42}}"#,
                Some(42),
            ),
            (r#"{"data":{"certificate":7,"expiration":42}}"#, None),
        ];
        for (body, expected) in table {
            let r = SecretResponse::from_body("read", "x/y", Secret::new(body.as_bytes().to_vec()))
                .unwrap();
            assert_eq!(r.expiration, expected, "{body}");
        }
    }

    #[test]
    fn static_credentials_carry_their_rotation() {
        let body = br#"{"lease_id":"","lease_duration":0,"data":{"username":"u","password":"p","ttl":3599,"last_vault_rotation":"2024-01-01T00:00:00Z"}}"#;
        let table = [
            ("database/static-creds/app", Some(Duration::from_secs(3599))),
            ("ldap/static-cred/app", Some(Duration::from_secs(3599))),
            ("team/db/static-creds/app", Some(Duration::from_secs(3599))),
            ("secret/app", None),
            ("kv/static-creds", None),
        ];
        for (path, expected) in table {
            let r = SecretResponse::from_body("read", path, Secret::new(body.to_vec())).unwrap();
            assert_eq!(r.rotation, expected, "{path}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        // (header, expected)
        let table = [
            ("0", Some(Duration::ZERO)),
            ("7", Some(Duration::from_secs(7))),
            (" 30 ", Some(Duration::from_secs(30))),
            (
                "Wed, 21 Oct 2015 07:28:30 GMT",
                Some(Duration::from_secs(30)),
            ),
            ("Wed, 21 Oct 2015 07:27:00 GMT", Some(Duration::ZERO)),
            ("soon", None),
            ("-1", None),
        ];
        for (value, expected) in table {
            assert_eq!(parse_retry_after(value, now), expected, "{value:?}");
        }
    }
}
