//! Go's `time.Time` as a converted template holds it: an instant (Unix
//! seconds and nanoseconds) and the zone it is shown in (an offset east of
//! UTC and the zone's abbreviation), with Go's calendar, its `String`,
//! `Format` and `Parse` ([`layout`]), and the methods a template can
//! call without arguments.
//!
//! The agent's `Local` zone is UTC: the agent's images and the driver's
//! run with no `TZ` and a UTC (or absent) `/etc/localtime`, where Go's
//! `Local` is named `UTC` with offset 0. Other zones come from the IANA
//! database the driver carries ([`zone`]).

pub(super) mod layout;

use serde_json::{Value, json};

/// Seconds from 0001-01-01 (Go's zero time) to the Unix epoch.
const ZERO_TO_UNIX: i64 = 62_135_596_800;

/// The abbreviation of the `Local` zone: UTC, as the agent runs.
pub(super) const LOCAL: &str = "UTC";

/// A `time.Time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::render) struct Time {
    /// Seconds since the Unix epoch.
    pub secs: i64,
    /// Nanoseconds within the second, `0..1e9`.
    pub nanos: u32,
    /// The zone's offset east of UTC, in seconds.
    pub offset: i32,
    /// The zone's abbreviation (`UTC`, or `""` for a fixed zone parsed
    /// from a bare offset).
    pub zone: String,
}

/// A date and clock reading in a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Civil {
    pub year: i64,
    /// 1..=12.
    pub month: u32,
    /// 1..=31.
    pub day: u32,
    /// 1..=366.
    pub yday: u32,
    /// 0 = Sunday.
    pub weekday: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
pub(super) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Go's `isLeap`.
pub(super) fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Go's `daysIn`.
pub(super) fn days_in(month: u32, year: i64) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl Time {
    /// Go's zero `time.Time`: 0001-01-01 00:00:00 UTC.
    pub fn zero() -> Self {
        Self {
            secs: -ZERO_TO_UNIX,
            nanos: 0,
            offset: 0,
            zone: LOCAL.to_owned(),
        }
    }

    /// `time.Unix(secs, 0)` in `Local`.
    pub fn unix(secs: i64) -> Self {
        Self {
            secs,
            nanos: 0,
            offset: 0,
            zone: LOCAL.to_owned(),
        }
    }

    /// The reading of this time's clock in its zone.
    pub(super) fn civil(&self) -> Civil {
        let local = self.secs + i64::from(self.offset);
        let days = local.div_euclid(86_400);
        let rem = u32::try_from(local.rem_euclid(86_400)).unwrap_or(0);
        // Hinnant's `civil_from_days`.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
        let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
        let year = yoe + era * 400 + i64::from(month <= 2);
        let yday = u32::try_from(days - days_from_civil(year, 1, 1) + 1).unwrap_or(1);
        // 1970-01-01 was a Thursday.
        let weekday = u32::try_from((days + 4).rem_euclid(7)).unwrap_or(0);
        Civil {
            year,
            month,
            day,
            yday,
            weekday,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
        }
    }

    /// `t.Add(d)`, `d` in nanoseconds (saturating as Go's does not need to:
    /// a duration spans at most 292 years).
    pub fn add(&self, nanos: i64) -> Self {
        let total =
            i128::from(self.secs) * 1_000_000_000 + i128::from(self.nanos) + i128::from(nanos);
        Self {
            secs: i64::try_from(total.div_euclid(1_000_000_000)).unwrap_or(self.secs),
            nanos: u32::try_from(total.rem_euclid(1_000_000_000)).unwrap_or(0),
            offset: self.offset,
            zone: self.zone.clone(),
        }
    }

    /// `t.AddDate(years, months, days)`: the clock reading moved by whole
    /// calendar units and normalized as Go's `Date` does (January 31 and
    /// a month is March 2 or 3), in the same zone.
    pub fn add_date(&self, years: i64, months: i64, days: i64) -> Self {
        let c = self.civil();
        let m = i64::from(c.month) - 1 + months;
        let year = c
            .year
            .saturating_add(years)
            .saturating_add(m.div_euclid(12));
        let month = u32::try_from(m.rem_euclid(12) + 1).unwrap_or(1);
        let day = days_from_civil(year, month, 1)
            .saturating_add(i64::from(c.day) - 1)
            .saturating_add(days);
        let clock = i64::from(c.hour * 3600 + c.minute * 60 + c.second);
        Self {
            secs: day
                .saturating_mul(86_400)
                .saturating_add(clock)
                .saturating_sub(i64::from(self.offset)),
            ..self.clone()
        }
    }

    /// `t.Sub(u)` in nanoseconds, saturated at `time.Duration`'s bounds.
    pub fn nanos_since(&self, u: &Self) -> i64 {
        let d = (i128::from(self.secs) - i128::from(u.secs)) * 1_000_000_000
            + i128::from(self.nanos)
            - i128::from(u.nanos);
        i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
    }

    /// `t.In(loc)` for a zone of fixed offset.
    pub fn in_zone(&self, offset: i32, zone: &str) -> Self {
        Self {
            offset,
            zone: zone.to_owned(),
            ..self.clone()
        }
    }

    /// `t.String()`.
    pub fn string(&self) -> String {
        layout::format(self, b"2006-01-02 15:04:05.999999999 -0700 MST")
    }

    /// `t.MarshalJSON()`'s text (without quotes): RFC 3339 with
    /// nanoseconds, or Go's error for a year it cannot write.
    pub fn rfc3339(&self) -> Result<String, String> {
        let year = self.civil().year;
        if !(0..=9999).contains(&year) {
            return Err(
                "json: error calling MarshalJSON for type time.Time: Time.MarshalJSON: year outside of range [0,9999]"
                    .to_owned(),
            );
        }
        Ok(layout::format(self, b"2006-01-02T15:04:05.999999999Z07:00"))
    }

    /// The model's JSON for this time.
    pub fn to_json(&self) -> Value {
        json!({"s": self.secs, "n": self.nanos, "o": self.offset, "z": self.zone})
    }

    /// Reads the model's JSON for a time.
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            secs: v.get("s")?.as_i64()?,
            nanos: u32::try_from(v.get("n")?.as_u64()?).ok()?,
            offset: i32::try_from(v.get("o")?.as_i64()?).ok()?,
            zone: v.get("z")?.as_str()?.to_owned(),
        })
    }
}

