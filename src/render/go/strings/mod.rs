//! consul-template's functions over the Go model
//! ([`super::model`]), called as `(goCall "name" args…)`: strings,
//! lists, encodings, parsing, JSON, arithmetic, and the `sprig_*`
//! functions a Vault user reaches, each with Go's types: a function that
//! takes a `string` refuses a `json.Number` (a Vault number) or `nil` as
//! text/template does, so the driver fails where the agent fails.
//!
//! A function's failure is an error value ([`model::error`]), raised
//! where the value is used (so `and`/`or` can skip it, as Go does).

//!
//! One file per group: [`encode`] (printing, base64, digests), [`text`]
//! (strings and membership) and [`numbers`]; consul-template's
//! [`super::scratch`], Go's builtins ([`super::template`]) and JSON
//! ([`super::encoding`]) first, Sprig's ([`super::sprig`]) last.

mod encode;
mod numbers;
mod text;

use serde_json::Value;

use super::args::Out;
use super::helper::{fail, go_helper, result};
use super::model::{self, Go, go};
use crate::render::budget;

/// The groups of this module, in order.
type Group = fn(&str, &[Go<'_>]) -> Option<Out>;

const GROUPS: &[Group] = &[encode::call, text::call, numbers::call];

/// One of consul-template's functions (and Go's builtins `print`,
/// `printf`, `println`, `len`, `index`) over evaluated arguments.
pub(in crate::render) fn call(name: &str, args: &[Go<'_>]) -> Out {
    if let Some(out) = super::template::call(name, args) {
        return out;
    }
    if let Some(out) = super::encoding::call(name, args) {
        return out;
    }
    if let Some(out) = super::yaml::call(name, args) {
        return out;
    }
    if let Some(out) = super::toml::call(name, args) {
        return out;
    }
    if let Some(method) = name.strip_prefix("scratch.") {
        return super::scratch::call(method, args);
    }
    if let Some(method) = name.strip_prefix("method.") {
        return call_method(method, args);
    }
    for group in GROUPS {
        if let Some(out) = group(name, args) {
            return out;
        }
    }
    super::sprig::call(name, args)
        .unwrap_or_else(|| Err(format!("function {name:?} is not available in the driver")))
}

/// `receiver.Method args…` (`method.Method` with the receiver first): the
/// methods of a date and of a version that take arguments.
fn call_method(name: &str, args: &[Go<'_>]) -> Out {
    let Some((receiver, rest)) = args.split_first() else {
        return Err(format!("method {name} has no receiver"));
    };
    let found = match receiver {
        Go::Time(t) => super::sprig::date_method(t, name, rest),
        Go::Semver(v) => super::sprig::version_method(v, name, rest),
        _ => None,
    };
    found.unwrap_or_else(|| {
        Err(format!(
            "{name} is not a method of {} that takes arguments",
            model::type_name(receiver)
        ))
    })
}

go_helper!(Call, |h| {
    // `(goCall "name" args…)`.
    let name = h
        .param(0)
        .and_then(|p| p.value().as_str())
        .unwrap_or_default()
        .to_owned();
    let mut flat: Vec<&Value> = Vec::with_capacity(h.params().len());
    for p in &h.params()[1..] {
        match model::spliced(p.value()) {
            Some(packed) => flat.extend(packed),
            None => flat.push(p.value()),
        }
    }
    let mut args = Vec::with_capacity(flat.len());
    for value in flat {
        let g = go(value);
        if let Go::Error(_) = g {
            return result(value.clone());
        }
        args.push(g);
    }
    match call(&name, &args) {
        Ok(v) => {
            // `mutates="x"`: the function changed the map in variable `x`
            // in place, as Go's maps are shared.
            if let Some(var) = h.hash_get("mutates").and_then(|v| v.value().as_str()) {
                super::session::set_var(var.to_owned(), v.clone());
            }
            result(v)
        }
        Err(e) if e.contains("units of work") || e.contains("took longer") => Err(fail(e)),
        Err(e) => result(model::error(format!("error calling {name}: {e}"))),
    }
});

#[cfg(test)]
mod tests {
    use super::{Go, call};
    use serde_json::{Value, json};

    fn run(name: &str, args: &[Go<'_>]) -> Result<Value, String> {
        let _metered = crate::render::budget::Metered::start(crate::render::budget::Limits::FULL);
        call(name, args)
    }

    fn s(t: &str) -> Go<'_> {
        Go::Str(t.as_bytes().into())
    }

    #[test]
    fn string_functions_are_gos() {
        let _session = super::super::session::start();
        assert_eq!(run("toUpper", &[s("abc")]), Ok(json!("ABC")));
        assert_eq!(
            run("replaceAll", &[s("a"), s("b"), s("banana")]),
            Ok(json!("bbnbnb"))
        );
        assert_eq!(run("trimSpace", &[s("  x \n")]), Ok(json!("x")));
        assert_eq!(run("contains", &[s("an"), s("banana")]), Ok(json!(true)));
        let n: serde_json::Number = serde_json::from_str("5").unwrap();
        assert!(
            run("toUpper", &[Go::Number(&n)]).is_err(),
            "a json.Number is not a string"
        );
        assert!(run("toUpper", &[Go::Nil]).is_err());
        assert_eq!(
            run("indent", &[Go::Int(2), s("a\nb")]),
            Ok(json!("  a\n  b"))
        );
        assert_eq!(
            run("base64Decode", &[s("aGk=\naGk=")]).ok(),
            None,
            "padding inside fails as in Go"
        );
        assert_eq!(run("base64Decode", &[s("aGVs\nbG8=")]), Ok(json!("hello")));
        assert!(matches!(
            run("parseInt", &[s("")]).map(|v| matches!(super::go(&v), Go::Int64(0))),
            Ok(true)
        ));
    }
}
