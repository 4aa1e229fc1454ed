//! The work one render may do, and how helpers meter it.
//!
//! A template's size and structure are bounded when it is compiled, but a
//! render's cost depends on the data: `{{#each}}` nested three deep over a
//! Vault array of a thousand entries runs a billion iterations, and a tag
//! whose parameters name a large value touches all of it, every time it is
//! rendered. Every render (the collect pass and the final one) therefore
//! runs under a budget, deterministic so a template that fits never fails
//! on a slower node:
//!
//! - [`MAX_LOOP_ITERATIONS`] loop iterations, summed over every loop;
//! - [`MAX_RENDER_WORK`] units of work: every helper call (the driver's own
//!   and its metered replacements of the engine's built-ins) costs one unit
//!   plus the size of its evaluated parameters ([`weight`]), every loop
//!   iteration that copies an entry costs the entry's size, and every loop
//!   inside a helper over the data it was given (encoding, scanning,
//!   printing, comparing) costs one unit per value or per 16 bytes of text
//!   it touches, as it goes ([`Meter`]);
//! - [`MAX_RENDER_HELD_BYTES`] bytes of values the render derives (helper
//!   results, copies of values), counted as they are made and never given
//!   back, so what a render can hold at once is bounded whatever it frees;
//!
//! and a wall-clock backstop, [`MAX_RENDER_TIME`], checked with every
//! charge, every loop iteration and every write of output, together with
//! the render's cancellation: when the caller stops waiting (its deadline
//! passed, or it went away), the next check stops the render.
//!
//! Exhausting any of them fails the render with a message naming the
//! limit, and the render's result says which [`Limit`] it was.
//!
//! # Metering a helper
//!
//! Every helper calls [`charge_call`] first (one unit plus the size of its
//! parameters; this also checks the clock). A helper whose work is more
//! than proportional to its parameters' size, or that loops over them,
//! meters the loop with a [`Meter`]: `meter.add(units)?` per step, one unit
//! per value or per 16 bytes ([`Meter::text`]). A helper that returns a new
//! value (not a reference into the data) charges it with [`hold`]. Helpers
//! that cannot finish within what is left stop at the first charge that
//! does not fit; none runs unmetered for longer than one [`Meter`] step.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use handlebars::{Helper, RenderError, RenderErrorReason};
use serde_json::Value;
use tokio::time::Instant;

/// Most `{{#each}}` iterations, summed over every loop and every file, in
/// one render of a volume. Real templates iterate over tens of keys.
pub const MAX_LOOP_ITERATIONS: u32 = 100_000;

/// Most units of work one render of a volume may do: one per helper call
/// plus the size of the values it is given, one per JSON value and per 16
/// bytes of text (see [`weight`]). Real templates use a few hundred; a
/// template that passes a 100,000-element array to a helper on every line
/// runs out after a few dozen lines.
pub const MAX_RENDER_WORK: u64 = 4_000_000;

/// Longest one render of a volume may take. Real templates render in
/// microseconds; this only stops work the other budgets cannot see. The
/// caller gets its answer at this deadline even if the render is still
/// running.
pub const MAX_RENDER_TIME: Duration = Duration::from_secs(2);

/// Most bytes of values one render may derive: helper results (encoded
/// text, printed values, `pkiCert`'s fields) and copies of values (a
/// `lookup` or a block over a value that is not in the Vault data). Counted
/// as they are made, never given back. Eight times the largest file.
pub const MAX_RENDER_HELD_BYTES: u64 = 8 * super::MAX_RENDERED_BYTES as u64;

/// Units of work a [`Meter`] gathers before it charges them and checks the
/// clock: about 16 KiB of text, tens of microseconds of work.
const METER_STEP: u64 = 1024;

