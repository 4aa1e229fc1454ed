//! One verb's printer: its flags, width and precision over a Go value,
//! as `fmt`'s `printArg` and `printValue` walk it.

use std::fmt::Write as _;

use serde_json::Value;

use super::float::{format_e, format_g};
use super::quote::{can_backquote, is_print, quote, quote_rune};
use super::{Bytes, Failed};
use crate::render::budget;
use crate::render::go::model::{self, Go, go};

/// Flags, width and precision of one verb (fmt's own flags).
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Printer {
    pub(super) verb: char,
    pub(super) minus: bool,
    pub(super) plus: bool,
    pub(super) sharp: bool,
    pub(super) space: bool,
    pub(super) zero: bool,
    pub(super) width: Option<usize>,
    pub(super) precision: Option<usize>,
}

impl Printer {
    pub(super) fn plain(verb: char) -> Self {
        Self {
            verb,
            ..Self::default()
        }
    }

    /// An operand at the top (`printArg`): `nil` is `<nil>` for %v and a
    /// wrong verb otherwise.
    pub(super) fn arg(&self, out: &mut Vec<u8>, arg: &Go<'_>) -> Result<(), Failed> {
        match arg {
            Go::Nil => {
                if matches!(self.verb, 'v' | 'T') {
                    self.pad(out, b"<nil>");
                } else {
                    let _ = write!(Bytes(out), "%!{}(<nil>)", self.verb);
                }
                Ok(())
            }
            Go::Error(m) => Err(m.to_string()),
            _ if self.verb == 'T' => {
                self.pad(out, model::type_name(arg).as_bytes());
                Ok(())
            }
            other => self.value(out, other, 0),
        }
    }

