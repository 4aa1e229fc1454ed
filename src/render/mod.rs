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
mod builtins;
mod each;
mod go_fmt;
pub mod go_json;
mod go_number;
mod go_regex;
mod go_runtime;
mod go_sprig;
mod go_strings;
mod go_template;
mod go_truth;
pub mod go_value;
mod guard;
mod helpers;
pub mod pki_cert;
mod pool;
mod tree;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use handlebars::{Context, Handlebars, RenderContext, Renderable, Template};
use serde_json::Value;

use crate::secret::Secret;
use crate::storage::RelativePath;
pub use budget::{MAX_LOOP_ITERATIONS, MAX_RENDER_TIME, MAX_RENDER_WORK};
pub use go_number::parse_response;
use helpers::{SCOPE, Scope};
pub use pool::{MAX_QUEUE_WAIT, RENDER_QUEUE, RENDER_THREADS};

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
/// Most parameters and hash values in one tag. The template engine
/// evaluates all of them before the helper runs.
pub const MAX_PARAMS_PER_TAG: usize = 8;
/// Most Vault data one render of a volume may see, all responses together,
/// in the units of [`MAX_RENDER_WORK`] (one per JSON value, one per 16
/// bytes of text): about 250,000 values, or 4 MiB of text. Parsed, that is
/// at most about 25 MiB; with [`pool::RENDER_THREADS`] renders at once it
/// stays inside the memory the driver reserves for itself.
pub const MAX_RENDER_DATA: u64 = 250_000;
/// Longest a compile (parse, checks and the pass that collects `secret`
/// calls) may keep its caller waiting.
pub const MAX_COMPILE_TIME: Duration = Duration::from_secs(5);
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
    InvalidRequest(#[from] crate::vault::InvalidRequest),
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
    /// The Vault responses a volume reads are larger, together, than
    /// [`MAX_RENDER_DATA`].
    #[error(
        "the secrets the templates read weigh more than {MAX_RENDER_DATA} units (one per JSON \
         value, one per 16 bytes of text); read smaller secrets or fewer of them"
    )]
    DataTooLarge,
    /// The render (or compile) did not finish within its time limit; the
    /// caller was answered at the deadline and the work stops on its own.
    #[error(
        "{what} took longer than {limit:?}; simplify the templates (fewer nested loops or \
         helper calls over large values)"
    )]
    TimedOut {
        /// `rendering` or `compiling the templates`.
        what: &'static str,
        /// The limit that was reached.
        limit: Duration,
    },
    /// Every render thread is busy and the queue is full, or the work
    /// waited longer than [`MAX_QUEUE_WAIT`] for a thread: the node is
    /// overloaded with renders. Retrying later helps.
    #[error(
        "the driver is busy rendering other volumes' templates ({RENDER_THREADS} threads, \
         {RENDER_QUEUE} queued); retry later"
    )]
    Busy,
}

/// Rendered files: each template's path and its exact bytes.
pub type RenderedFiles = Vec<(RelativePath, Secret<Vec<u8>>)>;

pub use crate::vault::{SecretRequest, withhold_for};

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

/// Renders templates. One per process: it holds the helper registries, the
/// cache of compiled templates and the render threads.
pub struct Renderer {
    strict: Handlebars<'static>,
    lenient: Handlebars<'static>,
    cache: Mutex<TemplateCache>,
    pool: pool::Pool,
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
    /// Builds the helper registries and starts the render threads.
    pub fn new() -> Self {
        let build = |strict: bool| {
            let mut registry = Handlebars::new();
            registry.set_strict_mode(strict);
            registry.register_escape_fn(handlebars::no_escape);
            builtins::register(&mut registry);
            registry.register_helper("secret", Box::new(helpers::SecretHelper));
            registry.register_helper("each", Box::new(each::BoundedEach));
            // For templates converted from consul-template (`convert`).
            go_value::register(&mut registry);
            go_runtime::register(&mut registry);
            registry.register_helper("pkiCert", Box::new(pki_cert::PkiCert));
            for (name, apply) in [
                ("base64Encode", helpers::base64_encode as helpers::UnaryFn),
                ("base64Decode", helpers::base64_decode),
                ("toJson", helpers::to_json),
                ("toJsonPretty", helpers::to_json_pretty),
                ("toGoJson", go_json::to_go_json),
                ("toGoJsonPretty", go_json::to_go_json_pretty),
            ] {
                registry.register_helper(name, Box::new(helpers::Unary { name, apply }));
            }
            registry
        };
        Self {
            strict: build(true),
            lenient: build(false),
            cache: Mutex::default(),
            pool: pool::Pool::new(),
        }
    }

