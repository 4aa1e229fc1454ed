//! Sprig's string functions over Go's strings (bytes, not UTF-8 text):
//! `toString`, `cat`, `quote`, `title`, `substr`, `trunc`, `plural` …

use serde_json::Value;

use super::super::fmt;
use super::super::model::Go;
use super::conv::{Out, first, int, string, strval, text};

/// `substr` and `trunc` over bytes, as Sprig slices Go strings.
fn substr(start: i64, end: i64, s: &[u8]) -> Vec<u8> {
    let len = s.len();
    let start = usize::try_from(start).ok();
    let end = usize::try_from(end).ok().filter(|&e| e <= len);
    match (start, end) {
        (None, Some(e)) => s[..e].to_vec(),
        (Some(b), None) if b <= len => s[b..].to_vec(),
        (Some(b), Some(e)) if b <= e => s[b..e].to_vec(),
        _ => s[..end.unwrap_or(len).min(len)].to_vec(),
    }
}

fn trunc(count: i64, s: &[u8]) -> Vec<u8> {
    let len = i64::try_from(s.len()).unwrap_or(i64::MAX);
    if count < 0 && len + count > 0 {
        return s[usize::try_from(len + count).unwrap_or(0)..].to_vec();
    }
    if count >= 0 && len > count {
        return s[..usize::try_from(count).unwrap_or(0)].to_vec();
    }
    s.to_vec()
}

/// Go's `strings.Title`: a letter after a separator is title-cased.
fn title(s: &[u8]) -> Vec<u8> {
    let mut out = String::new();
    let mut previous = ' ';
    for c in String::from_utf8_lossy(s).chars() {
        let separator = if previous.is_ascii() {
            !(previous.is_ascii_alphanumeric() || previous == '_')
        } else {
            !(previous.is_alphanumeric()) && previous.is_whitespace()
        };
        if separator {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        previous = c;
    }
    out.into_bytes()
}

/// `cat`, `quote`, `squote`: each argument but `nil`, joined by spaces.
fn joined(name: &str, args: &[Go<'_>]) -> Out {
    let mut parts = Vec::new();
    for a in args.iter().filter(|a| !matches!(a, Go::Nil)) {
        let s = strval(a)?;
        parts.push(match name {
            "sprig_quote" => fmt::quote(&s, false).into_bytes(),
            "sprig_squote" => [b"'".as_slice(), &s, b"'"].concat(),
            _ => s,
        });
    }
    Ok(text(&parts.join(&b' ')))
}

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    Some(match name {
        "sprig_toString" => strval(&first(args)).map(|b| text(&b)),
        "sprig_cat" | "sprig_quote" | "sprig_squote" => joined(name, args),
        "sprig_title" => string(&first(args)).map(|s| text(&title(&s))),
        "sprig_substr" => match args {
            [a, b, s] => {
                int(a).and_then(|a| int(b).and_then(|b| string(s).map(|s| text(&substr(a, b, &s)))))
            }
            _ => Err("wrong number of args for substr".to_owned()),
        },
        "sprig_trunc" => match args {
            [c, s] => int(c).and_then(|c| string(s).map(|s| text(&trunc(c, &s)))),
            _ => Err("wrong number of args for trunc".to_owned()),
        },
        "sprig_plural" => match args {
            [one_form, many, count] => int(count).and_then(|n| {
                let form = if n == 1 { one_form } else { many };
                string(form).map(|s| text(&s))
            }),
            _ => Err("wrong number of args for plural".to_owned()),
        },
        "sprig_hello" => Ok(Value::String("Hello!".to_owned())),
        "sprig_fail" => {
            string(&first(args)).and_then(|m| Err(String::from_utf8_lossy(&m).into_owned()))
        }
        _ => return None,
    })
}
