//! Rendering: turns a volume's handlebars templates and the Vault responses
//! they ask for into file contents.
//!
//! Templates call `(secret "<path>" [key=value …])`. The [`Renderer`] first
//! *collects* those calls (a lenient pass whose `secret` answers `null`), the
//! volume manager fetches all of them concurrently, and a *strict* pass then
//! renders with the real responses. A call hidden behind data only known
//! after a fetch makes the render answer [`Rendered::NeedsSecrets`], and is
//! fetched in one more round. Rendering is strict (a missing field is an
//! error, never an empty string) and never HTML-escapes: files hold the
//! secret bytes exactly.
//!
//! # What a tenant can make the renderer hold or do
//!
//! One driver renders every pod's templates (the pod's volume attributes)
//! over Vault answers (data the tenant writes), so everything either can
//! make the renderer hold or do is bounded, and what stays is measurable:
//!
//! - **Compiling.** A template's parsed form is far larger than its source
//!   (see the factors below). Before anything is parsed, one pass over the
//!   source (`scan`) counts its *units*, the bytes inside tags that are not
//!   part of a name, which bound every node the parser and the engine's
//!   tree can make. A template may have [`MAX_TEMPLATE_UNITS`], a volume
//!   [`MAX_VOLUME_UNITS`]; [`compile_reservation`] turns the sources into
//!   an upper bound of what the compile may hold at its peak, for the caller
//!   to reserve first, and [`CompiledTemplates::held_bytes`] says what the
//!   compiled set holds afterwards. The compile cache keeps at most
//!   [`MAX_CACHE_HELD_BYTES`] of sets no volume uses
//!   ([`Renderer::cache_held_bytes`]).
//! - **Rendering.** Every render runs under a budget (`budget`): loop
//!   iterations, units of work proportional to the data every helper and
//!   loop touches, bytes of values derived, output per file, and time, with
//!   cancellation when the caller stops waiting. A render stopped by any of
//!   them fails with [`Error::Limit`] (see [`Error::is_limit`]).
//! - **Errors** quote at most [`MAX_ERROR_MESSAGE_BYTES`] of what they are
//!   about, with its line and column: kubelet turns them into pod events.
//!
//! Measured factors: bytes allocated at the compile's peak, and kept by
//! the compiled tree, over the template's source (templates at the unit
//! limit; the allocations are the same in every build profile;
//! `tests/render_memory.rs` prints them):
//!
//! | template | units per byte | peak / source | tree / source |
//! |---|---|---|---|
//! | `{{a (b c c c c c c c) …}}`, dense subexpressions | 0.57 | 273 | 59 |
//! | `{{a (b)(b)(b)(b)(b)(b)(b)(b)}}`, repeated | 0.70 | 263 | 150 |
//! | `{{a c c c …}}`, one tag (refused once parsed) | 0.50 | 291 | – |
//! | `{{a (b)(b)(b)…}}`, one tag (refused once parsed) | 0.67 | 584 | – |
//! | `{{a [0,0,0,…]}}`, an array literal | 0.50 | 120 | 17 |
//! | the walkthrough's template, repeated | 0.26 | 41 | 19 |
//! | text with no tags | 0 | 1 | 1 |
//!
//! Per unit the peak reaches about 880 bytes and the tree about 215;
//! [`compile_reservation`] counts 960 and 320 (`cost`), and
//! [`CompiledTemplates::held_bytes`] counts the tree's allocations as the
//! C allocator rounds them (a one-letter name takes 32 bytes).

mod budget;
mod builtins;
mod cache;
mod cost;
mod each;
pub mod go;
mod guard;
mod helpers;
pub mod pki_cert;
mod pool;
mod scan;
mod tree;

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use handlebars::{Context, Handlebars, RenderContext, Renderable, Template};
use serde_json::Value;

use crate::secret::Secret;
use crate::storage::RelativePath;
pub use budget::{
    Limit, MAX_LOOP_ITERATIONS, MAX_RENDER_HELD_BYTES, MAX_RENDER_TIME, MAX_RENDER_WORK, Reserve,
    Stop,
};
pub use go::number::parse_response;

