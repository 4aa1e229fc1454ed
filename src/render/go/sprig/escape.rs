//! text/template's escapers (`html`, `js`, `urlquery`) and its `slice`,
//! over the Go model.

use std::fmt::Write as _;

use serde_json::Value;

use super::super::fmt;
use super::super::model::{self, Go};
use super::conv::{Out, Sink, int, text};

/// text/template's `evalArgs` for `html`, `js`, `urlquery`: one string as
/// is, else `fmt.Sprint` with `nil` as `<no value>`.
fn eval_args(args: &[Go<'_>]) -> Result<Vec<u8>, String> {
    if let [Go::Str(b)] = args {
        return Ok(b.to_vec());
    }
    let printable: Vec<Go<'_>> = args
        .iter()
        .map(|a| match a {
            Go::Nil => Go::Str(b"<no value>".as_slice().into()),
            other => other.clone(),
        })
        .collect();
    fmt::sprint(&printable, false)
}

fn html(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len());
    for &b in src {
        match b {
            b'"' => out.extend_from_slice(b"&#34;"),
            b'\'' => out.extend_from_slice(b"&#39;"),
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            0 => out.extend_from_slice("\u{FFFD}".as_bytes()),
            b => out.push(b),
        }
    }
    out
}

fn js(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len());
    for chunk in src.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.extend_from_slice(b"\\\\"),
                '\'' => out.extend_from_slice(b"\\'"),
                '"' => out.extend_from_slice(b"\\\""),
                '<' => out.extend_from_slice(b"\\u003C"),
                '>' => out.extend_from_slice(b"\\u003E"),
                '&' => out.extend_from_slice(b"\\u0026"),
                '=' => out.extend_from_slice(b"\\u003D"),
                c if u32::from(c) < 0x20 => {
                    let _ = write!(Sink(&mut out), "\\u00{:02X}", u32::from(c));
                }
                c if c.is_ascii() || fmt::is_print(c) => {
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                c => {
                    let _ = write!(Sink(&mut out), "\\u{:04X}", u32::from(c));
                }
            }
        }
        for _ in chunk.invalid() {
            out.extend_from_slice(b"\\uFFFD");
        }
    }
    out
}

/// `url.QueryEscape`.
fn query_escape(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len());
    for &b in src {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b),
            b' ' => out.push(b'+'),
            b => {
                let _ = write!(Sink(&mut out), "%{b:02X}");
            }
        }
    }
    out
}

/// text/template's `slice x i j`.
fn slice(base: &Go<'_>, indexes: &[Go<'_>]) -> Out {
    let mut at = Vec::new();
    for i in indexes {
        let n = int(i).map_err(|_| "cannot index slice/array with type".to_owned())?;
        at.push(usize::try_from(n).map_err(|_| format!("index out of range: {n}"))?);
    }
    let len = match base {
        Go::Str(b) => b.len(),
        Go::List(items) | Go::Strings(items) => items.len(),
        Go::Nil => return Err("slice of untyped nil".to_owned()),
        other => {
            return Err(format!(
                "can't slice item of type {}",
                model::type_name(other)
            ));
        }
    };
    if matches!(base, Go::Str(_)) && at.len() > 2 {
        return Err("cannot 3-index slice a string".to_owned());
    }
    let (from, to) = match at.as_slice() {
        [] => (0, len),
        [i] => (*i, len),
        [i, j] | [i, j, _] => (*i, *j),
        _ => return Err("too many slice indexes".to_owned()),
    };
    if from > to || to > len {
        return Err(format!("index out of range: {to}"));
    }
    Ok(match base {
        Go::Str(b) => text(&b[from..to]),
        Go::Strings(items) => model::strings(items[from..to].to_vec()),
        Go::List(items) => Value::Array(items[from..to].to_vec()),
        _ => Value::Null,
    })
}

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    Some(match name {
        "html" => eval_args(args).map(|b| text(&html(&b))),
        "js" => eval_args(args).map(|b| text(&js(&b))),
        "urlquery" => eval_args(args).map(|b| text(&query_escape(&b))),
        "slice" => match args.split_first() {
            Some((base, indexes)) => slice(base, indexes),
            None => Err("wrong number of args for slice".to_owned()),
        },
        _ => return None,
    })
}
