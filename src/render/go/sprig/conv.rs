//! How Sprig reads its arguments: Go's parameter types (`string`, `int`),
//! Sprig's own conversions (`strval`, `strslice`) and `spf13/cast`'s
//! (`ToInt64`, `ToFloat64`: what Sprig's arithmetic makes of any value),
//! Go's `strconv` parsers they rest on, and what Go's reflection says of a
//! value (`kindOf`, `deepEqual`).

use std::fmt::Write as _;

use serde_json::Value;

use super::super::fmt;
use super::super::model::{self, Go, go};

/// A function's result: a value of the model, or Go's error text.
pub(super) type Out = Result<Value, String>;

/// A `string` parameter.
pub(super) fn string(g: &Go<'_>) -> Result<Vec<u8>, String> {
    match g {
        Go::Str(b) => Ok(b.to_vec()),
        Go::Nil => Err("invalid value; expected string".to_owned()),
        other => Err(format!(
            "wrong type for value; expected string; got {}",
            model::type_name(other)
        )),
    }
}

/// An `int` parameter.
pub(super) fn int(g: &Go<'_>) -> Result<i64, String> {
    match g {
        Go::Int(n) => Ok(*n),
        Go::Nil => Err("invalid value; expected int".to_owned()),
        other => Err(format!(
            "wrong type for value; expected int; got {}",
            model::type_name(other)
        )),
    }
}

/// A Go string as a value of the model.
pub(super) fn text(bytes: &[u8]) -> Value {
    model::string_value(bytes)
}

/// The first argument, or `nil`.
pub(super) fn first<'a>(args: &[Go<'a>]) -> Go<'a> {
    args.first().cloned().unwrap_or(Go::Nil)
}

/// Charges work proportional to `units` bytes to the render's budget.
pub(super) fn charge(units: usize) -> Result<(), String> {
    crate::render::budget::charge(u64::try_from(units / 16).unwrap_or(u64::MAX), [])
        .map_err(|e| e.to_string())
}

/// Refuses a result larger than the largest file before it is built.
pub(super) fn within_output(name: &str, len: usize) -> Result<(), String> {
    if len > crate::render::MAX_RENDERED_BYTES {
        return Err(format!(
            "{name}: the result would be larger than {} bytes",
            crate::render::MAX_RENDERED_BYTES
        ));
    }
    charge(len)
}

/// Sprig's `strval`: a string as is, a Stringer's text, else `%v`.
pub(super) fn strval(g: &Go<'_>) -> Result<Vec<u8>, String> {
    match g {
        Go::Str(b) => Ok(b.to_vec()),
        Go::Number(n) => Ok(n.as_str().as_bytes().to_vec()),
        Go::Nil => Ok(b"<nil>".to_vec()),
        other => fmt::sprintf(b"%v", std::slice::from_ref(other)),
    }
}

/// Writes formatted text into bytes.
pub(super) struct Sink<'a>(pub(super) &'a mut Vec<u8>);

