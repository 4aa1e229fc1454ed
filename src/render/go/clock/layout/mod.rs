//! Go's time layouts (`"2006-01-02T15:04:05Z07:00"`): its tokenizer
//! (`nextStdChunk`) here, `Time.Format` ([`format`]) and
//! `time.ParseInLocation` with `Local` as the location ([`parse`]), ported
//! rule for rule so a layout means in the driver what it means in the
//! agent.

mod format;
mod parse;

pub(in crate::render) use format::{format, format_bytes};
pub(in crate::render) use parse::parse;

/// One element of a layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Std {
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekDay,
    WeekDay,
    Day,
    UnderDay,
    ZeroDay,
    UnderYearDay,
    ZeroYearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    LongYear,
    Year,
    Pm,
    LowerPm,
    Tz,
    Iso8601Tz,
    Iso8601SecondsTz,
    Iso8601ShortTz,
    Iso8601ColonTz,
    Iso8601ColonSecondsTz,
    NumTz,
    NumSecondsTz,
    NumShortTz,
    NumColonTz,
    NumColonSecondsTz,
    /// `.000` (`trim: false`) or `.999` (`trim: true`): `digits` digits
    /// after `sep`.
    Frac {
        trim: bool,
        digits: usize,
        sep: u8,
    },
}

fn lower_at(s: &[u8], i: usize) -> bool {
    s.get(i).is_some_and(u8::is_ascii_lowercase)
}

fn digit_at(s: &[u8], i: usize) -> bool {
    s.get(i).is_some_and(u8::is_ascii_digit)
}

/// A zone offset element at the start of `layout` (`-0700`, `Z07:00` …)
/// and its length.
fn offset_chunk(layout: &[u8]) -> Option<(Std, usize)> {
    let table: [(&[u8], Std); 10] = [
        (b"-070000", Std::NumSecondsTz),
        (b"-07:00:00", Std::NumColonSecondsTz),
        (b"-0700", Std::NumTz),
        (b"-07:00", Std::NumColonTz),
        (b"-07", Std::NumShortTz),
        (b"Z070000", Std::Iso8601SecondsTz),
        (b"Z07:00:00", Std::Iso8601ColonSecondsTz),
        (b"Z0700", Std::Iso8601Tz),
        (b"Z07:00", Std::Iso8601ColonTz),
        (b"Z07", Std::Iso8601ShortTz),
    ];
    table
        .into_iter()
        .find(|(text, _)| layout.starts_with(text))
        .map(|(text, std)| (std, text.len()))
}

/// A fractional second at the start of `layout` (`.000`, `,999` …, not
/// followed by another digit) and its length.
fn frac_chunk(layout: &[u8]) -> Option<(Std, usize)> {
    let (&sep, rest) = layout.split_first()?;
    let ch = *rest.first().filter(|c| matches!(c, b'0' | b'9'))?;
    let digits = rest.iter().take_while(|&&c| c == ch).count();
    (!digit_at(rest, digits)).then_some((
        Std::Frac {
            trim: ch == b'9',
            digits,
            sep,
        },
        1 + digits,
    ))
}

/// `nextStdChunk`: the text before the first element, the element, and
/// the rest (`None` when no element is left).
fn next_chunk(layout: &[u8]) -> (&[u8], Option<(Std, &[u8])>) {
    let at = |i: usize, text: &[u8]| layout.get(i..i + text.len()) == Some(text);
    for i in 0..layout.len() {
        let found = |std: Std, len: usize| (&layout[..i], Some((std, &layout[i + len..])));
        match layout[i] {
            b'J' if at(i, b"Jan") => {
                if at(i, b"January") {
                    return found(Std::LongMonth, 7);
                }
                if !lower_at(layout, i + 3) {
                    return found(Std::Month, 3);
                }
            }
            b'M' if layout.len() >= i + 3 => {
                if at(i, b"Mon") {
                    if at(i, b"Monday") {
                        return found(Std::LongWeekDay, 6);
                    }
                    if !lower_at(layout, i + 3) {
                        return found(Std::WeekDay, 3);
                    }
                }
                if at(i, b"MST") {
                    return found(Std::Tz, 3);
                }
            }
            b'0' => {
                if let Some(&c @ b'1'..=b'6') = layout.get(i + 1) {
                    let std = [
                        Std::ZeroMonth,
                        Std::ZeroDay,
                        Std::ZeroHour12,
                        Std::ZeroMinute,
                        Std::ZeroSecond,
                        Std::Year,
                    ][usize::from(c - b'1')];
                    return found(std, 2);
                }
                if at(i, b"002") {
                    return found(Std::ZeroYearDay, 3);
                }
            }
            b'1' => {
                if layout.get(i + 1) == Some(&b'5') {
                    return found(Std::Hour, 2);
                }
                return found(Std::NumMonth, 1);
            }
            b'2' => {
                if at(i, b"2006") {
                    return found(Std::LongYear, 4);
                }
                return found(Std::Day, 1);
            }
            b'_' => {
                if layout.get(i + 1) == Some(&b'2') {
                    // `_2006` is a literal `_` and the year.
                    if at(i + 1, b"2006") {
                        return (&layout[..=i], Some((Std::LongYear, &layout[i + 5..])));
                    }
                    return found(Std::UnderDay, 2);
                }
                if at(i, b"__2") {
                    return found(Std::UnderYearDay, 3);
                }
            }
            b'3' => return found(Std::Hour12, 1),
            b'4' => return found(Std::Minute, 1),
            b'5' => return found(Std::Second, 1),
            b'P' if layout.get(i + 1) == Some(&b'M') => return found(Std::Pm, 2),
            b'p' if layout.get(i + 1) == Some(&b'm') => return found(Std::LowerPm, 2),
            b'-' | b'Z' => {
                if let Some((std, len)) = offset_chunk(&layout[i..]) {
                    return found(std, len);
                }
            }
            b'.' | b',' => {
                if let Some((std, len)) = frac_chunk(&layout[i..]) {
                    return found(std, len);
                }
            }
            _ => {}
        }
    }
    (layout, None)
}

