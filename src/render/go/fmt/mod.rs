//! Go's `fmt` over the Go model ([`super::model`]): what `{{ x }}`
//! prints, and `printf`/`print`/`println` with every verb, flag, width and
//! precision, wrong verbs, missing and extra arguments included.
//!
//! `%q` quotes as `strconv.Quote` does. Which characters are printable is
//! Go's `unicode.IsPrint` for ASCII, Latin-1 and the space, format and
//! private-use characters; a character assigned after the Unicode version
//! the tables here follow may print where Go escapes it.

use std::fmt::Write as _;

mod float;
mod printer;
mod quote;

use printer::Printer;
pub(in crate::render) use quote::{is_print, quote};

use super::model::Go;
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

/// `fmt.Sprintf(format, args...)`.
pub(in crate::render) fn sprintf(format: &[u8], args: &[Go<'_>]) -> Result<Vec<u8>, Failed> {
    let mut out = Vec::with_capacity(format.len());
    let mut scan = Scan {
        format,
        args,
        i: 0,
        next: 0,
        reordered: false,
        bad_index: false,
    };
    while scan.i < format.len() {
        budget::charge(0, []).map_err(|e| e.to_string())?;
        if format[scan.i] != b'%' {
            scan.literal(&mut out);
            continue;
        }
        scan.i += 1;
        let mut p = scan.directive(&mut out)?;
        let Some(verb) = scan.verb() else {
            out.extend_from_slice(b"%!(NOVERB)");
            break;
        };
        p.verb = verb;
        if verb == '%' {
            out.push(b'%');
        } else if scan.bad_index {
            let _ = write!(Bytes(&mut out), "%!{verb}(BADINDEX)");
        } else if let Some(arg) = args.get(scan.next) {
            scan.next += 1;
            p.arg(&mut out, arg)?;
        } else {
            let _ = write!(Bytes(&mut out), "%!{verb}(MISSING)");
        }
    }
    if !scan.reordered && scan.next < args.len() {
        extra(&mut out, &args[scan.next..])?;
    }
    Ok(out)
}

/// Where `sprintf` is in its format and its arguments.
struct Scan<'f, 'g, 'a> {
    format: &'f [u8],
    args: &'g [Go<'a>],
    /// The next byte of the format.
    i: usize,
    /// The next argument.
    next: usize,
    /// An explicit argument index was used (no `%!(EXTRA …)` then).
    reordered: bool,
    /// The current directive's index was bad.
    bad_index: bool,
}

impl Scan<'_, '_, '_> {
    /// Text up to the next `%`, as it is.
    fn literal(&mut self, out: &mut Vec<u8>) {
        let end = self.format[self.i..]
            .iter()
            .position(|&b| b == b'%')
            .map_or(self.format.len(), |p| self.i + p);
        out.extend_from_slice(&self.format[self.i..end]);
        self.i = end;
    }

    /// A directive's flags, argument indexes, width and precision, up to
    /// its verb.
    fn directive(&mut self, out: &mut Vec<u8>) -> Result<Printer, Failed> {
        let mut p = Printer::default();
        self.flags(&mut p);
        self.bad_index = false;
        self.index();
        if self.format.get(self.i) == Some(&b'*') {
            self.i += 1;
            match self.args.get(self.next) {
                Some(Go::Int(n) | Go::Int64(n)) if n.unsigned_abs() <= 1_000_000 => {
                    if *n < 0 {
                        p.minus = true;
                        p.zero = false;
                    }
                    p.width = Some(usize::try_from(n.unsigned_abs()).unwrap_or(0));
                }
                _ => out.extend_from_slice(b"%!(BADWIDTH)"),
            }
            self.next += 1;
        } else {
            p.width = number(self.format, &mut self.i);
        }
        if self.format.get(self.i) == Some(&b'.') {
            self.i += 1;
            self.index();
            p.precision = self.precision(out);
        }
        self.index();
        if p.width.is_some_and(|w| w > 1_000_000) || p.precision.is_some_and(|w| w > 1_000_000) {
            return Err("a printf width or precision over 1000000".to_owned());
        }
        Ok(p)
    }

    /// The flags `#0+- `.
    fn flags(&mut self, p: &mut Printer) {
        while let Some(&c) = self.format.get(self.i) {
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
            self.i += 1;
        }
    }

    /// An explicit argument index, `[n]`.
    fn index(&mut self) {
        if self.format.get(self.i) != Some(&b'[') {
            return;
        }
        self.reordered = true;
        let Some(close) = self.format[self.i..].iter().position(|&b| b == b']') else {
            self.bad_index = true;
            self.i = self.format.len();
            return;
        };
        match std::str::from_utf8(&self.format[self.i + 1..self.i + close])
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) if n >= 1 && n <= self.args.len() => self.next = n - 1,
            _ => self.bad_index = true,
        }
        self.i += close + 1;
    }

    /// The precision after a `.`: digits, or `*` for an `int` argument.
    fn precision(&mut self, out: &mut Vec<u8>) -> Option<usize> {
        if self.format.get(self.i) != Some(&b'*') {
            return Some(number(self.format, &mut self.i).unwrap_or(0));
        }
        self.i += 1;
        let precision = match self.args.get(self.next) {
            Some(Go::Int(n) | Go::Int64(n)) if (0..=1_000_000).contains(n) => {
                Some(usize::try_from(*n).unwrap_or(0))
            }
            _ => {
                out.extend_from_slice(b"%!(BADPREC)");
                None
            }
        };
        self.next += 1;
        precision
    }

    /// The verb: one character (or one byte that is not UTF-8).
    fn verb(&mut self) -> Option<char> {
        let format = self.format;
        let i = self.i;
        let verb = std::str::from_utf8(&format[i.min(format.len())..])
            .ok()
            .and_then(|s| s.chars().next())
            .or_else(|| (i < format.len()).then(|| char::from(format[i])))?;
        self.i += verb.len_utf8();
        Some(verb)
    }
}

/// `%!(EXTRA type=value, …)` for the arguments no verb used.
fn extra(out: &mut Vec<u8>, unused: &[Go<'_>]) -> Result<(), Failed> {
    out.extend_from_slice(b"%!(EXTRA ");
    for (k, arg) in unused.iter().enumerate() {
        if k > 0 {
            out.extend_from_slice(b", ");
        }
        if matches!(arg, Go::Nil) {
            out.extend_from_slice(b"<nil>");
        } else {
            out.extend_from_slice(super::model::type_name(arg).as_bytes());
            out.push(b'=');
            Printer::plain('v').arg(out, arg)?;
        }
    }
    out.push(b')');
    Ok(())
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
pub(super) struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::float::format_g;
    use super::{Go, quote, sprint, sprintf};

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
