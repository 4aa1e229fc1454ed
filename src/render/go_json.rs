//! `toGoJson` and `toGoJsonPretty`: JSON as Go's `encoding/json` writes it,
//! which consul-template's `toJSON` and `toJSONPretty` produce.
//!
//! Go escapes `<`, `>`, `&`, U+2028 and U+2029 in strings (HTML-safe
//! output); `serde_json` does not. Everything else matches for values the
//! driver holds: keys sorted (`serde_json`'s map is ordered), the same short
//! escapes (Go ≥ 1.22 writes `\b` and `\f` as `serde_json` does; older Go
//! wrote `\u0008`, `\u000c`), two-space indentation, `{}` and `[]` for empty
//! containers. Numbers are printed from their parsed value, so decimals
//! Vault sent as `1.50` come out as `1.5` (Go keeps Vault's text).
//!
//! `vault-csi-driver convert` turns consul-template's `toJSON` and
//! `toJSONPretty` into these, so a converted template renders the bytes the
//! agent rendered.

use handlebars::{RenderError, RenderErrorReason};
use serde_json::Value;

/// Replaces the characters Go's encoder escapes for HTML safety. They can
/// only occur inside strings in `serde_json`'s output, so a textual pass is
/// exact.
fn html_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

fn failed(name: &str) -> RenderError {
    RenderErrorReason::Other(format!("`{name}` could not encode its argument")).into()
}

/// `toGoJson`: compact JSON as Go's `json.Marshal` writes it.
pub fn to_go_json(name: &'static str, value: &Value) -> Result<Value, RenderError> {
    serde_json::to_string(value)
        .map(|s| Value::String(html_escape(&s)))
        .map_err(|_| failed(name))
}

/// `toGoJsonPretty`: JSON as Go's `json.MarshalIndent(v, "", "  ")` writes it.
pub fn to_go_json_pretty(name: &'static str, value: &Value) -> Result<Value, RenderError> {
    serde_json::to_string_pretty(value)
        .map(|s| Value::String(html_escape(&s)))
        .map_err(|_| failed(name))
}
