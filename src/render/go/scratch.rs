//! consul-template's `scratch`: a map of values one render of a template
//! keeps (`scratch.Set "k" v`, `scratch.Get "k"`, `scratch.MapSet "k"
//! "mk" v`, `scratch.MapValues "k"` …), in the render's session.

use serde_json::{Map, Value};

use super::args::{Out, arity, lossy, s};
use super::fmt;
use super::model::{self, Go};
use super::session::with_scratch;
use crate::render::budget;

fn key(g: &Go<'_>) -> Result<String, String> {
    s(g).map(|k| lossy(k).into_owned())
}

fn set(args: &[Go<'_>], replace: bool) -> Out {
    let (k, v) = (key(&args[0])?, model::value(&args[1]));
    budget::charge(0, [&v]).map_err(|e| e.to_string())?;
    with_scratch(|scratch| {
        if replace || !scratch.contains_key(&k) {
            scratch.insert(k, v);
        }
    });
    Ok(Value::String(String::new()))
}

fn map_set(args: &[Go<'_>], replace: bool) -> Out {
    let (k, mk, v) = (key(&args[0])?, key(&args[1])?, model::value(&args[2]));
    budget::charge(0, [&v]).map_err(|e| e.to_string())?;
    // Values are read outside the session's borrow (reading one needs
    // the session's nonce).
    let mut map = match with_scratch(|scratch| scratch.get(&k).cloned()) {
        None => Map::new(),
        Some(current) => {
            let is_map = matches!(model::go(&current), Go::Map(_));
            match current {
                Value::Object(map) if is_map => map,
                _ => return Err(format!("{} is not a map", fmt::quote(k.as_bytes(), false))),
            }
        }
    };
    if replace || !map.contains_key(&mk) {
        map.insert(mk, v);
    }
    with_scratch(|scratch| scratch.insert(k, Value::Object(map)));
    Ok(Value::String(String::new()))
}

/// `scratch.Method args…`.
pub(super) fn call(method: &str, args: &[Go<'_>]) -> Out {
    let name = format!("scratch.{method}");
    match method {
        "Key" => {
            arity(&name, args, 1)?;
            let k = key(&args[0])?;
            Ok(Value::Bool(with_scratch(|scratch| {
                scratch.contains_key(&k)
            })))
        }
        "Get" => {
            arity(&name, args, 1)?;
            let k = key(&args[0])?;
            Ok(with_scratch(|scratch| scratch.get(&k).cloned()).unwrap_or(Value::Null))
        }
        "Set" | "SetX" => {
            arity(&name, args, 2)?;
            set(args, method == "Set")
        }
        "MapSet" | "MapSetX" => {
            arity(&name, args, 3)?;
            map_set(args, method == "MapSet")
        }
        "MapValues" => {
            arity(&name, args, 1)?;
            let k = key(&args[0])?;
            // Sorted by key; a key that holds no map gives a nil list.
            let current = with_scratch(|scratch| scratch.get(&k).cloned());
            Ok(match current.as_ref().map(model::go) {
                Some(Go::Map(map)) => Value::Array(map.values().cloned().collect()),
                _ => Value::Array(Vec::new()),
            })
        }
        _ => Err(format!(
            "can't evaluate field {method} in type *template.Scratch"
        )),
    }
}
