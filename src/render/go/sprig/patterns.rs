//! The regular-expression functions, consul-template's and Sprig's, over
//! Go's RE2 syntax ([`super::super::regex`]).

use serde_json::Value;

use super::super::model::{self, Go};
use super::conv::{Out, int, string};

/// The regular-expression functions. consul-template's take the pattern
/// first and the text last; Sprig's the same, except `regexFindAll` and
/// `regexSplit`, which take a count last.
fn regex_call(name: &str, args: &[Go<'_>]) -> Out {
    let strings = |n: usize| -> Result<Vec<String>, String> {
        if args.len() != n {
            return Err(format!(
                "wrong number of args for {name}: want {n} got {}",
                args.len()
            ));
        }
        args[..n]
            .iter()
            .map(|a| string(a).map(|b| String::from_utf8_lossy(&b).into_owned()))
            .collect()
    };
    if name == "sprig_regexQuoteMeta" {
        // Go's QuoteMeta escapes fewer characters than regex::escape.
        return strings(1).map(|s| {
            let mut out = String::with_capacity(s[0].len());
            for c in s[0].chars() {
                if "\\.+*?()|[]{}^$".contains(c) {
                    out.push('\\');
                }
                out.push(c);
            }
            Value::String(out)
        });
    }
    let count = |a: &Go<'_>| int(a).map(|n| usize::try_from(n).ok());
    match name {
        "regexMatch" | "sprig_regexMatch" | "sprig_mustRegexMatch" => {
            let s = strings(2)?;
            match super::super::regex::compile(s[0].as_bytes()) {
                Ok(re) => Ok(Value::Bool(re.is_match(&s[1]))),
                // Sprig's regexMatch answers false for a bad pattern.
                Err(_) if name == "sprig_regexMatch" => Ok(Value::Bool(false)),
                Err(e) => Err(e),
            }
        }
        "regexReplaceAll" | "sprig_regexReplaceAll" | "sprig_regexReplaceAllLiteral" => {
            let s = strings(3)?;
            // consul-template: pattern, replacement, text; Sprig: pattern,
            // text, replacement.
            let (text_in, with) = if name == "regexReplaceAll" {
                (&s[2], &s[1])
            } else {
                (&s[1], &s[2])
            };
            let re = super::super::regex::compile(s[0].as_bytes())?;
            crate::render::budget::charge(
                u64::try_from(text_in.len() / 16).unwrap_or(u64::MAX),
                [],
            )
            .map_err(|e| e.to_string())?;
            let out = if name == "sprig_regexReplaceAllLiteral" {
                re.replace_all(text_in, regex::NoExpand(with))
            } else {
                re.replace_all(text_in, with.as_str())
            };
            if out.len() > crate::render::MAX_RENDERED_BYTES {
                return Err("the result is too large".to_owned());
            }
            Ok(Value::String(out.into_owned()))
        }
        "sprig_regexFind" => {
            let s = strings(2)?;
            let re = super::super::regex::compile(s[0].as_bytes())?;
            Ok(Value::String(
                re.find(&s[1]).map_or("", |m| m.as_str()).to_owned(),
            ))
        }
        _ => {
            let [pattern, input, n] = args else {
                return Err(format!(
                    "wrong number of args for {name}: want 3 got {}",
                    args.len()
                ));
            };
            let (pattern, input) = (string(pattern)?, string(input)?);
            let input = String::from_utf8_lossy(&input).into_owned();
            let re = super::super::regex::compile(&pattern)?;
            let limit = count(n)?;
            let parts: Vec<Value> = if name == "sprig_regexFindAll" {
                re.find_iter(&input)
                    .take(limit.unwrap_or(usize::MAX))
                    .map(|m| Value::String(m.as_str().to_owned()))
                    .collect()
            } else {
                match limit {
                    Some(0) => Vec::new(),
                    Some(l) => re
                        .splitn(&input, l)
                        .map(|p| Value::String(p.to_owned()))
                        .collect(),
                    None => re
                        .split(&input)
                        .map(|p| Value::String(p.to_owned()))
                        .collect(),
                }
            };
            Ok(model::strings(parts))
        }
    }
}

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    match name {
        "regexMatch"
        | "sprig_regexMatch"
        | "sprig_mustRegexMatch"
        | "regexReplaceAll"
        | "sprig_regexReplaceAll"
        | "sprig_regexReplaceAllLiteral"
        | "sprig_regexFind"
        | "sprig_regexFindAll"
        | "sprig_regexSplit"
        | "sprig_regexQuoteMeta" => Some(regex_call(name, args)),
        _ => None,
    }
}