/// The offset and abbreviation at the instant `secs` of the zone
/// `time.LoadLocation(name)` loads, as Sprig's `dateInZone` uses it: `""`,
/// `UTC` and `Local` are UTC (see the module); a zone of the IANA database
/// by its exact name (Go reads it from files, so case counts); anything
/// else is an error for Go, and Sprig then uses UTC.
pub(super) fn zone(name: &[u8], secs: i64) -> (i32, String) {
    let utc = || (0, LOCAL.to_owned());
    let Ok(name) = std::str::from_utf8(name) else {
        return utc();
    };
    if matches!(name, "" | "UTC" | "Local") || name.contains("..") || name.starts_with(['/', '\\'])
    {
        return utc();
    }
    let Ok(tz) = jiff::tz::TimeZone::get(name) else {
        return utc();
    };
    if tz.iana_name() != Some(name) {
        return utc();
    }
    let Ok(at) = jiff::Timestamp::from_second(secs) else {
        return utc();
    };
    let info = tz.to_offset_info(at);
    (info.offset().seconds(), info.abbreviation().to_owned())
}

/// What a method a template calls without arguments returns: an `int`,
/// an `int64`, a string (`time.Month` and `time.Weekday` print their
/// names), a `bool`, or a time.
pub(super) enum Reading {
    Int(i64),
    Int64(i64),
    Text(String),
    Bool(bool),
    Time(Time),
}

/// Month and weekday names, as Go writes them.
pub(super) const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
pub(super) const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

impl Time {
    /// `t.Name()` for the methods of `time.Time` that take no argument;
    /// `None` for a name `time.Time` does not have.
    pub fn method(&self, name: &str) -> Option<Reading> {
        let c = self.civil();
        let nanos = i64::from(self.nanos);
        Some(match name {
            "Year" => Reading::Int(c.year),
            // time.Month and time.Weekday print their names.
            "Month" => Reading::Text(MONTHS[c.month as usize - 1].to_owned()),
            "Weekday" => Reading::Text(WEEKDAYS[c.weekday as usize].to_owned()),
            "Day" => Reading::Int(c.day.into()),
            "YearDay" => Reading::Int(c.yday.into()),
            "Hour" => Reading::Int(c.hour.into()),
            "Minute" => Reading::Int(c.minute.into()),
            "Second" => Reading::Int(c.second.into()),
            "Nanosecond" => Reading::Int(nanos),
            "Unix" => Reading::Int64(self.secs),
            "UnixMilli" => Reading::Int64(self.secs * 1000 + nanos / 1_000_000),
            "UnixMicro" => Reading::Int64(self.secs * 1_000_000 + nanos / 1000),
            "UnixNano" => Reading::Int64(self.secs.wrapping_mul(1_000_000_000) + nanos),
            "IsZero" => Reading::Bool(self.secs == -ZERO_TO_UNIX && self.nanos == 0),
            "String" => Reading::Text(self.string()),
            "UTC" | "Local" => Reading::Time(self.in_zone(0, LOCAL)),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calendar_is_gos() {
        assert_eq!(Time::zero().string(), "0001-01-01 00:00:00 +0000 UTC");
        assert_eq!(Time::unix(0).string(), "1970-01-01 00:00:00 +0000 UTC");
        let t = Time::unix(1_709_210_096).add(123_000_000);
        assert_eq!(t.string(), "2024-02-29 12:34:56.123 +0000 UTC");
        let c = t.civil();
        assert_eq!((c.yday, c.weekday), (60, 4));
        let east = t.in_zone(5 * 3600 + 1800, "");
        assert_eq!(east.string(), "2024-02-29 18:04:56.123 +0530 +0530");
        assert_eq!(Time::unix(-1).string(), "1969-12-31 23:59:59 +0000 UTC");
        assert!(
            Time::unix(253_402_300_800)
                .rfc3339()
                .unwrap_err()
                .contains("year outside")
        );
        assert_eq!(
            t.rfc3339().unwrap(),
            "2024-02-29T12:34:56.123Z",
            "UTC is written as Z"
        );
        for (y, m, d) in [(1, 1, 1), (1600, 2, 29), (2000, 3, 1), (9999, 12, 31)] {
            let days = days_from_civil(y, m, d);
            let c = Time::unix(days * 86_400).civil();
            assert_eq!((c.year, c.month, c.day), (y, m, d));
        }
    }
}
