//! Vault's numbers as Vault wrote them.
//!
//! Go decodes Vault's data with `UseNumber`: a number is the text Vault
//! sent, `1E5` as much as `1.50`, and consul-template prints that text.
//! `serde_json` (with `arbitrary_precision`) keeps a number's digits but
//! writes its exponent as `e+5` whatever Vault wrote (`1E5`, `1e5`,
//! `1e+5`), so a response is parsed in two steps: `serde_json`'s parse, then
//! a scan of the raw text that puts back the text of every number with an
//! exponent.

use serde_json::{Number, Value};

/// Parses a Vault response body, keeping every number's text as sent;
/// `None` if it is not JSON.
pub fn parse_response(raw: &[u8]) -> Option<Value> {
    let mut value: Value = serde_json::from_slice(raw).ok()?;
    if raw.iter().any(|b| matches!(b, b'e' | b'E')) {
        restore_exponents(raw, &mut value);
    }
    Some(value)
}

/// Where the scan is: inside an object (the current key) or a list (the
/// current position).
enum Frame {
    Object(Option<String>),
    List(usize),
}

/// Scans `raw` (valid JSON: `serde_json` parsed it) for numbers written with
/// an exponent and puts their text into `value` at the same place.
fn restore_exponents(raw: &[u8], value: &mut Value) {
    let mut frames: Vec<Frame> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'{' => {
                frames.push(Frame::Object(None));
                expect_key = true;
            }
            b'[' => {
                frames.push(Frame::List(0));
                expect_key = false;
            }
            b'}' | b']' => {
                frames.pop();
            }
            b',' => match frames.last_mut() {
                Some(Frame::List(at)) => *at += 1,
                Some(Frame::Object(_)) => expect_key = true,
                None => {}
            },
            b'"' => {
                let end = string_end(raw, i);
                if expect_key {
                    if let Some(Frame::Object(key)) = frames.last_mut() {
                        *key = serde_json::from_slice(&raw[i..=end]).ok();
                    }
                    expect_key = false;
                }
                i = end;
            }
            b'-' | b'0'..=b'9' => {
                let end = raw[i..]
                    .iter()
                    .position(|b| !matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                    .map_or(raw.len(), |p| i + p);
                let text = std::str::from_utf8(&raw[i..end]).unwrap_or_default();
                if text.contains(['e', 'E']) {
                    put_back(value, &frames, text);
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
}

/// The index of the `"` closing the string that starts at `start`.
fn string_end(raw: &[u8], start: usize) -> usize {
    let mut j = start + 1;
    while j < raw.len() {
        match raw[j] {
            b'\\' => j += 2,
            b'"' => return j,
            _ => j += 1,
        }
    }
    raw.len() - 1
}

/// Replaces the number at the scan's place with `text`, if the parsed
/// value there is that number (a repeated key's last value wins in
/// `serde_json`, as in Go, and may be another).
fn put_back(value: &mut Value, frames: &[Frame], text: &str) {
    let mut at = value;
    for frame in frames {
        let next = match (frame, at) {
            (Frame::Object(Some(key)), Value::Object(map)) => map.get_mut(key),
            (Frame::List(i), Value::Array(items)) => items.get_mut(*i),
            _ => None,
        };
        let Some(next) = next else {
            return;
        };
        at = next;
    }
    let same = serde_json::from_str::<Number>(text).ok();
    if let Value::Number(n) = at
        && same.as_ref() == Some(n)
    {
        // serde_json's way to hold a number's exact text (its own tests use
        // it); the text is one serde_json has just parsed as a number.
        *n = Number::from_string_unchecked(text.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::parse_response;

    #[test]
    fn exponents_keep_the_text_vault_sent() {
        let raw =
            br#"{"data": {"a": 1E5, "b": [1e5, 2.5E-3, {"c": 1e+5}], "s": "1E5", "n": 1.50}}"#;
        let value = parse_response(raw).unwrap();
        assert_eq!(
            serde_json::to_string(&value).unwrap(),
            r#"{"data":{"a":1E5,"b":[1e5,2.5E-3,{"c":1e+5}],"n":1.50,"s":"1E5"}}"#
        );
        // A repeated key: the last value wins, untouched by an earlier one.
        let value = parse_response(br#"{"a": 1E5, "a": 7}"#).unwrap();
        assert_eq!(value["a"].to_string(), "7");
        assert!(parse_response(b"{").is_none());
    }
}