/// A limit that stopped a render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// [`MAX_RENDER_TIME`] (or the compile's time limit).
    Time,
    /// [`MAX_RENDER_WORK`].
    Work,
    /// [`MAX_LOOP_ITERATIONS`].
    Iterations,
    /// [`super::MAX_RENDERED_BYTES`]: a file or a helper's result.
    Output,
    /// [`MAX_RENDER_HELD_BYTES`].
    Held,
    /// The caller stopped waiting for the render.
    Abandoned,
}

/// Why a render stopped: which limit, and a message naming it and what to
/// change. Converts into the template engine's error, so `?` in a helper
/// stops the render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Stop {
    /// The limit reached.
    pub limit: Limit,
    message: String,
}

impl From<Stop> for RenderError {
    fn from(stop: Stop) -> Self {
        RenderErrorReason::Other(stop.message).into()
    }
}

/// The work one render may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// Loop iterations, all loops and files together.
    pub(super) iterations: u32,
    /// Work units, all helper calls and files together.
    pub(super) work: u64,
    /// Wall-clock time.
    pub(super) time: Duration,
    /// Bytes of derived values.
    pub(super) held: u64,
}

impl Limits {
    /// What any render may do (the documented limits).
    pub(super) const FULL: Self = Self {
        iterations: MAX_LOOP_ITERATIONS,
        work: MAX_RENDER_WORK,
        time: MAX_RENDER_TIME,
        held: MAX_RENDER_HELD_BYTES,
    };
}

#[derive(Clone, Copy)]
struct Budget {
    limits: Limits,
    iterations_left: u32,
    work_left: u64,
    held_left: u64,
    deadline: Instant,
    /// The first limit reached, if any.
    tripped: Option<Limit>,
}

/// Where the memory a render holds is reserved before it is held: the
/// volume's share of the node's memory budget (see
/// `crate::volume::memory`). The render's own limits bound it; this makes
/// the node's budget see it.
pub trait Reserve: Send + Sync {
    /// Reserves `bytes` more; errs (naming the limit and the flag that sets
    /// it) when the volume's budget cannot hold them.
    fn reserve(&self, bytes: u64) -> Result<(), String>;
}

thread_local! {
    /// Rendering is synchronous, so a thread-local is an exact per-render
    /// slot (like the `secret` helper's scope).
    static BUDGET: Cell<Option<Budget>> = const { Cell::new(None) };
    /// Where the render on this thread reserves what it holds, if anywhere.
    static RESERVE: RefCell<Option<Arc<dyn Reserve>>> = const { RefCell::new(None) };
    /// Set while a render thread runs a job whose caller may stop waiting.
    static ABANDONED: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Holds the budget of one render; dropping it ends the render's budget
/// (and its reservation).
pub(super) struct Metered(());

impl Metered {
    /// Reserves what this render holds in `reserve` until it ends.
    pub(super) fn reserving(self, reserve: Arc<dyn Reserve>) -> Self {
        RESERVE.set(Some(reserve));
        self
    }
}

/// Reserves `bytes` the render on this thread is about to hold; outside a
/// render with a reservation, nothing is reserved.
pub(super) fn reserve(bytes: u64) -> Result<(), Stop> {
    let refused =
        RESERVE.with_borrow(|reserve| reserve.as_ref().and_then(|r| r.reserve(bytes).err()));
    match (refused, BUDGET.get()) {
        (None, _) => Ok(()),
        (Some(message), Some(budget)) => Err(trip(budget, Limit::Held, message)),
        (Some(message), None) => Err(Stop {
            limit: Limit::Held,
            message,
        }),
    }
}

impl Metered {
    /// Starts a fresh budget on this thread.
    pub(super) fn start(limits: Limits) -> Self {
        BUDGET.set(Some(Budget {
            limits,
            iterations_left: limits.iterations,
            work_left: limits.work,
            held_left: limits.held,
            deadline: Instant::now() + limits.time,
            tripped: None,
        }));
        Self(())
    }
}

/// The first limit the render on this thread reached, if any.
pub(super) fn tripped() -> Option<Limit> {
    BUDGET.get().and_then(|b| b.tripped)
}

impl Drop for Metered {
    fn drop(&mut self) {
        RESERVE.set(None);
        BUDGET.set(None);
    }
}

/// Marks the work this thread runs until the guard drops as abandoned once
/// `flag` is set: every check of the clock then stops it. The render pool
/// sets the flag when the caller stops waiting.
pub(super) fn abandon_on(flag: Arc<AtomicBool>) -> impl Drop {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            ABANDONED.with_borrow_mut(Option::take);
        }
    }
    ABANDONED.with_borrow_mut(|slot| *slot = Some(flag));
    Reset
}

