//! Sprig's functions over any value: defaults (`default`, `empty`,
//! `coalesce`, `all`, `any`, `ternary`) and reflection (`kindOf`,
//! `typeOf`, `kindIs`, `typeIs`, `deepEqual`).

use serde_json::Value;

use super::super::model::{self, Go};
use super::super::truth::truth;
use super::conv::{Out, deep_equal, first, kind_of, string};

/// `%T` of a value.
fn type_of(g: &Go<'_>) -> &'static str {
    match g {
        Go::Nil => "<nil>",
        other => model::type_name(other),
    }
}

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    Some(match name {
        "sprig_empty" => Ok(Value::Bool(!truth(&first(args)))),
        "sprig_default" => match args.split_first() {
            Some((fallback, given)) => {
                let chosen = match given.first() {
                    Some(g) if truth(g) => g,
                    _ => fallback,
                };
                Ok(model::value(chosen))
            }
            None => Err("wrong number of args for default".to_owned()),
        },
        "sprig_coalesce" => Ok(args
            .iter()
            .find(|a| truth(a))
            .map_or(Value::Null, model::value)),
        "sprig_all" => Ok(Value::Bool(args.iter().all(truth))),
        "sprig_any" => Ok(Value::Bool(args.iter().any(truth))),
        "sprig_ternary" => match args {
            [yes, no, Go::Bool(cond)] => Ok(model::value(if *cond { yes } else { no })),
            [_, _, other] => Err(format!(
                "wrong type for value; expected bool; got {}",
                model::type_name(other)
            )),
            _ => Err("wrong number of args for ternary".to_owned()),
        },
        "sprig_deepEqual" => match args {
            [a, b] => Ok(Value::Bool(deep_equal(a, b))),
            _ => Err("wrong number of args for deepEqual".to_owned()),
        },
        "sprig_kindOf" => Ok(Value::String(kind_of(&first(args)).to_owned())),
        "sprig_typeOf" => Ok(Value::String(type_of(&first(args)).to_owned())),
        "sprig_typeIsLike" => match args {
            [target, value] => string(target).map(|t| {
                let actual = type_of(value).as_bytes();
                Value::Bool(t == actual || [b"*".as_slice(), &t].concat() == actual)
            }),
            _ => Err(format!("wrong number of args for {name}")),
        },
        "sprig_kindIs" | "sprig_typeIs" => match args {
            [target, value] => string(target).map(|t| {
                let actual = if name == "sprig_kindIs" {
                    kind_of(value)
                } else {
                    model::type_name(value)
                };
                Value::Bool(t == actual.as_bytes())
            }),
            _ => Err(format!("wrong number of args for {name}")),
        },
        _ => return None,
    })
}
