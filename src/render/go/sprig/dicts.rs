//! Dictionaries: Sprig's `dict`, `get`, `set`, `unset`, `hasKey`,
//! `pluck`, `keys`, `values`, `pick`, `omit`, `dig`, `merge`,
//! `mergeOverwrite` and consul-template's `mergeMap`,
//! `mergeMapWithOverride` (both `mergo` 0.3's merge) over Go's
//! `map[string]interface{}`, and `deepCopy`.
//!
//! `set`, `unset` and the merges change their first map in place in Go;
//! here they return the changed map, which the converter writes back to
//! the variable that held it (it converts only calls where no other
//! value holds that map).

use serde_json::{Map, Value};

use super::super::model::{self, Go, go};
use super::conv::{Out, charge, string, string_list, strval};

/// A `map[string]interface{}` parameter, copied.
fn map_of(g: &Go<'_>) -> Result<Map<String, Value>, String> {
    match g {
        Go::Map(map) => Ok((*map).clone()),
        Go::NilMap => Ok(Map::new()),
        other => Err(format!(
            "wrong type for value; expected map[string]interface {{}}; got {}",
            model::type_name(other)
        )),
    }
}

fn keys(rest: &[Go<'_>]) -> Result<Vec<String>, String> {
    rest.iter()
        .map(|k| string(k).map(|b| String::from_utf8_lossy(&b).into_owned()))
        .collect()
}

/// `dict k v …`: keys through `strval`, a missing last value `""`.
fn dict(args: &[Go<'_>]) -> Out {
    let mut map = Map::new();
    for pair in args.chunks(2) {
        let key = strval(&pair[0])?;
        let value = pair
            .get(1)
            .map_or(Value::String(String::new()), model::value);
        map.insert(String::from_utf8_lossy(&key).into_owned(), value);
    }
    Ok(Value::Object(map))
}

/// `dig k… default dict`.
fn dig(path: &[Go<'_>], fallback: &Go<'_>, dict: &Go<'_>) -> Out {
    let path = keys(path)?;
    let mut current = map_of(dict)?;
    for (i, key) in path.iter().enumerate() {
        let Some(step) = current.get(key).cloned() else {
            return Ok(model::value(fallback));
        };
        if i + 1 == path.len() {
            return Ok(step);
        }
        current = match step {
            Value::Object(map) => map,
            _ => {
                return Err(
                    "interface conversion: interface {} is not map[string]interface {}".to_owned(),
                );
            }
        };
    }
    Ok(model::value(fallback))
}

/// Go's map order is random: sorted is one of the orders the agent
/// writes.
fn all_keys(args: &[Go<'_>]) -> Out {
    let mut out = Vec::new();
    for dict in args {
        match dict {
            Go::Map(map) => out.extend(map.keys().map(|k| k.as_bytes().to_vec())),
            Go::NilMap => {}
            other => {
                return Err(format!(
                    "wrong type for value; expected map[string]interface {{}}; got {}",
                    model::type_name(other)
                ));
            }
        }
    }
    Ok(string_list(&out))
}

/// `mergo`'s `isEmptyValue` of a map's element.
fn is_empty(v: &Value) -> bool {
    match go(v) {
        Go::Nil | Go::NilMap => true,
        Go::Str(b) => b.is_empty(),
        Go::Int(n) | Go::Int64(n) => n == 0,
        Go::Float(f) => f == 0.0,
        Go::Bool(b) => !b,
        Go::List(items) | Go::Strings(items) => items.is_empty(),
        Go::Map(map) => map.is_empty(),
        Go::AnyMap(pairs) => pairs.is_empty(),
        Go::Number(_) | Go::Secret(_) | Go::Pki(_) | Go::Time(_) | Go::Semver(_) | Go::Error(_) => {
            false
        }
    }
}

/// `mergo` 0.3.15's `deepMerge` of two maps: a key `dst` lacks (or holds
/// an empty value for) takes `src`'s; with `overwrite`, `src`'s value
/// wins, but two maps are merged key by key (in place).
fn deep_merge(
    dst: &mut Map<String, Value>,
    src: &Map<String, Value>,
    overwrite: bool,
    depth: usize,
) -> Result<(), String> {
    if depth > 64 {
        return Err("merge: maps nested more than 64 deep".to_owned());
    }
    charge(src.len() * 16)?;
    for (key, s) in src {
        let src_kind = go(s);
        if matches!(src_kind, Go::Nil) {
            if overwrite {
                dst.insert(key.clone(), Value::Null);
            }
            continue;
        }
        let d = dst.get(key);
        let d_present_full = d.is_some_and(|d| !is_empty(d));
        match src_kind {
            Go::Map(src_map) => {
                let d_map = d.is_some_and(|d| matches!(go(d), Go::Map(_)));
                if d_map && let Some(Value::Object(inner)) = dst.get_mut(key) {
                    deep_merge(inner, src_map, overwrite, depth + 1)?;
                }
                // A map merged into a map stays; a value of another kind
                // is replaced only with `overwrite` (or when empty).
                if d_present_full && d_map {
                    continue;
                }
            }
            Go::List(_) | Go::Strings(_) if d_present_full => {
                if overwrite {
                    dst.insert(key.clone(), s.clone());
                }
                continue;
            }
            _ => {}
        }
        if overwrite || !d_present_full {
            dst.insert(key.clone(), s.clone());
        }
    }
    Ok(())
}

/// A `map[string]interface{}` parameter of a merge (a nil map is one Go
/// makes anew).
fn merge_map(g: &Go<'_>) -> Result<Map<String, Value>, String> {
    map_of(g)
}

/// `merge`, `mergeOverwrite` and their `must` forms; `mergeMap`,
/// `mergeMapWithOverride`.
fn merge(name: &str, args: &[Go<'_>]) -> Out {
    let Some((dst, srcs)) = args.split_first() else {
        return Err(format!(
            "wrong number of args for {name}: want at least 1 got 0"
        ));
    };
    let overwrite = matches!(
        name,
        "sprig_mergeOverwrite" | "sprig_mustMergeOverwrite" | "mergeMapWithOverride"
    );
    if name.starts_with("mergeMap") && srcs.len() != 1 {
        return Err(format!(
            "wrong number of args for {name}: want 2 got {}",
            args.len()
        ));
    }
    let mut out = merge_map(dst)?;
    for src in srcs {
        let src = merge_map(src)?;
        deep_merge(&mut out, &src, overwrite, 0)?;
    }
    Ok(Value::Object(out))
}

/// `set`, `unset`, `pluck`.
fn change(name: &str, args: &[Go<'_>]) -> Out {
    match (name, args) {
        ("sprig_set", [dict, key, value]) => {
            let (mut map, key) = (map_of(dict)?, string(key)?);
            map.insert(
                String::from_utf8_lossy(&key).into_owned(),
                model::value(value),
            );
            Ok(Value::Object(map))
        }
        ("sprig_unset", [dict, key]) => {
            let (mut map, key) = (map_of(dict)?, string(key)?);
            map.remove(String::from_utf8_lossy(&key).as_ref());
            Ok(Value::Object(map))
        }
        ("sprig_pluck", [key, dicts @ ..]) => {
            let key = String::from_utf8_lossy(&string(key)?).into_owned();
            let mut out = Vec::new();
            for dict in dicts {
                if let Some(v) = map_of(dict)?.get(&key) {
                    out.push(v.clone());
                }
            }
            Ok(Value::Array(out))
        }
        _ => Err(format!("wrong number of args for {name}")),
    }
}

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    Some(match (name, args) {
        ("sprig_dict", _) => dict(args),
        ("sprig_set" | "sprig_unset" | "sprig_pluck", _) => change(name, args),
        (
            "sprig_merge"
            | "sprig_mustMerge"
            | "sprig_mergeOverwrite"
            | "sprig_mustMergeOverwrite"
            | "mergeMap"
            | "mergeMapWithOverride",
            _,
        ) => merge(name, args),
        // The model's values are copies already.
        ("sprig_deepCopy" | "sprig_mustDeepCopy", [value]) => Ok(model::value(value)),
        ("sprig_keys", _) => all_keys(args),
        ("sprig_values", [dict]) => {
            map_of(dict).map(|m| Value::Array(m.into_iter().map(|(_, v)| v).collect()))
        }
        ("sprig_pick" | "sprig_omit", [dict, rest @ ..]) => {
            let (map, keys) = match (map_of(dict), keys(rest)) {
                (Ok(m), Ok(k)) => (m, k),
                (Err(e), _) | (_, Err(e)) => return Some(Err(e)),
            };
            let keep = name == "sprig_pick";
            Ok(Value::Object(
                map.into_iter()
                    .filter(|(k, _)| keys.contains(k) == keep)
                    .collect(),
            ))
        }
        ("sprig_dig", [path @ .., fallback, dict]) if !path.is_empty() => dig(path, fallback, dict),
        ("sprig_hasKey", [Go::Map(map), key]) => {
            string(key).map(|k| Value::Bool(map.contains_key(String::from_utf8_lossy(&k).as_ref())))
        }
        ("sprig_hasKey", [Go::NilMap, _]) => Ok(Value::Bool(false)),
        ("sprig_get", [Go::Map(map), key]) => string(key).map(|k| {
            map.get(String::from_utf8_lossy(&k).as_ref())
                .cloned()
                .unwrap_or(Value::String(String::new()))
        }),
        ("sprig_get", [Go::NilMap, _]) => Ok(Value::String(String::new())),
        ("sprig_hasKey" | "sprig_get", _) => {
            Err("wrong type for value; expected map[string]interface {}".to_owned())
        }
        (
            "sprig_values" | "sprig_pick" | "sprig_omit" | "sprig_dig" | "sprig_deepCopy"
            | "sprig_mustDeepCopy",
            _,
        ) => Err(format!("wrong number of args for {name}")),
        _ => return None,
    })
}
