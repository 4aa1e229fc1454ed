//! Go's `fmt` over the Go model ([`super::model`]): what `{{ x }}`
//! prints, and `printf`/`print`/`println` with every verb, flag, width and
//! precision, wrong verbs, missing and extra arguments included.
//!
//! `%q` quotes as `strconv.Quote` does. Which characters are printable is
//! Go's `unicode.IsPrint` for ASCII, Latin-1 and the space, format and
//! private-use characters; a character assigned after the Unicode version
//! the tables here follow may print where Go escapes it.

use std::fmt::Write as _;

use serde_json::Value;

use super::model::{Go, go};
use crate::render::budget;

/// A failed print: a Go error (the template fails).
pub(in crate::render) type Failed = String;

/// What `{{ value }}` writes in Go's text/template.
pub(in crate::render) fn print_action(value: &Go<'_>) -> Result<Vec<u8>, Failed> {
    let mut out = Vec::new();
    match value {
        Go::Nil => out.extend_from_slice(b"<no value>"),
        Go::Error(m) => return Err(m.to_string()),
        // text/template prints what a pointer points to.
        other => Printer::plain('v').value(&mut out, other, 0)?,
    }
    Ok(out)
}

/// `fmt.Sprint(args...)`: spaces between operands when neither side is a
/// string.
pub(in crate::render) fn sprint(args: &[Go<'_>], newline: bool) -> Result<Vec<u8>, Failed> {
    let mut out = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        let is_string = |g: &Go<'_>| matches!(g, Go::Str(_));
        if i > 0 && (newline || !(is_string(arg) || is_string(&args[i - 1]))) {
            out.push(b' ');
        }
        Printer::plain('v').arg(&mut out, arg)?;
    }
    if newline {
        out.push(b'\n');
    }
    Ok(out)
}

