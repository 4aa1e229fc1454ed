//! consul-template (Go `text/template`) to the driver's handlebars, exactly
//! or not at all: [`lexer`] (text and actions, trim markers applied),
//! [`parser`] (the tree: pipelines, `if`, `with`, `range`, variables,
//! named templates), [`generator`] (the handlebars of the structure) with
//! `expressions` (values, function calls, methods, scratch), [`calls`]
//! (`secret`, `secrets` and `pkiCert`), [`funcs`] (every function and what
//! becomes of it).
//!
//! Every Go value goes through the driver's Go-model helpers
//! (`render/go/`), which hold Go's types (Vault's
//! `json.Number`s, `int`s, `float64`s, `[]string`, consul-template's
//! structs, strings of any bytes) and do what text/template and
//! consul-template do with them: printing, `printf`, truth, comparisons,
//! fields and missing keys in both modes, every converted function. The
//! structure becomes handlebars blocks; Go's whitespace trimming is applied
//! here, handlebars' standalone-line stripping is defeated by `{{!}}`.
//! Whatever has no exact equivalent is refused with the template's line
//! and column, the construct, why, and what to write instead.

pub mod calls;
mod expressions;
pub mod funcs;
pub mod generator;
pub mod lexer;
mod mutation;
pub mod parser;

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
    /// `secret`, `secrets` and `pkiCert` paths used, for the summary.
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
    /// A `secrets` call: a LIST of the keys under the path.
    pub list: bool,
}

/// A 1-based (line, column) in the template.
pub type Pos = (usize, usize);

pub(crate) fn refuse<T>(
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

/// Converts one consul-template template to the driver's handlebars.
pub fn convert(source: &str, options: GoOptions) -> Result<Converted, Refusal> {
    let pieces = lexer::lex(source)?;
    let mut parser = parser::Parser {
        pieces: pieces.into_iter(),
        defines: Vec::new(),
    };
    let (nodes, end) = parser.list()?;
    match end {
        parser::End::Eof => {}
        parser::End::Close(p) => {
            return refuse(
                p,
                "{{end}}",
                "unexpected {{end}} (Go refuses the template too)",
            );
        }
        parser::End::Else(p) | parser::End::ElseIf(_, p) | parser::End::ElseWith(_, _, p) => {
            return refuse(
                p,
                "{{else}}",
                "{{else}} outside a block (Go refuses the template too)",
            );
        }
    }
    let shared = mutation::sharing(&nodes, &parser.defines);
    let mut generator = generator::Gen::new(options.error_on_missing_key, parser.defines);
    generator.shared = shared;
    generator.nodes(&nodes, &mut generator::Scope::top())?;
    generator.guard_standalone_lines();
    Ok(Converted {
        handlebars: generator.out,
        secret_paths: generator.secret_paths,
        pki_requests: generator.pki_requests,
        write_requests: generator.write_requests,
        requests: generator.requests,
    })
}
