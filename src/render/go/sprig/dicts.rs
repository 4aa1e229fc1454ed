//! Dictionaries: Sprig's `dict`, `get`, `hasKey`, `keys`, `values`,
//! `pick`, `omit` and `dig` over Go's `map[string]interface{}`.

use serde_json::{Map, Value};

use super::super::model::{self, Go};
use super::conv::{Out, string, string_list, strval};

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

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    Some(match (name, args) {
        ("sprig_dict", _) => dict(args),
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
        ("sprig_values" | "sprig_pick" | "sprig_omit" | "sprig_dig", _) => {
            Err(format!("wrong number of args for {name}"))
        }
        _ => return None,
    })
}
