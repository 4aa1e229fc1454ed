//! Rendering: turns a volume's handlebars templates and the Vault responses
//! they ask for into file contents.
//!
//! Templates call `(secret "<path>" [key=value …])` (a read, or a write
//! with arguments) and `(secrets "<path>")` (a list). The [`Renderer`] first
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
mod compile;
mod cost;
mod each;
mod error;
pub mod go;
mod guard;
mod helpers;
mod output;
pub mod pki_cert;
mod pool;
mod scan;
mod tree;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use handlebars::{Context, Handlebars};
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
pub use compile::CompiledTemplates;
use compile::check_count;
pub use cost::compile_reservation;
pub use error::Error;
use helpers::{SCOPE, Scope};
use output::render_one;
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
            registry.register_helper("secret", Box::new(helpers::SecretHelper { list: false }));
            registry.register_helper("secrets", Box::new(helpers::SecretHelper { list: true }));
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

#[cfg(test)]
mod tests;
