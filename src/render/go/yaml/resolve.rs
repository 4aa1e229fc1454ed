//! yaml.v2's `resolve`: what a plain scalar means (YAML 1.1's booleans
//! `yes`/`on`/`y`, nulls, Go's integer syntaxes, floats, timestamps), used
//! both to read a document and to decide whether a string must be quoted
//! when written; and its `keyList` order of map keys, which sorts numbers
//! inside strings by value (`a2` before `a10`).

use std::cmp::Ordering;

use super::super::clock::layout;

/// What a plain scalar resolves to.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Resolved {
    Null,
    Bool(bool),
    /// A Go `int`.
    Int(i64),
    /// A `uint64` beyond `int`'s range.
    Uint(u64),
    Float(f64),
    /// A timestamp (read as its text, as yaml.v2 does into `interface{}`).
    Timestamp,
    Str,
}

fn map_value(s: &str) -> Option<Resolved> {
    Some(match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            Resolved::Bool(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Resolved::Bool(false)
        }
        "" | "~" | "null" | "Null" | "NULL" => Resolved::Null,
        ".nan" | ".NaN" | ".NAN" => Resolved::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => Resolved::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Resolved::Float(f64::NEG_INFINITY),
        _ => return None,
    })
}

/// `strconv.ParseFloat(s, 64)` for the forms yaml.v2 lets reach it (no
/// `inf`/`nan` words, no hex): `None` where Go fails, out of range
/// included.
fn parse_float(s: &str) -> Option<f64> {
    let ok = s
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'));
    let f: f64 = if ok { s.parse().ok()? } else { return None };
    f.is_finite().then_some(f)
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// `strconv.ParseInt(s, 0, 64)` / `ParseUint`: Go's prefixes (`0x`,
/// `0o`, `0b`, a leading `0` for octal).
fn parse_int(s: &str, signed: bool) -> Option<i128> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') if signed => (true, &s[1..]),
        Some(b'+') if signed => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.get(..2).map(str::to_ascii_lowercase);
    let (radix, digits) = match lower.as_deref() {
        Some("0x") => (16, &body[2..]),
        Some("0o") => (8, &body[2..]),
        Some("0b") => (2, &body[2..]),
        _ if body.len() > 1 && body.starts_with('0') => (8, &body[1..]),
        _ => (10, body),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = u64::from_str_radix(digits, radix).ok()?;
    let v = if neg { -i128::from(v) } else { i128::from(v) };
    if signed {
        (i128::from(i64::MIN)..=i128::from(i64::MAX))
            .contains(&v)
            .then_some(v)
    } else {
        Some(v)
    }
}

fn int_value(v: i128) -> Resolved {
    match i64::try_from(v) {
        Ok(n) => Resolved::Int(n),
        Err(_) => u64::try_from(v).map_or(Resolved::Str, Resolved::Uint),
    }
}

/// yaml.v2's `parseTimestamp`: `YYYY-` and one of its four layouts.
fn is_timestamp(s: &str) -> bool {
    let year = s.bytes().take_while(u8::is_ascii_digit).count();
    if year != 4 || s.as_bytes().get(4) != Some(&b'-') {
        return false;
    }
    [
        "2006-1-2T15:4:5.999999999Z07:00",
        "2006-1-2t15:4:5.999999999Z07:00",
        "2006-1-2 15:4:5.999999999",
        "2006-1-2",
    ]
    .iter()
    .any(|l| layout::parse(l.as_bytes(), s.as_bytes()).is_ok())
}

/// What `s`, written plain with no tag, means.
pub(super) fn resolve(s: &str) -> Resolved {
    let hint = match s.as_bytes().first() {
        None => b'N',
        Some(b'+' | b'-') => b'S',
        Some(b'0'..=b'9') => b'D',
        Some(b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' | b'~') => b'M',
        Some(b'.') => b'.',
        Some(_) => return Resolved::Str,
    };
    if let Some(v) = map_value(s) {
        return v;
    }
    match hint {
        b'.' => parse_float(s).map_or(Resolved::Str, Resolved::Float),
        b'D' | b'S' => {
            if is_timestamp(s) {
                return Resolved::Timestamp;
            }
            let plain = s.replace('_', "");
            if let Some(v) = parse_int(&plain, true) {
                return int_value(v);
            }
            if let Some(v) = parse_int(&plain, false) {
                return int_value(v);
            }
            // (yaml.v2's own `0b` branch follows; Go's ParseInt has read
            // `0b` itself since Go 1.13, so it never decides anything.)
            match parse_float(&plain) {
                Some(f) if yaml_style_float(&plain) => Resolved::Float(f),
                _ => Resolved::Str,
            }
        }
        _ => Resolved::Str,
    }
}

/// yaml.v2's `isBase60Float`: `1:20`, `-3:25:45.5` (quoted when written,
/// for YAML 1.1 readers).
pub(super) fn is_base60_float(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty()
        || !(b[0].is_ascii_digit() || matches!(b[0], b'+' | b'-' | b'.'))
        || !s.contains(':')
    {
        return false;
    }
    // ^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$
    let mut i = usize::from(matches!(b[0], b'+' | b'-'));
    if !b.get(i).is_some_and(u8::is_ascii_digit) {
        return false;
    }
    while b.get(i).is_some_and(|c| c.is_ascii_digit() || *c == b'_') {
        i += 1;
    }
    let mut groups = 0;
    while b.get(i) == Some(&b':') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) && i - start < 2 {
            i += 1;
        }
        let group = &b[start..i];
        let ok = match group {
            [d] => d.is_ascii_digit(),
            [a, _] => (b'0'..=b'5').contains(a),
            _ => false,
        };
        if !ok {
            return false;
        }
        groups += 1;
    }
    if groups == 0 {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(|c| c.is_ascii_digit() || *c == b'_') {
            i += 1;
        }
    }
    i == b.len()
}

