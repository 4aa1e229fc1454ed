//! What compiling templates costs in memory, bounded from the sources
//! before anything is parsed.
//!
//! Compiling a template parses it twice with the engine's grammar (once in
//! `guard`, once in the engine), builds the engine's tree, and renders it
//! once with no data (the pass that collects `secret` calls). The two
//! parses are where the memory goes: the parser queues two tokens per rule
//! it matches, in a vector that doubles as it grows, and a parameter as
//! short as ` c` matches four nested rules. The tree then holds about a
//! fifth of that. Both are proportional to the template's **units** (see
//! `scan`): every rule match and every tree node inside a tag starts at or
//! right after a unit byte.
//!
//! The bounds below are per unit, per `{{` (the text runs and escapes it
//! splits off), per byte of source (the copies of text, names and strings
//! the tree keeps) and per template. [`compile_reservation`] adds them up
//! for a volume's sources, before compiling; the memory test
//! (`tests/render_memory.rs`) measures the real figure (bytes allocated, and
//! the process's resident memory) for hostile and ordinary shapes and
//! checks it never exceeds the bound.

use super::scan::{self, Shape};
use super::{MAX_TAGS_PER_TEMPLATE, MAX_TEMPLATE_BYTES, MAX_TEMPLATE_UNITS, MAX_VOLUME_UNITS};
use crate::storage::RelativePath;

/// Bytes of one token in the parser's queue (pest's `QueueableToken` on a
/// 64-bit target: three words and an optional string slice; the type is
/// private to pest, so its size is written here and checked by the memory
/// test).
const TOKEN_BYTES: u64 = 40;

/// Most tokens one unit gives rise to: a unit starts at most one parameter
/// (or path segment, literal element, hash entry, subexpression), and a
/// parameter is at most four nested rule matches (`helper_parameter`,
/// `reference`, `path_inline`, `path_id`), two tokens each.
const TOKENS_PER_UNIT: u64 = 8;

/// Tokens per `{{` beyond its units: the text run before it (`raw_text`,
/// `escape`) and a block's body (`template`).
const TOKENS_PER_MARK: u64 = 8;

/// Tokens of a template whatever it holds.
const TOKENS_PER_TEMPLATE: u64 = 8;

/// Tree bytes per unit, at most: a subexpression `(b)` is two units and
/// about 560 bytes (the engine's `HelperTemplate` alone is 392), and small
/// strings each take a 32-byte allocation.
const TREE_PER_UNIT: u64 = 320;

/// Tree bytes per `{{`: an element and its position for the text it splits
/// off.
const TREE_PER_MARK: u64 = 256;

/// Tree bytes per byte of source: text is kept once, names and paths twice
/// (the path as written and its segments).
const TREE_PER_BYTE: u64 = 3;

/// Tree bytes of a template whatever it holds.
const TREE_PER_TEMPLATE: u64 = 1024;

/// Transient bytes per byte of source while parsing: the parser's index of
/// line starts (a word per line, in a vector that doubles: 16 bytes per
/// newline), and text copied again when the engine trims whitespace around
/// `~` and standalone tags.
const PARSE_PER_BYTE: u64 = 20;

/// What a compiled set holds besides its templates and `secret` calls.
const SET_BYTES: u64 = 4096;

/// Bytes the collect pass may derive (helper results, copies, the `secret`
/// calls it records) for sources of `bytes` bytes: with no data, only the
/// templates' own literals feed it.
pub(super) fn collect_held(bytes: u64) -> u64 {
    16 * 1024 + 2 * bytes
}

/// The collect pass's transient memory: what it derives, the text of the
/// values it writes (discarded as they are written), and the engine's
/// per-block state.
fn collect_transient(bytes: u64) -> u64 {
    4 * collect_held(bytes) + 64 * 1024
}

/// What one compiled template may hold, bounded from its shape before it
/// is parsed.
fn template_held(shape: &Shape) -> u64 {
    TREE_PER_UNIT * shape.units
        + TREE_PER_MARK * shape.marks
        + TREE_PER_BYTE * shape.bytes
        + TREE_PER_TEMPLATE
}

/// What parsing one template needs beyond the tree it builds: the token
/// queue at its largest, and the copies of text. The queue is a vector
/// that doubles as it grows; while it moves, the old and the new copy both
/// exist, so it can take three times the space of its tokens.
fn parse_transient(shape: &Shape) -> u64 {
    let tokens =
        TOKENS_PER_UNIT * shape.units + TOKENS_PER_MARK * shape.marks + TOKENS_PER_TEMPLATE;
    3 * TOKEN_BYTES * tokens + PARSE_PER_BYTE * shape.bytes
}

/// What a compiled set of templates holds: its trees (`tree_bytes`, counted
/// on the parsed trees by `tree::held_bytes`) and the `secret` calls it
/// collected (`request_bytes`).
pub(super) fn set_held(tree_bytes: u64, request_bytes: u64) -> u64 {
    tree_bytes + request_bytes + SET_BYTES
}

/// An upper bound, in bytes, of what compiling `sources` may hold at its
/// peak, transient and result together, computed from the sources alone
/// (one pass over their bytes, no parsing): what a caller reserves against
/// its memory budget before [`super::Renderer::compile_off_thread`], and
/// shrinks to [`super::CompiledTemplates::held_bytes`] once the compile is
/// done (or to nothing if it failed).
///
/// Sources that the compile refuses on size or complexity before parsing
/// are bounded too (by what they would hold if they were parsed), so the
/// caller need not check them first.
pub fn compile_reservation(sources: &[(RelativePath, String)]) -> u64 {
    let shapes: Vec<Shape> = sources.iter().map(|(_, s)| scan::shape(s)).collect();
    let bytes: u64 = sources
        .iter()
        .map(|(path, source)| (path.as_str().len() + source.len()) as u64)
        .sum();
    // The sources are copied once for the render thread.
    let copy = bytes + SET_BYTES;
    if refused_before_parsing(sources, &shapes) {
        return copy;
    }
    let held: u64 = shapes.iter().map(template_held).sum();
    let parse = shapes.iter().map(parse_transient).max().unwrap_or(0);
    // The `secret` calls the set keeps are bounded by what the collect
    // pass may derive.
    copy + held + collect_held(bytes) + parse.max(collect_transient(bytes))
}

/// Whether the compile refuses `sources` before parsing them (too large,
/// too many tags, too many units), given their `shapes` (`scan::shape`).
pub(super) fn refused_before_parsing(
    sources: &[(RelativePath, String)],
    shapes: &[scan::Shape],
) -> bool {
    let mut total = 0;
    sources.iter().zip(shapes).any(|((_, source), shape)| {
        total += shape.units;
        source.len() > MAX_TEMPLATE_BYTES
            || shape.marks > MAX_TAGS_PER_TEMPLATE as u64
            || shape.units > MAX_TEMPLATE_UNITS
            || total > MAX_VOLUME_UNITS
    })
}
