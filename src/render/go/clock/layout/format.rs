//! `Time.Format`: a layout's elements written for a time.

use super::super::{Civil, MONTHS, Time, WEEKDAYS};
use super::{Std, next_chunk};

/// Go's `appendInt`: `x` in decimal, zero-padded to `width`.
fn push_int(out: &mut Vec<u8>, x: i64, width: usize) {
    if x < 0 {
        out.push(b'-');
    }
    let digits = x.unsigned_abs().to_string();
    for _ in digits.len()..width {
        out.push(b'0');
    }
    out.extend_from_slice(digits.as_bytes());
}

fn push_nanos(out: &mut Vec<u8>, nanos: u32, trim: bool, digits: usize, sep: u8) {
    if trim && (digits == 0 || nanos == 0) {
        return;
    }
    let start = out.len();
    out.push(sep);
    push_int(out, i64::from(nanos), 9);
    if digits < 9 {
        out.truncate(out.len() - 9 + digits);
    }
    if trim {
        while out.len() > start && out.last() == Some(&b'0') {
            out.pop();
        }
        if out.len() == start + 1 {
            out.pop();
        }
    }
}

fn push_offset(out: &mut Vec<u8>, std: Std, offset: i32) {
    use Std::{
        Iso8601ColonSecondsTz, Iso8601ColonTz, Iso8601SecondsTz, Iso8601ShortTz, Iso8601Tz,
        NumColonSecondsTz, NumColonTz, NumSecondsTz, NumShortTz,
    };
    let iso = matches!(
        std,
        Iso8601Tz | Iso8601ColonTz | Iso8601SecondsTz | Iso8601ShortTz | Iso8601ColonSecondsTz
    );
    if offset == 0 && iso {
        out.push(b'Z');
        return;
    }
    out.push(if offset < 0 { b'-' } else { b'+' });
    let abs = i64::from(offset.unsigned_abs());
    let minutes = abs / 60;
    push_int(out, minutes / 60, 2);
    if matches!(
        std,
        Iso8601ColonTz | NumColonTz | Iso8601ColonSecondsTz | NumColonSecondsTz
    ) {
        out.push(b':');
    }
    if !matches!(std, NumShortTz | Iso8601ShortTz) {
        push_int(out, minutes % 60, 2);
    }
    if matches!(
        std,
        Iso8601SecondsTz | NumSecondsTz | NumColonSecondsTz | Iso8601ColonSecondsTz
    ) {
        if matches!(std, NumColonSecondsTz | Iso8601ColonSecondsTz) {
            out.push(b':');
        }
        push_int(out, abs % 60, 2);
    }
}

/// `t.Format(layout)`.
pub(in crate::render) fn format(t: &Time, layout: &[u8]) -> String {
    let mut out = Vec::with_capacity(layout.len() + 10);
    format_into(&mut out, t, layout);
    String::from_utf8_lossy(&out).into_owned()
}

/// `t.Format(layout)` as bytes (a layout's literal text may be any bytes).
pub(in crate::render) fn format_bytes(t: &Time, layout: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(layout.len() + 10);
    format_into(&mut out, t, layout);
    out
}

fn format_into(out: &mut Vec<u8>, t: &Time, mut layout: &[u8]) {
    let c: Civil = t.civil();
    loop {
        let (prefix, next) = next_chunk(layout);
        out.extend_from_slice(prefix);
        let Some((std, rest)) = next else { break };
        layout = rest;
        let hour12 = if c.hour.is_multiple_of(12) {
            12
        } else {
            c.hour % 12
        };
        match std {
            Std::Year => push_int(out, c.year.rem_euclid(100), 2),
            Std::LongYear => push_int(out, c.year, 4),
            Std::Month => out.extend_from_slice(&MONTHS[c.month as usize - 1].as_bytes()[..3]),
            Std::LongMonth => out.extend_from_slice(MONTHS[c.month as usize - 1].as_bytes()),
            Std::NumMonth => push_int(out, c.month.into(), 0),
            Std::ZeroMonth => push_int(out, c.month.into(), 2),
            Std::WeekDay => out.extend_from_slice(&WEEKDAYS[c.weekday as usize].as_bytes()[..3]),
            Std::LongWeekDay => out.extend_from_slice(WEEKDAYS[c.weekday as usize].as_bytes()),
            Std::Day => push_int(out, c.day.into(), 0),
            Std::UnderDay => {
                if c.day < 10 {
                    out.push(b' ');
                }
                push_int(out, c.day.into(), 0);
            }
            Std::ZeroDay => push_int(out, c.day.into(), 2),
            Std::UnderYearDay => {
                if c.yday < 100 {
                    out.push(b' ');
                    if c.yday < 10 {
                        out.push(b' ');
                    }
                }
                push_int(out, c.yday.into(), 0);
            }
            Std::ZeroYearDay => push_int(out, c.yday.into(), 3),
            Std::Hour => push_int(out, c.hour.into(), 2),
            Std::Hour12 => push_int(out, hour12.into(), 0),
            Std::ZeroHour12 => push_int(out, hour12.into(), 2),
            Std::Minute => push_int(out, c.minute.into(), 0),
            Std::ZeroMinute => push_int(out, c.minute.into(), 2),
            Std::Second => push_int(out, c.second.into(), 0),
            Std::ZeroSecond => push_int(out, c.second.into(), 2),
            Std::Pm => out.extend_from_slice(if c.hour >= 12 { b"PM" } else { b"AM" }),
            Std::LowerPm => out.extend_from_slice(if c.hour >= 12 { b"pm" } else { b"am" }),
            Std::Tz => {
                if t.zone.is_empty() {
                    let minutes = t.offset / 60;
                    out.push(if minutes < 0 { b'-' } else { b'+' });
                    let minutes = i64::from(minutes.unsigned_abs());
                    push_int(out, minutes / 60, 2);
                    push_int(out, minutes % 60, 2);
                } else {
                    out.extend_from_slice(t.zone.as_bytes());
                }
            }
            Std::Frac { trim, digits, sep } => push_nanos(out, t.nanos, trim, digits, sep),
            tz => push_offset(out, tz, t.offset),
        }
    }
}
