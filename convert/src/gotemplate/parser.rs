//! Go text/template's parser: pipelines, commands and the block
//! structure (`if`, `with`, `range`, `define`, `template`, `block`).

use super::lexer::{Piece, Tok};
use super::{Pos, Refusal, refuse};

/// An expression (a command's operand, or a whole pipeline).
#[derive(Debug, Clone)]
pub(super) enum Expr {
    Dot,
    Var(String),
    Field(Box<Expr>, Vec<String>),
    Str(String),
    Num(String),
    Bool(bool),
    Nil,
    Call(String, Vec<(Expr, Pos)>),
    /// `receiver.Method args…`: the last name of a field chain called with
    /// arguments (a date's or a version's methods).
    Method(Box<Expr>, String, Vec<(Expr, Pos)>),
}

/// A node of the template's tree.
#[derive(Debug, Clone)]
pub(super) enum Node {
    Text(String),
    Print(Expr, Pos),
    /// `$x := …` (`declare`) or `$x = …`.
    Set {
        var: String,
        declare: bool,
        expr: Expr,
        pos: Pos,
    },
    /// `{{template "name" pipeline}}` (and `block`'s call).
    Template {
        name: String,
        arg: Option<Expr>,
        pos: Pos,
    },
    /// `{{break}}` or `{{continue}}`, inside a `range`.
    Jump {
        stop: bool,
        pos: Pos,
    },
    If {
        branches: Vec<(Expr, Pos, Vec<Node>)>,
        otherwise: Option<Vec<Node>>,
    },
    With {
        var: Option<String>,
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
#[derive(Debug)]
pub(super) enum End {
    Eof,
    Close(Pos),
    Else(Pos),
    ElseIf(Expr, Pos),
    /// `{{else with [$x :=] pipeline}}`.
    ElseWith(Option<String>, Expr, Pos),
}

/// The parser: the pieces still to read, and the named templates found.
pub(super) struct Parser {
    pub(super) pieces: std::vec::IntoIter<Piece>,
    /// `define`d (and `block`) templates: name, body.
    pub(super) defines: Vec<(String, Vec<Node>)>,
}

impl Parser {
    pub(super) fn list(&mut self) -> Result<(Vec<Node>, End), Refusal> {
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
                    End::Else(p) | End::ElseIf(_, p) | End::ElseWith(_, _, p) => refuse(
                        p,
                        "{{else}}",
                        format!(
                            "a second {{{{else}}}} in one {{{{{what}}}}} (Go refuses the template too)"
                        ),
                    ),
                    End::Eof => unreachable!("block() refuses EOF"),
                }
            }
            // `{{with a}}…{{else with b}}…{{end}}` (Go 1.23) is
            // `{{with a}}…{{else}}{{with b}}…{{end}}{{end}}`.
            End::ElseWith(var, head, p) if what == "with" => {
                let (inner, otherwise) = self.body_else("with", p)?;
                let nested = Node::With {
                    var,
                    head,
                    pos: p,
                    body: inner,
                    otherwise,
                };
                Ok((body, Some(vec![nested])))
            }
            End::ElseIf(_, p) | End::ElseWith(_, _, p) => refuse(
                p,
                format!("{{{{else …}}}} in a {{{{{what}}}}}"),
                "Go takes `else if` in an `if` and `else with` in a `with` only (it refuses the template too): nest the block in the `else`",
            ),
            End::Eof => unreachable!("block() refuses EOF"),
        }
    }

    /// `{{if}}` … `{{else if}}` … `{{else}}` … `{{end}}`.
    fn if_block(
        &mut self,
        toks: &[(Tok, Pos)],
        pos: Pos,
        nodes: &mut Vec<Node>,
    ) -> Result<Option<End>, Refusal> {
        let head = pipeline(toks, pos)?;
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
                    if let End::Else(p) | End::ElseIf(_, p) | End::ElseWith(_, _, p) = end {
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
                End::ElseWith(_, _, p) => {
                    return refuse(
                        p,
                        "{{else with}} in an {{if}}",
                        "Go takes `else with` in a `with` only (it refuses the template too): write `{{else}}{{with …}}…{{end}}`",
                    );
                }
                End::Eof => unreachable!("block() refuses EOF"),
            }
        }
    }

    /// `{{range [$k, $v :=] pipeline}}` … `{{else}}` … `{{end}}`.
    fn range_block(
        &mut self,
        toks: &[(Tok, Pos)],
        pos: Pos,
        nodes: &mut Vec<Node>,
    ) -> Result<Option<End>, Refusal> {
        let (key, value, head_toks) = match toks.iter().position(|(t, _)| matches!(t, Tok::Declare))
        {
            None => (None, None, toks),
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
                    Tok::Ident(k) if k == "with" => {
                        let (var, head_toks) = declared(&toks[2..], pos)?;
                        Ok(Some(End::ElseWith(var, pipeline(head_toks, pos)?, pos)))
                    }
                    _ => refuse(
                        pos,
                        "{{else …}}",
                        "Go takes `else`, `else if` and `else with` only (it refuses the template too)",
                    ),
                }
            }
            "if" => self.if_block(&toks[1..], pos, nodes),
            "with" => {
                let (var, head_toks) = declared(&toks[1..], pos)?;
                let head = pipeline(head_toks, pos)?;
                let (body, otherwise) = self.body_else("with", pos)?;
                nodes.push(Node::With {
                    var,
                    head,
                    pos,
                    body,
                    otherwise,
                });
                Ok(None)
            }
            "range" => self.range_block(&toks[1..], pos, nodes),
            "define" | "block" => {
                let (name, arg) = template_call(&toks[1..], pos, &keyword)?;
                let (body, end) = self.block(&keyword, pos)?;
                if !matches!(end, End::Close(_)) {
                    return refuse(
                        pos,
                        format!("{{{{{keyword}}}}}"),
                        "{{else}} in a named template",
                    );
                }
                self.defines.push((name.clone(), body));
                if keyword == "block" {
                    nodes.push(Node::Template { name, arg, pos });
                }
                Ok(None)
            }
            "template" => {
                let (name, arg) = template_call(&toks[1..], pos, "template")?;
                nodes.push(Node::Template { name, arg, pos });
                Ok(None)
            }
            "break" | "continue" => {
                nodes.push(Node::Jump {
                    stop: keyword == "break",
                    pos,
                });
                Ok(None)
            }
            _ => {
                if let [
                    (Tok::Var(var), _),
                    (op @ (Tok::Declare | Tok::Assign), _),
                    rest @ ..,
                ] = toks
                {
                    nodes.push(Node::Set {
                        var: var.clone(),
                        declare: *op == Tok::Declare,
                        expr: pipeline(rest, pos)?,
                        pos,
                    });
                    return Ok(None);
                }
                nodes.push(Node::Print(pipeline(toks, pos)?, pos));
                Ok(None)
            }
        }
    }
}

