//! Reading a Go function's arguments and handing on its result, as Go's
//! `text/template` reports a wrong one: shared by consul-template's
//! functions and Go's `encoding/json` ones.

use std::borrow::Cow;

use serde_json::Value;

use super::model::{self, Go, go};
use crate::render::budget;

/// A function's result: a value of the model, or Go's error text.
pub(super) type Out = Result<Value, String>;

pub(super) fn wrong(want: &str, got: &Go<'_>) -> String {
    match got {
        Go::Nil => format!("invalid value; expected {want}"),
        other => format!(
            "wrong type for value; expected {want}; got {}",
            model::type_name(other)
        ),
    }
}

/// A `string` parameter.
pub(super) fn s<'a>(g: &'a Go<'_>) -> Result<&'a [u8], String> {
    match g {
        Go::Str(b) => Ok(b),
        other => Err(wrong("string", other)),
    }
}

/// An `int` parameter.
pub(super) fn int(g: &Go<'_>) -> Result<i64, String> {
    match g {
        Go::Int(n) => Ok(*n),
        other => Err(wrong("int", other)),
    }
}

/// A `[]string` parameter (`nil` is an empty one).
pub(super) fn strs<'a>(g: &'a Go<'_>) -> Result<Vec<Cow<'a, [u8]>>, String> {
    match g {
        Go::Strings(items) => Ok(items
            .iter()
            .map(|v| match go(v) {
                Go::Str(b) => Cow::Owned(b.into_owned()),
                _ => Cow::Borrowed(&b""[..]),
            })
            .collect()),
        Go::Nil => Ok(Vec::new()),
        other => Err(wrong("[]string", other)),
    }
}

#[allow(clippy::needless_pass_by_value, clippy::unnecessary_wraps)] // the shape of a function's result
pub(super) fn text(bytes: Vec<u8>) -> Out {
    Ok(model::string_value(&bytes))
}

#[allow(clippy::needless_pass_by_value, clippy::unnecessary_wraps)] // likewise
pub(super) fn string_list(items: Vec<Vec<u8>>) -> Out {
    Ok(model::strings(
        items.iter().map(|b| model::string_value(b)).collect(),
    ))
}

pub(super) fn charge(units: usize) -> Result<(), String> {
    budget::charge(u64::try_from(units / 16).unwrap_or(u64::MAX), []).map_err(|e| e.to_string())
}

pub(super) fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// Go's error for a call with the wrong number of arguments.
pub(super) fn arity(name: &str, args: &[Go<'_>], n: usize) -> Result<(), String> {
    if args.len() == n {
        Ok(())
    } else {
        Err(format!(
            "wrong number of args for {name}: want {n} got {}",
            args.len()
        ))
    }
}
