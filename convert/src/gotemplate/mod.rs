//! consul-template (Go `text/template`) to the driver's handlebars, exactly
//! or not at all.
//!
//! The conversion is structural: Go's whitespace trimming (`{{-`, `-}}`) is
//! applied to the literal text here, so the output carries no trim
//! markers; handlebars' "standalone line" stripping is defeated by an empty
//! comment `{{!}}` before any block tag that starts a line; Go's `with` over
//! a value becomes an `if` (handlebars' `with` treats the number 0 as empty,
//! Go's `json.Number` never is); dot is always a block parameter or a path,
//! never handlebars' implicit context.
//!
//! Vault data is never read with a handlebars path: every field, `index`,
//! `range`, print, `printf` verb and comparison of it goes through the
//! renderer's `go*` helpers (`render::go_value`), which do what Go does on
//! consul-template's values (`<no value>` for a missing key in the agent's
//! default mode, an error with `error_on_missing_key`, numbers as Vault
//! sent them, `map[k:v]` and `[a b]`, `%!d(json.Number=1)`). `pkiCert`
//! becomes the `pkiCert` helper (`render::pki_cert`) over a `secret` write.
//! Whatever has no exact equivalent is refused with the template's line and
//! column and the construct's name.

use std::fmt::Write as _;

/// Why a template was not converted. Every message names the construct and
/// says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {construct}: {reason}")]
pub struct Refusal {
    /// 1-based line in the template.
    pub line: usize,
    /// 1-based column (in characters) in the template.
    pub column: usize,
    /// The construct, as written or named in Go's terms.
    pub construct: String,
    /// Why it has no exact equivalent, and what to do instead.
    pub reason: String,
}

/// The agent's settings for a template that change Go's semantics.
#[derive(Debug, Clone, Copy, Default)]
pub struct GoOptions {
    /// `error_on_missing_key = true` (Go's `missingkey=error`).
    pub error_on_missing_key: bool,
}

/// A converted template and what its reader should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    /// The handlebars template.
    pub handlebars: String,
    /// Uses the `toGoJson`/`toGoJsonPretty` helpers (see `render::go_json`).
    pub needs_go_json: bool,
    /// `secret` and `pkiCert` paths used, for the summary.
    pub secret_paths: Vec<String>,
    /// `pkiCert` calls: (path, the request, canonically). The agent issues
    /// one certificate per call and template file; the driver one per
    /// distinct request and volume.
    pub pki_requests: Vec<(String, String)>,
    /// `secret` calls with arguments (writes), likewise.
    pub write_requests: Vec<(String, String)>,
    /// Every `secret` call the template makes, to be checked with the
    /// driver's own rules ([`crate::Driver::check_secret`]).
    pub requests: Vec<SecretCall>,
}

/// One `secret` call of a converted template, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretCall {
    /// 1-based line in the template.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The call as the refusal names it (`secret "path"`).
    pub construct: String,
    /// The path, as consul-template reads it.
    pub path: String,
    /// The `key=value` arguments.
    pub args: serde_json::Map<String, serde_json::Value>,
}

type Pos = (usize, usize);

/// A lexed action: its tokens, the byte after `}}`, and whether it ends
/// with `-}}`.
type Action = (Vec<(Tok, Pos)>, usize, bool);

fn refuse<T>(
    pos: Pos,
    construct: impl Into<String>,
    reason: impl Into<String>,
) -> Result<T, Refusal> {
    Err(Refusal {
        line: pos.0,
        column: pos.1,
        construct: construct.into(),
        reason: reason.into(),
    })
}

// ---------------------------------------------------------------- lexing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(Vec<String>),
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

