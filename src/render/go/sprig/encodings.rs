//! Encodings and digests: Sprig's JSON functions (over Go's
//! `encoding/json`, [`super::super::encoding`]), and the hashes,
//! Sprig's and consul-template's `hmacSHA256Hex`.

use serde_json::Value;
use sha2::Digest as _;

use super::super::encoding;
use super::super::model::Go;
use super::conv::{Out, first, hex, string};

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
