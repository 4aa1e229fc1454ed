//! consul-template's arithmetic (`int64` for integers, `float64`
//! otherwise) and its number parsers.

use serde_json::Value;

use super::super::args::{Out, arity, s};
use super::super::fmt;
use super::super::model::{self, Go};

/// A number of the arithmetic functions.
#[derive(Clone, Copy)]
enum Num {
    I(i64),
    F(f64),
}

fn num(g: &Go<'_>, name: &str) -> Result<Num, String> {
    match g {
        Go::Int(n) | Go::Int64(n) => Ok(Num::I(*n)),
        Go::Float(f) => Ok(Num::F(*f)),
        other => Err(format!(
            "{name}: unknown type for {} ({})",
            quoted_value(other),
            model::type_name(other)
        )),
    }
}

fn quoted_value(g: &Go<'_>) -> String {
    match g {
        Go::Str(b) => fmt::quote(b, false),
        Go::Number(n) => format!("%!q(json.Number={})", n.as_str()),
        _ => "%!q(<nil>)".to_owned(),
    }
}

#[allow(clippy::cast_precision_loss)] // Go converts int64 to float64 the same way
fn arithmetic(name: &str, b: &Go<'_>, a: &Go<'_>) -> Out {
    let (a, b) = (num(a, name)?, num(b, name)?);
    let as_f = |n: Num| match n {
        Num::I(i) => i as f64,
        Num::F(f) => f,
    };
    let out = match (name, a, b) {
        ("add", Num::I(x), Num::I(y)) => Num::I(x.wrapping_add(y)),
        ("subtract", Num::I(x), Num::I(y)) => Num::I(x.wrapping_sub(y)),
        ("multiply", Num::I(x), Num::I(y)) => Num::I(x.wrapping_mul(y)),
        ("divide" | "modulo", Num::I(_), Num::I(0)) => {
            return Err("runtime error: integer divide by zero".to_owned());
        }
        ("divide", Num::I(x), Num::I(y)) => Num::I(x.wrapping_div(y)),
        ("modulo", Num::I(x), Num::I(y)) => Num::I(x.wrapping_rem(y)),
        ("modulo", _, _) => return Err(format!("{name}: unknown type")),
        ("add", x, y) => Num::F(as_f(x) + as_f(y)),
        ("subtract", x, y) => Num::F(as_f(x) - as_f(y)),
        ("multiply", x, y) => Num::F(as_f(x) * as_f(y)),
        ("divide", x, y) => Num::F(as_f(x) / as_f(y)),
        ("minimum", x, y) => {
            if as_f(x) < as_f(y) {
                x
            } else {
                y
            }
        }
        ("maximum", x, y) => {
            if as_f(x) > as_f(y) {
                x
            } else {
                y
            }
        }
        _ => return Err(format!("unknown function {name}")),
    };
    // consul-template's arithmetic gives `int64` for integers.
    Ok(match out {
        Num::I(i) => model::int64(i),
        Num::F(f) => model::float(f),
    })
}

fn parse_number(name: &str, src: &[u8]) -> Out {
    if src.is_empty() {
        return Ok(match name {
            "parseFloat" => model::float(0.0),
            "parseBool" => Value::Bool(false),
            "parseInt" => model::int64(0),
            _ => model::int(0),
        });
    }
    let t = std::str::from_utf8(src).map_err(|_| format!("{name}: invalid syntax"))?;
    let bad = || {
        format!(
            "{name}: strconv.{}: parsing {}: invalid syntax",
            match name {
                "parseBool" => "ParseBool",
                "parseFloat" => "ParseFloat",
                "parseUint" => "ParseUint",
                _ => "ParseInt",
            },
            fmt::quote(src, false)
        )
    };
    match name {
        "parseBool" => match t {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(Value::Bool(true)),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(Value::Bool(false)),
            _ => Err(bad()),
        },
        "parseFloat" => t.parse::<f64>().map(model::float).map_err(|_| bad()),
        "parseUint" => t
            .parse::<u64>()
            .map_err(|_| bad())
            .and_then(|u| i64::try_from(u).map(model::int).map_err(|_| bad())),
        _ => t.parse::<i64>().map(model::int64).map_err(|_| bad()),
    }
}

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    table(name, args).transpose()
}

fn table(name: &str, args: &[Go<'_>]) -> Result<Option<Value>, String> {
    let arity = |n: usize| arity(name, args, n);
    let out = match name {
        "parseBool" | "parseFloat" | "parseInt" | "parseUint" => {
            arity(1)?;
            parse_number(name, s(&args[0])?)
        }
        "add" | "subtract" | "multiply" | "divide" | "modulo" | "minimum" | "maximum" => {
            arity(2)?;
            arithmetic(name, &args[0], &args[1])
        }
        _ => return Ok(None),
    }?;
    Ok(Some(out))
}
