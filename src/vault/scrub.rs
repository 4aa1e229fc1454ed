//! Scrubbing what Vault says before it travels further: a hostile or
//! broken server could echo a token back, and its message must not carry
//! it into a log line or a kubelet event.

use serde::Deserialize;
use serde_json::Value;

use crate::secret::Secret;

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

/// Replaces every token-shaped run (a JWT `eyJ…`; a Vault token `hvs.…`,
/// `hvb.…`, `hvr.…`; or, standing alone and 24+ characters long, a token
/// with a one-letter prefix: Vault's legacy `s.`, OpenBao's `s.` service,
/// `b.` batch and `r.` recovery tokens) wherever it starts, together with
/// the token characters that follow it, by `***`.
fn scrub_token_shaped(text: &str) -> String {
    const MARKERS: [&str; 4] = ["eyJ", "hvs.", "hvb.", "hvr."];
    const SHORT_PREFIXES: [&str; 3] = ["s.", "b.", "r."];
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || "._-+/=".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let legacy = SHORT_PREFIXES.iter().any(|p| rest.starts_with(p))
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
    error_message_for("", body, credentials)
}

/// KV v2 answers a deleted or destroyed version with 404 and the whole
/// envelope, no `errors`: say which version and what happened to it.
fn deleted_version(path: &str, body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let metadata = value.get("data")?.get("metadata")?;
    let version = metadata.get("version").and_then(Value::as_u64)?;
    let of = if path.is_empty() {
        String::new()
    } else {
        format!(" of {path}")
    };
    if metadata.get("destroyed").and_then(Value::as_bool) == Some(true) {
        return Some(format!(
            "version {version}{of} was destroyed; write a new version or read an older one"
        ));
    }
    let deleted = metadata.get("deletion_time").and_then(Value::as_str)?;
    (!deleted.is_empty()).then(|| {
        format!(
            "version {version}{of} was deleted at {deleted}; undelete it or write a new version"
        )
    })
}

pub(super) fn error_message_for(
    path: &str,
    body: &[u8],
    credentials: &[&Secret<String>],
) -> String {
    let joined = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) if !parsed.errors.is_empty() => parsed.errors.join("; "),
        Ok(_) => deleted_version(path, body).unwrap_or_else(|| "(no message)".to_owned()),
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

    /// Every token format Vault and OpenBao issue is scrubbed; short words
    /// that merely start like one are not.
    #[test]
    fn every_token_prefix_is_scrubbed() {
        let long = "AAAAAQKl3fmIixWj0z9cFZHpF5wXyQ";
        for prefix in ["hvs.", "hvb.", "hvr.", "s.", "b.", "r.", "eyJ"] {
            let text = format!("token {prefix}{long} was refused");
            assert_eq!(
                scrub_token_shaped(&text),
                "token *** was refused",
                "{prefix}"
            );
        }
        for kept in [
            "see b.example",
            "r.2 and s.3",
            "abs.AAAAAQKl3fmIixWj0z9cFZHpF5wXyQ",
        ] {
            assert_eq!(scrub_token_shaped(kept), kept);
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

    #[test]
    fn deleted_and_destroyed_versions_are_named() {
        let deleted = br#"{"request_id":"r","lease_id":"","renewable":false,"lease_duration":0,"data":{"data":null,"metadata":{"created_time":"2024-01-01T00:00:00Z","custom_metadata":null,"deletion_time":"2024-02-01T00:00:00Z","destroyed":false,"version":3}},"wrap_info":null,"warnings":null,"auth":null}"#;
        assert_eq!(
            error_message_for("secret/data/x", deleted, &[]),
            "version 3 of secret/data/x was deleted at 2024-02-01T00:00:00Z; undelete it or write a new version"
        );
        let destroyed = br#"{"data":{"data":null,"metadata":{"deletion_time":"","destroyed":true,"version":2}}}"#;
        assert!(
            error_message_for("secret/data/x", destroyed, &[])
                .starts_with("version 2 of secret/data/x was destroyed")
        );
        assert_eq!(error_message(b"{\"errors\":[]}", &[]), "(no message)");
    }
}
