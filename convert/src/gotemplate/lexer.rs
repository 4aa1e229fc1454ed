//! Go text/template's lexer: text and actions, trim markers applied,
//! comments dropped.

use super::{Pos, Refusal, refuse};

/// A token of an action.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Field(Vec<String>),
    /// A field chain right after `)` or a variable, with no space between
    /// (`(x).a`, `$x.a`): the fields of that value. With a space, `.a` is
    /// an operand of its own, a [`Tok::Field`] of dot.
    Chain(Vec<String>),
    Dot,
    Var(String),
    Ident(String),
    Str(String),
    Num(String),
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
}

/// Text, or an action's tokens.
#[derive(Debug)]
pub(super) enum Piece {
    Text(String),
    Action { toks: Vec<(Tok, Pos)>, pos: Pos },
}

fn line_col(src: &str, byte: usize) -> Pos {
    let before = &src[..byte];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

const GO_SPACE: [char; 4] = [' ', '\t', '\r', '\n'];

/// Splits the source into text and actions, applying Go's trim markers and
/// dropping comments.
pub(super) fn lex(src: &str) -> Result<Vec<Piece>, Refusal> {
    let mut pieces = Vec::new();
    let mut rest = 0usize;
    let mut trim_next = false;
    loop {
        let Some(open_rel) = src[rest..].find("{{") else {
            let mut text = &src[rest..];
            if trim_next {
                text = text.trim_start_matches(GO_SPACE);
            }
            pieces.push(Piece::Text(text.to_owned()));
            return Ok(pieces);
        };
        let open = rest + open_rel;
        let mut text = &src[rest..open];
        if trim_next {
            text = text.trim_start_matches(GO_SPACE);
        }
        let mut inner = open + 2;
        let pos = line_col(src, open);
        let after = &src[inner..];
        let left_trim = after.starts_with('-') && after[1..].starts_with(GO_SPACE);
        if left_trim {
            text = text.trim_end_matches(GO_SPACE);
            inner += 2;
        }
        pieces.push(Piece::Text(text.to_owned()));
        // Comment: `/*` right after the delimiter (and its trim marker).
        if src[inner..].starts_with("/*") {
            let Some(end_rel) = src[inner..].find("*/") else {
                return refuse(pos, "comment", "unclosed comment");
            };
            let after_comment = inner + end_rel + 2;
            let tail = &src[after_comment..];
            if tail.starts_with("}}") {
                trim_next = false;
                rest = after_comment + 2;
            } else if tail.starts_with(GO_SPACE) && tail[1..].starts_with("-}}") {
                trim_next = true;
                rest = after_comment + 4;
            } else {
                return refuse(pos, "comment", "a comment must end with `*/}}` or `*/ -}}`");
            }
            continue;
        }
        let (toks, end, right_trim) = lex_action(src, inner, pos)?;
        pieces.push(Piece::Action { toks, pos });
        trim_next = right_trim;
        rest = end;
    }
}

/// A lexed action: its tokens, the byte after `}}`, and whether it ends
/// with `-}}`.
type Action = (Vec<(Tok, Pos)>, usize, bool);

/// Lexes one action from `start` to its closing delimiter: the tokens, the
/// byte after `}}`, and whether it ends with `-}}`.
fn lex_action(src: &str, start: usize, pos: Pos) -> Result<Action, Refusal> {
    let bytes = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = start;
    loop {
        let here = line_col(src, i);
        let Some(&c) = bytes.get(i) else {
            return refuse(pos, "action", "unclosed action: `}}` is missing");
        };
        if let Some((tok, len)) = punctuation(&src[i..]) {
            toks.push((tok, here));
            i += len;
            continue;
        }
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                let ws_end = i + src[i..].len() - src[i..].trim_start_matches(GO_SPACE).len();
                if src[ws_end..].starts_with("-}}") {
                    return Ok((toks, ws_end + 3, true));
                }
                i = ws_end;
            }
            b'}' if src[i..].starts_with("}}") => return Ok((toks, i + 2, false)),
            b')' => {
                toks.push((Tok::RParen, here));
                i += 1;
                // `(x).Field`: a field chain right after a parenthesis.
                if bytes.get(i) == Some(&b'.') {
                    let (names, end) = field_chain(src, i);
                    toks.push((Tok::Chain(names), here));
                    i = end;
                }
            }
            b'.' => {
                let (names, end) = field_chain(src, i);
                if names.is_empty() {
                    toks.push((Tok::Dot, here));
                    i += 1;
                } else {
                    toks.push((Tok::Field(names), here));
                    i = end;
                }
            }
            b'$' => {
                let name_end = ident_end(src, i + 1);
                let name = src[i + 1..name_end].to_owned();
                i = name_end;
                let (names, end) = field_chain(src, i);
                toks.push((Tok::Var(name), here));
                if !names.is_empty() {
                    toks.push((Tok::Chain(names), here));
                    i = end;
                }
            }
            b'"' => {
                let (value, end) = quoted(src, i, here)?;
                toks.push((Tok::Str(value), here));
                i = end;
            }
            b'`' => {
                let Some(end_rel) = src[i + 1..].find('`') else {
                    return refuse(here, "raw string", "unterminated raw string");
                };
                // Go drops carriage returns from raw strings.
                let value = src[i + 1..i + 1 + end_rel].replace('\r', "");
                toks.push((Tok::Str(value), here));
                i += end_rel + 2;
            }
            b'0'..=b'9' | b'-' | b'+' => {
                let end = number_end(src, i);
                toks.push((Tok::Num(src[i..end].to_owned()), here));
                i = end;
            }
            b'\'' => {
                let (value, end) = char_constant(src, i, here)?;
                toks.push((Tok::Num(value), here));
                i = end;
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let end = ident_end(src, i);
                toks.push((Tok::Ident(src[i..end].to_owned()), here));
                i = end;
                // `scratch.Set`: a method of a function's result.
                if bytes.get(i) == Some(&b'.') {
                    let (names, end) = field_chain(src, i);
                    if !names.is_empty() {
                        toks.push((Tok::Chain(names), here));
                        i = end;
                    }
                }
            }
            _ => {
                return refuse(
                    here,
                    format!("`{}`", c as char),
                    "unexpected character in an action",
                );
            }
        }
    }
}