#[derive(Debug)]
enum Piece {
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
fn lex(src: &str) -> Result<Vec<Piece>, Refusal> {
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

/// Lexes one action from `start` to its closing delimiter: the tokens, the
/// byte after `}}`, and whether it ends with `-}}`.
#[allow(clippy::too_many_lines)]
fn lex_action(src: &str, start: usize, pos: Pos) -> Result<Action, Refusal> {
    let bytes = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = start;
    loop {
        let here = line_col(src, i);
        let Some(&c) = bytes.get(i) else {
            return refuse(pos, "action", "unclosed action: `}}` is missing");
        };
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                let ws_end = i + src[i..].len() - src[i..].trim_start_matches(GO_SPACE).len();
                if src[ws_end..].starts_with("-}}") {
                    return Ok((toks, ws_end + 3, true));
                }
                i = ws_end;
            }
            b'}' if src[i..].starts_with("}}") => return Ok((toks, i + 2, false)),
            b'(' => {
                toks.push((Tok::LParen, here));
                i += 1;
            }
            b')' => {
                toks.push((Tok::RParen, here));
                i += 1;
                // `(x).Field`: a field chain right after a parenthesis.
                if bytes.get(i) == Some(&b'.') {
                    let (names, end) = field_chain(src, i);
                    toks.push((Tok::Field(names), here));
                    i = end;
                }
            }
            b'|' => {
                toks.push((Tok::Pipe, here));
                i += 1;
            }
            b',' => {
                toks.push((Tok::Comma, here));
                i += 1;
            }
            b':' if src[i..].starts_with(":=") => {
                toks.push((Tok::Declare, here));
                i += 2;
            }
            b'=' => {
                toks.push((Tok::Assign, here));
                i += 1;
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
                    toks.push((Tok::Field(names), here));
                    i = end;
                }
            }
            b'"' => {
                let mut j = i + 1;
                let mut raw = String::new();
                loop {
                    match bytes.get(j) {
                        None | Some(b'\n') => {
                            return refuse(here, "string", "unterminated quoted string");
                        }
                        Some(b'\\') => {
                            let Some(next) = src[j + 1..].chars().next() else {
                                return refuse(here, "string", "unterminated quoted string");
                            };
                            raw.push('\\');
                            raw.push(next);
                            j += 1 + next.len_utf8();
                        }
                        Some(b'"') => break,
                        Some(_) => {
                            let ch = src[j..].chars().next().unwrap_or_default();
                            raw.push(ch);
                            j += ch.len_utf8();
                        }
                    }
                }
                toks.push((Tok::Str(unquote_go(&raw, here)?), here));
                i = j + 1;
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
                let end = i
                    + 1
                    + src[i + 1..]
                        .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '.' || ch == '_'))
                        .unwrap_or(src.len() - i - 1);
                toks.push((Tok::Num(src[i..end].to_owned()), here));
                i = end;
            }
            b'\'' => {
                return refuse(
                    here,
                    "character constant",
                    "character constants are not supported",
                );
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let end = ident_end(src, i);
                toks.push((Tok::Ident(src[i..end].to_owned()), here));
                i = end;
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

/// Decodes a Go interpreted string literal's escapes.
fn unquote_go(raw: &str, pos: Pos) -> Result<String, Refusal> {
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some(other) => {
                return refuse(
                    pos,
                    format!("escape `\\{other}`"),
                    "only \\n, \\t, \\r, \\\\ and \\\" escapes are converted",
                );
            }
            None => return refuse(pos, "string", "dangling backslash"),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- parsing

#[derive(Debug, Clone)]
enum Expr {
    Dot,
    Var(String),
    Field(Box<Expr>, Vec<String>),
    Str(String),
    Num(String),
    Bool(bool),
    Nil,
    Call(String, Vec<(Expr, Pos)>),
}

#[derive(Debug)]
enum Node {
    Text(String),
    Print(Expr, Pos),
    If {
        branches: Vec<(Expr, Pos, Vec<Node>)>,
        otherwise: Option<Vec<Node>>,
    },
    With {
        head: Expr,
        pos: Pos,
        body: Vec<Node>,
        otherwise: Option<Vec<Node>>,
    },
    Range {
        key: Option<String>,
        value: Option<String>,
        head: Expr,
        pos: Pos,
        body: Vec<Node>,
        otherwise: Option<Vec<Node>>,
    },
}

/// How a block list ended.
enum End {
    Eof,
    Close(Pos),
    Else(Pos),
    ElseIf(Expr, Pos),
}

struct Parser {
    pieces: std::vec::IntoIter<Piece>,
}

impl Parser {
    fn list(&mut self) -> Result<(Vec<Node>, End), Refusal> {
        let mut nodes = Vec::new();
        while let Some(piece) = self.pieces.next() {
            match piece {
                Piece::Text(t) => {
                    if !t.is_empty() {
                        nodes.push(Node::Text(t));
                    }
                }
                Piece::Action { toks, pos } => {
                    if let Some(end) = self.action(&toks, pos, &mut nodes)? {
                        return Ok((nodes, end));
                    }
                }
            }
        }
        Ok((nodes, End::Eof))
    }

    fn block(&mut self, what: &str, pos: Pos) -> Result<(Vec<Node>, End), Refusal> {
        let (body, end) = self.list()?;
        if matches!(end, End::Eof) {
            return refuse(pos, what, "no matching {{end}}");
        }
        Ok((body, end))
    }

    /// The body up to `{{end}}`, with an optional `{{else}}` part.
    fn body_else(
        &mut self,
        what: &str,
        pos: Pos,
    ) -> Result<(Vec<Node>, Option<Vec<Node>>), Refusal> {
        let (body, end) = self.block(what, pos)?;
        match end {
            End::Close(_) => Ok((body, None)),
            End::Else(_) => {
                let (otherwise, end) = self.block(what, pos)?;
                match end {
                    End::Close(_) => Ok((body, Some(otherwise))),
                    End::Else(p) | End::ElseIf(_, p) => refuse(
                        p,
                        "{{else}}",
                        format!("a second {{{{else}}}} in one {{{{{what}}}}}"),
                    ),
                    End::Eof => unreachable!("block() refuses EOF"),
                }
            }
            End::ElseIf(_, p) => refuse(
                p,
                format!("{{{{else {what}}}}}"),
                "`else if` is converted only in an `if` block; `else with` (Go 1.23) is not converted: nest a `with` in the `else`",
            ),
            End::Eof => unreachable!("block() refuses EOF"),
        }
    }

    fn action(
        &mut self,
        toks: &[(Tok, Pos)],
        pos: Pos,
        nodes: &mut Vec<Node>,
    ) -> Result<Option<End>, Refusal> {
        let keyword = match toks.first() {
            Some((Tok::Ident(k), _)) => k.clone(),
            None => return refuse(pos, "{{}}", "empty action"),
            _ => String::new(),
        };
        let rest = || toks[1..].to_vec();
        match keyword.as_str() {
            "end" => Ok(Some(End::Close(pos))),
            "else" => {
                if toks.len() == 1 {
                    return Ok(Some(End::Else(pos)));
                }
                match &toks[1].0 {
                    Tok::Ident(k) if k == "if" => {
                        let expr = pipeline(&toks[2..], pos)?;
                        Ok(Some(End::ElseIf(expr, pos)))
                    }
                    _ => refuse(pos, "{{else …}}", "only `else` and `else if` are converted"),
                }
            }
            "if" => {
                let head = pipeline(&rest(), pos)?;
                let mut branches = vec![];
                let mut cond = (head, pos);
                loop {
                    let (body, end) = self.block("if", pos)?;
                    branches.push((cond.0, cond.1, body));
                    match end {
                        End::Close(_) => {
                            nodes.push(Node::If {
                                branches,
                                otherwise: None,
                            });
                            return Ok(None);
                        }
                        End::Else(_) => {
                            let (otherwise, end) = self.block("if", pos)?;
                            if let End::Else(p) | End::ElseIf(_, p) = end {
                                return refuse(
                                    p,
                                    "{{else}}",
                                    "an {{else}} after the final {{else}} of an {{if}}",
                                );
                            }
                            nodes.push(Node::If {
                                branches,
                                otherwise: Some(otherwise),
                            });
                            return Ok(None);
                        }
                        End::ElseIf(expr, p) => cond = (expr, p),
                        End::Eof => unreachable!("block() refuses EOF"),
                    }
                }
            }
            "with" => {
                if toks.iter().any(|(t, _)| matches!(t, Tok::Declare)) {
                    return refuse(
                        pos,
                        "{{with $x := …}}",
                        "variable declarations are not converted; use `.` inside the `with`",
                    );
                }
                let head = pipeline(&rest(), pos)?;
                let (body, otherwise) = self.body_else("with", pos)?;
                nodes.push(Node::With {
                    head,
                    pos,
                    body,
                    otherwise,
                });
                Ok(None)
            }
            "range" => {
                let toks = rest();
                let (key, value, head_toks) =
                    match toks.iter().position(|(t, _)| matches!(t, Tok::Declare)) {
                        None => (None, None, &toks[..]),
                        Some(at) => {
                            let vars: Vec<&Tok> = toks[..at].iter().map(|(t, _)| t).collect();
                            match vars.as_slice() {
                                [Tok::Var(v)] => (None, Some(v.clone()), &toks[at + 1..]),
                                [Tok::Var(k), Tok::Comma, Tok::Var(v)] => {
                                    (Some(k.clone()), Some(v.clone()), &toks[at + 1..])
                                }
                                _ => {
                                    return refuse(
                                        pos,
                                        "{{range …}}",
                                        "expected `range $v := …` or `range $k, $v := …`",
                                    );
                                }
                            }
                        }
                    };
                let head = pipeline(head_toks, pos)?;
                let (body, otherwise) = self.body_else("range", pos)?;
                nodes.push(Node::Range {
                    key,
                    value,
                    head,
                    pos,
                    body,
                    otherwise,
                });
                Ok(None)
            }
            "define" | "template" | "block" => refuse(
                pos,
                format!("{{{{{keyword}}}}}"),
                "named templates are not converted: the driver refuses partials (they can recurse); inline the template",
            ),
            "break" | "continue" => refuse(
                pos,
                format!("{{{{{keyword}}}}}"),
                "handlebars loops cannot stop early; restructure with `if`",
            ),
            _ => {
                if toks
                    .iter()
                    .any(|(t, _)| matches!(t, Tok::Declare | Tok::Assign))
                {
                    return refuse(
                        pos,
                        "variable declaration",
                        "`$x := …` and `$x = …` are not converted; use the expression where it is needed",
                    );
                }
                nodes.push(Node::Print(pipeline(toks, pos)?, pos));
                Ok(None)
            }
        }
    }
}

/// Parses a pipeline: commands joined by `|`, each feeding the next as its
/// last argument.
fn pipeline(toks: &[(Tok, Pos)], pos: Pos) -> Result<Expr, Refusal> {
    if toks.is_empty() {
        return refuse(pos, "pipeline", "missing value");
    }
    let mut result: Option<Expr> = None;
    for command in split_top(toks, |t| matches!(t, Tok::Pipe)) {
        let cpos = command.first().map_or(pos, |(_, p)| *p);
        let mut operands = operands(command, cpos)?;
        if let Some(previous) = result.take() {
            match &mut operands[..] {
                [(Expr::Call(_, args), _)] => args.push((previous, cpos)),
                [(Expr::Call(..), _), ..] => unreachable!("operands() folds calls"),
                _ => return refuse(cpos, "pipeline", "the right side of `|` must be a function"),
            }
        }
        if operands.len() != 1 {
            return refuse(cpos, "command", "a value cannot take arguments");
        }
        result = Some(operands.remove(0).0);
    }
    result.map_or_else(|| refuse(pos, "pipeline", "missing value"), Ok)
}

fn split_top(toks: &[(Tok, Pos)], sep: impl Fn(&Tok) -> bool) -> Vec<&[(Tok, Pos)]> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, (t, _)) in toks.iter().enumerate() {
        match t {
            Tok::LParen => depth += 1,
            Tok::RParen => depth = depth.saturating_sub(1),
            t if depth == 0 && sep(t) => {
                parts.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&toks[start..]);
    parts
}

/// One command: a function call with its arguments, or a single operand.
fn operands(toks: &[(Tok, Pos)], pos: Pos) -> Result<Vec<(Expr, Pos)>, Refusal> {
    let mut items = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let (tok, p) = &toks[i];
        let expr = match tok {
            Tok::LParen => {
                let mut depth = 0usize;
                let mut j = i;
                loop {
                    match toks.get(j).map(|(t, _)| t) {
                        Some(Tok::LParen) => depth += 1,
                        Some(Tok::RParen) => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        None => return refuse(*p, "(", "unclosed parenthesis"),
                        _ => {}
                    }
                    j += 1;
                }
                let inner = pipeline(&toks[i + 1..j], *p)?;
                i = j;
                if let Some((Tok::Field(names), _)) = toks.get(i + 1) {
                    i += 1;
                    Expr::Field(Box::new(inner), names.clone())
                } else {
                    inner
                }
            }
            Tok::RParen => return refuse(*p, ")", "unexpected `)`"),
            Tok::Dot => Expr::Dot,
            Tok::Field(names) => Expr::Field(Box::new(Expr::Dot), names.clone()),
            Tok::Var(name) => {
                if let Some((Tok::Field(names), _)) = toks.get(i + 1) {
                    i += 1;
                    Expr::Field(Box::new(Expr::Var(name.clone())), names.clone())
                } else {
                    Expr::Var(name.clone())
                }
            }
            Tok::Str(s) => Expr::Str(s.clone()),
            Tok::Num(n) => Expr::Num(n.clone()),
            Tok::Ident(name) => match name.as_str() {
                "true" => Expr::Bool(true),
                "false" => Expr::Bool(false),
                "nil" => Expr::Nil,
                _ => Expr::Call(name.clone(), Vec::new()),
            },
            Tok::Pipe | Tok::Declare | Tok::Assign | Tok::Comma => {
                return refuse(*p, "action", "unexpected `|`, `:=`, `=` or `,`");
            }
        };
        items.push((expr, *p));
        i += 1;
    }
    // A function name first takes the rest as arguments.
    match items.first() {
        Some((Expr::Call(name, _), p)) => {
            let (name, p) = (name.clone(), *p);
            let args = items.split_off(1);
            Ok(vec![(Expr::Call(name, args), p)])
        }
        _ if items.len() > 1 => {
            if items[1..].iter().any(|(e, _)| matches!(e, Expr::Call(..))) {
                refuse(pos, "command", "a function name must come first")
            } else {
                refuse(pos, "command", "a value cannot take arguments")
            }
        }
        _ => Ok(items),
    }
}

// ---------------------------------------------------------------- codegen

/// What a Go value is, as far as the converter can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    /// consul-template's `*Secret`.
    Secret,
    /// Vault data: JSON decoded with `UseNumber` (numbers are text). Its
    /// kind is only known when rendering: the `go*` helpers
    /// (`render::go_value`) do what Go does with it.
    Json,
    /// A secret's `.Data`: a map, `nil` when the response has no data.
    DataMap,
    /// A Go `int` (`.LeaseDuration`).
    Int,
    /// A Go `bool`.
    Bool,
    /// A Go `string` (literals, function results, `.LeaseID`, pkiCert's
    /// `.Cert`, `.Key`, `.CA`).
    Str,
    /// A `range` key: a map's `string` key or a list's `int` position.
    Key,
    /// consul-template's `pkiCert` result.
    Pki,
    /// pkiCert's `.CAChain`, a Go `[]string`.
    StrList,
}

