//! The handlebars for a parsed template: every Go value goes through the
//! driver's Go-model helpers (`goDot`, `goAt`, `goCall`, `goOut`,
//! `goTruth`, `goWith`, `goEach`, `goAnd`, `goOr`, `goNot`, `goCmp`,
//! `goSet`/`goGet`, `goCapture`), which do what text/template and
//! consul-template do; the structure (`if`, `with`, `range`, named
//! templates) becomes handlebars blocks.

use super::parser::{Expr, Node};
use super::{Pos, Refusal, SecretCall, refuse};

/// Deepest nesting of `(…)` a tag gets before a value is kept in a
/// variable first (the driver allows eight).
const MAX_DEPTH: usize = 6;
/// Most parameters of one helper call (the driver allows eight).
pub(super) const MAX_PARAMS: usize = 8;
/// Most named-template expansions in one template.
const MAX_EXPANSIONS: usize = 256;

/// What the template's names mean here.
#[derive(Clone)]
pub(super) struct Scope {
    /// Dot, as a handlebars parameter.
    pub(super) dot: String,
    /// Variables: Go name, handlebars parameter.
    pub(super) vars: Vec<(String, String)>,
}

impl Scope {
    /// The top level: consul-template runs templates with no data.
    pub(super) fn top() -> Self {
        Self {
            dot: "null".to_owned(),
            vars: vec![(String::new(), "null".to_owned())],
        }
    }
}

/// The generator's state.
#[derive(Default)]
pub(super) struct Gen {
    pub(super) out: String,
    /// Variables a function that changes a map in place may not change
    /// ([`super::mutation`]).
    pub(super) shared: super::mutation::Sharing,
    /// `error_on_missing_key`.
    pub(super) strict: bool,
    pub(super) secret_paths: Vec<String>,
    pub(super) pki_requests: Vec<(String, String)>,
    pub(super) write_requests: Vec<(String, String)>,
    pub(super) requests: Vec<SecretCall>,
    pub(super) defines: Vec<(String, Vec<Node>)>,
    /// Named templates being expanded (to refuse recursion).
    expanding: Vec<String>,
    expansions: usize,
    names: usize,
    /// Tags to write before the tag being built (values kept first).
    prelude: Vec<String>,
    /// (start, end) of block tags that begin a line.
    standalone_candidates: Vec<(usize, usize)>,
    /// The ranges around: the variables `break` and `continue` set.
    loops: Vec<(String, String)>,
}

pub(super) fn hbs_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// How deep `(` nest in a handlebars parameter (outside string literals).
fn depth(hbs: &str) -> usize {
    let (mut d, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for c in hbs.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' => {
                d += 1;
                max = max.max(d);
            }
            ')' => d = d.saturating_sub(1),
            _ => {}
        }
    }
    max
}

impl Gen {
    /// A generator for a template with these named templates.
    pub(super) fn new(strict: bool, defines: Vec<(String, Vec<Node>)>) -> Self {
        Self {
            strict,
            defines,
            ..Self::default()
        }
    }

    fn fresh(&mut self, base: &str) -> String {
        self.names += 1;
        format!("{base}{}", self.names)
    }

    /// A helper call; arguments nested too deep are kept in variables
    /// first, in order.
    pub(super) fn call(
        &mut self,
        helper: &str,
        args: Vec<String>,
        pos: Pos,
    ) -> Result<String, Refusal> {
        let mut args = args;
        if helper == "goCall" && args.len() + 1 > MAX_PARAMS {
            // The name and five arguments, then the rest packed (nested
            // packs for very long calls).
            let rest = args.split_off(MAX_PARAMS - 3);
            let packed = self.call("goArgs", rest, pos)?;
            args.push(packed);
        } else if helper == "goArgs" && args.len() + 1 > MAX_PARAMS {
            let rest = args.split_off(MAX_PARAMS - 2);
            let packed = self.call("goArgs", rest, pos)?;
            args.push(packed);
        }
        if args.len() + 1 > MAX_PARAMS {
            return refuse(
                pos,
                helper.to_owned(),
                "more than seven arguments in one call: split it (a driver tag takes eight parameters)",
            );
        }
        let mut parts = vec![helper.to_owned()];
        for arg in args {
            if depth(&arg) >= MAX_DEPTH {
                let t = self.fresh("t");
                self.prelude
                    .push(format!("{{{{goSet {} {arg} keep=true}}}}", hbs_string(&t)));
                parts.push(format!("(goGet {})", hbs_string(&t)));
            } else {
                parts.push(arg);
            }
        }
        Ok(format!("({})", parts.join(" ")))
    }

