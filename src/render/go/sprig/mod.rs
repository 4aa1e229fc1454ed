//! More of consul-template's functions over the Go model: text/template's
//! escapers and `slice`, consul-template's `loop` and `hmacSHA256Hex`,
//! and Sprig's functions (`sprig_*`) that hold no randomness, time or
//! host: each with Sprig's own conversions (`strval`, `empty`,
//! `cast.ToInt64`) over Go's types.
//!
//! One file per concern, each importing only [`conv`] (how Sprig reads
//! its arguments) and the model's files below `sprig`: [`escape`],
//! [`text`], [`case`] (over [`unicode`]), [`lists`], [`dicts`], [`math`], [`floats`], [`durations`], [`dates`] (over the model's `clock`), [`paths`], [`encodings`], [`crypto`], [`urls`], [`semver`],
//! [`patterns`] and [`values`]. This file dispatches by name.

mod case;
mod conv;
mod crypto;
mod dates;
mod dicts;
mod durations;
mod encodings;
mod escape;
mod floats;
mod lists;
mod math;
mod paths;
mod patterns;
mod semver;
mod text;
mod unicode;
mod urls;
mod values;

use conv::Out;
pub(in crate::render::go) use dates::method as date_method;
pub(in crate::render::go) use semver::method as version_method;

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
    dates::call,
    paths::call,
    encodings::call,
    crypto::call,
    urls::call,
    semver::call,
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::model::Go;
    use super::super::session;
    use super::call;
    use crate::render::budget::{Limits, Metered};

    fn run(name: &str, args: &[Go<'_>]) -> Result<Value, String> {
        call(name, args).unwrap_or_else(|| Err(format!("no function {name}")))
    }

    fn s(t: &str) -> Go<'_> {
        Go::Str(t.as_bytes().into())
    }

    #[test]
    fn work_a_template_asks_for_is_bounded() {
        let _session = session::start();
        let _metered = Metered::start(Limits::FULL);
        // A billion numbers, a wrap that multiplies its text, a sum of
        // floats 600 orders of magnitude apart.
        assert!(run("sprig_seq", &[Go::Int(1), Go::Int(1_000_000_000)]).is_err());
        let long = "a ".repeat(600_000);
        let sep = "x".repeat(100);
        assert!(run("sprig_wrapWith", &[Go::Int(1), s(&sep), s(&long)]).is_err());
        assert!(run("sprig_addf", &[Go::Float(1e300), Go::Float(1e-300)]).is_ok());
    }

    #[test]
    fn edge_cases_are_gos() {
        let _session = session::start();
        let _metered = Metered::start(Limits::FULL);
        // As Go 1.19's encoding/base32 answers.
        assert_eq!(run("sprig_b32dec", &[s("MFYH====")]), Ok(json!("ap")));
        for (bad, at) in [("MFY=====", 3), ("MFYHA=", 6), ("M=======", 1)] {
            assert_eq!(
                run("sprig_b32dec", &[s(bad)]),
                Ok(json!(format!("illegal base32 data at input byte {at}")))
            );
        }
        assert_eq!(
            run("sprig_clean", &[s("a/../../b/./c//")]),
            Ok(json!("../b/c"))
        );
        assert_eq!(run("sprig_dir", &[s("/a")]), Ok(json!("/")));
        assert_eq!(run("sprig_osExt", &[s("a.b/c")]), Ok(json!("")));
        assert_eq!(
            run("sprig_seq", &[Go::Int(3), Go::Int(-2), Go::Int(1)]),
            Ok(json!("3 1"))
        );
        // A string's bytes, cut inside a character.
        let cut = run("sprig_abbrev", &[Go::Int(4), s("\u{e9}\u{e9}\u{e9}")]).unwrap();
        assert!(matches!(super::super::model::go(&cut), Go::Str(b) if b.as_ref() == b"\xc3..."));
    }
}