/// Whether the caller of the work this thread runs has stopped waiting.
pub(super) fn abandoned() -> bool {
    ABANDONED.with_borrow(|flag| flag.as_ref().is_some_and(|f| f.load(Ordering::Relaxed)))
}

fn current() -> Result<Budget, RenderError> {
    BUDGET.get().ok_or_else(|| {
        RenderErrorReason::Other("a template helper ran outside a volume render".to_owned()).into()
    })
}

/// Records that `limit` was reached and returns the error that stops the
/// render. Once a limit is reached, every later charge fails too.
fn trip(mut budget: Budget, limit: Limit, message: String) -> Stop {
    budget.tripped.get_or_insert(limit);
    match limit {
        Limit::Work => budget.work_left = 0,
        Limit::Iterations => budget.iterations_left = 0,
        Limit::Held => budget.held_left = 0,
        Limit::Time | Limit::Abandoned => budget.deadline = Instant::now(),
        Limit::Output => {}
    }
    BUDGET.set(Some(budget));
    Stop { limit, message }
}

/// Refuses output past [`super::MAX_RENDERED_BYTES`]: `what` says what would
/// have been too large.
pub(super) fn output_exceeded(what: &str) -> Stop {
    let message = format!(
        "{what} would be larger than {} bytes",
        super::MAX_RENDERED_BYTES
    );
    match BUDGET.get() {
        Some(budget) => trip(budget, Limit::Output, message),
        None => Stop {
            limit: Limit::Output,
            message,
        },
    }
}

/// Charges one loop iteration that copies `copied` (the entry, when the
/// loop runs over a value rather than a path), and checks the clock.
pub(super) fn charge_iteration(copied: Option<&Value>) -> Result<(), RenderError> {
    let mut budget = current()?;
    if budget.iterations_left == 0 {
        let message = format!(
            "the templates' loops ran more than {} iterations in total; \
             iterate over smaller data or nest fewer loops",
            budget.limits.iterations
        );
        return Err(trip(budget, Limit::Iterations, message).into());
    }
    budget.iterations_left -= 1;
    BUDGET.set(Some(budget));
    match copied {
        Some(value) => {
            charge(1, [value])?;
            Ok(hold(value)?)
        }
        None => check_time(),
    }
}

/// Charges a helper call: one unit plus the size of its parameters and
/// hash values, and checks the clock. Every helper calls this first.
pub(super) fn charge_call(h: &Helper<'_>) -> Result<(), RenderError> {
    charge(
        1,
        h.params()
            .iter()
            .map(handlebars::PathAndJson::value)
            .chain(h.hash().values().map(handlebars::PathAndJson::value)),
    )
}

/// Charges `base` units plus the weight of `values`, and checks the clock.
pub(super) fn charge<'a>(
    base: u64,
    values: impl IntoIterator<Item = &'a Value>,
) -> Result<(), RenderError> {
    let budget = current()?;
    let mut cost = base;
    for value in values {
        // Counting stops at what is left: the count itself is bounded by
        // the budget.
        cost = cost.saturating_add(weight(value, budget.work_left.saturating_add(1)));
        if cost > budget.work_left {
            break;
        }
    }
    Ok(charge_units(cost)?)
}

