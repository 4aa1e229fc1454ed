//! Compiling a volume's templates: refused by their shape before anything
//! is parsed, parsed, and run once without data to collect the `secret`
//! calls they make, so a bad template fails at publish before a token is
//! sent anywhere.

use std::sync::{Arc, PoisonError};

use handlebars::{Context, RenderContext, Renderable, Template};

use super::error::excerpt;
use super::helpers::{SCOPE, Scope};
use super::output::DiscardedOutput;
use super::{
    Error, MAX_COMPILE_TIME, MAX_SECRETS_PER_VOLUME, MAX_TAGS_PER_TEMPLATE, MAX_TEMPLATE_BYTES,
    MAX_TEMPLATE_UNITS, MAX_VOLUME_UNITS, Renderer, budget, cache, cost, guard, scan, tree,
};
use crate::storage::RelativePath;
use crate::vault::SecretRequest;

/// A volume's templates, parsed once, with the `secret` calls they make.
/// Volumes with the same templates share one (see [`Renderer::compile`]).
#[derive(Debug)]
pub struct CompiledTemplates {
    pub(super) files: Vec<(RelativePath, Template)>,
    requests: Vec<SecretRequest>,
    held: u64,
}

impl CompiledTemplates {
    /// The files these templates produce.
    pub fn paths(&self) -> impl Iterator<Item = &RelativePath> {
        self.files.iter().map(|(p, _)| p)
    }

    /// The `secret` calls the templates make without any data, in
    /// first-seen order: what a publish fetches before the first render
    /// (calls that depend on fetched data show up as
    /// [`Rendered::NeedsSecrets`]).
    pub fn requests(&self) -> &[SecretRequest] {
        &self.requests
    }

    /// Bytes this set holds while a volume uses it: its parsed templates
    /// (counted on their trees, every allocation as the C allocator
    /// rounds it) and its `secret` calls. What a volume charges its memory
    /// budget for its templates; never more than [`compile_reservation`]
    /// of the same sources.
    pub fn held_bytes(&self) -> u64 {
        self.held
    }
}

impl Renderer {
    /// Parses every template and collects the `secret` calls they make, so
    /// syntax errors (with the line that is wrong), unsupported constructs,
    /// bad secret paths and too many secrets surface at publish, before a
    /// token is sent anywhere. Volumes with identical templates (the
    /// replicas of a deployment) get the same shared result.
    ///
    /// Templates too large or too dense to parse within their memory bounds
    /// ([`MAX_TEMPLATE_BYTES`], [`MAX_TAGS_PER_TEMPLATE`],
    /// [`MAX_TEMPLATE_UNITS`], [`MAX_VOLUME_UNITS`]) are refused before
    /// anything is parsed. What the compile holds at its peak is at most
    /// [`compile_reservation`] of the sources; the result holds
    /// [`CompiledTemplates::held_bytes`].
    ///
    /// A cache miss costs up to hundreds of milliseconds for the largest
    /// templates accepted, and runs on the calling thread: the driver uses
    /// [`Renderer::compile_off_thread`].
    pub fn compile(
        &self,
        sources: &[(RelativePath, String)],
    ) -> Result<Arc<CompiledTemplates>, Error> {
        let key = cache::key(sources);
        if let Some(templates) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(templates);
        }
        let shapes = check_shapes(sources)?;
        let deadline = tokio::time::Instant::now() + MAX_COMPILE_TIME;
        let mut files = Vec::with_capacity(sources.len());
        for (file, source) in sources {
            // Parsing is not interruptible: stop between templates once the
            // caller has stopped waiting.
            if tokio::time::Instant::now() > deadline || budget::abandoned() {
                return Err(Error::TimedOut {
                    what: "compiling the templates",
                    limit: MAX_COMPILE_TIME,
                });
            }
            files.push((file.clone(), parse(file, source)?));
        }
        let source_bytes = shapes.iter().map(|s| s.bytes).sum();
        let requests = self.collect(&files, source_bytes)?;
        let request_bytes = requests
            .iter()
            .map(|r| (r.path().len() + r.body().map_or(0, str::len) + 64) as u64)
            .sum();
        let tree_bytes = files.iter().map(|(_, t)| tree::held_bytes(t)).sum();
        let held = cost::set_held(tree_bytes, request_bytes);
        let templates = Arc::new(CompiledTemplates {
            files,
            requests,
            held,
        });
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, &templates);
        Ok(templates)
    }

    /// The `secret` calls the templates make, in first-seen order. The
    /// pass's output is discarded as it is written, and what it may derive
    /// is bounded by the sources' size (`cost::collect_held`).
    fn collect(
        &self,
        files: &[(RelativePath, Template)],
        source_bytes: u64,
    ) -> Result<Vec<SecretRequest>, Error> {
        let _metered = budget::Metered::start(budget::Limits {
            held: cost::collect_held(source_bytes),
            ..budget::Limits::FULL
        });
        SCOPE.with_borrow_mut(|s| *s = Some(Scope::Collect(Vec::new())));
        let context = Context::null();
        for (_, template) in files {
            // Errors in the lenient pass are expected (helpers fed `null`);
            // the strict pass reports the real ones.
            let mut rc = RenderContext::new(None);
            let _ = template.render(&self.lenient, &context, &mut rc, &mut DiscardedOutput(0));
        }
        let Some(Scope::Collect(found)) = SCOPE.with_borrow_mut(Option::take) else {
            unreachable!("the collect scope was set above");
        };
        check_count(found.len())?;
        Ok(found)
    }
}

