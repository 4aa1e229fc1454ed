//! `service_account_tokens`: kubelet's `csi.storage.k8s.io/serviceAccount.tokens`
//! JSON → `ServiceAccountToken::from_kubelet_json`, for a few audiences.
//!
//! Each input is used twice:
//! 1. as the tokens JSON itself;
//! 2. as a JWT *claims* payload: the harness wraps it as
//!    `<header>.<base64url(input)>.<sig>` under every audience, so the claim
//!    decoding (`aud`, `exp`) is fuzzed directly instead of through base64.
//!
//! Never panics. When a token is refused, the error message never echoes a
//! `"token"` value from the JSON. A token is only checked when it is at least
//! 8 bytes long (shorter strings are not credentials and turn up in any
//! sentence), and an occurrence is excused when the same text is legitimately
//! in the message for another reason: inside the wanted audience, the
//! audience names kubelet sent (object keys), the token's `aud` claims, or
//! the message's fixed wording.
#![no_main]

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vault_csi_driver::vault::{IdentityError, ServiceAccountToken};

const AUDIENCES: [&str; 3] = ["vault", "", "https://kubernetes.default.svc"];
/// 2024-05-01T12:00:00Z, and a time far in the future.
const NOWS: [u64; 2] = [1_714_564_800, 9_000_000_000];
const MIN_CHECKED_TOKEN: usize = 8;

fn collect_tokens(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "token"
                    && let Value::String(s) = v
                {
                    out.push(s.clone());
                }
                collect_tokens(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_tokens(v, out)),
        _ => {}
    }
}

/// The message with every field that echoes input emptied: its fixed words.
fn skeleton(err: &IdentityError) -> String {
    match err {
        IdentityError::Malformed => err.to_string(),
        IdentityError::MissingAudience { .. } => IdentityError::MissingAudience {
            audience: String::new(),
            available: Vec::new(),
        }
        .to_string(),
        IdentityError::NotAJwt { .. } => IdentityError::NotAJwt {
            audience: String::new(),
        }
        .to_string(),
        IdentityError::WrongAudience { .. } => IdentityError::WrongAudience {
            audience: String::new(),
            claimed: Vec::new(),
        }
        .to_string(),
        IdentityError::Expired { .. } => IdentityError::Expired {
            audience: String::new(),
            ago_secs: 0,
        }
        .to_string(),
    }
}

/// Text the message may carry because the input put it there on purpose.
fn legitimate_echoes(err: &IdentityError, audience: &str, keys: &[String]) -> Vec<String> {
    let mut echoes = vec![
        skeleton(err),
        audience.to_owned(),
        format!("{audience:?}"),
        format!("{keys:?}"),
    ];
    echoes.extend(keys.iter().cloned());
    match err {
        IdentityError::WrongAudience { claimed, .. } => {
            echoes.push(format!("{claimed:?}"));
            echoes.extend(claimed.iter().cloned());
        }
        IdentityError::MissingAudience { available, .. } => {
            echoes.push(format!("{available:?}"));
        }
        _ => {}
    }
    echoes
}

fn check(json: &str, audience: &str, now: SystemTime) {
    let parsed: Option<Value> = serde_json::from_str(json).ok();
    let result = ServiceAccountToken::from_kubelet_json(json, audience, now);
    match result {
        Ok(token) => {
            // The token handed back is the one filed under the audience.
            let filed = parsed
                .as_ref()
                .and_then(|v| v.get(audience))
                .and_then(|e| e.get("token"))
                .and_then(Value::as_str);
            assert_eq!(filed, Some(token.jwt().expose().as_str()));
            assert!(
                token.is_valid_at(now),
                "accepted a token that is expired at `now`"
            );
            // Debug never shows the JWT (an accepted one always has two dots).
            assert!(!format!("{token:?}").contains(token.jwt().expose().as_str()));
        }
        Err(err) => {
            let Some(parsed) = parsed else { return };
            let message = err.to_string();
            let mut tokens = Vec::new();
            collect_tokens(&parsed, &mut tokens);
            let keys: Vec<String> = match &parsed {
                Value::Object(map) => map.keys().cloned().collect(),
                _ => Vec::new(),
            };
            let echoes = legitimate_echoes(&err, audience, &keys);
            for token in tokens.iter().filter(|t| t.len() >= MIN_CHECKED_TOKEN) {
                for form in [token.clone(), token.escape_debug().to_string()] {
                    if message.contains(&form) && !echoes.iter().any(|e| e.contains(&form)) {
                        panic!(
                            "the error for audience {audience:?} echoes a token ({} bytes): {message}",
                            token.len()
                        );
                    }
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let nows = NOWS.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));

    // 1. The input is kubelet's JSON.
    for audience in AUDIENCES {
        for now in nows {
            check(text, audience, now);
        }
    }

    // 2. The input is the claims of a token filed under every audience.
    let jwt = format!("eyJhbGciOiJSUzI1NiJ9.{}.c2ln", URL_SAFE_NO_PAD.encode(data));
    let mut map = serde_json::Map::new();
    for audience in AUDIENCES {
        map.insert(
            audience.to_owned(),
            serde_json::json!({"token": jwt, "expirationTimestamp": "2024-05-01T12:00:00Z"}),
        );
    }
    let wrapped = Value::Object(map).to_string();
    for audience in AUDIENCES {
        for now in nows {
            check(&wrapped, audience, now);
        }
    }
});
