//! Service-account JWT minting and verification with the demo RS256 key
//! pair, standing in for the Kubernetes API server's token issuer and for
//! the Vault Kubernetes auth plugin's `pem_keys` verification.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

use crate::wire::{stable_uuid, unix_secs};
use crate::{DEMO_PUBLIC_KEY_PEM, DEMO_SIGNING_KEY_PEM, SaToken};

/// Issuer claim the Kubernetes API server puts in service-account tokens.
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Key id header, so tokens look like the API server's.
const KEY_ID: &str = "vault-double-demo";

static ENCODING_KEY: LazyLock<EncodingKey> = LazyLock::new(|| {
    EncodingKey::from_rsa_pem(DEMO_SIGNING_KEY_PEM.as_bytes())
        .expect("keys/demo-sa-signing-key.pem must be a valid RSA private key")
});

static DECODING_KEY: LazyLock<DecodingKey> = LazyLock::new(|| {
    DecodingKey::from_rsa_pem(DEMO_PUBLIC_KEY_PEM.as_bytes())
        .expect("keys/demo-sa-signing-key.pub.pem must be a valid RSA public key")
});

/// The deterministic uid the double gives service account `ns/name`.
pub(crate) fn service_account_uid(namespace: &str, name: &str) -> String {
    stable_uuid(&format!("serviceaccount/{namespace}/{name}"))
}

/// Mints a projected service-account token for `claims`.
pub(crate) fn sign(claims: &SaToken) -> String {
    let now = unix_secs(SystemTime::now());
    let (iat, exp) = if claims.expires_in == Duration::ZERO {
        // Documented convention: zero lifetime mints an already-expired token.
        (now.saturating_sub(120), now.saturating_sub(60))
    } else {
        (now, now + claims.expires_in.as_secs().max(1))
    };
    let body = json!({
        "iss": ISSUER,
        "sub": format!("system:serviceaccount:{}:{}", claims.namespace, claims.service_account),
        "aud": claims.audience,
        "exp": exp,
        "iat": iat,
        "nbf": iat,
        "kubernetes.io": {
            "namespace": claims.namespace,
            "pod": {"name": claims.pod_name, "uid": claims.pod_uid},
            "serviceaccount": {
                "name": claims.service_account,
                "uid": service_account_uid(&claims.namespace, &claims.service_account),
            },
        },
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KEY_ID.to_owned());
    jsonwebtoken::encode(&header, &body, &ENCODING_KEY)
        .expect("signing with the embedded demo key cannot fail")
}

/// The identity a verified token asserts.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) audience: Vec<String>,
}

/// Verifies signature and time claims and extracts the service account.
/// Errors are the 403 message the Kubernetes auth plugin would return.
pub(crate) fn verify(jwt: &str) -> Result<Verified, String> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = 0;
    validation.validate_aud = false;
    validation.validate_nbf = true;
    let claims = match jsonwebtoken::decode::<Value>(jwt, &DECODING_KEY, &validation) {
        Ok(data) => data.claims,
        Err(e) => return Err(error_message(e.kind())),
    };
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
    let Some((namespace, name)) = sub
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains(':'))
    else {
        return Err("permission denied".to_owned());
    };
    let k8s = claims.get("kubernetes.io");
    let claimed_ns = k8s.and_then(|k| k.get("namespace")).and_then(Value::as_str);
    let sa = k8s.and_then(|k| k.get("serviceaccount"));
    let claimed_name = sa.and_then(|s| s.get("name")).and_then(Value::as_str);
    if claimed_ns.is_some_and(|n| n != namespace) || claimed_name.is_some_and(|n| n != name) {
        return Err("permission denied".to_owned());
    }
    let uid = sa
        .and_then(|s| s.get("uid"))
        .and_then(Value::as_str)
        .map_or_else(|| service_account_uid(namespace, name), str::to_owned);
    let audience = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    Ok(Verified {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid,
        audience,
    })
}

fn error_message(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::InvalidKeyFormat => "permission denied".to_owned(),
        ErrorKind::ExpiredSignature => {
            "go-jose/go-jose/jwt: validation failed, token is expired (exp)".to_owned()
        }
        ErrorKind::ImmatureSignature => {
            "go-jose/go-jose/jwt: validation failed, token not valid yet (nbf)".to_owned()
        }
        ErrorKind::MissingRequiredClaim(claim) => {
            format!("go-jose/go-jose/jwt: validation failed, missing claim ({claim})")
        }
        ErrorKind::InvalidToken | ErrorKind::Base64(_) => {
            "go-jose/go-jose: compact JWS format must have three parts".to_owned()
        }
        other => format!("go-jose/go-jose: error in cryptographic primitive: {other:?}"),
    }
}