/// A `goField` call kept open, so that later fields join it.
#[derive(Debug, Clone)]
struct Chain {
    base: String,
    keys: Vec<String>,
    nil_map: bool,
}

/// A Go value as handlebars sees it: an expression and its type.
#[derive(Debug, Clone)]
struct Val {
    /// A handlebars parameter: a path, a literal or a `(subexpression)`.
    hbs: String,
    ty: Ty,
    /// True for a plain handlebars path.
    path: bool,
    /// Set when `hbs` is a `goField` call that more fields can join.
    chain: Option<Chain>,
}

impl Val {
    fn path(hbs: impl Into<String>, ty: Ty) -> Self {
        Self {
            hbs: hbs.into(),
            ty,
            path: true,
            chain: None,
        }
    }

    /// A literal or a subexpression.
    fn expr(hbs: impl Into<String>, ty: Ty) -> Self {
        Self {
            hbs: hbs.into(),
            ty,
            path: false,
            chain: None,
        }
    }

    /// A template constant (not a path, not a subexpression).
    fn is_constant(&self) -> bool {
        !self.path && !self.hbs.starts_with('(')
    }

    /// The value as a whole tag: `{{path}}` or `{{helper …}}`.
    fn mustache(&self) -> String {
        match self.hbs.strip_prefix('(').and_then(|h| h.strip_suffix(')')) {
            Some(inner) if !self.path => format!("{{{{{inner}}}}}"),
            _ => format!("{{{{{}}}}}", self.hbs),
        }
    }
}

