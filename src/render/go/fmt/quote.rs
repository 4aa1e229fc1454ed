//! `strconv.Quote` and `unicode.IsPrint`, as `%q`, `%#q` and Sprig's
//! `quote` write strings and characters.

use std::fmt::Write as _;

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

pub(super) fn can_backquote(bytes: &[u8]) -> bool {
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

pub(super) fn quote_rune(c: char, ascii: bool) -> String {
    let mut out = String::from("'");
    escape(&mut out, c, '\'', ascii);
    out.push('\'');
    out
}