    /// `printValue`: below the top, `nil` prints `<nil>` whatever the verb.
    pub(super) fn value(
        &self,
        out: &mut Vec<u8>,
        value: &Go<'_>,
        depth: usize,
    ) -> Result<(), Failed> {
        budget::charge(1, []).map_err(|e| e.to_string())?;
        match value {
            Go::Nil => out.extend_from_slice(b"<nil>"),
            Go::Error(m) => return Err(m.to_string()),
            Go::Bool(b) => {
                if matches!(self.verb, 't' | 'v') {
                    self.pad(out, if *b { b"true" } else { b"false" });
                } else {
                    self.bad(out, value)?;
                }
            }
            Go::Str(bytes) => self.string(out, bytes, value)?,
            // json.Number is a Stringer: string verbs print its text.
            Go::Number(n) => {
                let text = n.as_str();
                if matches!(self.verb, 'v' | 's' | 'x' | 'X' | 'q') {
                    self.string(out, text.as_bytes(), value)?;
                } else {
                    self.bad(out, value)?;
                }
            }
            // Stringers: `time.Time` and `*semver.Version`.
            Go::Time(_) | Go::Semver(_) => {
                let text = match value {
                    Go::Time(t) => t.string(),
                    Go::Semver(v) => model::semver_text(v),
                    _ => String::new(),
                };
                if matches!(self.verb, 'v' | 's' | 'x' | 'X' | 'q') {
                    self.string(out, text.as_bytes(), value)?;
                } else {
                    return Err(format!(
                        "%{} of a {} is not converted: print it with %v or %s",
                        self.verb,
                        model::type_name(value)
                    ));
                }
            }
            Go::Int(n) | Go::Int64(n) => self.integer(out, *n, value)?,
            Go::Float(f) => self.float(out, *f, value)?,
            Go::List(items) | Go::Strings(items) => self.list(out, items.iter().map(go), depth)?,
            Go::Map(map) => {
                out.extend_from_slice(b"map[");
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    self.value(out, &Go::Str(k.as_bytes().into()), depth + 1)?;
                    out.push(b':');
                    self.value(out, &go(v), depth + 1)?;
                }
                out.push(b']');
            }
            Go::NilMap => out.extend_from_slice(b"map[]"),
            Go::AnyMap(pairs) => {
                out.extend_from_slice(b"map[");
                for (i, (k, v)) in model::sorted_pairs(pairs).iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    self.value(out, k, depth + 1)?;
                    out.push(b':');
                    self.value(out, v, depth + 1)?;
                }
                out.push(b']');
            }
            Go::Secret(response) => self.secret(out, response, depth)?,
            Go::Pki(found) => {
                out.push(b'{');
                for (i, field) in ["Cert", "Key", "CA"].iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    let text = found.get(field).and_then(Value::as_str).unwrap_or("");
                    self.value(out, &Go::Str(text.as_bytes().into()), depth + 1)?;
                }
                out.push(b' ');
                let chain = found.get("CAChain").and_then(Value::as_array);
                self.list(out, chain.into_iter().flatten().map(go), depth + 1)?;
                out.push(b'}');
            }
        }
        Ok(())
    }

    fn list<'v>(
        &self,
        out: &mut Vec<u8>,
        items: impl Iterator<Item = Go<'v>>,
        depth: usize,
    ) -> Result<(), Failed> {
        out.push(b'[');
        for (i, item) in items.enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            self.value(out, &item, depth + 1)?;
        }
        out.push(b']');
        Ok(())
    }

    /// consul-template's `Secret` struct, as `{{ secret "…" }}` prints it.
    fn secret(&self, out: &mut Vec<u8>, response: &Value, depth: usize) -> Result<(), Failed> {
        let text = |k: &str| response.get(k).and_then(Value::as_str).unwrap_or("");
        let sub = depth + 1;
        if depth > 0 {
            return Err(
                "printing a secret inside another value prints a memory address".to_owned(),
            );
        }
        out.push(b'{');
        self.value(out, &Go::Str(text("request_id").as_bytes().into()), sub)?;
        out.push(b' ');
        self.value(out, &Go::Str(text("lease_id").as_bytes().into()), sub)?;
        out.push(b' ');
        let duration = response
            .get("lease_duration")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        self.value(out, &Go::Int(duration), sub)?;
        out.push(b' ');
        let renewable = response
            .get("renewable")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        self.value(out, &Go::Bool(renewable), sub)?;
        out.push(b' ');
        match response.get("data") {
            Some(Value::Object(map)) => self.value(out, &Go::Map(map), sub)?,
            _ => self.value(out, &Go::NilMap, sub)?,
        }
        out.push(b' ');
        let warnings = response.get("warnings").and_then(Value::as_array);
        self.list(out, warnings.into_iter().flatten().map(go), sub)?;
        for pointer in ["auth", "wrap_info"] {
            if response.get(pointer).is_some_and(|v| !v.is_null()) {
                return Err(format!(
                    "the secret has `{pointer}`: Go prints its memory address"
                ));
            }
            out.extend_from_slice(b" <nil>");
        }
        out.push(b'}');
        Ok(())
    }

    /// `%!verb(type=value)`.
    fn bad(&self, out: &mut Vec<u8>, value: &Go<'_>) -> Result<(), Failed> {
        let _ = write!(Bytes(out), "%!{}({}=", self.verb, model::type_name(value));
        Self::plain('v').value(out, value, 1)?;
        out.push(b')');
        Ok(())
    }

    /// Pads to the width (runes), with spaces, or zeros where Go does.
    fn pad(&self, out: &mut Vec<u8>, text: &[u8]) {
        let runes = String::from_utf8_lossy(text).chars().count();
        let fill = self.width.unwrap_or(0).saturating_sub(runes);
        if self.minus {
            out.extend_from_slice(text);
            out.extend(std::iter::repeat_n(b' ', fill));
        } else {
            let byte = if self.zero { b'0' } else { b' ' };
            out.extend(std::iter::repeat_n(byte, fill));
            out.extend_from_slice(text);
        }
    }

    fn string(&self, out: &mut Vec<u8>, bytes: &[u8], value: &Go<'_>) -> Result<(), Failed> {
        // Precision limits the runes formatted.
        let cut: Vec<u8> = match self.precision {
            Some(p) if matches!(self.verb, 'v' | 's' | 'q' | 'x' | 'X') => {
                let text = String::from_utf8_lossy(bytes);
                if text.chars().count() > p && std::str::from_utf8(bytes).is_ok() {
                    text.chars().take(p).collect::<String>().into_bytes()
                } else {
                    bytes.to_vec()
                }
            }
            _ => bytes.to_vec(),
        };
        match self.verb {
            'v' | 's' => self.pad(out, &cut),
            'q' => {
                let quoted = if self.sharp && can_backquote(&cut) {
                    let mut q = vec![b'`'];
                    q.extend_from_slice(&cut);
                    q.push(b'`');
                    q
                } else {
                    quote(&cut, self.plus).into_bytes()
                };
                self.pad(out, &quoted);
            }
            'x' | 'X' => {
                let mut hex = String::new();
                for (i, b) in cut.iter().enumerate() {
                    if self.space && i > 0 {
                        hex.push(' ');
                    }
                    if self.sharp && (self.space || i == 0) {
                        hex.push_str(if self.verb == 'x' { "0x" } else { "0X" });
                    }
                    if self.verb == 'x' {
                        let _ = write!(hex, "{b:02x}");
                    } else {
                        let _ = write!(hex, "{b:02X}");
                    }
                }
                self.pad(out, hex.as_bytes());
            }
            _ => self.bad(out, value)?,
        }
        Ok(())
    }

    fn integer(&self, out: &mut Vec<u8>, n: i64, value: &Go<'_>) -> Result<(), Failed> {
        let abs = n.unsigned_abs();
        let (digits, prefix) = match self.verb {
            'v' | 'd' => (abs.to_string(), ""),
            'b' => (format!("{abs:b}"), if self.sharp { "0b" } else { "" }),
            'o' => (format!("{abs:o}"), if self.sharp { "0" } else { "" }),
            'O' => (format!("{abs:o}"), "0o"),
            'x' => (format!("{abs:x}"), if self.sharp { "0x" } else { "" }),
            'X' => (format!("{abs:X}"), if self.sharp { "0X" } else { "" }),
            'c' => {
                let c = u32::try_from(n)
                    .ok()
                    .and_then(char::from_u32)
                    .unwrap_or('\u{FFFD}');
                self.pad(out, c.to_string().as_bytes());
                return Ok(());
            }
            'q' => {
                let c = u32::try_from(n)
                    .ok()
                    .and_then(char::from_u32)
                    .unwrap_or('\u{FFFD}');
                self.pad(out, quote_rune(c, self.plus).as_bytes());
                return Ok(());
            }
            'U' => {
                let mut text = format!("U+{abs:04X}");
                if self.sharp
                    && let Some(c) = u32::try_from(n).ok().and_then(char::from_u32)
                    && is_print(c)
                {
                    let _ = write!(text, " '{c}'");
                }
                self.pad(out, text.as_bytes());
                return Ok(());
            }
            _ => return self.bad(out, value),
        };
        let mut digits = digits;
        if let Some(p) = self.precision {
            if p == 0 && n == 0 {
                digits.clear();
            }
            while digits.len() < p {
                digits.insert(0, '0');
            }
        }
        let sign = if n < 0 {
            "-"
        } else if self.plus {
            "+"
        } else if self.space {
            " "
        } else {
            ""
        };
        let head = format!("{sign}{prefix}");
        self.pad_number(out, &head, &digits);
        Ok(())
    }

    /// A number's sign and prefix, then zeros (with the `0` flag and no
    /// precision) or spaces to the width.
    fn pad_number(&self, out: &mut Vec<u8>, head: &str, digits: &str) {
        let len = head.chars().count() + digits.chars().count();
        let fill = self.width.unwrap_or(0).saturating_sub(len);
        if self.minus {
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(digits.as_bytes());
            out.extend(std::iter::repeat_n(b' ', fill));
        } else if self.zero && self.precision.is_none() {
            out.extend_from_slice(head.as_bytes());
            out.extend(std::iter::repeat_n(b'0', fill));
            out.extend_from_slice(digits.as_bytes());
        } else {
            out.extend(std::iter::repeat_n(b' ', fill));
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(digits.as_bytes());
        }
    }

    fn float(&self, out: &mut Vec<u8>, f: f64, value: &Go<'_>) -> Result<(), Failed> {
        let text = match self.verb {
            'v' | 'g' | 'G' => format_g(f, self.precision, self.verb == 'G', self.sharp),
            'e' | 'E' => format_e(f, self.precision.unwrap_or(6), self.verb == 'E'),
            'f' | 'F' => format!("{:.*}", self.precision.unwrap_or(6), f.abs()),
            _ => return self.bad(out, value),
        };
        if f.is_nan() || f.is_infinite() {
            // Go pads infinities and NaN with spaces only, and drops
            // NaN's sign unless a flag asks for one.
            let sign = if f.is_infinite() && f < 0.0 {
                '-'
            } else if self.space && !self.plus {
                ' '
            } else {
                '+'
            };
            let mut word = format!("{sign}{}", if f.is_nan() { "NaN" } else { "Inf" });
            if f.is_nan() && !self.space && !self.plus {
                word.remove(0);
            }
            let keep = Self {
                zero: false,
                ..*self
            };
            keep.pad(out, word.as_bytes());
            return Ok(());
        }
        let negative = f.is_sign_negative();
        let digits = text.trim_start_matches('-');
        let sign = if negative {
            "-"
        } else if self.plus {
            "+"
        } else if self.space {
            " "
        } else {
            ""
        };
        let keep = Self {
            precision: None,
            ..*self
        };
        keep.pad_number(out, sign, digits);
        Ok(())
    }
}