/// Most field names in one `goField` call: with its value and two hash
/// values, the driver's limit of eight parameters per tag.
const KEYS_PER_FIELD_CALL: usize = 5;

/// json.Number's methods: on a number, Go calls them instead of looking a
/// key up.
const NUMBER_METHODS: [&str; 3] = ["String", "Float64", "Int64"];

#[derive(Default)]
struct Gen {
    out: String,
    /// `error_on_missing_key`.
    strict: bool,
    needs_go_json: bool,
    secret_paths: Vec<String>,
    /// `pkiCert` calls: (path, the request).
    pki_requests: Vec<(String, String)>,
    /// `secret` writes: (path, the request).
    write_requests: Vec<(String, String)>,
    /// Every `secret` call, for the driver's check.
    requests: Vec<SecretCall>,
    names: usize,
    /// (start, end) of block tags that begin a line.
    standalone_candidates: Vec<(usize, usize)>,
}

struct Scope {
    dot: Option<Val>,
    vars: Vec<(String, Val)>,
}

impl Scope {
    fn lookup(&self, name: &str) -> Option<&Val> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

fn is_hbs_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn hbs_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// A `secret` or `pkiCert` call's arguments as consul-template reads them:
/// the path without surrounding spaces and `/`, and `key=value` pairs with
/// spaces trimmed, empty arguments skipped, a repeated key's last value.
struct Request {
    path: String,
    args: std::collections::BTreeMap<String, String>,
    /// Some arguments were given (even if all empty): a write.
    write: bool,
}

impl Request {
    fn parse(args: &[(Expr, Pos)], pos: Pos, what: &str) -> Result<Self, Refusal> {
        let mut strings = Vec::new();
        for (arg, p) in args {
            match arg {
                Expr::Str(s) => strings.push(s.clone()),
                _ => {
                    return refuse(
                        *p,
                        format!("{what} argument"),
                        format!("`{what}` arguments must be string literals to be converted"),
                    );
                }
            }
        }
        let Some((path, rest)) = strings.split_first() else {
            return refuse(pos, what, format!("`{what}` needs a path"));
        };
        let mut parsed = std::collections::BTreeMap::new();
        for kv in rest.iter().filter(|kv| !kv.is_empty()) {
            let Some((k, v)) = kv.split_once('=') else {
                return refuse(
                    pos,
                    format!("{what} argument {kv:?}"),
                    "write arguments must be `key=value`",
                );
            };
            let (k, v) = (k.trim(), v.trim());
            if !is_hbs_ident(k) {
                return refuse(
                    pos,
                    format!("{what} argument {kv:?}"),
                    "the key must be letters, digits and `_`",
                );
            }
            parsed.insert(k.to_owned(), v.to_owned());
        }
        Ok(Self {
            path: path.trim().trim_matches('/').to_owned(),
            args: parsed,
            write: !rest.is_empty(),
        })
    }

    /// The request, canonically: compares calls that send the same thing.
    fn canonical(&self) -> String {
        format!(
            "{}\0{}",
            self.path,
            serde_json::to_string(&self.args).unwrap_or_default()
        )
    }
}

impl Gen {
    fn fresh(&mut self, base: &str) -> String {
        self.names += 1;
        format!("{base}{}", self.names)
    }

    /// Writes a tag; a block tag that would start a line gets `{{!}}`
    /// first, so handlebars does not strip the line's whitespace.
    fn tag(&mut self, tag: &str, pos: Pos, block: bool) -> Result<(), Refusal> {
        if self.out.ends_with('\\') {
            return refuse(
                pos,
                "text ending in `\\`",
                "a backslash right before an action would escape the handlebars tag",
            );
        }
        let line_start = self.out.trim_end_matches([' ', '\t']);
        if block && (line_start.is_empty() || line_start.ends_with(['\n', '\r'])) {
            // Standalone only if the rest of the line is blank too, which
            // is known once everything after it is written.
            self.standalone_candidates
                .push((self.out.len(), self.out.len() + tag.len()));
        }
        self.out.push_str(tag);
        Ok(())
    }

    /// Puts `{{!}}` before every block tag handlebars would treat as a
    /// standalone line (blank before it on its line, blank after it up to
    /// the line's end or the template's end), whose line it would strip.
    fn guard_standalone_lines(&mut self) {
        for &(start, end) in self.standalone_candidates.iter().rev() {
            let rest = self.out[end..].trim_start_matches([' ', '\t']);
            if rest.is_empty() || rest.starts_with(['\n', '\r']) {
                self.out.insert_str(start, "{{!}}");
            }
        }
    }

    fn nodes(&mut self, nodes: &[Node], scope: &mut Scope) -> Result<(), Refusal> {
        for node in nodes {
            self.node(node, scope)?;
        }
        Ok(())
    }

