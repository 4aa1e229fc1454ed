//! `secret`, `secrets` and `pkiCert` calls: their arguments as
//! consul-template reads them, and the driver's `secret` (or `secrets`)
//! call for them.

use std::fmt::Write as _;

use super::generator::{Gen, Scope};
use super::parser::Expr;
use super::{Pos, Refusal, SecretCall, refuse};

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
                _ if what == "pkiCert" => {
                    return refuse(
                        *p,
                        "pkiCert argument",
                        "a computed pkiCert argument: the agent issues a certificate per call and file, the driver one per distinct request in a volume, and which calls would share one cannot be told before rendering; write the path and `key=value` arguments as literals",
                    );
                }
                _ => {
                    return refuse(
                        *p,
                        format!("{what} argument"),
                        format!("`{what}` arguments here must be string literals"),
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
    /// A path computed while rendering (`secret (printf "secret/data/%s"
    /// .)`), trimmed of spaces and `/` as consul-template trims it. The
    /// driver fetches it when the render asks for it, logged in as the pod,
    /// like any other; it never echoes such a path in its messages.
    fn computed_path(&mut self, path: &Expr, pos: Pos, scope: &Scope) -> Result<String, Refusal> {
        let value = self.expr(path, pos, scope)?;
        let spaces = self.call("goCall", vec![hbs_string("trimSpace"), value], pos)?;
        self.call(
            "goCall",
            vec![hbs_string("trim"), hbs_string("/"), spaces],
            pos,
        )
    }

    /// `(secret "path" k="v" …)`, checked as the driver checks it at
    /// publish.
    fn request_call(&mut self, request: &Request, pos: Pos, what: &str) -> String {
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
            list: false,
        });
        call
    }

    /// `(secrets "path")`: consul-template's `secrets` lists the keys under
    /// the path (one string argument, trimmed of spaces and `/`). `""` is
    /// no list at all: the agent gives an empty one without asking Vault.
    pub(super) fn secrets_call(
        &mut self,
        args: &[(Expr, Pos)],
        pos: Pos,
        scope: &Scope,
    ) -> Result<String, Refusal> {
        let path = match args {
            [(Expr::Str(path), _)] if path.is_empty() => return Ok("null".to_owned()),
            [(Expr::Str(path), _)] => path.trim().trim_matches('/').to_owned(),
            [(path, p)] => {
                let path = self.computed_path(path, *p, scope)?;
                return Ok(format!("(secrets {path})"));
            }
            _ => {
                return refuse(
                    pos,
                    "secrets",
                    format!(
                        "wrong number of args for secrets: want 1 got {} (Go refuses the template too)",
                        args.len()
                    ),
                );
            }
        };
        if path.is_empty() {
            return refuse(
                pos,
                "secrets",
                "a path of only spaces and `/`: the agent refuses it (vault.list: invalid format)",
            );
        }
        self.requests.push(SecretCall {
            line: pos.0,
            column: pos.1,
            construct: format!("secrets {path:?}"),
            path: path.clone(),
            args: serde_json::Map::new(),
            list: true,
        });
        self.secret_paths.push(path.clone());
        Ok(format!("(secrets {})", hbs_string(&path)))
    }

    pub(super) fn secret_call(
        &mut self,
        args: &[(Expr, Pos)],
        pos: Pos,
        scope: &Scope,
    ) -> Result<String, Refusal> {
        // A computed path or computed write data: the `key=value` strings
        // go to the driver's helper as they are, which reads them as
        // consul-template does when the render runs. Literal ones are
        // checked here as consul-template would read them.
        if let Some(((path, p), rest)) = args.split_first()
            && (!matches!(path, Expr::Str(_))
                || rest.iter().any(|(a, _)| !matches!(a, Expr::Str(_))))
        {
            let literals: Vec<&str> = rest
                .iter()
                .filter_map(|(a, _)| match a {
                    Expr::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect();
            if let Some(kv) = literals
                .iter()
                .find(|kv| !kv.is_empty() && !kv.contains('='))
            {
                return refuse(
                    pos,
                    format!("secret argument {kv:?}"),
                    "write arguments must be `key=value`",
                );
            }
            if !rest.is_empty()
                && literals.len() == rest.len()
                && literals.iter().all(|kv| kv.is_empty())
            {
                return refuse(
                    pos,
                    "secret",
                    "every argument is empty: the agent writes to the path with no data, the driver would read it",
                );
            }
            let path = match path {
                Expr::Str(literal) => hbs_string(literal.trim().trim_matches('/')),
                computed => self.computed_path(computed, *p, scope)?,
            };
            let mut call = format!("(secret {path}");
            for (arg, ap) in rest {
                let value = match arg {
                    Expr::Str(literal) => hbs_string(literal),
                    computed => self.expr(computed, *ap, scope)?,
                };
                call.push(' ');
                call.push_str(&value);
            }
            call.push(')');
            return Ok(call);
        }
        let request = Request::parse(args, pos, "secret")?;
        if request.write && request.args.is_empty() {
            return refuse(
                pos,
                "secret",
                "every argument is empty: the agent writes to the path with no data, the driver would read it",
            );
        }
        let call = self.request_call(&request, pos, "secret");
        self.secret_paths.push(request.path.clone());
        if request.write {
            self.write_requests
                .push((request.path.clone(), request.canonical()));
        }
        Ok(call)
    }

    /// `(pkiCert (secret "path" k="v" …))`: the write that issues the
    /// certificate, and the helper that reads it as consul-template does.
    pub(super) fn pki_call(&mut self, args: &[(Expr, Pos)], pos: Pos) -> Result<String, Refusal> {
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
        let call = self.request_call(&request, pos, "pkiCert");
        self.secret_paths.push(request.path.clone());
        self.pki_requests.push((request.path, canonical));
        Ok(format!("(pkiCert {call})"))
    }
}

#[cfg(test)]
mod tests {
    use crate::gotemplate::{GoOptions, convert};

    /// `secrets` is a list of the path as consul-template trims it; `""`
    /// lists nothing without a request; a path of only `/` is refused. A
    /// computed path is trimmed when rendered; computed write data goes to
    /// the helper as `key=value` strings; a computed pkiCert argument is
    /// refused.
    #[test]
    fn secrets_calls_become_lists() {
        let converted = convert(
            r#"{{ range secrets " /secret/myapp/ " }}{{ . }};{{ end }}[{{ secrets "" }}]"#,
            GoOptions::default(),
        )
        .unwrap();
        assert!(
            converted
                .handlebars
                .contains(r#"(goSecrets (secrets "secret/myapp"))"#),
            "{}",
            converted.handlebars
        );
        assert!(
            converted.handlebars.contains("(goSecrets null)"),
            "{}",
            converted.handlebars
        );
        let lists: Vec<(&str, bool)> = converted
            .requests
            .iter()
            .map(|r| (r.path.as_str(), r.list))
            .collect();
        assert_eq!(lists, [("secret/myapp", true)]);
        let written = convert(
            r#"{{ secret " /pki/issue/web" "ttl=1h" (printf "common_name=%s" "a") }}"#,
            GoOptions::default(),
        )
        .unwrap();
        assert!(
            written.handlebars.contains(
                r#"(secret "pki/issue/web" "ttl=1h" (goCall "printf" "common_name=%s" "a"))"#
            ),
            "{}",
            written.handlebars
        );
        let computed = convert(
            r#"{{ range secrets " secret/metadata/ " }}{{ with secret (printf "secret/data/%s" .) }}{{ .Data.data.k }}{{ end }}{{ end }}{{ secrets . }}"#,
            GoOptions::default(),
        )
        .unwrap();
        assert!(
            computed.handlebars.contains(r#"(secret (goCall "trim" "/" (goCall "trimSpace" (goCall "printf" "secret/data/%s" "#),
            "{}",
            computed.handlebars
        );
        assert!(
            computed
                .handlebars
                .contains(r#"(secrets (goCall "trim" "/" (goCall "trimSpace" "#),
            "{}",
            computed.handlebars
        );
        for refused in [
            r#"{{ secrets "/" }}"#,
            "{{ secrets }}",
            r#"{{ pkiCert . "common_name=a" }}"#,
        ] {
            assert!(convert(refused, GoOptions::default()).is_err(), "{refused}");
        }
    }
}
