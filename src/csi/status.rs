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
        Error::Login { source, .. } => login_code(source),
        Error::Fetch { source, .. } => vault_code(source, Code::FailedPrecondition),
        // Refresh failures reach kubelet only through a republish that
        // re-creates a lost volume: all are retried.
        Error::TokenRenewal { source } => vault_code(source, Code::Unavailable),
        Error::Storage(e) => storage_code(e),
        Error::MemoryBudget(_) | Error::MemoryPressure(_) => Code::ResourceExhausted,
        Error::State { .. } => Code::Internal,
        Error::OperationPending { .. } => Code::Aborted,
        Error::NoVaultToken | Error::IdentityStale { .. } | Error::ShuttingDown => {
            Code::Unavailable
        }
        Error::VaultTimeout { .. } | Error::CallDeadline => Code::DeadlineExceeded,
        Error::AlreadyExists { .. } => Code::AlreadyExists,
        Error::TargetMismatch { .. } | Error::TargetInUse { .. } => Code::FailedPrecondition,
    }
}

/// A login Vault refused is `PERMISSION_DENIED` whatever status the auth
/// method chose (kubernetes auth answers 403 for an unbound service
/// account, the jwt method 400); a missing auth mount (404) is a mistake in
/// the volume's attributes.
fn login_code(error: &vault::Error) -> Code {
    match error {
        vault::Error::Status { status, .. } if matches!(*status, 400 | 401 | 403) => {
            Code::PermissionDenied
        }
        other => vault_code(other, Code::InvalidArgument),
    }
}