    fn node(&mut self, node: &Node, scope: &mut Scope) -> Result<(), Refusal> {
        match node {
            Node::Text(t) => {
                self.out.push_str(t);
                Ok(())
            }
            Node::Print(expr, pos) => self.print(expr, *pos, scope),
            Node::If {
                branches,
                otherwise,
            } => {
                let mut closes = 0;
                for (i, (cond, pos, body)) in branches.iter().enumerate() {
                    let test = self.condition(cond, *pos, scope)?;
                    if i > 0 {
                        self.tag("{{else}}", *pos, true)?;
                    }
                    self.tag(&format!("{{{{#if {test}}}}}"), *pos, true)?;
                    closes += 1;
                    self.nodes(body, scope)?;
                }
                let pos = branches[0].1;
                if let Some(otherwise) = otherwise {
                    self.tag("{{else}}", pos, true)?;
                    self.nodes(otherwise, scope)?;
                }
                for _ in 0..closes {
                    self.tag("{{/if}}", pos, true)?;
                }
                Ok(())
            }
            Node::With {
                head,
                pos,
                body,
                otherwise,
            } => self.with(head, *pos, body, otherwise.as_deref(), scope),
            Node::Range {
                key,
                value,
                head,
                pos,
                body,
                otherwise,
            } => self.range(
                key.as_deref(),
                value.as_deref(),
                head,
                *pos,
                body,
                otherwise.as_deref(),
                scope,
            ),
        }
    }

    #[allow(clippy::too_many_arguments)] // the parts of one `range` node
    fn range(
        &mut self,
        key: Option<&str>,
        value: Option<&str>,
        head: &Expr,
        pos: Pos,
        body: &[Node],
        otherwise: Option<&[Node]>,
        scope: &Scope,
    ) -> Result<(), Refusal> {
        let collection = self.value(head, pos, scope)?;
        let (over, element) = match collection.ty {
            // Go refuses to range over text, numbers and booleans; the
            // helper fails the render there too.
            Ty::Json => (format!("(goRange {})", collection.hbs), Ty::Json),
            // A map, or nil: nothing to check.
            Ty::DataMap => (collection.hbs.clone(), Ty::Json),
            Ty::StrList => (collection.hbs.clone(), Ty::Str),
            _ => {
                return refuse(
                    pos,
                    "{{range}}",
                    "only Vault data (maps and lists) and pkiCert's .CAChain can be ranged over",
                );
            }
        };
        let v = self.fresh("v");
        let k = self.fresh("k");
        self.tag(&format!("{{{{#each {over} as |{v} {k}|}}}}"), pos, true)?;
        let element = Val::path(v, element);
        let mut inner = Scope {
            dot: Some(element.clone()),
            vars: scope.vars.clone(),
        };
        if let Some(name) = value {
            inner.vars.push((name.to_owned(), element));
        }
        if let Some(name) = key {
            inner.vars.push((name.to_owned(), Val::path(k, Ty::Key)));
        }
        self.nodes(body, &mut inner)?;
        // `{{else}}` is always written: strict `each` fails on a missing
        // collection without one, Go ranges over nothing.
        self.tag("{{else}}", pos, true)?;
        if let Some(otherwise) = otherwise {
            let mut outer = Scope {
                dot: scope.dot.clone(),
                vars: scope.vars.clone(),
            };
            self.nodes(otherwise, &mut outer)?;
        }
        self.tag("{{/each}}", pos, true)
    }

    fn with(
        &mut self,
        head: &Expr,
        pos: Pos,
        body: &[Node],
        otherwise: Option<&[Node]>,
        scope: &mut Scope,
    ) -> Result<(), Refusal> {
        if let Expr::Call(name, args) = head
            && (name == "secret" || name == "pkiCert")
        {
            let (call, dot, prefix) = if name == "secret" {
                (self.secret_call(args, pos)?, Ty::Secret, "s")
            } else {
                (self.pki_call(args, pos)?, Ty::Pki, "p")
            };
            let s = self.fresh(prefix);
            self.tag(&format!("{{{{#with {call} as |{s}|}}}}"), pos, true)?;
            let mut inner = Scope {
                dot: Some(Val::path(s, dot)),
                vars: scope.vars.clone(),
            };
            self.nodes(body, &mut inner)?;
            // A secret (or pkiCert's result) is never empty, so Go never
            // renders this `else`; handlebars' strict `with` needs one for
            // a falsy value anyway.
            self.tag("{{else}}", pos, true)?;
            if let Some(otherwise) = otherwise {
                self.nodes(otherwise, scope)?;
            }
            return self.tag("{{/with}}", pos, true);
        }
        let value = self.value(head, pos, scope)?;
        let test = Self::truth(&value, pos)?;
        self.tag(&format!("{{{{#if {test}}}}}"), pos, true)?;
        let mut inner = Scope {
            dot: Some(value),
            vars: scope.vars.clone(),
        };
        self.nodes(body, &mut inner)?;
        if let Some(otherwise) = otherwise {
            self.tag("{{else}}", pos, true)?;
            self.nodes(otherwise, scope)?;
        }
        self.tag("{{/if}}", pos, true)
    }

    /// `(secret "path" k="v" …)`, checked as the driver checks it at
    /// publish.
    fn request_call(&mut self, request: &Request, pos: Pos, what: &str) -> Result<String, Refusal> {
        let requests = &mut self.requests;
        let mut call = format!("(secret {}", hbs_string(&request.path));
        for (k, v) in &request.args {
            write!(call, " {k}={}", hbs_string(v)).unwrap_or_default();
        }
        call.push(')');
        // Checked with the driver's own rules by the caller
        // ([`crate::Driver::check_secret`]), with this position.
        let args: serde_json::Map<String, serde_json::Value> = request
            .args
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        requests.push(SecretCall {
            line: pos.0,
            column: pos.1,
            construct: format!("{what} {:?}", request.path),
            path: request.path.clone(),
            args,
        });
        Ok(call)
    }

    fn secret_call(&mut self, args: &[(Expr, Pos)], pos: Pos) -> Result<String, Refusal> {
        let request = Request::parse(args, pos, "secret")?;
        if request.write && request.args.is_empty() {
            return refuse(
                pos,
                "secret",
                "every argument is empty: the agent writes to the path with no data, the driver would read it",
            );
        }
        let call = self.request_call(&request, pos, "secret")?;
        self.secret_paths.push(request.path.clone());
        if request.write {
            self.write_requests
                .push((request.path.clone(), request.canonical()));
        }
        Ok(call)
    }

