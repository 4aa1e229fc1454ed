//! Sprig's integer arithmetic (`int64` results), each argument through
//! `cast.ToInt64`, and
//! its conversions (`int`, `int64`, `float64`, `toDecimal`, `seq`).

use serde_json::Value;

use super::super::fmt;
use super::super::model::{self, Go};
use super::conv::{Out, first, int, string, to_float64, to_int64, until_step};

/// `toDecimal`: `fmt.Sprint` of the value read as octal
/// (`strconv.ParseInt(s, 8, 64)`), 0 where it is not.
fn octal(g: &Go<'_>) -> Result<i64, String> {
    let printed = fmt::sprint(std::slice::from_ref(g), false)?;
    let (neg, digits) = match printed.as_slice() {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        all => (false, all),
    };
    if digits.is_empty() || !digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return Ok(0);
    }
    let mut value: i128 = 0;
    for d in digits {
        value = value * 8 + i128::from(d - b'0');
        if value > 1 << 63 {
            return Ok(0);
        }
    }
    Ok(i64::try_from(if neg { -value } else { value }).unwrap_or(0))
}

/// `seq [start [step]] end`: the integers from start to end, inclusive,
/// separated by spaces.
fn seq(args: &[Go<'_>]) -> Out {
    let params = args.iter().map(int).collect::<Result<Vec<i64>, _>>()?;
    let towards = |start: i64, end: i64| if end < start { -1 } else { 1 };
    let list = match params.as_slice() {
        [end] => {
            let step = towards(1, *end);
            until_step(1, end.wrapping_add(step), step)?
        }
        [start, end] => {
            let step = towards(*start, *end);
            until_step(*start, end.wrapping_add(step), step)?
        }
        [start, step, end] => {
            let increment = towards(*start, *end);
            if increment < 0 && *step > 0 {
                Vec::new()
            } else {
                until_step(*start, end.wrapping_add(increment), *step)?
            }
        }
        _ => Vec::new(),
    };
    let text: Vec<String> = list.iter().map(i64::to_string).collect();
    Ok(Value::String(text.join(" ")))
}

/// `sub`, `div`, `mod`.
fn binary(name: &str, args: &[Go<'_>]) -> Out {
    let [a, b] = args else {
        return Err(format!("wrong number of args for {name}"));
    };
    let (a, b) = (to_int64(a), to_int64(b));
    match name {
        "sprig_sub" => Ok(model::int64(a.wrapping_sub(b))),
        _ if b == 0 => Err("runtime error: integer divide by zero".to_owned()),
        "sprig_div" => Ok(model::int64(a.wrapping_div(b))),
        _ => Ok(model::int64(a.wrapping_rem(b))),
    }
}

/// `max` (`biggest`) and `min`.
fn extreme(name: &str, args: &[Go<'_>]) -> Out {
    let Some((head, rest)) = args.split_first() else {
        return Err(format!("wrong number of args for {name}"));
    };
    let mut best = to_int64(head);
    for a in rest {
        let v = to_int64(a);
        if (name == "sprig_min" && v < best) || (name != "sprig_min" && v > best) {
            best = v;
        }
    }
    Ok(model::int64(best))
}

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    Some(match name {
        "sprig_atoi" => string(&first(args)).map(|s| {
            model::int(
                std::str::from_utf8(&s)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0),
            )
        }),
        "sprig_int" => Ok(model::int(to_int64(&first(args)))),
        "sprig_int64" => Ok(model::int64(to_int64(&first(args)))),
        "sprig_float64" => Ok(model::float(to_float64(&first(args)))),
        "sprig_toDecimal" => octal(&first(args)).map(model::int64),
        "sprig_seq" => seq(args),
        "sprig_add1" => Ok(model::int64(to_int64(&first(args)).wrapping_add(1))),
        "sprig_add" => Ok(model::int64(
            args.iter().map(to_int64).fold(0i64, i64::wrapping_add),
        )),
        "sprig_mul" => Ok(model::int64(
            args.iter().map(to_int64).fold(1i64, i64::wrapping_mul),
        )),
        "sprig_sub" | "sprig_div" | "sprig_mod" => binary(name, args),
        "sprig_max" | "sprig_biggest" | "sprig_min" => extreme(name, args),
        _ => return None,
    })
}
