//! Go's `encoding/json` over the model, as consul-template's `parseJSON`,
//! `toJSON` and their variants (and Sprig's, which share them) use it:
//! numbers parse as `float64`, HTML characters are escaped unless asked
//! not to be, and a value JSON cannot hold is Go's error.

use serde_json::{Map, Value};

use super::args::{Out, arity, charge, lossy, s};
use super::model::{self, Go, go};
use crate::render::budget;

/// One of the JSON functions; `None` for another name.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    let (pretty, escape_html) = match name {
        "parseJSON" => return Some(arity(name, args, 1).and_then(|()| parse_json(s(&args[0])?))),
        "toJSON" => (false, true),
        "toJSONPretty" => (true, true),
        "toUnescapedJSON" => (false, false),
        "toUnescapedJSONPretty" => (true, false),
        _ => return None,
    };
    Some(arity(name, args, 1).and_then(|()| to_json(&args[0], pretty, escape_html)))
}

pub(super) fn parse_json(src: &[u8]) -> Out {
    if src.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    charge(src.len())?;
    let parsed: Value = serde_json::from_slice(src).map_err(|e| e.to_string())?;
    Ok(floats(parsed))
}

/// Go's `json.Unmarshal` into `interface{}`: numbers are `float64`.
fn floats(value: Value) -> Value {
    match value {
        Value::Number(n) => model::float(n.as_str().parse().unwrap_or(0.0)),
        Value::Array(items) => Value::Array(items.into_iter().map(floats).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, floats(v))).collect()),
        other => other,
    }
}

/// The Go model as the JSON Go's `encoding/json` writes for it.
fn json_value(value: &Go<'_>) -> Result<Value, String> {
    Ok(match value {
        Go::Nil | Go::NilMap => Value::Null,
        Go::Bool(b) => Value::Bool(*b),
        Go::Str(bytes) => Value::String(lossy(bytes).into_owned()),
        Go::Number(n) => Value::Number((*n).clone()),
        Go::Int(n) | Go::Int64(n) => Value::Number((*n).into()),
        Go::Float(f) => {
            if !f.is_finite() {
                return Err(format!("json: unsupported value: {f}"));
            }
            let abs = f.abs();
            let text = if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
                let e = format!("{f:e}");
                let (m, x) = e.split_once('e').unwrap_or((&e, "0"));
                let x: i32 = x.parse().unwrap_or(0);
                format!("{m}e{}{}", if x < 0 { '-' } else { '+' }, x.unsigned_abs())
            } else {
                format!("{f}")
            };
            Value::Number(serde_json::from_str(&text).map_err(|e| e.to_string())?)
        }
        Go::List(items) | Go::Strings(items) => Value::Array(
            items
                .iter()
                .map(|v| json_value(&go(v)))
                .collect::<Result<_, _>>()?,
        ),
        Go::Map(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), json_value(&go(v))?)))
                .collect::<Result<_, String>>()?,
        ),
        Go::Secret(_) | Go::Pki(_) => {
            return Err("JSON of a secret or pkiCert result is not converted".to_owned());
        }
        // As the agent's `encoding/json` writes it: string keys, and int
        // keys as their digits; any other key is an error.
        Go::AnyMap(pairs) => {
            let mut map = Map::new();
            for (k, v) in model::pairs(pairs) {
                let key = match k {
                    Go::Str(s) => lossy(&s).into_owned(),
                    Go::Int(n) | Go::Int64(n) => n.to_string(),
                    _ => {
                        return Err(
                            "json: unsupported value: jsontext: object member name must be a string"
                                .to_owned(),
                        );
                    }
                };
                map.insert(key, json_value(&v)?);
            }
            Value::Object(map)
        }
        // Both marshal as strings: RFC 3339 and the version's text.
        Go::Time(t) => Value::String(t.rfc3339()?),
        Go::Semver(v) => Value::String(model::semver_text(v)),
        Go::Error(m) => return Err(m.to_string()),
    })
}

fn to_json(g: &Go<'_>, pretty: bool, escape_html: bool) -> Out {
    let value = json_value(g)?;
    budget::charge(0, [&value]).map_err(|e| e.to_string())?;
    let out = if pretty {
        serde_json::to_string_pretty(&value)
    } else {
        serde_json::to_string(&value)
    }
    .map_err(|e| e.to_string())?;
    let mut escaped = String::with_capacity(out.len());
    for c in out.chars() {
        match c {
            '<' if escape_html => escaped.push_str("\\u003c"),
            '>' if escape_html => escaped.push_str("\\u003e"),
            '&' if escape_html => escaped.push_str("\\u0026"),
            '\u{2028}' => escaped.push_str("\\u2028"),
            '\u{2029}' => escaped.push_str("\\u2029"),
            c => escaped.push(c),
        }
    }
    Ok(Value::String(escaped))
}