    /// Writes a tag (after any values it needs kept first); a block tag
    /// that would start a line gets `{{!}}` first, so handlebars does not
    /// strip the line's whitespace.
    fn tag(&mut self, tag: &str, block: bool) {
        for pre in std::mem::take(&mut self.prelude) {
            self.raw_tag(&pre, false);
        }
        self.raw_tag(tag, block);
    }

    fn raw_tag(&mut self, tag: &str, block: bool) {
        // A backslash right before `{{` would escape the tag: write it
        // through a tag of its own.
        if self.out.ends_with('\\') {
            self.out.pop();
            self.out.push_str("{{goOut \"\\\\\"}}");
        }
        let line_start = self.out.trim_end_matches([' ', '\t']);
        if block && (line_start.is_empty() || line_start.ends_with(['\n', '\r'])) {
            self.standalone_candidates
                .push((self.out.len(), self.out.len() + tag.len()));
        }
        self.out.push_str(tag);
    }

    /// Literal text; `{{` in it goes through a tag.
    fn text(&mut self, text: &str) {
        let mut rest = text;
        while let Some(at) = rest.find("{{") {
            self.out.push_str(&rest[..at]);
            self.raw_tag("{{goOut \"{{\"}}", false);
            rest = &rest[at + 2..];
        }
        self.out.push_str(rest);
    }

    /// Puts `{{!}}` before every block tag handlebars would treat as a
    /// standalone line.
    pub(super) fn guard_standalone_lines(&mut self) {
        for &(start, end) in self.standalone_candidates.iter().rev() {
            let rest = self.out[end..].trim_start_matches([' ', '\t']);
            if rest.is_empty() || rest.starts_with(['\n', '\r']) {
                self.out.insert_str(start, "{{!}}");
            }
        }
    }

    pub(super) fn nodes(&mut self, nodes: &[Node], scope: &mut Scope) -> Result<(), Refusal> {
        for (i, node) in nodes.iter().enumerate() {
            self.node(node, scope)?;
            // After a `break` or `continue` that may have run, the rest of
            // the iteration renders only if neither did.
            if let Some((stop, skip)) = self.loops.last().cloned()
                && jumps(node)
                && i + 1 < nodes.len()
            {
                self.tag(
                    &format!(
                        "{{{{#unless (goOr (goGet {}) (goGet {}))}}}}",
                        hbs_string(&stop),
                        hbs_string(&skip)
                    ),
                    true,
                );
                self.nodes(&nodes[i + 1..], scope)?;
                self.tag("{{/unless}}", true);
                break;
            }
        }
        Ok(())
    }

    fn node(&mut self, node: &Node, scope: &mut Scope) -> Result<(), Refusal> {
        match node {
            Node::Text(t) => self.text(t),
            Node::Print(expr, pos) => {
                let value = self.expr(expr, *pos, scope)?;
                let call = self.call("goOut", vec![value], *pos)?;
                self.tag(&format!("{{{{{}}}}}", &call[1..call.len() - 1]), false);
            }
            Node::Set {
                var,
                declare,
                expr,
                pos,
            } => self.set(var, *declare, expr, *pos, scope)?,
            Node::If {
                branches,
                otherwise,
            } => self.if_chain(branches, otherwise.as_deref(), scope)?,
            Node::With {
                var,
                head,
                pos,
                body,
                otherwise,
            } => self.with(
                var.as_deref(),
                head,
                *pos,
                body,
                otherwise.as_deref(),
                scope,
            )?,
            Node::Range {
                key,
                value,
                head,
                pos,
                body,
                otherwise,
            } => {
                let vars = (key.as_deref(), value.as_deref());
                self.range(vars, head, *pos, body, otherwise.as_deref(), scope)?;
            }
            Node::Template { name, arg, pos } => self.template(name, arg.as_ref(), *pos, scope)?,
            Node::Jump { stop, pos } => self.jump(*stop, *pos)?,
        }
        Ok(())
    }

