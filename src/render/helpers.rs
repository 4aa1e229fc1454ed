//! Template helpers: `secret` (the only one that touches Vault data) and the
//! few encoders people need in secret files.
//!
//! | helper | use | result |
//! |---|---|---|
//! | `secret` | `(secret "secret/data/app")`, `(secret "pki/issue/web" common_name="a.example")`, or a write's data as consul-template's `"key=value"` strings: `(secret "pki/issue/web" "common_name=a.example")` | the whole Vault response: `data`, `lease_id`, `lease_duration`, `renewable`, `warnings` |
//! | `secrets` | `(secrets "secret/metadata/app")` | the answer to a LIST of the path: the keys under it in `data.keys` (none when Vault answers 404, as its Go client reads it) |
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

use super::budget::{self, Meter, Stop};
use super::{MAX_RENDERED_BYTES, SecretRequest};

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

/// `(secret "path" key=value …)`, or with `list`, `(secrets "path")`: the
/// LIST of the keys under the path (its answer's `data.keys`).
pub(super) struct SecretHelper {
    /// A `secrets` call: a LIST, which takes no arguments.
    pub(super) list: bool,
}

impl HelperDef for SecretHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        budget::charge_call(h)?;
        let name = if self.list { "secrets" } else { "secret" };
        let path = if self.list || h.params().len() <= 1 {
            one_string(h, name)?
        } else {
            as_text(name, h.params()[0].value())?
        };
        // A path that is not a literal in the template came from data
        // (possibly a secret): it is never echoed in errors or logs.
        let from_data = h
            .param(0)
            .is_some_and(|p| p.try_get_constant_value().is_none());
        let mut args: serde_json::Map<String, Value> = h
            .hash()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.value().clone()))
            .collect();
        // An argument that is not a literal came from data too: Vault's
        // messages about the request may echo it.
        let mut args_from_data = h
            .hash()
            .values()
            .any(|v| v.try_get_constant_value().is_none());
        let positional = h.params().get(1..).unwrap_or_default();
        if !self.list && !positional.is_empty() {
            args_from_data |= positional
                .iter()
                .any(|p| p.try_get_constant_value().is_none());
            write_data(&mut args, positional, !h.hash().is_empty())?;
        }
        let request = if self.list {
            if !args.is_empty() {
                return Err(helper_error(
                    "`secrets` takes only a path: it lists the keys under it",
                ));
            }
            SecretRequest::list(path, from_data)
        } else {
            SecretRequest::build(path, &args, from_data)
        }
        .map_err(|e| helper_error(e.to_string()))?
        .with_arguments_from_data(args_from_data);
        // The request is kept (collected, or reported missing): it counts
        // as a value the render derived.
        budget::charge_held((request.path().len() + request.body().map_or(0, str::len)) as u64)?;
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
                        helper_error(format!("{name} {:?} was not fetched", request.shown_path()));
                    missing.push(request);
                    Err(reply)
                }
            }
            None => Err(helper_error(format!(
                "`{name}` used outside a volume render"
            ))),
        })
    }
}

/// A write's data given as consul-template gives it: `"key=value"`
/// strings, each trimmed around the key and the value, empty ones
/// skipped, a repeated key's last value kept. The strings may come from
/// data, so no message quotes them.
fn write_data(
    args: &mut serde_json::Map<String, Value>,
    positional: &[handlebars::PathAndJson<'_>],
    named: bool,
) -> Result<(), RenderError> {
    if named {
        return Err(helper_error(
            "`secret` takes its write's data either as `key=value` strings or as named arguments, not both",
        ));
    }
    for p in positional {
        let text = as_text("secret", p.value())?;
        if text.is_empty() {
            continue;
        }
        let Some((k, v)) = text.split_once('=') else {
            return Err(helper_error(
                "a `secret` write argument is not a `key=value` pair",
            ));
        };
        args.insert(k.trim().to_owned(), Value::String(v.trim().to_owned()));
    }
    if args.is_empty() {
        return Err(helper_error(
            "every `secret` write argument is empty: the agent writes to the path with no data, the driver would read it",
        ));
    }
    Ok(())
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
            .is_some_and(|s| s.len() > MAX_RENDERED_BYTES)
        {
            return Err(budget::output_exceeded(&format!("the result of `{}`", self.name)).into());
        }
        budget::hold(&result)?;
        Ok(ScopedJson::Derived(result))
    }
}

fn as_text<'a>(name: &str, value: &'a Value) -> Result<&'a str, RenderError> {
    value
        .as_str()
        .ok_or_else(|| helper_error(format!("`{name}` takes a string argument")))
}

