//! CSI: the gRPC surface kubelet talks to, on a unix socket.
//!
//! [`serve`] binds the socket privately (mode 0600 set before `bind`, so
//! there is no window where others can connect), replaces a stale socket
//! file but refuses to remove anything else, and serves the Identity and
//! Node services until shutdown, letting in-flight calls finish (the
//! caller, `app`, bounds that drain by `--shutdown-timeout`). [`deadline`]
//! reads the caller's `grpc-timeout` so calls are answered before it;
//! [`intake`] bounds the bytes of requests received and decoded at once.

pub mod deadline;
mod identity;
pub mod intake;
mod node;
mod redact;
pub mod status;

use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket,
};
use nix::sys::stat::{Mode, fchmod};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;

pub use identity::IdentityService;
pub use node::NodeService;
pub use redact::{RedactedContext, RedactedSecrets};

use crate::proto::identity_server::IdentityServer;

/// Largest CSI request the driver decodes: a pod object, attributes and
/// all, cannot weigh more than etcd's 1.5 MiB, so anything larger is not
/// kubelet's; tonic's default (4 MiB) would let a request cost several
/// times that while it is decoded.
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;
use crate::proto::node_server::NodeServer;

/// Why the CSI endpoint could not be served.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--endpoint` is not `unix://<absolute path>`.
    #[error("--endpoint {0:?} must look like unix:///csi/csi.sock")]
    BadEndpoint(String),
    /// Something other than a socket sits at the socket path.
    #[error("{0} exists and is not a socket; remove it or choose another --endpoint")]
    NotASocket(PathBuf),
    /// Creating or binding the socket failed.
    #[error("could not listen on {path}: {reason}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The gRPC server stopped with an error.
    #[error("the gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// The socket path of a `unix://` endpoint.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, Error> {
    let path = endpoint
        .strip_prefix("unix://")
        .ok_or_else(|| Error::BadEndpoint(endpoint.to_owned()))?;
    let path = Path::new(path);
    if !path.is_absolute() {
        return Err(Error::BadEndpoint(endpoint.to_owned()));
    }
    Ok(path.to_path_buf())
}

/// Binds the socket at `path` with mode 0600, replacing a stale socket.
pub fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, Error> {
    let fail = |reason: String| Error::Listen {
        path: path.to_path_buf(),
        reason,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path)
                .map_err(|e| fail(format!("removing the stale socket: {e}")))?;
        }
        Ok(_) => return Err(Error::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(parent)
            .map_err(|e| fail(format!("creating {}: {e}", parent.display())))?;
    }
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| fail(e.to_string()))?;
    // The socket file takes the socket inode's mode at bind: set it first.
    fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(0o600)).map_err(|e| fail(e.to_string()))?;
    let addr = UnixAddr::new(path).map_err(|e| fail(e.to_string()))?;
    bind(fd.as_raw_fd(), &addr).map_err(|e| fail(e.to_string()))?;
    listen(&fd, Backlog::new(128).map_err(|e| fail(e.to_string()))?)
        .map_err(|e| fail(e.to_string()))?;
    let std_listener = std::os::unix::net::UnixListener::from(fd);
    std_listener
        .set_nonblocking(true)
        .map_err(|e| fail(e.to_string()))?;
    tokio::net::UnixListener::from_std(std_listener).map_err(|e| fail(e.to_string()))
}

/// Serves Identity and Node on `listener` until `shutdown` fires; calls in
/// flight at that moment run to completion, or until the caller stops
/// polling the returned future (which closes their connections).
pub async fn serve(
    listener: tokio::net::UnixListener,
    identity: IdentityService,
    node: NodeService,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    tonic::transport::Server::builder()
        .initial_stream_window_size(intake::WINDOW_BYTES)
        .initial_connection_window_size(intake::WINDOW_BYTES)
        .layer(intake::IntakeLayer::new(intake::INTAKE_BYTES))
        .add_service(IdentityServer::new(identity).max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(NodeServer::new(node).max_decoding_message_size(MAX_REQUEST_BYTES))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            shutdown.cancelled().await;
        })
        .await?;
    Ok(())
}

/// Builds both services sharing one manager.
pub fn services(
    driver_name: String,
    node_id: String,
    manager: Arc<crate::volume::VolumeManager>,
    metrics: Arc<crate::metrics::Metrics>,
) -> (IdentityService, NodeService) {
    (
        IdentityService::new(driver_name, Arc::clone(&metrics)),
        NodeService::new(node_id, manager, metrics),
    )
}
