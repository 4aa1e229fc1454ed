//! `vault_response`: a Vault HTTP body → `SecretResponse::from_body`,
//! `AuthToken::from_body` and `error_message`.
//!
//! Never panics. `error_message` (the text that reaches logs, gRPC statuses
//! and kubelet events) never contains the credential it was told to scrub,
//! nothing JWT- or Vault-token-shaped (`eyJ`, `hvs.`, `hvb.` followed by
//! token characters, longer than 10 bytes in all), and is at most 300 bytes
//! plus the `…` that marks a cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_csi_driver::secret::Secret;
use vault_csi_driver::vault::{AuthToken, SecretResponse, error_message};

const CREDENTIAL: &str = "hvs.TESTTOKEN1234567890";
const MAX_MESSAGE_BYTES: usize = 300 + '…'.len_utf8();
/// `eyJ…` / `hvs.…` runs this long or longer are token-shaped.
const MIN_TOKEN_SHAPED: usize = 11;

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' || b == b'=' || b == b'+'
}

/// The first token-shaped run in `text`, if any: a prefix that marks a JWT
/// or a Vault token, at the start of the text or after a character that is
/// not a letter or digit (so `token=eyJ…` counts and `keyJoined` does not),
/// followed by token characters, in all at least `MIN_TOKEN_SHAPED` bytes.
fn token_shaped(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    for prefix in ["eyJ", "hvs.", "hvb."] {
        let mut from = 0;
        while let Some(at) = text[from..].find(prefix) {
            let start = from + at;
            if start > 0 && bytes[start - 1].is_ascii_alphanumeric() {
                from = start + 1;
                continue;
            }
            let mut end = start + prefix.len();
            while end < bytes.len() && is_token_char(bytes[end]) {
                end += 1;
            }
            if end - start >= MIN_TOKEN_SHAPED {
                return Some(&text[start..end]);
            }
            from = start + 1;
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    // A secret read: the body is kept whole for the templates.
    if let Ok(response) =
        SecretResponse::from_body("read", "secret/data/x", Secret::new(data.to_vec()))
    {
        assert_eq!(
            response.raw.expose().as_slice(),
            data,
            "the raw body was altered"
        );
        if let Some(lease) = &response.lease_id {
            assert!(!lease.as_str().is_empty(), "an empty lease id was kept");
        }
    }

    // A login answer.
    let body = Secret::new(data.to_vec());
    match AuthToken::from_body("login", &body) {
        Ok(auth) => assert!(
            !auth.token.expose().is_empty(),
            "accepted an empty client token"
        ),
        Err(e) => {
            let text = e.to_string();
            assert!(
                !text.contains(CREDENTIAL),
                "a login error echoes the body: {text}"
            );
        }
    }

    // An error body: scrubbed before it travels.
    let credential = Secret::new(CREDENTIAL.to_owned());
    let message = error_message(data, &[&credential]);
    assert!(
        !message.contains(CREDENTIAL),
        "error_message leaks the credential: {message:?}"
    );
    if let Some(shape) = token_shaped(&message) {
        panic!("error_message leaks a token-shaped string {shape:?} in {message:?}");
    }
    assert!(
        message.len() <= MAX_MESSAGE_BYTES,
        "error_message is {} bytes: {message:?}",
        message.len()
    );
});
