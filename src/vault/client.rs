//! The HTTP client for Vault's API: login, secret reads and writes, lease
//! and token renewal and revocation. One `reqwest::Client` (connection pool,
//! TLS roots) is shared by every volume; a [`VaultClient`] adds the address.
//!
//! Every response body is read with a size cap, every request has bounded
//! connect and total timeouts, and error messages from Vault are scrubbed of
//! anything token-shaped before they travel further.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;
use url::Url;
use zeroize::Zeroizing;

use super::http::{MAX_RESPONSE_BYTES, Refused, append_bounded, source_chain, status_class};
use super::response::{Renewal, parse_retry_after};
use super::scrub::error_message_for;
use super::{
    AuthToken, BodyMeter, Error, LeaseId, Mount, SecretRequest, SecretResponse, Unmetered,
};
use crate::metrics::{Metrics, VaultOperation};
use crate::secret::Secret;
use crate::timing as policy;

/// A Vault server at one address, optionally inside an Enterprise namespace.
#[derive(Clone)]
pub struct VaultClient {
    http: reqwest::Client,
    address: Url,
    namespace: Option<String>,
    metrics: Arc<Metrics>,
    /// Addresses a standby's redirect may be followed to (the operator's
    /// allow-list); the token goes nowhere else.
    redirects: Arc<[Url]>,
}

