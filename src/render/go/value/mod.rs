//! Go's `text/template` semantics over Vault data: the helpers that
//! `vault-csi-driver convert` puts around every Vault value of a converted
//! consul-template template, so the driver looks values up, prints and
//! compares them exactly as Vault Agent did.
//!
//! consul-template hands a template Vault's data as Go decoded it, with
//! `UseNumber`: `map[string]interface{}`, `[]interface{}`, `string`,
//! `json.Number` (a number is the text Vault sent), `bool` and `nil`. Where
//! Go and handlebars treat such values differently, the bytes of a file
//! differ; these helpers do what Go does instead:
//!
//! | helper | Go | what differs from plain handlebars |
//! |---|---|---|
//! | `(goField x "a" "b" [missingkey="error"] [nilMap=true])` | `x.a.b` | a missing key is Go's `nil` (or an error with `missingkey="error"`, the agent's `error_on_missing_key`); a field of `nil`, of text, a number or a list is an error |
//! | `(goIndex x "a" 1 [nilMap=true])` | `index x "a" 1` | a missing map key is `nil` in both modes; a list position out of range, `nil`, or a key of the wrong kind is an error |
//! | `(goRange x)` | the collection of `range x` | ranging over text, a number or a boolean is an error, not an empty loop |
//! | `{{goPrint x [nilMap=true]}}` | `{{ x }}` | `nil` prints `<no value>`; numbers print as Vault sent them (`1.50`); lists print `[a b]`, maps `map[k:v]` with sorted keys |
//! | `{{goPrintf "%s" x [int=true] [nilMap=true]}}` | `printf "%s" x` | Go's `fmt` for the verbs `%v`, `%s`, `%d`, `%t`, wrong verbs included (`%!d(json.Number=5)`) |
//! | `(goEq x "s" [int=true])` | `eq x "s"` | a number equals its text; a boolean, list or map compared with text is an error |
//!
//! `nilMap=true` marks a secret's `.Data`, a Go map that is `nil`, not an
//! empty interface, when the response has no data. `int=true` marks a
//! number that Go holds as an `int` (a range index, `.LeaseDuration`), not
//! a `json.Number`.
//!
//! A number keeps the text Vault sent, exponents included
//! (`go_number::parse_response`).
//!
//! Errors name what went wrong and the field or key from the template,
//! never a value.

use handlebars::{
    Context, Handlebars, Helper, HelperDef, PathAndJson, RenderContext, RenderError,
    RenderErrorReason, ScopedJson,
};
use serde_json::Value;

use crate::render::budget::{self, Stop};

/// Go's `nil`: a missing map key (in the agent's default mode) or JSON
/// `null`, which Go decodes to the same `nil` interface.
pub(super) static NIL: Value = Value::Null;

/// Why a helper failed; where Go fails too, the agent would not have
/// rendered the file either.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoError {
    /// `.key` of a map without it, with `missingkey="error"`.
    #[error("map has no entry for key {0:?} (error_on_missing_key)")]
    MissingKey(String),
    /// `.key` of `nil`.
    #[error("nil pointer evaluating .{0} (the value is null or missing)")]
    FieldOfNil(String),
    /// `.key` of a value that is not a map.
    #[error("can't evaluate field {key} of {kind}")]
    FieldOf {
        /// The field.
        key: String,
        /// What the value was.
        kind: &'static str,
    },
    /// `index` of `nil`.
    #[error("index of nil (the value is null or missing)")]
    IndexOfNil,
    /// `index` with a key of the wrong kind, or of a value that cannot be
    /// indexed.
    #[error("cannot index {kind} with {key}")]
    IndexWith {
        /// What the value was.
        kind: &'static str,
        /// The key or position, as written in the template.
        key: String,
    },
    /// `index` past the end of a list.
    #[error("index out of range: {0}")]
    OutOfRange(u64),
    /// `index` of text by position: Go gives a byte, which the driver does
    /// not convert.
    #[error(
        "index {0} of text (or a number, which Go holds as text) gives a byte in Go; the driver does not convert it"
    )]
    IndexOfText(u64),
    /// `range` over something that is not a collection.
    #[error("range can't iterate over {0}")]
    Range(&'static str),
    /// A comparison Go refuses.
    #[error("incompatible types for comparison ({0} and {1})")]
    Compare(&'static str, &'static str),
    /// A verb the helper does not implement.
    #[error("printf verb %{0} is not supported (only %v, %s, %d, %t)")]
    Verb(char),
    /// A value that Go holds as an `int` is not an integer.
    #[error("expected an integer")]
    NotInt,
    /// A parameter the template engine could not resolve.
    #[error("the value is missing")]
    Missing,
    /// The render stopped at one of its limits (work, time, or the printed
    /// text growing past the largest file).
    #[error("{0}")]
    Stopped(Stop),
}