/// Flags, width and precision of one verb (fmt's own flags).
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, Copy, Default)]
struct Printer {
    verb: char,
    minus: bool,
    plus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

/// `fmt.Sprintf(format, args...)`.
pub(in crate::render) fn sprintf(format: &[u8], args: &[Go<'_>]) -> Result<Vec<u8>, Failed> {
    let mut out = Vec::with_capacity(format.len());
    let mut next = 0usize;
    let mut reordered = false;
    let mut i = 0;
    while i < format.len() {
        budget::charge(0, []).map_err(|e| e.to_string())?;
        if format[i] != b'%' {
            let end = format[i..]
                .iter()
                .position(|&b| b == b'%')
                .map_or(format.len(), |p| i + p);
            out.extend_from_slice(&format[i..end]);
            i = end;
            continue;
        }
        i += 1;
        let mut p = Printer::default();
        // Flags.
        while let Some(&c) = format.get(i) {
            match c {
                b'#' => p.sharp = true,
                b'0' => p.zero = !p.minus,
                b'+' => p.plus = true,
                b'-' => {
                    p.minus = true;
                    p.zero = false;
                }
                b' ' => p.space = true,
                _ => break,
            }
            i += 1;
        }
        // Argument index, width, precision.
        let mut bad_index = false;
        let index = |i: &mut usize, next: &mut usize, reordered: &mut bool, bad: &mut bool| {
            if format.get(*i) != Some(&b'[') {
                return;
            }
            *reordered = true;
            let Some(close) = format[*i..].iter().position(|&b| b == b']') else {
                *bad = true;
                *i = format.len();
                return;
            };
            match std::str::from_utf8(&format[*i + 1..*i + close])
                .ok()
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(n) if n >= 1 && n <= args.len() => *next = n - 1,
                _ => *bad = true,
            }
            *i += close + 1;
        };
        index(&mut i, &mut next, &mut reordered, &mut bad_index);
        if format.get(i) == Some(&b'*') {
            i += 1;
            match args.get(next) {
                Some(Go::Int(n)) if n.unsigned_abs() <= 1_000_000 => {
                    if *n < 0 {
                        p.minus = true;
                        p.zero = false;
                    }
                    p.width = Some(usize::try_from(n.unsigned_abs()).unwrap_or(0));
                }
                _ => out.extend_from_slice(b"%!(BADWIDTH)"),
            }
            next += 1;
        } else {
            p.width = number(format, &mut i);
        }
        if format.get(i) == Some(&b'.') {
            i += 1;
            index(&mut i, &mut next, &mut reordered, &mut bad_index);
            if format.get(i) == Some(&b'*') {
                i += 1;
                match args.get(next) {
                    Some(Go::Int(n)) if (0..=1_000_000).contains(n) => {
                        p.precision = Some(usize::try_from(*n).unwrap_or(0));
                    }
                    _ => {
                        p.precision = None;
                        out.extend_from_slice(b"%!(BADPREC)");
                    }
                }
                next += 1;
            } else {
                p.precision = Some(number(format, &mut i).unwrap_or(0));
            }
        }
        index(&mut i, &mut next, &mut reordered, &mut bad_index);
        if p.width.is_some_and(|w| w > 1_000_000) || p.precision.is_some_and(|w| w > 1_000_000) {
            return Err("a printf width or precision over 1000000".to_owned());
        }
        let Some(verb) = std::str::from_utf8(&format[i.min(format.len())..])
            .ok()
            .and_then(|s| s.chars().next())
            .or_else(|| (i < format.len()).then(|| char::from(format[i])))
        else {
            out.extend_from_slice(b"%!(NOVERB)");
            break;
        };
        i += verb.len_utf8();
        p.verb = verb;
        if verb == '%' {
            out.push(b'%');
            continue;
        }
        if bad_index {
            let _ = write!(Bytes(&mut out), "%!{verb}(BADINDEX)");
            continue;
        }
        let Some(arg) = args.get(next) else {
            let _ = write!(Bytes(&mut out), "%!{verb}(MISSING)");
            continue;
        };
        next += 1;
        p.arg(&mut out, arg)?;
    }
    if !reordered && next < args.len() {
        out.extend_from_slice(b"%!(EXTRA ");
        for (k, arg) in args[next..].iter().enumerate() {
            if k > 0 {
                out.extend_from_slice(b", ");
            }
            if matches!(arg, Go::Nil) {
                out.extend_from_slice(b"<nil>");
            } else {
                out.extend_from_slice(super::model::type_name(arg).as_bytes());
                out.push(b'=');
                Printer::plain('v').arg(&mut out, arg)?;
            }
        }
        out.push(b')');
    }
    Ok(out)
}

fn number(format: &[u8], i: &mut usize) -> Option<usize> {
    let start = *i;
    while format.get(*i).is_some_and(u8::is_ascii_digit) {
        *i += 1;
    }
    std::str::from_utf8(&format[start..*i])
        .ok()
        .and_then(|n| n.parse().ok())
}

/// `write!` into bytes.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl Printer {
    fn plain(verb: char) -> Self {
        Self {
            verb,
            ..Self::default()
        }
    }

