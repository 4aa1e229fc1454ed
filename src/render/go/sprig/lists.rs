//! Lists: Sprig's list functions (`list`, `append`, `first`, `uniq`,
//! `slice`, `chunk`, `sortAlpha`, `join`, `split`, `until` …) and
//! consul-template's `loop`.

use serde_json::{Map, Value};

use super::super::model::{self, Go, go};
use super::super::truth::truth;
use super::conv::{
    Out, deep_equal, first, int, list_items, string, string_list, strslice, text, to_int64,
    until_step,
};

fn int_list(items: Vec<i64>) -> Value {
    Value::Array(items.into_iter().map(model::int).collect())
}

/// `loop [start] stop`: the integers from start below stop.
fn counting(args: &[Go<'_>]) -> Out {
    let to64 = |g: &Go<'_>| match g {
        Go::Int(n) | Go::Int64(n) => Ok(*n),
        Go::Str(b) if b.is_empty() => Ok(0),
        Go::Str(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or_else(|| "parseInt: invalid syntax".to_owned()),
        other => Err(format!(
            "loop: bad argument type: {}",
            model::type_name(other)
        )),
    };
    let (start, stop) = match args {
        [stop] => (0, to64(stop)?),
        [start, stop] => (to64(start)?, to64(stop)?),
        _ => {
            return Err(format!(
                "loop: wrong number of arguments, expected 1 or 2, but got {}",
                args.len()
            ));
        }
    };
    let count = u64::try_from(stop.saturating_sub(start)).unwrap_or(0);
    crate::render::budget::charge(count, []).map_err(|e| e.to_string())?;
    Ok(Value::Array((start..stop).map(model::int).collect()))
}

/// Sprig's list functions that build lists.
fn lists(name: &str, args: &[Go<'_>]) -> Out {
    let items = |g: &Go<'_>| list_items(g).map(<[Value]>::to_vec);
    match (name, args) {
        ("sprig_append", [list, v]) => items(list).map(|mut l| {
            l.push(model::value(v));
            Value::Array(l)
        }),
        ("sprig_prepend", [list, v]) => items(list).map(|mut l| {
            l.insert(0, model::value(v));
            Value::Array(l)
        }),
        ("sprig_concat", _) => {
            let mut out = Vec::new();
            for list in args {
                out.extend(items(list)?);
            }
            Ok(Value::Array(out))
        }
        ("sprig_uniq", [list]) => items(list).map(|l| {
            let mut out: Vec<Value> = Vec::new();
            for v in l {
                if !out.iter().any(|o| deep_equal(&go(o), &go(&v))) {
                    out.push(v);
                }
            }
            Value::Array(out)
        }),
        ("sprig_without", [list, omit @ ..]) => items(list).map(|l| {
            Value::Array(
                l.into_iter()
                    .filter(|v| !omit.iter().any(|o| deep_equal(&go(v), o)))
                    .collect(),
            )
        }),
        ("sprig_compact", [list]) => {
            items(list).map(|l| Value::Array(l.into_iter().filter(|v| truth(&go(v))).collect()))
        }
        _ => Err(format!("wrong number of args for {name}")),
    }
}

/// Sprig's `slice` and `chunk`.
fn slicing(name: &str, args: &[Go<'_>]) -> Out {
    match (name, args) {
        ("sprig_slice", [list, bounds @ ..]) => {
            let items = list_items(list)?;
            let mut at = Vec::new();
            for b in bounds {
                at.push(
                    usize::try_from(to_int64(b))
                        .map_err(|_| "slice bounds out of range".to_owned())?,
                );
            }
            let (from, to) = match at.as_slice() {
                [] => (0, items.len()),
                [from] => (*from, items.len()),
                [from, to, ..] => (*from, *to),
            };
            if from > to || to > items.len() {
                return Err(format!("slice bounds out of range [{from}:{to}]"));
            }
            Ok(Value::Array(items[from..to].to_vec()))
        }
        ("sprig_chunk", [size, list]) => {
            let size = usize::try_from(int(size)?)
                .ok()
                .filter(|&s| s > 0)
                .ok_or("chunk size must be positive")?;
            let items = list_items(list)?;
            Ok(Value::Array(
                items
                    .chunks(size)
                    .map(|c| Value::Array(c.to_vec()))
                    .collect(),
            ))
        }
        _ => Err(format!("wrong number of args for {name}")),
    }
}

/// Sprig's `split` and `splitn`: a map of `_0`, `_1` …
fn split_map(name: &str, args: &[Go<'_>]) -> Out {
    let parts = match (name, args) {
        ("sprig_split", [sep, orig]) => {
            string(sep).and_then(|sep| string(orig).map(|o| (sep, o, None)))
        }
        ("sprig_splitn", [sep, n, orig]) => {
            string(sep).and_then(|sep| int(n).and_then(|n| string(orig).map(|o| (sep, o, Some(n)))))
        }
        _ => Err(format!("wrong number of args for {name}")),
    };
    parts.map(|(sep, orig, n)| {
        let orig = String::from_utf8_lossy(&orig).into_owned();
        let sep = String::from_utf8_lossy(&sep).into_owned();
        let chars: Vec<String> = orig.chars().map(String::from).collect();
        let pieces: Vec<&str> = match n {
            // An empty separator splits after each character.
            _ if sep.is_empty() => chars.iter().map(String::as_str).collect(),
            Some(n) if n < 0 => orig.split(sep.as_str()).collect(),
            Some(n) => orig
                .splitn(usize::try_from(n).unwrap_or(0), sep.as_str())
                .collect(),
            None => orig.split(sep.as_str()).collect(),
        };
        let map: Map<String, Value> = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("_{i}"), Value::String((*p).to_owned())))
            .collect();
        Value::Object(map)
    })
}

/// Sprig's functions that take one list.
fn one_list(name: &str, list: &Go<'_>) -> Option<Out> {
    Some(match name {
        "sprig_first" | "sprig_last" => list_items(list).map(|items| {
            let item = if name == "sprig_first" {
                items.first()
            } else {
                items.last()
            };
            item.cloned().unwrap_or(Value::Null)
        }),
        "sprig_rest" | "sprig_initial" => list_items(list).map(|items| {
            match (name, items.len()) {
                // Sprig returns a nil []interface{}: it prints `[]`.
                (_, 0) => Value::Array(Vec::new()),
                ("sprig_rest", _) => Value::Array(items[1..].to_vec()),
                _ => Value::Array(items[..items.len() - 1].to_vec()),
            }
        }),
        "sprig_reverse" => {
            list_items(list).map(|items| Value::Array(items.iter().rev().cloned().collect()))
        }
        "sprig_sortAlpha" => match list {
            Go::Nil => Ok(string_list(&[b"<nil>".to_vec()])),
            list => strslice(list).map(|mut l| {
                l.sort();
                string_list(&l)
            }),
        },
        "sprig_toStrings" => strslice(list).map(|l| string_list(&l)),
        _ => return None,
    })
}

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    if let Some(out) = one_list(name, &first(args)) {
        return Some(out);
    }
    Some(match name {
        "sprig_append" | "sprig_push" | "sprig_prepend" | "sprig_concat" | "sprig_uniq"
        | "sprig_without" | "sprig_compact" => lists(name, args),
        "sprig_slice" | "sprig_chunk" => slicing(name, args),
        "sprig_split" | "sprig_splitn" => split_map(name, args),
        "sprig_join" => match args {
            [sep, list] => {
                string(sep).and_then(|sep| strslice(list).map(|l| text(&l.join(sep.as_slice()))))
            }
            _ => Err("wrong number of args for join".to_owned()),
        },
        "sprig_until" => int(&first(args))
            .and_then(|n| until_step(0, n, if n < 0 { -1 } else { 1 }).map(int_list)),
        "sprig_untilStep" => match args {
            [from, to, by] => int(from)
                .and_then(|start| {
                    int(to).and_then(|stop| int(by).and_then(|step| until_step(start, stop, step)))
                })
                .map(int_list),
            _ => Err("wrong number of args for untilStep".to_owned()),
        },
        "sprig_list" | "sprig_tuple" => Ok(Value::Array(args.iter().map(model::value).collect())),
        "sprig_has" => match args {
            [needle, haystack] => list_items(haystack)
                .map(|items| Value::Bool(items.iter().any(|i| deep_equal(&go(i), needle)))),
            _ => Err("wrong number of args for has".to_owned()),
        },
        "loop" => counting(args),
        _ => return None,
    })
}