#[cfg(test)]
mod tests {
    use super::{format, parse};

    fn p(layout: &str, value: &str) -> String {
        match parse(layout.as_bytes(), value.as_bytes()) {
            Ok(t) => t.string(),
            Err(e) => format!("error: {e}"),
        }
    }

    /// Each as Go 1.19's `time.ParseInLocation(l, v, time.Local)` with a
    /// UTC `Local` prints it (the table is that program's output).
    #[test]
    fn parsing_is_gos() {
        for (layout, value, want) in [
            ("2006-01-02", "2024-02-29", "2024-02-29 00:00:00 +0000 UTC"),
            (
                "2006-01-02T15:04:05Z07:00",
                "2024-01-02T03:04:05+02:00",
                "2024-01-02 03:04:05 +0200 +0200",
            ),
            (
                "2006-01-02T15:04:05Z07:00",
                "2024-01-02T03:04:05Z",
                "2024-01-02 03:04:05 +0000 UTC",
            ),
            (
                "2006-01-02T15:04:05Z07:00",
                "2024-01-02T03:04:05+00:00",
                "2024-01-02 03:04:05 +0000 UTC",
            ),
            (
                "2006-01-02 15:04:05",
                "2024-01-02 03:04:05.250",
                "2024-01-02 03:04:05.25 +0000 UTC",
            ),
            (
                "Jan _2 2006 3:04PM MST",
                "feb  3 2021 12:30AM PST",
                "2021-02-03 00:30:00 +0000 PST",
            ),
            (
                "02 Jan 06 15:04 -0700",
                "03 Feb 21 23:59 -0130",
                "2021-02-03 23:59:00 -0130 -0130",
            ),
            (
                "2006-01-02",
                "2023-02-29",
                "error: parsing time \"2023-02-29\": day out of range",
            ),
            (
                "2006-01-02",
                "2023-13-01",
                "error: parsing time \"2023-13-01\": month out of range",
            ),
            (
                "2006-01-02",
                "2023-01-01x",
                "error: parsing time \"2023-01-01x\": extra text: \"x\"",
            ),
            ("2006 002", "2024 060", "2024-02-29 00:00:00 +0000 UTC"),
            (
                "15:04:05.000",
                "01:02:03.5",
                "error: parsing time \"01:02:03.5\" as \"15:04:05.000\": cannot parse \".5\" as \".000\"",
            ),
            ("MST 2006", "GMT+3 2020", "2020-01-01 03:00:00 +0300 GMT+3"),
            (
                "Monday, 02-Jan-06",
                "Tuesday, 02-Jan-24",
                "2024-01-02 00:00:00 +0000 UTC",
            ),
            (
                "2006-01-02 MST",
                "2024-01-02 UTC",
                "2024-01-02 00:00:00 +0000 UTC",
            ),
            (
                "2006-01-02 -07",
                "2024-01-02 +00",
                "2024-01-02 00:00:00 +0000 UTC",
            ),
            (
                "2006-01-02 MST",
                "2024-01-02 +03",
                "2024-01-02 00:00:00 +0000 +03",
            ),
            ("__2 2006", " 60 2023", "2023-03-01 00:00:00 +0000 UTC"),
            (
                "2006-01-02 15:04:05,999",
                "2024-01-02 03:04:05,1234567891",
                "error: parsing time \"2024-01-02 03:04:05,1234567891\": extra text: \"1\"",
            ),
            ("_2006", "_2020", "2020-01-01 00:00:00 +0000 UTC"),
            ("06-01-02", "68-01-02", "2068-01-02 00:00:00 +0000 UTC"),
            ("06-01-02", "69-01-02", "1969-01-02 00:00:00 +0000 UTC"),
        ] {
            assert_eq!(p(layout, value), want, "{layout} {value}");
        }
    }

    #[test]
    fn formatting_is_gos() {
        let t = parse(
            b"2006-01-02T15:04:05.999999999Z07:00",
            b"2009-11-10T23:04:05.123456789-05:30",
        )
        .unwrap();
        for (layout, want) in [
            (
                "Mon Jan _2 15:04:05 MST 2006",
                "Tue Nov 10 23:04:05 -0530 2009",
            ),
            (
                "Monday January 2 3:4:5 PM pm",
                "Tuesday November 10 11:4:5 PM pm",
            ),
            ("06 002 __2 .000 ,999999 .9", "09 314 314 .123 ,123456 .1"),
            (
                "Z07 Z0700 Z07:00:00 -07 -070000",
                "-05 -0530 -05:30:00 -05 -053000",
            ),
            (
                "2006-01-02T15:04:05.999999999Z07:00",
                "2009-11-10T23:04:05.123456789-05:30",
            ),
        ] {
            assert_eq!(format(&t, layout.as_bytes()), want, "{layout}");
        }
    }
}
