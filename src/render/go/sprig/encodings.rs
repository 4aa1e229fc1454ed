//! Encodings and digests: Sprig's JSON functions (over Go's
//! `encoding/json`, [`super::super::encoding`]), base32 (Go's
//! `encoding/base32`, its errors' text included), and the hashes,
//! Sprig's and consul-template's (`md5sum`, `hmacSHA256Hex`).

use serde_json::Value;
use sha2::Digest as _;

use super::super::encoding;
use super::super::model::Go;
use super::conv::{Out, charge, first, hex, string, text};

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// `base32.StdEncoding.EncodeToString`.
fn base32_encode(src: &[u8]) -> String {
    let mut out = String::with_capacity(src.len().div_ceil(5) * 8);
    for chunk in src.chunks(5) {
        let mut block = [0u8; 5];
        block[..chunk.len()].copy_from_slice(chunk);
        let bits = block.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        let chars = match chunk.len() {
            1 => 2,
            2 => 4,
            3 => 5,
            4 => 7,
            _ => 8,
        };
        for i in 0..8 {
            if i < chars {
                let index = usize::try_from((bits >> (35 - 5 * i)) & 31).unwrap_or(0);
                out.push(char::from(BASE32[index]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `base32.StdEncoding.DecodeString`; an error is its offset, as
/// `CorruptInputError` counts it.
fn base32_decode(input: &[u8]) -> Result<Vec<u8>, usize> {
    let src: Vec<u8> = input
        .iter()
        .copied()
        .filter(|b| !matches!(b, b'\r' | b'\n'))
        .collect();
    let olen = src.len();
    let value = |b: u8| BASE32.iter().position(|&c| c == b);
    let mut out = Vec::with_capacity(olen / 8 * 5);
    let mut rest = src.as_slice();
    let mut end = false;
    while !rest.is_empty() && !end {
        let mut block = [0u8; 8];
        let mut len = 8;
        let mut j = 0;
        while j < 8 {
            let Some((&c, tail)) = rest.split_first() else {
                return Err(olen - j);
            };
            rest = tail;
            if c == b'=' && j >= 2 && rest.len() < 8 {
                if rest.len() + j < 7 {
                    return Err(olen);
                }
                for k in 0..7 - j {
                    if rest.len() > k && rest[k] != b'=' {
                        return Err(olen - rest.len() + k - 1);
                    }
                }
                (len, end) = (j, true);
                if matches!(len, 1 | 3 | 6) {
                    return Err(olen - rest.len() - 1);
                }
                break;
            }
            block[j] = value(c)
                .and_then(|v| u8::try_from(v).ok())
                .ok_or(olen - rest.len() - 1)?;
            j += 1;
        }
        let bits = block.iter().fold(0u64, |acc, &b| (acc << 5) | u64::from(b));
        let bytes = bits.to_be_bytes();
        let n = match len {
            8 => 5,
            7 => 4,
            5 => 3,
            4 => 2,
            2 => 1,
            _ => 0,
        };
        out.extend_from_slice(&bytes[3..3 + n]);
    }
    Ok(out)
}

fn hmac_sha256(message: &[u8], key: &[u8]) -> String {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&sha2::Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = sha2::Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = sha2::Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    hex(&outer.finalize())
}

/// Sprig's JSON functions; the plain ones write "" where encoding fails.
fn json(name: &str, args: &[Go<'_>]) -> Option<Out> {
    let consul = match name {
        "sprig_mustToJson" => return encoding::call("toJSON", args),
        "sprig_mustToPrettyJson" => return encoding::call("toJSONPretty", args),
        "sprig_mustToRawJson" => return encoding::call("toUnescapedJSON", args),
        "sprig_mustFromJson" => {
            return Some(string(&first(args)).and_then(|s| encoding::parse_json(&s)));
        }
        "sprig_fromJson" => {
            return Some(
                string(&first(args)).map(|s| encoding::parse_json(&s).unwrap_or(Value::Null)),
            );
        }
        "sprig_toJson" => "toJSON",
        "sprig_toPrettyJson" => "toJSONPretty",
        "sprig_toRawJson" => "toUnescapedJSON",
        _ => return None,
    };
    Some(Ok(encoding::call(consul, args)
        .and_then(Result::ok)
        .unwrap_or(Value::String(String::new()))))
}

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    if let Some(out) = json(name, args) {
        return Some(out);
    }
    Some(match name {
        "hmacSHA256Hex" => match args {
            [message, key] => string(message)
                .and_then(|m| string(key).map(|k| Value::String(hmac_sha256(&m, &k)))),
            _ => Err("wrong number of args for hmacSHA256Hex".to_owned()),
        },
        "sprig_b32enc" => string(&first(args)).and_then(|s| {
            charge(s.len() * 2)?;
            Ok(Value::String(base32_encode(&s)))
        }),
        // Sprig writes the error's text where decoding fails.
        "sprig_b32dec" => string(&first(args)).map(|s| match base32_decode(&s) {
            Ok(bytes) => text(&bytes),
            Err(at) => Value::String(format!("illegal base32 data at input byte {at}")),
        }),
        "md5sum" => string(&first(args)).map(|s| Value::String(hex(&md5::Md5::digest(&s)))),
        "sprig_sha1sum" => {
            string(&first(args)).map(|s| Value::String(hex(&sha1::Sha1::digest(&s))))
        }
        "sprig_sha512sum" => {
            string(&first(args)).map(|s| Value::String(hex(&sha2::Sha512::digest(&s))))
        }
        "sprig_adler32sum" => string(&first(args)).map(|s| {
            let (mut a, mut b) = (1u32, 0u32);
            for byte in s {
                a = (a + u32::from(byte)) % 65_521;
                b = (b + a) % 65_521;
            }
            Value::String(((b << 16) | a).to_string())
        }),
        _ => return None,
    })
}
