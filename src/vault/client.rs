//! The HTTP client for Vault's API: login, secret reads and writes, lease
//! and token renewal and revocation. One `reqwest::Client` (connection pool,
//! TLS roots) is shared by every volume; a [`VaultClient`] adds the address.
//!
//! Every response body is read with a size cap, every request has bounded
//! connect and total timeouts, and error messages from Vault are scrubbed of
//! anything token-shaped before they travel further.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;
use url::Url;

use super::{AuthToken, Error, LeaseId, SecretResponse};
use crate::metrics::Metrics;
use crate::render::SecretRequest;
use crate::secret::Secret;

/// Largest response body accepted from Vault.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Settings shared by every Vault connection of the process.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// PEM bundle of extra CA certificates to trust (`--vault-ca-cert`).
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Time allowed for a whole request, body included.
    pub request_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            ca_bundle_pem: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Builds the process-wide HTTP client. Redirects are not followed: a token
/// must never be replayed to another host.
pub fn build_http(settings: &HttpSettings) -> Result<reqwest::Client, Error> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("vault-csi-driver/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &settings.ca_bundle_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| Error::Config {
            reason: format!("the Vault CA bundle is not valid PEM: {e}"),
        })?;
        if certs.is_empty() {
            return Err(Error::Config {
                reason: "the Vault CA bundle holds no certificate".to_owned(),
            });
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| Error::Config {
        reason: format!("could not build the HTTP client: {e}"),
    })
}

/// A Vault server at one address, optionally inside an Enterprise namespace.
#[derive(Clone)]
pub struct VaultClient {
    http: reqwest::Client,
    address: Url,
    namespace: Option<String>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultClient")
            .field("address", &self.address.as_str())
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

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
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

/// What a lease renewal granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// The new time to live.
    pub ttl: Duration,
    /// Vault's warnings (e.g. "TTL value is capped accordingly").
    pub warnings: Vec<String>,
}

