//! `time.ParseInLocation(layout, value, time.Local)`: a layout's elements
//! read from a value, then Go's checks and zone rules.

use super::super::{LOCAL, MONTHS, Time, WEEKDAYS, days_from_civil, days_in, is_leap};
use super::{Std, digit_at, next_chunk};

/// Go's `ParseError` text.
fn parse_error(layout: &[u8], value: &[u8], elem: &[u8], rest: &[u8], message: &str) -> String {
    let q = |b: &[u8]| format!("{:?}", String::from_utf8_lossy(b));
    if message.is_empty() {
        format!(
            "parsing time {} as {}: cannot parse {} as {}",
            q(value),
            q(layout),
            q(rest),
            q(elem)
        )
    } else {
        format!("parsing time {}{message}", q(value))
    }
}

fn getnum(s: &[u8], fixed: bool) -> Option<(i64, &[u8])> {
    if !digit_at(s, 0) {
        return None;
    }
    if !digit_at(s, 1) {
        if fixed {
            return None;
        }
        return Some((i64::from(s[0] - b'0'), &s[1..]));
    }
    Some((
        i64::from(s[0] - b'0') * 10 + i64::from(s[1] - b'0'),
        &s[2..],
    ))
}

fn getnum3(s: &[u8], fixed: bool) -> Option<(i64, &[u8])> {
    let n = s.iter().take(3).take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || (fixed && n != 3) {
        return None;
    }
    let v = s[..n].iter().fold(0, |v, c| v * 10 + i64::from(c - b'0'));
    Some((v, &s[n..]))
}

/// Go's internal `atoi`: an optional sign and digits, all of `s`.
fn atoi(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, s),
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        v = v.checked_mul(10)?.checked_add(i64::from(c - b'0'))?;
    }
    Some(if neg { -v } else { v })
}

/// `parseNanoseconds`: `value` starts with the separator; `n` bytes in all.
fn nanoseconds(value: &[u8], n: usize) -> Option<u32> {
    if !matches!(value.first(), Some(b'.' | b',')) {
        return None;
    }
    let n = n.min(10);
    let mut ns = atoi(&value[1..n])?;
    if ns < 0 {
        return None;
    }
    for _ in 0..10 - n {
        ns *= 10;
    }
    u32::try_from(ns).ok()
}

fn skip<'v>(mut value: &'v [u8], mut prefix: &[u8]) -> Option<&'v [u8]> {
    let cut = |s: &[u8]| -> usize { s.iter().take_while(|&&c| c == b' ').count() };
    while let Some(&p) = prefix.first() {
        if p == b' ' {
            if value.first().is_some_and(|&c| c != b' ') {
                return None;
            }
            prefix = &prefix[cut(prefix)..];
            value = &value[cut(value)..];
            continue;
        }
        if value.first() != Some(&p) {
            return None;
        }
        prefix = &prefix[1..];
        value = &value[1..];
    }
    Some(value)
}

fn lookup(names: impl Iterator<Item = &'static str>, value: &[u8]) -> Option<(usize, &[u8])> {
    for (i, name) in names.enumerate() {
        let name = name.as_bytes();
        if value.len() >= name.len() && value[..name.len()].eq_ignore_ascii_case(name) {
            return Some((i, &value[name.len()..]));
        }
    }
    None
}

/// `parseSignedOffset`: the length of `+3`, `-07`… (at most 12 hours).
fn signed_offset(value: &[u8]) -> usize {
    if !matches!(value.first(), Some(b'+' | b'-')) {
        return 0;
    }
    let digits = value[1..].iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return 0;
    }
    match atoi(&value[1..=digits]) {
        Some(x) if x <= 12 => 1 + digits,
        _ => 0,
    }
}

/// `parseTimeZone`: the length of a zone abbreviation at the start.
fn zone_len(value: &[u8]) -> Option<usize> {
    if value.len() < 3 {
        return None;
    }
    if value.starts_with(b"ChST") || value.starts_with(b"MeST") {
        return Some(4);
    }
    if value.starts_with(b"GMT") {
        return Some(
            3 + if value.len() == 3 {
                0
            } else {
                signed_offset(&value[3..])
            },
        );
    }
    if matches!(value[0], b'+' | b'-') {
        let n = signed_offset(value);
        return (n > 0).then_some(n);
    }
    let upper = value
        .iter()
        .take(6)
        .take_while(|c| c.is_ascii_uppercase())
        .count();
    match upper {
        5 if value[4] == b'T' => Some(5),
        4 if value[3] == b'T' || value.starts_with(b"WITA") => Some(4),
        3 => Some(3),
        _ => None,
    }
}

