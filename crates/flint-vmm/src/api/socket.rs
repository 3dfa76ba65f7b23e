//! The API socket's file: made owner-only, never over a live socket or another file, and
//! removed when flint exits, however it exits.
//!
//! Once confined, flint cannot remove a file (Landlock allows no path), so a small process
//! forked at bind time (before any thread or guest exists) does it: it waits for the end of a
//! pipe whose write end flint holds, and then removes the socket if it is still the one flint
//! made (same device and inode). That also covers a flint killed with SIGKILL. The vsock
//! device's listening socket is removed the same way ([`Remover`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("--api-sock {0}: another process is serving this socket")]
    InUse(String),
    #[error("--api-sock {0}: exists and is not a socket (choose another path)")]
    NotASocket(String),
    #[error("--api-sock {path}: {what}")]
    Io {
        path: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The listening socket, and the process that removes its file.
pub struct ApiSocket {
    pub listener: UnixListener,
    _remover: Remover,
}

/// The process that removes a socket's file once flint is gone (see the module's docs).
pub(crate) struct Remover {
    /// Closing it (with every copy, e.g. a jailed child's) lets the remover do its work.
    pipe: Option<OwnedFd>,
    pid: libc::pid_t,
}

impl Remover {
    /// Forks the remover of the file at `path`, which must still be device `dev`, inode
    /// `ino` (the socket flint made) when it is removed; `name` is the process's name.
    pub(crate) fn spawn(
        path: &Path,
        dev: u64,
        ino: u64,
        name: &'static std::ffi::CStr,
    ) -> std::io::Result<Remover> {
        let (pipe, pid) = spawn_remover(path, dev, ino, name)?;
        Ok(Remover {
            pipe: Some(pipe),
            pid,
        })
    }
}

impl Drop for Remover {
    /// Lets the remover go and waits for it, so the file is gone when flint's exit is seen
    /// (a jailed flint's copy of the pipe holds it until that flint is gone too).
    fn drop(&mut self) {
        drop(self.pipe.take());
        let mut status = 0;
        // SAFETY: waits for flint's own child; ECHILD (not ours, e.g. in a jailed child) is
        // harmless.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
    }
}

impl ApiSocket {
    /// Binds `path` (0600). A stale socket there (nobody accepting) is replaced; a live one or
    /// any other file is an error. Call while flint has no other thread (it forks).
    pub fn bind(path: &Path) -> Result<ApiSocket, SocketError> {
        let shown = path.display().to_string();
        let io = |what| {
            let shown = shown.clone();
            move |source| SocketError::Io {
                path: shown,
                what,
                source,
            }
        };
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(SocketError::InUse(shown));
                }
                std::fs::remove_file(path).map_err(io("cannot remove the stale socket"))?;
            }
            Ok(_) => return Err(SocketError::NotASocket(shown)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot look at the path")(e)),
        }
        let (listener, remover) =
            bind_private(path, c"flint-api-rm").map_err(|(what, e)| io(what)(e))?;
        Ok(ApiSocket {
            listener,
            _remover: remover,
        })
    }
}

/// Binds a listening Unix socket at `path` that only flint's user can reach (0600 from the
/// start: the file takes its mode from the umask), non-blocking, with a remover (named
/// `remover_name`) that takes the file away when flint ends. Call while flint has no other
/// thread (it forks). An error says which step failed.
pub(crate) fn bind_private(
    path: &Path,
    remover_name: &'static std::ffi::CStr,
) -> Result<(UnixListener, Remover), (&'static str, std::io::Error)> {
    // SAFETY: umask only swaps the process's file mode mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| ("cannot create the socket", e))?;
    // From here on the file is ours: the remover takes it away whatever happens next.
    let meta = std::fs::symlink_metadata(path).map_err(|e| ("cannot look at the socket", e))?;
    let remover = Remover::spawn(path, meta.dev(), meta.ino(), remover_name)
        .map_err(|e| ("cannot start its remover", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| ("cannot make the socket non-blocking", e))?;
    Ok((listener, remover))
}

/// Forks the remover; returns the pipe's write end and its pid.
fn spawn_remover(
    path: &Path,
    dev: u64,
    ino: u64,
    name: &'static std::ffi::CStr,
) -> std::io::Result<(OwnedFd, libc::pid_t)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Made before the fork: the child allocates nothing.
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: the child only makes system calls (see `remover`), which is sound even if
    // another thread held a lock at the fork.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            drop(write_end);
            remover(read_end, &path, dev, ino, name)
        }
        pid => Ok((write_end, pid)),
    }
}

/// The remover process: holds nothing of flint's but the pipe, ignores the signals a terminal
/// or a supervisor sends the whole process group, and waits.
fn remover(
    pipe: OwnedFd,
    path: &std::ffi::CStr,
    dev: u64,
    ino: u64,
    name: &'static std::ffi::CStr,
) -> ! {
    let keep = pipe.as_raw_fd();
    // SAFETY: closes every other inherited descriptor of this new process; std's stdio is
    // not used after this.
    unsafe {
        libc::syscall(libc::SYS_close_range, 0u32, (keep - 1) as u32, 0u32);
        libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
        for s in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGPWR,
            libc::SIGQUIT,
        ] {
            libc::signal(s, libc::SIG_IGN);
        }
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
    }
    let mut byte = 0u8;
    // Returns 0 once every write end is closed: flint (and any jailed child) has exited.
    // SAFETY: reads at most one byte into `byte`.
    while unsafe { libc::read(keep, (&mut byte as *mut u8).cast(), 1) } != 0 {
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
    }
    // SAFETY: `st` is plain data lstat fills; `path` is a valid C string.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::lstat(path.as_ptr(), &mut st) == 0 && st.st_dev == dev && st.st_ino == ino {
            libc::unlink(path.as_ptr());
        }
    }
    // SAFETY: ends this process without running flint's exit handlers or destructors.
    unsafe { libc::_exit(0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_socket_is_owner_only_refuses_other_files_and_goes_away_on_drop() {
        let dir = std::env::temp_dir().join(format!("flint-api-sock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");
        let s = ApiSocket::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(ApiSocket::bind(&path), Err(SocketError::InUse(_))));
        drop(s);
        assert!(!path.exists(), "the socket outlived its ApiSocket");

        // A stale socket (nobody listening) is replaced; a regular file is not touched.
        drop(UnixListener::bind(&path).unwrap());
        drop(ApiSocket::bind(&path).unwrap());
        std::fs::write(&path, b"keep me").unwrap();
        assert!(matches!(
            ApiSocket::bind(&path),
            Err(SocketError::NotASocket(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
