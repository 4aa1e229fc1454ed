//! Printing (`print`, `printf`, `println`), base64 and `sha256Hex`.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde_json::Value;
use sha2::Digest as _;

use super::super::args::{Out, arity, s, text};
use super::super::fmt;
use super::super::model::{self, Go};

fn base64_decode(input: &[u8], url: bool) -> Out {
    // Go's decoder skips \r and \n anywhere (wrapped base64).
    let cleaned: Vec<u8> = input
        .iter()
        .copied()
        .filter(|b| !matches!(b, b'\r' | b'\n'))
        .collect();
    let engine = if url { &URL_SAFE } else { &STANDARD };
    engine
        .decode(&cleaned)
        .map(|b| model::string_value(&b))
        .map_err(|e| format!("base64Decode: {e}"))
}

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    table(name, args).transpose()
}

fn table(name: &str, args: &[Go<'_>]) -> Result<Option<Value>, String> {
    let arity = |n: usize| arity(name, args, n);
    let out = match name {
        "printf" => {
            let (format, rest) = args
                .split_first()
                .ok_or("wrong number of args for printf")?;
            fmt::sprintf(s(format)?, rest).and_then(text)
        }
        "print" => fmt::sprint(args, false).and_then(text),
        "println" => fmt::sprint(args, true).and_then(text),
        "base64Decode" | "sprig_b64dec" => {
            arity(1)?;
            let out = base64_decode(s(&args[0])?, false);
            if name == "sprig_b64dec" {
                // sprig returns the error's text instead of failing.
                return Ok(Some(out.unwrap_or_else(|e| {
                    Value::String(e.replace("base64Decode: ", ""))
                })));
            }
            out
        }
        "base64URLDecode" => {
            arity(1)?;
            base64_decode(s(&args[0])?, true)
        }
        "base64Encode" | "sprig_b64enc" => {
            arity(1)?;
            Ok(Value::String(STANDARD.encode(s(&args[0])?)))
        }
        "base64URLEncode" => {
            arity(1)?;
            Ok(Value::String(URL_SAFE.encode(s(&args[0])?)))
        }
        "sha256Hex" | "sprig_sha256sum" => {
            arity(1)?;
            let digest = sha2::Sha256::digest(s(&args[0])?);
            let mut hex = String::with_capacity(64);
            for b in digest {
                let _ = write!(hex, "{b:02x}");
            }
            Ok(Value::String(hex))
        }
        _ => return Ok(None),
    }?;
    Ok(Some(out))
}