/// `(`, `|`, `,`, `=` and `:=`: the token and its length.
fn punctuation(rest: &str) -> Option<(Tok, usize)> {
    match rest.as_bytes().first()? {
        b'(' => Some((Tok::LParen, 1)),
        b'|' => Some((Tok::Pipe, 1)),
        b',' => Some((Tok::Comma, 1)),
        b'=' => Some((Tok::Assign, 1)),
        b':' if rest.starts_with(":=") => Some((Tok::Declare, 2)),
        _ => None,
    }
}

/// The end of a number starting at `i`: Go's `scanNumber`, where an
/// exponent may have a sign (`1e-3`, `0x1p+4`).
fn number_end(src: &str, i: usize) -> usize {
    let bytes = src.as_bytes();
    let hex = bytes[i..].len() > 2 && matches!(&bytes[i..i + 2], b"0x" | b"0X")
        || matches!(bytes.get(i + 1..i + 3), Some(b"0x" | b"0X"));
    let mut end = i + 1;
    while end < src.len() {
        let c = bytes[end];
        let exponent_sign = matches!(c, b'+' | b'-')
            && (if hex {
                matches!(bytes[end - 1], b'p' | b'P')
            } else {
                matches!(bytes[end - 1], b'e' | b'E')
            });
        if !(c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || exponent_sign) {
            break;
        }
        end += 1;
    }
    end
}

fn ident_end(src: &str, start: usize) -> usize {
    start
        + src[start..]
            .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
            .unwrap_or(src.len() - start)
}

/// `.A.B.C` starting at a `.`: the names and the byte after the chain.
fn field_chain(src: &str, mut i: usize) -> (Vec<String>, usize) {
    let mut names = Vec::new();
    while src[i..].starts_with('.') {
        let end = ident_end(src, i + 1);
        if end == i + 1 {
            break;
        }
        names.push(src[i + 1..end].to_owned());
        i = end;
    }
    (names, i)
}

/// A `"…"` string starting at `start`: its value and the byte after it.
fn quoted(src: &str, start: usize, here: Pos) -> Result<(String, usize), Refusal> {
    let bytes = src.as_bytes();
    let mut j = start + 1;
    loop {
        match bytes.get(j) {
            None | Some(b'\n') => return refuse(here, "string", "unterminated quoted string"),
            Some(b'\\') => j += 2,
            Some(b'"') => break,
            Some(_) => j += 1,
        }
    }
    let raw = src.get(start + 1..j).unwrap_or_default();
    Ok((unquote_go(raw, here)?, j + 1))
}

/// A `'c'` character constant: its value as a number, and the byte after
/// it.
fn char_constant(src: &str, start: usize, here: Pos) -> Result<(String, usize), Refusal> {
    let rest = &src[start + 1..];
    let bytes = rest.as_bytes();
    let mut j = 0;
    let end = loop {
        match bytes.get(j) {
            None | Some(b'\n') => {
                return refuse(
                    here,
                    "character constant",
                    "unterminated character constant",
                );
            }
            Some(b'\\') => j += 2,
            Some(b'\'') => break j,
            Some(_) => j += 1,
        }
    };
    let value = unquote_go(&rest[..end], here)?;
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Ok((u32::from(c).to_string(), start + 1 + end + 1)),
        _ => refuse(
            here,
            "character constant",
            "a character constant holds one character",
        ),
    }
}

