//! Go's truth and comparisons over the Go model ([`super::model`]):
//! `if`, `with`, `and`, `or`, `not`, `eq`, `ne`, `lt`, `le`, `gt`, `ge`,
//! as text/template does them.
//!
//! A Vault number is a `json.Number`, a string underneath: `0` is a
//! non-empty string, so it is true, and it compares as text. `and` and
//! `or` return the argument that decides and, like Go since 1.18, do not
//! evaluate the others: an argument whose evaluation failed (an error
//! value) fails only if it is reached.

use std::cmp::Ordering;

use handlebars::{Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, ScopedJson};
use serde_json::Value;

use super::helper::{go_helper, raise, result};
use super::model::{self, Go, go};
use crate::render::budget;

/// Go's truth of a value (`isTrue`).
pub(in crate::render) fn truth(value: &Go<'_>) -> bool {
    match value {
        Go::Nil | Go::NilMap | Go::Error(_) => false,
        Go::Bool(b) => *b,
        Go::Str(bytes) => !bytes.is_empty(),
        // json.Number is a string: "0" is true.
        Go::Number(n) => !n.as_str().is_empty(),
        Go::Int(n) | Go::Int64(n) => *n != 0,
        Go::Float(f) => *f != 0.0,
        Go::List(items) | Go::Strings(items) => !items.is_empty(),
        Go::Map(map) => !map.is_empty(),
        Go::AnyMap(pairs) => !pairs.is_empty(),
        // Pointers and structs.
        Go::Secret(_) | Go::Pki(_) | Go::Time(_) | Go::Semver(_) => true,
    }
}

/// text/template's `basicKind`.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Kind {
    Invalid,
    Bool,
    Int,
    Float,
    Text,
    Other,
}

fn kind(value: &Go<'_>) -> Kind {
    match value {
        Go::Nil => Kind::Invalid,
        Go::Bool(_) => Kind::Bool,
        Go::Int(_) | Go::Int64(_) => Kind::Int,
        Go::Float(_) => Kind::Float,
        Go::Str(_) | Go::Number(_) => Kind::Text,
        _ => Kind::Other,
    }
}

fn text<'a>(value: &'a Go<'_>) -> &'a [u8] {
    match value {
        Go::Str(bytes) => bytes,
        Go::Number(n) => n.as_str().as_bytes(),
        _ => b"",
    }
}

