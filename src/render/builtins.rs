//! Metered replacements for the template engine's built-in helpers.
//!
//! The engine evaluates every parameter of a tag before the helper runs,
//! and its built-ins (`if`, `unless`, `with`, `lookup`, the comparisons, …)
//! cannot be metered: their types are private. The renderer registers these
//! under the same names instead. Each charges [`budget::charge_call`] (one
//! unit plus the size of the evaluated parameters) and then does exactly
//! what the built-in does; the code follows handlebars 6.4's helpers line
//! for line, and `tests.rs` compares the two on the same inputs.
//!
//! `log` writes nothing: template data never goes to the driver's log.

use std::cmp::Ordering;
use std::str::FromStr;

use handlebars::{
    BlockContext, BlockParams, Context, Handlebars, Helper, HelperDef, HelperResult, JsonTruthy,
    Output, PathAndJson, RenderContext, RenderError, RenderErrorReason, Renderable, ScopedJson,
};
use serde_json::Value;

use super::budget;

/// Registers the metered built-ins on `registry`, replacing the engine's.
pub(super) fn register(registry: &mut Handlebars<'static>) {
    registry.register_helper("if", Box::new(If { positive: true }));
    registry.register_helper("unless", Box::new(If { positive: false }));
    registry.register_helper("with", Box::new(With));
    registry.register_helper("lookup", Box::new(Lookup));
    registry.register_helper("raw", Box::new(Raw));
    registry.register_helper("log", Box::new(Log));
    for (name, op) in [
        ("eq", (|x, y| x == y) as fn(&Value, &Value) -> bool),
        ("ne", |x, y| x != y),
        ("gt", |x, y| compare_json(x, y) == Some(Ordering::Greater)),
        ("gte", |x, y| {
            compare_json(x, y).is_some_and(|ord| ord != Ordering::Less)
        }),
        ("lt", |x, y| compare_json(x, y) == Some(Ordering::Less)),
        ("lte", |x, y| {
            compare_json(x, y).is_some_and(|ord| ord != Ordering::Greater)
        }),
    ] {
        registry.register_helper(name, Box::new(Boolean(Op::Binary(name, op))));
    }
    registry.register_helper(
        "not",
        Box::new(Boolean(Op::Unary("not", |x| !x.is_truthy(false)))),
    );
    registry.register_helper(
        "and",
        Box::new(Boolean(Op::Many(|ps| {
            ps.iter().all(|p| p.value().is_truthy(false))
        }))),
    );
    registry.register_helper(
        "or",
        Box::new(Boolean(Op::Many(|ps| {
            ps.iter().any(|p| p.value().is_truthy(false))
        }))),
    );
    registry.register_helper("len", Box::new(Len));
}

/// `if` (`positive`) and `unless`.
struct If {
    positive: bool,
}

impl HelperDef for If {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        budget::charge_call(h)?;
        let name = if self.positive { "if" } else { "unless" };
        let param = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex(name, 0))?;
        let include_zero = h
            .hash_get("includeZero")
            .and_then(|v| v.value().as_bool())
            .unwrap_or(false);
        let value = param.value().is_truthy(include_zero) == self.positive;
        match if value { h.template() } else { h.inverse() } {
            Some(t) => t.render(r, ctx, rc, out),
            None => Ok(()),
        }
    }
}

/// `with`.
struct With;

impl HelperDef for With {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        budget::charge_call(h)?;
        let param = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("with", 0))?;
        if param.value().is_truthy(false) {
            let mut block = BlockContext::new();
            if let Some(path) = param.context_path() {
                block.base_path_mut().clone_from(path);
            } else {
                budget::hold(param.value())?;
                block.set_base_value(param.value().clone());
            }
            // @key, @index, … of an enclosing loop stay visible.
            if let Some(parent) = rc.block() {
                block
                    .local_variables_mut()
                    .clone_from(parent.local_variables());
            }
            if let Some(name) = h.block_param() {
                let mut params = BlockParams::new();
                if param.context_path().is_some() {
                    params.add_path(name, Vec::with_capacity(0))?;
                } else {
                    budget::hold(param.value())?;
                    params.add_value(name, param.value().clone())?;
                }
                block.set_block_params(params);
            }
            rc.push_block(block);
            if let Some(t) = h.template() {
                t.render(r, ctx, rc, out)?;
            }
            rc.pop_block();
            Ok(())
        } else if let Some(t) = h.inverse() {
            t.render(r, ctx, rc, out)
        } else if r.strict_mode() {
            Err(RenderError::strict_error(param.relative_path()))
        } else {
            Ok(())
        }
    }
}

/// `lookup`.
struct Lookup;

impl HelperDef for Lookup {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        budget::charge_call(h)?;
        let collection = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("lookup", 0))?;
        let index = h
            .param(1)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("lookup", 1))?;
        let (value, step) = match collection.value() {
            Value::Array(v) => {
                let at = index.value().as_u64().and_then(|u| usize::try_from(u).ok());
                (at.and_then(|u| v.get(u)), at.map(|u| u.to_string()))
            }
            Value::Object(m) => {
                let key = index.value().as_str();
                (key.and_then(|k| m.get(k)), key.map(str::to_owned))
            }
            _ => (None, None),
        };
        match (value, step) {
            // A reference into the Vault data when the collection is one
            // (a loop over it copies nothing); else a copy, charged.
            (Some(found), Some(step)) => super::go::value::hand_on(ctx, collection, found, &[step]),
            _ if r.strict_mode() => Err(RenderError::strict_error(None)),
            _ => Ok(ScopedJson::Derived(Value::Null)),
        }
    }
}

/// `raw` (`{{{{raw}}}}…{{{{/raw}}}}` blocks).
struct Raw;

