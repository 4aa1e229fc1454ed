//! consul-template's functions over the Go model
//! ([`super::model`]), called as `(goCall "name" args…)`: strings,
//! lists, encodings, parsing, JSON, arithmetic, and the `sprig_*`
//! functions a Vault user reaches, each with Go's types: a function that
//! takes a `string` refuses a `json.Number` (a Vault number) or `nil` as
//! text/template does, so the driver fails where the agent fails.
//!
//! A function's failure is an error value ([`model::error`]), raised
//! where the value is used (so `and`/`or` can skip it, as Go does).

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde_json::{Map, Value};
use sha2::Digest as _;

use super::args::{Out, charge, int, lossy, s, string_list, strs, text, wrong};
use super::helper::{fail, go_helper, result};
use super::model::{self, Go, go};
use crate::render::budget;

/// Go's `strings.TrimSpace` (ASCII and Unicode white space).
fn trim_space(bytes: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(bytes) {
        Ok(t) => t.trim().as_bytes().to_vec(),
        Err(_) => bytes.trim_ascii().to_vec(),
    }
}

fn replace(src: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    if from.is_empty() {
        // Go inserts `to` before every rune and at the end.
        let mut out = Vec::new();
        for c in lossy(src).chars() {
            out.extend_from_slice(to);
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        out.extend_from_slice(to);
        return out;
    }
    let mut out = Vec::with_capacity(src.len());
    let mut i = 0;
    while i < src.len() {
        if src[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(src[i]);
            i += 1;
        }
    }
    out
}

fn split_bytes<'a>(src: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    if sep.is_empty() {
        return std::str::from_utf8(src).map_or_else(
            |_| src.chunks(1).collect(),
            |t| {
                t.char_indices()
                    .map(|(i, c)| &src[i..i + c.len_utf8()])
                    .collect()
            },
        );
    }
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + sep.len() <= src.len() {
        if src[i..].starts_with(sep) {
            parts.push(&src[start..i]);
            i += sep.len();
            start = i;
        } else {
            i += 1;
        }
    }
    parts.push(&src[start..]);
    parts
}

fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// consul-template's `in(l, v)`.
fn member(list: &Go<'_>, v: &Go<'_>) -> bool {
    match list {
        Go::List(items) | Go::Strings(items) => items.iter().any(|item| match (&go(item), v) {
            (Go::Str(a), Go::Str(b)) => a == b,
            (Go::Number(a), Go::Number(b)) => a.as_str() == b.as_str(),
            (Go::Int(a), Go::Int(b)) | (Go::Int64(a), Go::Int64(b)) => a == b,
            #[allow(clippy::float_cmp)]
            (Go::Float(a), Go::Float(b)) => a == b,
            _ => false,
        }),
        Go::Str(hay) => matches!(v, Go::Str(n) if contains_bytes(hay, n)),
        Go::Number(n) => matches!(v, Go::Number(m) if n.as_str().contains(m.as_str())),
        _ => false,
    }
}

fn base64_decode(input: &[u8], url: bool) -> Out {
    // Go's decoder skips \r and \n anywhere (wrapped base64).
    let cleaned: Vec<u8> = input
        .iter()
        .copied()
        .filter(|b| !matches!(b, b'\r' | b'\n'))
        .collect();
    let engine = if url { &URL_SAFE } else { &STANDARD };
    engine
        .decode(&cleaned)
        .map(|b| model::string_value(&b))
        .map_err(|e| format!("base64Decode: {e}"))
}

fn indent(spaces: i64, src: &[u8]) -> Out {
    let spaces = usize::try_from(spaces)
        .map_err(|_| "indent value must be a positive integer".to_owned())?;
    charge(src.len().saturating_mul(spaces.max(1)))?;
    let mut out = Vec::with_capacity(src.len());
    let mut at_line_start = true;
    for &c in src {
        if at_line_start && c != b'\n' {
            out.extend(std::iter::repeat_n(b' ', spaces));
        }
        out.push(c);
        at_line_start = c == b'\n';
    }
    text(out)
}