/// A variable declared at the head of a block, and the tokens after it.
type Declared<'a> = (Option<String>, &'a [(Tok, Pos)]);

/// `$x := pipeline` at the head of a `with`: the variable and the rest.
fn declared(toks: &[(Tok, Pos)], pos: Pos) -> Result<Declared<'_>, Refusal> {
    match toks {
        [(Tok::Var(v), _), (Tok::Declare, _), rest @ ..] => Ok((Some(v.clone()), rest)),
        _ if toks
            .iter()
            .any(|(t, _)| matches!(t, Tok::Declare | Tok::Assign)) =>
        {
            refuse(pos, "declaration", "expected `$x := pipeline`")
        }
        _ => Ok((None, toks)),
    }
}

/// `"name" [pipeline]` after `template`, `define` or `block`.
fn template_call(
    toks: &[(Tok, Pos)],
    pos: Pos,
    what: &str,
) -> Result<(String, Option<Expr>), Refusal> {
    let Some(((Tok::Str(name), _), rest)) = toks.split_first() else {
        return refuse(
            pos,
            format!("{{{{{what}}}}}"),
            "the template's name must be a string constant (Go refuses the template too)",
        );
    };
    let arg = if rest.is_empty() {
        None
    } else {
        Some(pipeline(rest, pos)?)
    };
    Ok((name.clone(), arg))
}

/// Parses a pipeline: commands joined by `|`, each feeding the next as its
/// last argument.
pub(super) fn pipeline(toks: &[(Tok, Pos)], pos: Pos) -> Result<Expr, Refusal> {
    if toks.is_empty() {
        return refuse(pos, "pipeline", "missing value");
    }
    let mut result: Option<Expr> = None;
    for command in split_top(toks, |t| matches!(t, Tok::Pipe)) {
        let cpos = command.first().map_or(pos, |(_, p)| *p);
        let mut operands = operands(command, cpos)?;
        if let Some(previous) = result.take() {
            let takes_piped = starts_with_name(command);
            match &mut operands[..] {
                [(Expr::Call(_, args), _)] if takes_piped => args.push((previous, cpos)),
                [(Expr::Method(_, _, args), _)]
                    if !matches!(command.first(), Some((Tok::LParen, _))) =>
                {
                    args.push((previous, cpos));
                }
                // A field chain fed by `|` is a method call.
                [(Expr::Field(..), _)] => {
                    let (field, p) = operands.remove(0);
                    operands.push((method(field, vec![(previous, cpos)]), p));
                }
                _ => {
                    return refuse(
                        cpos,
                        "pipeline",
                        "the right side of `|` must be a function (Go refuses the template too)",
                    );
                }
            }
        }
        if operands.len() != 1 {
            return refuse(cpos, "command", "a value cannot take arguments");
        }
        result = Some(operands.remove(0).0);
    }
    result.map_or_else(|| refuse(pos, "pipeline", "missing value"), Ok)
}