/// What parsing a layout's elements gathered.
struct Fields {
    year: i64,
    month: i64,
    day: i64,
    yday: i64,
    hour: i64,
    minute: i64,
    second: i64,
    nanos: u32,
    am: bool,
    pm: bool,
    utc: bool,
    offset: Option<i64>,
    zone: Vec<u8>,
}

/// One element read from `value`: the rest, or `Err(range)` with the
/// name of a field out of range (`""`: the element does not match).
#[allow(clippy::too_many_lines)] // one arm per element of Go's table
fn element<'v>(
    f: &mut Fields,
    std: Std,
    value: &'v [u8],
    layout_rest: &[u8],
) -> Result<&'v [u8], &'static str> {
    let bad = "";
    let range = |ok: bool, name: &'static str| if ok { Ok(()) } else { Err(name) };
    Ok(match std {
        Std::Year => {
            let p = value.get(..2).ok_or(bad)?;
            let y = atoi(p).ok_or(bad)?;
            f.year = if y >= 69 { y + 1900 } else { y + 2000 };
            &value[2..]
        }
        Std::LongYear => {
            if value.len() < 4 || !digit_at(value, 0) {
                return Err(bad);
            }
            f.year = atoi(&value[..4]).ok_or(bad)?;
            &value[4..]
        }
        Std::Month | Std::LongMonth => {
            let names = MONTHS
                .iter()
                .map(|m| if std == Std::Month { &m[..3] } else { m });
            let (i, rest) = lookup(names, value).ok_or(bad)?;
            f.month = i64::try_from(i).unwrap_or(0) + 1;
            rest
        }
        Std::NumMonth | Std::ZeroMonth => {
            let (m, rest) = getnum(value, std == Std::ZeroMonth).ok_or(bad)?;
            range((1..=12).contains(&m), "month")?;
            f.month = m;
            rest
        }
        Std::WeekDay | Std::LongWeekDay => {
            let names = WEEKDAYS
                .iter()
                .map(|d| if std == Std::WeekDay { &d[..3] } else { d });
            lookup(names, value).ok_or(bad)?.1
        }
        Std::Day | Std::UnderDay | Std::ZeroDay => {
            let value = match value {
                [b' ', rest @ ..] if std == Std::UnderDay => rest,
                _ => value,
            };
            let (d, rest) = getnum(value, std == Std::ZeroDay).ok_or(bad)?;
            f.day = d;
            rest
        }
        Std::UnderYearDay | Std::ZeroYearDay => {
            let mut value = value;
            for _ in 0..2 {
                if std == Std::UnderYearDay && value.first() == Some(&b' ') {
                    value = &value[1..];
                }
            }
            let (d, rest) = getnum3(value, std == Std::ZeroYearDay).ok_or(bad)?;
            f.yday = d;
            rest
        }
        Std::Hour => {
            let (h, rest) = getnum(value, false).ok_or(bad)?;
            range(h < 24, "hour")?;
            f.hour = h;
            rest
        }
        Std::Hour12 | Std::ZeroHour12 => {
            let (h, rest) = getnum(value, std == Std::ZeroHour12).ok_or(bad)?;
            range(h <= 12, "hour")?;
            f.hour = h;
            rest
        }
        Std::Minute | Std::ZeroMinute => {
            let (m, rest) = getnum(value, std == Std::ZeroMinute).ok_or(bad)?;
            range(m < 60, "minute")?;
            f.minute = m;
            rest
        }
        Std::Second | Std::ZeroSecond => {
            let (s, mut rest) = getnum(value, std == Std::ZeroSecond).ok_or(bad)?;
            range(s < 60, "second")?;
            f.second = s;
            // A fractional second the layout does not name is read here.
            if rest.len() >= 2 && matches!(rest[0], b'.' | b',') && digit_at(rest, 1) {
                let next = next_chunk(layout_rest).1.map(|(std, _)| std);
                if !matches!(next, Some(Std::Frac { .. })) {
                    let n = 2 + rest[2..].iter().take_while(|c| c.is_ascii_digit()).count();
                    f.nanos = nanoseconds(rest, n).ok_or(bad)?;
                    rest = &rest[n..];
                }
            }
            rest
        }
        Std::Pm | Std::LowerPm => {
            let p = value.get(..2).ok_or(bad)?;
            let (pm, am): (&[u8], &[u8]) = if std == Std::Pm {
                (b"PM", b"AM")
            } else {
                (b"pm", b"am")
            };
            if p == pm {
                f.pm = true;
            } else if p == am {
                f.am = true;
            } else {
                return Err(bad);
            }
            &value[2..]
        }
        Std::Tz => {
            if value.starts_with(b"UTC") {
                f.utc = true;
                &value[3..]
            } else {
                let n = zone_len(value).ok_or(bad)?;
                f.zone = value[..n].to_vec();
                &value[n..]
            }
        }
        Std::Frac {
            trim: false,
            digits,
            ..
        } => {
            let n = 1 + digits;
            if value.len() < n {
                return Err(bad);
            }
            f.nanos = nanoseconds(value, n).ok_or(bad)?;
            &value[n..]
        }
        Std::Frac { trim: true, .. } => {
            if value.len() < 2 || !matches!(value[0], b'.' | b',') || !digit_at(value, 1) {
                value
            } else {
                // At most nine digits; more are left for the layout's rest.
                let n = 1 + value[1..]
                    .iter()
                    .take(9)
                    .take_while(|c| c.is_ascii_digit())
                    .count();
                f.nanos = nanoseconds(value, n).ok_or(bad)?;
                &value[n..]
            }
        }
        tz => return offset(f, tz, value),
    })
}