impl std::fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultClient")
            .field("address", &self.address.as_str())
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
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
            redirects: Arc::from(Vec::new()),
        }
    }

    /// Lets a standby's `307` redirect be followed (once, as Vault's own
    /// client does) when its `Location` is one of `allowed`, the operator's
    /// allow-list of Vault addresses. Any other `Location` is never sent
    /// the token or the JWT: the request is retried at the configured
    /// address instead, a few times, since a standby's redirect is
    /// temporary.
    #[must_use]
    pub fn with_allowed_redirects(mut self, allowed: &[Url]) -> Self {
        self.redirects = Arc::from(allowed.to_vec());
        self
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
                VaultOperation::Login,
                Method::POST,
                &format!("auth/{mount}/login"),
                None,
                Some(&body),
                &[jwt],
            )
            .await?;
        AuthToken::from_body("login", &envelope)
    }

    /// Reads (no arguments) or writes (arguments) one `secret` request, or
    /// lists the keys under a path (`secrets`: `GET …?list=true`, as
    /// Vault's Go client sends a list, which proxies that refuse unknown
    /// methods let through), charging the answer to `meter` as it is read.
    pub async fn fetch(
        &self,
        token: &Secret<String>,
        request: &SecretRequest,
        meter: &dyn BodyMeter,
    ) -> Result<SecretResponse, Error> {
        let (operation, method, body) = match request.body() {
            None if request.is_list() => (VaultOperation::List, Method::GET, None),
            None => (VaultOperation::Read, Method::GET, None),
            Some(json) => (
                VaultOperation::Write,
                Method::PUT,
                Some(Secret::new(json.as_bytes().to_vec())),
            ),
        };
        let listed;
        let path = if request.is_list() {
            listed = format!("{}?list=true", request.path());
            &listed
        } else {
            request.path()
        };
        let outgoing = Outgoing {
            operation,
            method,
            path,
            token: Some(token),
            body: body.as_ref(),
            credentials: &[token],
        };
        let raw = self.call_metered(outgoing, meter).await?;
        if raw.expose().is_empty() {
            // 204: the write succeeded and Vault returned no data.
            return Ok(SecretResponse::no_content());
        }
        SecretResponse::from_body(operation.as_str(), request.path(), raw)
    }

    /// `GET /v1/sys/internal/ui/mounts/<path>`: the mount `path` lies on
    /// (its path and whether it is KV version 2), as Vault Agent asks it.
    /// Vault answers a token only about a mount its policies grant
    /// something under (403 otherwise, and for a path under no mount).
    pub async fn mount_of(&self, token: &Secret<String>, path: &str) -> Result<Mount, Error> {
        let raw = self
            .call(
                VaultOperation::Mount,
                Method::GET,
                &format!("sys/internal/ui/mounts/{path}"),
                Some(token),
                None,
                &[token],
            )
            .await?;
        let body: serde_json::Value =
            serde_json::from_slice(raw.expose()).map_err(|_| Error::InvalidResponse {
                operation: "mount",
                reason: "the body is not the JSON Vault sends".to_owned(),
            })?;
        body.get("data")
            .and_then(Mount::from_data)
            .ok_or_else(|| Error::InvalidResponse {
                operation: "mount",
                reason: "the answer names no mount path".to_owned(),
            })
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
                VaultOperation::RenewLease,
                Method::PUT,
                "sys/leases/renew",
                Some(token),
                Some(&body),
                &[token],
            )
            .await?;
        Renewal::from_body("renew_lease", &raw)
    }

    /// `PUT /v1/sys/leases/revoke`.
    pub async fn revoke_lease(&self, token: &Secret<String>, lease: &LeaseId) -> Result<(), Error> {
        let body = serde_json::json!({ "lease_id": lease.as_str() });
        let body = Secret::new(body.to_string().into_bytes());
        self.call(
            VaultOperation::RevokeLease,
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
                VaultOperation::RenewSelf,
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
            VaultOperation::RevokeSelf,
            Method::POST,
            "auth/token/revoke-self",
            Some(token),
            None,
            &[token],
        )
        .await
        .map(drop)
    }

    /// `GET /v1/auth/token/lookup-self`: succeeds while Vault honours the
    /// token.
    pub async fn lookup_self(&self, token: &Secret<String>) -> Result<(), Error> {
        self.call(
            VaultOperation::LookupSelf,
            Method::GET,
            "auth/token/lookup-self",
            Some(token),
            None,
            &[token],
        )
        .await
        .map(drop)
    }

    /// `POST /v1/sys/capabilities-self` for one path: the token's
    /// capabilities there (`read`, `update`, `deny`, …).
    pub async fn capabilities_self(
        &self,
        token: &Secret<String>,
        path: &str,
    ) -> Result<Vec<String>, Error> {
        let body = serde_json::json!({ "paths": [path] });
        let body = Secret::new(body.to_string().into_bytes());
        let raw = self
            .call(
                VaultOperation::CapabilitiesSelf,
                Method::POST,
                "sys/capabilities-self",
                Some(token),
                Some(&body),
                &[token],
            )
            .await?;
        super::response::capabilities("capabilities_self", path, &raw)
    }

    /// `GET /v1/sys/health`, which needs no token: succeeds when the server
    /// is initialised, unsealed and active (or a standby).
    pub async fn health(&self) -> Result<(), Error> {
        self.call(
            VaultOperation::Health,
            Method::GET,
            "sys/health?standbyok=true&perfstandbyok=true",
            None,
            None,
            &[],
        )
        .await
        .map(drop)
    }

    /// Sends one request and returns the body of a 2xx answer. `credentials`
    /// are scrubbed from any error text.
    async fn call(
        &self,
        operation: VaultOperation,
        method: Method,
        path: &str,
        token: Option<&Secret<String>>,
        body: Option<&Secret<Vec<u8>>>,
        credentials: &[&Secret<String>],
    ) -> Result<Secret<Vec<u8>>, Error> {
        let request = Outgoing {
            operation,
            method,
            path,
            token,
            body,
            credentials,
        };
        self.call_metered(request, &Unmetered).await
    }

    /// [`VaultClient::call`], the answer's body charged to `meter` as it
    /// is read, before it is held.
    async fn call_metered(
        &self,
        request: Outgoing<'_>,
        meter: &dyn BodyMeter,
    ) -> Result<Secret<Vec<u8>>, Error> {
        let Outgoing {
            operation: which,
            method,
            path,
            token,
            body,
            credentials,
        } = request;
        let operation = which.as_str();
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
        let result = self.exchange(operation, request, credentials, meter).await;
        let class = match &result {
            Ok(_) => "2xx",
            Err(Error::Status { status, .. } | Error::RateLimited { status, .. }) => {
                status_class(*status)
            }
            Err(_) => "error",
        };
        self.metrics
            .observe_vault_request(which, class, started.elapsed());
        result
    }

    async fn exchange(
        &self,
        operation: &'static str,
        request: reqwest::RequestBuilder,
        credentials: &[&Secret<String>],
        meter: &dyn BodyMeter,
    ) -> Result<Secret<Vec<u8>>, Error> {
        let original = request.build().map_err(|e| self.transport(operation, &e))?;
        let mut follow: Option<Url> = None;
        let mut followed = false;
        let mut retries = 0;
        loop {
            let mut attempt = original.try_clone().ok_or_else(|| Error::Config {
                reason: "a Vault request body cannot be sent twice".to_owned(),
            })?;
            if let Some(url) = follow.take() {
                *attempt.url_mut() = url;
            }
            let response = self
                .http
                .execute(attempt)
                .await
                .map_err(|e| self.transport(operation, &e))?;
            let status = response.status();
            if !status.is_redirection() {
                return self
                    .answer(operation, original.url(), response, credentials, meter)
                    .await;
            }
            // A standby without request forwarding answers 307 with the
            // active node's address (`respondStandby`). That is temporary:
            // follow it once if the operator allows that address, else try
            // the configured address again.
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| original.url().join(v).ok());
            drop(response);
            if let Some(url) = location.clone().filter(|l| !followed && self.may_follow(l)) {
                followed = true;
                follow = Some(url);
                continue;
            }
            if let Some(delay) = policy::standby_retry_delay(retries, policy::draw()) {
                retries += 1;
                tokio::time::sleep(delay).await;
                continue;
            }
            let to = location.as_ref().map_or_else(
                || "no Location".to_owned(),
                |l| l.origin().ascii_serialization(),
            );
            return Err(Error::Status {
                operation,
                status: status.as_u16(),
                message: format!(
                    "a standby node keeps redirecting ({to}) after {retries} retries; the driver follows redirects only to allowed Vault addresses (--allowed-vault-addrs) and never from https to http. Point vaultAddress at the active node or a load balancer that routes to it"
                ),
            });
        }
    }

    /// Whether a redirect to `location` may carry the token: its origin is
    /// the configured address or an allowed one, and it does not downgrade
    /// https to http.
    fn may_follow(&self, location: &Url) -> bool {
        if self.address.scheme() == "https" && location.scheme() != "https" {
            return false;
        }
        let origin = location.origin();
        std::iter::once(&self.address)
            .chain(self.redirects.iter())
            .any(|allowed| allowed.origin() == origin)
    }

    /// Reads a non-redirect answer: the body of a 2xx, or the error.
    async fn answer(
        &self,
        operation: &'static str,
        url: &Url,
        mut response: reqwest::Response,
        credentials: &[&Secret<String>],
        meter: &dyn BodyMeter,
    ) -> Result<Secret<Vec<u8>>, Error> {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        let refused = |why: Refused| match why {
            Refused::TooLarge => Error::InvalidResponse {
                operation,
                reason: format!("the response is larger than {MAX_RESPONSE_BYTES} bytes"),
            },
            Refused::OverBudget(reason) => Error::OverBudget { operation, reason },
        };
        let announced = response
            .content_length()
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
        if announced > MAX_RESPONSE_BYTES {
            return Err(refused(Refused::TooLarge));
        }
        meter
            .take(announced as u64)
            .map_err(|reason| refused(Refused::OverBudget(reason)))?;
        let mut body = Zeroizing::new(Vec::with_capacity(announced));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport(operation, &e))?
        {
            append_bounded(&mut body, &chunk, MAX_RESPONSE_BYTES, meter).map_err(refused)?;
        }
        let body = Secret::new(std::mem::take(&mut *body));
        if status.is_success() {
            return Ok(body);
        }
        let path = url.path().strip_prefix("/v1/").unwrap_or(url.path());
        let message = error_message_for(path, body.expose(), credentials);
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

