//! Functions that change a map in place (Sprig's `set`, `unset`, `merge`,
//! `mergeOverwrite`, consul-template's `mergeMap` …). Go's maps are
//! references: the change shows wherever the map is held. The driver's
//! values are copies, so a call converts only where no other value can
//! hold the map it changes:
//!
//! - a map the call's own argument makes (`set (dict) "k" 1`);
//! - a variable (`$m := dict`, then `set $m "k" 1`), written back after
//!   the call, when every value the variable is ever given is a new map
//!   and it is never handed where it would be kept (another variable,
//!   `with`, `range`, a named template, a list or map built around it).
//!
//! consul-template's `scratch.MapSet` changes a map the scratch holds in
//! place: it converts unless a value `scratch.Get` handed on, or one
//! given to `scratch.Set`, under the same key, may be that map.
//!
//! Changing the secret's data in place is refused: consul-template
//! shares one copy of each secret between all of the agent's templates
//! and its later renders, so what other files see would depend on the
//! order they render in.

use std::collections::BTreeSet;

use super::parser::{Expr, Node};

/// The functions that change their first argument in place.
pub(super) const MUTATING: &[&str] = &[
    "sprig_set",
    "sprig_unset",
    "sprig_merge",
    "sprig_mustMerge",
    "sprig_mergeOverwrite",
    "sprig_mustMergeOverwrite",
    "mergeMap",
    "mergeMapWithOverride",
];

/// The functions whose result is a map of their own, holding no map an
/// argument held at its top.
const FRESH: &[&str] = &[
    "sprig_dict",
    "sprig_deepCopy",
    "sprig_mustDeepCopy",
    "sprig_fromJson",
    "sprig_mustFromJson",
    "parseJSON",
    "parseYAML",
];

/// The functions whose result holds none of their arguments: passing a
/// variable to them keeps no reference to it.
const READ_ONLY: &[&str] = &[
    "toJSON",
    "toJSONPretty",
    "toUnescapedJSON",
    "toUnescapedJSONPretty",
    "toYAML",
    "toTOML",
    "sprig_toJson",
    "sprig_toPrettyJson",
    "sprig_toRawJson",
    "sprig_mustToJson",
    "sprig_mustToPrettyJson",
    "sprig_mustToRawJson",
    "print",
    "printf",
    "println",
    "len",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "not",
    "sprig_hasKey",
    "sprig_keys",
    "sprig_empty",
    "sprig_kindOf",
    "sprig_typeOf",
    "sprig_kindIs",
    "sprig_typeIs",
    "sprig_typeIsLike",
    "sprig_deepEqual",
    "sprig_toString",
    "sprig_cat",
    "sprig_quote",
    "sprig_squote",
    "sprig_deepCopy",
    "sprig_mustDeepCopy",
    "html",
    "js",
    "urlquery",
];

/// Whether a call makes a map of its own.
pub(super) fn is_fresh(expr: &Expr) -> bool {
    matches!(expr, Expr::Call(name, _) if FRESH.contains(&name.as_str()))
}

/// What a template shares: the maps a call that changes one in place may
/// not change.
#[derive(Debug, Default)]
pub(super) struct Sharing {
    /// Variables given anything but a new map, or handed where another
    /// value would keep them.
    pub(super) variables: BTreeSet<String>,
    /// Keys of the scratch whose value may be held elsewhere too:
    /// `scratch.Get` kept, or `scratch.Set` given a value that is not new.
    pub(super) scratch_keys: BTreeSet<String>,
    /// Such a key was not a constant: any key may be shared.
    pub(super) scratch_any: bool,
}

/// What the template shares ([`Sharing`]).
pub(super) fn sharing(nodes: &[Node], defines: &[(String, Vec<Node>)]) -> Sharing {
    let lists = || std::iter::once(nodes).chain(defines.iter().map(|(_, body)| body.as_slice()));
    let mut read = BTreeSet::new();
    for list in lists() {
        each_expr(list, &mut |e| reads(e, &mut read));
    }
    let mut shared = Sharing::default();
    for list in lists() {
        walk(list, &read, &mut shared);
    }
    shared
}

