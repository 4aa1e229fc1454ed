//! consul-template's string functions (and the Sprig ones that share
//! them): splitting, joining, trimming, case, replacing, indenting and
//! membership, over Go's strings (bytes).

use serde_json::{Map, Value};

use super::super::args::{Out, arity, charge, int, lossy, s, string_list, strs, text, wrong};
use super::super::model::{self, Go, go};

/// Go's `strings.TrimSpace` (ASCII and Unicode white space).
fn trim_space(bytes: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(bytes) {
        Ok(t) => t.trim().as_bytes().to_vec(),
        Err(_) => bytes.trim_ascii().to_vec(),
    }
}

fn replace(src: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    if from.is_empty() {
        // Go inserts `to` before every rune and at the end.
        let mut out = Vec::new();
        for c in lossy(src).chars() {
            out.extend_from_slice(to);
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        out.extend_from_slice(to);
        return out;
    }
    let mut out = Vec::with_capacity(src.len());
    let mut i = 0;
    while i < src.len() {
        if src[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(src[i]);
            i += 1;
        }
    }
    out
}

fn split_bytes<'a>(src: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    if sep.is_empty() {
        return std::str::from_utf8(src).map_or_else(
            |_| src.chunks(1).collect(),
            |t| {
                t.char_indices()
                    .map(|(i, c)| &src[i..i + c.len_utf8()])
                    .collect()
            },
        );
    }
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + sep.len() <= src.len() {
        if src[i..].starts_with(sep) {
            parts.push(&src[start..i]);
            i += sep.len();
            start = i;
        } else {
            i += 1;
        }
    }
    parts.push(&src[start..]);
    parts
}

fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// consul-template's `in(l, v)`.
fn member(list: &Go<'_>, v: &Go<'_>) -> bool {
    match list {
        Go::List(items) | Go::Strings(items) => items.iter().any(|item| match (&go(item), v) {
            (Go::Str(a), Go::Str(b)) => a == b,
            (Go::Number(a), Go::Number(b)) => a.as_str() == b.as_str(),
            (Go::Int(a), Go::Int(b)) | (Go::Int64(a), Go::Int64(b)) => a == b,
            #[allow(clippy::float_cmp)]
            (Go::Float(a), Go::Float(b)) => a == b,
            _ => false,
        }),
        Go::Str(hay) => matches!(v, Go::Str(n) if contains_bytes(hay, n)),
        Go::Number(n) => matches!(v, Go::Number(m) if n.as_str().contains(m.as_str())),
        _ => false,
    }
}

fn indent(spaces: i64, src: &[u8]) -> Out {
    let spaces = usize::try_from(spaces)
        .map_err(|_| "indent value must be a positive integer".to_owned())?;
    charge(src.len().saturating_mul(spaces.max(1)))?;
    let mut out = Vec::with_capacity(src.len());
    let mut at_line_start = true;
    for &c in src {
        if at_line_start && c != b'\n' {
            out.extend(std::iter::repeat_n(b' ', spaces));
        }
        out.push(c);
        at_line_start = c == b'\n';
    }
    text(out)
}

/// `toTitle`: `cases.Title(language.Und, cases.NoLower)`: the first letter
/// of each word upper-cased, the rest kept.
fn title(src: &[u8]) -> Vec<u8> {
    let mut out = String::new();
    let mut in_word = false;
    for c in lossy(src).chars() {
        if c.is_alphanumeric() || c == '\'' {
            if in_word {
                out.push(c);
            } else {
                out.extend(c.to_uppercase());
            }
            in_word = true;
        } else {
            out.push(c);
            in_word = false;
        }
    }
    out.into_bytes()
}

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    match table(name, args) {
        Ok(None) => edits(name, args).transpose(),
        other => other.transpose(),
    }
}

