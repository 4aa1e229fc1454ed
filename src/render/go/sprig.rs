//! More of consul-template's functions over the Go model: text/template's
//! escapers and `slice`, consul-template's `loop` and `hmacSHA256Hex`,
//! and Sprig's functions (`sprig_*`) that hold no randomness, time or
//! host: each with Sprig's own conversions (`strval`, `empty`,
//! `cast.ToInt64`) over Go's types.

use std::fmt::Write as _;

use serde_json::{Map, Value};
use sha2::Digest as _;

use super::encoding;
use super::fmt;
use super::model::{self, Go, go};
use super::truth::truth;

type Out = Result<Value, String>;

fn string(g: &Go<'_>) -> Result<Vec<u8>, String> {
    match g {
        Go::Str(b) => Ok(b.to_vec()),
        Go::Nil => Err("invalid value; expected string".to_owned()),
        other => Err(format!(
            "wrong type for value; expected string; got {}",
            model::type_name(other)
        )),
    }
}

fn int(g: &Go<'_>) -> Result<i64, String> {
    match g {
        Go::Int(n) => Ok(*n),
        Go::Nil => Err("invalid value; expected int".to_owned()),
        other => Err(format!(
            "wrong type for value; expected int; got {}",
            model::type_name(other)
        )),
    }
}

fn text(bytes: &[u8]) -> Value {
    model::string_value(bytes)
}

/// Sprig's `strval`: a string as is, a Stringer's text, else `%v`.
fn strval(g: &Go<'_>) -> Result<Vec<u8>, String> {
    match g {
        Go::Str(b) => Ok(b.to_vec()),
        Go::Number(n) => Ok(n.as_str().as_bytes().to_vec()),
        Go::Nil => Ok(b"<nil>".to_vec()),
        other => fmt::sprintf(b"%v", std::slice::from_ref(other)),
    }
}

/// text/template's `evalArgs` for `html`, `js`, `urlquery`: one string as
/// is, else `fmt.Sprint` with `nil` as `<no value>`.
fn eval_args(args: &[Go<'_>]) -> Result<Vec<u8>, String> {
    if let [Go::Str(b)] = args {
        return Ok(b.to_vec());
    }
    let printable: Vec<Go<'_>> = args
        .iter()
        .map(|a| match a {
            Go::Nil => Go::Str(b"<no value>".as_slice().into()),
            other => other.clone(),
        })
        .collect();
    fmt::sprint(&printable, false)
}

fn html(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len());
    for &b in src {
        match b {
            b'"' => out.extend_from_slice(b"&#34;"),
            b'\'' => out.extend_from_slice(b"&#39;"),
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            0 => out.extend_from_slice("\u{FFFD}".as_bytes()),
            b => out.push(b),
        }
    }
    out
}

fn js(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len());
    for chunk in src.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.extend_from_slice(b"\\\\"),
                '\'' => out.extend_from_slice(b"\\'"),
                '"' => out.extend_from_slice(b"\\\""),
                '<' => out.extend_from_slice(b"\\u003C"),
                '>' => out.extend_from_slice(b"\\u003E"),
                '&' => out.extend_from_slice(b"\\u0026"),
                '=' => out.extend_from_slice(b"\\u003D"),
                c if u32::from(c) < 0x20 => {
                    let _ = write!(Sink(&mut out), "\\u00{:02X}", u32::from(c));
                }
                c if c.is_ascii() || fmt::is_print(c) => {
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                c => {
                    let _ = write!(Sink(&mut out), "\\u{:04X}", u32::from(c));
                }
            }
        }
        for _ in chunk.invalid() {
            out.extend_from_slice(b"\\uFFFD");
        }
    }
    out
}

struct Sink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// `url.QueryEscape`.
fn query_escape(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len());
    for &b in src {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b),
            b' ' => out.push(b'+'),
            b => {
                let _ = write!(Sink(&mut out), "%{b:02X}");
            }
        }
    }
    out
}