fn offset<'v>(f: &mut Fields, std: Std, value: &'v [u8]) -> Result<&'v [u8], &'static str> {
    use Std::{
        Iso8601ColonSecondsTz, Iso8601ColonTz, Iso8601SecondsTz, Iso8601ShortTz, Iso8601Tz,
        NumColonSecondsTz, NumColonTz, NumSecondsTz, NumShortTz,
    };
    let bad = "";
    if matches!(std, Iso8601Tz | Iso8601ShortTz | Iso8601ColonTz) && value.first() == Some(&b'Z') {
        f.utc = true;
        return Ok(&value[1..]);
    }
    let need = |n: usize| if value.len() < n { Err(bad) } else { Ok(()) };
    let (sign, hour, minute, second, rest): (u8, &[u8], &[u8], &[u8], &[u8]) = match std {
        Iso8601ColonTz | NumColonTz => {
            need(6)?;
            if value[3] != b':' {
                return Err(bad);
            }
            (value[0], &value[1..3], &value[4..6], b"00", &value[6..])
        }
        NumShortTz | Iso8601ShortTz => {
            need(3)?;
            (value[0], &value[1..3], b"00", b"00", &value[3..])
        }
        Iso8601ColonSecondsTz | NumColonSecondsTz => {
            need(9)?;
            if value[3] != b':' || value[6] != b':' {
                return Err(bad);
            }
            (
                value[0],
                &value[1..3],
                &value[4..6],
                &value[7..9],
                &value[9..],
            )
        }
        Iso8601SecondsTz | NumSecondsTz => {
            need(7)?;
            (
                value[0],
                &value[1..3],
                &value[3..5],
                &value[5..7],
                &value[7..],
            )
        }
        _ => {
            need(5)?;
            (value[0], &value[1..3], &value[3..5], b"00", &value[5..])
        }
    };
    let hr = getnum(hour, true).ok_or(bad)?.0;
    let mm = getnum(minute, true).ok_or(bad)?.0;
    let ss = getnum(second, true).ok_or(bad)?.0;
    let off = (hr * 60 + mm) * 60 + ss;
    f.offset = Some(match sign {
        b'+' => off,
        b'-' => -off,
        _ => return Err(bad),
    });
    Ok(rest)
}

