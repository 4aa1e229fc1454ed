//! Where a render's output goes: a capped buffer charged as it grows, or
//! nowhere (the collecting pass); and how a render error is described.

use handlebars::{Context, Handlebars, RenderContext, Renderable, Template};

use super::error::excerpt;
use super::{Error, MAX_RENDERED_BYTES, budget, go};
use crate::storage::RelativePath;

pub(super) fn render_one(
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
pub(super) struct DiscardedOutput(pub(super) usize);

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

/// The message of a render error, with its line and column, as an
/// excerpt.
fn describe(e: &handlebars::RenderError) -> String {
    let reason = e.reason().to_string();
    excerpt(match (e.line_no, e.column_no) {
        (Some(line), Some(col)) => format!("line {line}, column {col}: {reason}"),
        _ => reason,
    })
}