impl From<Stop> for GoError {
    fn from(stop: Stop) -> Self {
        Self::Stopped(stop)
    }
}

/// What a JSON value is in Go, for messages.
pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nil",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// The text of a number as Vault sent it (`json.Number`).
pub(super) fn number_text(n: &serde_json::Number) -> String {
    // Responses keep every number's text, exponents included
    // (`super::number::parse_response`).
    n.to_string()
}

mod lookup;
mod print;

pub use lookup::{Key, field, index, range};
pub use print::{Num, print, printf};

/// What `eq a b` gives in Go, for `a` of Vault data (or an `int` with
/// [`Num::Int`]) and `b` of Vault data or a template constant.
pub fn eq(a: &Value, a_num: Num, b: &Value) -> Result<bool, GoError> {
    /// `basicKind` of text/template, with `nil` apart (Go's zero value).
    #[derive(PartialEq, Eq)]
    enum Basic {
        Nil,
        Bool,
        Text,
        Int,
        Other,
    }
    let basic = |v: &Value, num: Num| match v {
        Value::Null => Basic::Nil,
        Value::Bool(_) => Basic::Bool,
        Value::Number(_) if num == Num::Int => Basic::Int,
        Value::String(_) | Value::Number(_) => Basic::Text,
        Value::Array(_) | Value::Object(_) => Basic::Other,
    };
    let (ka, kb) = (basic(a, a_num), basic(b, Num::Json));
    if ka != kb {
        // Different kinds: false when one side is nil, else an error.
        return if ka == Basic::Nil || kb == Basic::Nil {
            Ok(false)
        } else {
            Err(GoError::Compare(kind(a), kind(b)))
        };
    }
    let text = |v: &Value| -> Result<String, GoError> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(number_text(n)),
            _ => Ok(String::new()),
        }
    };
    match ka {
        Basic::Bool => Ok(a == b),
        Basic::Text => Ok(text(a)? == text(b)?),
        Basic::Int => Ok(a.as_i64().is_some() && a.as_i64() == b.as_i64()),
        // nil with nil, or two collections: not produced by the converter.
        Basic::Nil | Basic::Other => Err(GoError::Compare(kind(a), kind(b))),
    }
}

// ------------------------------------------------------------- helpers

fn render_error(name: &str, e: &GoError) -> RenderError {
    match e {
        GoError::Stopped(stop) => stop.clone().into(),
        e => RenderErrorReason::Other(format!("`{name}`: {e}")).into(),
    }
}

fn usage(name: &str, what: &str) -> RenderError {
    RenderErrorReason::Other(format!("`{name}` {what}")).into()
}

fn flag(h: &Helper<'_>, name: &str) -> bool {
    h.hash_get(name)
        .and_then(|v| v.value().as_bool())
        .unwrap_or(false)
}

fn param_value<'a>(p: &'a PathAndJson<'_>) -> Option<&'a Value> {
    (!p.is_value_missing()).then(|| p.value())
}