/// One request, as [`VaultClient::call`] sends it.
struct Outgoing<'a> {
    operation: VaultOperation,
    method: Method,
    path: &'a str,
    token: Option<&'a Secret<String>>,
    body: Option<&'a Secret<Vec<u8>>>,
    credentials: &'a [&'a Secret<String>],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::{HttpSettings, build_http};

    /// A raw HTTP server answering every request with `head` then `body`
    /// cut into `chunk`-byte pieces of chunked transfer encoding.
    async fn chunked_server(
        status: &'static str,
        headers: &'static str,
        body: Vec<u8>,
        chunk: usize,
    ) -> Url {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let _ = socket.read(&mut buf).await;
                    let mut out = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{headers}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                    )
                    .into_bytes();
                    for piece in body.chunks(chunk) {
                        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                        out.extend_from_slice(piece);
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"0\r\n\r\n");
                    let _ = socket.write_all(&out).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Url::parse(&format!("http://{addr}")).unwrap()
    }

    fn client(address: Url) -> VaultClient {
        VaultClient::new(
            build_http(&HttpSettings::default()).unwrap(),
            address,
            None,
            Arc::new(Metrics::new()),
        )
    }

    /// A 1 MB answer in 16-byte chunks is read in linear time: well within
    /// the timeout (copying the whole body for every chunk, as a quadratic
    /// reader does, moves about 30 GB and zeroes as much).
    #[tokio::test]
    async fn a_large_body_in_small_chunks_is_read_in_linear_time() {
        let mut body = br#"{"lease_id":"","lease_duration":0,"data":{"blob":""#.to_vec();
        body.resize(1_000_000 - 3, b'a');
        body.extend_from_slice(br#""}}"#);
        let address = chunked_server("200 OK", "", body, 16).await;
        let request = super::SecretRequest::new("secret/big", &serde_json::Map::new()).unwrap();
        let token = Secret::new("hvs.test".to_owned());
        let answer = tokio::time::timeout(
            Duration::from_secs(20),
            client(address).fetch(&token, &request, &crate::vault::Unmetered),
        )
        .await
        .expect("read in linear time")
        .unwrap();
        assert_eq!(answer.raw.expose().len(), 1_000_000);
    }

    /// A write answered 204 is a success with no data.
    #[tokio::test]
    async fn a_write_answered_204_is_a_success() {
        let address = chunked_server("204 No Content", "", Vec::new(), 16).await;
        let request = {
            let mut args = serde_json::Map::new();
            args.insert("a".to_owned(), serde_json::json!(1));
            super::SecretRequest::new("pki/tidy", &args).unwrap()
        };
        let token = Secret::new("hvs.test".to_owned());
        let answer = client(address)
            .fetch(&token, &request, &crate::vault::Unmetered)
            .await
            .unwrap();
        assert!(answer.lease_id.is_none());
        let value: serde_json::Value = serde_json::from_slice(answer.raw.expose()).unwrap();
        assert_eq!(value["data"], serde_json::json!({}));
    }
}
