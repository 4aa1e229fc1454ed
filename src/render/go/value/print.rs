//! Printing as Go's `fmt` prints Vault data: `{{ x }}` and `printf` with
//! `%v`, `%s`, `%d` and `%t`, wrong verbs included.

use serde_json::Value;

use super::{GoError, number_text};
use crate::render::MAX_RENDERED_BYTES;
use crate::render::budget::{self, Meter, Stop};

/// How Go holds a JSON number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Num {
    /// `json.Number`: Vault data.
    Json,
    /// `int`: a range index or `.LeaseDuration`.
    Int,
}

/// What `{{ value }}` prints in Go: `<no value>` for `nil`, else `fmt`'s
/// `%v`. With `nil_map`, `nil` is a `nil` map, which prints `map[]`.
pub fn print(value: Option<&Value>, nil_map: bool) -> Result<String, GoError> {
    match value {
        None | Some(Value::Null) if nil_map => Ok("map[]".to_owned()),
        None => Err(GoError::Missing),
        Some(Value::Null) => Ok("<no value>".to_owned()),
        Some(value) => printf('v', value, Num::Json),
    }
}

/// What `printf "%<verb>" value` prints in Go (`fmt`'s `printArg`), for the
/// verbs `v`, `s`, `d` and `t`.
pub fn printf(verb: char, value: &Value, num: Num) -> Result<String, GoError> {
    if !matches!(verb, 'v' | 's' | 'd' | 't') {
        return Err(GoError::Verb(verb));
    }
    let mut out = Printed::default();
    match value {
        // A nil interface at the top: `<nil>` for %v, a wrong verb otherwise.
        Value::Null if verb == 'v' => out.push_str("<nil>")?,
        Value::Null => out.push_str(&format!("%!{verb}(<nil>)"))?,
        Value::Number(n) if num == Num::Int => {
            let text = n.to_string();
            if !is_integer(&text) {
                return Err(GoError::NotInt);
            }
            if matches!(verb, 'v' | 'd') {
                out.push_str(&text)?;
            } else {
                out.push_str(&format!("%!{verb}(int={text})"))?;
            }
        }
        other => element(&mut out, verb, other)?,
    }
    out.finish()
}

/// Text being printed: refused once it would be larger than the largest
/// file, and metered as it grows (printing a value touches all of it).
#[derive(Default)]
struct Printed {
    text: String,
    meter: Meter,
}

impl Printed {
    fn push_str(&mut self, s: &str) -> Result<(), Stop> {
        if self.text.len() + s.len() > MAX_RENDERED_BYTES {
            return Err(budget::output_exceeded("the printed value"));
        }
        self.meter.text(s.len())?;
        self.text.push_str(s);
        Ok(())
    }

    fn push(&mut self, c: char) -> Result<(), Stop> {
        self.push_str(c.encode_utf8(&mut [0; 4]))
    }

    fn finish(mut self) -> Result<String, GoError> {
        self.meter.finish()?;
        Ok(self.text)
    }
}

fn is_integer(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `fmt`'s `printValue` of an element of Vault data (below the top, where
/// `nil` prints `<nil>` whatever the verb).
fn element(out: &mut Printed, verb: char, value: &Value) -> Result<(), GoError> {
    match value {
        Value::Null => out.push_str("<nil>")?,
        Value::Bool(b) => {
            if matches!(verb, 'v' | 't') {
                out.push_str(&b.to_string())?;
            } else {
                out.push_str(&format!("%!{verb}(bool={b})"))?;
            }
        }
        Value::String(s) => string(out, verb, s)?,
        Value::Number(n) => {
            // json.Number is a Stringer: %v and %s print its text; other
            // verbs reach the string underneath, which they do not accept.
            let text = number_text(n);
            if matches!(verb, 'v' | 's') {
                out.push_str(&text)?;
            } else {
                out.push_str(&format!("%!{verb}(json.Number={text})"))?;
            }
        }
        Value::Array(items) => {
            out.push('[')?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ')?;
                }
                element(out, verb, item)?;
            }
            out.push(']')?;
        }
        Value::Object(map) => {
            // fmt sorts map keys; serde_json's map is sorted by the same
            // byte order.
            out.push_str("map[")?;
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(' ')?;
                }
                string(out, verb, key)?;
                out.push(':')?;
                element(out, verb, item)?;
            }
            out.push(']')?;
        }
    }
    Ok(())
}

/// `fmt` of a Go `string`.
fn string(out: &mut Printed, verb: char, s: &str) -> Result<(), Stop> {
    if matches!(verb, 'v' | 's') {
        out.push_str(s)
    } else {
        out.push_str(&format!("%!{verb}(string={s})"))
    }
}