/// `time.ParseInLocation(layout, value, time.Local)`.
pub(in crate::render) fn parse(layout: &[u8], value: &[u8]) -> Result<Time, String> {
    let (full_layout, full_value) = (layout, value);
    let mut f = Fields {
        year: 0,
        month: -1,
        day: -1,
        yday: -1,
        hour: 0,
        minute: 0,
        second: 0,
        nanos: 0,
        am: false,
        pm: false,
        utc: false,
        offset: None,
        zone: Vec::new(),
    };
    let (mut layout, mut value) = (layout, value);
    loop {
        let (prefix, next) = next_chunk(layout);
        value = skip(value, prefix)
            .ok_or_else(|| parse_error(full_layout, full_value, prefix, value, ""))?;
        let Some((std, rest)) = next else {
            if !value.is_empty() {
                return Err(parse_error(
                    full_layout,
                    full_value,
                    b"",
                    value,
                    &format!(": extra text: {:?}", String::from_utf8_lossy(value)),
                ));
            }
            break;
        };
        let elem = &layout[prefix.len()..layout.len() - rest.len()];
        layout = rest;
        let hold = value;
        value = element(&mut f, std, value, layout).map_err(|range| {
            if range.is_empty() {
                parse_error(full_layout, full_value, elem, hold, "")
            } else {
                parse_error(
                    full_layout,
                    full_value,
                    elem,
                    hold,
                    &format!(": {range} out of range"),
                )
            }
        })?;
    }
    resolve(f, full_layout, full_value)
}

/// Go's checks and zone rules after the elements are read: AM/PM, the
/// day of the year, the day of the month, and which zone the time is in.
fn resolve(mut f: Fields, full_layout: &[u8], full_value: &[u8]) -> Result<Time, String> {
    // Go's errors about the whole value (no element quoted).
    let invalid = |message: &str| parse_error(full_layout, full_value, b"", b"", message);
    let out_of_range = |what: &str| invalid(&format!(": {what} out of range"));
    if f.pm && f.hour < 12 {
        f.hour += 12;
    } else if f.am && f.hour == 12 {
        f.hour = 0;
    }
    if f.yday >= 0 {
        let (mut m, mut d) = (0, 0);
        let mut yday = f.yday;
        if is_leap(f.year) {
            if yday == 31 + 29 {
                m = 2;
                d = 29;
            } else if yday > 31 + 29 {
                yday -= 1;
            }
        }
        if !(1..=365).contains(&yday) {
            return Err(out_of_range("day-of-year"));
        }
        if m == 0 {
            const BEFORE: [i64; 13] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365];
            m = (yday - 1) / 31 + 1;
            if BEFORE[usize::try_from(m).unwrap_or(0)] < yday {
                m += 1;
            }
            d = yday - BEFORE[usize::try_from(m - 1).unwrap_or(0)];
        }
        if f.month >= 0 && f.month != m {
            return Err(invalid(": day-of-year does not match month"));
        }
        f.month = m;
        if f.day >= 0 && f.day != d {
            return Err(invalid(": day-of-year does not match day"));
        }
        f.day = d;
    } else {
        if f.month < 0 {
            f.month = 1;
        }
        if f.day < 0 {
            f.day = 1;
        }
    }
    let month = u32::try_from(f.month).unwrap_or(1);
    if f.day < 1 || f.day > i64::from(days_in(month, f.year)) {
        return Err(out_of_range("day"));
    }
    let day = u32::try_from(f.day).unwrap_or(1);
    // As if in UTC; the zone found moves it.
    let wall =
        days_from_civil(f.year, month, day) * 86_400 + f.hour * 3600 + f.minute * 60 + f.second;
    let at = |offset: i64, zone: &[u8]| Time {
        secs: wall - offset,
        nanos: f.nanos,
        offset: i32::try_from(offset).unwrap_or(0),
        zone: String::from_utf8_lossy(zone).into_owned(),
    };
    if f.utc {
        return Ok(at(0, LOCAL.as_bytes()));
    }
    if let Some(offset) = f.offset {
        // `Local` (UTC) when it has that offset and name.
        if offset == 0 && (f.zone.is_empty() || f.zone == LOCAL.as_bytes()) {
            return Ok(at(0, LOCAL.as_bytes()));
        }
        return Ok(at(offset, &f.zone));
    }
    if !f.zone.is_empty() {
        if f.zone == LOCAL.as_bytes() {
            return Ok(at(0, LOCAL.as_bytes()));
        }
        // An unknown abbreviation: a zone of that name, at offset 0
        // unless it is `GMT±h` (the instant is read as UTC either way).
        let mut t = at(0, &f.zone);
        if f.zone.len() > 3 && f.zone.starts_with(b"GMT") {
            let hours = atoi(&f.zone[3..]).unwrap_or(0);
            t.offset = i32::try_from(hours * 3600).unwrap_or(0);
        }
        return Ok(t);
    }
    Ok(at(0, LOCAL.as_bytes()))
}
