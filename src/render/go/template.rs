//! text/template's own evaluation over the Go model
//! ([`super::model`]): fields (`.A.B`, on maps, consul-template's
//! structs and `json.Number`'s methods), `index`, `len`, `slice`, `range`,
//! printing an action, and capturing a named template's output for
//! `executeTemplate`.

use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, Renderable,
    ScopedJson,
};
use serde_json::Value;

use super::clock::Reading;
use super::helper::{fail, go_helper, raise, result};
use super::model::{self, Go, go};
use crate::render::budget;

/// `.key` on a value, as text/template's `evalField` does it.
fn field(base: &Go<'_>, key: &str, missing_error: bool) -> Result<Value, String> {
    let missing = || {
        if missing_error {
            Err(format!("map has no entry for key {key:?}"))
        } else {
            Ok(Value::Null)
        }
    };
    match base {
        Go::Map(map) => map.get(key).map_or_else(missing, |v| Ok(v.clone())),
        Go::NilMap => missing(),
        Go::AnyMap(pairs) => model::pairs(pairs)
            .find(|(k, _)| matches!(k, Go::Str(s) if s.as_ref() == key.as_bytes()))
            .map_or_else(missing, |(_, v)| Ok(model::value(&v))),
        Go::Secret(response) => secret_field(response, key),
        Go::Pki(found) => match key {
            "Cert" | "Key" | "CA" => Ok(found
                .get(key)
                .cloned()
                .unwrap_or(Value::String(String::new()))),
            "CAChain" => Ok(model::strings(
                found
                    .get("CAChain")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            )),
            // consul-template's PemEncoded has a `Data` method giving itself.
            "Data" => Ok(model::pki((*found).clone())),
            _ => Err(format!(
                "can't evaluate field {key} in type dependency.PemEncoded"
            )),
        },
        Go::Number(n) => match key {
            "String" => Ok(Value::String(n.as_str().to_owned())),
            "Int64" => n.as_str().parse::<i64>().map(model::int).map_err(|_| {
                format!(
                    "error calling Int64: strconv.ParseInt: parsing {:?}: invalid syntax",
                    n.as_str()
                )
            }),
            "Float64" => n.as_str().parse::<f64>().map(model::float).map_err(|_| {
                format!(
                    "error calling Float64: strconv.ParseFloat: parsing {:?}: invalid syntax",
                    n.as_str()
                )
            }),
            _ => Err(format!("can't evaluate field {key} in type json.Number")),
        },
        Go::Time(t) => match t.method(key) {
            Some(Reading::Int(n)) => Ok(model::int(n)),
            Some(Reading::Int64(n)) => Ok(model::int64(n)),
            Some(Reading::Text(s)) => Ok(Value::String(s)),
            Some(Reading::Bool(b)) => Ok(Value::Bool(b)),
            Some(Reading::Time(t)) => Ok(model::time(&t)),
            None => Err(format!(
                "can't evaluate field {key} in type time.Time (its methods without arguments: Year, Month, Day, Hour, Minute, Second, Nanosecond, YearDay, Weekday, Unix, UnixMilli, UnixMicro, UnixNano, IsZero, String, UTC, Local; with arguments: Format, AddDate, After, Before, Equal, Compare, Sub)"
            )),
        },
        Go::Semver(v) => semver_field(v, key),
        Go::Nil => Err(format!("nil pointer evaluating interface {{}}.{key}")),
        other => Err(format!(
            "can't evaluate field {key} in type {}",
            model::type_name(other)
        )),
    }
}

/// A `*semver.Version`'s methods without arguments.
fn semver_field(version: &Value, key: &str) -> Result<Value, String> {
    let get = |k: &str| version.get(k).cloned().unwrap_or(Value::Null);
    Ok(match key {
        // uint64s: printed and compared as Go's ints are.
        "Major" | "Minor" | "Patch" => {
            let k = key.to_ascii_lowercase();
            model::int(i64::try_from(get(&k).as_u64().unwrap_or(0)).unwrap_or(i64::MAX))
        }
        "Prerelease" => get("pre"),
        "Metadata" => get("meta"),
        // A method of the pointer only.
        "Original" if !model::semver_is_value(version) => get("orig"),
        "String" => Value::String(model::semver_text(version)),
        // Methods that make a new version.
        "IncMajor" | "IncMinor" | "IncPatch" => {
            return super::sprig::version_method(version, key, &[])
                .unwrap_or_else(|| Err(format!("no method {key}")));
        }
        _ => {
            return Err(format!(
                "can't evaluate field {key} in type {} (of its methods, without arguments: Major, Minor, Patch, Prerelease, Metadata, Original, String, IncMajor, IncMinor, IncPatch; with arguments: LessThan, GreaterThan, Equal, Compare; a semver.Version from IncMajor … has neither Original nor the comparisons, which are the pointer's)",
                if model::semver_is_value(version) {
                    "semver.Version"
                } else {
                    "*semver.Version"
                }
            ));
        }
    })
}