    /// An operand at the top (`printArg`): `nil` is `<nil>` for %v and a
    /// wrong verb otherwise.
    fn arg(&self, out: &mut Vec<u8>, arg: &Go<'_>) -> Result<(), Failed> {
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
                self.pad(out, super::model::type_name(arg).as_bytes());
                Ok(())
            }
            other => self.value(out, other, 0),
        }
    }

    /// `printValue`: below the top, `nil` prints `<nil>` whatever the verb.
    fn value(&self, out: &mut Vec<u8>, value: &Go<'_>, depth: usize) -> Result<(), Failed> {
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
            Go::Int(n) => self.integer(out, *n, value)?,
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
        let _ = write!(
            Bytes(out),
            "%!{}({}=",
            self.verb,
            super::model::type_name(value)
        );
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

/// The shortest digits of `f` and its decimal exponent (`d.ddd × 10^exp`).
fn shortest(f: f64) -> (String, i32) {
    let text = format!("{:e}", f.abs());
    let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
    (mantissa.replace('.', ""), exp.parse().unwrap_or(0))
}

/// `%e` with `precision` digits after the point.
fn format_e(f: f64, precision: usize, upper: bool) -> String {
    let text = format!("{:.*e}", precision, f.abs());
    let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if f.is_sign_negative() { "-" } else { "" };
    let e = if upper { 'E' } else { 'e' };
    let esign = if exp < 0 { '-' } else { '+' };
    format!("{sign}{mantissa}{e}{esign}{:02}", exp.unsigned_abs())
}

/// `%g`/`%v`: the shortest digits (or `precision` significant ones), in
/// `%e` form when the exponent is below -4 or at least the precision (6
/// for the shortest form).
fn format_g(f: f64, precision: Option<usize>, upper: bool, sharp: bool) -> String {
    let sign = if f.is_sign_negative() { "-" } else { "" };
    let (digits, exp, eprec) = match precision {
        None => {
            let (digits, exp) = shortest(f);
            (digits, exp, 6)
        }
        Some(p) => {
            let p = p.max(1);
            let text = format!("{:.*e}", p - 1, f.abs());
            let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
            let mut digits = mantissa.replace('.', "");
            if !sharp {
                while digits.len() > 1 && digits.ends_with('0') {
                    digits.pop();
                }
            }
            let eprec = if !sharp
                && p > digits.len()
                && digits.len() >= usize::try_from(exp.parse::<i32>().unwrap_or(0) + 1).unwrap_or(0)
            {
                digits.len()
            } else {
                p
            };
            (digits, exp.parse().unwrap_or(0), eprec)
        }
    };
    let eprec = i32::try_from(eprec).unwrap_or(i32::MAX);
    if exp < -4 || exp >= eprec {
        let e = if upper { 'E' } else { 'e' };
        let esign = if exp < 0 { '-' } else { '+' };
        let (first, rest) = digits.split_at(1);
        let point = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        return format!("{sign}{first}{point}{e}{esign}{:02}", exp.unsigned_abs());
    }
    let digits_len = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    if exp < 0 {
        let zeros = "0".repeat(usize::try_from(-exp - 1).unwrap_or(0));
        return format!("{sign}0.{zeros}{digits}");
    }
    if exp + 1 >= digits_len {
        let zeros = "0".repeat(usize::try_from(exp + 1 - digits_len).unwrap_or(0));
        return format!("{sign}{digits}{zeros}");
    }
    let (int, frac) = digits.split_at(usize::try_from(exp + 1).unwrap_or(0));
    format!("{sign}{int}.{frac}")
}

/// Go's `unicode.IsPrint`, as far as the tables here go (see the module).
pub(in crate::render) fn is_print(c: char) -> bool {
    let n = u32::from(c);
    if n < 0x80 {
        return (0x20..0x7f).contains(&n);
    }
    !(c.is_control()
        || c.is_whitespace()
        || (0xa0..=0xa0).contains(&n)
        || n == 0xad
        || (0x600..=0x605).contains(&n)
        || n == 0x61c
        || n == 0x6dd
        || n == 0x70f
        || n == 0x180e
        || (0x200b..=0x200f).contains(&n)
        || (0x2028..=0x202e).contains(&n)
        || (0x2060..=0x206f).contains(&n)
        || (0xd800..=0xf8ff).contains(&n)
        || (0xfdd0..=0xfdef).contains(&n)
        || n == 0xfeff
        || (0xfff0..=0xfffb).contains(&n)
        || (n & 0xfffe) == 0xfffe
        || (0xe0000..=0xe007f).contains(&n)
        || n >= 0xf0000)
}

fn can_backquote(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    text.chars()
        .all(|c| c != '`' && c != '\u{FEFF}' && (c == '\t' || !c.is_control()))
}

fn escape(out: &mut String, c: char, quote: char, ascii: bool) {
    match c {
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        '\\' => out.push_str("\\\\"),
        c if c == quote => {
            out.push('\\');
            out.push(c);
        }
        c if (!ascii || c.is_ascii()) && is_print(c) => out.push(c),
        c if u32::from(c) < 0x20 || u32::from(c) == 0x7f => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c if u32::from(c) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        }
        c => {
            let _ = write!(out, "\\U{:08x}", u32::from(c));
        }
    }
}