/// Charges `units` of work and checks the clock. Outside a render (the
/// helpers' pure functions called directly) nothing is charged.
pub(super) fn charge_units(units: u64) -> Result<(), Stop> {
    let Some(mut budget) = BUDGET.get() else {
        return Ok(());
    };
    if units > budget.work_left {
        let message = format!(
            "the templates did more than {} units of work (helper calls and the Vault data \
             given to them); pass smaller values to helpers, or fewer times",
            budget.limits.work
        );
        return Err(trip(budget, Limit::Work, message));
    }
    budget.work_left -= units;
    BUDGET.set(Some(budget));
    clock()
}

/// Charges `bytes` of derived values (see [`MAX_RENDER_HELD_BYTES`]).
/// Outside a render nothing is charged.
pub(super) fn charge_held(bytes: u64) -> Result<(), Stop> {
    let Some(mut budget) = BUDGET.get() else {
        return Ok(());
    };
    if bytes > budget.held_left {
        let message = format!(
            "the values the templates derive (helper results and copies of values) would take \
             more than {} bytes; encode, print or copy smaller values, or fewer times",
            budget.limits.held
        );
        return Err(trip(budget, Limit::Held, message));
    }
    budget.held_left -= bytes;
    BUDGET.set(Some(budget));
    reserve(bytes)
}

/// Charges a value a helper made (its result, or a copy): its size in
/// bytes ([`value_bytes`]) against [`MAX_RENDER_HELD_BYTES`], and its weight
/// as work (making it cost about that much).
pub(super) fn hold(value: &Value) -> Result<(), Stop> {
    let Some(budget) = BUDGET.get() else {
        return Ok(());
    };
    charge_held(value_bytes(value, budget.held_left.saturating_add(1)))?;
    charge_units(weight(value, budget.work_left.saturating_add(1)))
}

/// Checks the clock and the render's cancellation; helpers, loops and the
/// output writer call this.
pub(super) fn check_time() -> Result<(), RenderError> {
    current()?;
    Ok(clock()?)
}

fn clock() -> Result<(), Stop> {
    let Some(budget) = BUDGET.get() else {
        return Ok(());
    };
    if abandoned() {
        let message = "the render was abandoned: its caller stopped waiting (deadline passed \
                       or request cancelled)"
            .to_owned();
        return Err(trip(budget, Limit::Abandoned, message));
    }
    if Instant::now() > budget.deadline {
        let message = time_exceeded(budget.limits.time);
        return Err(trip(budget, Limit::Time, message));
    }
    Ok(())
}

/// The message of a render past its time limit.
pub(super) fn time_exceeded(limit: Duration) -> String {
    format!(
        "rendering took longer than {limit:?}; simplify the templates (fewer nested loops or \
         helper calls over large values)"
    )
}

/// Meters a loop over data, a step at a time: units gathered are charged
/// every [`METER_STEP`] (and the clock checked then), and at
/// [`Meter::finish`]. Outside a render it charges nothing, so the pure
/// functions behind the helpers can use it unconditionally.
#[derive(Debug, Default)]
pub struct Meter {
    pending: u64,
}

impl Meter {
    /// A meter with nothing gathered.
    pub const fn new() -> Self {
        Self { pending: 0 }
    }

    /// Adds `units` of work.
    pub fn add(&mut self, units: u64) -> Result<(), Stop> {
        self.pending = self.pending.saturating_add(units);
        if self.pending >= METER_STEP {
            self.finish()?;
        }
        Ok(())
    }

    /// Adds the work of touching `bytes` bytes of text (one unit per 16,
    /// at least one).
    pub fn text(&mut self, bytes: usize) -> Result<(), Stop> {
        self.add(1 + bytes as u64 / 16)
    }

    /// Charges what was gathered.
    pub fn finish(&mut self) -> Result<(), Stop> {
        let units = std::mem::take(&mut self.pending);
        charge_units(units)
    }
}