fn secret_field(response: &Value, key: &str) -> Result<Value, String> {
    let get = |k: &str| response.get(k).cloned().unwrap_or(Value::Null);
    Ok(match key {
        "RequestID" | "LeaseID" => {
            let k = if key == "RequestID" {
                "request_id"
            } else {
                "lease_id"
            };
            Value::String(
                response
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            )
        }
        "LeaseDuration" => model::int(
            response
                .get("lease_duration")
                .and_then(Value::as_i64)
                .unwrap_or(0),
        ),
        "Renewable" => Value::Bool(
            response
                .get("renewable")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        ),
        "Data" => match get("data") {
            Value::Object(map) => Value::Object(map),
            _ => model::nil_map(),
        },
        "Warnings" => model::strings(get("warnings").as_array().cloned().unwrap_or_default()),
        "Auth" | "WrapInfo" => {
            let k = if key == "Auth" { "auth" } else { "wrap_info" };
            if get(k).is_null() {
                Value::Null
            } else {
                return Err(format!("the secret's .{key} is not converted"));
            }
        }
        _ => {
            return Err(format!(
                "can't evaluate field {key} in type *dependency.Secret"
            ));
        }
    })
}

go_helper!(Dot, |h| {
    // `(goDot x "A" "B" [missingkey="error"])`.
    let strict = h
        .hash_get("missingkey")
        .is_some_and(|v| v.value().as_str() == Some("error"));
    let mut current = h.param(0).map_or(Value::Null, |p| p.value().clone());
    for p in &h.params()[1..] {
        let key = p.value().as_str().unwrap_or_default();
        let base = go(&current);
        if let Go::Error(_) = base {
            break;
        }
        current = match field(&base, key, strict) {
            Ok(v) => v,
            Err(e) => model::error(e),
        };
    }
    result(current)
});

/// Go's `index`.
fn index(base: &Go<'_>, key: &Go<'_>) -> Result<Value, String> {
    let position = |len: usize| -> Result<usize, String> {
        let n = match key {
            Go::Int(n) | Go::Int64(n) => *n,
            Go::Number(_) | Go::Str(_) => {
                return Err("cannot index slice/array with type string".to_owned());
            }
            Go::Nil => return Err("cannot index slice/array with nil".to_owned()),
            other => {
                return Err(format!(
                    "cannot index slice/array with type {}",
                    model::type_name(other)
                ));
            }
        };
        usize::try_from(n)
            .ok()
            .filter(|&i| i < len)
            .ok_or_else(|| format!("error calling index: index out of range: {n}"))
    };
    match base {
        Go::Map(map) => match key {
            Go::Str(k) => Ok(std::str::from_utf8(k)
                .ok()
                .and_then(|k| map.get(k))
                .cloned()
                .unwrap_or(Value::Null)),
            Go::Nil => Err("value is nil; should be of type string".to_owned()),
            other => Err(format!(
                "value has type {}; should be string",
                model::type_name(other)
            )),
        },
        Go::NilMap => match key {
            Go::Str(_) => Ok(Value::Null),
            _ => Err("value has the wrong type; should be string".to_owned()),
        },
        // Any key: found when of the same type and value.
        Go::AnyMap(pairs) => Ok(model::pairs(pairs)
            .find(|(k, _)| model::deep_equal(k, key))
            .map_or(Value::Null, |(_, v)| model::value(&v))),
        Go::List(items) | Go::Strings(items) => Ok(items[position(items.len())?].clone()),
        Go::Str(bytes) => Ok(model::int(i64::from(bytes[position(bytes.len())?]))),
        Go::Nil => Err("error calling index: index of untyped nil".to_owned()),
        other => Err(format!(
            "error calling index: can't index item of type {}",
            model::type_name(other)
        )),
    }
}

go_helper!(Index, |h| {
    // `(goAt x k1 k2 …)`: `index`.
    let mut current = h.param(0).map_or(Value::Null, |p| p.value().clone());
    for p in &h.params()[1..] {
        let (base, key) = (go(&current), go(p.value()));
        if let Go::Error(_) = base {
            break;
        }
        if let Go::Error(_) = key {
            current = p.value().clone();
            break;
        }
        current = index(&base, &key).unwrap_or_else(model::error);
    }
    result(current)
});

/// Go's `len`: bytes of a string, entries of a list or map.
pub(in crate::render) fn len(value: &Go<'_>) -> Result<usize, String> {
    match value {
        Go::Str(bytes) => Ok(bytes.len()),
        Go::Number(n) => Ok(n.as_str().len()),
        Go::List(items) | Go::Strings(items) => Ok(items.len()),
        Go::Map(map) => Ok(map.len()),
        Go::AnyMap(pairs) => Ok(pairs.len()),
        Go::NilMap => Ok(0),
        Go::Nil => Err("error calling len: len of nil pointer".to_owned()),
        other => Err(format!(
            "error calling len: len of type {}",
            model::type_name(other)
        )),
    }
}