/// Decodes a Go interpreted string literal's escapes.
fn unquote_go(raw: &str, pos: Pos) -> Result<String, Refusal> {
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            return refuse(pos, "string", "dangling backslash");
        };
        let simple = match e {
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            '\\' | '"' | '\'' => Some(e),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            continue;
        }
        let (digits, radix) = match e {
            'x' => (2, 16),
            'u' => (4, 16),
            'U' => (8, 16),
            '0'..='7' => (2, 8),
            other => {
                return refuse(
                    pos,
                    format!("escape `\\{other}`"),
                    "not a Go escape (Go refuses the template too)",
                );
            }
        };
        let mut text: String = if radix == 8 {
            e.to_string()
        } else {
            String::new()
        };
        for _ in 0..digits {
            text.extend(chars.next());
        }
        let code = u32::from_str_radix(&text, radix).ok();
        match (e, code) {
            // A byte that is not UTF-8 text on its own.
            ('x' | '0'..='7', Some(b)) if b >= 0x80 => {
                return refuse(
                    pos,
                    format!("escape `\\{e}{}`", &text[usize::from(radix == 8)..]),
                    "a string constant holding a byte that is not UTF-8 text: write the character itself (or its \\u escape)",
                );
            }
            (_, Some(code)) if char::from_u32(code).is_some() => {
                out.extend(char::from_u32(code));
            }
            _ => {
                return refuse(
                    pos,
                    format!("escape `\\{e}{text}`"),
                    "not a valid Go escape",
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{Piece, Tok, lex};

    fn tokens(src: &str) -> Vec<Tok> {
        lex(src)
            .unwrap()
            .into_iter()
            .filter_map(|p| match p {
                Piece::Action { toks, .. } => Some(toks.into_iter().map(|(t, _)| t)),
                Piece::Text(_) => None,
            })
            .flatten()
            .collect()
    }

    fn texts(src: &str) -> Vec<String> {
        lex(src)
            .unwrap()
            .into_iter()
            .filter_map(|p| match p {
                Piece::Text(t) => Some(t),
                Piece::Action { .. } => None,
            })
            .collect()
    }

    #[test]
    fn trim_markers_eat_go_whitespace_only() {
        assert_eq!(texts("a \n {{- 1 -}} \t\n b"), ["a", "b"]);
        // `{{-1}}` is the number -1, not a trim marker.
        assert_eq!(texts("a {{-1}} b"), ["a ", " b"]);
        assert_eq!(tokens("{{-1}}"), [Tok::Num("-1".to_owned())]);
        assert_eq!(
            texts("a {{/* c */}} b {{- /* c */ -}} c"),
            ["a ", " b", "c"]
        );
    }

    #[test]
    fn actions_lex_to_gos_tokens() {
        assert_eq!(
            tokens(r#"{{ $x := .Data.data.k | printf "%s\t" (index . "a") }}"#),
            [
                Tok::Var("x".to_owned()),
                Tok::Declare,
                Tok::Field(vec!["Data".to_owned(), "data".to_owned(), "k".to_owned()]),
                Tok::Pipe,
                Tok::Ident("printf".to_owned()),
                Tok::Str("%s\t".to_owned()),
                Tok::LParen,
                Tok::Ident("index".to_owned()),
                Tok::Dot,
                Tok::Str("a".to_owned()),
                Tok::RParen,
            ]
        );
        assert_eq!(
            tokens("{{ 'a' '\\n' }}"),
            [Tok::Num("97".to_owned()), Tok::Num("10".to_owned())]
        );
        assert_eq!(tokens("{{ `raw\\n` }}"), [Tok::Str("raw\\n".to_owned())]);
        assert_eq!(
            tokens(r#"{{ "\u00e9\x41\101" }}"#),
            [Tok::Str("éAA".to_owned())]
        );
        assert_eq!(
            tokens("{{ (.a).b }}"),
            [
                Tok::LParen,
                Tok::Field(vec!["a".to_owned()]),
                Tok::RParen,
                Tok::Chain(vec!["b".to_owned()]),
            ]
        );
        // With a space, `.b` is an operand of its own (dot's field).
        assert_eq!(
            tokens("{{ f (g) .b $x .c }}"),
            [
                Tok::Ident("f".to_owned()),
                Tok::LParen,
                Tok::Ident("g".to_owned()),
                Tok::RParen,
                Tok::Field(vec!["b".to_owned()]),
                Tok::Var("x".to_owned()),
                Tok::Field(vec!["c".to_owned()]),
            ]
        );
    }

    #[test]
    fn malformed_actions_are_refused_with_their_position() {
        let e = lex("x\n  {{ .a").unwrap_err();
        assert_eq!((e.line, e.column), (2, 3));
        assert!(lex("{{ \"a }}").is_err());
        assert!(lex("{{ \"\\q\" }}").is_err());
        assert!(
            lex("{{ \"\\xff\" }}")
                .unwrap_err()
                .reason
                .contains("not UTF-8")
        );
        assert!(lex("{{/* a */ x}}").is_err());
    }
}