/// The parameter's value as a reference into the render's context, when it
/// is one, with its path there: a result found inside it can then be
/// handed on as a reference too (loops over it copy nothing).
fn in_context<'rc>(
    ctx: &'rc Context,
    param: &PathAndJson<'rc>,
) -> Option<(&'rc Value, Vec<String>)> {
    let path = param.context_path()?;
    let mut value = ctx.data();
    for segment in path {
        value = match value {
            Value::Object(map) => map.get(segment)?,
            Value::Array(list) => list.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    // The same value the engine resolved, not a look-alike.
    std::ptr::eq(value, param.value()).then(|| (value, path.clone()))
}

/// Hands on `found`, a value inside the first parameter reached by `steps`:
/// as a reference into the context when the parameter is one, else a copy.
pub(in crate::render) fn hand_on<'rc>(
    ctx: &'rc Context,
    base: &PathAndJson<'rc>,
    found: &Value,
    steps: &[String],
) -> Result<ScopedJson<'rc>, RenderError> {
    if std::ptr::eq(found, &raw const NIL) {
        return Ok(ScopedJson::Derived(Value::Null));
    }
    if let Some((mut value, mut path)) = in_context(ctx, base) {
        let mut ok = true;
        for step in steps {
            let next = match value {
                Value::Object(map) => map.get(step),
                Value::Array(list) => step.parse::<usize>().ok().and_then(|i| list.get(i)),
                _ => None,
            };
            let Some(next) = next else {
                ok = false;
                break;
            };
            value = next;
            path.push(step.clone());
        }
        if ok && std::ptr::eq(value, found) {
            return Ok(ScopedJson::Context(value, path));
        }
    }
    // A copy: charge its size.
    budget::hold(found)?;
    Ok(ScopedJson::Derived(found.clone()))
}

/// `goField`.
pub(in crate::render) struct Field;

impl HelperDef for Field {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        budget::charge_call(h)?;
        let base = h
            .param(0)
            .ok_or_else(|| usage("goField", "needs a value and field names"))?;
        let mut keys = Vec::new();
        for p in &h.params()[1..] {
            keys.push(
                p.value()
                    .as_str()
                    .ok_or_else(|| usage("goField", "takes field names as strings"))?
                    .to_owned(),
            );
        }
        let missing_key_error = h
            .hash_get("missingkey")
            .is_some_and(|v| v.value().as_str() == Some("error"));
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let found = field(
            param_value(base),
            &refs,
            missing_key_error,
            flag(h, "nilMap"),
        )
        .map_err(|e| render_error("goField", &e))?;
        hand_on(ctx, base, found, &keys)
    }
}

/// `goIndex`.
pub(in crate::render) struct Index;

impl HelperDef for Index {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        budget::charge_call(h)?;
        let base = h
            .param(0)
            .ok_or_else(|| usage("goIndex", "needs a value and keys"))?;
        let mut keys = Vec::new();
        for p in &h.params()[1..] {
            keys.push(match p.value() {
                Value::String(s) => Key::Str(s.clone()),
                Value::Number(n) if n.as_u64().is_some() => Key::Int(n.as_u64().unwrap_or(0)),
                _ => return Err(usage("goIndex", "takes string keys and list positions")),
            });
        }
        let found = index(param_value(base), &keys, flag(h, "nilMap"))
            .map_err(|e| render_error("goIndex", &e))?;
        let steps: Vec<String> = keys
            .iter()
            .map(|k| match k {
                Key::Str(s) => s.clone(),
                Key::Int(i) => i.to_string(),
            })
            .collect();
        hand_on(ctx, base, found, &steps)
    }
}

/// `goRange`.
pub(in crate::render) struct Range;

impl HelperDef for Range {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        budget::charge_call(h)?;
        let [value] = h.params().as_slice() else {
            return Err(usage("goRange", "takes one value"));
        };
        range(param_value(value)).map_err(|e| render_error("goRange", &e))?;
        hand_on(ctx, value, value.value(), &[])
    }
}

/// Checks and charges a helper's text result, as the other helpers do.
fn text_result<'rc>(text: String) -> Result<ScopedJson<'rc>, RenderError> {
    let result = Value::String(text);
    budget::hold(&result)?;
    Ok(ScopedJson::Derived(result))
}

/// `goPrint`.
pub(in crate::render) struct Print;

impl HelperDef for Print {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        budget::charge_call(h)?;
        let [value] = h.params().as_slice() else {
            return Err(usage("goPrint", "takes one value"));
        };
        let text = print(param_value(value), flag(h, "nilMap"))
            .map_err(|e| render_error("goPrint", &e))?;
        text_result(text)
    }
}

/// `goPrintf`.
pub(in crate::render) struct Printf;

impl HelperDef for Printf {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        budget::charge_call(h)?;
        let [format, value] = h.params().as_slice() else {
            return Err(usage("goPrintf", "takes a verb (\"%s\") and one value"));
        };
        let mut chars = format.value().as_str().unwrap_or_default().chars();
        let (Some('%'), Some(verb), None) = (chars.next(), chars.next(), chars.next()) else {
            return Err(usage("goPrintf", "takes a verb such as \"%s\" first"));
        };
        let num = if flag(h, "int") { Num::Int } else { Num::Json };
        let text = match param_value(value) {
            None | Some(Value::Null) if flag(h, "nilMap") => Ok("map[]".to_owned()),
            None => Err(GoError::Missing),
            Some(v) => printf(verb, v, num),
        }
        .map_err(|e| render_error("goPrintf", &e))?;
        text_result(text)
    }
}