    fn set(
        &mut self,
        var: &str,
        declare: bool,
        expr: &Expr,
        pos: Pos,
        scope: &mut Scope,
    ) -> Result<(), Refusal> {
        let value = self.expr(expr, pos, scope)?;
        let stored = if declare {
            let name = self.fresh("x");
            scope
                .vars
                .push((var.to_owned(), format!("(goGet {})", hbs_string(&name))));
            name
        } else {
            match scope.vars.iter().rev().find(|(n, _)| n == var) {
                Some((_, hbs)) => match hbs.strip_prefix("(goGet \"") {
                    Some(rest) => rest.trim_end_matches("\")").to_owned(),
                    None => {
                        return refuse(
                            pos,
                            format!("${var} ="),
                            "assigning to a `range` or `with` variable: Go allows it, but the loop's next value replaces it; declare a variable of your own (`$y := …`) and assign that",
                        );
                    }
                },
                None => {
                    return refuse(
                        pos,
                        format!("${var}"),
                        "undefined variable (Go refuses the template too)",
                    );
                }
            }
        };
        self.tag(
            &format!("{{{{goSet {} {value}}}}}", hbs_string(&stored)),
            false,
        );
        Ok(())
    }

    fn if_chain(
        &mut self,
        branches: &[(Expr, Pos, Vec<Node>)],
        otherwise: Option<&[Node]>,
        scope: &Scope,
    ) -> Result<(), Refusal> {
        let mut closes = 0;
        for (i, (cond, pos, body)) in branches.iter().enumerate() {
            if i > 0 {
                self.tag("{{else}}", true);
            }
            let value = self.expr(cond, *pos, scope)?;
            let test = self.call("goTruth", vec![value], *pos)?;
            self.tag(&format!("{{{{#if {test}}}}}"), true);
            closes += 1;
            self.nodes(body, &mut scope.clone())?;
        }
        if let Some(otherwise) = otherwise {
            self.tag("{{else}}", true);
            self.nodes(otherwise, &mut scope.clone())?;
        }
        for _ in 0..closes {
            self.tag("{{/if}}", true);
        }
        Ok(())
    }

    fn with(
        &mut self,
        var: Option<&str>,
        head: &Expr,
        pos: Pos,
        body: &[Node],
        otherwise: Option<&[Node]>,
        scope: &Scope,
    ) -> Result<(), Refusal> {
        let value = self.expr(head, pos, scope)?;
        let over = self.call("goWith", vec![value], pos)?;
        let w = self.fresh("w");
        self.tag(&format!("{{{{#each {over} as |{w}|}}}}"), true);
        let mut inner = scope.clone();
        inner.dot.clone_from(&w);
        if let Some(var) = var {
            inner.vars.push((var.to_owned(), w.clone()));
        }
        self.nodes(body, &mut inner)?;
        self.tag("{{else}}", true);
        if let Some(otherwise) = otherwise {
            self.nodes(otherwise, &mut scope.clone())?;
        }
        self.tag("{{/each}}", true);
        Ok(())
    }

    fn range(
        &mut self,
        (key, value): (Option<&str>, Option<&str>),
        head: &Expr,
        pos: Pos,
        body: &[Node],
        otherwise: Option<&[Node]>,
        scope: &Scope,
    ) -> Result<(), Refusal> {
        let collection = self.expr(head, pos, scope)?;
        let over = self.call("goEach", vec![collection], pos)?;
        let (v, k) = (self.fresh("v"), self.fresh("k"));
        self.tag(&format!("{{{{#each {over} as |{v} {k}|}}}}"), true);
        let mut inner = scope.clone();
        inner.dot.clone_from(&v);
        // With one variable, it is the element.
        match (key, value) {
            (Some(key), Some(value)) => {
                inner.vars.push((key.to_owned(), format!("(goInt {k})")));
                inner.vars.push((value.to_owned(), v.clone()));
            }
            (None, Some(value)) => inner.vars.push((value.to_owned(), v.clone())),
            _ => {}
        }
        let (stop, skip) = (self.fresh("b"), self.fresh("c"));
        let uses_jumps = body.iter().any(jumps);
        if uses_jumps {
            self.tag(&format!("{{{{goSet {} false}}}}", hbs_string(&skip)), false);
            self.tag(
                &format!("{{{{#unless (goGet {})}}}}", hbs_string(&stop)),
                true,
            );
        }
        self.loops.push((stop, skip));
        self.nodes(body, &mut inner)?;
        self.loops.pop();
        if uses_jumps {
            self.tag("{{/unless}}", true);
        }
        self.tag("{{else}}", true);
        if let Some(otherwise) = otherwise {
            self.nodes(otherwise, &mut scope.clone())?;
        }
        self.tag("{{/each}}", true);
        Ok(())
    }