impl VaultClient {
    /// A client for `address` sharing the process's connection pool.
    pub fn new(
        http: reqwest::Client,
        address: Url,
        namespace: Option<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            http,
            address,
            namespace,
            metrics,
        }
    }

    /// The server's address.
    pub fn address(&self) -> &Url {
        &self.address
    }

    /// `POST /v1/auth/<mount>/login` with `{role, jwt}`: works for the
    /// `kubernetes` and `jwt` auth methods alike.
    pub async fn login(
        &self,
        mount: &str,
        role: &str,
        jwt: &Secret<String>,
    ) -> Result<AuthToken, Error> {
        let body = serde_json::json!({ "role": role, "jwt": jwt.expose() });
        let body = Secret::new(body.to_string().into_bytes());
        let envelope = self
            .call(
                "login",
                Method::POST,
                &format!("auth/{mount}/login"),
                None,
                Some(&body),
                &[jwt],
            )
            .await?;
        AuthToken::from_body("login", &envelope)
    }

    /// Reads (no arguments) or writes (arguments) one `secret` request.
    pub async fn fetch(
        &self,
        token: &Secret<String>,
        request: &SecretRequest,
    ) -> Result<SecretResponse, Error> {
        let (operation, method, body) = match request.body() {
            None => ("read", Method::GET, None),
            Some(json) => (
                "write",
                Method::PUT,
                Some(Secret::new(json.as_bytes().to_vec())),
            ),
        };
        let raw = self
            .call(
                operation,
                method,
                request.path(),
                Some(token),
                body.as_ref(),
                &[token],
            )
            .await?;
        SecretResponse::from_body(operation, request.path(), raw)
    }

    /// `PUT /v1/sys/leases/renew`.
    pub async fn renew_lease(
        &self,
        token: &Secret<String>,
        lease: &LeaseId,
        increment: Duration,
    ) -> Result<Renewal, Error> {
        let body =
            serde_json::json!({ "lease_id": lease.as_str(), "increment": increment.as_secs() });
        let body = Secret::new(body.to_string().into_bytes());
        let raw = self
            .call(
                "renew_lease",
                Method::PUT,
                "sys/leases/renew",
                Some(token),
                Some(&body),
                &[token],
            )
            .await?;
        let parsed: Envelope = parse("renew_lease", raw.expose())?;
        Ok(Renewal {
            ttl: super::ttl_from_secs(parsed.lease_duration.unwrap_or(0)),
            warnings: parsed.warnings.unwrap_or_default(),
        })
    }

    /// `PUT /v1/sys/leases/revoke`.
    pub async fn revoke_lease(&self, token: &Secret<String>, lease: &LeaseId) -> Result<(), Error> {
        let body = serde_json::json!({ "lease_id": lease.as_str() });
        let body = Secret::new(body.to_string().into_bytes());
        self.call(
            "revoke_lease",
            Method::PUT,
            "sys/leases/revoke",
            Some(token),
            Some(&body),
            &[token],
        )
        .await
        .map(drop)
    }

    /// `POST /v1/auth/token/renew-self`.
    pub async fn renew_self(
        &self,
        token: &Secret<String>,
        increment: Duration,
    ) -> Result<AuthToken, Error> {
        let body = serde_json::json!({ "increment": increment.as_secs() });
        let body = Secret::new(body.to_string().into_bytes());
        let raw = self
            .call(
                "renew_self",
                Method::POST,
                "auth/token/renew-self",
                Some(token),
                Some(&body),
                &[token],
            )
            .await?;
        AuthToken::from_body("renew_self", &raw)
    }

    /// `POST /v1/auth/token/revoke-self`: revokes the token and every lease
    /// it created.
    pub async fn revoke_self(&self, token: &Secret<String>) -> Result<(), Error> {
        self.call(
            "revoke_self",
            Method::POST,
            "auth/token/revoke-self",
            Some(token),
            None,
            &[token],
        )
        .await
        .map(drop)
    }

    /// Sends one request and returns the body of a 2xx answer. `credentials`
    /// are scrubbed from any error text.
    async fn call(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        token: Option<&Secret<String>>,
        body: Option<&Secret<Vec<u8>>>,
        credentials: &[&Secret<String>],
    ) -> Result<Secret<Vec<u8>>, Error> {
        let url = self.url(path)?;
        let mut headers = HeaderMap::new();
        headers.insert("X-Vault-Request", HeaderValue::from_static("true"));
        if let Some(token) = token {
            let mut value =
                HeaderValue::from_str(token.expose()).map_err(|_| Error::InvalidResponse {
                    operation,
                    reason: "the Vault token holds characters that cannot be sent in a header"
                        .to_owned(),
                })?;
            value.set_sensitive(true);
            headers.insert("X-Vault-Token", value);
        }
        if let Some(ns) = &self.namespace {
            let value = HeaderValue::from_str(ns).map_err(|_| Error::Config {
                reason: format!("vaultNamespace {ns:?} cannot be sent as a header"),
            })?;
            headers.insert("X-Vault-Namespace", value);
        }
        let mut request = self.http.request(method, url).headers(headers);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.expose().clone());
        }
        let started = Instant::now();
        let result = self.exchange(operation, request, credentials).await;
        let class = match &result {
            Ok(_) => "2xx",
            Err(Error::Status { status, .. } | Error::RateLimited { status, .. }) => {
                status_class(*status)
            }
            Err(_) => "error",
        };
        self.metrics
            .observe_vault_request(operation, class, started.elapsed());
        result
    }

    async fn exchange(
        &self,
        operation: &'static str,
        request: reqwest::RequestBuilder,
        credentials: &[&Secret<String>],
    ) -> Result<Secret<Vec<u8>>, Error> {
        let mut response = request
            .send()
            .await
            .map_err(|e| self.transport(operation, &e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        let mut body = Secret::new(Vec::new());
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport(operation, &e))?
        {
            if body.expose().len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(Error::InvalidResponse {
                    operation,
                    reason: format!("the response is larger than {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            let mut grown = Vec::with_capacity(body.expose().len() + chunk.len());
            grown.extend_from_slice(body.expose());
            grown.extend_from_slice(&chunk);
            body = Secret::new(grown);
        }
        if status.is_success() {
            return Ok(body);
        }
        let message = error_message(body.expose(), credentials);
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Error::RateLimited {
                operation,
                status: status.as_u16(),
                retry_after,
                message,
            });
        }
        Err(Error::Status {
            operation,
            status: status.as_u16(),
            message,
        })
    }

    fn url(&self, path: &str) -> Result<Url, Error> {
        let base = self.address.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/v1/{}", path.trim_start_matches('/'))).map_err(|e| {
            Error::Config {
                reason: format!("cannot build a Vault URL for {path:?}: {e}"),
            }
        })
    }

    fn transport(&self, operation: &'static str, error: &reqwest::Error) -> Error {
        let kind = if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "could not connect"
        } else {
            "the connection failed"
        };
        // reqwest's own message can include the URL (with the secret path,
        // never a token) and the TLS reason, which is what an operator needs.
        let detail =
            std::error::Error::source(error).map_or_else(|| error.to_string(), source_chain);
        Error::Unreachable {
            operation,
            address: self.address.to_string(),
            reason: format!("{kind}: {detail}"),
        }
    }
}

