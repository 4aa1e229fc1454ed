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

#[derive(Clone, Copy)]
struct Budget {
    iterations_left: u32,
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
    pub(super) fn start() -> Self {
        BUDGET.set(Some(Budget {
            iterations_left: MAX_LOOP_ITERATIONS,
            deadline: Instant::now() + MAX_RENDER_TIME,
        }));
        Self(())
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
        return Err(RenderErrorReason::Other(format!(
            "the templates' loops ran more than {MAX_LOOP_ITERATIONS} iterations in total; \
             iterate over smaller data or nest fewer loops"
        ))
        .into());
    }
    budget.iterations_left -= 1;
    BUDGET.set(Some(budget));
    check_time()
}

/// Checks the clock; helpers that copy or encode data call this.
pub(super) fn check_time() -> Result<(), RenderError> {
    let Some(budget) = BUDGET.get() else {
        return Err(unmetered());
    };
    if Instant::now() > budget.deadline {
        return Err(RenderErrorReason::Other(format!(
            "rendering took longer than {}s; simplify the templates (fewer nested loops or \
             helper calls over large values)",
            MAX_RENDER_TIME.as_secs()
        ))
        .into());
    }
    Ok(())
}

fn unmetered() -> RenderError {
    RenderErrorReason::Other("a template helper ran outside a volume render".to_owned()).into()
}
