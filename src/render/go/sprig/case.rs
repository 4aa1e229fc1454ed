//! Sprig's case functions, ported from the libraries Sprig 3.2 calls so
//! the bytes are theirs, quirks included: `goutils` (`untitle`,
//! `swapcase`, `initials` and `nospace`, the last two reading each byte
//! as a Latin-1 character) and `xstrings` 1.4 (`snakecase`, `kebabcase`,
//! `camelcase`, word by word).

use super::super::model::Go;
use super::conv::{Out, charge, first, string, text};
use super::unicode::{
    decode, is_letter, is_lower, is_number, is_punct, is_space, is_title, is_upper, latin1, push,
    runes, to_lower, to_title, to_upper,
};

/// goutils' `Uncapitalize`: the first letter of each space-separated word
/// in lower case.
fn untitle(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut next = true;
    for c in runes(s) {
        if is_space(c) {
            next = true;
            push(&mut out, c);
        } else if next {
            push(&mut out, to_lower(c));
            next = false;
        } else {
            push(&mut out, c);
        }
    }
    out
}

/// goutils' `SwapCase`.
fn swapcase(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut whitespace = true;
    for c in runes(s) {
        let swapped = if is_upper(c) || is_title(c) {
            whitespace = false;
            to_lower(c)
        } else if is_lower(c) {
            if whitespace {
                whitespace = false;
                to_title(c)
            } else {
                to_upper(c)
            }
        } else {
            whitespace = is_space(c);
            c
        };
        push(&mut out, swapped);
    }
    out
}

/// goutils' `Initials`, byte by byte.
fn initials(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut gap = true;
    for &b in s {
        let c = latin1(b);
        if is_space(c) {
            gap = true;
        } else if gap {
            push(&mut out, c);
            gap = false;
        }
    }
    out
}

/// goutils' `DeleteWhiteSpace`, byte by byte: the text as is if it has
/// no white space.
fn nospace(s: &[u8]) -> Vec<u8> {
    if !s.iter().any(|&b| is_space(latin1(b))) {
        return s.to_vec();
    }
    let mut out = Vec::with_capacity(s.len());
    for &b in s.iter().filter(|&&b| !is_space(latin1(b))) {
        push(&mut out, latin1(b));
    }
    out
}

/// xstrings' `isConnector`.
fn is_connector(c: char) -> bool {
    c == '-' || c == '_' || is_space(c)
}

/// xstrings' `isAlphabet`: a letter, but not a CJK ideograph.
fn is_alphabet(c: char) -> bool {
    is_letter(c)
        && !matches!(c, '\u{4E00}'..='\u{9FCC}' | '\u{3400}'..='\u{4D85}' | '\u{20000}'..='\u{2B81D}')
}

/// xstrings' `ToCamelCase`.
fn camelcase(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s;
    let (mut r0, mut size) = ('\0', 0);
    while !rest.is_empty() {
        (r0, size) = decode(rest);
        rest = &rest[size..];
        if !is_connector(r0) {
            r0 = to_upper(r0);
            break;
        }
        push(&mut out, r0);
    }
    if rest.is_empty() {
        if size != 0 {
            push(&mut out, r0);
        }
        return out;
    }
    while !rest.is_empty() {
        let r1 = r0;
        (r0, size) = decode(rest);
        rest = &rest[size..];
        if is_connector(r0) && is_connector(r1) {
            push(&mut out, r1);
            continue;
        }
        if is_connector(r1) {
            r0 = to_upper(r0);
        } else {
            push(&mut out, r1);
        }
    }
    push(&mut out, r0);
    out
}

/// xstrings' word types.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Word {
    Invalid,
    Number,
    Upper,
    Alphabet,
    Connector,
    Punct,
    Other,
}