/// What one unit of parse weight (a JSON value, or 16 bytes of text) costs
/// at most once parsed into a `serde_json::Value`: the 32-byte value plus
/// its share of the vector or map holding it, which may have doubled.
pub const PARSED_VALUE_BYTES: u64 = 96;
pub use cache::MAX_CACHE_HELD_BYTES;
use cache::TemplateCache;
pub use cost::compile_reservation;
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
/// Most units (bytes inside tags that are not part of a name: whitespace,
/// punctuation; see the module docs) in one template, counted before it is
/// parsed. Each can cost about a kilobyte while parsing and up to a few
/// hundred bytes once parsed: a template at the limit peaks at up to
/// 21 MiB while compiling ([`compile_reservation`]) and keeps at most
/// about 4 MiB. The walkthrough's template has 31; a template of
/// 1024 tags like its lines has about 8,000.
pub const MAX_TEMPLATE_UNITS: u64 = 16 * 1024;
/// Most units in all of a volume's templates together.
pub const MAX_VOLUME_UNITS: u64 = 32 * 1024;
/// Longest message an error carries about a template or its data: an
/// excerpt (with the line and column) of what went wrong, never the whole
/// of it, however large the template or value.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 300;
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
/// in the pod spec's templates or what they do with the data, except
/// `Busy`; [`Error::is_limit`] tells the ones that stopped at a limit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The template source does not parse; the message carries the line and
    /// column.
    #[error("template for {file} does not parse: {message}")]
    Parse {
        /// The file the template renders into.
        file: RelativePath,
        /// The parser's message, with position (an excerpt: at most
        /// [`MAX_ERROR_MESSAGE_BYTES`]).
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
    /// A template, or a volume's templates together, have more units than
    /// [`MAX_TEMPLATE_UNITS`] or [`MAX_VOLUME_UNITS`]: their tags are too
    /// dense to parse within the memory a volume may use.
    #[error(
        "{} {units} units (whitespace and punctuation inside {{{{…}}}} tags: \
         parameters, path segments, literal elements); at most {limit} are allowed. Use fewer \
         or simpler tags, or split the templates into several volumes",
        match file { Some(file) => format!("the template for {file} has"), None => "the volume's templates have".to_owned() }
    )]
    TooComplex {
        /// The file whose template is too complex, or `None` for the
        /// volume's templates together.
        file: Option<RelativePath>,
        /// Units counted (the count stops at the first template past a
        /// limit).
        units: u64,
        /// The limit exceeded.
        limit: u64,
    },
    /// Rendering failed: a missing field (strict mode) or a helper called
    /// wrongly. The message names the template line.
    #[error("rendering {file} failed: {message}")]
    Render {
        /// The file being rendered.
        file: RelativePath,
        /// What went wrong, with position (an excerpt: at most
        /// [`MAX_ERROR_MESSAGE_BYTES`]).
        message: String,
    },
    /// Rendering stopped at one of its limits ([`Limit`]): time, work, loop
    /// iterations, output size or derived values; or its caller stopped
    /// waiting. The message names the limit and the template line.
    #[error("rendering {file} stopped: {message}")]
    Limit {
        /// The file being rendered when the limit was reached.
        file: RelativePath,
        /// The limit.
        limit: Limit,
        /// What was exceeded, with position.
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
    /// The Vault responses a volume reads are larger, together, than
    /// [`MAX_RENDER_DATA`].
    #[error(
        "the secrets the templates read weigh more than {MAX_RENDER_DATA} units (one per JSON \
         value, one per 16 bytes of text); read smaller secrets or fewer of them"
    )]
    DataTooLarge,
    /// The volume's share of the node's memory budget cannot hold what the
    /// render needs: the answers parsed, the values derived, the output.
    #[error("the node's memory budget cannot hold this render: {0}")]
    OverBudget(String),
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

