//! What went wrong turning templates into files, and how a message is
//! kept short and free of the volume's data before anyone sees it.

use std::time::Duration;

use serde_json::Value;

use std::fmt::Write as _;

use super::budget::Limit;
use super::{
    MAX_ERROR_MESSAGE_BYTES, MAX_RENDER_DATA, MAX_SECRETS_PER_VOLUME, MAX_TEMPLATE_BYTES,
    RENDER_QUEUE, RENDER_THREADS,
};
use crate::storage::RelativePath;

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
pub(super) fn excerpt(mut message: String) -> String {
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