/// Go's `eq a b…`: true if `a` equals any of the others.
pub(in crate::render) fn eq(a: &Go<'_>, others: &[Go<'_>]) -> Result<bool, String> {
    if others.is_empty() {
        return Err("missing argument for comparison".to_owned());
    }
    let ka = kind(a);
    for b in others {
        let kb = kind(b);
        let equal = if ka == kb {
            match (a, b) {
                (Go::Bool(x), Go::Bool(y)) => x == y,
                (Go::Int(x) | Go::Int64(x), Go::Int(y) | Go::Int64(y)) => x == y,
                #[allow(clippy::float_cmp)] // Go compares floats with ==
                (Go::Float(x), Go::Float(y)) => x == y,
                _ if ka == Kind::Text => text(a) == text(b),
                (Go::Nil, Go::Nil) => true,
                _ => {
                    return Err(format!(
                        "non-comparable types {} and {}",
                        model::type_name(a),
                        model::type_name(b)
                    ));
                }
            }
        } else if ka == Kind::Invalid || kb == Kind::Invalid {
            false
        } else {
            return Err("incompatible types for comparison".to_owned());
        };
        if equal {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Go's `lt a b`.
pub(in crate::render) fn lt(a: &Go<'_>, b: &Go<'_>) -> Result<bool, String> {
    let (ka, kb) = (kind(a), kind(b));
    if ka != kb {
        return Err("incompatible types for comparison".to_owned());
    }
    let order = match (a, b) {
        (Go::Int(x) | Go::Int64(x), Go::Int(y) | Go::Int64(y)) => x.cmp(y),
        (Go::Float(x), Go::Float(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        _ if ka == Kind::Text => text(a).cmp(text(b)),
        _ => return Err("invalid type for comparison".to_owned()),
    };
    Ok(order == Ordering::Less)
}

fn compare(name: &str, args: &[Go<'_>]) -> Result<bool, String> {
    let (a, rest) = args
        .split_first()
        .ok_or_else(|| format!("wrong number of args for {name}"))?;
    match name {
        "eq" => eq(a, rest),
        "ne" | "lt" | "le" | "gt" | "ge" => {
            let [b] = rest else {
                return Err(format!("wrong number of args for {name}: want 2"));
            };
            match name {
                "ne" => eq(a, rest).map(|e| !e),
                "lt" => lt(a, b),
                "le" => Ok(lt(a, b)? || eq(a, rest)?),
                "gt" => Ok(!(lt(a, b)? || eq(a, rest)?)),
                _ => lt(a, b).map(|l| !l),
            }
        }
        _ => Err(format!("unknown comparison {name}")),
    }
}

go_helper!(Truth, |h| {
    // `(goTruth x)`: the condition of `if` and `with`.
    let value = go(h.param(0).map_or(&Value::Null, |p| p.value()));
    raise("if", &value)?;
    Ok(ScopedJson::Derived(Value::Bool(truth(&value))))
});

go_helper!(With, |h| {
    // `(goWith x)`: `[x]` when x is true, else `[]`, for `{{#each}}`.
    let value = h.param(0).map_or(&Value::Null, |p| p.value());
    let g = go(value);
    raise("with", &g)?;
    if truth(&g) {
        result(Value::Array(vec![value.clone()]))
    } else {
        Ok(ScopedJson::Derived(Value::Array(Vec::new())))
    }
});

go_helper!(Not, |h| {
    let value = go(h.param(0).map_or(&Value::Null, |p| p.value()));
    if let Go::Error(_) = value {
        return result(model::value(&value));
    }
    Ok(ScopedJson::Derived(Value::Bool(!truth(&value))))
});

/// `(goAnd a b …)` and `(goOr a b …)`: the first argument that decides
/// (false for `and`, true for `or`), else the last. An error value fails
/// only if it is reached.
pub(in crate::render) struct AndOr(pub(in crate::render) bool);

impl HelperDef for AndOr {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        budget::charge_call(h)?;
        let params = h.params();
        for (i, p) in params.iter().enumerate() {
            let value = go(p.value());
            if matches!(value, Go::Error(_)) || truth(&value) == self.0 || i + 1 == params.len() {
                return result(p.value().clone());
            }
        }
        Ok(ScopedJson::Derived(Value::Null))
    }
}

go_helper!(Compare, |h| {
    // `(goCmp "lt" a b)`.
    let name = h
        .param(0)
        .and_then(|p| p.value().as_str())
        .unwrap_or_default()
        .to_owned();
    let args: Vec<Go<'_>> = h.params()[1..].iter().map(|p| go(p.value())).collect();
    if let Some(e) = args.iter().find(|a| matches!(a, Go::Error(_))) {
        return result(model::value(e));
    }
    match compare(&name, &args) {
        Ok(b) => Ok(ScopedJson::Derived(Value::Bool(b))),
        Err(e) => result(model::error(format!("error calling {name}: {e}"))),
    }
});

/// Registers `goTruth`, `goWith`, `goNot`, `goAnd`, `goOr`, `goCmp`.
pub(in crate::render) fn register(registry: &mut Handlebars<'static>) {
    registry.register_helper("goTruth", Box::new(Truth));
    registry.register_helper("goWith", Box::new(With));
    registry.register_helper("goNot", Box::new(Not));
    registry.register_helper("goAnd", Box::new(AndOr(false)));
    registry.register_helper("goOr", Box::new(AndOr(true)));
    registry.register_helper("goCmp", Box::new(Compare));
}

#[cfg(test)]
mod tests {
    use super::{Go, eq, lt, truth};
    use serde_json::Number;

    #[test]
    fn a_vault_zero_is_true_and_empty_things_are_false() {
        let zero: Number = serde_json::from_str("0").unwrap();
        assert!(truth(&Go::Number(&zero)));
        assert!(!truth(&Go::Str(b"".as_slice().into())));
        assert!(!truth(&Go::Nil));
        assert!(!truth(&Go::NilMap));
        assert!(!truth(&Go::Int(0)));
        assert!(!truth(&Go::List(&[])));
    }

    #[test]
    fn comparisons_are_gos() {
        let n: Number = serde_json::from_str("10").unwrap();
        let s = |t: &'static str| Go::Str(t.as_bytes().into());
        assert_eq!(eq(&Go::Number(&n), &[s("10")]), Ok(true));
        assert_eq!(eq(&Go::Number(&n), &[s("x"), s("10")]), Ok(true));
        assert_eq!(eq(&Go::Nil, &[s("x")]), Ok(false));
        assert!(eq(&Go::Int(1), &[s("1")]).is_err());
        // json.Number compares as text: "10" < "9".
        assert_eq!(lt(&Go::Number(&n), &s("9")), Ok(true));
        assert_eq!(lt(&Go::Int(10), &Go::Int(9)), Ok(false));
        assert!(lt(&Go::Int(1), &Go::Float(2.0)).is_err());
    }
}
