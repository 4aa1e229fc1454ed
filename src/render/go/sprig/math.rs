//! Sprig's integer arithmetic, each argument through `cast.ToInt64`.

use super::super::model::{self, Go};
use super::conv::{Out, first, string, to_int64};

/// `sub`, `div`, `mod`.
fn binary(name: &str, args: &[Go<'_>]) -> Out {
    let [a, b] = args else {
        return Err(format!("wrong number of args for {name}"));
    };
    let (a, b) = (to_int64(a), to_int64(b));
    match name {
        "sprig_sub" => Ok(model::int(a.wrapping_sub(b))),
        _ if b == 0 => Err("runtime error: integer divide by zero".to_owned()),
        "sprig_div" => Ok(model::int(a.wrapping_div(b))),
        _ => Ok(model::int(a.wrapping_rem(b))),
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
    Ok(model::int(best))
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
        "sprig_add1" => Ok(model::int(to_int64(&first(args)).wrapping_add(1))),
        "sprig_add" => Ok(model::int(
            args.iter().map(to_int64).fold(0i64, i64::wrapping_add),
        )),
        "sprig_mul" => Ok(model::int(
            args.iter().map(to_int64).fold(1i64, i64::wrapping_mul),
        )),
        "sprig_sub" | "sprig_div" | "sprig_mod" => binary(name, args),
        "sprig_max" | "sprig_biggest" | "sprig_min" => extreme(name, args),
        _ => return None,
    })
}