go_helper!(Range, |h| {
    // `(goEach x)`: what `range` iterates, for `{{#each}}`: a list, a
    // map (sorted keys, as Go), `nil` (nothing), an int n (0 … n-1).
    let value = h.param(0).map_or(&Value::Null, |p| p.value());
    let g = go(value);
    raise("range", &g)?;
    match g {
        Go::List(_) | Go::Map(_) => Ok(ScopedJson::Derived(value.clone())),
        Go::Strings(items) => result(Value::Array(items.to_vec())),
        Go::Nil | Go::NilMap => Ok(ScopedJson::Derived(Value::Array(Vec::new()))),
        // Handlebars' keys are text: string keys as they are; keys of
        // other types as range keys `goInt` reads back (see
        // [`model::range_key`]), which also keep Go's order.
        Go::AnyMap(pairs) => {
            let sorted = model::sorted_pairs(pairs);
            let typed = sorted.iter().any(|(k, _)| !matches!(k, Go::Str(_)));
            let mut map = serde_json::Map::new();
            for (i, (k, v)) in sorted.iter().enumerate() {
                let key = match k {
                    Go::Str(s) if !typed => super::args::lossy(s).into_owned(),
                    other => model::range_key(i, &model::value(other)),
                };
                map.insert(key, model::value(v));
            }
            Ok(ScopedJson::Derived(Value::Object(map)))
        }
        Go::Int(n) => {
            let n = u32::try_from(n).map_err(|_| fail("range over a negative or huge int"))?;
            budget::charge(u64::from(n), [])?;
            Ok(ScopedJson::Derived(Value::Array(
                (0..i64::from(n)).map(model::int).collect(),
            )))
        }
        other => Err(fail(format!(
            "range can't iterate over {}",
            model::type_name(&other)
        ))),
    }
});

go_helper!(Print, |h| {
    // `{{goOut x}}`: what `{{ x }}` writes.
    let value = go(h.param(0).map_or(&Value::Null, |p| p.value()));
    let bytes = super::fmt::print_action(&value).map_err(fail)?;
    result(model::string_value(&bytes))
});

/// `{{#goCapture "var"}}…{{/goCapture}}`: renders its block into the
/// variable (as a Go string) instead of the output: `executeTemplate`.
pub(in crate::render) struct Capture;

impl HelperDef for Capture {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        _: &mut dyn Output,
    ) -> HelperResult {
        budget::charge_call(h)?;
        let name = h
            .param(0)
            .and_then(|p| p.value().as_str())
            .unwrap_or_default()
            .to_owned();
        let text = match h.template() {
            Some(t) => t.renders(r, ctx, rc)?,
            None => String::new(),
        };
        if text.len() > crate::render::MAX_RENDERED_BYTES {
            return Err(fail("executeTemplate's output is too large"));
        }
        super::session::set_var(name, Value::String(text));
        Ok(())
    }
}

/// Registers `goDot`, `goAt` (index), `goEach` (range), `goOut` (print)
/// and `goCapture`.
pub(in crate::render) fn register(registry: &mut Handlebars<'static>) {
    registry.register_helper("goDot", Box::new(Dot));
    registry.register_helper("goAt", Box::new(Index));
    registry.register_helper("goEach", Box::new(Range));
    registry.register_helper("goOut", Box::new(Print));
    registry.register_helper("goCapture", Box::new(Capture));
}

/// For the function table: `len`, `index`, `slice`.
pub(in crate::render) fn call(name: &str, args: &[Go<'_>]) -> Option<Result<Value, String>> {
    Some(match (name, args) {
        ("len", [v]) => len(v).map(|n| model::int(i64::try_from(n).unwrap_or(i64::MAX))),
        ("index", [base, keys @ ..]) => {
            let mut current = model::value(base);
            for key in keys {
                current = match index(&go(&current), key) {
                    Ok(v) => v,
                    Err(e) => return Some(Err(e)),
                };
            }
            Ok(current)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::{Go, field, index, len};
    use serde_json::json;

    #[test]
    fn fields_indexes_and_len_are_gos() {
        let _session = super::super::session::start();
        let data = json!({"a": "héllo", "l": [1, 2]});
        let Some(map) = data.as_object() else {
            panic!()
        };
        assert_eq!(field(&Go::Map(map), "a", false), Ok(json!("héllo")));
        assert_eq!(field(&Go::Map(map), "x", false), Ok(json!(null)));
        assert!(field(&Go::Map(map), "x", true).is_err());
        assert!(field(&Go::Nil, "x", false).is_err());
        assert_eq!(len(&Go::Str("héllo".as_bytes().into())), Ok(6));
        assert_eq!(len(&Go::Map(map)), Ok(2));
        assert!(index(&Go::Map(map), &Go::Int(0)).is_err());
        assert_eq!(
            index(&Go::Map(map), &Go::Str(b"l".as_slice().into())),
            Ok(json!([1, 2]))
        );
    }
}