    /// `(pkiCert (secret "path" k="v" …))`: the write that issues the
    /// certificate, and the helper that reads it as consul-template does.
    fn pki_call(&mut self, args: &[(Expr, Pos)], pos: Pos) -> Result<String, Refusal> {
        let request = Request::parse(args, pos, "pkiCert")?;
        if request.args.is_empty() {
            return refuse(
                pos,
                "pkiCert",
                "pkiCert needs `key=value` arguments (`\"common_name=…\"`): without them the agent writes to the path with no data, the driver would read it",
            );
        }
        let canonical = request.canonical();
        // The agent tells pkiCert calls apart by path and file only: two
        // calls on one path get one certificate.
        if let Some((path, _)) = self
            .pki_requests
            .iter()
            .find(|(p, c)| *p == request.path && *c != canonical)
        {
            return refuse(
                pos,
                format!("pkiCert {path:?}"),
                "a second pkiCert on the same path with other arguments: Vault Agent gives both calls the same certificate (it tells pkiCert calls apart by path and file only); not converted",
            );
        }
        let call = self.request_call(&request, pos, "pkiCert")?;
        self.secret_paths.push(request.path.clone());
        self.pki_requests.push((request.path, canonical));
        Ok(format!("(pkiCert {call})"))
    }

    /// The handlebars condition for Go's truth of `value`.
    fn truth(value: &Val, pos: Pos) -> Result<String, Refusal> {
        match value.ty {
            // json.Number is text: "0" is true in Go. includeZero makes
            // handlebars count every number as true; other JSON values
            // (strings, lists, maps, null, bools) agree already.
            Ty::Json => Ok(format!("{} includeZero=true", value.hbs)),
            // A nil or empty map, 0, false, "", an empty list: false in
            // both.
            Ty::DataMap | Ty::Int | Ty::Bool | Ty::Str | Ty::Key | Ty::StrList => {
                Ok(value.hbs.clone())
            }
            Ty::Secret | Ty::Pki => refuse(
                pos,
                "secret as a condition",
                "a secret (or pkiCert's result) is always true in Go; test a field instead",
            ),
        }
    }

    fn condition(&mut self, cond: &Expr, pos: Pos, scope: &Scope) -> Result<String, Refusal> {
        let value = self.value(cond, pos, scope)?;
        Self::truth(&value, pos)
    }

    fn print(&mut self, expr: &Expr, pos: Pos, scope: &Scope) -> Result<(), Refusal> {
        if let Expr::Call(name, args) = expr
            && name == "printf"
        {
            return self.printf(args, pos, scope);
        }
        let value = self.value(expr, pos, scope)?;
        self.print_value(&value, pos, "print")
    }

    fn print_value(&mut self, value: &Val, pos: Pos, what: &str) -> Result<(), Refusal> {
        match value.ty {
            Ty::Secret => refuse(
                pos,
                format!("{what} of a secret"),
                "Go prints the struct (`&{…}`); print a field of `.Data`",
            ),
            Ty::Pki => refuse(
                pos,
                format!("{what} of pkiCert's result"),
                "Go prints the struct (`{…}`); print .Cert, .Key, .CA or .CAChain",
            ),
            // Go's printing: `<no value>` for nil, numbers as sent, lists
            // and maps in Go syntax.
            Ty::Json | Ty::StrList => {
                self.tag(&format!("{{{{goPrint {}}}}}", value.hbs), pos, false)
            }
            Ty::DataMap => self.tag(
                &format!("{{{{goPrint {} nilMap=true}}}}", value.hbs),
                pos,
                false,
            ),
            Ty::Int | Ty::Bool | Ty::Str | Ty::Key => {
                // A constant prints as itself: write it as text.
                if value.is_constant() {
                    let text = match serde_json::from_str::<serde_json::Value>(&value.hbs) {
                        Ok(serde_json::Value::String(text)) => text,
                        _ => value.hbs.clone(),
                    };
                    if text.contains("{{") || text.ends_with('\\') {
                        return refuse(
                            pos,
                            format!("{what} of {text:?}"),
                            "a constant containing `{{` or ending in `\\` would change the handlebars tags around it",
                        );
                    }
                    self.out.push_str(&text);
                    return Ok(());
                }
                self.tag(&value.mustache(), pos, false)
            }
        }
    }

    fn printf(&mut self, args: &[(Expr, Pos)], pos: Pos, scope: &Scope) -> Result<(), Refusal> {
        let Some(((Expr::Str(format), _), values)) = args.split_first() else {
            return refuse(pos, "printf", "the format must be a string literal");
        };
        let mut values = values.iter();
        let mut chars = format.chars().peekable();
        let mut literal = String::new();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            let verb = chars.next();
            if verb == Some('%') {
                literal.push('%');
                continue;
            }
            if literal.contains("{{") {
                return refuse(pos, "printf", "a format containing `{{` is not converted");
            }
            self.out.push_str(&std::mem::take(&mut literal));
            let Some((arg, apos)) = values.next() else {
                return refuse(
                    pos,
                    "printf",
                    "fewer arguments than verbs: Go prints `%!v(MISSING)`",
                );
            };
            let value = self.value(arg, *apos, scope)?;
            let Some(verb @ ('s' | 'v' | 'd' | 't')) = verb else {
                return match verb {
                    Some(v) => refuse(
                        pos,
                        format!("printf %{v}"),
                        "only %s, %v, %d, %t and %% without flags or widths are converted",
                    ),
                    None => refuse(pos, "printf", "a format ending in `%`"),
                };
            };
            match (verb, value.ty) {
                (_, Ty::Secret | Ty::Pki) => {
                    return refuse(
                        *apos,
                        format!("printf %{verb}"),
                        "of a secret or pkiCert's result: Go prints the struct; print a field",
                    );
                }
                // Printed as Go prints them anyway.
                ('s' | 'v', Ty::Str)
                | ('v' | 't', Ty::Bool)
                | ('v' | 'd', Ty::Int)
                | ('v', Ty::Key) => {
                    self.print_value(&value, *apos, "printf")?;
                }
                (_, Ty::DataMap) => self.tag(
                    &format!("{{{{goPrintf \"%{verb}\" {} nilMap=true}}}}", value.hbs),
                    *apos,
                    false,
                )?,
                (_, Ty::Int | Ty::Key) => self.tag(
                    &format!("{{{{goPrintf \"%{verb}\" {} int=true}}}}", value.hbs),
                    *apos,
                    false,
                )?,
                // Vault data, and wrong verbs (`%!d(string=…)`).
                (_, Ty::Json | Ty::StrList | Ty::Str | Ty::Bool) => self.tag(
                    &format!("{{{{goPrintf \"%{verb}\" {}}}}}", value.hbs),
                    *apos,
                    false,
                )?,
            }
        }
        if values.next().is_some() {
            return refuse(
                pos,
                "printf",
                "more arguments than verbs: Go appends `%!(EXTRA …)`",
            );
        }
        if literal.contains("{{") {
            return refuse(pos, "printf", "a format containing `{{` is not converted");
        }
        self.out.push_str(&literal);
        Ok(())
    }