impl HelperDef for Raw {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        budget::charge_call(h)?;
        match h.template() {
            Some(t) => t.render(r, ctx, rc, out),
            None => Ok(()),
        }
    }
}

/// `log`: checks its level like the built-in, and writes nothing anywhere.
struct Log;

impl HelperDef for Log {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        _: &mut dyn Output,
    ) -> HelperResult {
        budget::charge_call(h)?;
        let level = h
            .hash_get("level")
            .and_then(|v| v.value().as_str())
            .unwrap_or("info");
        if ["error", "warn", "info", "debug", "trace"]
            .iter()
            .any(|l| l.eq_ignore_ascii_case(level))
        {
            Ok(())
        } else {
            Err(RenderErrorReason::InvalidLoggingLevel(level.to_owned()).into())
        }
    }
}

/// What a [`Boolean`] helper computes.
#[derive(Clone, Copy)]
enum Op {
    /// `eq`, `ne`, `gt`, `gte`, `lt`, `lte`: two required parameters.
    Binary(&'static str, fn(&Value, &Value) -> bool),
    /// `not`: one required parameter.
    Unary(&'static str, fn(&Value) -> bool),
    /// `and`, `or`: any number of parameters.
    Many(fn(&[PathAndJson<'_>]) -> bool),
}

/// The comparison and logic helpers: a boolean, written out, or choosing
/// the block or its `{{else}}` when used as a block.
struct Boolean(Op);

/// A required parameter: present and, in strict mode, not missing.
fn required<'a>(
    h: &'a Helper<'_>,
    r: &Handlebars<'_>,
    name: &'static str,
    index: usize,
) -> Result<&'a Value, RenderError> {
    h.param(index)
        .and_then(|it| {
            if r.strict_mode() && it.is_value_missing() {
                None
            } else {
                Some(it.value())
            }
        })
        .ok_or_else(|| RenderErrorReason::ParamNotFoundForIndex(name, index).into())
}

impl HelperDef for Boolean {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let value = self.call_inner(h, r, ctx, rc)?;
        let value = value.as_json().as_bool().unwrap_or(false);
        if !h.is_block() {
            return out
                .write(value.to_string().as_str())
                .map_err(|e| RenderErrorReason::Other(e.to_string()).into());
        }
        match if value { h.template() } else { h.inverse() } {
            Some(t) => t.render(r, ctx, rc, out),
            None => Ok(()),
        }
    }

    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        budget::charge_call(h)?;
        let result = match self.0 {
            Op::Binary(name, op) => op(required(h, r, name, 0)?, required(h, r, name, 1)?),
            Op::Unary(name, op) => op(required(h, r, name, 0)?),
            Op::Many(op) => op(h.params()),
        };
        Ok(ScopedJson::Derived(Value::Bool(result)))
    }
}

/// `len`: the length of an array, object or string (in bytes), else 0.
struct Len;

impl HelperDef for Len {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        budget::charge_call(h)?;
        let x = h
            .param(0)
            .and_then(|it| {
                if r.strict_mode() && it.is_value_missing() {
                    None
                } else {
                    Some(it.value())
                }
            })
            .ok_or_else(|| RenderErrorReason::ParamNotFoundForName("len", "x".to_owned()))?;
        let len = match x {
            Value::Array(a) => a.len(),
            Value::Object(m) => m.len(),
            Value::String(s) => s.len(),
            _ => 0,
        };
        Ok(ScopedJson::Derived(Value::from(len)))
    }
}

/// Orders two JSON values as handlebars' comparison helpers do: numbers by
/// value (exactly, across integer and float representations), numbers
/// against numeric strings, strings and booleans among themselves; anything
/// else is unordered.
fn compare_json(x: &Value, y: &Value) -> Option<Ordering> {
    match (x, y) {
        (Value::Number(a), Value::Number(b)) => compare_numbers(a, b),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        (Value::Number(a), Value::String(b)) => {
            compare_numbers(a, &serde_json::Number::from_str(b).ok()?)
        }
        (Value::String(a), Value::Number(b)) => {
            compare_numbers(b, &serde_json::Number::from_str(a).ok()?).map(Ordering::reverse)
        }
        _ => None,
    }
}

/// A JSON number as an exact integer, or a float.
enum Num {
    Int(i128),
    Float(f64),
}

fn num(n: &serde_json::Number) -> Option<Num> {
    if let Some(u) = n.as_u64() {
        Some(Num::Int(i128::from(u)))
    } else if let Some(i) = n.as_i64() {
        Some(Num::Int(i128::from(i)))
    } else {
        n.as_f64().map(Num::Float)
    }
}

fn compare_numbers(a: &serde_json::Number, b: &serde_json::Number) -> Option<Ordering> {
    match (num(a)?, num(b)?) {
        (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
        (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b),
        (Num::Int(a), Num::Float(b)) => int_float(a, b),
        (Num::Float(a), Num::Int(b)) => int_float(b, a).map(Ordering::reverse),
    }
}

/// Compares an integer with a float exactly (no rounding of the integer).
fn int_float(a: i128, b: f64) -> Option<Ordering> {
    // 2^100 is beyond every i64 and u64, and exactly representable.
    const BEYOND: f64 = 1_267_650_600_228_229_401_496_703_205_376.0;
    if b.is_nan() {
        return None;
    }
    if b >= BEYOND {
        return Some(Ordering::Less);
    }
    if b <= -BEYOND {
        return Some(Ordering::Greater);
    }
    let whole = b.trunc();
    // In range and integral: the conversion is exact.
    #[allow(clippy::cast_possible_truncation)]
    let whole_int = whole as i128;
    Some(a.cmp(&whole_int).then_with(|| {
        if b > whole {
            Ordering::Less
        } else if b < whole {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    }))
}
