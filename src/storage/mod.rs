//! Storage: where rendered files land.
//!
//! Each volume is its own small tmpfs mounted on kubelet's `target_path`
//! ([`tmpfs`]), reached by the volume manager only through the
//! [`VolumeRoots`] seam (a tmpfs per volume, or plain directories for
//! unprivileged runs), written only through the [`AtomicWriter`], whose paths are
//! [`RelativePath`]s that cannot escape the volume. Nothing here knows about
//! Vault or templates.

mod atomic;
#[cfg(test)]
pub mod memory;
mod path;
mod root;
pub mod selinux;
pub mod tmpfs;

use std::path::PathBuf;

pub use atomic::{AtomicWriter, FileContent, Payload, WriteOptions, WriteOutcome, remove_tree};
pub use path::{MAX_ELEMENT_BYTES, MAX_PATH_BYTES, RelativePath, check_disjoint};
pub use root::{
    Leftover, PlainDirectories, Prepared, RootKind, RootOptions, TmpfsRoots, VolumeRoots,
};

/// Everything that can go wrong while placing files on the node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file path from the volume attributes breaks a rule; the message says
    /// which, so the pod spec can be fixed.
    #[error("invalid file path {path:?}: {reason}")]
    InvalidPath {
        /// The offending path, escaped for printing.
        path: String,
        /// The rule it breaks.
        reason: String,
    },
    /// The rendered files are larger than the volume may hold; the previous
    /// files are left in place.
    #[error(
        "the rendered files take {bytes} bytes, more than the volume's limit of {limit} bytes; render less or split the volume"
    )]
    PayloadTooLarge {
        /// Size of the refused payload.
        bytes: u64,
        /// The limit in force.
        limit: u64,
    },
    /// The target path is (or contains) a symlink or a non-directory, which
    /// the driver never follows or replaces.
    #[error("refusing target path {path}: {reason}")]
    UnsafeTarget {
        /// The target path kubelet sent.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A mount-table operation failed (usually missing `CAP_SYS_ADMIN`: the
    /// driver must run privileged).
    #[error("could not {action} {path}: {errno}")]
    Mount {
        /// What was attempted.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The kernel's answer.
        errno: nix::errno::Errno,
    },
    /// A filesystem call failed; `ENOSPC` here means the volume's tmpfs is full.
    #[error("could not {action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// True when the failure is the volume running out of space or inodes.
    pub fn is_no_space(&self) -> bool {
        match self {
            Self::Io { source, .. } => {
                source.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32)
            }
            _ => false,
        }
    }
}
