//! The work one render may do.
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
//!   plus the size of its evaluated parameters ([`weight`]), and every loop
//!   iteration that copies an entry costs the entry's size;
//!
//! and a wall-clock backstop, [`MAX_RENDER_TIME`], checked by every helper
//! call, every loop iteration and every write of output. Exhausting any of
//! them fails the render with a message naming the limit.

use std::cell::Cell;
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

/// The work one render may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// Loop iterations, all loops and files together.
    pub(super) iterations: u32,
    /// Work units, all helper calls and files together.
    pub(super) work: u64,
    /// Wall-clock time.
    pub(super) time: Duration,
}

impl Limits {
    /// What any render may do (the documented limits).
    pub(super) const FULL: Self = Self {
        iterations: MAX_LOOP_ITERATIONS,
        work: MAX_RENDER_WORK,
        time: MAX_RENDER_TIME,
    };
}

#[derive(Clone, Copy)]
struct Budget {
    limits: Limits,
    iterations_left: u32,
    work_left: u64,
    deadline: Instant,
}

thread_local! {
    /// Rendering is synchronous, so a thread-local is an exact per-render
    /// slot (like the `secret` helper's scope).
    static BUDGET: Cell<Option<Budget>> = const { Cell::new(None) };
}

/// Holds the budget of one render; dropping it ends the render's budget.
pub(super) struct Metered(());

impl Metered {
    /// Starts a fresh budget on this thread.
    pub(super) fn start(limits: Limits) -> Self {
        BUDGET.set(Some(Budget {
            limits,
            iterations_left: limits.iterations,
            work_left: limits.work,
            deadline: Instant::now() + limits.time,
        }));
        Self(())
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        BUDGET.set(None);
    }
}

fn current() -> Result<Budget, RenderError> {
    BUDGET.get().ok_or_else(|| {
        RenderErrorReason::Other("a template helper ran outside a volume render".to_owned()).into()
    })
}

/// Charges one loop iteration that copies `copied` (the entry, when the
/// loop runs over a value rather than a path), and checks the clock.
pub(super) fn charge_iteration(copied: Option<&Value>) -> Result<(), RenderError> {
    let mut budget = current()?;
    if budget.iterations_left == 0 {
        return Err(RenderErrorReason::Other(format!(
            "the templates' loops ran more than {} iterations in total; \
             iterate over smaller data or nest fewer loops",
            budget.limits.iterations
        ))
        .into());
    }
    budget.iterations_left -= 1;
    BUDGET.set(Some(budget));
    match copied {
        Some(value) => charge(1, [value]),
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
    let mut budget = current()?;
    let mut cost = base;
    for value in values {
        // Counting stops at what is left: the count itself is bounded by
        // the budget.
        cost = cost.saturating_add(weight(value, budget.work_left.saturating_add(1)));
        if cost > budget.work_left {
            break;
        }
    }
    if cost > budget.work_left {
        budget.work_left = 0;
        BUDGET.set(Some(budget));
        return Err(RenderErrorReason::Other(format!(
            "the templates did more than {} units of work (helper calls and the Vault data \
             given to them); pass smaller values to helpers, or fewer times",
            budget.limits.work
        ))
        .into());
    }
    budget.work_left -= cost;
    BUDGET.set(Some(budget));
    check_time()
}

/// Checks the clock; helpers, loops and the output writer call this.
pub(super) fn check_time() -> Result<(), RenderError> {
    let budget = current()?;
    if Instant::now() > budget.deadline {
        return Err(time_exceeded(budget.limits.time).into());
    }
    Ok(())
}

/// The error a render past its time limit fails with.
pub(super) fn time_exceeded(limit: Duration) -> RenderErrorReason {
    RenderErrorReason::Other(format!(
        "rendering took longer than {limit:?}; simplify the templates (fewer nested loops or \
         helper calls over large values)"
    ))
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