    /// `break` stops the loop: what follows in the body, and later
    /// iterations, render nothing (the loop still runs to its end, within
    /// the render's budget). `continue` skips the rest of the iteration.
    fn jump(&mut self, stop: bool, pos: Pos) -> Result<(), Refusal> {
        let what = if stop { "{{break}}" } else { "{{continue}}" };
        let Some((stop_flag, skip_flag)) = self.loops.last().cloned() else {
            return refuse(pos, what, "outside a range (Go refuses the template too)");
        };
        let flag = if stop { stop_flag } else { skip_flag };
        self.tag(&format!("{{{{goSet {} true}}}}", hbs_string(&flag)), false);
        Ok(())
    }

    fn template(
        &mut self,
        name: &str,
        arg: Option<&Expr>,
        pos: Pos,
        scope: &Scope,
    ) -> Result<(), Refusal> {
        let Some(body) = self
            .defines
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.clone())
        else {
            return refuse(
                pos,
                format!("{{{{template {name:?}}}}}"),
                "no such template (Go fails too)",
            );
        };
        if self.expanding.iter().any(|n| n == name) {
            return refuse(
                pos,
                format!("{{{{template {name:?}}}}}"),
                "a template that calls itself: the driver's templates do not recurse (a render's work is bounded by its text), so write the levels out",
            );
        }
        self.expansions += 1;
        if self.expansions > MAX_EXPANSIONS {
            return refuse(
                pos,
                format!("{{{{template {name:?}}}}}"),
                "more than 256 template calls in one template",
            );
        }
        let value = match arg {
            Some(arg) => self.expr(arg, pos, scope)?,
            None => "null".to_owned(),
        };
        let a = self.fresh("a");
        self.tag(
            &format!("{{{{goSet {} {value} keep=true}}}}", hbs_string(&a)),
            false,
        );
        let get = format!("(goGet {})", hbs_string(&a));
        let mut inner = Scope {
            dot: get.clone(),
            vars: vec![(String::new(), get)],
        };
        self.expanding.push(name.to_owned());
        let saved = std::mem::take(&mut self.loops);
        self.nodes(&body, &mut inner)?;
        self.loops = saved;
        self.expanding.pop();
        Ok(())
    }

    /// `executeTemplate "name" [data]`: the template rendered into a
    /// variable first, then that variable.
    pub(super) fn execute_template(
        &mut self,
        args: &[(Expr, Pos)],
        pos: Pos,
        scope: &Scope,
    ) -> Result<String, Refusal> {
        let (name, arg) = match args {
            [(Expr::Str(name), _)] => (name.clone(), None),
            [(Expr::Str(name), _), (arg, _)] => (name.clone(), Some(arg.clone())),
            _ => {
                return refuse(
                    pos,
                    "executeTemplate",
                    "the template's name must be a string constant, with at most one argument: the driver expands named templates when converting",
                );
            }
        };
        let captured = self.fresh("c");
        let pending = std::mem::take(&mut self.prelude);
        let saved_out = std::mem::take(&mut self.out);
        let saved_candidates = std::mem::take(&mut self.standalone_candidates);
        self.template(&name, arg.as_ref(), pos, scope)?;
        self.guard_standalone_lines();
        let body = std::mem::replace(&mut self.out, saved_out);
        self.standalone_candidates = saved_candidates;
        self.prelude = pending;
        self.prelude.push(format!(
            "{{{{#goCapture {}}}}}{body}{{{{/goCapture}}}}",
            hbs_string(&captured)
        ));
        Ok(format!("(goGet {})", hbs_string(&captured)))
    }
}