/// text/template's `slice x i j`.
fn slice(base: &Go<'_>, indexes: &[Go<'_>]) -> Out {
    let mut at = Vec::new();
    for i in indexes {
        let n = int(i).map_err(|_| "cannot index slice/array with type".to_owned())?;
        at.push(usize::try_from(n).map_err(|_| format!("index out of range: {n}"))?);
    }
    let len = match base {
        Go::Str(b) => b.len(),
        Go::List(items) | Go::Strings(items) => items.len(),
        Go::Nil => return Err("slice of untyped nil".to_owned()),
        other => {
            return Err(format!(
                "can't slice item of type {}",
                model::type_name(other)
            ));
        }
    };
    if matches!(base, Go::Str(_)) && at.len() > 2 {
        return Err("cannot 3-index slice a string".to_owned());
    }
    let (from, to) = match at.as_slice() {
        [] => (0, len),
        [i] => (*i, len),
        [i, j] | [i, j, _] => (*i, *j),
        _ => return Err("too many slice indexes".to_owned()),
    };
    if from > to || to > len {
        return Err(format!("index out of range: {to}"));
    }
    Ok(match base {
        Go::Str(b) => text(&b[from..to]),
        Go::Strings(items) => model::strings(items[from..to].to_vec()),
        Go::List(items) => Value::Array(items[from..to].to_vec()),
        _ => Value::Null,
    })
}

