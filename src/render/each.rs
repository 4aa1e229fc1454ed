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
        let entries: Vec<(Value, &Value)> = match param.value() {
            Value::Array(list) if !list.is_empty() || h.inverse().is_none() => list
                .iter()
                .enumerate()
                .map(|(i, v)| (i.into(), v))
                .collect(),
            Value::Object(map) if !map.is_empty() || h.inverse().is_none() => map
                .iter()
                .map(|(k, v)| (Value::String(k.clone()), v))
                .collect(),
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
        let is_object = param.value().is_object();
        let base_path = param.context_path();
        let mut block = BlockContext::new();
        if let Some(path) = base_path {
            block.base_path_mut().clone_from(path);
            block.base_path_mut().push(String::new());
        }
        rc.push_block(block);
        let result = iterate(
            h,
            r,
            ctx,
            rc,
            out,
            body,
            entries,
            base_path.is_some(),
            is_object,
        );
        rc.pop_block();
        result
    }
}

/// Renders `body` once per entry, charging the budget first.
#[allow(clippy::too_many_arguments)] // the helper's five plus the loop's shape; one call site
fn iterate<'reg: 'rc, 'rc>(
    h: &Helper<'rc>,
    r: &'reg Handlebars<'reg>,
    ctx: &'rc Context,
    rc: &mut RenderContext<'reg, 'rc>,
    out: &mut dyn Output,
    body: &'rc handlebars::Template,
    entries: Vec<(Value, &Value)>,
    by_path: bool,
    is_object: bool,
) -> HelperResult {
    let last = entries.len().saturating_sub(1);
    for (i, (key, value)) in entries.into_iter().enumerate() {
        // Over a value (not a path), each entry is copied into the block.
        budget::charge_iteration((!by_path).then_some(value))?;
        if let Some(block) = rc.block_mut() {
            block.set_local_var("first", Value::Bool(i == 0));
            block.set_local_var("last", Value::Bool(i == last));
            block.set_local_var("index", i.into());
            if is_object {
                block.set_local_var("key", key.clone());
            }
            point_at(block, h, by_path, key, value)?;
        }
        body.render(r, ctx, rc, out)?;
    }
    Ok(())
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
        params.add_value(name, value.clone())
    }
}