/// A map key as yaml.v2's `keyList` sees it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Key<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

impl Key<'_> {
    /// `reflect.Kind`'s number (its order is the order of kinds).
    fn kind(self) -> u8 {
        match self {
            Key::Bool(_) => 1,
            Key::Int(_) => 2,
            Key::Float(_) => 14,
            Key::Nil => 20,
            Key::Str(_) => 24,
        }
    }

    #[allow(clippy::cast_precision_loss)] // Go's float64(v.Int())
    fn float(self) -> Option<f64> {
        match self {
            Key::Int(n) => Some(n as f64),
            Key::Float(f) => Some(f),
            Key::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            Key::Nil | Key::Str(_) => None,
        }
    }
}

/// `keyList.Less`.
pub(super) fn key_less(a: Key<'_>, b: Key<'_>) -> bool {
    let (ak, bk) = (a.kind(), b.kind());
    if let (Some(af), Some(bf)) = (a.float(), b.float()) {
        #[allow(clippy::float_cmp)] // Go compares with !=
        if af != bf {
            return af < bf;
        }
        if ak != bk {
            return ak < bk;
        }
        return match (a, b) {
            (Key::Bool(x), Key::Bool(y)) => !x & y,
            (Key::Int(x), Key::Int(y)) => x < y,
            (Key::Float(x), Key::Float(y)) => x < y,
            _ => false,
        };
    }
    let (Key::Str(a), Key::Str(b)) = (a, b) else {
        return ak < bk;
    };
    let (ar, br): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    for i in 0..ar.len().min(br.len()) {
        if ar[i] == br[i] {
            continue;
        }
        let (al, bl) = (ar[i].is_alphabetic(), br[i].is_alphabetic());
        if al && bl {
            return ar[i] < br[i];
        }
        if al || bl {
            return bl;
        }
        let (mut an, mut bn) = (0i64, 0i64);
        if ar[i] == '0' || br[i] == '0' {
            for j in (0..i).rev() {
                if !ar[j].is_ascii_digit() {
                    break;
                }
                if ar[j] != '0' {
                    an = 1;
                    bn = 1;
                    break;
                }
            }
        }
        let mut ai = i;
        while ai < ar.len() && ar[ai].is_ascii_digit() {
            an = an
                .wrapping_mul(10)
                .wrapping_add(i64::from(ar[ai] as u8 - b'0'));
            ai += 1;
        }
        let mut bi = i;
        while bi < br.len() && br[bi].is_ascii_digit() {
            bn = bn
                .wrapping_mul(10)
                .wrapping_add(i64::from(br[bi] as u8 - b'0'));
            bi += 1;
        }
        if an != bn {
            return an < bn;
        }
        if ai != bi {
            return ai < bi;
        }
        return ar[i] < br[i];
    }
    ar.len() < br.len()
}

/// [`key_less`] as an ordering, for sorting.
pub(super) fn key_order(a: Key<'_>, b: Key<'_>) -> Ordering {
    if key_less(a, b) {
        Ordering::Less
    } else if key_less(b, a) {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}