/// `strconv.Quote` (or `QuoteToASCII` with `ascii`).
pub(in crate::render) fn quote(bytes: &[u8], ascii: bool) -> String {
    let mut out = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            escape(&mut out, c, '"', ascii);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

fn quote_rune(c: char, ascii: bool) -> String {
    let mut out = String::from("'");
    escape(&mut out, c, '\'', ascii);
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::{Go, format_g, quote, sprint, sprintf};

    fn s(text: &str) -> Go<'_> {
        Go::Str(text.as_bytes().into())
    }

    fn run(format: &str, args: &[Go<'_>]) -> String {
        let _metered = crate::render::budget::Metered::start(crate::render::budget::Limits::FULL);
        String::from_utf8(sprintf(format.as_bytes(), args).unwrap()).unwrap()
    }

    #[test]
    fn widths_and_flags_are_gos() {
        assert_eq!(run("[%-10s]", &[s("ab")]), "[ab        ]");
        assert_eq!(run("[%5s]", &[s("ab")]), "[   ab]");
        assert_eq!(run("[%.1s]", &[s("ab")]), "[a]");
        assert_eq!(run("[%05d]", &[Go::Int(-42)]), "[-0042]");
        assert_eq!(run("[%+d]", &[Go::Int(5)]), "[+5]");
        assert_eq!(run("[%x]", &[Go::Int(255)]), "[ff]");
        assert_eq!(run("[%#x]", &[s("hi")]), "[0x6869]");
        assert_eq!(run("%q", &[s("a\"b\n\u{e9}")]), "\"a\\\"b\\n\u{e9}\"");
        assert_eq!(run("%+q", &[s("\u{e9}")]), "\"\\u00e9\"");
        assert_eq!(run("%d %s", &[Go::Int(1)]), "1 %!s(MISSING)");
        assert_eq!(run("%d", &[Go::Int(1), s("x")]), "1%!(EXTRA string=x)");
        assert_eq!(run("%d", &[s("x")]), "%!d(string=x)");
        assert_eq!(run("%[2]s %[1]s", &[s("a"), s("b")]), "b a");
        assert_eq!(run("a%", &[]), "a%!(NOVERB)");
        assert_eq!(run("%!", &[]), "%!!(MISSING)");
    }

    #[test]
    fn floats_are_gos() {
        assert_eq!(run("%.2f", &[Go::Float(1.23456)]), "1.23");
        assert_eq!(run("%f", &[Go::Float(1.5)]), "1.500000");
        assert_eq!(run("%8.3f|", &[Go::Float(-1.5)]), "  -1.500|");
        assert_eq!(run("%e", &[Go::Float(123_456.0)]), "1.234560e+05");
        assert_eq!(format_g(1_000_000.0, None, false, false), "1e+06");
        assert_eq!(format_g(123_456.0, None, false, false), "123456");
        assert_eq!(format_g(0.0001, None, false, false), "0.0001");
        assert_eq!(format_g(0.00001, None, false, false), "1e-05");
        assert_eq!(format_g(1.5, None, false, false), "1.5");
        assert_eq!(format_g(100.0, Some(2), false, false), "1e+02");
        assert_eq!(run("%v", &[Go::Float(2.0)]), "2");
    }

    #[test]
    fn sprint_spaces_operands_that_are_not_strings() {
        let _metered = crate::render::budget::Metered::start(crate::render::budget::Limits::FULL);
        assert_eq!(sprint(&[s("a"), s("b")], false).unwrap(), b"ab");
        assert_eq!(sprint(&[Go::Int(1), Go::Int(2)], false).unwrap(), b"1 2");
        assert_eq!(sprint(&[s("a"), Go::Int(2)], true).unwrap(), b"a 2\n");
        assert_eq!(quote(b"\xff", false), "\"\\xff\"");
    }
}