    /// Templates compiled earlier for the same sources, if a volume still
    /// uses them: the cheap path of [`Renderer::compile`].
    pub fn cached(&self, sources: &[(RelativePath, String)]) -> Option<Arc<CompiledTemplates>> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sources)
    }

    /// [`Renderer::compile`] on the render threads (unless the templates
    /// are cached), answered within [`MAX_COMPILE_TIME`]: what the driver
    /// calls, so a compile never runs on the threads that answer kubelet.
    pub async fn compile_off_thread(
        self: &Arc<Self>,
        sources: &[(RelativePath, String)],
    ) -> Result<Arc<CompiledTemplates>, Error> {
        if let Some(templates) = self.cached(sources) {
            return Ok(templates);
        }
        let (renderer, sources) = (Arc::clone(self), sources.to_vec());
        self.pool
            .run("compiling the templates", MAX_COMPILE_TIME, move || {
                renderer.compile(&sources)
            })
            .await?
    }

    /// [`Renderer::render`] on the render threads, answered within
    /// [`MAX_RENDER_TIME`] (an [`Error::TimedOut`] at the deadline if the
    /// render is still running; it stops on its own soon after): what the
    /// driver calls, so a render never runs on the threads that answer
    /// kubelet. The responses are Vault's bodies, parsed there too (a body
    /// that is not JSON counts as not fetched).
    pub async fn render_off_thread(
        self: &Arc<Self>,
        templates: Arc<CompiledTemplates>,
        responses: Vec<(SecretRequest, Secret<Vec<u8>>)>,
    ) -> Result<RenderedFiles, Error> {
        let renderer = Arc::clone(self);
        self.pool
            .run("rendering", MAX_RENDER_TIME, move || {
                // Weighed before parsing: what a body would cost in memory
                // once parsed is bounded before it is spent.
                let mut left = MAX_RENDER_DATA.saturating_add(1);
                for (_, raw) in &responses {
                    left = left.saturating_sub(budget::raw_weight(raw.expose(), left));
                    if left == 0 {
                        return Err(Error::DataTooLarge);
                    }
                }
                let parsed = responses
                    .into_iter()
                    .filter_map(|(request, raw)| Some((request, parse_response(raw.expose())?)))
                    .collect();
                renderer.render(&templates, parsed)
            })
            .await?
    }

    /// Parses every template and collects the `secret` calls they make, so
    /// syntax errors (with the line that is wrong), unsupported constructs,
    /// bad secret paths and too many secrets surface at publish, before a
    /// token is sent anywhere. Volumes with identical templates (the
    /// replicas of a deployment) get the same shared result.
    ///
    /// A cache miss costs up to tens of milliseconds for the largest
    /// templates accepted, and runs on the calling thread: the driver uses
    /// [`Renderer::compile_off_thread`].
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
            let refuse = |message| Error::Parse {
                file: file.clone(),
                message,
            };
            count_tags(source).map_err(refuse)?;
            guard::check_nesting(source).map_err(refuse)?;
            let template = Template::compile(source).map_err(|e| {
                refuse(match e.pos() {
                    Some((line, column)) => format!("line {line}, column {column}: {}", e.reason()),
                    None => e.reason().to_string(),
                })
            })?;
            tree::check(&template).map_err(refuse)?;
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
        let context = Context::null();
        for (file, template) in files {
            // Errors in the lenient pass are expected (helpers fed `null`);
            // the strict pass reports the real ones.
            let _ = render_one(&self.lenient, template, &context, file);
        }
        let Some(Scope::Collect(found)) = SCOPE.with_borrow_mut(Option::take) else {
            unreachable!("the collect scope was set above");
        };
        check_count(found.len())?;
        Ok(found)
    }

    /// Renders every file with the given responses, on the calling thread.
    /// Returns [`Error::NeedsSecrets`] when a template asks for a secret not
    /// given.
    ///
    /// Runs under the render budget ([`MAX_LOOP_ITERATIONS`],
    /// [`MAX_RENDER_WORK`], [`MAX_RENDER_TIME`]) and refuses more than
    /// [`MAX_RENDER_DATA`] of responses. A hostile template can still
    /// spend up to the time limit: the driver uses
    /// [`Renderer::render_off_thread`].
    pub fn render(
        &self,
        templates: &CompiledTemplates,
        responses: HashMap<SecretRequest, Value>,
    ) -> Result<RenderedFiles, Error> {
        self.render_under(templates, responses, budget::Limits::FULL)
    }

    /// [`Renderer::render`] under `limits`.
    fn render_under(
        &self,
        templates: &CompiledTemplates,
        responses: HashMap<SecretRequest, Value>,
        limits: budget::Limits,
    ) -> Result<RenderedFiles, Error> {
        let mut left = MAX_RENDER_DATA.saturating_add(1);
        for value in responses.values() {
            left = left.saturating_sub(budget::weight(value, left));
            if left == 0 {
                return Err(Error::DataTooLarge);
            }
        }
        let fetched = responses.len();
        // The responses live in the context, under keys no template path
        // can spell (`]` ends a `[…]` segment), so that everything the
        // templates reach in them is borrowed, never copied.
        let mut keys = HashMap::with_capacity(fetched);
        let mut data = serde_json::Map::new();
        for (i, (request, value)) in responses.into_iter().enumerate() {
            let key = format!("]{i}");
            data.insert(key.clone(), value);
            keys.insert(request, key);
        }
        let context = Context::from(Value::Object(data));
        let _metered = budget::Metered::start(limits);
        SCOPE.with_borrow_mut(|s| {
            *s = Some(Scope::Resolve {
                keys,
                missing: Vec::new(),
            });
        });
        let mut out = Vec::with_capacity(templates.files.len());
        let mut first_error = None;
        for (file, template) in &templates.files {
            match render_one(&self.strict, template, &context, file) {
                Ok(bytes) => out.push((file.clone(), Secret::new(bytes))),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let Some(Scope::Resolve { mut missing, .. }) = SCOPE.with_borrow_mut(Option::take) else {
            unreachable!("the resolve scope was set above");
        };
        if missing.is_empty() {
            match first_error {
                Some(e) => Err(e),
                None => Ok(out),
            }
        } else {
            missing.sort();
            missing.dedup();
            check_count(fetched + missing.len()).and(Err(Error::NeedsSecrets(missing)))
        }
    }
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
    context: &Context,
    file: &RelativePath,
) -> Result<Vec<u8>, Error> {
    // Each file is its own Go template: its own variables, and a fresh
    // nonce for the bytes its strings carry (see `go_runtime`).
    let _go = go_runtime::start();
    let mut rc = RenderContext::new(None);
    let mut out = CappedOutput(String::new());
    template
        .render(registry, context, &mut rc, &mut out)
        .map_err(|e| Error::Render {
            file: file.clone(),
            message: describe(&e),
        })?;
    Ok(go_runtime::output_bytes(out.0))
}

/// Render output that refuses to grow past [`MAX_RENDERED_BYTES`], and
/// stops the render at its time limit (plain `{{…}}` expressions call no
/// helper, but every one writes here).
struct CappedOutput(String);

impl handlebars::Output for CappedOutput {
    fn write(&mut self, segment: &str) -> std::io::Result<()> {
        if self.0.len() + segment.len() > MAX_RENDERED_BYTES {
            return Err(std::io::Error::other(format!(
                "the file would be larger than {MAX_RENDERED_BYTES} bytes"
            )));
        }
        budget::check_time().map_err(|e| std::io::Error::other(e.reason().to_string()))?;
        self.0.push_str(segment);
        Ok(())
    }
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

fn describe(e: &handlebars::RenderError) -> String {
    let reason = e.reason().to_string();
    match (e.line_no, e.column_no) {
        (Some(line), Some(col)) => format!("line {line}, column {col}: {reason}"),
        _ => reason,
    }
}

#[cfg(test)]
mod tests;