/// The weight [`weight`] would give the JSON text `raw` once parsed, or
/// more, found without parsing it: one per value opened (`[`, `{`) or
/// separated (`,`), one per string, and one per 16 bytes of text, counted
/// up to `cap`. Checked before a body is parsed, so a body of a million
/// small numbers never becomes a million `Value`s in memory (about 16
/// times its size).
pub(super) fn raw_weight(raw: &[u8], cap: u64) -> u64 {
    let mut total = 1u64;
    let (mut in_string, mut escaped, mut text) = (false, false, 0u64);
    for &byte in raw {
        if in_string {
            text += 1;
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => {
                    in_string = false;
                    total += 1 + text / 16;
                    text = 0;
                }
                _ => {}
            }
        } else {
            match byte {
                b'"' => in_string = true,
                b'[' | b'{' | b',' => total += 1,
                _ => {}
            }
        }
        if total >= cap {
            return cap;
        }
    }
    total
}

/// The size of a JSON value for the budget: one per value (scalars,
/// arrays, objects, and each object key) plus one per 16 bytes of text,
/// counted up to `cap` (so counting costs at most `cap` steps).
pub(super) fn weight(value: &Value, cap: u64) -> u64 {
    let text = |s: &str| 1 + (s.len() as u64) / 16;
    let mut total = 0u64;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        total += match v {
            Value::String(s) => text(s),
            Value::Array(items) => {
                // Each entry weighs at least one.
                if total + items.len() as u64 >= cap {
                    return cap;
                }
                stack.extend(items);
                1
            }
            Value::Object(map) => {
                if total + map.len() as u64 >= cap {
                    return cap;
                }
                for (k, item) in map {
                    total += text(k);
                    stack.push(item);
                }
                1
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => 1,
        };
        if total >= cap {
            return total;
        }
    }
    total
}

/// Bytes a JSON value takes in memory, about and never less: 48 per value
/// (the value itself and its share of its container), 64 more per object
/// entry (the map's node), and its text (strings, keys, the digits of
/// numbers, which the parser keeps as text). Counted up to `cap`.
pub(super) fn value_bytes(value: &Value, cap: u64) -> u64 {
    const NODE: u64 = 48;
    const ENTRY: u64 = 64;
    let mut total = 0u64;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        total += NODE
            + match v {
                Value::String(s) => s.len() as u64,
                Value::Number(n) => n.as_str().len() as u64,
                Value::Array(items) => {
                    stack.extend(items);
                    0
                }
                Value::Object(map) => {
                    for (k, item) in map {
                        total += ENTRY + k.len() as u64;
                        stack.push(item);
                    }
                    0
                }
                Value::Null | Value::Bool(_) => 0,
            };
        if total >= cap {
            return total;
        }
    }
    total
}

#[cfg(test)]
mod raw_weight_tests {
    use super::{raw_weight, weight};

    /// Weighing the text never says less than weighing the parsed value,
    /// so the check before parsing is never laxer than the one after.
    #[test]
    fn the_text_weighs_at_least_what_the_value_does() {
        let long = "x".repeat(100);
        let docs = [
            "1".to_owned(),
            "[]".to_owned(),
            "[1,2,3]".to_owned(),
            r#"{"a":1,"b":[true,null,{"c":"d"}]}"#.to_owned(),
            format!(r#"{{"k":"{long}","e":"a\"b,[{{"}}"#),
            format!("[{}]", vec!["1"; 1000].join(",")),
            format!("[{}]", vec![r#"{"x":[1,2]}"#; 100].join(",")),
        ];
        for doc in docs {
            let value: serde_json::Value = serde_json::from_str(&doc).unwrap();
            let (raw, parsed) = (
                raw_weight(doc.as_bytes(), u64::MAX),
                weight(&value, u64::MAX),
            );
            assert!(raw >= parsed, "{doc}: {raw} < {parsed}");
        }
        assert_eq!(raw_weight(b"[1,1,1,1]", 3), 3, "counting stops at the cap");
    }
}
