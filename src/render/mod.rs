//! Rendering: turns a volume's handlebars templates and the Vault responses
//! they ask for into file contents.
//!
//! Templates call `(secret "<path>" [key=value …])`. The [`Renderer`] first
//! *collects* those calls (a lenient pass whose `secret` answers `null`), the
//! volume manager fetches all of them concurrently, and a *strict* pass then
//! renders with the real responses. A call hidden behind data only known
//! after a fetch shows up as [`Error::NeedsSecrets`] and is fetched in one
//! more round. Rendering is strict (a missing field is an error, never an
//! empty string) and never HTML-escapes: files hold the secret bytes exactly.

mod budget;
mod each;
mod helpers;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use handlebars::{Context, Handlebars, RenderContext, Renderable, Template};
use serde_json::Value;

use crate::secret::Secret;
use crate::storage::RelativePath;
pub use budget::{MAX_LOOP_ITERATIONS, MAX_RENDER_TIME};
use helpers::{SCOPE, Scope};

/// Largest template source accepted, per file.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// Most distinct `secret` calls one volume may make.
pub const MAX_SECRETS_PER_VOLUME: usize = 32;
/// Deepest nesting of blocks (`{{#if}}`, `{{#each}}`, …) accepted. The
/// template engine recurses per level; a bound keeps a hostile template
/// from overflowing the stack.
pub const MAX_BLOCK_DEPTH: usize = 32;
/// Most `{{…}}` tags in one template. The template parser's cost grows with
/// tags × length, so this bounds compile time (about 50 ms at the limits).
pub const MAX_TAGS_PER_TEMPLATE: usize = 1024;
/// Deepest nesting of subexpressions (`(helper (helper …))`) accepted.
pub const MAX_SUBEXPRESSION_DEPTH: usize = 8;
/// Largest output of one file, or of one helper call, while rendering.
/// Rendering stops as soon as it is exceeded, so a template cannot make the
/// driver build gigabytes (nested `toJson` doubles its input each level).
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

/// What went wrong turning templates into files. All of these are mistakes
/// in the pod spec's templates, except `NeedsSecrets`, which is a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The template source does not parse; the message carries the line and
    /// column.
    #[error("template for {file} does not parse: {message}")]
    Parse {
        /// The file the template renders into.
        file: RelativePath,
        /// The parser's message, with position.
        message: String,
    },
    /// The template is larger than [`MAX_TEMPLATE_BYTES`].
    #[error("template for {file} is {bytes} bytes; the limit is {MAX_TEMPLATE_BYTES}")]
    TooLarge {
        /// The file the template renders into.
        file: RelativePath,
        /// Its size.
        bytes: usize,
    },
    /// Rendering failed: a missing field (strict mode) or a helper called
    /// wrongly. The message names the template line.
    #[error("rendering {file} failed: {message}")]
    Render {
        /// The file being rendered.
        file: RelativePath,
        /// What went wrong, with position.
        message: String,
    },
    /// A `secret` call is malformed (bad path or arguments).
    #[error("invalid secret call: {0}")]
    InvalidRequest(String),
    /// The templates make more distinct `secret` calls than allowed.
    #[error(
        "the templates read {count} distinct secrets; at most {MAX_SECRETS_PER_VOLUME} are allowed per volume"
    )]
    TooManySecrets {
        /// How many were found.
        count: usize,
    },
    /// These secrets must be fetched before the render can finish.
    #[error("{} secret(s) must be fetched first", .0.len())]
    NeedsSecrets(Vec<SecretRequest>),
}

/// Rendered files: each template's path and its exact bytes.
pub type RenderedFiles = Vec<(RelativePath, Secret<Vec<u8>>)>;

/// One `secret` call: a Vault path, plus the arguments that make it a write
/// (PUT) rather than a read (GET). Equal requests are fetched once per render.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct SecretRequest {
    path: String,
    /// Canonical JSON of the arguments (keys sorted), or `None` for a read.
    body: Option<String>,
}

impl SecretRequest {
    /// Validates the path (relative, no `..`, URL-safe characters) and
    /// canonicalises the arguments.
    pub fn new(path: &str, args: &serde_json::Map<String, Value>) -> Result<Self, Error> {
        let path = path.trim_start_matches('/');
        let ok_char = |c: char| c.is_ascii_alphanumeric() || "-_.@=+:,~/".contains(c);
        if path.is_empty()
            || !path.chars().all(ok_char)
            || path
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err(Error::InvalidRequest(format!(
                "{path:?} is not a Vault path: use letters, digits and `-_.@=+:,~` separated by single `/`"
            )));
        }
        // serde_json's map is a BTreeMap here (no `preserve_order`), so the
        // serialisation is canonical.
        let body = if args.is_empty() {
            None
        } else {
            Some(serde_json::to_string(args).map_err(|e| Error::InvalidRequest(e.to_string()))?)
        };
        Ok(Self {
            path: path.to_owned(),
            body,
        })
    }

    /// The Vault path, without `/v1/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The JSON body for a write, or `None` for a read.
    pub fn body(&self) -> Option<&str> {
        self.body.as_deref()
    }
}