    /// The handlebars for an open `goField` chain.
    fn chain_hbs(&self, chain: &Chain) -> String {
        let mut hbs = chain.base.clone();
        for (i, keys) in chain.keys.chunks(KEYS_PER_FIELD_CALL).enumerate() {
            let mut call = format!("(goField {hbs}");
            for key in keys {
                call.push(' ');
                call.push_str(&hbs_string(key));
            }
            if self.strict {
                call.push_str(" missingkey=\"error\"");
            }
            if i == 0 && chain.nil_map {
                call.push_str(" nilMap=true");
            }
            call.push(')');
            hbs = call;
        }
        hbs
    }

    fn field(&self, base: Val, names: &[String], pos: Pos) -> Result<Val, Refusal> {
        let mut v = base;
        for (i, name) in names.iter().enumerate() {
            v = match v.ty {
                Ty::Secret => {
                    let (seg, ty) = match name.as_str() {
                        "Data" => ("data", Ty::DataMap),
                        "LeaseID" => ("lease_id", Ty::Str),
                        "LeaseDuration" => ("lease_duration", Ty::Int),
                        "Renewable" => ("renewable", Ty::Bool),
                        _ => {
                            return refuse(
                                pos,
                                format!(".{name}"),
                                "only .Data, .LeaseID, .LeaseDuration and .Renewable of a secret are converted",
                            );
                        }
                    };
                    Val::path(format!("{}.{seg}", v.hbs), ty)
                }
                Ty::Pki => match name.as_str() {
                    // A method returning the value itself (for `.Data.Cert`).
                    "Data" => v,
                    "Cert" | "Key" | "CA" => Val::path(format!("{}.{name}", v.hbs), Ty::Str),
                    "CAChain" => Val::path(format!("{}.CAChain", v.hbs), Ty::StrList),
                    _ => {
                        return refuse(
                            pos,
                            format!(".{name}"),
                            "only .Cert, .Key, .CA, .CAChain and .Data of pkiCert's result are converted",
                        );
                    }
                },
                Ty::Json | Ty::DataMap => {
                    let rest = &names[i..];
                    let receivers_may_be_numbers = if v.ty == Ty::Json { rest } else { &rest[1..] };
                    if let Some(method) = receivers_may_be_numbers
                        .iter()
                        .find(|n| NUMBER_METHODS.contains(&n.as_str()))
                    {
                        return refuse(
                            pos,
                            format!(".{method}"),
                            "on a number Go calls json.Number's method instead of looking the key up; not converted",
                        );
                    }
                    let chain = match v.chain {
                        Some(mut chain) => {
                            chain.keys.extend(rest.iter().cloned());
                            chain
                        }
                        None => Chain {
                            base: v.hbs,
                            keys: rest.to_vec(),
                            nil_map: v.ty == Ty::DataMap,
                        },
                    };
                    return Ok(Val {
                        hbs: self.chain_hbs(&chain),
                        ty: Ty::Json,
                        path: false,
                        chain: Some(chain),
                    });
                }
                Ty::Int | Ty::Bool | Ty::Str | Ty::Key | Ty::StrList => {
                    return refuse(
                        pos,
                        format!(".{name}"),
                        "field of a value that is not Vault data (Go fails here)",
                    );
                }
            };
        }
        Ok(v)
    }

    fn value(&mut self, expr: &Expr, pos: Pos, scope: &Scope) -> Result<Val, Refusal> {
        match expr {
            Expr::Dot => scope.dot.clone().map_or_else(
                || refuse(pos, "`.` at the top level", "consul-template runs templates with no data; use `.` inside `with secret` or `range`"),
                Ok,
            ),
            Expr::Var(name) if name.is_empty() => refuse(pos, "`$`", "consul-template's top-level data is empty; `$` has no equivalent"),
            Expr::Var(name) => scope.lookup(name).cloned().map_or_else(
                || refuse(pos, format!("${name}"), "only variables declared by `range` are converted"),
                Ok,
            ),
            Expr::Field(base, names) => {
                let base = self.value(base, pos, scope)?;
                self.field(base, names, pos)
            }
            Expr::Str(s) => Ok(Val::expr(hbs_string(s), Ty::Str)),
            Expr::Bool(b) => Ok(Val::expr(b.to_string(), Ty::Bool)),
            Expr::Num(n) => refuse(pos, format!("number {n}"), "number constants are not converted (Go compares json.Number as text)"),
            Expr::Nil => refuse(pos, "nil", "nil is not converted"),
            Expr::Call(name, args) => self.call(name, args, pos, scope),
        }
    }

    /// `index`'s keys: string literals, and decimal list positions.
    fn index_keys(keys: &[(Expr, Pos)]) -> Result<Vec<String>, Refusal> {
        let mut out = Vec::new();
        for (key, kpos) in keys {
            match key {
                Expr::Str(s) => out.push(hbs_string(s)),
                Expr::Num(n)
                    if n.bytes().all(|b| b.is_ascii_digit())
                        && (n == "0" || !n.starts_with('0'))
                        && n.parse::<u32>().is_ok() =>
                {
                    out.push(n.clone());
                }
                _ => {
                    return refuse(
                        *kpos,
                        "index",
                        "index keys must be string literals or decimal list positions",
                    );
                }
            }
        }
        Ok(out)
    }

    fn index(&mut self, args: &[(Expr, Pos)], pos: Pos, scope: &Scope) -> Result<Val, Refusal> {
        let Some(((base, bpos), keys)) = args.split_first() else {
            return refuse(pos, "index", "`index` needs a collection");
        };
        let base = self.value(base, *bpos, scope)?;
        let hbs_keys = Self::index_keys(keys)?;
        match base.ty {
            Ty::Json | Ty::DataMap => {
                let nil_map = if base.ty == Ty::DataMap {
                    " nilMap=true"
                } else {
                    ""
                };
                if hbs_keys.len() + 1 + usize::from(base.ty == Ty::DataMap) > 8 {
                    return refuse(
                        pos,
                        "index",
                        "too many keys in one `index` (a tag takes eight parameters); nest `index` calls",
                    );
                }
                Ok(Val::expr(
                    format!("(goIndex {} {}{nil_map})", base.hbs, hbs_keys.join(" ")),
                    Ty::Json,
                ))
            }
            Ty::StrList => match keys {
                [(Expr::Num(_), _)] => Ok(Val::expr(
                    format!("(goIndex {} {})", base.hbs, hbs_keys[0]),
                    Ty::Str,
                )),
                _ => refuse(
                    pos,
                    "index",
                    "pkiCert's .CAChain is indexed by one list position",
                ),
            },
            _ => refuse(pos, "index", "only Vault data can be indexed"),
        }
    }