impl std::fmt::Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Lower-case hexadecimal, as `%x` of a byte slice.
pub(super) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// What `reflect.Kind` calls a value.
pub(super) fn kind_of(g: &Go<'_>) -> &'static str {
    match g {
        Go::Nil => "invalid",
        Go::Bool(_) => "bool",
        Go::Str(_) | Go::Number(_) => "string",
        Go::Int(_) => "int",
        Go::Int64(_) => "int64",
        Go::Float(_) => "float64",
        Go::List(_) | Go::Strings(_) => "slice",
        Go::Map(_) | Go::NilMap | Go::AnyMap(_) => "map",
        Go::Semver(v) if model::semver_is_value(v) => "struct",
        Go::Secret(_) | Go::Semver(_) => "ptr",
        Go::Pki(_) | Go::Time(_) => "struct",
        Go::Error(_) => "interface",
    }
}

pub(super) use super::super::model::deep_equal;

/// The items of a list (`[]interface{}` or `[]string`).
pub(super) fn list_items<'a>(g: &'a Go<'_>) -> Result<&'a [Value], String> {
    match g {
        Go::List(items) | Go::Strings(items) => Ok(items),
        other => Err(format!(
            "Cannot find first on type {}",
            model::type_name(other)
        )),
    }
}

/// `strslice`: Sprig's list of strings from a list (`nil`s left out) or
/// one value.
pub(super) fn strslice(g: &Go<'_>) -> Result<Vec<Vec<u8>>, String> {
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

/// A Go `[]string`.
pub(super) fn string_list(items: &[Vec<u8>]) -> Value {
    model::strings(items.iter().map(|b| text(b)).collect())
}

/// A Go `[]int`, charged to the render's budget as it grows.
pub(super) fn ints(items: impl Iterator<Item = i64>) -> Result<Vec<i64>, String> {
    let mut out = Vec::new();
    for i in items {
        if out.len() >= 100_000 {
            return Err("a list of more than 100000 numbers".to_owned());
        }
        out.push(i);
    }
    crate::render::budget::charge(u64::try_from(out.len()).unwrap_or(u64::MAX), [])
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Sprig's `untilStep`.
pub(super) fn until_step(first: i64, end: i64, step: i64) -> Result<Vec<i64>, String> {
    let start = first;
    let limit = end;
    if step == 0 || (step > 0 && start > limit) || (step < 0 && start < limit) {
        return Ok(Vec::new());
    }
    let mut i = start;
    let it = std::iter::from_fn(move || {
        let keep = if step > 0 { i < limit } else { i > limit };
        keep.then(|| {
            let v = i;
            i = i.wrapping_add(step);
            v
        })
    });
    ints(it)
}

/// Go's conversion of a `float64` to an integer: on amd64, a value out of
/// range (or NaN) gives the smallest `int64`.
#[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
pub(super) fn f64_to_i64(f: f64) -> i64 {
    if f.is_nan() || !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) {
        i64::MIN
    } else {
        f as i64
    }
}

/// `cast.ToInt64` (and `cast.ToInt`): what Sprig's arithmetic makes of any
/// value; what cannot be converted is 0.
pub(super) fn to_int64(g: &Go<'_>) -> i64 {
    match g {
        Go::Int(n) | Go::Int64(n) => *n,
        Go::Float(f) => f64_to_i64(*f),
        Go::Bool(b) => i64::from(*b),
        Go::Str(b) => parse_int(&trim_zero_decimal(b)).unwrap_or(0),
        Go::Number(n) => parse_int(&trim_zero_decimal(n.as_str().as_bytes())).unwrap_or(0),
        _ => 0,
    }
}

/// `cast.ToFloat64`; what cannot be converted is 0.
#[allow(clippy::cast_precision_loss)] // Go converts int to float64 the same way
pub(super) fn to_float64(g: &Go<'_>) -> f64 {
    match g {
        Go::Int(n) | Go::Int64(n) => *n as f64,
        Go::Float(f) => *f,
        Go::Bool(b) => f64::from(u8::from(*b)),
        Go::Str(b) => parse_float(b).unwrap_or(0.0),
        Go::Number(n) => parse_float(n.as_str().as_bytes()).unwrap_or(0.0),
        _ => 0.0,
    }
}

/// cast's `trimZeroDecimal`: `"42.00"` is `"42"`.
fn trim_zero_decimal(s: &[u8]) -> Vec<u8> {
    let mut found_zero = false;
    for i in (1..=s.len()).rev() {
        match s[i - 1] {
            b'.' if found_zero => return s[..i - 1].to_vec(),
            b'.' => {}
            b'0' => found_zero = true,
            _ => return s.to_vec(),
        }
    }
    s.to_vec()
}

/// strconv's `underscoreOK`: underscores only between digits, or between
/// a base prefix and a digit.
fn underscore_ok(s: &[u8]) -> bool {
    let mut s = s;
    if let [b'-' | b'+', rest @ ..] = s {
        s = rest;
    }
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if s.len() >= 2 && s[0] == b'0' && matches!(s[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = s[1].eq_ignore_ascii_case(&b'x');
    }
    while i < s.len() {
        let c = s[i];
        if c.is_ascii_digit() || (hex && (b'a'..=b'f').contains(&c.to_ascii_lowercase())) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
        i += 1;
    }
    saw != b'_'
}

/// `strconv.ParseInt(s, 0, 64)`: a sign, a base prefix (`0x`, `0o`, `0b`,
/// or a leading `0` for octal), underscores between digits.
pub(super) fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let (base, body) = match digits {
        [b'0', p, rest @ ..] if !rest.is_empty() && p.eq_ignore_ascii_case(&b'b') => (2, rest),
        [b'0', p, rest @ ..] if !rest.is_empty() && p.eq_ignore_ascii_case(&b'o') => (8, rest),
        [b'0', p, rest @ ..] if !rest.is_empty() && p.eq_ignore_ascii_case(&b'x') => (16, rest),
        [b'0', rest @ ..] => (8, rest),
        _ => (10, digits),
    };
    let mut value: u64 = 0;
    let mut underscores = false;
    for &c in body {
        let d = match c {
            b'_' => {
                underscores = true;
                continue;
            }
            b'0'..=b'9' => c - b'0',
            c if c.is_ascii_alphabetic() => c.to_ascii_lowercase() - b'a' + 10,
            _ => return None,
        };
        if u32::from(d) >= base {
            return None;
        }
        value = value
            .checked_mul(u64::from(base))?
            .checked_add(u64::from(d))?;
    }
    if underscores && !underscore_ok(digits) {
        return None;
    }
    if neg {
        if value > 1 << 63 {
            return None;
        }
        Some(0i64.wrapping_sub_unsigned(value))
    } else {
        i64::try_from(value).ok()
    }
}

/// `strconv.ParseFloat(s, 64)`, decimal and hexadecimal; a value out of
/// range is an error, as in Go.
pub(super) fn parse_float(s: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(s).ok()?;
    let unsigned = text.trim_start_matches(['+', '-']);
    if text.len() - unsigned.len() > 1 {
        return None;
    }
    let special = ["inf", "infinity", "nan"]
        .iter()
        .any(|w| unsigned.eq_ignore_ascii_case(w));
    if special {
        if unsigned.eq_ignore_ascii_case("nan") && unsigned.len() != text.len() {
            return None;
        }
        return text.parse().ok();
    }
    if !unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    if text.contains('_') && !underscore_ok(s) {
        return None;
    }
    let cleaned: String = text.chars().filter(|&c| c != '_').collect();
    let lower = cleaned.to_ascii_lowercase();
    let body = lower.trim_start_matches(['+', '-']);
    let value = if let Some(hex) = body.strip_prefix("0x") {
        let v = parse_hex_float(hex)?;
        if lower.starts_with('-') { -v } else { v }
    } else {
        cleaned.parse::<f64>().ok()?
    };
    value.is_finite().then_some(value)
}

/// A hexadecimal float's mantissa and `p` exponent (required).
#[allow(clippy::cast_precision_loss)]
fn parse_hex_float(s: &str) -> Option<f64> {
    let (mantissa, exp) = s.split_once('p')?;
    let exp: i32 = exp.parse().ok()?;
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    let mut value = 0f64;
    for c in whole.chars().chain(frac.chars()) {
        value = value * 16.0 + f64::from(c.to_digit(16)?);
    }
    let shift = exp - 4 * i32::try_from(frac.len()).ok()?;
    Some(value * 2f64.powi(shift))
}
