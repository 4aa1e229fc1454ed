//! Go's `unicode` and `unicode/utf8` as Sprig's string libraries use them:
//! classes by general category (Go's `IsUpper` is `Lu`, where Rust's
//! `is_uppercase` also takes `Other_Uppercase`), simple one-to-one case
//! mappings (Go's `ToUpper('ß')` is `ß`, where Rust's gives `SS`), and
//! decoding that turns each byte of invalid UTF-8 into U+FFFD.

use std::sync::LazyLock;

use regex::Regex;

fn class(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| unreachable!("a valid class: {e}"))
}

static UPPER: LazyLock<Regex> = LazyLock::new(|| class(r"^\p{Lu}$"));
static LOWER: LazyLock<Regex> = LazyLock::new(|| class(r"^\p{Ll}$"));
static TITLE: LazyLock<Regex> = LazyLock::new(|| class(r"^\p{Lt}$"));
static LETTER: LazyLock<Regex> = LazyLock::new(|| class(r"^\p{L}$"));
static PUNCT: LazyLock<Regex> = LazyLock::new(|| class(r"^\p{P}$"));
static NUMBER: LazyLock<Regex> = LazyLock::new(|| class(r"^\p{N}$"));

fn is(re: &Regex, c: char) -> bool {
    re.is_match(c.encode_utf8(&mut [0; 4]))
}

/// `unicode.IsSpace`.
pub(super) fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// `unicode.IsUpper`.
pub(super) fn is_upper(c: char) -> bool {
    is(&UPPER, c)
}

/// `unicode.IsLower`.
pub(super) fn is_lower(c: char) -> bool {
    is(&LOWER, c)
}

/// `unicode.IsTitle`.
pub(super) fn is_title(c: char) -> bool {
    is(&TITLE, c)
}

/// `unicode.IsLetter`.
pub(super) fn is_letter(c: char) -> bool {
    is(&LETTER, c)
}

/// `unicode.IsPunct`.
pub(super) fn is_punct(c: char) -> bool {
    is(&PUNCT, c)
}

/// `unicode.IsNumber`.
pub(super) fn is_number(c: char) -> bool {
    is(&NUMBER, c)
}

fn single(mut mapped: impl Iterator<Item = char>, c: char) -> char {
    match (mapped.next(), mapped.next()) {
        (Some(m), None) => m,
        _ => c,
    }
}

/// `unicode.ToUpper`: the simple mapping.
pub(super) fn to_upper(c: char) -> char {
    single(c.to_uppercase(), c)
}

/// `unicode.ToLower`: the simple mapping.
pub(super) fn to_lower(c: char) -> char {
    if c == '\u{130}' {
        return 'i';
    }
    single(c.to_lowercase(), c)
}

/// `unicode.ToTitle`: upper case but for the digraphs, which have a
/// title form of their own.
pub(super) fn to_title(c: char) -> char {
    match c {
        '\u{1C4}'..='\u{1C6}' => '\u{1C5}',
        '\u{1C7}'..='\u{1C9}' => '\u{1C8}',
        '\u{1CA}'..='\u{1CC}' => '\u{1CB}',
        '\u{1F1}'..='\u{1F3}' => '\u{1F2}',
        c => to_upper(c),
    }
}

/// `utf8.DecodeRune`: the first character and its length; a byte that
/// starts no valid character is U+FFFD of length 1.
pub(super) fn decode(s: &[u8]) -> (char, usize) {
    let end = s.len().min(4);
    for len in 1..=end {
        if let Ok(t) = std::str::from_utf8(&s[..len])
            && let Some(c) = t.chars().next()
        {
            return (c, len);
        }
    }
    ('\u{FFFD}', usize::from(!s.is_empty()))
}

/// `[]rune(s)`.
pub(super) fn runes(s: &[u8]) -> Vec<char> {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s;
    while !rest.is_empty() {
        let (c, n) = decode(rest);
        out.push(c);
        rest = &rest[n..];
    }
    out
}

/// `bytes.Buffer.WriteRune`.
pub(super) fn push(out: &mut Vec<u8>, c: char) {
    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
}

/// A byte read as the character of the same number, as code that takes
/// `rune(s[i])` does.
pub(super) fn latin1(b: u8) -> char {
    char::from(b)
}
