//! Looking values up as Go's text/template does: `.key` steps, `index`
//! and what `range` accepts.

use serde_json::Value;

use super::{GoError, NIL, kind};

/// A `.key` step on a value, as Go's `evalField` does it on consul-template's
/// data (`missingkey=zero` by default, `missingkey=error` when strict).
///
/// `base` is `None` when the template engine found nothing at the path;
/// with `nil_map` that is a secret without data, a `nil` map.
pub fn field<'a>(
    base: Option<&'a Value>,
    keys: &[&str],
    missing_key_error: bool,
    nil_map: bool,
) -> Result<&'a Value, GoError> {
    let mut current = base;
    for (i, key) in keys.iter().enumerate() {
        let missing = || {
            if missing_key_error {
                Err(GoError::MissingKey((*key).to_owned()))
            } else {
                Ok(&NIL)
            }
        };
        let next = match current {
            None | Some(Value::Null) if i == 0 && nil_map => missing()?,
            None => return Err(GoError::Missing),
            Some(Value::Null) => return Err(GoError::FieldOfNil((*key).to_owned())),
            Some(Value::Object(map)) => match map.get(*key) {
                Some(value) => value,
                None => missing()?,
            },
            Some(other) => {
                return Err(GoError::FieldOf {
                    key: (*key).to_owned(),
                    kind: kind(other),
                });
            }
        };
        current = Some(next);
    }
    current.ok_or(GoError::Missing)
}

/// A key or position given to `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// A map key (a string literal in the template).
    Str(String),
    /// A list position (an integer literal).
    Int(u64),
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Str(s) => write!(f, "{s:?}"),
            Self::Int(i) => write!(f, "{i}"),
        }
    }
}

/// Go's `index base keys…`. A missing map key gives `nil` whatever the
/// agent's mode (`missingkey` does not apply to `index`).
pub fn index<'a>(
    base: Option<&'a Value>,
    keys: &[Key],
    nil_map: bool,
) -> Result<&'a Value, GoError> {
    static EMPTY: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(|| Value::Object(serde_json::Map::new()));
    let mut current = match base {
        None | Some(Value::Null) if nil_map => &*EMPTY,
        None => return Err(GoError::Missing),
        Some(Value::Null) => return Err(GoError::IndexOfNil),
        Some(value) => value,
    };
    for key in keys {
        current = match (current, key) {
            // A `nil` element reached by an earlier key.
            (Value::Null, _) => return Err(GoError::IndexOfNil),
            (Value::Object(map), Key::Str(k)) => map.get(k).unwrap_or(&NIL),
            (Value::Array(list), Key::Int(at)) => usize::try_from(*at)
                .ok()
                .and_then(|at| list.get(at))
                .ok_or(GoError::OutOfRange(*at))?,
            (Value::String(_) | Value::Number(_), Key::Int(at)) => {
                return Err(GoError::IndexOfText(*at));
            }
            (other, key) => {
                return Err(GoError::IndexWith {
                    kind: kind(other),
                    key: key.to_string(),
                });
            }
        };
    }
    Ok(current)
}

/// Go's `range`: a list, a map or `nil` (nothing to iterate); anything
/// else is an error.
pub fn range(value: Option<&Value>) -> Result<(), GoError> {
    match value {
        Some(Value::Null | Value::Array(_) | Value::Object(_)) => Ok(()),
        Some(other) => Err(GoError::Range(kind(other))),
        None => Err(GoError::Missing),
    }
}
