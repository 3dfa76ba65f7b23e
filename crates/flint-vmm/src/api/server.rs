//! The API server: an `event-manager` subscriber on the control loop that accepts connections,
//! reads requests (with any file descriptors sent beside them), and answers each through the
//! [`Controller`]. Nothing here blocks: sockets are non-blocking, a client that does not read
//! its (small) response loses its connection.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Instant;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::http::{self, Parsed, Response};
use super::{route, Controller, MAX_CONNECTIONS};

/// File descriptors a client may send with one request (a snapshot's files).
pub const MAX_FDS: usize = 2;

struct Connection {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Descriptors received and not yet given to a request.
    files: Vec<File>,
    /// When it last sent something (or connected).
    last_active: Instant,
}

pub struct ApiServer<C: Controller> {
    listener: UnixListener,
    connections: HashMap<RawFd, Connection>,
    controller: C,
}

impl<C: Controller> ApiServer<C> {
    pub fn new(listener: UnixListener, controller: C) -> Self {
        ApiServer {
            listener,
            connections: HashMap::new(),
            controller,
        }
    }

    fn accept(&mut self, ops: &mut EventOps) {
        loop {
            // Non-blocking from the start (no FIONBIO ioctl for seccomp to allow).
            // SAFETY: null address pointers are allowed; the listener is a valid socket.
            let raw = unsafe {
                libc::accept4(
                    self.listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if raw < 0 {
                return;
            }
            // SAFETY: accept4 just returned this descriptor; nothing else owns it.
            let stream = unsafe { UnixStream::from_raw_fd(raw) };
            // Full: the connection idle longest makes room, so idle clients cannot lock
            // the API out.
            if self.connections.len() >= MAX_CONNECTIONS {
                let oldest = self
                    .connections
                    .iter()
                    .min_by_key(|(_, c)| c.last_active)
                    .map(|(fd, _)| *fd);
                if let Some(fd) = oldest {
                    let _ = ops.remove(Events::new_raw(fd, EventSet::IN));
                    self.connections.remove(&fd);
                }
            }
            let fd = stream.as_raw_fd();
            if ops.add(Events::new_raw(fd, EventSet::IN)).is_ok() {
                self.connections.insert(
                    fd,
                    Connection {
                        stream,
                        buf: Vec::new(),
                        files: Vec::new(),
                        last_active: Instant::now(),
                    },
                );
            }
        }
    }

    /// Reads what the connection has; answers every whole request. Returns whether to keep it.
    fn serve(&mut self, fd: RawFd) -> bool {
        let Some(conn) = self.connections.get_mut(&fd) else {
            return false;
        };
        let mut chunk = [0u8; 4096];
        let mut fds = [-1; MAX_FDS];
        let mut iov = [libc::iovec {
            iov_base: chunk.as_mut_ptr().cast(),
            iov_len: chunk.len(),
        }];
        // SAFETY: the iovec points at `chunk`, which may take any bytes.
        let received = unsafe { conn.stream.recv_with_fds(&mut iov, &mut fds) };
        let (n, nfds) = match received {
            Ok((0, _)) => return false,
            Ok(r) => r,
            Err(e) => return e.errno() == libc::EAGAIN || e.errno() == libc::EINTR,
        };
        for &raw in &fds[..nfds.min(MAX_FDS)] {
            // SAFETY: recvmsg just made these descriptors for this process; nothing else
            // owns them.
            conn.files.push(unsafe { File::from_raw_fd(raw) });
        }
        conn.buf.extend_from_slice(&chunk[..n]);
        conn.last_active = Instant::now();
        if conn.files.len() > MAX_FDS {
            write(&conn.stream, &too_many_files().to_bytes(true));
            return false;
        }
        loop {
            let Some(conn) = self.connections.get_mut(&fd) else {
                return false;
            };
            let (response, close) = match http::parse(&conn.buf) {
                Parsed::Incomplete => return true,
                Parsed::Bad(r) => (r, true),
                Parsed::Request(req, used) => {
                    conn.buf.drain(..used);
                    let files = std::mem::take(&mut conn.files);
                    let response = match route(&req, files) {
                        Ok(cmd) => self.controller.handle(cmd),
                        Err(r) => r,
                    };
                    (response, req.close)
                }
            };
            let Some(conn) = self.connections.get_mut(&fd) else {
                return false;
            };
            let bytes = response.to_bytes(close);
            // Responses are small: one write fits any socket buffer, or the client is gone.
            if write(&conn.stream, &bytes) != Some(bytes.len()) || close {
                return false;
            }
        }
    }
}

/// write(2), not send(2) (as std's socket writes are): one call fewer for seccomp to allow.
/// SIGPIPE is ignored in flint (Rust's default), so a gone client is EPIPE.
fn write(stream: &UnixStream, bytes: &[u8]) -> Option<usize> {
    // SAFETY: writes at most `bytes.len()` bytes from `bytes`.
    let n = unsafe { libc::write(stream.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
    usize::try_from(n).ok()
}

fn too_many_files() -> Response {
    Response::error(
        400,
        format!("at most {MAX_FDS} file descriptors may come with a request"),
    )
}

impl<C: Controller> MutEventSubscriber for ApiServer<C> {
    fn init(&mut self, ops: &mut EventOps) {
        // Without it the API is silently gone: say so (the VM itself runs on).
        if let Err(e) = ops.add(Events::new(&self.listener, EventSet::IN)) {
            eprintln!("flint: the API socket cannot be watched ({e:?}); the API is off");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.listener.as_raw_fd() {
            self.accept(ops);
            return;
        }
        let gone = events
            .event_set()
            .intersects(EventSet::HANG_UP | EventSet::ERROR)
            && !events.event_set().contains(EventSet::IN);
        if gone || !self.serve(fd) {
            let _ = ops.remove(Events::new_raw(fd, EventSet::IN));
            self.connections.remove(&fd);
        }
    }
}
