//! `toGoJson` and `toGoJsonPretty`: JSON as Go's `encoding/json` writes it,
//! which consul-template's `toJSON` and `toJSONPretty` produce.
//!
//! Go escapes `<`, `>`, `&`, U+2028 and U+2029 in strings (HTML-safe
//! output); `serde_json` does not. Everything else matches for values the
//! driver holds: keys sorted (`serde_json`'s map is ordered), the same short
//! escapes (Go ≥ 1.22 writes `\b` and `\f` as `serde_json` does; older Go
//! wrote `\u0008`, `\u000c`), two-space indentation, `{}` and `[]` for empty
//! containers. Numbers are written with the text Vault sent (`1.50`), which
//! the driver's JSON parser keeps, as Go does; a number with an exponent is
//! refused, because the parser writes every exponent as `e+N`/`e-N` and
//! Go would write `1E5` as sent (see `go_value::number_text`).
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

/// Refuses a value holding a number whose text Go would write otherwise.
fn check_numbers(name: &str, value: &Value) -> Result<(), RenderError> {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Number(n) => {
                if let Err(e) = super::go_value::number_text(n) {
                    return Err(RenderErrorReason::Other(format!("`{name}`: {e}")).into());
                }
            }
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            Value::Null | Value::Bool(_) | Value::String(_) => {}
        }
    }
    Ok(())
}

/// `toGoJson`: compact JSON as Go's `json.Marshal` writes it.
pub fn to_go_json(name: &'static str, value: &Value) -> Result<Value, RenderError> {
    check_numbers(name, value)?;
    serde_json::to_string(value)
        .map(|s| Value::String(html_escape(&s)))
        .map_err(|_| failed(name))
}

/// `toGoJsonPretty`: JSON as Go's `json.MarshalIndent(v, "", "  ")` writes it.
pub fn to_go_json_pretty(name: &'static str, value: &Value) -> Result<Value, RenderError> {
    check_numbers(name, value)?;
    serde_json::to_string_pretty(value)
        .map(|s| Value::String(html_escape(&s)))
        .map_err(|_| failed(name))
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