/// `toTitle`: `cases.Title(language.Und, cases.NoLower)`: the first letter
/// of each word upper-cased, the rest kept.
fn title(src: &[u8]) -> Vec<u8> {
    let mut out = String::new();
    let mut in_word = false;
    for c in lossy(src).chars() {
        if c.is_alphanumeric() || c == '\'' {
            if in_word {
                out.push(c);
            } else {
                out.extend(c.to_uppercase());
            }
            in_word = true;
        } else {
            out.push(c);
            in_word = false;
        }
    }
    out.into_bytes()
}

/// A number of the arithmetic functions.
#[derive(Clone, Copy)]
enum Num {
    I(i64),
    F(f64),
}

fn num(g: &Go<'_>, name: &str) -> Result<Num, String> {
    match g {
        Go::Int(n) | Go::Int64(n) => Ok(Num::I(*n)),
        Go::Float(f) => Ok(Num::F(*f)),
        other => Err(format!(
            "{name}: unknown type for {} ({})",
            quoted_value(other),
            model::type_name(other)
        )),
    }
}

fn quoted_value(g: &Go<'_>) -> String {
    match g {
        Go::Str(b) => super::fmt::quote(b, false),
        Go::Number(n) => format!("%!q(json.Number={})", n.as_str()),
        _ => "%!q(<nil>)".to_owned(),
    }
}

#[allow(clippy::cast_precision_loss)] // Go converts int64 to float64 the same way
fn arithmetic(name: &str, b: &Go<'_>, a: &Go<'_>) -> Out {
    let (a, b) = (num(a, name)?, num(b, name)?);
    let as_f = |n: Num| match n {
        Num::I(i) => i as f64,
        Num::F(f) => f,
    };
    let out = match (name, a, b) {
        ("add", Num::I(x), Num::I(y)) => Num::I(x.wrapping_add(y)),
        ("subtract", Num::I(x), Num::I(y)) => Num::I(x.wrapping_sub(y)),
        ("multiply", Num::I(x), Num::I(y)) => Num::I(x.wrapping_mul(y)),
        ("divide" | "modulo", Num::I(_), Num::I(0)) => {
            return Err("runtime error: integer divide by zero".to_owned());
        }
        ("divide", Num::I(x), Num::I(y)) => Num::I(x.wrapping_div(y)),
        ("modulo", Num::I(x), Num::I(y)) => Num::I(x.wrapping_rem(y)),
        ("modulo", _, _) => return Err(format!("{name}: unknown type")),
        ("add", x, y) => Num::F(as_f(x) + as_f(y)),
        ("subtract", x, y) => Num::F(as_f(x) - as_f(y)),
        ("multiply", x, y) => Num::F(as_f(x) * as_f(y)),
        ("divide", x, y) => Num::F(as_f(x) / as_f(y)),
        ("minimum", x, y) => {
            if as_f(x) < as_f(y) {
                x
            } else {
                y
            }
        }
        ("maximum", x, y) => {
            if as_f(x) > as_f(y) {
                x
            } else {
                y
            }
        }
        _ => return Err(format!("unknown function {name}")),
    };
    // consul-template's arithmetic gives `int64` for integers.
    Ok(match out {
        Num::I(i) => model::int64(i),
        Num::F(f) => model::float(f),
    })
}

fn parse_number(name: &str, src: &[u8]) -> Out {
    if src.is_empty() {
        return Ok(match name {
            "parseFloat" => model::float(0.0),
            "parseBool" => Value::Bool(false),
            "parseInt" => model::int64(0),
            _ => model::int(0),
        });
    }
    let t = std::str::from_utf8(src).map_err(|_| format!("{name}: invalid syntax"))?;
    let bad = || {
        format!(
            "{name}: strconv.{}: parsing {}: invalid syntax",
            match name {
                "parseBool" => "ParseBool",
                "parseFloat" => "ParseFloat",
                "parseUint" => "ParseUint",
                _ => "ParseInt",
            },
            super::fmt::quote(src, false)
        )
    };
    match name {
        "parseBool" => match t {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(Value::Bool(true)),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(Value::Bool(false)),
            _ => Err(bad()),
        },
        "parseFloat" => t.parse::<f64>().map(model::float).map_err(|_| bad()),
        "parseUint" => t
            .parse::<u64>()
            .map_err(|_| bad())
            .and_then(|u| i64::try_from(u).map(model::int).map_err(|_| bad())),
        _ => t.parse::<i64>().map(model::int64).map_err(|_| bad()),
    }
}

