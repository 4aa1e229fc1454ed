//! Sprig's string functions over Go's strings (bytes, not UTF-8 text):
//! `toString`, `cat`, `quote`, `title`, `substr`, `trunc`, `plural` …

use serde_json::Value;

use super::super::fmt;
use super::super::model::Go;
use super::conv::{Out, charge, first, int, string, strval, text, within_output};

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

/// goutils' `AbbreviateFull`: at most `width` bytes, with `...` where
/// text was cut (`""` where goutils refuses the width).
fn abbreviate(s: &[u8], offset: i64, width: i64) -> Vec<u8> {
    let len = i64::try_from(s.len()).unwrap_or(i64::MAX);
    if s.is_empty() || width < 4 {
        return Vec::new();
    }
    if len <= width {
        return s.to_vec();
    }
    let mut offset = offset.min(len);
    if len - offset < width - 3 {
        offset = len - (width - 3);
    }
    let at = |i: i64| usize::try_from(i).unwrap_or(0);
    if offset <= 4 {
        return [&s[..at(width - 3)], b"..."].concat();
    }
    if width < 7 {
        return Vec::new();
    }
    if offset + width - 3 < len {
        return [
            b"...".as_slice(),
            &abbreviate(&s[at(offset)..], 0, width - 3),
        ]
        .concat();
    }
    [b"...".as_slice(), &s[at(len - (width - 3))..]].concat()
}

/// goutils' `WrapCustom`: lines of at most `width` bytes, broken at
/// spaces (a longer word kept whole, or cut with `long`).
fn wrap(s: &[u8], width: i64, sep: &[u8], long: bool) -> Result<Vec<u8>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let sep: &[u8] = if sep.is_empty() { b"\n" } else { sep };
    let width = usize::try_from(width.max(1)).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(s.len());
    let mut offset = 0;
    while s.len() - offset > width {
        if out.len() > crate::render::MAX_RENDERED_BYTES {
            return within_output("wrap", out.len()).map(|()| out);
        }
        if s[offset] == b' ' {
            offset += 1;
            continue;
        }
        let end = width + offset + 1;
        if let Some(space) = s[offset..end].iter().rposition(|&b| b == b' ') {
            out.extend_from_slice(&s[offset..offset + space]);
            out.extend_from_slice(sep);
            offset += space + 1;
        } else if long {
            out.extend_from_slice(&s[offset..offset + width]);
            out.extend_from_slice(sep);
            offset += width;
        } else {
            let end = width + offset;
            match s[end..].iter().position(|&b| b == b' ') {
                None => {
                    out.extend_from_slice(&s[offset..]);
                    offset = s.len();
                }
                Some(i) => {
                    out.extend_from_slice(&s[offset..end + i]);
                    out.extend_from_slice(sep);
                    offset = end + i + 1;
                }
            }
        }
    }
    out.extend_from_slice(&s[offset..]);
    within_output("wrap", out.len())?;
    Ok(out)
}

/// `abbrev`, `abbrevboth`, `wrap` and `wrapWith`.
fn cut(name: &str, args: &[Go<'_>]) -> Out {
    match (name, args) {
        ("sprig_abbrev", [width, s]) => {
            let (width, s) = (int(width)?, string(s)?);
            Ok(text(&if width < 4 {
                s
            } else {
                abbreviate(&s, 0, width)
            }))
        }
        ("sprig_abbrevboth", [left, right, s]) => {
            let (left, right, s) = (int(left)?, int(right)?, string(s)?);
            Ok(text(&if right < 4 || (left > 0 && right < 7) {
                s
            } else {
                abbreviate(&s, left, right)
            }))
        }
        ("sprig_wrap", [width, s]) => {
            let (width, s) = (int(width)?, string(s)?);
            charge(s.len())?;
            wrap(&s, width, b"", false).map(|w| text(&w))
        }
        ("sprig_wrapWith", [width, sep, s]) => {
            let (width, sep, s) = (int(width)?, string(sep)?, string(s)?);
            charge(s.len())?;
            wrap(&s, width, &sep, true).map(|w| text(&w))
        }
        _ => Err(format!("wrong number of args for {name}")),
    }
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
        "sprig_abbrev" | "sprig_abbrevboth" | "sprig_wrap" | "sprig_wrapWith" => cut(name, args),
        "sprig_hello" => Ok(Value::String("Hello!".to_owned())),
        "sprig_fail" => {
            string(&first(args)).and_then(|m| Err(String::from_utf8_lossy(&m).into_owned()))
        }
        _ => return None,
    })
}
