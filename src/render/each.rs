//! `{{#each}}` with a budget.
//!
//! The template engine's own `each` cannot be metered (its helper type is
//! private), so the renderer registers this one under the same name. It
//! keeps handlebars' semantics — `this`, `@index`, `@key`, `@first`,
//! `@last`, block parameters `as |value key|`, `{{else}}` for an empty or
//! missing collection, strict-mode errors — and charges
//! [`budget::charge_iteration`] before every iteration (with the size of
//! the entry when it is copied), so nested loops over large Vault data stop
//! at [`budget::MAX_LOOP_ITERATIONS`] or [`budget::MAX_RENDER_WORK`].

use handlebars::{
    BlockContext, BlockParams, Context, Handlebars, Helper, HelperDef, HelperResult, Output,
    RenderContext, RenderError, RenderErrorReason, Renderable,
};
use serde_json::Value;

use super::budget;

/// The metered `each` helper.
pub(super) struct BoundedEach;

impl HelperDef for BoundedEach {
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
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("each", 0))?;
        let Some(body) = h.template() else {
            return Ok(());
        };
        let entries = match param.value() {
            Value::Array(list) if !list.is_empty() || h.inverse().is_none() => Entries::List(list),
            Value::Object(map) if !map.is_empty() || h.inverse().is_none() => Entries::Map(map),
            _ => {
                return match h.inverse() {
                    Some(inverse) => inverse.render(r, ctx, rc, out),
                    None if r.strict_mode() => {
                        Err(RenderError::strict_error(param.relative_path()))
                    }
                    None => Ok(()),
                };
            }
        };
        let base_path = param.context_path();
        let mut block = BlockContext::new();
        if let Some(path) = base_path {
            block.base_path_mut().clone_from(path);
            block.base_path_mut().push(String::new());
        }
        rc.push_block(block);
        let mut body = Body {
            h,
            r,
            ctx,
            template: body,
            by_path: base_path.is_some(),
            last: entries.len().saturating_sub(1),
        };
        // The entries are visited in place: nothing proportional to the
        // collection is built before the first iteration is charged.
        let result = match entries {
            Entries::List(list) => list
                .iter()
                .enumerate()
                .try_for_each(|(i, value)| body.iterate(rc, out, i, i.into(), value, false)),
            Entries::Map(map) => map.iter().enumerate().try_for_each(|(i, (key, value))| {
                body.iterate(rc, out, i, Value::String(key.clone()), value, true)
            }),
        };
        rc.pop_block();
        result
    }
}

/// What a loop runs over.
enum Entries<'a> {
    List(&'a [Value]),
    Map(&'a serde_json::Map<String, Value>),
}

impl Entries<'_> {
    fn len(&self) -> usize {
        match self {
            Self::List(list) => list.len(),
            Self::Map(map) => map.len(),
        }
    }
}

/// A loop's body and what each iteration needs to render it.
struct Body<'a, 'reg, 'rc> {
    h: &'a Helper<'rc>,
    r: &'reg Handlebars<'reg>,
    ctx: &'rc Context,
    template: &'rc handlebars::Template,
    /// The collection is a path into the context (entries are reached by
    /// path, not copied).
    by_path: bool,
    last: usize,
}

impl<'reg: 'rc, 'rc> Body<'_, 'reg, 'rc> {
    /// Renders the body once, for entry `i`, charging the budget first.
    fn iterate(
        &mut self,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
        i: usize,
        key: Value,
        value: &Value,
        is_object: bool,
    ) -> HelperResult {
        // Over a value (not a path), each entry is copied into the block.
        budget::charge_iteration((!self.by_path).then_some(value))?;
        if let Some(block) = rc.block_mut() {
            block.set_local_var("first", Value::Bool(i == 0));
            block.set_local_var("last", Value::Bool(i == self.last));
            block.set_local_var("index", i.into());
            if is_object {
                block.set_local_var("key", key.clone());
            }
            point_at(block, self.h, self.by_path, key, value)?;
        }
        self.template.render(self.r, self.ctx, rc, out)
    }
}

/// Points the loop's block at one entry: `this` and the block parameters.
fn point_at<'rc>(
    block: &mut BlockContext<'rc>,
    h: &Helper<'rc>,
    by_path: bool,
    key: Value,
    value: &Value,
) -> Result<(), RenderError> {
    if by_path {
        // `this` is a path into the context: replace its last segment.
        let segment = match &key {
            Value::String(k) => k.clone(),
            other => other.to_string(),
        };
        if let Some(last) = block.base_path_mut().last_mut() {
            *last = segment;
        }
    } else {
        block.set_base_value(value.clone());
    }
    let mut params = BlockParams::new();
    if let Some(name) = h.block_param() {
        add_value(&mut params, name, by_path, value)?;
    } else if let Some((name, key_name)) = h.block_param_pair() {
        add_value(&mut params, name, by_path, value)?;
        params.add_value(key_name, key)?;
    } else {
        return Ok(());
    }
    block.set_block_params(params);
    Ok(())
}

fn add_value<'rc>(
    params: &mut BlockParams<'rc>,
    name: &'rc str,
    by_path: bool,
    value: &Value,
) -> Result<(), RenderError> {
    if by_path {
        params.add_path(name, Vec::new())
    } else {
        // A second copy of the entry.
        budget::hold(value)?;
        params.add_value(name, value.clone())
    }
}
