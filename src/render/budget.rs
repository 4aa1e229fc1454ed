//! The work one render may do.
//!
//! A template's size and structure are bounded when it is compiled, but a
//! loop's cost depends on the data: `{{#each}}` nested three deep over a
//! Vault array of a thousand entries runs a billion iterations, with no
//! output for the size caps to stop. Every render therefore runs under a
//! budget of loop iterations ([`MAX_LOOP_ITERATIONS`], deterministic, so a
//! template that fits never fails on a slower node) and a wall-clock
//! backstop ([`MAX_RENDER_TIME`]) for work that is not a loop iteration
//! (a tag that compares or copies a large value, repeated in a loop body).
//! Helpers charge the budget; exhausting it fails the render with a message
//! naming the limit.

use std::cell::Cell;
use std::time::Duration;

use handlebars::{RenderError, RenderErrorReason};
use tokio::time::Instant;

/// Most `{{#each}}` iterations, summed over every loop and every file, in
/// one render of a volume. Real templates iterate over tens of keys.
pub const MAX_LOOP_ITERATIONS: u32 = 100_000;

/// Longest one render of a volume may take. Real templates render in
/// microseconds; this only stops work the iteration budget cannot see.
pub const MAX_RENDER_TIME: Duration = Duration::from_secs(2);

/// The work one render may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// Loop iterations, all loops and files together.
    pub(super) iterations: u32,
    /// Wall-clock time.
    pub(super) time: Duration,
}

impl Limits {
    /// What any render may do (the documented limits).
    pub(super) const FULL: Self = Self {
        iterations: MAX_LOOP_ITERATIONS,
        time: MAX_RENDER_TIME,
    };
    /// What a render may do on an async worker thread before it is moved
    /// to the blocking pool: far more than typical templates need (tens of
    /// microseconds), far less than would stall other calls.
    pub(super) const INLINE: Self = Self {
        iterations: 1_000,
        time: Duration::from_millis(1),
    };
}

#[derive(Clone, Copy)]
struct Budget {
    limits: Limits,
    iterations_left: u32,
    deadline: Instant,
    exhausted: bool,
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
            deadline: Instant::now() + limits.time,
            exhausted: false,
        }));
        Self(())
    }

    /// Whether the render ran out of budget (and failed for that reason).
    #[allow(clippy::unused_self)] // a method on the guard: only meaningful while it lives
    pub(super) fn exhausted(&self) -> bool {
        BUDGET.get().is_some_and(|b| b.exhausted)
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        BUDGET.set(None);
    }
}

/// Charges one loop iteration, and checks the clock.
pub(super) fn charge_iteration() -> Result<(), RenderError> {
    let Some(mut budget) = BUDGET.get() else {
        return Err(unmetered());
    };
    if budget.iterations_left == 0 {
        budget.exhausted = true;
        BUDGET.set(Some(budget));
        return Err(RenderErrorReason::Other(format!(
            "the templates' loops ran more than {} iterations in total; \
             iterate over smaller data or nest fewer loops",
            budget.limits.iterations
        ))
        .into());
    }
    budget.iterations_left -= 1;
    BUDGET.set(Some(budget));
    check_time()
}

/// Checks the clock; helpers that copy or encode data call this.
pub(super) fn check_time() -> Result<(), RenderError> {
    let Some(mut budget) = BUDGET.get() else {
        return Err(unmetered());
    };
    if Instant::now() > budget.deadline {
        budget.exhausted = true;
        BUDGET.set(Some(budget));
        return Err(RenderErrorReason::Other(format!(
            "rendering took longer than {:?}; simplify the templates (fewer nested loops or \
             helper calls over large values)",
            budget.limits.time
        ))
        .into());
    }
    Ok(())
}

fn unmetered() -> RenderError {
    RenderErrorReason::Other("a template helper ran outside a volume render".to_owned()).into()
}
