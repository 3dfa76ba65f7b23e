//! The connection to a vhost-user-fs backend (virtiofsd): opened and checked while flint can
//! still open things, before it confines itself; used by the device from then on.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::VhostBackend;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("--fs socket={0}: cannot connect to it")]
    Connect(String, #[source] std::io::Error),
    #[error("the backend refused {0}")]
    Protocol(&'static str, #[source] vhost::Error),
    #[error("the backend does not offer VIRTIO_F_VERSION_1 (a virtio 1.x device)")]
    NotModern,
    #[error("the virtio-fs tag '{0}' must be 1 to 36 bytes")]
    Tag(String),
    #[error("creating a notification eventfd failed")]
    EventFd(#[source] std::io::Error),
    #[error("guest memory is not shareable (a memfd) as a vhost-user backend needs it")]
    MemoryNotShared,
    #[error("the driver put a ring outside guest memory")]
    RingOutsideMemory,
    #[error("cannot set a timeout on the vhost-user socket")]
    Timeout(#[source] std::io::Error),
    #[error("{0}")]
    Daemon(String),
}

/// How long flint waits for one answer from the backend. A backend that stops answering
/// leaves the device broken, never a vCPU stuck (activation and reset run on vCPU threads).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected, checked vhost-user-fs backend.
pub struct Backend {
    frontend: Frontend,
    /// The socket itself, watched for the backend hanging up.
    stream: UnixStream,
    features: u64,
    protocol_features: bool,
}

impl Backend {
    /// Connects to the backend listening on `path`.
    pub fn connect(path: &Path) -> Result<Backend, FsError> {
        let stream = UnixStream::connect(path)
            .map_err(|e| FsError::Connect(path.display().to_string(), e))?;
        Backend::open(stream)
    }

    /// Takes the backend on `stream` (connected): becomes its owner and agrees on features.
    pub fn open(stream: UnixStream) -> Result<Backend, FsError> {
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .and_then(|_| stream.set_write_timeout(Some(REPLY_TIMEOUT)))
            .map_err(FsError::Timeout)?;
        let watched = stream.try_clone().map_err(FsError::Timeout)?;
        let mut frontend = Frontend::from_stream(stream, super::NUM_QUEUES as u64);
        let step = |what: &'static str| move |e| FsError::Protocol(what, e);
        frontend.set_owner().map_err(step("SET_OWNER"))?;
        let features = frontend.get_features().map_err(step("GET_FEATURES"))?;
        if features & super::VIRTIO_F_VERSION_1 == 0 {
            return Err(FsError::NotModern);
        }
        let protocol_features = features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0;
        if protocol_features {
            let offered = frontend
                .get_protocol_features()
                .map_err(step("GET_PROTOCOL_FEATURES"))?;
            // REPLY_ACK: every message is answered, so a backend's refusal (a memory table it
            // cannot map, say) is seen where it happens instead of as a silent device.
            let wanted = offered & VhostUserProtocolFeatures::REPLY_ACK;
            frontend
                .set_protocol_features(wanted)
                .map_err(step("SET_PROTOCOL_FEATURES"))?;
        }
        Ok(Backend {
            frontend,
            stream: watched,
            features,
            protocol_features,
        })
    }

    pub(super) fn frontend(&self) -> Frontend {
        self.frontend.clone()
    }

    /// The virtio features the backend offers.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Whether vhost-user protocol features were agreed (rings then need enabling).
    pub fn protocol_features(&self) -> bool {
        self.protocol_features
    }

    /// A descriptor of the socket, to watch from another thread for the backend going away.
    pub fn watch_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        self.stream.as_fd().try_clone_to_owned()
    }
}