impl Error {
    /// Whether the render or compile stopped at a resource limit (time,
    /// work, loop iterations, output size, derived values, data size) rather
    /// than failing on a mistake. The same templates over the same data
    /// will stop there again: the caller backs such a volume off instead of
    /// retrying it soon, so one tenant cannot keep the render threads busy.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            Self::Limit { .. } | Self::TimedOut { .. } | Self::DataTooLarge
        )
    }

    /// The same error with every string of `data` (the volume's Vault
    /// answers) that its message quotes replaced by `***`: a second line
    /// behind messages that are written never to quote data. Strings of
    /// fewer than four bytes are left: they cannot be told from the
    /// message's own words.
    #[must_use]
    pub fn scrubbed(self, data: &Value) -> Self {
        match self {
            Self::Render { file, message } => Self::Render {
                file,
                message: scrub_values(message, data),
            },
            Self::Limit {
                file,
                limit,
                message,
            } => Self::Limit {
                file,
                limit,
                message: scrub_values(message, data),
            },
            other => other,
        }
    }

    /// The render limit reached, for [`Error::Limit`] and
    /// [`Error::TimedOut`] (which is [`Limit::Time`]).
    pub fn limit(&self) -> Option<Limit> {
        match self {
            Self::Limit { limit, .. } => Some(*limit),
            Self::TimedOut { .. } => Some(Limit::Time),
            _ => None,
        }
    }
}

/// `message` with every string leaf of `data` it contains (of four bytes
/// or more) replaced by `***`, longest first. The message is short (an
/// excerpt), so this costs one short search per string of the data, and
/// only when a render failed.
fn scrub_values(mut message: String, data: &Value) -> String {
    let mut leaves = Vec::new();
    let mut stack = vec![data];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(s) if s.len() >= 4 && s.len() <= message.len() => leaves.push(s),
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    leaves.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for leaf in leaves {
        if message.contains(leaf.as_str()) {
            message = message.replace(leaf.as_str(), "***");
        }
    }
    message
}

/// At most [`MAX_ERROR_MESSAGE_BYTES`] of `message` (cut at a character
/// boundary), saying how much was left out. Messages start with the line
/// and column, so the excerpt keeps where the problem is.
fn excerpt(mut message: String) -> String {
    if message.len() <= MAX_ERROR_MESSAGE_BYTES {
        return message;
    }
    let mut cut = MAX_ERROR_MESSAGE_BYTES;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    let left_out = message.len() - cut;
    message.truncate(cut);
    let _ = write!(message, "… ({left_out} more bytes)");
    message
}

/// Rendered files: each template's path and its exact bytes.
pub type RenderedFiles = Vec<(RelativePath, Secret<Vec<u8>>)>;

/// What a render produced: the files, or the `secret` calls it found that
/// were not fetched (a path that comes from fetched data, say). These are
/// fetched and the render runs again: a step of the publish, not an error.
#[derive(Debug)]
pub enum Rendered {
    /// Every file, rendered.
    Files(RenderedFiles),
    /// Fetch these (sorted, without duplicates), then render again.
    NeedsSecrets(Vec<SecretRequest>),
}

pub use crate::vault::{SecretRequest, withhold_for};

/// A volume's templates, parsed once, with the `secret` calls they make.
/// Volumes with the same templates share one (see [`Renderer::compile`]).
#[derive(Debug)]
pub struct CompiledTemplates {
    files: Vec<(RelativePath, Template)>,
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

/// Whether the compile refuses `sources` before parsing them (too large,
/// too many tags, too many units), given their `shapes` (`scan::shape`).
fn refused_before_parsing(sources: &[(RelativePath, String)], shapes: &[scan::Shape]) -> bool {
    let mut total = 0;
    sources.iter().zip(shapes).any(|((_, source), shape)| {
        total += shape.units;
        source.len() > MAX_TEMPLATE_BYTES
            || shape.marks > MAX_TAGS_PER_TEMPLATE as u64
            || shape.units > MAX_TEMPLATE_UNITS
            || total > MAX_VOLUME_UNITS
    })
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
            go::register(&mut registry);
            registry.register_helper("pkiCert", Box::new(pki_cert::PkiCert));
            for (name, apply) in [
                ("base64Encode", helpers::base64_encode as helpers::UnaryFn),
                ("base64Decode", helpers::base64_decode),
                ("toJson", helpers::to_json),
                ("toJsonPretty", helpers::to_json_pretty),
                ("toGoJson", go::json::to_go_json),
                ("toGoJsonPretty", go::json::to_go_json_pretty),
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

    /// A renderer that compiles and renders on the caller's thread: for
    /// tests of the volume core under paused time, where render threads
    /// would race the paused clock.
    #[cfg(test)]
    pub fn inline() -> Self {
        Self {
            pool: pool::Pool::sized(0, 0),
            ..Self::new()
        }
    }

    /// Templates compiled earlier for the same sources, if a volume still
    /// uses them (or the cache kept them): the cheap path of
    /// [`Renderer::compile`].
    pub fn cached(&self, sources: &[(RelativePath, String)]) -> Option<Arc<CompiledTemplates>> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&cache::key(sources))
    }