/// Scans every source and refuses, before anything is parsed, what is too
/// large or too dense: the checks [`cost::refused_before_parsing`] makes, with
/// the error naming the file and the limit.
fn check_shapes(sources: &[(RelativePath, String)]) -> Result<Vec<scan::Shape>, Error> {
    let mut shapes = Vec::with_capacity(sources.len());
    let mut total = 0;
    for (file, source) in sources {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(Error::TooLarge {
                file: file.clone(),
                bytes: source.len(),
            });
        }
        count_tags(source).map_err(|message| Error::Parse {
            file: file.clone(),
            message,
        })?;
        let shape = scan::shape(source);
        if shape.units > MAX_TEMPLATE_UNITS {
            return Err(Error::TooComplex {
                file: Some(file.clone()),
                units: shape.units,
                limit: MAX_TEMPLATE_UNITS,
            });
        }
        total += shape.units;
        if total > MAX_VOLUME_UNITS {
            return Err(Error::TooComplex {
                file: None,
                units: total,
                limit: MAX_VOLUME_UNITS,
            });
        }
        shapes.push(shape);
    }
    Ok(shapes)
}

/// Parses one template: the nesting guard, the engine's parse, and the
/// checks on its tree.
fn parse(file: &RelativePath, source: &str) -> Result<Template, Error> {
    let refuse = |message| Error::Parse {
        file: file.clone(),
        message: excerpt(message),
    };
    guard::check_nesting(source).map_err(refuse)?;
    let template = Template::compile(source).map_err(|e| {
        // The engine gives no position for a parameter it cannot read:
        // it is where its text first appears.
        let position = e.pos().or_else(|| match e.reason() {
            handlebars::TemplateErrorReason::InvalidParam(param) => source
                .find(param.as_str())
                .map(|at| line_and_column(source, at)),
            _ => None,
        });
        refuse(match position {
            Some((line, column)) => format!("line {line}, column {column}: {}", e.reason()),
            None => e.reason().to_string(),
        })
    })?;
    tree::check(&template).map_err(refuse)?;
    Ok(template)
}

/// The line and column (both from 1, the column in characters) of byte
/// `at` of `source`.
fn line_and_column(source: &str, at: usize) -> (usize, usize) {
    let before = &source[..at];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

pub(super) fn check_count(count: usize) -> Result<(), Error> {
    if count > MAX_SECRETS_PER_VOLUME {
        return Err(Error::TooManySecrets { count });
    }
    Ok(())
}

/// Refuses, before parsing, a template with more than
/// [`MAX_TAGS_PER_TEMPLATE`] tags: the parser's cost grows with tags ×
/// length. Every tag starts with `{{`, so counting every `{{` (in text,
/// comments and raw blocks too) over-counts and can never be fooled by
/// spelling. Subexpression nesting is checked next ([`guard`]), because
/// the engine's conversion of a parse recurses per level; everything else
/// is checked on the parsed template ([`tree::check`]).
fn count_tags(source: &str) -> Result<(), String> {
    let tags = source.matches("{{").count();
    if tags > MAX_TAGS_PER_TEMPLATE {
        return Err(format!(
            "{tags} {{{{…}}}} tags in one template; at most {MAX_TAGS_PER_TEMPLATE} are allowed"
        ));
    }
    Ok(())
}
