//! consul-template (Go `text/template`) to the driver's handlebars, exactly
//! or not at all.
//!
//! The conversion is structural: Go's whitespace trimming (`{{-`, `-}}`) is
//! applied to the literal text here, so the output carries no trim
//! markers; handlebars' "standalone line" stripping is defeated by an empty
//! comment `{{!}}` before any block tag that starts a line; Go's `with` over
//! a value becomes an `if` (handlebars' `with` treats the number 0 as empty,
//! Go's `json.Number` never is); dot is always a block parameter or a path,
//! never handlebars' implicit context. Whatever has no exact equivalent is
//! refused with the template's line and column and the construct's name.

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
    /// `secret` paths used, for the summary.
    pub secret_paths: Vec<String>,
    /// Prints Vault data (the value-type caveat applies).
    pub prints_data: bool,
    /// The agent ran this template with Go's default for missing keys
    /// (print `<no value>`); the driver is strict (Go's `missingkey=error`),
    /// so it fails to render where the agent printed `<no value>`. Both
    /// modes convert to the same template.
    pub missing_key_differs: bool,
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
    /// Vault data: JSON decoded with `UseNumber` (numbers are text).
    Json,
    /// The whole `.Data` of a secret: always a map.
    DataMap,
    /// A Go `int` (`.LeaseDuration`).
    Int,
    /// A Go `bool`.
    Bool,
    /// A Go `string` (function results, literals).
    Str,
}

/// A Go value as handlebars sees it: an expression and its type.
#[derive(Debug, Clone)]
struct Val {
    hbs: String,
    ty: Ty,
    /// True for a plain handlebars path (no subexpression).
    path: bool,
}