    /// `eq`/`ne`: Go compares a `json.Number` as its text and refuses to
    /// compare text with a boolean, a list or a map; `goEq` does the same.
    fn compare(
        &mut self,
        name: &str,
        args: &[(Expr, Pos)],
        pos: Pos,
        scope: &Scope,
    ) -> Result<Val, Refusal> {
        let [(a, pa), (b, pb)] = args else {
            return refuse(
                pos,
                name,
                format!("`{name}` is converted with exactly two arguments"),
            );
        };
        let a = self.value(a, *pa, scope)?;
        let b = self.value(b, *pb, scope)?;
        let go_typed = |v: &Val| matches!(v.ty, Ty::Json | Ty::Key | Ty::Int);
        let plain = |v: &Val| matches!(v.ty, Ty::Str | Ty::Bool);
        let test = if go_typed(&a) && plain(&b) || plain(&a) && go_typed(&b) {
            let (x, y) = if go_typed(&a) { (&a, &b) } else { (&b, &a) };
            let int = if matches!(x.ty, Ty::Key | Ty::Int) {
                " int=true"
            } else {
                ""
            };
            format!("(goEq {} {}{int})", x.hbs, y.hbs)
        } else if a.ty == b.ty && plain(&a) {
            // Two Go strings, or two booleans: handlebars compares them the
            // same way.
            format!("(eq {} {})", a.hbs, b.hbs)
        } else if go_typed(&a) && go_typed(&b) {
            return refuse(
                pos,
                name,
                "comparing two Vault values: Go compares numbers as their text, handlebars as numbers; compare with a string constant",
            );
        } else {
            return refuse(
                pos,
                name,
                "only Vault values, strings and booleans compared with a string or a boolean are converted",
            );
        };
        Ok(Val::expr(
            if name == "eq" {
                test
            } else {
                format!("(not {test})")
            },
            Ty::Bool,
        ))
    }

    #[allow(clippy::too_many_lines)]
    fn call(
        &mut self,
        name: &str,
        args: &[(Expr, Pos)],
        pos: Pos,
        scope: &Scope,
    ) -> Result<Val, Refusal> {
        let one = |this: &mut Self| -> Result<Val, Refusal> {
            match args {
                [(arg, p)] => this.value(arg, *p, scope),
                _ => refuse(pos, name, format!("`{name}` takes one argument")),
            }
        };
        match name {
            "index" => self.index(args, pos, scope),
            "base64Decode" | "base64Encode" => {
                let arg = one(self)?;
                if !matches!(arg.ty, Ty::Json | Ty::Str) {
                    return refuse(pos, name, "takes a string");
                }
                Ok(Val::expr(format!("({name} {})", arg.hbs), Ty::Str))
            }
            "toJSON" | "toJSONPretty" => {
                let arg = one(self)?;
                if !matches!(arg.ty, Ty::Json | Ty::DataMap) {
                    return refuse(pos, name, "only Vault data is converted");
                }
                self.needs_go_json = true;
                let helper = if name == "toJSON" {
                    "toGoJson"
                } else {
                    "toGoJsonPretty"
                };
                Ok(Val::expr(format!("({helper} {})", arg.hbs), Ty::Str))
            }
            "eq" | "ne" => self.compare(name, args, pos, scope),
            "not" | "and" | "or" => {
                let mut parts = Vec::new();
                for (arg, p) in args {
                    let v = self.value(arg, *p, scope)?;
                    if v.ty != Ty::Bool {
                        return refuse(
                            *p,
                            name,
                            format!(
                                "`{name}` is converted only over comparisons (`eq`, `ne`) and booleans: Go counts a Vault number 0 as true, handlebars as false"
                            ),
                        );
                    }
                    parts.push(v.hbs);
                }
                if (name == "not" && parts.len() != 1) || parts.is_empty() {
                    return refuse(pos, name, "wrong number of arguments");
                }
                Ok(Val::expr(format!("({name} {})", parts.join(" ")), Ty::Bool))
            }
            "secret" => refuse(
                pos,
                "secret",
                "`secret` is converted as `with secret \"…\"` only",
            ),
            "pkiCert" => refuse(
                pos,
                "pkiCert",
                "`pkiCert` is converted as `with pkiCert \"…\" \"common_name=…\"` only",
            ),
            "printf" => refuse(
                pos,
                "printf",
                "printf is converted only as a whole action, `{{ printf \"…\" … }}`",
            ),
            "len" => refuse(
                pos,
                "len",
                "Go's len counts bytes of a string, handlebars' counts characters; not converted",
            ),
            other => refuse(
                pos,
                format!("function `{other}`"),
                "no exact equivalent in the driver's templates",
            ),
        }
    }
}

/// Converts one consul-template template to the driver's handlebars.
pub fn convert(source: &str, options: GoOptions) -> Result<Converted, Refusal> {
    let pieces = lex(source)?;
    let mut parser = Parser {
        pieces: pieces.into_iter(),
    };
    let (nodes, end) = parser.list()?;
    match end {
        End::Eof => {}
        End::Close(p) => return refuse(p, "{{end}}", "unexpected {{end}}"),
        End::Else(p) | End::ElseIf(_, p) => {
            return refuse(p, "{{else}}", "{{else}} outside a block");
        }
    }
    let mut generator = Gen {
        strict: options.error_on_missing_key,
        ..Gen::default()
    };
    let mut scope = Scope {
        dot: None,
        vars: Vec::new(),
    };
    generator.nodes(&nodes, &mut scope)?;
    generator.guard_standalone_lines();
    Ok(Converted {
        handlebars: generator.out,
        needs_go_json: generator.needs_go_json,
        secret_paths: generator.secret_paths,
        pki_requests: generator.pki_requests,
        write_requests: generator.write_requests,
        requests: generator.requests,
    })
}