/// xstrings' `nextValidRune`: the next character that is not U+FFFD (or
/// `prev` if none is left), and the bytes read to reach it.
fn next_valid(s: &[u8], prev: char) -> (char, usize) {
    let mut size = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let (c, n) = decode(rest);
        size += n;
        if c != '\u{FFFD}' {
            return (c, size);
        }
        rest = &rest[n..];
    }
    (prev, size)
}

/// Extends a word while `keep` holds for the next character (`r` is the
/// last one read: bytes that are not UTF-8 at the end take its class).
fn extend(mut rest: &[u8], mut offset: usize, mut r: char, keep: impl Fn(char) -> bool) -> usize {
    while !rest.is_empty() {
        let (c, n) = next_valid(rest, r);
        r = c;
        if !keep(r) {
            break;
        }
        offset += n;
        rest = &rest[n..];
    }
    offset
}

/// xstrings' `nextWord`: the next word, its type and what follows it.
fn next_word(s: &[u8]) -> (Word, &[u8], &[u8]) {
    if s.is_empty() {
        return (Word::Invalid, s, s);
    }
    let (r, size) = next_valid(s, '\u{FFFD}');
    if r == '\u{FFFD}' {
        return (Word::Invalid, &s[..size], &s[size..]);
    }
    let rest = &s[size..];
    let (wt, offset) = if is_connector(r) {
        (Word::Connector, extend(rest, size, r, is_connector))
    } else if is_punct(r) {
        (Word::Punct, extend(rest, size, r, is_punct))
    } else if is_upper(r) {
        (Word::Upper, upper_word(rest, size, r))
    } else if is_alphabet(r) {
        let offset = extend(rest, size, r, |c| is_alphabet(c) && !is_upper(c));
        (Word::Alphabet, offset)
    } else if is_number(r) {
        (Word::Number, extend(rest, size, r, is_number))
    } else {
        let offset = extend(rest, size, r, |c| {
            !(is_connector(c) || is_alphabet(c) || is_number(c) || is_punct(c))
        });
        (Word::Other, offset)
    };
    (wt, &s[..offset], &s[offset..])
}

/// A word starting with an upper-case letter: `HTTPStatus` is `HTTP`,
/// then `Status`.
fn upper_word(rest: &[u8], size: usize, first: char) -> usize {
    if rest.is_empty() {
        return size;
    }
    let (r, n) = next_valid(rest, first);
    let mut offset = size;
    if is_upper(r) {
        let mut prev_size = n;
        offset += n;
        let mut rest = &rest[n..];
        let mut r = r;
        while !rest.is_empty() {
            let (c, m) = next_valid(rest, r);
            r = c;
            if !is_upper(r) {
                break;
            }
            prev_size = m;
            offset += m;
            rest = &rest[m..];
        }
        if !rest.is_empty() && is_alphabet(r) {
            offset -= prev_size;
        }
        offset
    } else if is_alphabet(r) {
        extend(&rest[n..], offset + n, r, |c| {
            is_alphabet(c) && !is_upper(c)
        })
    } else {
        offset
    }
}

/// xstrings' `toLower` of one word.
fn lower_word(out: &mut Vec<u8>, wt: Word, word: &[u8], connector: char) {
    if wt != Word::Upper && wt != Word::Connector {
        out.extend_from_slice(word);
        return;
    }
    let mut rest = word;
    while !rest.is_empty() {
        let (c, n) = decode(rest);
        rest = &rest[n..];
        push(
            out,
            if is_connector(c) {
                connector
            } else if is_upper(c) {
                to_lower(c)
            } else {
                c
            },
        );
    }
}