fn hmac_sha256(message: &[u8], key: &[u8]) -> String {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&sha2::Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = sha2::Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = sha2::Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    hex(&outer.finalize())
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `loop [start] stop`: the integers from start below stop.
fn counting(args: &[Go<'_>]) -> Out {
    let to64 = |g: &Go<'_>| match g {
        Go::Int(n) => Ok(*n),
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

/// Sprig's `cast.ToInt64`-style conversion of its arithmetic.
fn to_int64(g: &Go<'_>) -> i64 {
    match g {
        Go::Int(n) => *n,
        #[allow(clippy::cast_possible_truncation)] // Go truncates too
        Go::Float(f) => *f as i64,
        Go::Bool(b) => i64::from(*b),
        Go::Str(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0),
        Go::Number(n) => n.as_str().parse().unwrap_or(0),
        _ => 0,
    }
}

/// `substr` and `trunc` over bytes, as Sprig slices Go strings.
fn substr(start: i64, end: i64, s: &[u8]) -> Vec<u8> {
    let len = s.len();
    let start = usize::try_from(start).ok();
    let end = usize::try_from(end).ok().filter(|&e| e <= len);
    match (start, end) {
        (None, Some(e)) => s[..e].to_vec(),
        (Some(b), None) if b <= len => s[b..].to_vec(),
        (Some(b), Some(e)) if b <= e => s[b..e].to_vec(),
        _ => s[..end.unwrap_or(len).min(len)].to_vec(),
    }
}

fn trunc(count: i64, s: &[u8]) -> Vec<u8> {
    let len = i64::try_from(s.len()).unwrap_or(i64::MAX);
    if count < 0 && len + count > 0 {
        return s[usize::try_from(len + count).unwrap_or(0)..].to_vec();
    }
    if count >= 0 && len > count {
        return s[..usize::try_from(count).unwrap_or(0)].to_vec();
    }
    s.to_vec()
}

/// Go's `strings.Title`: a letter after a separator is title-cased.
fn title(s: &[u8]) -> Vec<u8> {
    let mut out = String::new();
    let mut previous = ' ';
    for c in String::from_utf8_lossy(s).chars() {
        let separator = if previous.is_ascii() {
            !(previous.is_ascii_alphanumeric() || previous == '_')
        } else {
            !(previous.is_alphanumeric()) && previous.is_whitespace()
        };
        if separator {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        previous = c;
    }
    out.into_bytes()
}

fn kind_of(g: &Go<'_>) -> &'static str {
    match g {
        Go::Nil => "invalid",
        Go::Bool(_) => "bool",
        Go::Str(_) | Go::Number(_) => "string",
        Go::Int(_) => "int",
        Go::Float(_) => "float64",
        Go::List(_) | Go::Strings(_) => "slice",
        Go::Map(_) | Go::NilMap => "map",
        Go::Secret(_) => "ptr",
        Go::Pki(_) => "struct",
        Go::Error(_) => "interface",
    }
}

/// Go's `reflect.DeepEqual` over the model: same type, same value.
fn deep_equal(a: &Go<'_>, b: &Go<'_>) -> bool {
    match (a, b) {
        (Go::Nil, Go::Nil) => true,
        (Go::Bool(x), Go::Bool(y)) => x == y,
        (Go::Str(x), Go::Str(y)) => x == y,
        (Go::Number(x), Go::Number(y)) => x.as_str() == y.as_str(),
        (Go::Int(x), Go::Int(y)) => x == y,
        #[allow(clippy::float_cmp)] // DeepEqual compares floats with ==
        (Go::Float(x), Go::Float(y)) => x == y,
        (Go::List(x), Go::List(y)) | (Go::Strings(x), Go::Strings(y)) => x == y,
        (Go::Map(x), Go::Map(y)) => x == y,
        _ => false,
    }
}

fn list_items<'a>(g: &'a Go<'_>) -> Result<&'a [Value], String> {
    match g {
        Go::List(items) | Go::Strings(items) => Ok(items),
        other => Err(format!(
            "Cannot find first on type {}",
            model::type_name(other)
        )),
    }
}

/// `cat`, `quote`, `squote`: each argument but `nil`, joined by spaces.
fn joined(name: &str, args: &[Go<'_>]) -> Out {
    let mut parts = Vec::new();
    for a in args.iter().filter(|a| !matches!(a, Go::Nil)) {
        let s = strval(a)?;
        parts.push(match name {
            "sprig_quote" => fmt::quote(&s, false).into_bytes(),
            "sprig_squote" => [b"'".as_slice(), &s, b"'"].concat(),
            _ => s,
        });
    }
    Ok(text(&parts.join(&b' ')))
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

/// The regular-expression functions. consul-template's take the pattern
/// first and the text last; Sprig's the same, except `regexFindAll` and
/// `regexSplit`, which take a count last.
fn regex_call(name: &str, args: &[Go<'_>]) -> Out {
    let strings = |n: usize| -> Result<Vec<String>, String> {
        if args.len() != n {
            return Err(format!(
                "wrong number of args for {name}: want {n} got {}",
                args.len()
            ));
        }
        args[..n]
            .iter()
            .map(|a| string(a).map(|b| String::from_utf8_lossy(&b).into_owned()))
            .collect()
    };
    if name == "sprig_regexQuoteMeta" {
        // Go's QuoteMeta escapes fewer characters than regex::escape.
        return strings(1).map(|s| {
            let mut out = String::with_capacity(s[0].len());
            for c in s[0].chars() {
                if "\\.+*?()|[]{}^$".contains(c) {
                    out.push('\\');
                }
                out.push(c);
            }
            Value::String(out)
        });
    }
    let count = |a: &Go<'_>| int(a).map(|n| usize::try_from(n).ok());
    match name {
        "regexMatch" | "sprig_regexMatch" | "sprig_mustRegexMatch" => {
            let s = strings(2)?;
            match super::regex::compile(s[0].as_bytes()) {
                Ok(re) => Ok(Value::Bool(re.is_match(&s[1]))),
                // Sprig's regexMatch answers false for a bad pattern.
                Err(_) if name == "sprig_regexMatch" => Ok(Value::Bool(false)),
                Err(e) => Err(e),
            }
        }
        "regexReplaceAll" | "sprig_regexReplaceAll" | "sprig_regexReplaceAllLiteral" => {
            let s = strings(3)?;
            // consul-template: pattern, replacement, text; Sprig: pattern,
            // text, replacement.
            let (text_in, with) = if name == "regexReplaceAll" {
                (&s[2], &s[1])
            } else {
                (&s[1], &s[2])
            };
            let re = super::regex::compile(s[0].as_bytes())?;
            crate::render::budget::charge(
                u64::try_from(text_in.len() / 16).unwrap_or(u64::MAX),
                [],
            )
            .map_err(|e| e.to_string())?;
            let out = if name == "sprig_regexReplaceAllLiteral" {
                re.replace_all(text_in, regex::NoExpand(with))
            } else {
                re.replace_all(text_in, with.as_str())
            };
            if out.len() > crate::render::MAX_RENDERED_BYTES {
                return Err("the result is too large".to_owned());
            }
            Ok(Value::String(out.into_owned()))
        }
        "sprig_regexFind" => {
            let s = strings(2)?;
            let re = super::regex::compile(s[0].as_bytes())?;
            Ok(Value::String(
                re.find(&s[1]).map_or("", |m| m.as_str()).to_owned(),
            ))
        }
        _ => {
            let [pattern, input, n] = args else {
                return Err(format!(
                    "wrong number of args for {name}: want 3 got {}",
                    args.len()
                ));
            };
            let (pattern, input) = (string(pattern)?, string(input)?);
            let input = String::from_utf8_lossy(&input).into_owned();
            let re = super::regex::compile(&pattern)?;
            let limit = count(n)?;
            let parts: Vec<Value> = if name == "sprig_regexFindAll" {
                re.find_iter(&input)
                    .take(limit.unwrap_or(usize::MAX))
                    .map(|m| Value::String(m.as_str().to_owned()))
                    .collect()
            } else {
                match limit {
                    Some(0) => Vec::new(),
                    Some(l) => re
                        .splitn(&input, l)
                        .map(|p| Value::String(p.to_owned()))
                        .collect(),
                    None => re
                        .split(&input)
                        .map(|p| Value::String(p.to_owned()))
                        .collect(),
                }
            };
            Ok(model::strings(parts))
        }
    }
}

/// Sprig's `mustX`: `X` with its errors (the `X` here already fails where
/// Sprig's `mustX` does).
fn unmust(name: &str) -> Option<String> {
    let rest = name.strip_prefix("sprig_must")?;
    let mut chars = rest.chars();
    let first = chars.next()?.to_ascii_lowercase();
    (rest != "RegexMatch").then(|| format!("sprig_{first}{}", chars.as_str()))
}

/// `strslice`: Sprig's list of strings from a list (`nil`s left out) or
/// one value.
fn strslice(g: &Go<'_>) -> Result<Vec<Vec<u8>>, String> {
    match g {
        Go::List(items) | Go::Strings(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in *items {
                let item = go(item);
                if !matches!(item, Go::Nil) {
                    out.push(strval(&item)?);
                }
            }
            Ok(out)
        }
        Go::Nil => Ok(Vec::new()),
        other => Ok(vec![strval(other)?]),
    }
}

fn string_list(items: &[Vec<u8>]) -> Value {
    model::strings(items.iter().map(|b| text(b)).collect())
}

fn ints(items: impl Iterator<Item = i64>) -> Result<Value, String> {
    let mut out = Vec::new();
    for i in items {
        if out.len() >= 100_000 {
            return Err("a list of more than 100000 numbers".to_owned());
        }
        out.push(model::int(i));
    }
    crate::render::budget::charge(u64::try_from(out.len()).unwrap_or(u64::MAX), [])
        .map_err(|e| e.to_string())?;
    Ok(Value::Array(out))
}

/// `path.Base`.
fn base(p: &[u8]) -> Vec<u8> {
    if p.is_empty() {
        return b".".to_vec();
    }
    let trimmed = {
        let mut end = p.len();
        while end > 0 && p[end - 1] == b'/' {
            end -= 1;
        }
        &p[..end]
    };
    if trimmed.is_empty() {
        return b"/".to_vec();
    }
    let start = trimmed
        .iter()
        .rposition(|&b| b == b'/')
        .map_or(0, |i| i + 1);
    trimmed[start..].to_vec()
}

/// `path.Ext`.
fn ext(p: &[u8]) -> Vec<u8> {
    for i in (0..p.len()).rev() {
        match p[i] {
            b'/' => break,
            b'.' => return p[i..].to_vec(),
            _ => {}
        }
    }
    Vec::new()
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

/// Sprig's `values` (in one of Go's map orders: sorted), `pick`, `omit`,
/// `dig`, `slice` and `chunk`.
fn maps_and_slices(name: &str, args: &[Go<'_>]) -> Out {
    let keys = |rest: &[Go<'_>]| -> Result<Vec<String>, String> {
        rest.iter()
            .map(|k| string(k).map(|b| String::from_utf8_lossy(&b).into_owned()))
            .collect()
    };
    let map_of = |g: &Go<'_>| -> Result<Map<String, Value>, String> {
        match g {
            Go::Map(map) => Ok((*map).clone()),
            Go::NilMap => Ok(Map::new()),
            other => Err(format!(
                "wrong type for value; expected map[string]interface {{}}; got {}",
                model::type_name(other)
            )),
        }
    };
    match (name, args) {
        ("sprig_values", [dict]) => {
            map_of(dict).map(|m| Value::Array(m.into_iter().map(|(_, v)| v).collect()))
        }
        ("sprig_pick" | "sprig_omit", [dict, rest @ ..]) => {
            let (map, keys) = (map_of(dict)?, keys(rest)?);
            let keep = name == "sprig_pick";
            Ok(Value::Object(
                map.into_iter()
                    .filter(|(k, _)| keys.contains(k) == keep)
                    .collect(),
            ))
        }
        ("sprig_dig", [path @ .., fallback, dict]) if !path.is_empty() => {
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
                            "interface conversion: interface {} is not map[string]interface {}"
                                .to_owned(),
                        );
                    }
                };
            }
            Ok(model::value(fallback))
        }
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

/// The functions of this file; `None` for a name it does not have.
#[allow(clippy::too_many_lines)] // one table: a few lines per function
pub(in crate::render) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    match name {
        // The must forms fail where the plain ones write "".
        "sprig_mustToJson" => return encoding::call("toJSON", args),
        "sprig_mustToPrettyJson" => return encoding::call("toJSONPretty", args),
        "sprig_mustToRawJson" => return encoding::call("toUnescapedJSON", args),
        "sprig_mustFromJson" => {
            return Some(
                string(&args.first().cloned().unwrap_or(Go::Nil))
                    .and_then(|s| encoding::parse_json(&s)),
            );
        }
        _ => {}
    }
    if let Some(plain) = unmust(name) {
        return call(&plain, args);
    }
    let one = || args.first().cloned().unwrap_or(Go::Nil);
    Some(match name {
        "regexMatch"
        | "sprig_regexMatch"
        | "sprig_mustRegexMatch"
        | "regexReplaceAll"
        | "sprig_regexReplaceAll"
        | "sprig_regexReplaceAllLiteral"
        | "sprig_regexFind"
        | "sprig_regexFindAll"
        | "sprig_regexSplit"
        | "sprig_regexQuoteMeta" => regex_call(name, args),
        "sprig_append" | "sprig_prepend" | "sprig_concat" | "sprig_uniq" | "sprig_without"
        | "sprig_compact" => lists(name, args),
        "sprig_sortAlpha" => match one() {
            Go::Nil => Ok(string_list(&[b"<nil>".to_vec()])),
            list => strslice(&list).map(|mut l| {
                l.sort();
                string_list(&l)
            }),
        },
        "sprig_toStrings" => strslice(&one()).map(|l| string_list(&l)),
        "sprig_join" => match args {
            [sep, list] => {
                string(sep).and_then(|sep| strslice(list).map(|l| text(&l.join(sep.as_slice()))))
            }
            _ => Err("wrong number of args for join".to_owned()),
        },
        // Go's map order is random: sorted is one of the orders the agent
        // writes.
        "sprig_keys" => {
            let mut out = Vec::new();
            for dict in args {
                match dict {
                    Go::Map(map) => out.extend(map.keys().map(|k| k.as_bytes().to_vec())),
                    Go::NilMap => {}
                    other => {
                        return Some(Err(format!(
                            "wrong type for value; expected map[string]interface {{}}; got {}",
                            model::type_name(other)
                        )));
                    }
                }
            }
            Ok(string_list(&out))
        }
        "sprig_split" | "sprig_splitn" => {
            let parts = match (name, args) {
                ("sprig_split", [sep, orig]) => {
                    string(sep).and_then(|sep| string(orig).map(|o| (sep, o, None)))
                }
                ("sprig_splitn", [sep, n, orig]) => string(sep)
                    .and_then(|sep| int(n).and_then(|n| string(orig).map(|o| (sep, o, Some(n))))),
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
        "sprig_until" => int(&one()).and_then(|n| {
            if n >= 0 {
                ints(0..n)
            } else {
                ints((n + 1..=0).rev())
            }
        }),
        "sprig_untilStep" => match args {
            [from, to, by] => int(from).and_then(|start| {
                int(to).and_then(|stop| {
                    int(by).and_then(|step| {
                        if step == 0 || (step > 0 && start > stop) || (step < 0 && start < stop) {
                            return Ok(Value::Array(Vec::new()));
                        }
                        let mut i = start;
                        let it = std::iter::from_fn(move || {
                            let keep = if step > 0 { i < stop } else { i > stop };
                            keep.then(|| {
                                let v = i;
                                i += step;
                                v
                            })
                        });
                        ints(it)
                    })
                })
            }),
            _ => Err("wrong number of args for untilStep".to_owned()),
        },
        "sprig_fromJson" => string(&one()).map(|s| encoding::parse_json(&s).unwrap_or(Value::Null)),
        "sprig_deepEqual" => match args {
            [a, b] => Ok(Value::Bool(deep_equal(a, b))),
            _ => Err("wrong number of args for deepEqual".to_owned()),
        },
        "sprig_base" => string(&one()).map(|p| text(&base(&p))),
        "sprig_ext" => string(&one()).map(|p| text(&ext(&p))),
        "sprig_isAbs" => string(&one()).map(|p| Value::Bool(p.first() == Some(&b'/'))),
        "sprig_hello" => Ok(Value::String("Hello!".to_owned())),
        "sprig_fail" => string(&one()).and_then(|m| Err(String::from_utf8_lossy(&m).into_owned())),
        "sprig_values" | "sprig_pick" | "sprig_omit" | "sprig_dig" | "sprig_slice"
        | "sprig_chunk" => maps_and_slices(name, args),
        "html" => eval_args(args).map(|b| text(&html(&b))),
        "js" => eval_args(args).map(|b| text(&js(&b))),
        "urlquery" => eval_args(args).map(|b| text(&query_escape(&b))),
        "slice" => match args.split_first() {
            Some((base, indexes)) => slice(base, indexes),
            None => Err("wrong number of args for slice".to_owned()),
        },
        "loop" => counting(args),
        "hmacSHA256Hex" => match args {
            [message, key] => string(message)
                .and_then(|m| string(key).map(|k| Value::String(hmac_sha256(&m, &k)))),
            _ => Err("wrong number of args for hmacSHA256Hex".to_owned()),
        },
        "sprig_sha512sum" => string(&one()).map(|s| Value::String(hex(&sha2::Sha512::digest(&s)))),
        "sprig_adler32sum" => string(&one()).map(|s| {
            let (mut a, mut b) = (1u32, 0u32);
            for byte in s {
                a = (a + u32::from(byte)) % 65_521;
                b = (b + a) % 65_521;
            }
            Value::String(((b << 16) | a).to_string())
        }),
        "sprig_toString" => strval(&one()).map(|b| text(&b)),
        "sprig_cat" | "sprig_quote" | "sprig_squote" => joined(name, args),
        "sprig_title" => string(&one()).map(|s| text(&title(&s))),
        "sprig_substr" => match args {
            [a, b, s] => {
                int(a).and_then(|a| int(b).and_then(|b| string(s).map(|s| text(&substr(a, b, &s)))))
            }
            _ => Err("wrong number of args for substr".to_owned()),
        },
        "sprig_trunc" => match args {
            [c, s] => int(c).and_then(|c| string(s).map(|s| text(&trunc(c, &s)))),
            _ => Err("wrong number of args for trunc".to_owned()),
        },
        "sprig_plural" => match args {
            [one_form, many, count] => int(count).and_then(|n| {
                let form = if n == 1 { one_form } else { many };
                string(form).map(|s| text(&s))
            }),
            _ => Err("wrong number of args for plural".to_owned()),
        },
        "sprig_atoi" => string(&one()).map(|s| {
            model::int(
                std::str::from_utf8(&s)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0),
            )
        }),
        "sprig_add1" => Ok(model::int(to_int64(&one()).wrapping_add(1))),
        "sprig_add" => Ok(model::int(
            args.iter().map(to_int64).fold(0i64, i64::wrapping_add),
        )),
        "sprig_mul" => Ok(model::int(
            args.iter().map(to_int64).fold(1i64, i64::wrapping_mul),
        )),
        "sprig_sub" | "sprig_div" | "sprig_mod" => match args {
            [a, b] => {
                let (a, b) = (to_int64(a), to_int64(b));
                match name {
                    "sprig_sub" => Ok(model::int(a.wrapping_sub(b))),
                    _ if b == 0 => Err("runtime error: integer divide by zero".to_owned()),
                    "sprig_div" => Ok(model::int(a.wrapping_div(b))),
                    _ => Ok(model::int(a.wrapping_rem(b))),
                }
            }
            _ => Err(format!("wrong number of args for {name}")),
        },
        "sprig_max" | "sprig_biggest" | "sprig_min" => match args.split_first() {
            Some((first, rest)) => {
                let mut best = to_int64(first);
                for a in rest {
                    let v = to_int64(a);
                    if (name == "sprig_min" && v < best) || (name != "sprig_min" && v > best) {
                        best = v;
                    }
                }
                Ok(model::int(best))
            }
            None => Err(format!("wrong number of args for {name}")),
        },
        "sprig_empty" => Ok(Value::Bool(!truth(&one()))),
        "sprig_default" => match args.split_first() {
            Some((fallback, given)) => {
                let chosen = match given.first() {
                    Some(g) if truth(g) => g,
                    _ => fallback,
                };
                Ok(model::value(chosen))
            }
            None => Err("wrong number of args for default".to_owned()),
        },
        "sprig_coalesce" => Ok(args
            .iter()
            .find(|a| truth(a))
            .map_or(Value::Null, model::value)),
        "sprig_all" => Ok(Value::Bool(args.iter().all(truth))),
        "sprig_any" => Ok(Value::Bool(args.iter().any(truth))),
        "sprig_ternary" => match args {
            [yes, no, Go::Bool(cond)] => Ok(model::value(if *cond { yes } else { no })),
            [_, _, other] => Err(format!(
                "wrong type for value; expected bool; got {}",
                model::type_name(other)
            )),
            _ => Err("wrong number of args for ternary".to_owned()),
        },
        "sprig_list" | "sprig_tuple" => Ok(Value::Array(args.iter().map(model::value).collect())),
        "sprig_first" | "sprig_last" => list_items(&one()).map(|items| {
            let item = if name == "sprig_first" {
                items.first()
            } else {
                items.last()
            };
            item.cloned().unwrap_or(Value::Null)
        }),
        "sprig_rest" | "sprig_initial" => list_items(&one()).map(|items| {
            match (name, items.len()) {
                // Sprig returns a nil []interface{}: it prints `[]`.
                (_, 0) => Value::Array(Vec::new()),
                ("sprig_rest", _) => Value::Array(items[1..].to_vec()),
                _ => Value::Array(items[..items.len() - 1].to_vec()),
            }
        }),
        "sprig_reverse" => {
            list_items(&one()).map(|items| Value::Array(items.iter().rev().cloned().collect()))
        }
        "sprig_has" => match args {
            [needle, haystack] => list_items(haystack)
                .map(|items| Value::Bool(items.iter().any(|i| deep_equal(&go(i), needle)))),
            _ => Err("wrong number of args for has".to_owned()),
        },
        "sprig_hasKey" => match args {
            [Go::Map(map), key] => string(key)
                .map(|k| Value::Bool(map.contains_key(String::from_utf8_lossy(&k).as_ref()))),
            [Go::NilMap, _] => Ok(Value::Bool(false)),
            _ => Err("wrong type for value; expected map[string]interface {}".to_owned()),
        },
        "sprig_get" => match args {
            [Go::Map(map), key] => string(key).map(|k| {
                map.get(String::from_utf8_lossy(&k).as_ref())
                    .cloned()
                    .unwrap_or(Value::String(String::new()))
            }),
            [Go::NilMap, _] => Ok(Value::String(String::new())),
            _ => Err("wrong type for value; expected map[string]interface {}".to_owned()),
        },
        "sprig_dict" => dict(args),
        "sprig_kindOf" => Ok(Value::String(kind_of(&one()).to_owned())),
        "sprig_typeOf" => Ok(Value::String(match one() {
            Go::Nil => "<nil>".to_owned(),
            other => model::type_name(&other).to_owned(),
        })),
        "sprig_kindIs" | "sprig_typeIs" => match args {
            [target, value] => string(target).map(|t| {
                let actual = if name == "sprig_kindIs" {
                    kind_of(value)
                } else {
                    model::type_name(value)
                };
                Value::Bool(t == actual.as_bytes())
            }),
            _ => Err(format!("wrong number of args for {name}")),
        },
        "sprig_toJson" | "sprig_toPrettyJson" | "sprig_toRawJson" => {
            let consul = match name {
                "sprig_toJson" => "toJSON",
                "sprig_toPrettyJson" => "toJSONPretty",
                _ => "toUnescapedJSON",
            };
            // Sprig writes "" where encoding fails.
            Ok(encoding::call(consul, args)
                .and_then(Result::ok)
                .unwrap_or(Value::String(String::new())))
        }
        _ => return None,
    })
}
