//! One file's render in the Go model: the nonce of its tagged values and
//! byte markers, and the template's variables (`$x :=`), which Go can
//! assign in one block and read after it, something handlebars' block
//! parameters cannot do. Rendering is synchronous, so the session is a
//! thread-local that [`start`] sets and its guard clears.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::Value;

/// The key that marks a tagged value (its value is the session's nonce).
pub(super) const TAG: &str = "\u{FDD0}go";
/// Starts and ends a run of bytes that are not UTF-8 inside a string.
pub(super) const MARK: char = '\u{FDD0}';

/// One file's render: the nonce of its tags and markers, and its
/// variables.
struct Session {
    nonce: String,
    vars: HashMap<String, Value>,
    /// consul-template's scratch: one per render, as the agent makes one
    /// for each execution of a template.
    scratch: serde_json::Map<String, Value>,
}

thread_local! {
    /// Rendering is synchronous, so a thread-local is an exact per-render
    /// slot (like the `secret` helper's scope).
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

/// Holds a file's session; dropping it ends it.
pub(in crate::render) struct Started(());

/// Starts the session of one file's render, with a fresh nonce.
pub(in crate::render) fn start() -> Started {
    let nonce = format!("{:032x}", rand::random::<u128>());
    SESSION.set(Some(Session {
        nonce,
        vars: HashMap::new(),
        scratch: serde_json::Map::new(),
    }));
    Started(())
}

impl Drop for Started {
    fn drop(&mut self) {
        SESSION.set(None);
    }
}

pub(super) fn nonce() -> String {
    SESSION
        .with_borrow(|s| s.as_ref().map(|s| s.nonce.clone()))
        .unwrap_or_default()
}

/// The bytes of a rendered file: markers of the current session become
/// the bytes they carry.
pub(in crate::render) fn output_bytes(text: String) -> Vec<u8> {
    if !text.contains(MARK) {
        return text.into_bytes();
    }
    decode_bytes(&text, &nonce()).into_owned()
}

/// A Go string's bytes from its JSON form.
pub(super) fn decode_bytes<'a>(text: &'a str, nonce: &str) -> Cow<'a, [u8]> {
    if nonce.is_empty() || !text.contains(MARK) {
        return Cow::Borrowed(text.as_bytes());
    }
    let start = format!("{MARK}{nonce}[");
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&start) {
        out.extend_from_slice(&rest.as_bytes()[..at]);
        let after = &rest[at + start.len()..];
        let Some(end) = after.find(&format!("]{MARK}")) else {
            out.extend_from_slice(&rest.as_bytes()[at..]);
            return Cow::Owned(out);
        };
        let hex = &after[..end];
        for pair in hex.as_bytes().chunks(2) {
            let digits = std::str::from_utf8(pair).unwrap_or("00");
            out.push(u8::from_str_radix(digits, 16).unwrap_or(0));
        }
        rest = &after[end + 1 + MARK.len_utf8()..];
    }
    out.extend_from_slice(rest.as_bytes());
    Cow::Owned(out)
}

/// Sets a variable of the current session.
pub(in crate::render) fn set_var(name: String, value: Value) {
    SESSION.with_borrow_mut(|s| {
        if let Some(s) = s {
            s.vars.insert(name, value);
        }
    });
}

/// Works on the current session's scratch (an empty one outside a
/// session).
pub(in crate::render) fn with_scratch<R>(
    f: impl FnOnce(&mut serde_json::Map<String, Value>) -> R,
) -> R {
    SESSION.with_borrow_mut(|s| match s {
        Some(s) => f(&mut s.scratch),
        None => f(&mut serde_json::Map::new()),
    })
}

/// A variable of the current session.
pub(in crate::render) fn get_var(name: &str) -> Option<Value> {
    SESSION.with_borrow(|s| s.as_ref().and_then(|s| s.vars.get(name).cloned()))
}

#[cfg(test)]
mod tests {
    use super::super::model::{Go, go, int, string_value, tag};
    use super::{decode_bytes, output_bytes, start};
    use serde_json::json;
    #[test]
    fn bytes_that_are_not_utf8_round_trip_through_a_string() {
        let _session = start();
        let bytes = b"ok\xff\xfe\x00end\xc3";
        let Some(text) = string_value(bytes).as_str().map(str::to_owned) else {
            panic!("a string");
        };
        assert!(text.starts_with("ok"));
        assert_eq!(output_bytes(text.clone()), bytes);
        assert!(matches!(go(&json!(text)), Go::Str(b) if b.as_ref() == bytes));
    }

    #[test]
    fn data_cannot_forge_a_marker_or_a_tag() {
        let session = start();
        // A marker of another render (or one guessed) is text.
        let forged = "\u{FDD0}00000000000000000000000000000000[ff]\u{FDD0}";
        assert_eq!(output_bytes(forged.to_owned()), forged.as_bytes());
        assert_eq!(decode_bytes(forged, "other").as_ref(), forged.as_bytes());
        let fake = json!({"\u{FDD0}go": "00000000000000000000000000000000", "t": "int", "v": 1});
        assert!(matches!(go(&fake), Go::Map(_)));
        assert!(matches!(go(&int(7)), Go::Int(7)));
        // A tag from an earlier session is plain data in the next.
        let old = tag("int", json!(1));
        drop(session);
        let _next = start();
        assert!(matches!(go(&old), Go::Map(_)));
    }
}
