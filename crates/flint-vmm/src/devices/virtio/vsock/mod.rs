//! virtio-vsock (virtio 1.2 §5.10) with Firecracker's "hybrid vsock" host side: the guest's
//! stream sockets to CID 2 (the host) are Unix sockets on the host.
//!
//! - **Host to guest:** flint listens on `uds_path`. A host client connects and writes
//!   `CONNECT <port>\n`; flint asks the guest for a connection to `<port>` from a host port it
//!   picks, and once the guest accepts, writes `OK <host port>\n` to the client; from then on
//!   the socket carries the stream. A guest that refuses (nothing listens: RST) or does not
//!   answer within [`REQUEST_TIMEOUT`] gets the client closed, as does a line that is not
//!   `CONNECT <port>` within [`MAX_CONNECT_LINE`] bytes and [`CONNECT_LINE_TIMEOUT`].
//! - **Guest to host:** a guest connection to CID 2 port `P` connects to the Unix socket
//!   `<uds_path>_<P>`, if something listens there; otherwise the guest gets an RST.
//!
//! One device per VM, three queues (RX, TX, event), the guest's CID in its config space.
//! Everything runs on the device's worker thread ([`muxer::VsockWorker`]): the listener and every
//! host socket are non-blocking and sit in one epoll instance of the device's, the worker's
//! single backend descriptor; a guest never makes flint wait on a host socket, and a host
//! socket never makes flint wait for the guest.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections and [`MAX_PENDING_CLIENTS`] host clients
//! that have not said where they want to go yet (more are closed at once); each connection
//! buffers at most [`connection::CONN_BUF_SIZE`] bytes of the guest's for a host socket that
//! does not read (the credit flint gives the guest; a guest that sends more is reset), and
//! reads a host socket only while the guest has credit and RX buffers for it.
//!
//! **Confinement:** the listener is bound (and its remover process started, see
//! [`crate::api::socket::Remover`]) while [`crate::builder::Inputs::open`] opens flint's
//! inputs, before Landlock and the jail. Guest-initiated connections look `<uds_path>_<P>` up
//! at connect time: Landlock up to the ABI flint asks for (V6) does not restrict connecting to
//! a pathname Unix socket, so they work under it; under `--jail` the root is an empty tmpfs,
//! the path does not exist there, and the guest gets an RST. The worker thread has its own
//! seccomp list ([`ThreadKind::VsockWorker`](crate::sandbox::seccomp::ThreadKind)): it may make
//! Unix stream sockets and connect them, which no other flint thread may.
//!
//! A VM with a vsock device cannot be snapshotted: its connections are host sockets.

pub mod connection;
pub mod host;
pub mod muxer;
pub mod packet;

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmm_sys_util::epoll::Epoll;
use vmm_sys_util::timerfd::TimerFd;

use super::{
    read_config_bytes, ActivateContext, QueueWorker, VirtioDevice, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
};
use crate::api::socket::{bind_private, Remover};
pub use muxer::{VsockStats, VsockWorker};

/// virtio device ID of a socket device.
pub const DEVICE_ID: u32 = 19;
/// RX, TX and event queues, each this size.
pub const QUEUE_SIZE: u16 = 256;
const NUM_QUEUES: usize = 3;

/// Connections at once, host- and guest-initiated together.
pub const MAX_CONNECTIONS: usize = 64;
/// Host clients accepted that have not sent their `CONNECT` line yet.
pub const MAX_PENDING_CLIENTS: usize = 16;
/// The longest `CONNECT <port>\n` line taken, newline included.
pub const MAX_CONNECT_LINE: usize = 32;
/// How long a host client has to send its line.
pub const CONNECT_LINE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the guest has to accept or refuse a host client's connection.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a guest's closed connection waits for a host that does not read its last data.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// The smallest CID a guest may have (0-2 are the hypervisor, local and host).
pub const MIN_GUEST_CID: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error(
        "--vsock socket={0}: the path exists (flint makes the socket itself and removes it at \
         exit: remove the old file or choose another path)"
    )]
    Exists(String),
    #[error("--vsock socket={path}: {what}")]
    Io {
        path: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The host side of the device: the listening socket (owner-only, removed when flint exits),
/// and the epoll instance and timer the worker serves every host socket with.
pub struct VsockBackend {
    path: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    /// Armed by the worker for the nearest deadline (a CONNECT line, a REQUEST, a close).
    timer: Mutex<TimerFd>,
    _remover: Remover,
}

impl VsockBackend {
    /// Binds `path` (0600; the path must not exist) and makes the epoll instance and timer:
    /// before flint confines itself, and while no thread runs (it forks the socket's remover).
    pub fn bind(path: &Path) -> Result<VsockBackend, VsockError> {
        let shown = path.display().to_string();
        let io = |what: &'static str| {
            let path = shown.clone();
            move |source| VsockError::Io { path, what, source }
        };
        match std::fs::symlink_metadata(path) {
            Ok(_) => return Err(VsockError::Exists(shown)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot look at the path")(e)),
        }
        let (listener, remover) =
            bind_private(path, c"flint-vsock-rm").map_err(|(what, e)| io(what)(e))?;
        let epoll = Epoll::new().map_err(io("cannot make an epoll instance for it"))?;
        let timer = TimerFd::new()
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
            .and_then(|t| set_nonblocking(t.as_raw_fd()).map(|()| t))
            .map_err(io("cannot make a timer for it"))?;
        Ok(VsockBackend {
            path: path.to_path_buf(),
            listener,
            epoll,
            timer: Mutex::new(timer),
            _remover: remover,
        })
    }

    /// Where host clients connect, and the prefix of the sockets guest connections reach.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn listener_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }
}

fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The register side of the vsock device.
pub struct Vsock {
    cid: u64,
    backend: Arc<VsockBackend>,
    config: [u8; 8],
}

impl Vsock {
    /// The device for a guest with CID `cid` (at least [`MIN_GUEST_CID`], checked by the
    /// config), served through `backend`.
    pub fn new(cid: u32, backend: VsockBackend) -> Vsock {
        let cid = u64::from(cid);
        Vsock {
            cid,
            backend: Arc::new(backend),
            config: cid.to_le_bytes(),
        }
    }

    /// The worker for the driver's three queues (`None` without them). Makes no system call:
    /// this runs on the vCPU that set DRIVER_OK.
    pub fn start(&self, ctx: ActivateContext) -> Option<VsockWorker> {
        VsockWorker::new(ctx, self.cid, self.backend.clone())
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; NUM_QUEUES]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Option<Box<dyn QueueWorker>> {
        self.start(ctx).map(|w| Box::new(w) as Box<dyn QueueWorker>)
    }

    // A reset drops the worker, and with it every connection (host clients see the end of
    // their stream); the listener stays for the next driver.
}

#[cfg(test)]
mod tests;