    /// Bytes the compile cache keeps alive for template sets no volume
    /// uses (as [`CompiledTemplates::held_bytes`] counts them): at most
    /// [`MAX_CACHE_HELD_BYTES`].
    pub fn cache_held_bytes(&self) -> u64 {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .held_bytes()
    }

    /// [`Renderer::compile`] on the render threads (unless the templates
    /// are cached), answered within [`MAX_COMPILE_TIME`]: what the driver
    /// calls, so a compile never runs on the threads that answer kubelet.
    /// Reserve [`compile_reservation`] of the sources first.
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
    /// render is still running; it stops at its next check of the clock,
    /// and at once if the caller stops waiting): what the driver calls, so
    /// a render never runs on the threads that answer kubelet. The
    /// responses are Vault's bodies, parsed there too (a body that is not
    /// JSON counts as not fetched).
    ///
    /// What the render holds is reserved in `reserve` before it is held:
    /// the parsed answers ([`parse_reservation`]), the values the templates
    /// derive, and the output as it grows.
    pub async fn render_off_thread(
        self: &Arc<Self>,
        templates: Arc<CompiledTemplates>,
        responses: Vec<(SecretRequest, Secret<Vec<u8>>)>,
        reserve: Arc<dyn Reserve>,
    ) -> Result<Rendered, Error> {
        let renderer = Arc::clone(self);
        self.pool
            .run("rendering", MAX_RENDER_TIME, move || {
                // Weighed before parsing: what a body would cost in memory
                // once parsed is bounded before it is spent, and reserved.
                let mut left = MAX_RENDER_DATA.saturating_add(1);
                let mut parsing = 0u64;
                for (_, raw) in &responses {
                    let weight = budget::raw_weight(raw.expose(), left);
                    left = left.saturating_sub(weight);
                    if left == 0 {
                        return Err(Error::DataTooLarge);
                    }
                    parsing += weight * PARSED_VALUE_BYTES + raw.expose().len() as u64;
                }
                reserve.reserve(parsing).map_err(Error::OverBudget)?;
                let parsed = responses
                    .into_iter()
                    .filter_map(|(request, raw)| Some((request, parse_response(raw.expose())?)))
                    .collect();
                renderer.render_under(&templates, parsed, budget::Limits::FULL, Some(reserve))
            })
            .await?
    }

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

    /// Renders every file with the given responses, on the calling thread.
    /// Answers [`Rendered::NeedsSecrets`] when a template asks for a secret
    /// not given.
    ///
    /// Runs under the render budget ([`MAX_LOOP_ITERATIONS`],
    /// [`MAX_RENDER_WORK`], [`MAX_RENDER_HELD_BYTES`], [`MAX_RENDER_TIME`])
    /// and refuses more than [`MAX_RENDER_DATA`] of responses. A hostile
    /// template can still spend up to the time limit: the driver uses
    /// [`Renderer::render_off_thread`].
    pub fn render(
        &self,
        templates: &CompiledTemplates,
        responses: HashMap<SecretRequest, Value>,
    ) -> Result<Rendered, Error> {
        self.render_under(templates, responses, budget::Limits::FULL, None)
    }

    /// [`Renderer::render`] under `limits`.
    fn render_under(
        &self,
        templates: &CompiledTemplates,
        responses: HashMap<SecretRequest, Value>,
        limits: budget::Limits,
        reserve: Option<Arc<dyn Reserve>>,
    ) -> Result<Rendered, Error> {
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
        self.render_context(templates, &context, keys, fetched, limits, reserve)
    }