/// xstrings' `camelCaseToLowerCase`: `snakecase` and `kebabcase`.
fn lower_case(s: &[u8], connector: char) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + s.len() / 4);
    if s.is_empty() {
        return out;
    }
    let (mut wt, mut word, mut rest) = next_word(s);
    while !rest.is_empty() {
        if wt != Word::Connector {
            lower_word(&mut out, wt, word, connector);
        }
        let (prev, last) = (wt, word);
        (wt, word, rest) = next_word(rest);
        match prev {
            Word::Number => {
                while matches!(wt, Word::Alphabet | Word::Number) {
                    lower_word(&mut out, wt, word, connector);
                    (wt, word, rest) = next_word(rest);
                }
                if !matches!(wt, Word::Invalid | Word::Punct | Word::Connector) {
                    push(&mut out, connector);
                }
            }
            Word::Connector => lower_word(&mut out, prev, last, connector),
            Word::Punct => {}
            _ => (wt, word, rest) = after_word(&mut out, (wt, word, rest), connector),
        }
    }
    lower_word(&mut out, wt, word, connector);
    out
}

/// `camelCaseToLowerCase` after a word of letters: a number that follows
/// belongs to it (`Bld4Floor` is `bld4_floor`) unless letters follow the
/// number (`HTTP2xx` is `http_2xx`).
fn after_word<'a>(
    out: &mut Vec<u8>,
    next: (Word, &'a [u8], &'a [u8]),
    connector: char,
) -> (Word, &'a [u8], &'a [u8]) {
    let (wt, word, rest) = next;
    if wt != Word::Number {
        if !matches!(wt, Word::Connector | Word::Punct) {
            push(out, connector);
        }
        return next;
    }
    if rest.is_empty() {
        return next;
    }
    let last = word;
    let (mut wt, mut word, mut rest) = next_word(rest);
    if wt != Word::Alphabet {
        lower_word(out, Word::Number, last, connector);
        if !matches!(wt, Word::Connector | Word::Punct) {
            push(out, connector);
        }
        return (wt, word, rest);
    }
    push(out, connector);
    lower_word(out, Word::Number, last, connector);
    while matches!(wt, Word::Alphabet | Word::Number) {
        lower_word(out, wt, word, connector);
        (wt, word, rest) = next_word(rest);
    }
    if !matches!(wt, Word::Invalid | Word::Connector | Word::Punct) {
        push(out, connector);
    }
    (wt, word, rest)
}

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    let f: fn(&[u8]) -> Vec<u8> = match name {
        "sprig_untitle" => untitle,
        "sprig_swapcase" => swapcase,
        "sprig_initials" => initials,
        "sprig_nospace" => nospace,
        "sprig_camelcase" => camelcase,
        "sprig_snakecase" => |s| lower_case(s, '_'),
        "sprig_kebabcase" => |s| lower_case(s, '-'),
        _ => return None,
    };
    Some(string(&first(args)).and_then(|s| {
        // Each byte may become a character of up to three bytes.
        charge(s.len().saturating_mul(3))?;
        Ok(text(&f(&s)))
    }))
}

#[cfg(test)]
mod tests {
    use super::{camelcase, initials, lower_case, nospace, swapcase};

    #[test]
    fn bytes_that_are_not_utf8_are_treated_as_go_treats_them() {
        // Each as Go's xstrings 1.4 and goutils 1.1.1 answer: upper-case
        // words are decoded, each bad byte U+FFFD.
        assert_eq!(lower_case(b"ab\xffCD", '_'), "ab_\u{FFFD}cd".as_bytes());
        assert_eq!(lower_case(b"AB\xff", '_'), "ab\u{FFFD}".as_bytes());
        assert_eq!(camelcase(b"a_\xff"), "A\u{FFFD}".as_bytes());
        assert_eq!(swapcase(b"\xffa"), "\u{FFFD}A".as_bytes());
        // goutils reads bytes as Latin-1: U+00A0's second byte is a space.
        assert_eq!(initials("a\u{e0}b".as_bytes()), b"ab");
        assert_eq!(initials(b"x \xa0y"), b"xy");
        assert_eq!(nospace(b"a\xc2\xa0b"), "a\u{c2}b".as_bytes());
        assert_eq!(nospace(b"\xff"), b"\xff");
    }
}