#[derive(Default)]
struct Gen {
    out: String,
    needs_go_json: bool,
    prints_data: bool,
    secret_paths: Vec<String>,
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

fn segment(key: &str, pos: Pos) -> Result<String, Refusal> {
    if is_hbs_ident(key) && !matches!(key, "this" | "true" | "false" | "null" | "else" | "as") {
        Ok(key.to_owned())
    } else if !key.is_empty() && !key.contains([']', '\n', '\r', '}', '{']) {
        Ok(format!("[{key}]"))
    } else {
        refuse(
            pos,
            format!("key {key:?}"),
            "keys that are empty or contain `]`, `{`, `}` or line breaks cannot be written as a handlebars path",
        )
    }
}

fn hbs_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
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
            } => {
                let collection = self.value(head, *pos, scope)?;
                match collection.ty {
                    Ty::Json | Ty::DataMap => {}
                    _ => {
                        return refuse(
                            *pos,
                            "{{range}}",
                            "only Vault data (maps and lists) can be ranged over",
                        );
                    }
                }
                let v = self.fresh("v");
                let k = self.fresh("k");
                self.tag(
                    &format!("{{{{#each {} as |{v} {k}|}}}}", collection.hbs),
                    *pos,
                    true,
                )?;
                let element = Val {
                    hbs: v.clone(),
                    ty: Ty::Json,
                    path: true,
                };
                let mut inner = Scope {
                    dot: Some(element.clone()),
                    vars: scope.vars.clone(),
                };
                if let Some(name) = value {
                    inner.vars.push((name.clone(), element));
                }
                if let Some(name) = key {
                    // Map keys are strings; list indexes are ints. Both
                    // print the same in Go and handlebars.
                    inner.vars.push((
                        name.clone(),
                        Val {
                            hbs: k,
                            ty: Ty::Str,
                            path: true,
                        },
                    ));
                }
                self.nodes(body, &mut inner)?;
                // `{{else}}` is always written: strict `each` fails on a
                // missing collection without one, Go ranges over nothing.
                self.tag("{{else}}", *pos, true)?;
                if let Some(otherwise) = otherwise {
                    self.nodes(otherwise, scope)?;
                }
                self.tag("{{/each}}", *pos, true)
            }
        }
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
            && name == "secret"
        {
            let call = self.secret_call(args, pos)?;
            let s = self.fresh("s");
            self.tag(&format!("{{{{#with {call} as |{s}|}}}}"), pos, true)?;
            let mut inner = Scope {
                dot: Some(Val {
                    hbs: s,
                    ty: Ty::Secret,
                    path: true,
                }),
                vars: scope.vars.clone(),
            };
            self.nodes(body, &mut inner)?;
            // A secret is never empty, so Go never renders this `else`;
            // handlebars' strict `with` needs one for a falsy value anyway.
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

    fn secret_call(&mut self, args: &[(Expr, Pos)], pos: Pos) -> Result<String, Refusal> {
        let mut strings = Vec::new();
        for (arg, p) in args {
            match arg {
                Expr::Str(s) => strings.push(s.clone()),
                _ => {
                    return refuse(
                        *p,
                        "secret argument",
                        "`secret` arguments must be string literals to be converted",
                    );
                }
            }
        }
        let Some((path, rest)) = strings.split_first() else {
            return refuse(pos, "secret", "`secret` needs a path");
        };
        self.secret_paths.push(path.clone());
        let mut call = format!("(secret {}", hbs_string(path));
        for kv in rest {
            let Some((k, v)) = kv.split_once('=') else {
                return refuse(
                    pos,
                    format!("secret argument {kv:?}"),
                    "write arguments must be `key=value`",
                );
            };
            if !is_hbs_ident(k) {
                return refuse(
                    pos,
                    format!("secret argument {kv:?}"),
                    "the key must be letters, digits and `_`",
                );
            }
            write!(call, " {k}={}", hbs_string(v)).unwrap_or_default();
        }
        call.push(')');
        // The driver's own check, so a path it would refuse at publish is
        // refused here, with the template position.
        let args: serde_json::Map<String, serde_json::Value> = rest
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned())))
            .collect();
        if let Err(e) = crate::render::SecretRequest::new(path, &args) {
            return refuse(pos, format!("secret {path:?}"), e.to_string());
        }
        Ok(call)
    }

    /// The handlebars condition for Go's truth of `value`.
    fn truth(value: &Val, pos: Pos) -> Result<String, Refusal> {
        match value.ty {
            // json.Number is text: "0" is true in Go. includeZero makes
            // handlebars count every number as true; other JSON values
            // (strings, lists, maps, null, bools) agree already.
            Ty::Json => Ok(format!("{} includeZero=true", value.hbs)),
            Ty::DataMap | Ty::Int | Ty::Bool | Ty::Str => Ok(value.hbs.clone()),
            Ty::Secret => refuse(
                pos,
                "secret as a condition",
                "a secret is always true in Go; test a field of `.Data` instead",
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
            Ty::DataMap => refuse(
                pos,
                format!("{what} of `.Data`"),
                "Go prints a map as `map[k:v …]`, handlebars as `[object]`; print its fields, or use `toJSON`",
            ),
            Ty::Json | Ty::Int | Ty::Bool | Ty::Str => {
                if value.ty == Ty::Json {
                    self.prints_data = true;
                }
                // A constant prints as itself: write it as text.
                if !value.path && !value.hbs.starts_with('(') {
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
                let inner = if value.path {
                    value.hbs.clone()
                } else {
                    value.hbs[1..value.hbs.len() - 1].to_owned()
                };
                self.tag(&format!("{{{{{inner}}}}}"), pos, false)
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
            match (verb, value.ty) {
                (Some('s' | 'v'), Ty::Json | Ty::Str)
                | (Some('d' | 'v'), Ty::Int)
                | (Some('v' | 't'), Ty::Bool) => {
                    self.print_value(&value, *apos, "printf")?;
                }
                (Some(v @ ('s' | 'v' | 'd' | 't')), _) => {
                    return refuse(
                        *apos,
                        format!("printf %{v}"),
                        "Go formats this value differently (`%d` of Vault data prints `%!d(json.Number=…)`); use %s or %v on Vault data, %d on `.LeaseDuration`",
                    );
                }
                (Some(v), _) => {
                    return refuse(
                        pos,
                        format!("printf %{v}"),
                        "only %s, %v, %d, %t and %% without flags or widths are converted",
                    );
                }
                (None, _) => return refuse(pos, "printf", "a format ending in `%`"),
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

    fn field(base: Val, names: &[String], pos: Pos) -> Result<Val, Refusal> {
        let mut v = base;
        for name in names {
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
                    Val {
                        hbs: join(&v, seg, pos)?,
                        ty,
                        path: true,
                    }
                }
                Ty::Json | Ty::DataMap => Val {
                    hbs: join(&v, &segment(name, pos)?, pos)?,
                    ty: Ty::Json,
                    path: true,
                },
                _ => {
                    return refuse(
                        pos,
                        format!(".{name}"),
                        "field of a value that is not Vault data",
                    );
                }
            };
        }
        Ok(v)
    }

    #[allow(clippy::too_many_lines)]
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
                if !base.path {
                    return refuse(pos, "field of a function result", "handlebars cannot take a field of a subexpression");
                }
                Self::field(base, names, pos)
            }
            Expr::Str(s) => Ok(Val { hbs: hbs_string(s), ty: Ty::Str, path: false }),
            Expr::Bool(b) => Ok(Val { hbs: b.to_string(), ty: Ty::Bool, path: false }),
            Expr::Num(n) => refuse(pos, format!("number {n}"), "number constants are not converted (Go compares json.Number as text)"),
            Expr::Nil => refuse(pos, "nil", "nil is not converted"),
            Expr::Call(name, args) => self.call(name, args, pos, scope),
        }
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
            "index" => {
                let Some(((base, bpos), keys)) = args.split_first() else {
                    return refuse(pos, "index", "`index` needs a collection");
                };
                let mut v = self.value(base, *bpos, scope)?;
                if !matches!(v.ty, Ty::Json | Ty::DataMap) || !v.path {
                    return refuse(pos, "index", "only Vault data can be indexed");
                }
                for (key, kpos) in keys {
                    let seg = match key {
                        Expr::Str(s) => segment(s, *kpos)?,
                        Expr::Num(n) if n.bytes().all(|b| b.is_ascii_digit()) => format!("[{n}]"),
                        _ => {
                            return refuse(
                                *kpos,
                                "index",
                                "index keys must be string literals or list positions",
                            );
                        }
                    };
                    v = Val {
                        hbs: join(&v, &seg, pos)?,
                        ty: Ty::Json,
                        path: true,
                    };
                }
                Ok(v)
            }
            "base64Decode" | "base64Encode" => {
                let arg = one(self)?;
                if !matches!(arg.ty, Ty::Json | Ty::Str) {
                    return refuse(pos, name, "takes a string");
                }
                Ok(Val {
                    hbs: format!("({name} {})", arg.hbs),
                    ty: Ty::Str,
                    path: false,
                })
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
                Ok(Val {
                    hbs: format!("({helper} {})", arg.hbs),
                    ty: Ty::Str,
                    path: false,
                })
            }
            "eq" | "ne" => {
                let [(a, pa), (b, pb)] = args else {
                    return refuse(
                        pos,
                        name,
                        format!("`{name}` is converted with exactly two arguments"),
                    );
                };
                let a = self.value(a, *pa, scope)?;
                let b = self.value(b, *pb, scope)?;
                // Go compares json.Number and strings as text; handlebars
                // compares JSON values. They agree when both sides are
                // strings. A Vault number compared with a string constant
                // ("5" vs 5) would differ silently, so this is the same
                // value-type caveat as printing (`prints_data`); two Vault
                // values are refused outright.
                let ok = |x: &Val| matches!(x.ty, Ty::Json | Ty::Str);
                if !(ok(&a) && ok(&b)) {
                    return refuse(
                        pos,
                        name,
                        "only strings and Vault values compared with strings are converted",
                    );
                }
                if a.ty == Ty::Json && b.ty == Ty::Json {
                    return refuse(
                        pos,
                        name,
                        "comparing two Vault values: Go compares numbers as their text, handlebars as numbers; compare with a string constant",
                    );
                }
                self.prints_data = true;
                Ok(Val {
                    hbs: format!("({name} {} {})", a.hbs, b.hbs),
                    ty: Ty::Bool,
                    path: false,
                })
            }
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
                Ok(Val {
                    hbs: format!("({name} {})", parts.join(" ")),
                    ty: Ty::Bool,
                    path: false,
                })
            }
            "secret" => refuse(
                pos,
                "secret",
                "`secret` is converted as `with secret \"…\"` only",
            ),
            "pkiCert" => refuse(
                pos,
                "pkiCert",
                "pkiCert reuses the certificate already in its destination file and reformats PEM data; the driver has no equivalent. Use `with secret \"pki/issue/<role>\" \"common_name=…\"` and .Data.certificate, .Data.private_key, .Data.issuing_ca",
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

fn join(base: &Val, seg: &str, pos: Pos) -> Result<String, Refusal> {
    if !base.path {
        return refuse(
            pos,
            "field of a function result",
            "handlebars cannot take a field of a subexpression",
        );
    }
    Ok(format!("{}.{seg}", base.hbs))
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
    let mut generator = Gen::default();
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
        prints_data: generator.prints_data,
        missing_key_differs: !options.error_on_missing_key,
    })
}
