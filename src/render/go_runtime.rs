//! Go's values in a converted template: the model under the `go*` helpers
//! that `vault-csi-driver convert` writes for consul-template templates.
//!
//! consul-template's templates hold more kinds of values than JSON has:
//! Vault data (`map[string]interface{}`, `[]interface{}`, `string`,
//! `json.Number`, `bool`, `nil`) but also Go `int`s (`len`, constants),
//! `float64`s (`parseJSON`, float constants), `[]string` (`split`),
//! consul-template's `*Secret` and `PemEncoded` structs, strings that are
//! not UTF-8 (`base64Decode`), and errors that Go only raises if the value
//! is used (`and`/`or` stop at the first value that decides). Vault data
//! stays plain JSON; every other kind is a *tagged* object,
//! `{"\u{FDD0}go": <nonce>, "t": <kind>, "v": <value>}`, and a string's
//! bytes that are not UTF-8 are written inside it between markers,
//! `\u{FDD0}<nonce>[<hex>]\u{FDD0}`, which the render's output turns back
//! into the bytes ([`output_bytes`]).
//!
//! The nonce is random for each file rendered, and the Vault data a render
//! reads is fixed before it starts: no secret can spell a tag or a marker
//! of the render that reads it, so a tenant's data cannot forge a type or
//! a byte. Text that merely looks like a marker is text.
//!
//! The session ([`start`]) also holds the template's variables (`$x :=`),
//! which Go can assign in one block and read after it, something
//! handlebars' block parameters cannot do.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;

use handlebars::{Handlebars, RenderError, RenderErrorReason, ScopedJson};
use serde_json::{Map, Number, Value};

use super::budget;

/// The key that marks a tagged value (its value is the session's nonce).
const TAG: &str = "\u{FDD0}go";
/// Starts and ends a run of bytes that are not UTF-8 inside a string.
const MARK: char = '\u{FDD0}';

/// One file's render: the nonce of its tags and markers, and its
/// variables.
struct Session {
    nonce: String,
    vars: HashMap<String, Value>,
}

thread_local! {
    /// Rendering is synchronous, so a thread-local is an exact per-render
    /// slot (like the `secret` helper's scope).
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

/// Holds a file's session; dropping it ends it.
pub(super) struct Started(());

/// Starts the session of one file's render, with a fresh nonce.
pub(super) fn start() -> Started {
    let nonce = format!("{:032x}", rand::random::<u128>());
    SESSION.set(Some(Session {
        nonce,
        vars: HashMap::new(),
    }));
    Started(())
}

impl Drop for Started {
    fn drop(&mut self) {
        SESSION.set(None);
    }
}

fn nonce() -> String {
    SESSION
        .with_borrow(|s| s.as_ref().map(|s| s.nonce.clone()))
        .unwrap_or_default()
}

/// The bytes of a rendered file: markers of the current session become
/// the bytes they carry.
pub(super) fn output_bytes(text: String) -> Vec<u8> {
    if !text.contains(MARK) {
        return text.into_bytes();
    }
    decode_bytes(&text, &nonce()).into_owned()
}

/// A Go string's bytes from its JSON form.
fn decode_bytes<'a>(text: &'a str, nonce: &str) -> Cow<'a, [u8]> {
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