/// One of consul-template's functions (and Go's builtins `print`,
/// `printf`, `println`, `len`, `index`) over evaluated arguments.
#[allow(clippy::too_many_lines)] // one table: a line or two per function
pub(in crate::render) fn call(name: &str, args: &[Go<'_>]) -> Out {
    if let Some(out) = super::template::call(name, args) {
        return out;
    }
    if let Some(out) = super::encoding::call(name, args) {
        return out;
    }
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "wrong number of args for {name}: want {n} got {}",
                args.len()
            ))
        }
    };
    if let Some(method) = name.strip_prefix("scratch.") {
        return super::scratch::call(method, args);
    }
    match name {
        "printf" => {
            let (format, rest) = args
                .split_first()
                .ok_or("wrong number of args for printf")?;
            super::fmt::sprintf(s(format)?, rest).and_then(text)
        }
        "print" => super::fmt::sprint(args, false).and_then(text),
        "println" => super::fmt::sprint(args, true).and_then(text),
        "base64Decode" | "sprig_b64dec" => {
            arity(1)?;
            let out = base64_decode(s(&args[0])?, false);
            if name == "sprig_b64dec" {
                // sprig returns the error's text instead of failing.
                return Ok(out.unwrap_or_else(|e| Value::String(e.replace("base64Decode: ", ""))));
            }
            out
        }
        "base64URLDecode" => {
            arity(1)?;
            base64_decode(s(&args[0])?, true)
        }
        "base64Encode" | "sprig_b64enc" => {
            arity(1)?;
            Ok(Value::String(STANDARD.encode(s(&args[0])?)))
        }
        "base64URLEncode" => {
            arity(1)?;
            Ok(Value::String(URL_SAFE.encode(s(&args[0])?)))
        }
        "sha256Hex" | "sprig_sha256sum" => {
            arity(1)?;
            let digest = sha2::Sha256::digest(s(&args[0])?);
            let mut hex = String::with_capacity(64);
            for b in digest {
                let _ = write!(hex, "{b:02x}");
            }
            Ok(Value::String(hex))
        }
        "contains" => {
            arity(2)?;
            Ok(Value::Bool(member(&args[1], &args[0])))
        }
        "in" => {
            arity(2)?;
            Ok(Value::Bool(member(&args[0], &args[1])))
        }
        "containsAll" | "containsAny" | "containsNone" | "containsNotAll" => {
            arity(2)?;
            let Go::List(items) = &args[0] else {
                return Err(wrong("[]interface {}", &args[0]));
            };
            let (ret_true, invert) = match name {
                "containsAll" => (true, true),
                "containsAny" => (false, false),
                "containsNone" => (true, false),
                _ => (false, true),
            };
            for item in *items {
                if member(&args[1], &go(item)) != invert {
                    return Ok(Value::Bool(!ret_true));
                }
            }
            Ok(Value::Bool(ret_true))
        }
        "split" | "sprig_splitList" => {
            arity(2)?;
            let (sep, src) = (s(&args[0])?, s(&args[1])?);
            charge(src.len())?;
            let src = if name == "split" {
                trim_space(src)
            } else {
                src.to_vec()
            };
            if name == "split" && src.is_empty() {
                return string_list(Vec::new());
            }
            string_list(
                split_bytes(&src, sep)
                    .into_iter()
                    .map(<[u8]>::to_vec)
                    .collect(),
            )
        }
        "join" => {
            arity(2)?;
            let (sep, items) = (s(&args[0])?, strs(&args[1])?);
            charge(items.iter().map(|i| i.len() + sep.len()).sum())?;
            text(items.join(sep))
        }
        "splitToMap" => {
            arity(3)?;
            let (sep1, sep2, src) = (s(&args[0])?, s(&args[1])?, s(&args[2])?);
            charge(src.len())?;
            let src = trim_space(src);
            let mut map = Map::new();
            if !src.is_empty() {
                for part in split_bytes(&src, sep1) {
                    let cut = split_bytes(part, sep2);
                    if cut.len() > 1 {
                        let value = &part[cut[0].len() + sep2.len()..];
                        map.insert(lossy(cut[0]).into_owned(), model::string_value(value));
                    }
                }
            }
            Ok(Value::Object(map))
        }
        "trimSpace" | "sprig_trim" => {
            arity(1)?;
            text(trim_space(s(&args[0])?))
        }
        "trim" | "sprig_trimAll" | "sprig_trimall" => {
            arity(2)?;
            let (cutset, src) = (
                lossy(s(&args[0])?).into_owned(),
                lossy(s(&args[1])?).into_owned(),
            );
            text(src.trim_matches(|c| cutset.contains(c)).as_bytes().to_vec())
        }
        "trimPrefix" | "trimSuffix" => {
            arity(2)?;
            let (affix, src) = (s(&args[0])?, s(&args[1])?);
            let out = if name == "trimPrefix" {
                src.strip_prefix(affix).unwrap_or(src)
            } else {
                src.strip_suffix(affix).unwrap_or(src)
            };
            text(out.to_vec())
        }
        "sprig_trimPrefix" | "sprig_trimSuffix" => {
            // Sprig's take the string last, like consul-template's.
            call(&name[6..], args)
        }
        "toLower" | "toUpper" | "sprig_lower" | "sprig_upper" => {
            arity(1)?;
            let src = s(&args[0])?;
            charge(src.len())?;
            let t = lossy(src);
            let out = if name.ends_with("ower") {
                t.to_lowercase()
            } else {
                t.to_uppercase()
            };
            text(out.into_bytes())
        }
        "toTitle" => {
            arity(1)?;
            text(title(s(&args[0])?))
        }
        "replaceAll" => {
            arity(3)?;
            let (from, to, src) = (s(&args[0])?, s(&args[1])?, s(&args[2])?);
            charge(src.len().saturating_mul(to.len().max(1)))?;
            text(replace(src, from, to))
        }
        "sprig_replace" => {
            arity(3)?;
            call("replaceAll", args)
        }
        "indent" => {
            arity(2)?;
            indent(int(&args[0])?, s(&args[1])?)
        }
        "sprig_indent" | "sprig_nindent" => {
            arity(2)?;
            let pad = " ".repeat(usize::try_from(int(&args[0])?).unwrap_or(0));
            let src = lossy(s(&args[1])?).into_owned();
            charge(src.len().saturating_mul(pad.len().max(1)))?;
            let body = format!("{pad}{}", src.replace('\n', &format!("\n{pad}")));
            let out = if name == "sprig_nindent" {
                format!("\n{body}")
            } else {
                body
            };
            text(out.into_bytes())
        }
        "sprig_contains" | "sprig_hasPrefix" | "sprig_hasSuffix" => {
            arity(2)?;
            let (needle, hay) = (s(&args[0])?, s(&args[1])?);
            Ok(Value::Bool(match name {
                "sprig_contains" => contains_bytes(hay, needle),
                "sprig_hasPrefix" => hay.starts_with(needle),
                _ => hay.ends_with(needle),
            }))
        }
        "sprig_repeat" => {
            arity(2)?;
            let (count, src) = (int(&args[0])?, s(&args[1])?);
            let count =
                usize::try_from(count).map_err(|_| "strings: negative Repeat count".to_owned())?;
            charge(src.len().saturating_mul(count))?;
            if src.len().saturating_mul(count) > crate::render::MAX_RENDERED_BYTES {
                return Err("sprig_repeat: the result is too large".to_owned());
            }
            text(src.repeat(count))
        }
        "parseBool" | "parseFloat" | "parseInt" | "parseUint" => {
            arity(1)?;
            parse_number(name, s(&args[0])?)
        }
        "add" | "subtract" | "multiply" | "divide" | "modulo" | "minimum" | "maximum" => {
            arity(2)?;
            arithmetic(name, &args[0], &args[1])
        }
        _ => super::sprig::call(name, args)
            .unwrap_or_else(|| Err(format!("function {name:?} is not available in the driver"))),
    }
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