    /// Renders every file over `context`, where `keys` say under which key
    /// each response is.
    fn render_context(
        &self,
        templates: &CompiledTemplates,
        context: &Context,
        keys: HashMap<SecretRequest, String>,
        fetched: usize,
        limits: budget::Limits,
        reserve: Option<Arc<dyn Reserve>>,
    ) -> Result<Rendered, Error> {
        let metered = budget::Metered::start(limits);
        let _metered = match reserve {
            Some(reserve) => metered.reserving(reserve),
            None => metered,
        };
        SCOPE.with_borrow_mut(|s| {
            *s = Some(Scope::Resolve {
                keys,
                missing: Vec::new(),
            });
        });
        let mut out = Vec::with_capacity(templates.files.len());
        let mut first_error = None;
        for (file, template) in &templates.files {
            match render_one(&self.strict, template, context, file) {
                Ok(bytes) => out.push((file.clone(), Secret::new(bytes))),
                Err(e) => {
                    let stopped = matches!(e, Error::Limit { .. });
                    first_error.get_or_insert(e);
                    // Past a limit every later file would stop too.
                    if stopped {
                        break;
                    }
                }
            }
        }
        let Some(Scope::Resolve { mut missing, .. }) = SCOPE.with_borrow_mut(Option::take) else {
            unreachable!("the resolve scope was set above");
        };
        // A message that quotes a value of the volume's secrets (a helper
        // naming what it was given, say) shows it nowhere.
        let first_error = first_error.map(|e| e.scrubbed(context.data()));
        if let Some(e @ Error::Limit { .. }) = first_error {
            return Err(e);
        }
        if missing.is_empty() {
            match first_error {
                Some(e) => Err(e),
                None => Ok(Rendered::Files(out)),
            }
        } else {
            missing.sort();
            missing.dedup();
            check_count(fetched + missing.len())?;
            Ok(Rendered::NeedsSecrets(missing))
        }
    }
}

/// Scans every source and refuses, before anything is parsed, what is too
/// large or too dense: the checks [`refused_before_parsing`] makes, with
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
    // nonce for the bytes its strings carry (see `go::session`).
    let _go = go::session::start();
    let mut rc = RenderContext::new(None);
    let mut out = CappedOutput(String::new());
    template
        .render(registry, context, &mut rc, &mut out)
        .map_err(|e| {
            let message = describe(&e);
            match budget::tripped() {
                Some(limit) => Error::Limit {
                    file: file.clone(),
                    limit,
                    message,
                },
                None => Error::Render {
                    file: file.clone(),
                    message,
                },
            }
        })?;
    Ok(go::session::output_bytes(out.0))
}

/// Render output that refuses to grow past [`MAX_RENDERED_BYTES`], and
/// charges what it writes as work, checking the clock (plain `{{…}}`
/// expressions call no helper, but every one writes here).
struct CappedOutput(String);

impl handlebars::Output for CappedOutput {
    fn write(&mut self, segment: &str) -> std::io::Result<()> {
        let needed = self.0.len() + segment.len();
        if needed > MAX_RENDERED_BYTES {
            return Err(std::io::Error::other(
                budget::output_exceeded("the file").to_string(),
            ));
        }
        write_cost(segment.len())?;
        if needed > self.0.capacity() {
            // The output grows by doubling, and every growth is reserved
            // before it is allocated.
            let capacity = needed
                .max(self.0.capacity() * 2)
                .clamp(256, MAX_RENDERED_BYTES);
            budget::reserve((capacity - self.0.capacity()) as u64).map_err(|stop| {
                std::io::Error::other(handlebars::RenderError::from(stop).to_string())
            })?;
            self.0.reserve_exact(capacity - self.0.len());
        }
        self.0.push_str(segment);
        Ok(())
    }
}

/// The collect pass's output: counted (up to [`MAX_RENDERED_BYTES`]) and
/// charged like a file's, then dropped.
struct DiscardedOutput(usize);

impl handlebars::Output for DiscardedOutput {
    fn write(&mut self, segment: &str) -> std::io::Result<()> {
        self.0 += segment.len();
        if self.0 > MAX_RENDERED_BYTES {
            return Err(std::io::Error::other(
                budget::output_exceeded("the file").to_string(),
            ));
        }
        write_cost(segment.len())
    }
}

/// Charges writing `bytes` of output (one unit per 16 bytes) and checks
/// the clock.
fn write_cost(bytes: usize) -> std::io::Result<()> {
    budget::charge_units(bytes as u64 / 16).map_err(|e| std::io::Error::other(e.to_string()))
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

/// The message of a render error, with its line and column, as an
/// excerpt.
fn describe(e: &handlebars::RenderError) -> String {
    let reason = e.reason().to_string();
    excerpt(match (e.line_no, e.column_no) {
        (Some(line), Some(col)) => format!("line {line}, column {col}: {reason}"),
        _ => reason,
    })
}

#[cfg(test)]
mod tests;
