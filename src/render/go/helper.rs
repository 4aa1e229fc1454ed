//! The glue between the Go model and handlebars: how a helper fails,
//! hands on a result (charged to the render's budget) or raises a Go
//! error, the `go_helper!` macro, and the model's own helpers (variables,
//! constants, consul-template's types, packed arguments).

use handlebars::{Handlebars, RenderError, RenderErrorReason, ScopedJson};
use serde_json::Value;

use super::model::{Go, error, float, go, int, pki, secret, spliced, strings, tag};
use super::session::{get_var, set_var};
use crate::render::budget;

/// The error that fails the render.
pub(in crate::render) fn fail(message: impl Into<String>) -> RenderError {
    RenderErrorReason::Other(message.into()).into()
}

/// Charges a result's size and hands it on.
pub(in crate::render) fn result<'rc>(value: Value) -> Result<ScopedJson<'rc>, RenderError> {
    if let Value::String(s) = &value
        && s.len() > crate::render::MAX_RENDERED_BYTES
    {
        return Err(fail(format!(
            "a helper would produce more than {} bytes",
            crate::render::MAX_RENDERED_BYTES
        )));
    }
    budget::charge(0, [&value])?;
    Ok(ScopedJson::Derived(value))
}

/// Raises a Go error value, naming the helper that used it.
pub(in crate::render) fn raise(what: &str, go: &Go<'_>) -> Result<(), RenderError> {
    if let Go::Error(message) = go {
        return Err(fail(format!("{what}: {message}")));
    }
    Ok(())
}

macro_rules! go_helper {
    ($name:ident, |$h:ident| $body:expr) => {
        /// A helper of the Go model (see the module's docs).
        pub(in crate::render) struct $name;

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
pub(in crate::render) use go_helper;

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
    let value = get_var(name).unwrap_or(Value::Null);
    result(value)
});

go_helper!(Secret, |h| {
    // `(goSecret (secret …))`: the response as consul-template's *Secret.
    let response = h.param(0).map_or(Value::Null, |p| p.value().clone());
    result(secret(response))
});

go_helper!(Secrets, |h| {
    // `(goSecrets (secrets …))`: the list's keys as consul-template's
    // `secrets` gives them, a sorted `[]string` (none when Vault has none).
    let response = h.param(0).map_or(&Value::Null, |p| p.value());
    let mut keys = match response.get("data").and_then(|d| d.get("keys")) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut keys = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(key) => keys.push(key.as_str()),
                    _ => return result(error("vault.list: non-string in list")),
                }
            }
            keys
        }
        Some(_) => return result(error("vault.list: unexpected response")),
    };
    // Sorting compares about n·log n times.
    let n = keys.len() as u64;
    budget::charge_units(n.saturating_mul(u64::from(64 - n.leading_zeros())))?;
    // Go's sort.Strings: byte order, which Rust's `str` order is.
    keys.sort_unstable();
    result(strings(
        keys.into_iter()
            .map(|k| Value::String(k.to_owned()))
            .collect(),
    ))
});

go_helper!(Pki, |h| {
    // `(goPki (pkiCert …))`: pkiCert's result as PemEncoded.
    let found = h.param(0).map_or(Value::Null, |p| p.value().clone());
    result(pki(found))
});

go_helper!(Int, |h| {
    // `(goInt 5)`: an integer constant, or a range key (an int for a
    // list, a string for a map, a typed key for a `parseYAML` map).
    let v = h.param(0).map_or(&Value::Null, |p| p.value());
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => result(int(i)),
            None => result(error(format!("constant {n} overflows int"))),
        },
        Value::String(text) => {
            result(super::model::typed_range_key(text).unwrap_or_else(|| v.clone()))
        }
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

/// Registers the model's own helpers.
pub(in crate::render) fn register(registry: &mut Handlebars<'static>) {
    registry.register_helper("goSet", Box::new(SetVar));
    registry.register_helper("goGet", Box::new(GetVar));
    registry.register_helper("goSecret", Box::new(Secret));
    registry.register_helper("goPki", Box::new(Pki));
    registry.register_helper("goSecrets", Box::new(Secrets));
    registry.register_helper("goInt", Box::new(Int));
    registry.register_helper("goFloat", Box::new(Float));
    registry.register_helper("goArgs", Box::new(Args));
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
