//! Go's values as the Go-model helpers see them: Vault data stays plain
//! JSON; every other kind Go has (`int`, `float64`, `[]string`,
//! consul-template's `*Secret` and `PemEncoded`, an error raised where it
//! is used) is a JSON object tagged with the session's nonce, which no
//! tenant's data can spell ([`super::session`]).

use serde_json::{Map, Number, Value};
use std::borrow::Cow;

use std::fmt::Write as _;

use super::clock::Time;
use super::session::{MARK, TAG, decode_bytes, nonce};

/// A Go string as JSON: itself when it is UTF-8, else with its other bytes
/// between markers.
pub(in crate::render) fn string_value(bytes: &[u8]) -> Value {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Value::String(text.to_owned());
    }
    let nonce = nonce();
    let mut out = String::with_capacity(bytes.len() * 2);
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            let _ = write!(out, "{MARK}{nonce}[");
            for b in chunk.invalid() {
                let _ = write!(out, "{b:02x}");
            }
            let _ = write!(out, "]{MARK}");
        }
    }
    Value::String(out)
}

/// A Go value, as the helpers see it.
#[derive(Debug, Clone)]
pub(in crate::render) enum Go<'a> {
    /// `nil` (an empty interface).
    Nil,
    /// `bool`.
    Bool(bool),
    /// `string`: its bytes.
    Str(Cow<'a, [u8]>),
    /// `json.Number`: Vault's number, as Vault wrote it.
    Number(&'a Number),
    /// `int`.
    Int(i64),
    /// `int64` (Sprig's integer arithmetic).
    Int64(i64),
    /// `float64`.
    Float(f64),
    /// `[]interface{}`.
    List(&'a [Value]),
    /// `map[string]interface{}`.
    Map(&'a Map<String, Value>),
    /// A `nil` `map[string]interface{}` (a secret without data).
    NilMap,
    /// `map[interface{}]interface{}` (yaml.v2's maps, from `parseYAML`):
    /// `[key, value]` pairs, keys of any scalar kind.
    AnyMap(&'a [Value]),
    /// `[]string`.
    Strings(&'a [Value]),
    /// consul-template's `*Secret`: the Vault response.
    Secret(&'a Value),
    /// consul-template's `PemEncoded` (pkiCert's result).
    Pki(&'a Value),
    /// `time.Time` (Sprig's `toDate`).
    Time(Time),
    /// `*semver.Version` (Sprig's `semver`): `{major, minor, patch, pre,
    /// meta, orig}`; with `"value": true` a `semver.Version` (what
    /// `IncMajor` … return), which lacks the pointer's methods.
    Semver(&'a Value),
    /// An error Go raises where the value is used.
    Error(Cow<'a, str>),
}

/// Reads a JSON value as a Go value.
pub(in crate::render) fn go(value: &Value) -> Go<'_> {
    match value {
        Value::Null => Go::Nil,
        Value::Bool(b) => Go::Bool(*b),
        Value::Number(n) => Go::Number(n),
        Value::String(s) => Go::Str(decode_bytes(s, &nonce())),
        Value::Array(items) => Go::List(items),
        Value::Object(map) => tagged(map).unwrap_or(Go::Map(map)),
    }
}

fn tagged(map: &Map<String, Value>) -> Option<Go<'_>> {
    let mark = map.get(TAG)?.as_str()?;
    if map.len() != 3 || mark.is_empty() || mark != nonce() {
        return None;
    }
    let v = map.get("v")?;
    Some(match (map.get("t")?.as_str()?, v) {
        ("int", Value::Number(n)) => Go::Int(n.as_i64()?),
        ("int64", Value::Number(n)) => Go::Int64(n.as_i64()?),
        ("float64", Value::String(s)) => Go::Float(s.parse().ok()?),
        ("[]string", Value::Array(items)) => Go::Strings(items),
        ("nilmap", _) => Go::NilMap,
        ("anymap", Value::Array(pairs)) => Go::AnyMap(pairs),
        ("secret", v) => Go::Secret(v),
        ("pki", v) => Go::Pki(v),
        ("time", v) => Go::Time(Time::from_json(v)?),
        ("semver", v) => Go::Semver(v),
        ("error", Value::String(s)) => Go::Error(Cow::Borrowed(s)),
        _ => return None,
    })
}

pub(super) fn tag(kind: &str, value: Value) -> Value {
    let mut map = Map::new();
    map.insert(TAG.to_owned(), Value::String(nonce()));
    map.insert("t".to_owned(), Value::String(kind.to_owned()));
    map.insert("v".to_owned(), value);
    Value::Object(map)
}

/// A Go `int`.
pub(in crate::render) fn int(n: i64) -> Value {
    tag("int", Value::Number(n.into()))
}

/// A Go `int64`.
pub(in crate::render) fn int64(n: i64) -> Value {
    tag("int64", Value::Number(n.into()))
}

/// A Go `float64`.
pub(in crate::render) fn float(f: f64) -> Value {
    tag("float64", Value::String(format!("{f:?}")))
}

/// A Go `[]string`.
pub(in crate::render) fn strings(items: Vec<Value>) -> Value {
    tag("[]string", Value::Array(items))
}

/// A Go error, raised where the value is used.
pub(in crate::render) fn error(message: impl Into<String>) -> Value {
    tag("error", Value::String(message.into()))
}

/// consul-template's `*Secret` around a Vault response.
pub(in crate::render) fn secret(response: Value) -> Value {
    tag("secret", response)
}

/// consul-template's `PemEncoded` around pkiCert's result.
pub(in crate::render) fn pki(result: Value) -> Value {
    tag("pki", result)
}

/// A `time.Time`.
pub(in crate::render) fn time(t: &Time) -> Value {
    tag("time", t.to_json())
}

/// A `*semver.Version`.
pub(in crate::render) fn semver(version: Value) -> Value {
    tag("semver", version)
}

/// Whether a version of the model is a `semver.Version`, not a pointer.
pub(in crate::render) fn semver_is_value(version: &Value) -> bool {
    version
        .get("value")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// `(*semver.Version).String()`: the version as parsed, `v` and missing
/// parts filled in (`v1.2` is `1.2.0`).
pub(in crate::render) fn semver_text(version: &Value) -> String {
    let text = |k: &str| version.get(k).and_then(Value::as_str).unwrap_or("");
    let num = |k: &str| version.get(k).and_then(Value::as_u64).unwrap_or(0);
    let mut out = format!("{}.{}.{}", num("major"), num("minor"), num("patch"));
    if !text("pre").is_empty() {
        let _ = write!(out, "-{}", text("pre"));
    }
    if !text("meta").is_empty() {
        let _ = write!(out, "+{}", text("meta"));
    }
    out
}

/// A `map[interface{}]interface{}` of `(key, value)` pairs.
pub(in crate::render) fn any_map(pairs: Vec<(Value, Value)>) -> Value {
    tag(
        "anymap",
        Value::Array(
            pairs
                .into_iter()
                .map(|(k, v)| Value::Array(vec![k, v]))
                .collect(),
        ),
    )
}

/// The `(key, value)` pairs of a `map[interface{}]interface{}`.
pub(in crate::render) fn pairs(pairs: &[Value]) -> impl Iterator<Item = (Go<'_>, Go<'_>)> {
    pairs.iter().filter_map(|p| match p.as_array()?.as_slice() {
        [k, v] => Some((go(k), go(v))),
        _ => None,
    })
}

/// The pairs of a `map[interface{}]interface{}` in the order Go's `fmt`
/// and `range` visit them (`internal/fmtsort`): `nil` first, then by type,
/// then by value. Go orders types by the address of their descriptors in
/// the binary; in OpenBao 2.7's agent that is `string`, `int`, `float64`,
/// `bool` (the agent-oracle test holds the driver to it).
pub(in crate::render) fn sorted_pairs(pairs: &[Value]) -> Vec<(Go<'_>, Go<'_>)> {
    use std::cmp::Ordering;
    let rank = |k: &Go<'_>| match k {
        Go::Nil => 0,
        Go::Str(_) => 1,
        Go::Int(_) | Go::Int64(_) => 2,
        Go::Float(_) => 3,
        Go::Bool(_) => 4,
        _ => 5,
    };
    let mut out: Vec<(Go<'_>, Go<'_>)> = self::pairs(pairs).collect();
    out.sort_by(|(a, _), (b, _)| match (a, b) {
        _ if rank(a) != rank(b) => rank(a).cmp(&rank(b)),
        (Go::Str(x), Go::Str(y)) => x.cmp(y),
        (Go::Int(x) | Go::Int64(x), Go::Int(y) | Go::Int64(y)) => x.cmp(y),
        (Go::Bool(x), Go::Bool(y)) => x.cmp(y),
        (Go::Float(x), Go::Float(y)) => match (x.is_nan(), y.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            _ => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        },
        _ => Ordering::Equal,
    });
    out
}

/// A `range` key that is not a string (a `parseYAML` map's int, float,
/// bool or `nil` key), as the text handlebars iterates by: the session's
/// marker and nonce (so no data can spell one), the position (so the
/// text sorts in Go's order), and the key itself, which [`typed_range_key`]
/// reads back.
pub(in crate::render) fn range_key(position: usize, key: &Value) -> String {
    format!("{MARK}{}#{position:08}:{key}", nonce())
}

/// The key [`range_key`] wrote, or `None` for any other text.
pub(in crate::render) fn typed_range_key(text: &str) -> Option<Value> {
    let rest = text.strip_prefix(MARK)?.strip_prefix(nonce().as_str())?;
    let (_, key) = rest.strip_prefix('#')?.split_once(':')?;
    serde_json::from_str(key).ok()
}

/// Go's `reflect.DeepEqual` over the model: same type, same value. For
/// the scalars a map key can be, it is also Go's `==` on `interface{}`
/// keys (a NaN equals nothing).
pub(in crate::render) fn deep_equal(a: &Go<'_>, b: &Go<'_>) -> bool {
    match (a, b) {
        (Go::Nil, Go::Nil) => true,
        (Go::Bool(x), Go::Bool(y)) => x == y,
        (Go::Str(x), Go::Str(y)) => x == y,
        (Go::Number(x), Go::Number(y)) => x.as_str() == y.as_str(),
        (Go::Int(x), Go::Int(y)) | (Go::Int64(x), Go::Int64(y)) => x == y,
        #[allow(clippy::float_cmp)] // DeepEqual compares floats with ==
        (Go::Float(x), Go::Float(y)) => x == y,
        (Go::List(x), Go::List(y)) | (Go::Strings(x), Go::Strings(y)) => x == y,
        (Go::Map(x), Go::Map(y)) => x == y,
        (Go::Time(x), Go::Time(y)) => x == y,
        (Go::Semver(x), Go::Semver(y)) => x == y,
        _ => false,
    }
}

/// A `json.Number` as yaml.v2 and BurntSushi/toml write one: the `int64`
/// it holds, else the `float64` (`strconv.ParseFloat`, out of range
/// failing), else neither.
pub(in crate::render) fn number_as_int_or_float(n: &Number) -> Option<Result<i64, f64>> {
    let text = n.as_str();
    if let Ok(i) = text.parse::<i64>() {
        return Some(Ok(i));
    }
    text.parse::<f64>().ok().filter(|f| f.is_finite()).map(Err)
}

/// A `nil` map.
pub(in crate::render) fn nil_map() -> Value {
    tag("nilmap", Value::Null)
}

/// The arguments `(goArgs …)` packed for a call of more than a tag's
/// parameters, to be spliced into it.
pub(in crate::render) fn spliced(value: &Value) -> Option<&Vec<Value>> {
    let map = value.as_object()?;
    let nonce = nonce();
    (map.len() == 3
        && map.get(TAG).and_then(Value::as_str) == Some(nonce.as_str())
        && !nonce.is_empty()
        && map.get("t").and_then(Value::as_str) == Some("args"))
    .then(|| map.get("v").and_then(Value::as_array))
    .flatten()
}

/// Back to JSON (for values the helpers pass on unchanged).
pub(in crate::render) fn value(go: &Go<'_>) -> Value {
    match go {
        Go::Nil => Value::Null,
        Go::Bool(b) => Value::Bool(*b),
        Go::Str(bytes) => string_value(bytes),
        Go::Number(n) => Value::Number((*n).clone()),
        Go::Int(n) => int(*n),
        Go::Int64(n) => int64(*n),
        Go::Float(f) => float(*f),
        Go::List(items) => Value::Array(items.to_vec()),
        Go::Map(map) => Value::Object((*map).clone()),
        Go::NilMap => nil_map(),
        Go::AnyMap(p) => tag("anymap", Value::Array(p.to_vec())),
        Go::Strings(items) => strings(items.to_vec()),
        Go::Secret(v) => secret((*v).clone()),
        Go::Pki(v) => pki((*v).clone()),
        Go::Time(t) => time(t),
        Go::Semver(v) => semver((*v).clone()),
        Go::Error(m) => error(m.as_ref()),
    }
}

/// What a Go value's type is called in Go's messages.
pub(in crate::render) fn type_name(go: &Go<'_>) -> &'static str {
    match go {
        Go::Nil => "<nil>",
        Go::Bool(_) => "bool",
        Go::Str(_) => "string",
        Go::Number(_) => "json.Number",
        Go::Int(_) => "int",
        Go::Int64(_) => "int64",
        Go::Float(_) => "float64",
        Go::List(_) => "[]interface {}",
        Go::Map(_) | Go::NilMap => "map[string]interface {}",
        Go::AnyMap(_) => "map[interface {}]interface {}",
        Go::Strings(_) => "[]string",
        Go::Secret(_) => "*dependency.Secret",
        Go::Pki(_) => "dependency.PemEncoded",
        Go::Time(_) => "time.Time",
        Go::Semver(v) if semver_is_value(v) => "semver.Version",
        Go::Semver(_) => "*semver.Version",
        Go::Error(_) => "error",
    }
}
