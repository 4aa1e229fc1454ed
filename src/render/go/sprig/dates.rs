//! Sprig's dates over Go's `time.Time` ([`super::super::clock`]):
//! `toDate` (a layout and a string), `dateModify` (a Go duration added),
//! `unixEpoch`, and `date`, `dateInZone`, `htmlDate`, `htmlDateInZone`
//! over a date or Unix seconds. `now` and `ago` read the clock and stay
//! refused, and so does any call Sprig would answer with the time of
//! rendering (`date` of a value that is neither a date nor a Go integer).

use serde_json::Value;

use super::super::args::arity;
use super::super::clock::{self, Time, layout};
use super::super::model::{self, Go};
use super::conv::{Out, charge, int, string, text};
use super::durations;

/// A `time.Time` parameter.
fn time(g: &Go<'_>) -> Result<Time, String> {
    match g {
        Go::Time(t) => Ok(t.clone()),
        Go::Nil => Err("invalid value; expected time.Time".to_owned()),
        other => Err(format!(
            "wrong type for value; expected time.Time; got {}",
            model::type_name(other)
        )),
    }
}

/// `dateInZone`'s `date interface{}`: a date, or Unix seconds.
fn instant(name: &str, g: &Go<'_>) -> Result<Time, String> {
    match g {
        Go::Time(t) => Ok(t.clone()),
        Go::Int(n) | Go::Int64(n) => Ok(Time::unix(*n)),
        other => Err(format!(
            "{name} of a {} formats the time of rendering (Sprig reads only a date or a Go integer, anything else as now): convert it first, with sprig_toDate, or sprig_int64 for Unix seconds",
            model::type_name(other)
        )),
    }
}

/// `t.In(time.LoadLocation(zone)).Format(layout)`.
fn in_zone(layout_text: &[u8], t: &Time, zone: &Go<'_>) -> Out {
    let zone = string(zone)?;
    let (offset, abbreviation) = clock::zone(&zone, t.secs);
    charge(layout_text.len() * 16)?;
    Ok(text(&layout::format_bytes(
        &t.in_zone(offset, &abbreviation),
        layout_text,
    )))
}

fn modify(name: &str, args: &[Go<'_>], must: bool) -> Out {
    arity(name, args, 2)?;
    let d = string(&args[0])?;
    let t = time(&args[1])?;
    Ok(match durations::parse(&d) {
        Some(nanos) => model::time(&t.add(nanos)),
        None if must => {
            return Err(format!(
                "time: invalid duration {:?}",
                String::from_utf8_lossy(&d)
            ));
        }
        None => model::time(&t),
    })
}

fn to_date(name: &str, args: &[Go<'_>], must: bool) -> Out {
    arity(name, args, 2)?;
    let (layout_text, value) = (string(&args[0])?, string(&args[1])?);
    charge((layout_text.len() + value.len()) * 16)?;
    match layout::parse(&layout_text, &value) {
        Ok(t) => Ok(model::time(&t)),
        Err(e) if must => Err(e),
        Err(_) => Ok(model::time(&Time::zero())),
    }
}

/// A `time.Time`'s methods that take arguments; `None` for a name it
/// does not have.
pub(in crate::render::go) fn method(t: &Time, name: &str, args: &[Go<'_>]) -> Option<Out> {
    let want = |n: usize| arity(name, args, n);
    Some(match name {
        "Format" => want(1).and_then(|()| {
            let layout_text = string(&args[0])?;
            charge(layout_text.len() * 16)?;
            Ok(text(&layout::format_bytes(t, &layout_text)))
        }),
        "AddDate" => want(3).and_then(|()| {
            let (y, m, d) = (int(&args[0])?, int(&args[1])?, int(&args[2])?);
            Ok(model::time(&t.add_date(y, m, d)))
        }),
        "After" | "Before" | "Equal" | "Compare" | "Sub" => want(1).and_then(|()| {
            let u = time(&args[0])?;
            let (a, b) = ((t.secs, t.nanos), (u.secs, u.nanos));
            Ok(match name {
                "After" => Value::Bool(a > b),
                "Before" => Value::Bool(a < b),
                "Equal" => Value::Bool(a == b),
                "Compare" => model::int(match a.cmp(&b) {
                    std::cmp::Ordering::Less => -1,
                    std::cmp::Ordering::Equal => 0,
                    std::cmp::Ordering::Greater => 1,
                }),
                // A time.Duration prints as Go writes durations.
                _ => Value::String(durations::text(t.nanos_since(&u))),
            })
        }),
        _ => return None,
    })
}

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    Some(match name {
        "sprig_toDate" => to_date(name, args, false),
        "sprig_mustToDate" => to_date(name, args, true),
        "sprig_dateModify" | "sprig_date_modify" => modify(name, args, false),
        "sprig_mustDateModify" | "sprig_must_date_modify" => modify(name, args, true),
        "sprig_unixEpoch" => arity(name, args, 1)
            .and_then(|()| time(&args[0]))
            .map(|t| Value::String(t.secs.to_string())),
        "sprig_date" => arity(name, args, 2).and_then(|()| {
            let layout_text = string(&args[0])?;
            in_zone(
                &layout_text,
                &instant(name, &args[1])?,
                &Go::Str(b"Local"[..].into()),
            )
        }),
        "sprig_dateInZone" | "sprig_date_in_zone" => arity(name, args, 3).and_then(|()| {
            let layout_text = string(&args[0])?;
            in_zone(&layout_text, &instant(name, &args[1])?, &args[2])
        }),
        "sprig_htmlDate" => arity(name, args, 1).and_then(|()| {
            in_zone(
                b"2006-01-02",
                &instant(name, &args[0])?,
                &Go::Str(b"Local"[..].into()),
            )
        }),
        "sprig_htmlDateInZone" => arity(name, args, 2)
            .and_then(|()| in_zone(b"2006-01-02", &instant(name, &args[0])?, &args[1])),
        _ => return None,
    })
}
