//! `toGoJson` and `toGoJsonPretty`: JSON as Go's `encoding/json` writes it,
//! which consul-template's `toJSON` and `toJSONPretty` produce.
//!
//! Go escapes `<`, `>`, `&`, U+2028 and U+2029 in strings (HTML-safe
//! output); `serde_json` does not. Everything else matches for values the
//! driver holds: keys sorted (`serde_json`'s map is ordered), the same short
//! escapes (Go ≥ 1.22 writes `\b` and `\f` as `serde_json` does; older Go
//! wrote `\u0008`, `\u000c`), two-space indentation, `{}` and `[]` for empty
//! containers. Numbers are written with the text Vault sent (`1.50`, `1E5`),
//! which the driver's response parser keeps ([`super::number`]), as Go's
//! `json.Number` does.
//!
//! `vault-csi-driver convert` turns consul-template's `toJSON` and
//! `toJSONPretty` into these, so a converted template renders the bytes the
//! agent rendered.

use handlebars::RenderError;
use serde_json::Value;

use crate::render::helpers::{CappedText, encode_json};

/// Replaces the characters Go's encoder escapes for HTML safety. They can
/// only occur inside strings in `serde_json`'s output, so a textual pass is
/// exact. Metered, and refused once the result would be too large.
fn html_escape(name: &'static str, json: &str) -> Result<String, RenderError> {
    let mut out = CappedText::new(name);
    let mut plain = 0;
    for (at, c) in json.char_indices() {
        let escaped = match c {
            '<' => "\\u003c",
            '>' => "\\u003e",
            '&' => "\\u0026",
            '\u{2028}' => "\\u2028",
            '\u{2029}' => "\\u2029",
            _ => continue,
        };
        out.push(&json.as_bytes()[plain..at])?;
        out.push(escaped.as_bytes())?;
        plain = at + c.len_utf8();
    }
    out.push(&json.as_bytes()[plain..])?;
    out.finish()
}

/// `toGoJson`: compact JSON as Go's `json.Marshal` writes it.
pub fn to_go_json(name: &'static str, value: &Value) -> Result<Value, RenderError> {
    let json = encode_json(name, value, false)?;
    html_escape(name, &json).map(Value::String)
}

/// `toGoJsonPretty`: JSON as Go's `json.MarshalIndent(v, "", "  ")` writes it.
pub fn to_go_json_pretty(name: &'static str, value: &Value) -> Result<Value, RenderError> {
    let json = encode_json(name, value, true)?;
    html_escape(name, &json).map(Value::String)
}

#[cfg(test)]
mod tests {
    use super::to_go_json;

    #[test]
    fn numbers_are_written_as_sent_exponents_included() {
        let value: serde_json::Value =
            serde_json::from_str(r#"{"d": 1.50, "z": -0, "l": [2.50]}"#).unwrap();
        assert_eq!(
            to_go_json("toGoJson", &value).unwrap(),
            serde_json::Value::String(r#"{"d":1.50,"l":[2.50],"z":-0}"#.to_owned())
        );
        let exponent = crate::render::parse_response(br#"{"a": [1E5]}"#).unwrap();
        assert_eq!(
            to_go_json("toGoJson", &exponent).unwrap(),
            serde_json::Value::String(r#"{"a":[1E5]}"#.to_owned())
        );
    }
}
