//! Go's duration syntax, parsed one way for the whole workspace.
//!
//! Vault and Kubernetes are written in Go and speak durations as Go's
//! `time.ParseDuration` reads them: `300ms`, `45s`, `5m`, `1h30m`, `1.5h`.
//! The driver reads them in its flags and volume attributes; its Vault
//! double reads them in request bodies (`increment`, `ttl`) and in stored
//! secrets. Were the two parsers different, a test could pass against the
//! double with a duration the driver would read otherwise, so both use this
//! one.

use std::time::Duration;

/// The longest duration [`parse`] accepts, in seconds (about 31 years).
const MAX_SECS: f64 = 1e9;

/// Which unit suffixes a duration may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Units {
    /// Go's: `ns`, `us` (or `µs`), `ms`, `s`, `m` and `h`.
    Go,
    /// Go's and `d` (24 hours), which Vault's duration fields also take
    /// (`parseutil.ParseDurationSecond` reads `<n>d`). Here `d` is a unit
    /// like the others, so `1d12h` and `1.5d` parse too.
    WithDays,
}

/// Parses a Go duration such as `300ms`, `45s`, `5m`, `1h30m` or `1.5h`.
///
/// The grammar is Go's `time.ParseDuration` without a sign: one or more
/// terms written together, each a decimal number (digits, optionally with
/// a fraction) followed by a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`).
/// A bare `0` is zero; any other number needs a unit. Surrounding
/// whitespace is ignored. More than 10⁹ seconds is refused.
///
/// ```
/// use std::time::Duration;
///
/// assert_eq!(go_duration::parse("1h30m"), Ok(Duration::from_secs(5400)));
/// assert_eq!(go_duration::parse("250ms"), Ok(Duration::from_millis(250)));
/// assert!(go_duration::parse("90").is_err());
/// ```
///
/// # Errors
/// A message that quotes `value` and shows the expected form.
pub fn parse(value: &str) -> Result<Duration, String> {
    let secs = parse_secs_f64(value, Units::Go)?;
    if !secs.is_finite() || secs > MAX_SECS {
        return Err(not_a_duration(value));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The seconds a duration spells, summed as a float, for callers that
/// bound and round them their own way: [`parse`] without its upper bound,
/// and with the choice of [`Units`]. Never negative; infinite when a
/// number is too long for an `f64`.
///
/// # Errors
/// As [`parse`]: a message that quotes `value` and shows the expected form.
pub fn parse_secs_f64(value: &str, units: Units) -> Result<f64, String> {
    let fail = || not_a_duration(value);
    let mut rest = value.trim();
    if rest.is_empty() {
        return Err(fail());
    }
    if rest == "0" {
        return Ok(0.0);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(fail)?;
        if number_len == 0 {
            return Err(fail());
        }
        let number: f64 = rest[..number_len].parse().map_err(|_| fail())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match (&rest[..unit_len], units) {
            ("ns", _) => 1e-9,
            ("us" | "µs", _) => 1e-6,
            ("ms", _) => 1e-3,
            ("s", _) => 1.0,
            ("m", _) => 60.0,
            ("h", _) => 3600.0,
            ("d", Units::WithDays) => 86_400.0,
            _ => return Err(fail()),
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Ok(total)
}

fn not_a_duration(value: &str) -> String {
    format!("{value:?} is not a duration such as 30s, 5m or 1h30m")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let table = [
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("1.5h", 5_400_000),
            ("250ms", 250),
            ("0", 0),
        ];
        for (text, ms) in table {
            assert_eq!(parse(text).unwrap(), Duration::from_millis(ms), "{text}");
        }
        for bad in ["", "5", "m", "5x", "-5s", "1h 30m"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn small_units_and_whitespace() {
        let table = [
            ("1ns", Duration::from_nanos(1)),
            ("1500us", Duration::from_micros(1500)),
            ("1500µs", Duration::from_micros(1500)),
            ("2h45m30.5s", Duration::from_millis(9_930_500)),
            (" 45s\n", Duration::from_secs(45)),
            (".5s", Duration::from_millis(500)),
        ];
        for (text, want) in table {
            assert_eq!(parse(text).unwrap(), want, "{text:?}");
        }
    }

    #[test]
    fn refusals_quote_the_value() {
        assert_eq!(
            parse("5x").unwrap_err(),
            "\"5x\" is not a duration such as 30s, 5m or 1h30m"
        );
        for bad in ["1h30", "1..5s", ".s", "1e3s", "+5s", "1d", "1000000001s"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse("1000000000s").unwrap(),
            Duration::from_secs(1_000_000_000)
        );
    }

    #[test]
    fn days_only_when_asked_for() {
        let table = [
            ("2d", Some(172_800.0)),
            ("1d12h", Some(129_600.0)),
            ("1.5d", Some(129_600.0)),
            ("90s", Some(90.0)),
            ("0", Some(0.0)),
            ("90", None),
            ("", None),
            ("d", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_secs_f64(text, Units::WithDays).ok(), want, "{text:?}");
        }
        assert!(parse_secs_f64("2d", Units::Go).is_err());
    }

    #[test]
    fn seconds_are_unbounded() {
        assert_eq!(parse_secs_f64("300000h", Units::Go), Ok(1_080_000_000.0));
        let huge = format!("{}s", "9".repeat(400));
        assert_eq!(parse_secs_f64(&huge, Units::Go), Ok(f64::INFINITY));
        assert!(parse(&huge).is_err());
    }
}