/// Longest `Retry-After` believed: a hostile or broken server must not put
/// work off for days.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(300);

/// `Retry-After` as whole seconds (current Vault) or an HTTP date (older
/// Vault: `Sun, 06 Nov 1994 08:49:37 GMT`), capped at 5 minutes.
fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let format = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let at = time::PrimitiveDateTime::parse(value, format)
            .ok()?
            .assume_utc();
        std::time::SystemTime::from(at)
            .duration_since(now)
            .unwrap_or_default()
    };
    Some(wait.min(RETRY_AFTER_CAP))
}

fn source_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cursor = error.source();
    while let Some(next) = cursor {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cursor = next.source();
    }
    text
}

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

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
        let expiration = data.get("expiration").and_then(Value::as_u64);
        Ok(Self {
            lease_id: parsed.lease_id.filter(|l| !l.is_empty()).map(LeaseId::new),
            lease_duration: super::ttl_from_secs(parsed.lease_duration.unwrap_or(0)),
            renewable: parsed.renewable.unwrap_or(false),
            expiration,
            raw,
            fetched_at: Instant::now(),
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
            obtained_at: Instant::now(),
        })
    }
}

/// Replaces every token-shaped run (a JWT `eyJ…`, a Vault token `hvs.…`,
/// `hvb.…`, `hvr.…`, or a legacy `s.` token of 24+ characters) wherever it
/// starts, together with the token characters that follow it, by `***`.
fn scrub_token_shaped(text: &str) -> String {
    const MARKERS: [&str; 4] = ["eyJ", "hvs.", "hvb.", "hvr."];
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || "._-+/=".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let legacy = rest.starts_with("s.")
            && out.chars().last().is_none_or(|c| !is_token_char(c))
            && rest.chars().take_while(|c| is_token_char(*c)).count() >= 24;
        if legacy || MARKERS.iter().any(|m| rest.starts_with(m)) {
            let len: usize = rest
                .chars()
                .take_while(|c| is_token_char(*c))
                .map(char::len_utf8)
                .sum();
            out.push_str("***");
            rest = &rest[len..];
        } else {
            let c = rest.chars().next().expect("rest is not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Vault's `{"errors":[…]}` joined, scrubbed of credentials and anything
/// JWT- or token-shaped, and shortened. A hostile or broken server could echo
/// a token back; it must not reach a log or a kubelet event.
pub fn error_message(body: &[u8], credentials: &[&Secret<String>]) -> String {
    let joined = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) if !parsed.errors.is_empty() => parsed.errors.join("; "),
        Ok(_) => "(no message)".to_owned(),
        Err(_) => "(the error body is not Vault's JSON)".to_owned(),
    };
    let mut text = joined;
    for credential in credentials {
        let c = credential.expose();
        if !c.is_empty() {
            text = text.replace(c.as_str(), "***");
        }
    }
    let mut text = scrub_token_shaped(&text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if text.len() > 300 {
        let mut cut = 300;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
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

    #[test]
    fn error_messages_are_scrubbed_of_credentials() {
        let jwt = Secret::new("eyJhbGciOi.eyJzdWIiOi.sig".to_owned());
        let body = br#"{"errors":["login failed for eyJhbGciOi.eyJzdWIiOi.sig and hvs.CAESIabc (token=plainsecret)"]}"#;
        let plain = Secret::new("plainsecret".to_owned());
        let text = error_message(body, &[&jwt, &plain]);
        assert!(!text.contains("eyJ"), "{text}");
        assert!(!text.contains("hvs."), "{text}");
        assert!(!text.contains("plainsecret"), "{text}");
        assert!(text.starts_with("login failed for"), "{text}");
        assert_eq!(
            error_message(b"<html>", &[]),
            "(the error body is not Vault's JSON)"
        );
        assert_eq!(
            error_message(
                b"{\"errors\":[\"1 error occurred:\\n\\t* permission denied\\n\\n\"]}",
                &[]
            ),
            "1 error occurred: * permission denied"
        );
    }
}
