//! Sprig's `duration` and `durationRound` over Go's `time.Duration`:
//! its parser (`time.ParseDuration`, exact in nanoseconds) and its text
//! (`Duration.String`: `1h2m3.5s`, `1.5ms`).

use serde_json::Value;

use super::super::model::Go;
use super::conv::{Out, first};

const SECOND: u64 = 1_000_000_000;

/// `time.ParseDuration`: nanoseconds, `None` where Go fails.
#[allow(clippy::many_single_char_names)] // Go's names: v, f, s
pub(super) fn parse(text: &[u8]) -> Option<i64> {
    let (neg, mut s) = match text {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, text),
    };
    if s == b"0" {
        return Some(0);
    }
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return None;
        }
        let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
        let mut v: u64 = 0;
        for &c in &s[..digits] {
            if v > (1 << 63) / 10 {
                return None;
            }
            v = v * 10 + u64::from(c - b'0');
            if v > 1 << 63 {
                return None;
            }
        }
        s = &s[digits..];
        let (mut f, mut scale, mut post) = (0u64, 1f64, false);
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
            let mut overflow = false;
            for &c in &s[..n] {
                if overflow || f > ((1u64 << 63) - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let y = f * 10 + u64::from(c - b'0');
                if y > 1 << 63 {
                    overflow = true;
                    continue;
                }
                f = y;
                scale *= 10.0;
            }
            post = n > 0;
            s = &s[n..];
        }
        if digits == 0 && !post {
            return None;
        }
        let unit_len = s
            .iter()
            .take_while(|&&c| !(c == b'.' || c.is_ascii_digit()))
            .count();
        let unit: u64 = match &s[..unit_len] {
            b"ns" => 1,
            b"us" | b"\xc2\xb5s" | b"\xce\xbcs" => 1_000,
            b"ms" => 1_000_000,
            b"s" => SECOND,
            b"m" => 60 * SECOND,
            b"h" => 3600 * SECOND,
            _ => return None,
        };
        s = &s[unit_len..];
        if v > (1 << 63) / unit {
            return None;
        }
        v *= unit;
        if f > 0 {
            #[allow(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss
            )] // Go computes the fraction in float64 too
            let part = (f as f64 * (unit as f64 / scale)) as u64;
            v += part;
            if v > 1 << 63 {
                return None;
            }
        }
        total += v;
        if total > 1 << 63 {
            return None;
        }
    }
    if neg {
        return Some(0i64.wrapping_sub_unsigned(total));
    }
    i64::try_from(total).ok()
}

/// `fmtFrac`: `v`'s last `prec` digits as a fraction without trailing
/// zeros (and without the point when they are all zero).
fn fraction(v: u64, prec: u32) -> (String, u64) {
    let mut digits = String::new();
    let mut v = v;
    let mut printed = false;
    for _ in 0..prec {
        let digit = v % 10;
        printed = printed || digit != 0;
        if printed {
            digits.insert(0, char::from(b'0' + u8::try_from(digit).unwrap_or(0)));
        }
        v /= 10;
    }
    if printed {
        digits.insert(0, '.');
    }
    (digits, v)
}

/// `time.Duration.String`.
pub(super) fn text(d: i64) -> String {
    let u = d.unsigned_abs();
    let sign = if d < 0 { "-" } else { "" };
    if u < SECOND {
        let (prec, unit) = match u {
            0 => return "0s".to_owned(),
            1..1_000 => (0, "ns"),
            1_000..1_000_000 => (3, "\u{b5}s"),
            _ => (6, "ms"),
        };
        let (frac, whole) = fraction(u, prec);
        return format!("{sign}{whole}{frac}{unit}");
    }
    let (frac, secs) = fraction(u, 9);
    let (mins, secs) = (secs / 60, secs % 60);
    if mins == 0 {
        return format!("{sign}{secs}{frac}s");
    }
    let (hours, mins) = (mins / 60, mins % 60);
    if hours == 0 {
        return format!("{sign}{mins}m{secs}{frac}s");
    }
    format!("{sign}{hours}h{mins}m{secs}{frac}s")
}

/// `durationRound`: the duration in its largest whole unit.
fn round(d: i64) -> String {
    let u = d.unsigned_abs();
    let hour = 3600 * SECOND;
    let units = [
        (hour * 24 * 365, "y"),
        (hour * 24 * 30, "mo"),
        (hour * 24, "d"),
        (hour, "h"),
        (60 * SECOND, "m"),
        (SECOND, "s"),
    ];
    units.iter().find(|(size, _)| u > *size).map_or_else(
        || "0s".to_owned(),
        |(size, name)| format!("{}{name}", u / size),
    )
}

/// `strconv.ParseInt(s, 10, 64)` as Sprig's `duration` reads it: 0 for
/// bad syntax, the nearest bound out of range.
fn seconds(s: &[u8]) -> i64 {
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    let mut v: i128 = 0;
    for &c in digits {
        v = (v * 10 + i128::from(c - b'0')).min(1 << 64);
    }
    let v = if neg { -v } else { v };
    i64::try_from(v).unwrap_or(if neg { i64::MIN } else { i64::MAX })
}

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    // Each takes a string or an `int64`; any other type is 0, an `int`
    // (a constant) included.
    Some(Ok(Value::String(match (name, first(args)) {
        ("sprig_duration", Go::Str(s)) => text(seconds(&s).wrapping_mul(1_000_000_000)),
        ("sprig_duration", Go::Int64(n)) => text(n.wrapping_mul(1_000_000_000)),
        ("sprig_durationRound", Go::Str(s)) => round(parse(&s).unwrap_or(0)),
        ("sprig_durationRound", Go::Int64(n)) => round(n),
        ("sprig_durationRound", Go::Time(_)) => {
            return Some(Err(
                "sprig_durationRound of a date is the time since it, which depends on the time of rendering: round a duration instead".to_owned(),
            ));
        }
        ("sprig_duration" | "sprig_durationRound", _) => "0s".to_owned(),
        _ => return None,
    })))
}