/// A Go string as JSON: itself when it is UTF-8, else with its other bytes
/// between markers.
pub(super) fn string_value(bytes: &[u8]) -> Value {
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
pub(super) enum Go<'a> {
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
    /// `float64`.
    Float(f64),
    /// `[]interface{}`.
    List(&'a [Value]),
    /// `map[string]interface{}`.
    Map(&'a Map<String, Value>),
    /// A `nil` `map[string]interface{}` (a secret without data).
    NilMap,
    /// `[]string`.
    Strings(&'a [Value]),
    /// consul-template's `*Secret`: the Vault response.
    Secret(&'a Value),
    /// consul-template's `PemEncoded` (pkiCert's result).
    Pki(&'a Value),
    /// An error Go raises where the value is used.
    Error(Cow<'a, str>),
}

/// Reads a JSON value as a Go value.
pub(super) fn go(value: &Value) -> Go<'_> {
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
        ("float64", Value::String(s)) => Go::Float(s.parse().ok()?),
        ("[]string", Value::Array(items)) => Go::Strings(items),
        ("nilmap", _) => Go::NilMap,
        ("secret", v) => Go::Secret(v),
        ("pki", v) => Go::Pki(v),
        ("error", Value::String(s)) => Go::Error(Cow::Borrowed(s)),
        _ => return None,
    })
}

fn tag(kind: &str, value: Value) -> Value {
    let mut map = Map::new();
    map.insert(TAG.to_owned(), Value::String(nonce()));
    map.insert("t".to_owned(), Value::String(kind.to_owned()));
    map.insert("v".to_owned(), value);
    Value::Object(map)
}

/// A Go `int`.
pub(super) fn int(n: i64) -> Value {
    tag("int", Value::Number(n.into()))
}

/// A Go `float64`.
pub(super) fn float(f: f64) -> Value {
    tag("float64", Value::String(format!("{f:?}")))
}

/// A Go `[]string`.
pub(super) fn strings(items: Vec<Value>) -> Value {
    tag("[]string", Value::Array(items))
}

/// A Go error, raised where the value is used.
pub(super) fn error(message: impl Into<String>) -> Value {
    tag("error", Value::String(message.into()))
}

/// consul-template's `*Secret` around a Vault response.
pub(super) fn secret(response: Value) -> Value {
    tag("secret", response)
}

/// consul-template's `PemEncoded` around pkiCert's result.
pub(super) fn pki(result: Value) -> Value {
    tag("pki", result)
}

/// A `nil` map.
pub(super) fn nil_map() -> Value {
    tag("nilmap", Value::Null)
}

/// The arguments `(goArgs …)` packed for a call of more than a tag's
/// parameters, to be spliced into it.
pub(super) fn spliced(value: &Value) -> Option<&Vec<Value>> {
    let map = value.as_object()?;
    let nonce = nonce();
    (map.len() == 3
        && map.get(TAG).and_then(Value::as_str) == Some(nonce.as_str())
        && !nonce.is_empty()
        && map.get("t").and_then(Value::as_str) == Some("args"))
    .then(|| map.get("v").and_then(Value::as_array))
    .flatten()
}

go_helper!(Args, |h| {
    // `(goArgs a b …)`: arguments packed for `goCall`.
    let mut values = Vec::new();
    for p in h.params() {
        match spliced(p.value()) {
            Some(packed) => values.extend(packed.iter().cloned()),
            None => values.push(p.value().clone()),
        }
    }
    result(tag("args", Value::Array(values)))
});

/// Back to JSON (for values the helpers pass on unchanged).
pub(super) fn value(go: &Go<'_>) -> Value {
    match go {
        Go::Nil => Value::Null,
        Go::Bool(b) => Value::Bool(*b),
        Go::Str(bytes) => string_value(bytes),
        Go::Number(n) => Value::Number((*n).clone()),
        Go::Int(n) => int(*n),
        Go::Float(f) => float(*f),
        Go::List(items) => Value::Array(items.to_vec()),
        Go::Map(map) => Value::Object((*map).clone()),
        Go::NilMap => nil_map(),
        Go::Strings(items) => strings(items.to_vec()),
        Go::Secret(v) => secret((*v).clone()),
        Go::Pki(v) => pki((*v).clone()),
        Go::Error(m) => error(m.as_ref()),
    }
}

/// What a Go value's type is called in Go's messages.
pub(super) fn type_name(go: &Go<'_>) -> &'static str {
    match go {
        Go::Nil => "<nil>",
        Go::Bool(_) => "bool",
        Go::Str(_) => "string",
        Go::Number(_) => "json.Number",
        Go::Int(_) => "int",
        Go::Float(_) => "float64",
        Go::List(_) => "[]interface {}",
        Go::Map(_) | Go::NilMap => "map[string]interface {}",
        Go::Strings(_) => "[]string",
        Go::Secret(_) => "*dependency.Secret",
        Go::Pki(_) => "dependency.PemEncoded",
        Go::Error(_) => "error",
    }
}

// ------------------------------------------------------------- helpers

/// The error that fails the render.
pub(super) fn fail(message: impl Into<String>) -> RenderError {
    RenderErrorReason::Other(message.into()).into()
}

/// Charges a result's size and hands it on.
pub(super) fn result<'rc>(value: Value) -> Result<ScopedJson<'rc>, RenderError> {
    if let Value::String(s) = &value
        && s.len() > super::MAX_RENDERED_BYTES
    {
        return Err(fail(format!(
            "a helper would produce more than {} bytes",
            super::MAX_RENDERED_BYTES
        )));
    }
    budget::charge(0, [&value])?;
    Ok(ScopedJson::Derived(value))
}

/// Raises a Go error value, naming the helper that used it.
pub(super) fn raise(what: &str, go: &Go<'_>) -> Result<(), RenderError> {
    if let Go::Error(message) = go {
        return Err(fail(format!("{what}: {message}")));
    }
    Ok(())
}

macro_rules! go_helper {
    ($name:ident, |$h:ident| $body:expr) => {
        /// A helper of the Go model (see the module's docs).
        pub(super) struct $name;

        impl handlebars::HelperDef for $name {
            fn call_inner<'reg: 'rc, 'rc>(
                &self,
                $h: &handlebars::Helper<'rc>,
                _: &'reg handlebars::Handlebars<'reg>,
                _: &'rc handlebars::Context,
                _: &mut handlebars::RenderContext<'reg, 'rc>,
            ) -> Result<handlebars::ScopedJson<'rc>, handlebars::RenderError> {
                budget::charge_call($h)?;
                $body
            }
        }
    };
}
pub(super) use go_helper;

/// Sets a variable of the current session.
pub(super) fn set_var(name: String, value: Value) {
    SESSION.with_borrow_mut(|s| {
        if let Some(s) = s {
            s.vars.insert(name, value);
        }
    });
}

go_helper!(SetVar, |h| {
    // `{{goSet "name" value}}`: `$x := value` or `$x = value`.
    let (Some(name), Some(value)) = (h.param(0), h.param(1)) else {
        return Err(fail("`goSet` takes a name and a value"));
    };
    let name = name.value().as_str().unwrap_or_default().to_owned();
    // `keep=true`: a value kept for a later tag, whose error is raised
    // where it is used.
    let keep = h
        .hash_get("keep")
        .is_some_and(|v| v.value().as_bool() == Some(true));
    if !keep {
        raise("variable", &go(value.value()))?;
    }
    budget::charge(0, [value.value()])?;
    set_var(name, value.value().clone());
    Ok(ScopedJson::Derived(Value::String(String::new())))
});

go_helper!(GetVar, |h| {
    // `(goGet "name")`: a variable's value.
    let name = h
        .param(0)
        .and_then(|p| p.value().as_str())
        .unwrap_or_default();
    let value = SESSION
        .with_borrow(|s| s.as_ref().and_then(|s| s.vars.get(name).cloned()))
        .unwrap_or(Value::Null);
    result(value)
});

go_helper!(Secret, |h| {
    // `(goSecret (secret …))`: the response as consul-template's *Secret.
    let response = h.param(0).map_or(Value::Null, |p| p.value().clone());
    result(secret(response))
});

go_helper!(Pki, |h| {
    // `(goPki (pkiCert …))`: pkiCert's result as PemEncoded.
    let found = h.param(0).map_or(Value::Null, |p| p.value().clone());
    result(pki(found))
});

go_helper!(Int, |h| {
    // `(goInt 5)`: an integer constant, or a range key (an int for a
    // list, a string for a map).
    let v = h.param(0).map_or(&Value::Null, |p| p.value());
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => result(int(i)),
            None => result(error(format!("constant {n} overflows int"))),
        },
        other => result(other.clone()),
    }
});

go_helper!(Float, |h| {
    // `(goFloat "1.5")`: a float constant, as Go parses it.
    let text = h
        .param(0)
        .and_then(|p| p.value().as_str())
        .unwrap_or_default();
    match text.parse::<f64>() {
        Ok(f) => result(float(f)),
        Err(_) => result(error(format!("bad number syntax: {text}"))),
    }
});

/// Registers the model's helpers and the Go functions.
pub(super) fn register(registry: &mut Handlebars<'static>) {
    registry.register_helper("goSet", Box::new(SetVar));
    registry.register_helper("goGet", Box::new(GetVar));
    registry.register_helper("goSecret", Box::new(Secret));
    registry.register_helper("goPki", Box::new(Pki));
    registry.register_helper("goInt", Box::new(Int));
    registry.register_helper("goFloat", Box::new(Float));
    registry.register_helper("goCall", Box::new(super::go_strings::Call));
    registry.register_helper("goArgs", Box::new(Args));
    super::go_truth::register(registry);
    super::go_template::register(registry);
}

#[cfg(test)]
mod tests {
    use super::{Go, decode_bytes, go, int, output_bytes, start, string_value, tag};
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