/// Whether a command starts with a function's name, which takes the rest
/// (and a piped value) as its arguments; a parenthesized call is a value
/// and takes none (Go: "can't give argument to non-function").
fn starts_with_name(toks: &[(Tok, Pos)]) -> bool {
    match (toks.first(), toks.get(1)) {
        (Some((Tok::Ident(name), _)), Some((Tok::Chain(_), _))) => name == "scratch",
        (Some((Tok::Ident(name), _)), _) => !matches!(name.as_str(), "true" | "false" | "nil"),
        _ => false,
    }
}

/// `base.A.B args…` as the method `B` of `base.A`.
fn method(field: Expr, args: Vec<(Expr, Pos)>) -> Expr {
    let Expr::Field(base, mut names) = field else {
        unreachable!("called with a field chain")
    };
    let name = names.pop().unwrap_or_default();
    let receiver = if names.is_empty() {
        *base
    } else {
        Expr::Field(base, names)
    };
    Expr::Method(Box::new(receiver), name, args)
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
    let takes_arguments = starts_with_name(toks);
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
                if let Some((Tok::Chain(names), _)) = toks.get(i + 1) {
                    i += 1;
                    Expr::Field(Box::new(inner), names.clone())
                } else {
                    inner
                }
            }
            Tok::RParen => return refuse(*p, ")", "unexpected `)`"),
            Tok::Dot => Expr::Dot,
            Tok::Field(names) => Expr::Field(Box::new(Expr::Dot), names.clone()),
            Tok::Chain(_) => return refuse(*p, "field", "a field chain must follow a value"),
            Tok::Var(name) => {
                if let Some((Tok::Chain(names), _)) = toks.get(i + 1) {
                    i += 1;
                    Expr::Field(Box::new(Expr::Var(name.clone())), names.clone())
                } else {
                    Expr::Var(name.clone())
                }
            }
            Tok::Str(s) => Expr::Str(s.clone()),
            Tok::Num(n) => Expr::Num(n.clone()),
            Tok::Ident(name) => match (name.as_str(), toks.get(i + 1)) {
                // consul-template's `scratch.Method args…`: a function of
                // its own for the converter.
                ("scratch", Some((Tok::Chain(names), _))) if names.len() == 1 => {
                    i += 1;
                    Expr::Call(format!("scratch.{}", names[0]), Vec::new())
                }
                (_, Some((Tok::Chain(names), _))) => {
                    i += 1;
                    Expr::Field(
                        Box::new(Expr::Call(name.clone(), Vec::new())),
                        names.clone(),
                    )
                }
                ("true", _) => Expr::Bool(true),
                ("false", _) => Expr::Bool(false),
                ("nil", _) => Expr::Nil,
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
        Some((Expr::Call(name, _), p)) if takes_arguments => {
            let (name, p) = (name.clone(), *p);
            let args = items.split_off(1);
            Ok(vec![(Expr::Call(name, args), p)])
        }
        // A field chain with arguments calls its last name as a method.
        Some((Expr::Field(..), _)) if items.len() > 1 => {
            let (field, p) = items.remove(0);
            Ok(vec![(method(field, items), p)])
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

#[cfg(test)]
mod tests {
    use super::super::lexer::lex;
    use super::{End, Expr, Node, Parser};

    fn parse(src: &str) -> (Vec<Node>, Vec<(String, Vec<Node>)>) {
        let mut parser = Parser {
            pieces: lex(src).unwrap().into_iter(),
            defines: Vec::new(),
        };
        let (nodes, end) = parser.list().unwrap();
        assert!(matches!(end, End::Eof));
        (nodes, parser.defines)
    }

    #[test]
    fn pipelines_feed_the_last_argument() {
        let (nodes, _) = parse(r#"{{ .a | printf "%s" | toUpper }}"#);
        let [Node::Print(Expr::Call(outer, args), _)] = nodes.as_slice() else {
            panic!("{nodes:?}");
        };
        assert_eq!(outer, "toUpper");
        let [(Expr::Call(inner, inner_args), _)] = args.as_slice() else {
            panic!("{args:?}");
        };
        assert_eq!(inner, "printf");
        assert!(matches!(inner_args.last(), Some((Expr::Field(_, f), _)) if f == &["a"]));
    }

    /// A parenthesized call is a value: it keeps its own arguments where
    /// it starts an action (`{{ if (eq .a "b") }}`), and takes no more.
    #[test]
    fn parenthesized_calls_keep_their_arguments() {
        let (nodes, _) = parse(r#"{{ (eq .a "b") }}{{ if (not .c) }}{{ end }}"#);
        let Node::Print(Expr::Call(name, args), _) = &nodes[0] else {
            panic!("{nodes:?}");
        };
        assert_eq!((name.as_str(), args.len()), ("eq", 2));
        let Node::If { branches, .. } = &nodes[1] else {
            panic!("{nodes:?}");
        };
        assert!(matches!(&branches[0].0, Expr::Call(n, a) if n == "not" && a.len() == 1));
        for refused in ["{{ (eq 1 1) 2 }}", r#"{{ "a" | (printf "%s") }}"#] {
            let mut parser = Parser {
                pieces: lex(refused).unwrap().into_iter(),
                defines: Vec::new(),
            };
            assert!(parser.list().is_err(), "{refused}");
        }
    }

    /// A field chain given arguments (or fed by `|`) calls its last name
    /// as a method of the rest.
    #[test]
    fn fields_with_arguments_are_method_calls() {
        let (nodes, _) = parse(r#"{{ $t.A.Format "2006" }}{{ "x" | .B.Add }}{{ $v.C }}"#);
        let [
            Node::Print(Expr::Method(receiver, name, args), _),
            Node::Print(Expr::Method(piped, add, piped_args), _),
            Node::Print(Expr::Field(_, plain), _),
        ] = nodes.as_slice()
        else {
            panic!("{nodes:?}");
        };
        assert_eq!(name, "Format");
        assert!(matches!(receiver.as_ref(), Expr::Field(base, f)
            if f == &["A"] && matches!(base.as_ref(), Expr::Var(v) if v == "t")));
        assert!(matches!(args.as_slice(), [(Expr::Str(s), _)] if s == "2006"));
        assert_eq!(add, "Add");
        assert!(matches!(piped.as_ref(), Expr::Field(base, f)
            if f == &["B"] && matches!(base.as_ref(), Expr::Dot)));
        assert!(matches!(piped_args.as_slice(), [(Expr::Str(s), _)] if s == "x"));
        assert_eq!(plain, &["C"]);
    }

    #[test]
    fn blocks_variables_and_named_templates() {
        let (nodes, defines) = parse(
            "{{ define \"t\" }}x{{ end }}{{ $v := 1 }}{{ $v = 2 }}{{ if .a }}1{{ else if .b }}2{{ else }}3{{ end }}{{ range $k, $e := .l }}{{ break }}{{ end }}{{ with $w := .c }}{{ end }}{{ template \"t\" . }}{{ block \"u\" . }}y{{ end }}",
        );
        assert_eq!(
            defines.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["t", "u"]
        );
        assert!(matches!(&nodes[0], Node::Set { var, declare: true, .. } if var == "v"));
        assert!(matches!(&nodes[1], Node::Set { declare: false, .. }));
        assert!(
            matches!(&nodes[2], Node::If { branches, otherwise: Some(_) } if branches.len() == 2)
        );
        assert!(
            matches!(&nodes[3], Node::Range { key: Some(k), value: Some(v), .. } if k == "k" && v == "e")
        );
        assert!(matches!(&nodes[4], Node::With { var: Some(w), .. } if w == "w"));
        assert!(matches!(&nodes[5], Node::Template { name, arg: Some(_), .. } if name == "t"));
        assert!(matches!(&nodes[6], Node::Template { name, .. } if name == "u"));
    }

    #[test]
    fn structure_errors_are_refused() {
        let mut parser = Parser {
            pieces: lex("{{ if .a }}x").unwrap().into_iter(),
            defines: Vec::new(),
        };
        assert!(
            parser
                .list()
                .unwrap_err()
                .reason
                .contains("no matching {{end}}")
        );
        let mut parser = Parser {
            pieces: lex("{{ \"s\" 1 }}").unwrap().into_iter(),
            defines: Vec::new(),
        };
        assert!(parser.list().is_err());
    }
}
