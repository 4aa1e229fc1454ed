//! Expressions: a Go value as a handlebars parameter (fields, variables,
//! constants, pipelines), function calls with their refusals, methods,
//! consul-template's scratch and `executeTemplate`.

use std::fmt::Write as _;

use super::funcs::{self, Status};
use super::generator::{Gen, MAX_PARAMS, Scope, hbs_string};
use super::parser::Expr;
use super::{Pos, Refusal, refuse};

impl Gen {
    /// A value, as a handlebars parameter.
    pub(super) fn expr(&mut self, expr: &Expr, pos: Pos, scope: &Scope) -> Result<String, Refusal> {
        match expr {
            Expr::Dot => Ok(scope.dot.clone()),
            Expr::Var(name) => scope
                .vars
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, hbs)| hbs.clone())
                .map_or_else(
                    || {
                        refuse(
                            pos,
                            format!("${name}"),
                            "undefined variable (Go refuses the template too)",
                        )
                    },
                    Ok,
                ),
            Expr::Field(base, names) => {
                let mut value = self.expr(base, pos, scope)?;
                for chunk in names.chunks(MAX_PARAMS - 2) {
                    let mut args = vec![value];
                    args.extend(chunk.iter().map(|n| hbs_string(n)));
                    let mut call = self.call("goDot", args, pos)?;
                    if self.strict {
                        call.insert_str(call.len() - 1, " missingkey=\"error\"");
                    }
                    value = call;
                }
                Ok(value)
            }
            Expr::Str(s) => Ok(hbs_string(s)),
            Expr::Num(n) => number(n, pos),
            Expr::Bool(b) => Ok(b.to_string()),
            Expr::Nil => refuse(
                pos,
                "nil",
                "nil is not a command (Go refuses the template too)",
            ),
            Expr::Call(name, args) => self.function(name, args, pos, scope),
            // `(goCall "method.Name" receiver args…)`.
            Expr::Method(receiver, name, args) => {
                let mut values = vec![
                    hbs_string(&format!("method.{name}")),
                    self.expr(receiver, pos, scope)?,
                ];
                for (arg, p) in args {
                    values.push(self.expr(arg, *p, scope)?);
                }
                self.call("goCall", values, pos)
            }
        }
    }

    fn function(
        &mut self,
        name: &str,
        args: &[(Expr, Pos)],
        pos: Pos,
        scope: &Scope,
    ) -> Result<String, Refusal> {
        match name {
            "secret" => {
                let call = self.secret_call(args, pos, scope)?;
                return self.call("goSecret", vec![call], pos);
            }
            "pkiCert" => {
                let call = self.pki_call(args, pos)?;
                return self.call("goPki", vec![call], pos);
            }
            "secrets" => {
                let call = self.secrets_call(args, pos, scope)?;
                return self.call("goSecrets", vec![call], pos);
            }
            "executeTemplate" => return self.execute_template(args, pos, scope),
            "scratch" => {
                return refuse(
                    pos,
                    "function `scratch`",
                    "the scratch itself is converted only through its methods: call them directly (`scratch.Set \"k\" v`, `scratch.Get \"k\"`)",
                );
            }
            _ => {}
        }
        if let Some(method) = name.strip_prefix("scratch.") {
            return self.scratch_call(method, args, pos, scope);
        }
        match funcs::status(name) {
            Some(Status::Converted) => {}
            Some(Status::Security(reason)) => {
                return refuse(
                    pos,
                    format!("function `{name}`"),
                    format!("refused for security: {reason}"),
                );
            }
            Some(Status::Semantic(reason)) => {
                return refuse(pos, format!("function `{name}`"), reason);
            }
            None => {
                return refuse(
                    pos,
                    format!("function `{name}`"),
                    "not a function of consul-template or text/template (the agent refuses the template too)",
                );
            }
        }
        let mut values = Vec::with_capacity(args.len());
        for (arg, p) in args {
            values.push(self.expr(arg, *p, scope)?);
        }
        match name {
            "and" => self.call("goAnd", values, pos),
            "or" => self.call("goOr", values, pos),
            "not" => self.call("goNot", values, pos),
            "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
                values.insert(0, hbs_string(name));
                self.call("goCmp", values, pos)
            }
            _ => {
                let target = if super::mutation::MUTATING.contains(&name) {
                    self.mutation_target(name, args, pos, scope)?
                } else {
                    None
                };
                values.insert(0, hbs_string(name));
                let call = self.call("goCall", values, pos)?;
                Ok(match target {
                    // The variable holds the changed map after the call.
                    Some(stored) => format!(
                        "{} mutates={})",
                        &call[..call.len() - 1],
                        hbs_string(&stored)
                    ),
                    None => call,
                })
            }
        }
    }

    /// `scratch.Method args…`: consul-template's scratch, one per render.
    fn scratch_call(
        &mut self,
        method: &str,
        args: &[(Expr, Pos)],
        pos: Pos,
        scope: &Scope,
    ) -> Result<String, Refusal> {
        let construct = format!("scratch.{method}");
        if !matches!(
            method,
            "Key" | "Get" | "Set" | "SetX" | "MapSet" | "MapSetX" | "MapValues"
        ) {
            return refuse(
                pos,
                construct,
                "not a method of consul-template's scratch (Key, Get, Set, SetX, MapSet, MapSetX, MapValues): the agent refuses the template too",
            );
        }
        let shared_key = match args.first() {
            Some((Expr::Str(key), _)) => {
                self.shared.scratch_any || self.shared.scratch_keys.contains(key)
            }
            _ => self.shared.scratch_any || !self.shared.scratch_keys.is_empty(),
        };
        if method.starts_with("MapSet") && shared_key {
            return refuse(
                pos,
                construct,
                "changes a map of the scratch in place, and another value may hold that map too (a value scratch.Get handed to a variable or a list, or one scratch.Set was given): Go's maps are shared, the driver's values are copies; read it with scratch.Get only inside a function such as toJSON or printf, and give scratch.Set only new values",
            );
        }
        let mut values = vec![hbs_string(&construct)];
        for (arg, p) in args {
            values.push(self.expr(arg, *p, scope)?);
        }
        self.call("goCall", values, pos)
    }

    /// Where a call that changes its first argument in place writes the
    /// changed map back: nowhere for a new map, the variable for a
    /// variable only this call can change; refused otherwise.
    fn mutation_target(
        &self,
        name: &str,
        args: &[(Expr, Pos)],
        pos: Pos,
        scope: &Scope,
    ) -> Result<Option<String>, Refusal> {
        let construct = format!("function `{name}`");
        match args.first() {
            None => Ok(None),
            Some((first, _)) if super::mutation::is_fresh(first) => Ok(None),
            Some((Expr::Var(var), _)) => {
                let stored = scope
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == var)
                    .and_then(|(_, hbs)| hbs.strip_prefix("(goGet \""))
                    .map(|rest| rest.trim_end_matches("\")").to_owned());
                match stored {
                    Some(stored) if !self.shared.variables.contains(var) => Ok(Some(stored)),
                    _ => refuse(
                        pos,
                        construct,
                        format!(
                            "changes the map in `${var}` in place, and another value holds that map too (a variable, `with`, `range` or a list or map built from it): Go's maps are shared, the driver's values are copies; give `${var}` only new maps (`dict`, `deepCopy`) and change it only through this function"
                        ),
                    ),
                }
            }
            Some(_) => refuse(
                pos,
                construct,
                "changes the secret's data (or a value inside another) in place: consul-template shares one copy of each secret between all of the agent's templates and its later renders, so what other files see would depend on the order they render in; copy it first (`$m := deepCopy .Data.data`) and change the copy",
            ),
        }
    }
}

/// A Go number constant: an `int` or a `float64`.
fn number(text: &str, pos: Pos) -> Result<String, Refusal> {
    let clean = text.replace('_', "");
    let (negative, digits) = match clean.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
    };
    let lower = digits.to_ascii_lowercase();
    let int = if let Some(hex) = lower.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()
    } else if let Some(bin) = lower.strip_prefix("0b") {
        i64::from_str_radix(bin, 2).ok()
    } else if let Some(oct) = lower.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()
    } else if lower.len() > 1 && lower.starts_with('0') && lower.bytes().all(|b| b.is_ascii_digit())
    {
        i64::from_str_radix(&lower[1..], 8).ok()
    } else {
        lower.parse::<i64>().ok()
    };
    if let Some(n) = int {
        return Ok(format!("(goInt {})", if negative { -n } else { n }));
    }
    if !lower.starts_with("0x") && lower.parse::<f64>().is_ok() {
        let mut text = String::new();
        let _ = write!(text, "{}{}", if negative { "-" } else { "" }, digits);
        return Ok(format!("(goFloat {})", hbs_string(&text)));
    }
    refuse(
        pos,
        format!("number {text}"),
        "not a number Go reads (or too large for an int)",
    )
}
