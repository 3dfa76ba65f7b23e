//! The host side's Unix sockets, non-blocking, with the few system calls the vsock worker makes
//! on them (each on the worker's seccomp list: `accept4`, `socket`, `connect`, `sendto`, `read`,
//! `shutdown`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A connected host socket (non-blocking, close-on-exec).
#[derive(Debug)]
pub struct HostStream(OwnedFd);

impl HostStream {
    /// Reads what is there, up to `buf.len()` bytes; `Ok(0)` is the end of the stream.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reads at most `buf.len()` bytes into `buf`, which we borrow mutably.
        let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Writes what fits now. MSG_NOSIGNAL: a peer that went away is an EPIPE, never a SIGPIPE.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: reads at most `buf.len()` bytes from `buf`.
        let n = unsafe {
            libc::send(
                self.0.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// The host peer reads the end of the stream: the guest will send nothing more.
    pub fn shutdown_write(&self) {
        // SAFETY: shutdown on our own socket; an error (the peer is gone) changes nothing.
        unsafe { libc::shutdown(self.0.as_raw_fd(), libc::SHUT_WR) };
    }
}

impl AsRawFd for HostStream {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Takes one waiting connection from `listener` (non-blocking); `Ok(None)` if there is none.
pub fn accept(listener: RawFd) -> io::Result<Option<HostStream>> {
    // SAFETY: accept4 with null address pointers only returns a new descriptor (or an error).
    let fd = unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            // The client gave up before we took it.
            _ if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    Ok(Some(HostStream(unsafe { OwnedFd::from_raw_fd(fd) })))
}

/// Connects to the Unix socket at `path` + `suffix` without waiting: a listener whose backlog
/// is full is an error (`EAGAIN`), as is a path that is missing or too long.
pub fn connect(path: &Path, suffix: &str) -> io::Result<HostStream> {
    let mut bytes = path.as_os_str().as_bytes().to_vec();
    bytes.extend_from_slice(suffix.as_bytes());
    // SAFETY: sockaddr_un is plain data; all zeros is a valid (empty) value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    // sun_path needs a terminating NUL within it.
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    addr.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    for (dst, &b) in addr.sun_path.iter_mut().zip(&bytes) {
        *dst = libc::c_char::from_ne_bytes([b]);
    }
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: socket takes integer arguments only and returns a new descriptor or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket returned a new descriptor that nothing else owns.
    let stream = HostStream(unsafe { OwnedFd::from_raw_fd(fd) });
    // SAFETY: `addr` is a valid sockaddr_un of which `len` bytes are used.
    let rc = unsafe {
        libc::connect(
            stream.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn connect_accept_send_read_and_shutdown() {
        let dir = std::env::temp_dir().join(format!("flint-vsock-host-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let base = dir.join("v.sock");
        let server = UnixListener::bind(dir.join("v.sock_52")).unwrap();
        assert!(connect(&base, "_53").is_err(), "nobody listens there");
        let s = connect(&base, "_52").unwrap();
        let (mut peer, _) = server.accept().unwrap();
        assert_eq!(s.send(b"ping").unwrap(), 4);
        let mut b = [0u8; 4];
        peer.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
        let mut buf = [0u8; 8];
        assert_eq!(
            s.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        peer.write_all(b"pong").unwrap();
        assert_eq!(s.read(&mut buf).unwrap(), 4);
        s.shutdown_write();
        assert_eq!(peer.read(&mut b).unwrap(), 0, "the peer sees the end");
        drop(peer);
        assert_eq!(s.read(&mut buf).unwrap(), 0);
        assert!(s.send(b"x").is_err(), "EPIPE, and no SIGPIPE");

        // The listener side: nothing waiting, then one connection.
        let listener = UnixListener::bind(dir.join("l.sock")).unwrap();
        listener.set_nonblocking(true).unwrap();
        assert!(accept(listener.as_raw_fd()).unwrap().is_none());
        let _client = std::os::unix::net::UnixStream::connect(dir.join("l.sock")).unwrap();
        assert!(accept(listener.as_raw_fd()).unwrap().is_some());
        let long = "x".repeat(200);
        assert_eq!(
            connect(&base, &long).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
