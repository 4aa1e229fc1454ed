//! More of consul-template's functions over the Go model: text/template's
//! escapers and `slice`, consul-template's `loop` and `hmacSHA256Hex`,
//! and Sprig's functions (`sprig_*`) that hold no randomness, time or
//! host: each with Sprig's own conversions (`strval`, `empty`,
//! `cast.ToInt64`) over Go's types.
//!
//! One file per concern, each importing only [`conv`] (how Sprig reads
//! its arguments) and the model's files below `sprig`: [`escape`],
//! [`text`], [`case`] (over [`unicode`]), [`lists`], [`dicts`], [`math`], [`floats`], [`durations`], [`paths`], [`encodings`], [`crypto`], [`urls`],
//! [`patterns`] and [`values`]. This file dispatches by name.

mod case;
mod conv;
mod crypto;
mod dicts;
mod durations;
mod encodings;
mod escape;
mod floats;
mod lists;
mod math;
mod paths;
mod patterns;
mod text;
mod unicode;
mod urls;
mod values;

use conv::Out;

use super::model::Go;

/// A group's functions: `None` for a name it does not have.
type Group = fn(&str, &[Go<'_>]) -> Option<Out>;

const GROUPS: &[Group] = &[
    escape::call,
    text::call,
    case::call,
    patterns::call,
    lists::call,
    dicts::call,
    math::call,
    floats::call,
    durations::call,
    paths::call,
    encodings::call,
    crypto::call,
    urls::call,
    values::call,
];

/// Sprig's `mustX`: `X` with its errors (the `X` here already fails where
/// Sprig's `mustX` does; where it does not, a group has `mustX` itself).
fn unmust(name: &str) -> Option<String> {
    let rest = name.strip_prefix("sprig_must")?;
    let mut chars = rest.chars();
    let first = chars.next()?.to_ascii_lowercase();
    Some(format!("sprig_{first}{}", chars.as_str()))
}

/// The functions of this module; `None` for a name it does not have.
pub(in crate::render) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    for group in GROUPS {
        if let Some(out) = group(name, args) {
            return Some(out);
        }
    }
    call(&unmust(name)?, args)
}