fn table(name: &str, args: &[Go<'_>]) -> Result<Option<Value>, String> {
    let arity = |n: usize| arity(name, args, n);
    let out = match name {
        "contains" => {
            arity(2)?;
            Ok(Value::Bool(member(&args[1], &args[0])))
        }
        "in" => {
            arity(2)?;
            Ok(Value::Bool(member(&args[0], &args[1])))
        }
        "containsAll" | "containsAny" | "containsNone" | "containsNotAll" => {
            arity(2)?;
            let Go::List(items) = &args[0] else {
                return Err(wrong("[]interface {}", &args[0]));
            };
            let (ret_true, invert) = match name {
                "containsAll" => (true, true),
                "containsAny" => (false, false),
                "containsNone" => (true, false),
                _ => (false, true),
            };
            for item in *items {
                if member(&args[1], &go(item)) != invert {
                    return Ok(Some(Value::Bool(!ret_true)));
                }
            }
            Ok(Value::Bool(ret_true))
        }
        "split" | "sprig_splitList" => {
            arity(2)?;
            let (sep, src) = (s(&args[0])?, s(&args[1])?);
            charge(src.len())?;
            let src = if name == "split" {
                trim_space(src)
            } else {
                src.to_vec()
            };
            if name == "split" && src.is_empty() {
                return string_list(Vec::new()).map(Some);
            }
            string_list(
                split_bytes(&src, sep)
                    .into_iter()
                    .map(<[u8]>::to_vec)
                    .collect(),
            )
        }
        "join" => {
            arity(2)?;
            let (sep, items) = (s(&args[0])?, strs(&args[1])?);
            charge(items.iter().map(|i| i.len() + sep.len()).sum())?;
            text(items.join(sep))
        }
        "splitToMap" => {
            arity(3)?;
            let (sep1, sep2, src) = (s(&args[0])?, s(&args[1])?, s(&args[2])?);
            charge(src.len())?;
            let src = trim_space(src);
            let mut map = Map::new();
            if !src.is_empty() {
                for part in split_bytes(&src, sep1) {
                    let cut = split_bytes(part, sep2);
                    if cut.len() > 1 {
                        let value = &part[cut[0].len() + sep2.len()..];
                        map.insert(lossy(cut[0]).into_owned(), model::string_value(value));
                    }
                }
            }
            Ok(Value::Object(map))
        }
        _ => return Ok(None),
    }?;
    Ok(Some(out))
}

/// Trimming, case, replacing, indenting and repeating.
fn edits(name: &str, args: &[Go<'_>]) -> Result<Option<Value>, String> {
    let arity = |n: usize| arity(name, args, n);
    let out = match name {
        "trimSpace" | "sprig_trim" => {
            arity(1)?;
            text(trim_space(s(&args[0])?))
        }
        "trim" | "sprig_trimAll" | "sprig_trimall" => {
            arity(2)?;
            let (cutset, src) = (
                lossy(s(&args[0])?).into_owned(),
                lossy(s(&args[1])?).into_owned(),
            );
            text(src.trim_matches(|c| cutset.contains(c)).as_bytes().to_vec())
        }
        "trimPrefix" | "trimSuffix" => {
            arity(2)?;
            let (affix, src) = (s(&args[0])?, s(&args[1])?);
            let out = if name == "trimPrefix" {
                src.strip_prefix(affix).unwrap_or(src)
            } else {
                src.strip_suffix(affix).unwrap_or(src)
            };
            text(out.to_vec())
        }
        "sprig_trimPrefix" | "sprig_trimSuffix" => {
            // Sprig's take the string last, like consul-template's.
            return edits(&name[6..], args);
        }
        "toLower" | "toUpper" | "sprig_lower" | "sprig_upper" => {
            arity(1)?;
            let src = s(&args[0])?;
            charge(src.len())?;
            let t = lossy(src);
            let out = if name.ends_with("ower") {
                t.to_lowercase()
            } else {
                t.to_uppercase()
            };
            text(out.into_bytes())
        }
        "toTitle" => {
            arity(1)?;
            text(title(s(&args[0])?))
        }
        "replaceAll" => {
            arity(3)?;
            let (from, to, src) = (s(&args[0])?, s(&args[1])?, s(&args[2])?);
            charge(src.len().saturating_mul(to.len().max(1)))?;
            text(replace(src, from, to))
        }
        "sprig_replace" => {
            arity(3)?;
            return edits("replaceAll", args);
        }
        "indent" => {
            arity(2)?;
            indent(int(&args[0])?, s(&args[1])?)
        }
        "sprig_indent" | "sprig_nindent" => {
            arity(2)?;
            let pad = " ".repeat(usize::try_from(int(&args[0])?).unwrap_or(0));
            let src = lossy(s(&args[1])?).into_owned();
            charge(src.len().saturating_mul(pad.len().max(1)))?;
            let body = format!("{pad}{}", src.replace('\n', &format!("\n{pad}")));
            let out = if name == "sprig_nindent" {
                format!("\n{body}")
            } else {
                body
            };
            text(out.into_bytes())
        }
        "sprig_contains" | "sprig_hasPrefix" | "sprig_hasSuffix" => {
            arity(2)?;
            let (needle, hay) = (s(&args[0])?, s(&args[1])?);
            Ok(Value::Bool(match name {
                "sprig_contains" => contains_bytes(hay, needle),
                "sprig_hasPrefix" => hay.starts_with(needle),
                _ => hay.ends_with(needle),
            }))
        }
        "sprig_repeat" => {
            arity(2)?;
            let (count, src) = (int(&args[0])?, s(&args[1])?);
            let count =
                usize::try_from(count).map_err(|_| "strings: negative Repeat count".to_owned())?;
            charge(src.len().saturating_mul(count))?;
            if src.len().saturating_mul(count) > crate::render::MAX_RENDERED_BYTES {
                return Err("sprig_repeat: the result is too large".to_owned());
            }
            text(src.repeat(count))
        }
        _ => return Ok(None),
    }?;
    Ok(Some(out))
}
