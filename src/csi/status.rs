//! The one place where errors become gRPC status codes. Every variant is
//! matched explicitly (no catch-all), so a new error forces a decision.
//!
//! Kubelet treats `UNAVAILABLE`, `ABORTED`, `DEADLINE_EXCEEDED` and
//! `RESOURCE_EXHAUSTED` as "uncertain" and retries; any other code is final
//! for that attempt. Vault being down is therefore `UNAVAILABLE`, and a
//! mistake in the pod spec is `INVALID_ARGUMENT`.

use tonic::{Code, Status};

use crate::volume::Error;
use crate::{render, storage, vault};

/// The gRPC code for a volume error.
pub fn code(error: &Error) -> Code {
    match error {
        Error::MissingField { .. }
        | Error::InvalidVolumeId { .. }
        | Error::InvalidTargetPath { .. }
        | Error::BlockVolume
        | Error::NotEphemeral
        | Error::InvalidAttribute { .. }
        | Error::UnknownAttribute { .. }
        | Error::MissingAttribute { .. }
        | Error::Identity(_) => Code::InvalidArgument,
        Error::Template(e) => template_code(e),
        Error::Login { source, .. } => vault_code(source, Code::InvalidArgument),
        Error::Fetch { source, .. } => vault_code(source, Code::FailedPrecondition),
        Error::Storage(e) => storage_code(e),
        Error::MemoryBudget(_) => Code::ResourceExhausted,
        Error::State { .. } => Code::Internal,
        Error::OperationPending { .. } => Code::Aborted,
        Error::ShuttingDown => Code::Unavailable,
        Error::VaultTimeout { .. } | Error::CallDeadline => Code::DeadlineExceeded,
        Error::AlreadyExists { .. } => Code::AlreadyExists,
        Error::TargetMismatch { .. } => Code::FailedPrecondition,
    }
}

fn template_code(error: &render::Error) -> Code {
    match error {
        render::Error::Parse { .. }
        | render::Error::TooLarge { .. }
        | render::Error::Render { .. }
        | render::Error::InvalidRequest(_)
        | render::Error::TooManySecrets { .. }
        | render::Error::DataTooLarge
        | render::Error::TimedOut { .. } => Code::InvalidArgument,
        // The node is overloaded with renders: kubelet retries.
        render::Error::Busy => Code::ResourceExhausted,
        // Only reachable if the fetch loop gives up, which it does not.
        render::Error::NeedsSecrets(_) => Code::Internal,
    }
}

/// 403 → `PERMISSION_DENIED`; unreachable, 5xx, 429 → `UNAVAILABLE`;
/// 404 → `not_found` (`INVALID_ARGUMENT` for a login: a wrong auth mount;
/// `FAILED_PRECONDITION` for a secret: it does not exist yet); other 4xx →
/// `INVALID_ARGUMENT`.
fn vault_code(error: &vault::Error, not_found: Code) -> Code {
    match error {
        vault::Error::Unreachable { .. }
        | vault::Error::RateLimited { .. }
        | vault::Error::Held { .. }
        | vault::Error::InvalidResponse { .. } => Code::Unavailable,
        vault::Error::Config { .. } => Code::InvalidArgument,
        vault::Error::Status { status, .. } => match *status {
            401 | 403 => Code::PermissionDenied,
            404 => not_found,
            300..=399 | 412 | 429 | 500..=599 => Code::Unavailable,
            _ => Code::InvalidArgument,
        },
    }
}

fn storage_code(error: &storage::Error) -> Code {
    match error {
        storage::Error::InvalidPath { .. }
        | storage::Error::UnsafeTarget { .. }
        | storage::Error::PayloadTooLarge { .. } => Code::InvalidArgument,
        storage::Error::Io { .. } if error.is_no_space() => Code::ResourceExhausted,
        storage::Error::Mount { .. } | storage::Error::Io { .. } => Code::Internal,
    }
}

/// The status kubelet receives: the code above and the full cause chain, so
/// the pod's events say what to fix.
pub fn to_status(error: &Error) -> Status {
    Status::new(code(error), full_message(error))
}

/// An error and its sources, joined with `: `, skipping sources whose text
/// the outer message already contains.
pub fn full_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cursor = error.source();
    while let Some(source) = cursor {
        let part = source.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cursor = source.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> vault::Error {
        vault::Error::Status {
            operation: "read",
            status: code,
            message: String::new(),
        }
    }

    #[test]
    fn vault_answers_map_to_the_codes_kubelet_expects() {
        let login = |source| Error::Login {
            mount: "kubernetes".into(),
            role: "r".into(),
            source,
        };
        let fetch = |source| Error::Fetch {
            path: "p".into(),
            source,
        };
        let table = [
            (login(status(403)), Code::PermissionDenied),
            (login(status(400)), Code::InvalidArgument),
            (login(status(500)), Code::Unavailable),
            (login(status(503)), Code::Unavailable),
            (fetch(status(404)), Code::FailedPrecondition),
            (fetch(status(403)), Code::PermissionDenied),
            (
                fetch(vault::Error::RateLimited {
                    operation: "read",
                    status: 429,
                    retry_after: None,
                    message: String::new(),
                }),
                Code::Unavailable,
            ),
            (
                fetch(vault::Error::Unreachable {
                    operation: "read",
                    address: "a".into(),
                    reason: "r".into(),
                }),
                Code::Unavailable,
            ),
            (
                Error::OperationPending {
                    volume_id: "v".into(),
                },
                Code::Aborted,
            ),
            (
                Error::AlreadyExists {
                    volume_id: "v".into(),
                },
                Code::AlreadyExists,
            ),
            (
                Error::UnknownAttribute { key: "k".into() },
                Code::InvalidArgument,
            ),
            (Error::VaultTimeout { secs: 60.0 }, Code::DeadlineExceeded),
            (Error::CallDeadline, Code::DeadlineExceeded),
        ];
        for (error, expected) in table {
            assert_eq!(code(&error), expected, "{error}");
        }
    }
}