/// Text a helper builds: refused as soon as it would be larger than
/// [`MAX_RENDERED_BYTES`], and metered as it is written. Encoders write
/// into it, so a value too large to encode stops after the first megabyte,
/// not after the whole value was encoded.
pub(super) struct CappedText {
    /// What the helper is called, for the message.
    name: &'static str,
    text: Vec<u8>,
    meter: Meter,
    /// Why writing stopped, when it did.
    stopped: Option<Stop>,
}

impl CappedText {
    pub(super) fn new(name: &'static str) -> Self {
        Self {
            name,
            text: Vec::new(),
            meter: Meter::new(),
            stopped: None,
        }
    }

    /// Appends `bytes`, or stops.
    pub(super) fn push(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        if self.text.len() + bytes.len() > MAX_RENDERED_BYTES {
            return Err(budget::output_exceeded(&format!(
                "the result of `{}`",
                self.name
            )));
        }
        self.meter.text(bytes.len())?;
        self.text.extend_from_slice(bytes);
        Ok(())
    }

    /// The text written, as a string value; the limit that stopped the
    /// writing, if one did.
    pub(super) fn finish(mut self) -> Result<String, RenderError> {
        if let Some(stop) = self.stopped {
            return Err(stop.into());
        }
        self.meter.finish()?;
        String::from_utf8(self.text).map_err(|_| {
            helper_error(format!(
                "`{}` produced bytes that are not UTF-8 text",
                self.name
            ))
        })
    }

    /// Whether writing stopped at a limit (the writer's error then says
    /// nothing more).
    pub(super) fn stopped(&self) -> bool {
        self.stopped.is_some()
    }
}

impl std::io::Write for CappedText {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.push(buf) {
            Ok(()) => Ok(buf.len()),
            Err(stop) => {
                let message = stop.to_string();
                self.stopped = Some(stop);
                Err(std::io::Error::other(message))
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Input encoded per step: a multiple of 3 bytes, so the pieces of the
/// encoding join without padding in between.
const BASE64_STEP: usize = 48 * 1024;

/// `base64Encode`: standard base64 of a string.
pub(super) fn base64_encode(name: &'static str, value: &Value) -> Result<Value, RenderError> {
    let text = as_text(name, value)?.as_bytes();
    if text.len().div_ceil(3) * 4 > MAX_RENDERED_BYTES {
        return Err(budget::output_exceeded(&format!("the result of `{name}`")).into());
    }
    let mut out = CappedText::new(name);
    for piece in text.chunks(BASE64_STEP) {
        out.push(STANDARD.encode(piece).as_bytes())?;
    }
    out.finish().map(Value::String)
}

/// `base64Decode`: the text a base64 string encodes (must be UTF-8).
pub(super) fn base64_decode(name: &'static str, value: &Value) -> Result<Value, RenderError> {
    let text = as_text(name, value)?.trim().as_bytes();
    let invalid = || helper_error(format!("`{name}` was given text that is not valid base64"));
    // Whole groups of four characters per step: every piece but the last
    // decodes on its own (padding may only end the text).
    let mut out = CappedText::new(name);
    let pieces = text.chunks(BASE64_STEP / 3 * 4);
    let last = pieces.len().saturating_sub(1);
    for (i, piece) in pieces.enumerate() {
        // Padding anywhere but at the very end is invalid, as in one piece.
        if i < last && piece.ends_with(b"=") {
            return Err(invalid());
        }
        out.push(&STANDARD.decode(piece).map_err(|_| invalid())?)?;
    }
    out.finish().map(Value::String)
}

/// Writes `value` as JSON (compact, or indented) into a [`CappedText`].
fn json_text(name: &'static str, value: &Value, pretty: bool) -> Result<String, RenderError> {
    let mut out = CappedText::new(name);
    let written = if pretty {
        serde_json::to_writer_pretty(&mut out, value)
    } else {
        serde_json::to_writer(&mut out, value)
    };
    if written.is_err() && !out.stopped() {
        return Err(helper_error(format!(
            "`{name}` could not encode its argument"
        )));
    }
    out.finish()
}

/// `toJson`: compact JSON.
pub(super) fn to_json(name: &'static str, value: &Value) -> Result<Value, RenderError> {
    json_text(name, value, false).map(Value::String)
}

/// `toJsonPretty`: indented JSON.
pub(super) fn to_json_pretty(name: &'static str, value: &Value) -> Result<Value, RenderError> {
    json_text(name, value, true).map(Value::String)
}

/// [`to_json`] and [`to_json_pretty`], for `toGoJson`'s escaping.
pub(super) fn encode_json(
    name: &'static str,
    value: &Value,
    pretty: bool,
) -> Result<String, RenderError> {
    json_text(name, value, pretty)
}
