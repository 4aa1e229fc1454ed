//! The pod's identity: the service-account token kubelet hands over in
//! `csi.storage.k8s.io/serviceAccount.tokens` (a JSON map from audience to
//! `{"token","expirationTimestamp"}`, present when the CSIDriver has
//! `tokenRequests`).
//!
//! The driver never verifies the JWT's signature (Vault does that on login);
//! it only decodes the claims to refuse a token that is expired or minted for
//! another audience before it is sent anywhere, with a message that says how
//! to fix the CSIDriver. Nothing here ever prints a token.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::secret::Secret;

/// The volume-context (and, on Kubernetes 1.35+, `secrets`) key holding the
/// tokens. Its value is a credential and is redacted wherever a request is
/// logged.
pub const TOKENS_KEY: &str = "csi.storage.k8s.io/serviceAccount.tokens";

/// Why a token could not be used. None of the variants carry token bytes.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The tokens attribute is not the JSON kubelet writes.
    #[error(
        "`{TOKENS_KEY}` is not valid JSON of the form {{\"<audience>\":{{\"token\":\"…\",\"expirationTimestamp\":\"…\"}}}}"
    )]
    Malformed,
    /// No token for the wanted audience.
    #[error(
        "no service-account token for audience {audience:?} (kubelet sent {available:?}); add `tokenRequests: [{{audience: {audience}}}]` to the CSIDriver object, or set the volume attribute `audience` to one it requests"
    )]
    MissingAudience {
        /// The audience the volume asked for.
        audience: String,
        /// The audiences kubelet did send.
        available: Vec<String>,
    },
    /// The token is not a JWT whose claims can be read.
    #[error("the service-account token for audience {audience:?} is not a readable JWT")]
    NotAJwt {
        /// The audience it was filed under.
        audience: String,
    },
    /// The token's `aud` claim does not include the audience it is filed
    /// under.
    #[error(
        "the service-account token filed under audience {audience:?} was minted for {claimed:?}; kubelet and the CSIDriver's tokenRequests disagree"
    )]
    WrongAudience {
        /// The audience the volume asked for.
        audience: String,
        /// What the token's claims say.
        claimed: Vec<String>,
    },
    /// The token has expired; kubelet sends a fresh one on its next call.
    #[error(
        "the service-account token for audience {audience:?} expired {ago_secs}s ago; kubelet will send a fresh one on its next call (check the node's clock if this persists)"
    )]
    Expired {
        /// The audience.
        audience: String,
        /// How long ago it expired.
        ago_secs: u64,
    },
}

#[derive(Deserialize)]
struct TokenEntry {
    token: String,
    #[serde(rename = "expirationTimestamp", default)]
    _expiration: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    exp: Option<u64>,
}

/// A service-account JWT for one audience, with its expiry.
#[derive(Debug, Clone)]
pub struct ServiceAccountToken {
    jwt: Secret<String>,
    expires_at: SystemTime,
}

impl ServiceAccountToken {
    /// Picks the token for `audience` out of kubelet's JSON and checks that
    /// it is current and really minted for that audience.
    pub fn from_kubelet_json(
        json: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<Self, IdentityError> {
        let mut entries: HashMap<String, TokenEntry> =
            serde_json::from_str(json).map_err(|_| IdentityError::Malformed)?;
        let Some(entry) = entries.remove(audience) else {
            let mut available: Vec<String> = entries.into_keys().collect();
            available.sort();
            return Err(IdentityError::MissingAudience {
                audience: audience.to_owned(),
                available,
            });
        };
        let jwt = Secret::new(entry.token);
        let claims = decode_claims(jwt.expose()).ok_or_else(|| IdentityError::NotAJwt {
            audience: audience.to_owned(),
        })?;
        let claimed = match claims.aud {
            Some(Audience::One(a)) => vec![a],
            Some(Audience::Many(a)) => a,
            None => Vec::new(),
        };
        // The empty audience means "the API server's own", which kubelet
        // files under "" with whatever the cluster's default audiences are.
        if !audience.is_empty() && !claimed.iter().any(|a| a == audience) {
            return Err(IdentityError::WrongAudience {
                audience: audience.to_owned(),
                claimed,
            });
        }
        let expires_at = unix_time(claims.exp.unwrap_or(u64::MAX));
        if let Ok(ago) = now.duration_since(expires_at) {
            return Err(IdentityError::Expired {
                audience: audience.to_owned(),
                ago_secs: ago.as_secs(),
            });
        }
        Ok(Self { jwt, expires_at })
    }

    /// Rebuilds a token persisted in the driver's state.
    pub fn from_parts(jwt: Secret<String>, expires_at: SystemTime) -> Self {
        Self { jwt, expires_at }
    }

    /// The JWT, for the login request body only.
    pub fn jwt(&self) -> &Secret<String> {
        &self.jwt
    }

    /// When the token stops being accepted.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// True when the token can still be used for a login at `now`.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        now < self.expires_at
    }
}

/// Unix seconds as a `SystemTime`; absurdly distant times (which would
/// overflow) become the far future rather than a panic.
fn unix_time(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(secs.min(1 << 40)))
        .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 34))
}

fn decode_claims(jwt: &str) -> Option<Claims> {
    let mut parts = jwt.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = Secret::new(URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?);
    serde_json::from_slice(bytes.expose()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &serde_json::Value) -> String {
        format!(
            "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
        )
    }

    fn tokens(audience: &str, token: &str) -> String {
        serde_json::json!({ audience: {"token": token, "expirationTimestamp": "2030-01-01T00:00:00Z"} }).to_string()
    }

    const NOW: u64 = 1_800_000_000;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
    }

    #[test]
    fn picks_the_token_for_the_audience() {
        let t = jwt(&serde_json::json!({"aud": ["vault"], "exp": NOW + 600}));
        let token =
            ServiceAccountToken::from_kubelet_json(&tokens("vault", &t), "vault", now()).unwrap();
        assert_eq!(token.jwt().expose(), &t);
        assert!(token.is_valid_at(now()));
        assert!(!format!("{token:?}").contains(&t));
    }

    /// Found by the `service_account_tokens` fuzz target: an `exp` past
    /// what `SystemTime` can hold used to panic.
    #[test]
    fn absurd_expiry_is_the_far_future_not_a_panic() {
        let t = jwt(&serde_json::json!({"aud": "vault", "exp": 9_223_372_036_854_775_808_u64}));
        let token =
            ServiceAccountToken::from_kubelet_json(&tokens("vault", &t), "vault", now()).unwrap();
        assert!(token.is_valid_at(now()));
    }

    #[test]
    fn refuses_bad_tokens_without_echoing_them() {
        let good = jwt(&serde_json::json!({"aud": "vault", "exp": NOW + 600}));
        let other_aud = jwt(&serde_json::json!({"aud": ["api"], "exp": NOW + 600}));
        let expired = jwt(&serde_json::json!({"aud": ["vault"], "exp": NOW - 5}));
        let cases = [
            ("{not json".to_owned(), "vault", "not valid JSON"),
            (tokens("other", &good), "vault", "tokenRequests"),
            (tokens("vault", "not-a-jwt"), "vault", "not a readable JWT"),
            (tokens("vault", &other_aud), "vault", "minted for"),
            (tokens("vault", &expired), "vault", "expired 5s ago"),
        ];
        for (json, audience, expected) in cases {
            let err = ServiceAccountToken::from_kubelet_json(&json, audience, now()).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(expected), "{text}");
            for secret in [&good, &other_aud, &expired] {
                assert!(
                    !text.contains(secret.as_str()),
                    "error leaks the token: {text}"
                );
            }
        }
    }
}