/// Calls `f` on every expression of the nodes, blocks included.
fn each_expr(nodes: &[Node], f: &mut impl FnMut(&Expr)) {
    for node in nodes {
        match node {
            Node::Text(_) | Node::Jump { .. } => {}
            Node::Print(expr, _) | Node::Set { expr, .. } => f(expr),
            Node::Template { arg, .. } => {
                if let Some(arg) = arg {
                    f(arg);
                }
            }
            Node::If {
                branches,
                otherwise,
            } => {
                for (cond, _, body) in branches {
                    f(cond);
                    each_expr(body, f);
                }
                if let Some(body) = otherwise {
                    each_expr(body, f);
                }
            }
            Node::With {
                head,
                body,
                otherwise,
                ..
            }
            | Node::Range {
                head,
                body,
                otherwise,
                ..
            } => {
                f(head);
                each_expr(body, f);
                if let Some(body) = otherwise {
                    each_expr(body, f);
                }
            }
        }
    }
}

/// The variables an expression reads.
fn reads(expr: &Expr, read: &mut BTreeSet<String>) {
    match expr {
        Expr::Var(name) => {
            read.insert(name.clone());
        }
        Expr::Field(base, _) => reads(base, read),
        Expr::Call(_, args) => {
            for (arg, _) in args {
                reads(arg, read);
            }
        }
        _ => {}
    }
}

fn walk(nodes: &[Node], read: &BTreeSet<String>, shared: &mut Sharing) {
    for node in nodes {
        match node {
            Node::Text(_) | Node::Jump { .. } => {}
            Node::Print(expr, _) => uses(expr, false, shared),
            Node::Set { var, expr, .. } => {
                let mutating_call =
                    matches!(expr, Expr::Call(name, _) if MUTATING.contains(&name.as_str()));
                if !is_fresh(expr) && !mutating_call {
                    shared.variables.insert(var.clone());
                }
                // A mutating call's result is its first argument: another
                // variable read later would hold the same map.
                if let Expr::Call(name, args) = expr
                    && MUTATING.contains(&name.as_str())
                    && let Some((Expr::Var(first), _)) = args.first()
                    && first != var
                    && read.contains(var)
                {
                    shared.variables.insert(first.clone());
                    shared.variables.insert(var.clone());
                }
                uses(expr, true, shared);
            }
            Node::Template { arg, .. } => {
                if let Some(arg) = arg {
                    uses(arg, true, shared);
                }
            }
            Node::If {
                branches,
                otherwise,
            } => {
                for (cond, _, body) in branches {
                    uses(cond, false, shared);
                    walk(body, read, shared);
                }
                if let Some(body) = otherwise {
                    walk(body, read, shared);
                }
            }
            Node::With {
                head,
                body,
                otherwise,
                ..
            }
            | Node::Range {
                head,
                body,
                otherwise,
                ..
            } => {
                uses(head, true, shared);
                walk(body, read, shared);
                if let Some(body) = otherwise {
                    walk(body, read, shared);
                }
            }
        }
    }
}

/// Marks the variables an expression hands on where they would be kept
/// (`kept`: the expression's value itself is kept).
fn uses(expr: &Expr, kept: bool, shared: &mut Sharing) {
    match expr {
        Expr::Var(_) | Expr::Field(_, _) => {
            if kept && let Some(name) = root(expr) {
                shared.variables.insert(name.to_owned());
            }
            if let Expr::Field(base, _) = expr {
                uses(base, false, shared);
            }
        }
        // Methods read their receiver and arguments and make new values.
        Expr::Method(receiver, _, args) => {
            uses(receiver, false, shared);
            for (arg, _) in args {
                uses(arg, false, shared);
            }
        }
        Expr::Call(name, args) => {
            let risky = match (name.as_str(), args.as_slice()) {
                ("scratch.Get", [key]) if kept => Some(key),
                ("scratch.Set" | "scratch.SetX", [key, (value, _)]) => (!is_fresh(value)
                    && !matches!(
                        value,
                        Expr::Str(_) | Expr::Num(_) | Expr::Bool(_) | Expr::Nil
                    ))
                .then_some(key),
                _ => None,
            };
            match risky {
                Some((Expr::Str(key), _)) => {
                    shared.scratch_keys.insert(key.clone());
                }
                Some(_) => shared.scratch_any = true,
                None => {}
            }
            let read_only = READ_ONLY.contains(&name.as_str());
            let mutating = MUTATING.contains(&name.as_str());
            for (i, (arg, _)) in args.iter().enumerate() {
                // A mutating call's own target is written back, not kept.
                let target = mutating && i == 0 && matches!(arg, Expr::Var(_));
                uses(arg, !read_only && !target, shared);
            }
        }
        _ => {}
    }
}