/// `goEq`.
pub(in crate::render) struct Eq;

impl HelperDef for Eq {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        budget::charge_call(h)?;
        let [a, b] = h.params().as_slice() else {
            return Err(usage("goEq", "takes two values"));
        };
        let (Some(a), Some(b)) = (param_value(a), param_value(b)) else {
            return Err(render_error("goEq", &GoError::Missing));
        };
        let num = if flag(h, "int") { Num::Int } else { Num::Json };
        let equal = eq(a, num, b).map_err(|e| render_error("goEq", &e))?;
        Ok(ScopedJson::Derived(Value::Bool(equal)))
    }
}

/// Registers the helpers on a registry.
pub(in crate::render) fn register(registry: &mut Handlebars<'static>) {
    registry.register_helper("goField", Box::new(Field));
    registry.register_helper("goIndex", Box::new(Index));
    registry.register_helper("goRange", Box::new(Range));
    registry.register_helper("goPrint", Box::new(Print));
    registry.register_helper("goPrintf", Box::new(Printf));
    registry.register_helper("goEq", Box::new(Eq));
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{GoError, Key, Num, eq, field, index, print, printf, range};

    /// Vault data as the driver parses it: numbers keep their text.
    fn data() -> Value {
        serde_json::from_str(
            r#"{"s": "text", "n": 42, "d": 1.50, "neg0": -0, "big": 123456789012345678901234567890,
                "e": 1E5, "t": true, "f": false, "null": null,
                "list": ["a", 1.0, null, true, {"k": "v"}], "empty": [],
                "map": {"z": "last", "a": [1, 2], "M": null}}"#,
        )
        .unwrap()
    }

    #[test]
    fn numbers_keep_the_text_vault_sent() {
        // serde_json's `arbitrary_precision`: without it `1.50` prints `1.5`.
        let d = data();
        assert_eq!(print(d.get("d"), false).unwrap(), "1.50");
        assert_eq!(print(d.get("neg0"), false).unwrap(), "-0");
        assert_eq!(
            print(d.get("big"), false).unwrap(),
            "123456789012345678901234567890"
        );
        assert_eq!(
            print(d.get("e"), false).unwrap(),
            "1e+5",
            "as serde_json wrote it"
        );
    }

    #[test]
    fn fields_follow_go_in_both_missing_key_modes() {
        let d = data();
        assert_eq!(field(Some(&d), &["s"], false, false), Ok(&json!("text")));
        assert_eq!(field(Some(&d), &["nope"], false, false), Ok(&Value::Null));
        assert_eq!(
            field(Some(&d), &["nope"], true, false),
            Err(GoError::MissingKey("nope".to_owned()))
        );
        // A present null is nil in both modes.
        assert_eq!(field(Some(&d), &["null"], true, false), Ok(&Value::Null));
        // A field of nil fails in both modes (missing, then a field).
        assert_eq!(
            field(Some(&d), &["nope", "x"], false, false),
            Err(GoError::FieldOfNil("x".to_owned()))
        );
        assert_eq!(
            field(Some(&d), &["s", "x"], false, false),
            Err(GoError::FieldOf {
                key: "x".to_owned(),
                kind: "text"
            })
        );
        assert!(field(Some(&d), &["list", "x"], false, false).is_err());
        // A secret without data is a nil map.
        assert_eq!(field(None, &["x"], false, true), Ok(&Value::Null));
        assert_eq!(
            field(Some(&Value::Null), &["x"], false, true),
            Ok(&Value::Null)
        );
        assert!(field(None, &["x"], true, true).is_err());
        assert_eq!(field(None, &["x"], false, false), Err(GoError::Missing));
    }

    #[test]
    fn index_gives_nil_for_a_missing_key_and_fails_like_go() {
        let d = data();
        let s = |k: &str| Key::Str(k.to_owned());
        assert_eq!(index(Some(&d), &[s("nope")], false), Ok(&Value::Null));
        assert_eq!(
            index(Some(&d), &[s("list"), Key::Int(0)], false),
            Ok(&json!("a"))
        );
        assert_eq!(
            index(Some(&d), &[s("list"), Key::Int(5)], false),
            Err(GoError::OutOfRange(5))
        );
        assert_eq!(
            index(Some(&d), &[s("nope"), s("x")], false),
            Err(GoError::IndexOfNil)
        );
        assert_eq!(
            index(Some(&Value::Null), &[s("x")], false),
            Err(GoError::IndexOfNil)
        );
        assert_eq!(index(None, &[s("x")], true), Ok(&Value::Null));
        assert!(index(None, &[Key::Int(0)], true).is_err());
        assert!(index(Some(&d), &[Key::Int(0)], false).is_err());
        assert!(index(Some(&d), &[s("list"), s("x")], false).is_err());
        assert_eq!(
            index(Some(&d), &[s("s"), Key::Int(0)], false),
            Err(GoError::IndexOfText(0))
        );
    }

    #[test]
    fn range_takes_collections_and_nil_only() {
        let d = data();
        for ok in ["list", "map", "null", "empty"] {
            assert_eq!(range(d.get(ok)), Ok(()), "{ok}");
        }
        for bad in ["s", "n", "t"] {
            assert!(range(d.get(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn print_is_gos_action_output() {
        let d = data();
        let p = |k: &str| print(d.get(k), false).unwrap();
        assert_eq!(p("s"), "text");
        assert_eq!(p("n"), "42");
        assert_eq!(p("t"), "true");
        assert_eq!(p("null"), "<no value>");
        assert_eq!(p("list"), "[a 1.0 <nil> true map[k:v]]");
        assert_eq!(p("empty"), "[]");
        assert_eq!(p("map"), "map[M:<nil> a:[1 2] z:last]");
        assert_eq!(print(None, true).unwrap(), "map[]");
        assert_eq!(print(None, false), Err(GoError::Missing));
    }

    #[test]
    fn printf_verbs_are_gos_fmt() {
        let d = data();
        let f = |verb, k: &str| printf(verb, &d[k], Num::Json).unwrap();
        assert_eq!(f('v', "null"), "<nil>");
        assert_eq!(f('s', "null"), "%!s(<nil>)");
        assert_eq!(f('d', "n"), "%!d(json.Number=42)");
        assert_eq!(f('s', "d"), "1.50");
        assert_eq!(f('t', "t"), "true");
        assert_eq!(f('s', "t"), "%!s(bool=true)");
        assert_eq!(f('d', "s"), "%!d(string=text)");
        assert_eq!(
            f('d', "list"),
            "[%!d(string=a) %!d(json.Number=1.0) <nil> %!d(bool=true) map[%!d(string=k):%!d(string=v)]]"
        );
        assert_eq!(f('s', "map"), "map[M:<nil> a:[1 2] z:last]");
        let int = |verb, v: Value| printf(verb, &v, Num::Int).unwrap();
        assert_eq!(int('d', json!(3600)), "3600");
        assert_eq!(int('s', json!(3600)), "%!s(int=3600)");
        assert_eq!(int('d', json!("key")), "%!d(string=key)");
        assert_eq!(printf('x', &json!(1), Num::Json), Err(GoError::Verb('x')));
    }

    #[test]
    fn eq_compares_numbers_as_text_and_refuses_what_go_refuses() {
        let d = data();
        assert_eq!(eq(&d["n"], Num::Json, &json!("42")), Ok(true));
        assert_eq!(eq(&d["d"], Num::Json, &json!("1.5")), Ok(false));
        assert_eq!(eq(&d["s"], Num::Json, &json!("text")), Ok(true));
        assert_eq!(eq(&d["null"], Num::Json, &json!("x")), Ok(false));
        assert_eq!(eq(&d["t"], Num::Json, &json!(true)), Ok(true));
        assert!(eq(&d["t"], Num::Json, &json!("true")).is_err());
        assert!(eq(&d["list"], Num::Json, &json!("x")).is_err());
        assert!(eq(&d["map"], Num::Json, &json!("x")).is_err());
        assert!(eq(&json!(0), Num::Int, &json!("0")).is_err());
        assert_eq!(eq(&json!("k"), Num::Int, &json!("k")), Ok(true));
    }
}
