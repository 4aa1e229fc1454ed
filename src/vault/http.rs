//! The HTTP side of talking to Vault, shared by every request: the one
//! `reqwest::Client` of the process (connection pool, TLS roots, timeouts),
//! and reading an answer's body within its size limit and its volume's
//! memory budget.

use std::time::Duration;

use zeroize::{Zeroize, Zeroizing};

use super::{BodyMeter, Error};

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

pub(super) fn source_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cursor = error.source();
    while let Some(next) = cursor {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cursor = next.source();
    }
    text
}

pub(super) fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Why a body was not read whole.
pub(super) enum Refused {
    /// It is larger than the limit.
    TooLarge,
    /// Holding it would take its volume past its memory budget.
    OverBudget(String),
}

/// Appends `chunk` to `body` without ever holding more than `limit` bytes,
/// charging every buffer to `meter` before allocating it. The buffer grows
/// by doubling (at most to `limit`), so reading a body costs time
/// proportional to its size however small its chunks are, and every buffer
/// left behind is zeroed.
pub(super) fn append_bounded(
    body: &mut Zeroizing<Vec<u8>>,
    chunk: &[u8],
    limit: usize,
    meter: &dyn BodyMeter,
) -> Result<(), Refused> {
    let needed = body
        .len()
        .checked_add(chunk.len())
        .ok_or(Refused::TooLarge)?;
    if needed > limit {
        return Err(Refused::TooLarge);
    }
    if needed > body.capacity() {
        let capacity = needed.max(body.capacity() * 2).min(limit);
        meter.take(capacity as u64).map_err(Refused::OverBudget)?;
        let mut grown = Vec::with_capacity(capacity);
        grown.extend_from_slice(body);
        body.zeroize();
        **body = grown;
    }
    body.extend_from_slice(chunk);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::Unmetered;

    /// Many small chunks cost one amortised copy, within the size limit.
    #[test]
    fn body_buffers_grow_by_doubling_within_the_limit() {
        let mut body = Zeroizing::new(Vec::new());
        let mut reallocations = 0;
        let mut capacity = body.capacity();
        for _ in 0..(1_000_000 / 16) {
            assert!(append_bounded(&mut body, &[7u8; 16], MAX_RESPONSE_BYTES, &Unmetered).is_ok());
            if body.capacity() != capacity {
                reallocations += 1;
                capacity = body.capacity();
            }
        }
        assert_eq!(body.len(), 1_000_000);
        assert!(reallocations <= 21, "{reallocations} reallocations");
        assert!(body.capacity() <= MAX_RESPONSE_BYTES);
        assert!(
            append_bounded(
                &mut body,
                &vec![0u8; 48_577],
                MAX_RESPONSE_BYTES,
                &Unmetered
            )
            .is_err()
        );
        assert_eq!(body.len(), 1_000_000, "a refused chunk is not appended");
    }
}