fn template_code(error: &render::Error) -> Code {
    match error {
        render::Error::Parse { .. }
        | render::Error::TooLarge { .. }
        | render::Error::TooComplex { .. }
        | render::Error::Render { .. }
        | render::Error::Limit { .. }
        | render::Error::InvalidRequest(_)
        | render::Error::TooManySecrets { .. }
        | render::Error::DataTooLarge
        | render::Error::TimedOut { .. } => Code::InvalidArgument,
        // The node is overloaded with renders: kubelet retries.
        render::Error::Busy | render::Error::OverBudget(_) => Code::ResourceExhausted,
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
        vault::Error::OverBudget { .. } => Code::ResourceExhausted,
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

/// One example of every volume error, with realistic values, and the code
/// kubelet receives for it. The unit tests check each against [`code`] and
/// that no variant is missing; the error-code table of the operator's
/// troubleshooting page is generated from it (`tests/docs_reference.rs`),
/// so the docs show the codes and messages the driver really sends.
#[allow(clippy::too_many_lines)] // one row per variant reads best as one table
pub fn examples() -> Vec<(Error, Code)> {
    let volume_id =
        || "csi-3c5e0f2a9d7b41e8a6c2f1d0b9e87a4c5d3f2e1a0b9c8d7e6f5a4b3c2d1e0f9a".to_owned();
    let refused = |operation, status, message: &str| vault::Error::Status {
        operation,
        status,
        message: message.to_owned(),
    };
    vec![
        (Error::MissingField { field: "target_path" }, Code::InvalidArgument),
        (
            Error::InvalidVolumeId {
                reason: "it contains `/` or NUL".into(),
            },
            Code::InvalidArgument,
        ),
        (
            Error::InvalidTargetPath {
                path: "/var/lib/kubelet/plugins/x".into(),
                reason: "it is not under /var/lib/kubelet/pods (set --kubelet-dir if kubelet uses another root)".into(),
            },
            Code::InvalidArgument,
        ),
        (Error::BlockVolume, Code::InvalidArgument),
        (Error::NotEphemeral, Code::InvalidArgument),
        (
            Error::InvalidAttribute {
                key: "fileMode".into(),
                reason: "use an octal mode such as 0440".into(),
            },
            Code::InvalidArgument,
        ),
        (
            Error::UnknownAttribute {
                key: "fileMod".into(),
            },
            Code::InvalidArgument,
        ),
        (
            Error::MissingAttribute { key: "roleName" },
            Code::InvalidArgument,
        ),
        (
            Error::Identity(vault::IdentityError::MissingAudience {
                audience: "vault".into(),
                available: Vec::new(),
            }),
            Code::InvalidArgument,
        ),
        (
            Error::Template(render::Error::Busy),
            Code::ResourceExhausted,
        ),
        (
            Error::Login {
                mount: "kubernetes".into(),
                role: "example".into(),
                source: refused("login", 403, "permission denied"),
            },
            Code::PermissionDenied,
        ),
        (Error::NoVaultToken, Code::Unavailable),
        (
            Error::TokenRenewal {
                source: refused("renew_self", 503, "Vault is sealed"),
            },
            Code::Unavailable,
        ),
        (
            Error::IdentityStale {
                audience: "vault".into(),
            },
            Code::Unavailable,
        ),
        (
            Error::Fetch {
                path: "secret/data/myapp/config".into(),
                source: refused("read", 404, "no secret at secret/data/myapp/config"),
            },
            Code::FailedPrecondition,
        ),
        (
            Error::Storage(storage::Error::PayloadTooLarge {
                bytes: 600_000,
                limit: 520_192,
            }),
            Code::InvalidArgument,
        ),
        (
            Error::MemoryBudget(crate::volume::memory::Exhausted {
                limit: crate::volume::memory::Limit::Node,
                needed: 1_048_576,
                used: 83_361_792,
                budget: 83_886_080,
            }),
            Code::ResourceExhausted,
        ),
        (
            Error::MemoryPressure(crate::volume::memory::pressure::Pressure {
                working_set: 127_926_272,
                limit: 134_217_728,
            }),
            Code::ResourceExhausted,
        ),
        (
            Error::State {
                path: "/run/vault-csi-driver/volumes/csi-3c5e.json".into(),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            },
            Code::Internal,
        ),
        (
            Error::OperationPending {
                volume_id: volume_id(),
            },
            Code::Aborted,
        ),
        (
            Error::AlreadyExists {
                volume_id: volume_id(),
            },
            Code::AlreadyExists,
        ),
        (Error::ShuttingDown, Code::Unavailable),
        (Error::VaultTimeout { secs: 60.0 }, Code::DeadlineExceeded),
        (Error::CallDeadline, Code::DeadlineExceeded),
        (
            Error::TargetMismatch {
                volume_id: volume_id(),
                existing: "/var/lib/kubelet/pods/0b6e/volumes/kubernetes.io~csi/secrets/mount".into(),
            },
            Code::FailedPrecondition,
        ),
        (
            Error::TargetInUse {
                target: "/var/lib/kubelet/pods/0b6e/volumes/kubernetes.io~csi/secrets/mount".into(),
                volume_id: volume_id(),
            },
            Code::FailedPrecondition,
        ),
    ]
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

    /// The row each variant is tested in. The match is exhaustive: a new
    /// variant does not compile until it has a row number, and the table
    /// test below fails until that row exists.
    fn row(error: &Error) -> usize {
        match error {
            Error::MissingField { .. } => 0,
            Error::InvalidVolumeId { .. } => 1,
            Error::InvalidTargetPath { .. } => 2,
            Error::BlockVolume => 3,
            Error::NotEphemeral => 4,
            Error::InvalidAttribute { .. } => 5,
            Error::UnknownAttribute { .. } => 6,
            Error::MissingAttribute { .. } => 7,
            Error::Identity(_) => 8,
            Error::Template(_) => 9,
            Error::Login { .. } => 10,
            Error::NoVaultToken => 11,
            Error::TokenRenewal { .. } => 12,
            Error::IdentityStale { .. } => 13,
            Error::Fetch { .. } => 14,
            Error::Storage(_) => 15,
            Error::MemoryBudget(_) => 16,
            Error::State { .. } => 17,
            Error::OperationPending { .. } => 18,
            Error::AlreadyExists { .. } => 19,
            Error::ShuttingDown => 20,
            Error::VaultTimeout { .. } => 21,
            Error::CallDeadline => 22,
            Error::TargetMismatch { .. } => 23,
            Error::TargetInUse { .. } => 24,
            Error::MemoryPressure(_) => 25,
        }
    }

    /// Number of variants: one more than the largest row.
    const VARIANTS: usize = 26;

    /// Every variant has an example, with the code kubelet must see for it.
    #[test]
    fn every_error_has_a_code_kubelet_acts_on_correctly() {
        let table = examples();
        let mut covered = [false; VARIANTS];
        for (error, expected) in &table {
            covered[row(error)] = true;
            assert_eq!(code(error), *expected, "{error}");
        }
        let missing: Vec<usize> = (0..VARIANTS).filter(|i| !covered[*i]).collect();
        assert!(missing.is_empty(), "rows without a test: {missing:?}");
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
            (login(status(400)), Code::PermissionDenied),
            (login(status(401)), Code::PermissionDenied),
            (login(status(404)), Code::InvalidArgument),
            (login(status(500)), Code::Unavailable),
            (login(status(503)), Code::Unavailable),
            (fetch(status(404)), Code::FailedPrecondition),
            (fetch(status(403)), Code::PermissionDenied),
            (fetch(status(412)), Code::Unavailable),
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
                fetch(vault::Error::Config { reason: "r".into() }),
                Code::InvalidArgument,
            ),
        ];
        for (error, expected) in table {
            assert_eq!(code(&error), expected, "{error}");
        }
    }
}