impl fmt::Debug for SecretRequest {
    // Arguments can carry sensitive input (e.g. transit plaintext): only the
    // path is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretRequest")
            .field("path", &self.path)
            .field("write", &self.body.is_some())
            .finish()
    }
}

/// A volume's templates, parsed once, with the `secret` calls they make.
/// Volumes with the same templates share one (see [`Renderer::compile`]).
#[derive(Debug)]
pub struct CompiledTemplates {
    files: Vec<(RelativePath, Template)>,
    requests: Vec<SecretRequest>,
}

impl CompiledTemplates {
    /// The files these templates produce.
    pub fn paths(&self) -> impl Iterator<Item = &RelativePath> {
        self.files.iter().map(|(p, _)| p)
    }

    /// The `secret` calls the templates make without any data, in
    /// first-seen order: what a publish fetches before the first render
    /// (calls that depend on fetched data show up as
    /// [`Error::NeedsSecrets`] while rendering).
    pub fn requests(&self) -> &[SecretRequest] {
        &self.requests
    }
}

/// Template sources, as a volume spec lists them: the cache key.
type Sources = Vec<(RelativePath, String)>;

/// Compiled templates by their sources. Entries are weak — templates live
/// as long as a volume uses them, and dead entries are swept as the map
/// grows — except the most recently compiled few, which are kept so a pod
/// replaced by an identical one (a rollout, a restarted job) does not pay
/// for the compile again.
#[derive(Default)]
struct TemplateCache {
    entries: HashMap<Sources, Weak<CompiledTemplates>>,
    /// Sweep dead entries when the map reaches this size.
    sweep_at: usize,
    /// Recently compiled templates kept alive, with their source sizes.
    recent: std::collections::VecDeque<(usize, Arc<CompiledTemplates>)>,
}

impl TemplateCache {
    const MIN_SWEEP: usize = 64;
    /// Most template sets kept alive without a volume using them.
    const RECENT_SETS: usize = 32;
    /// Most template source bytes kept alive without a volume using them.
    const RECENT_BYTES: usize = 256 * 1024;

    fn get(&self, sources: &[(RelativePath, String)]) -> Option<Arc<CompiledTemplates>> {
        self.entries.get(sources).and_then(Weak::upgrade)
    }

    fn insert(&mut self, sources: &[(RelativePath, String)], templates: &Arc<CompiledTemplates>) {
        if self.entries.len() >= self.sweep_at {
            self.entries.retain(|_, t| t.strong_count() > 0);
            self.sweep_at = (self.entries.len() * 2).max(Self::MIN_SWEEP);
        }
        self.entries
            .insert(sources.to_vec(), Arc::downgrade(templates));
        let bytes = sources
            .iter()
            .map(|(p, s)| p.as_str().len() + s.len())
            .sum();
        if bytes <= Self::RECENT_BYTES {
            self.recent.push_back((bytes, Arc::clone(templates)));
            let mut total: usize = self.recent.iter().map(|(b, _)| b).sum();
            while self.recent.len() > Self::RECENT_SETS || total > Self::RECENT_BYTES {
                let Some((evicted, _)) = self.recent.pop_front() else {
                    break;
                };
                total -= evicted;
            }
        }
    }
}

/// Renders templates. One per process: it holds the helper registries and
/// the cache of compiled templates.
pub struct Renderer {
    strict: Handlebars<'static>,
    lenient: Handlebars<'static>,
    cache: Mutex<TemplateCache>,
}

impl fmt::Debug for Renderer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Renderer")
    }
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

impl Renderer {
    /// Builds the helper registries.
    pub fn new() -> Self {
        let build = |strict: bool| {
            let mut registry = Handlebars::new();
            registry.set_strict_mode(strict);
            registry.register_escape_fn(handlebars::no_escape);
            registry.register_helper("secret", Box::new(helpers::SecretHelper));
            registry.register_helper("each", Box::new(each::BoundedEach));
            for (name, apply) in [
                ("base64Encode", helpers::base64_encode as helpers::UnaryFn),
                ("base64Decode", helpers::base64_decode),
                ("toJson", helpers::to_json),
                ("toJsonPretty", helpers::to_json_pretty),
            ] {
                registry.register_helper(name, Box::new(helpers::Unary { name, apply }));
            }
            registry
        };
        Self {
            strict: build(true),
            lenient: build(false),
            cache: Mutex::default(),
        }
    }