/// Whether a `break` or `continue` of the innermost range may run inside
/// `node` (not counting nested ranges, whose jumps are their own).
fn jumps(node: &Node) -> bool {
    match node {
        Node::Jump { .. } => true,
        Node::If {
            branches,
            otherwise,
        } => {
            branches.iter().any(|(_, _, body)| body.iter().any(jumps))
                || otherwise.iter().flatten().any(jumps)
        }
        Node::With {
            body, otherwise, ..
        } => body.iter().any(jumps) || otherwise.iter().flatten().any(jumps),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{GoOptions, convert};
    use super::depth;

    fn hbs(src: &str) -> String {
        convert(src, GoOptions::default()).unwrap().handlebars
    }

    #[test]
    fn values_go_through_the_go_helpers() {
        assert_eq!(
            hbs(r#"{{ with secret "kv/data/a" }}{{ .Data.data.k | toUpper }}{{ end }}"#),
            r#"{{#each (goWith (goSecret (secret "kv/data/a"))) as |w1|}}{{goOut (goCall "toUpper" (goDot w1 "Data" "data" "k"))}}{{else}}{{/each}}"#
        );
        assert_eq!(hbs("{{ . }}"), "{{goOut null}}");
        assert_eq!(
            hbs("{{ 1 }} {{ 1.5 }} {{ 0x10 }}"),
            "{{goOut (goInt 1)}} {{goOut (goFloat \"1.5\")}} {{goOut (goInt 16)}}"
        );
        assert_eq!(
            hbs("{{ if and .a (not .b) }}x{{ end }}"),
            "{{#if (goTruth (goAnd (goDot null \"a\") (goNot (goDot null \"b\"))))}}x{{/if}}"
        );
        let strict = convert(
            "{{ .a }}",
            GoOptions {
                error_on_missing_key: true,
            },
        )
        .unwrap();
        assert_eq!(
            strict.handlebars,
            "{{goOut (goDot null \"a\" missingkey=\"error\")}}"
        );
    }

    #[test]
    fn variables_live_in_the_render_and_keep_gos_scopes() {
        assert_eq!(
            hbs("{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ $x = 3 }}{{ end }}{{ $x }}"),
            "{{goSet \"x1\" (goInt 1)}}{{#if (goTruth true)}}{{goSet \"x2\" (goInt 2)}}{{goSet \"x2\" (goInt 3)}}{{/if}}{{goOut (goGet \"x1\")}}"
        );
    }

    #[test]
    fn text_that_would_change_the_tags_is_written_through_a_tag() {
        assert_eq!(hbs("a{{ \"{{\" }}b"), "a{{goOut \"{{\"}}b");
        assert_eq!(hbs("a {{ \"x\" }}"), "a {{goOut \"x\"}}");
        assert_eq!(hbs("{{`{{`}}"), "{{goOut \"{{\"}}");
        assert_eq!(
            hbs("C:\\{{ 1 }}"),
            "C:{{goOut \"\\\\\"}}{{goOut (goInt 1)}}"
        );
        assert_eq!(
            hbs("a{{`}}`}}{{ \"{{x\" }}"),
            "a{{goOut \"}}\"}}{{goOut \"{{x\"}}"
        );
        // A block tag alone on its line keeps the line's whitespace.
        assert_eq!(
            hbs("  {{ if true }}\nx\n{{ end }}\n"),
            "  {{!}}{{#if (goTruth true)}}\nx\n{{!}}{{/if}}\n"
        );
    }

    #[test]
    fn deep_expressions_are_kept_in_variables_first() {
        let out = hbs(
            "{{ .a | toUpper | toLower | trimSpace | toUpper | toLower | trimSpace | toUpper }}",
        );
        assert!(out.contains("keep=true"), "{out}");
        assert!(out.split("}}").all(|tag| depth(tag) <= 7), "{out}");
    }

    #[test]
    fn named_templates_expand_and_recursion_is_refused() {
        assert_eq!(
            hbs("{{ define \"t\" }}[{{ . }}]{{ end }}{{ template \"t\" 1 }}"),
            "{{goSet \"a1\" (goInt 1) keep=true}}[{{goOut (goGet \"a1\")}}]"
        );
        let e = convert(
            "{{ define \"t\" }}{{ template \"t\" }}{{ end }}{{ template \"t\" }}",
            GoOptions::default(),
        )
        .unwrap_err();
        assert!(e.reason.contains("calls itself"), "{e}");
    }

    #[test]
    fn refusals_say_why_and_what_to_write() {
        let e = convert("{{ env \"HOME\" }}", GoOptions::default()).unwrap_err();
        assert!(e.reason.starts_with("refused for security"), "{e}");
        let e = convert("{{ timestamp }}", GoOptions::default()).unwrap_err();
        assert!(e.reason.contains("put the time in the secret"), "{e}");
        let e = convert("{{ $y }}", GoOptions::default()).unwrap_err();
        assert!(e.reason.contains("undefined variable"), "{e}");
    }
}