/// The variable a field chain starts from.
fn root(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Var(name) => Some(name),
        Expr::Field(base, _) => root(base),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::gotemplate::{GoOptions, convert};

    fn converts(t: &str) -> bool {
        convert(t, GoOptions::default()).is_ok()
    }

    #[test]
    fn a_map_only_one_variable_holds_is_written_back() {
        let out = convert(
            r#"{{ $m := sprig_dict }}{{ $_ := sprig_set $m "k" 1 }}{{ $m }}"#,
            GoOptions::default(),
        )
        .unwrap()
        .handlebars;
        assert!(out.contains(r#"mutates="x1""#), "{out}");
        assert!(converts(r#"{{ $m := dict }}{{ $m = sprig_set $m "k" 1 }}"#.replace("dict", "sprig_dict").as_str()));
        assert!(converts(
            r#"{{ sprig_merge (sprig_dict "a" 1) (sprig_dict "b" 2) }}"#
        ));
        assert!(converts(
            "{{ $m := sprig_deepCopy . }}{{ range $k, $v := . }}{{ $_ := sprig_set $m $k $v }}{{ end }}"
        ));
    }

    #[test]
    fn a_map_another_value_holds_is_refused() {
        // The secret's data, a variable holding it, a field of a map.
        assert!(!converts(r#"{{ $_ := sprig_set . "k" 1 }}"#));
        assert!(!converts(r#"{{ $_ := sprig_set .Data.data "k" 1 }}"#));
        assert!(!converts(
            r#"{{ $m := .Data }}{{ $_ := sprig_set $m "k" 1 }}"#
        ));
        assert!(!converts(
            r#"{{ $m := sprig_dict }}{{ $_ := sprig_unset (sprig_get $m "a") "k" }}"#
        ));
        // A second variable, a list, `with` or another map holding it.
        assert!(!converts(
            r#"{{ $m := sprig_dict }}{{ $n := $m }}{{ $_ := sprig_set $m "k" 1 }}{{ $n }}"#
        ));
        assert!(!converts(
            r#"{{ $m := sprig_dict }}{{ $l := sprig_list $m }}{{ $_ := sprig_set $m "k" 1 }}{{ $l }}"#
        ));
        assert!(!converts(
            r#"{{ $m := sprig_dict }}{{ with $m }}{{ $_ := sprig_set $m "k" 1 }}{{ .k }}{{ end }}"#
        ));
        assert!(!converts(
            r#"{{ $m := sprig_dict }}{{ $o := sprig_dict "in" $m }}{{ $_ := sprig_set $m "k" 1 }}"#
        ));
        // The result of a change held by another variable that is read.
        assert!(!converts(
            r#"{{ $m := sprig_dict }}{{ $n := sprig_set $m "a" 1 }}{{ $_ := sprig_set $m "b" 2 }}{{ $n }}"#
        ));
        // Reading a map never shares it.
        assert!(converts(
            r#"{{ $m := sprig_dict }}{{ toJSON $m }}{{ len $m }}{{ $_ := sprig_set $m "k" 1 }}"#
        ));
    }

    #[test]
    fn the_scratchs_maps_change_in_place_only_where_nothing_else_holds_them() {
        assert!(converts(
            r#"{{ scratch.MapSet "k" "a" .x }}{{ toJSON (scratch.Get "k") }}{{ scratch.Set "o" .y }}"#
        ));
        assert!(!converts(
            r#"{{ scratch.Set "k" .Data }}{{ scratch.MapSet "k" "a" 1 }}"#
        ));
        assert!(!converts(
            r#"{{ $m := scratch.Get "k" }}{{ scratch.MapSet "k" "a" 1 }}{{ $m }}"#
        ));
        assert!(!converts(
            r#"{{ scratch.Set .k .v }}{{ scratch.MapSet "k" "a" 1 }}"#
        ));
        assert!(!converts("{{ scratch }}"));
        assert!(!converts(r#"{{ scratch.Nope "k" }}"#));
    }
}