    /// Templates compiled earlier for the same sources, if a volume still
    /// uses them: the cheap path of [`Renderer::compile`], for callers that
    /// would otherwise move the compile off the async runtime.
    pub fn cached(&self, sources: &[(RelativePath, String)]) -> Option<Arc<CompiledTemplates>> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sources)
    }

    /// Parses every template and collects the `secret` calls they make, so
    /// syntax errors (with the line that is wrong), bad secret paths and too
    /// many secrets surface at publish, before a token is sent anywhere.
    /// Volumes with identical templates (the replicas of a deployment) get
    /// the same shared result.
    ///
    /// A cache miss costs up to tens of milliseconds for the largest
    /// templates accepted: call it off the async runtime.
    pub fn compile(
        &self,
        sources: &[(RelativePath, String)],
    ) -> Result<Arc<CompiledTemplates>, Error> {
        if let Some(templates) = self.cached(sources) {
            return Ok(templates);
        }
        let mut files = Vec::with_capacity(sources.len());
        for (file, source) in sources {
            if source.len() > MAX_TEMPLATE_BYTES {
                return Err(Error::TooLarge {
                    file: file.clone(),
                    bytes: source.len(),
                });
            }
            check_structure(source).map_err(|message| Error::Parse {
                file: file.clone(),
                message,
            })?;
            let template = Template::compile(source).map_err(|e| Error::Parse {
                file: file.clone(),
                message: match e.pos() {
                    Some((line, column)) => format!("line {line}, column {column}: {}", e.reason()),
                    None => e.reason().to_string(),
                },
            })?;
            files.push((file.clone(), template));
        }
        let requests = self.collect(&files)?;
        let templates = Arc::new(CompiledTemplates { files, requests });
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(sources, &templates);
        Ok(templates)
    }

    /// The `secret` calls the templates make, in first-seen order.
    fn collect(&self, files: &[(RelativePath, Template)]) -> Result<Vec<SecretRequest>, Error> {
        let _metered = budget::Metered::start(budget::Limits::FULL);
        SCOPE.with_borrow_mut(|s| *s = Some(Scope::Collect(Vec::new())));
        for (file, template) in files {
            // Errors in the lenient pass are expected (helpers fed `null`);
            // the strict pass reports the real ones.
            let _ = render_one(&self.lenient, template, file);
        }
        let Some(Scope::Collect(found)) = SCOPE.with_borrow_mut(Option::take) else {
            unreachable!("the collect scope was set above");
        };
        check_count(found.len())?;
        Ok(found)
    }

    /// Renders every file with the given responses. Returns
    /// [`Error::NeedsSecrets`] when a template asks for a secret not given.
    ///
    /// Runs under the render budget ([`MAX_LOOP_ITERATIONS`],
    /// [`MAX_RENDER_TIME`]); a hostile template can still spend up to the
    /// time limit, so call it off the async runtime (or try
    /// [`Renderer::render_inline`] first).
    pub fn render(
        &self,
        templates: &CompiledTemplates,
        responses: HashMap<SecretRequest, Value>,
    ) -> Result<RenderedFiles, Error> {
        self.render_within(templates, responses, budget::Limits::FULL)
            .0
    }

    /// Renders under a budget small enough for an async worker thread
    /// (a millisecond, a thousand loop iterations). Typical templates
    /// finish well within it, which saves the hand-off to the blocking
    /// pool; a render that runs out gives the responses back, to be
    /// rendered with [`Renderer::render`] off the runtime.
    pub fn render_inline(
        &self,
        templates: &CompiledTemplates,
        responses: HashMap<SecretRequest, Value>,
    ) -> InlineRender {
        match self.render_within(templates, responses, budget::Limits::INLINE) {
            (_, responses, true) => InlineRender::TooLong(responses),
            (result, _, false) => InlineRender::Done(result),
        }
    }

    /// Renders under `limits`. Also gives the responses back, and whether
    /// the limits ran out.
    fn render_within(
        &self,
        templates: &CompiledTemplates,
        responses: HashMap<SecretRequest, Value>,
        limits: budget::Limits,
    ) -> (
        Result<RenderedFiles, Error>,
        HashMap<SecretRequest, Value>,
        bool,
    ) {
        let fetched = responses.len();
        let metered = budget::Metered::start(limits);
        SCOPE.with_borrow_mut(|s| {
            *s = Some(Scope::Resolve {
                responses,
                missing: Vec::new(),
            });
        });
        let mut out = Vec::with_capacity(templates.files.len());
        let mut first_error = None;
        for (file, template) in &templates.files {
            match render_one(&self.strict, template, file) {
                Ok(text) => out.push((file.clone(), Secret::new(text.into_bytes()))),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let Some(Scope::Resolve {
            responses,
            mut missing,
        }) = SCOPE.with_borrow_mut(Option::take)
        else {
            unreachable!("the resolve scope was set above");
        };
        let exhausted = metered.exhausted();
        let result = if missing.is_empty() {
            match first_error {
                Some(e) => Err(e),
                None => Ok(out),
            }
        } else {
            missing.sort();
            missing.dedup();
            check_count(fetched + missing.len()).and(Err(Error::NeedsSecrets(missing)))
        };
        (result, responses, exhausted)
    }
}

/// The outcome of [`Renderer::render_inline`].
#[derive(Debug)]
pub enum InlineRender {
    /// The render finished within the inline budget (successfully or not).
    Done(Result<RenderedFiles, Error>),
    /// It ran out of the inline budget: render these responses with
    /// [`Renderer::render`] off the runtime.
    TooLong(HashMap<SecretRequest, Value>),
}

fn check_count(count: usize) -> Result<(), Error> {
    if count > MAX_SECRETS_PER_VOLUME {
        return Err(Error::TooManySecrets { count });
    }
    Ok(())
}

fn render_one(
    registry: &Handlebars<'static>,
    template: &Template,
    file: &RelativePath,
) -> Result<String, Error> {
    let context = Context::null();
    let mut rc = RenderContext::new(None);
    let mut out = CappedOutput(String::new());
    template
        .render(registry, &context, &mut rc, &mut out)
        .map_err(|e| Error::Render {
            file: file.clone(),
            message: describe(&e),
        })?;
    Ok(out.0)
}

/// Render output that refuses to grow past [`MAX_RENDERED_BYTES`].
struct CappedOutput(String);

impl handlebars::Output for CappedOutput {
    fn write(&mut self, segment: &str) -> std::io::Result<()> {
        if self.0.len() + segment.len() > MAX_RENDERED_BYTES {
            return Err(std::io::Error::other(format!(
                "the file would be larger than {MAX_RENDERED_BYTES} bytes"
            )));
        }
        self.0.push_str(segment);
        Ok(())
    }
}

/// Refuses what the template engine cannot handle safely before it parses:
/// partials and decorators (`{{> x}}`, `{{#*inline}}` can recurse without
/// end), blocks nested deeper than [`MAX_BLOCK_DEPTH`] and subexpressions
/// deeper than [`MAX_SUBEXPRESSION_DEPTH`]. Deliberately conservative: text
/// inside raw blocks counts too.
fn check_structure(source: &str) -> Result<(), String> {
    let mut depth = 0usize;
    let mut tags = 0usize;
    let mut rest = source;
    while let Some(open) = rest.find("{{") {
        tags += 1;
        if tags > MAX_TAGS_PER_TEMPLATE {
            return Err(format!(
                "more than {MAX_TAGS_PER_TEMPLATE} {{{{…}}}} tags in one template"
            ));
        }
        let tag = rest[open + 2..].trim_start_matches(['{', '~']).trim_start();
        if let Some(comment) = tag.strip_prefix("!--") {
            rest = comment.find("--}}").map_or("", |end| &comment[end + 4..]);
            continue;
        }
        let end = tag.find("}}").unwrap_or(tag.len());
        let inner = &tag[..end];
        rest = &tag[end..];
        let after_hash = inner.strip_prefix('#').map(str::trim_start);
        if inner.starts_with(['>', '*']) || after_hash.is_some_and(|t| t.starts_with(['>', '*'])) {
            return Err("partials and decorators ({{> …}}, {{#* …}}) are not supported".to_owned());
        }
        if after_hash.is_some() || (inner.starts_with('^') && inner.len() > 1) {
            depth += 1;
            if depth > MAX_BLOCK_DEPTH {
                return Err(format!(
                    "blocks are nested more than {MAX_BLOCK_DEPTH} deep"
                ));
            }
        } else if inner.starts_with('/') {
            depth = depth.saturating_sub(1);
        }
        let (mut parens, mut deepest) = (0usize, 0usize);
        for c in inner.chars() {
            match c {
                '(' => {
                    parens += 1;
                    deepest = deepest.max(parens);
                }
                ')' => parens = parens.saturating_sub(1),
                _ => {}
            }
        }
        if deepest > MAX_SUBEXPRESSION_DEPTH {
            return Err(format!(
                "subexpressions are nested more than {MAX_SUBEXPRESSION_DEPTH} deep"
            ));
        }
    }
    Ok(())
}

fn describe(e: &handlebars::RenderError) -> String {
    let reason = e.reason().to_string();
    match (e.line_no, e.column_no) {
        (Some(line), Some(col)) => format!("line {line}, column {col}: {reason}"),
        _ => reason,
    }
}

#[cfg(test)]
mod tests;
