//! Template helpers: `secret` (the only one that touches Vault data) and the
//! few encoders people need in secret files.
//!
//! | helper | use | result |
//! |---|---|---|
//! | `secret` | `(secret "secret/data/app")`, `(secret "pki/issue/web" common_name="a.example")` | the whole Vault response: `data`, `lease_id`, `lease_duration`, `renewable`, `warnings` |
//! | `base64Encode` | `{{base64Encode data.data.key}}` | standard base64 of the string |
//! | `base64Decode` | `{{base64Decode data.data.blob}}` | the decoded text (must be UTF-8) |
//! | `toJson` | `{{toJson data.data}}` | compact JSON |
//! | `toJsonPretty` | `{{toJsonPretty data.data}}` | indented JSON |

use std::cell::RefCell;
use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason,
    ScopedJson,
};
use serde_json::Value;

use super::{SecretRequest, budget};

/// What the `secret` helper does during one render on this thread.
pub(super) enum Scope {
    /// First pass: note every request, answer `null`.
    Collect(Vec<SecretRequest>),
    /// Final pass: answer from the fetched responses, which are in the
    /// render's context under `keys` (so every lookup into them is a
    /// reference, never a copy); note any miss.
    Resolve {
        keys: HashMap<SecretRequest, String>,
        missing: Vec<SecretRequest>,
    },
}

thread_local! {
    /// Rendering is synchronous (no `.await` between setting and taking the
    /// scope), so a thread-local is an exact per-render slot.
    pub(super) static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

fn helper_error(message: impl Into<String>) -> RenderError {
    RenderErrorReason::Other(message.into()).into()
}

fn one_param<'a>(h: &'a Helper<'_>, name: &str) -> Result<&'a Value, RenderError> {
    if h.params().len() != 1 {
        return Err(helper_error(format!(
            "`{name}` takes exactly one argument, got {}",
            h.params().len()
        )));
    }
    Ok(h.param(0).map_or(&Value::Null, |p| p.value()))
}

fn one_string<'a>(h: &'a Helper<'_>, name: &str) -> Result<&'a str, RenderError> {
    as_text(name, one_param(h, name)?)
}

/// `(secret "path" key=value …)`.
pub(super) struct SecretHelper;

impl HelperDef for SecretHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        budget::charge_call(h)?;
        let path = one_string(h, "secret")?;
        // A path that is not a literal in the template came from data
        // (possibly a secret): it is never echoed in errors or logs.
        let from_data = h
            .param(0)
            .is_some_and(|p| p.try_get_constant_value().is_none());
        let args: serde_json::Map<String, Value> = h
            .hash()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.value().clone()))
            .collect();
        let request = SecretRequest::build(path, &args, from_data)
            .map_err(|e| helper_error(e.to_string()))?;
        SCOPE.with_borrow_mut(|scope| match scope {
            Some(Scope::Collect(seen)) => {
                if !seen.contains(&request) {
                    seen.push(request);
                }
                Ok(ScopedJson::Derived(Value::Null))
            }
            Some(Scope::Resolve { keys, missing }) => {
                if let Some(key) = keys.get(&request) {
                    let value = ctx.data().get(key).unwrap_or(&Value::Null);
                    Ok(ScopedJson::Context(value, vec![key.clone()]))
                } else {
                    let reply =
                        helper_error(format!("secret {:?} was not fetched", request.shown_path()));
                    missing.push(request);
                    Err(reply)
                }
            }
            None => Err(helper_error("`secret` used outside a volume render")),
        })
    }
}

/// A helper of one argument: `base64Encode`, `base64Decode`, `toJson`,
/// `toJsonPretty`.
pub(super) struct Unary {
    /// The name templates call it by (for error messages).
    pub(super) name: &'static str,
    /// What it computes.
    pub(super) apply: UnaryFn,
}

/// The computation of a [`Unary`] helper: its name (for messages) and
/// argument to its result.
pub(super) type UnaryFn = fn(&'static str, &Value) -> Result<Value, RenderError>;

impl HelperDef for Unary {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        budget::charge_call(h)?;
        let value = one_param(h, self.name)?;
        let result = (self.apply)(self.name, value)?;
        if result
            .as_str()
            .is_some_and(|s| s.len() > super::MAX_RENDERED_BYTES)
        {
            return Err(helper_error(format!(
                "`{}` would produce more than {} bytes",
                self.name,
                super::MAX_RENDERED_BYTES
            )));
        }
        // Building the result cost about its size again.
        budget::charge(0, [&result])?;
        Ok(ScopedJson::Derived(result))
    }
}

fn as_text<'a>(name: &str, value: &'a Value) -> Result<&'a str, RenderError> {
    value
        .as_str()
        .ok_or_else(|| helper_error(format!("`{name}` takes a string argument")))
}

/// `base64Encode`: standard base64 of a string.
pub(super) fn base64_encode(name: &'static str, value: &Value) -> Result<Value, RenderError> {
    Ok(Value::String(STANDARD.encode(as_text(name, value)?)))
}

/// `base64Decode`: the text a base64 string encodes (must be UTF-8).
pub(super) fn base64_decode(name: &'static str, value: &Value) -> Result<Value, RenderError> {
    let bytes = STANDARD
        .decode(as_text(name, value)?.trim())
        .map_err(|_| helper_error(format!("`{name}` was given text that is not valid base64")))?;
    String::from_utf8(bytes)
        .map(Value::String)
        .map_err(|_| helper_error(format!("`{name}` produced bytes that are not UTF-8 text")))
}

/// `toJson`: compact JSON.
pub(super) fn to_json(name: &'static str, value: &Value) -> Result<Value, RenderError> {
    serde_json::to_string(value)
        .map(Value::String)
        .map_err(|_| helper_error(format!("`{name}` could not encode its argument")))
}

/// `toJsonPretty`: indented JSON.
pub(super) fn to_json_pretty(name: &'static str, value: &Value) -> Result<Value, RenderError> {
    serde_json::to_string_pretty(value)
        .map(Value::String)
        .map_err(|_| helper_error(format!("`{name}` could not encode its argument")))
}
