//! One virtiofsd per shared host path: found, started on a socket only flint can reach,
//! connected, and stopped when flint ends (or killed by the kernel if flint dies first).
//!
//! flint makes the listening socket itself, in a private directory, and connects to it before
//! virtiofsd even starts (the connection waits in the listen queue), then hands virtiofsd the
//! listener (`--fd`). So no other process can take flint's place as the frontend, and flint
//! never polls for a socket file to appear. The directory is removed once virtiofsd answers.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::backend::{Backend, FsError};
use crate::config::find_program;

/// Where virtiofsd is looked for when $FLINT_VIRTIOFSD does not say: $PATH, then where
/// distributions install it (Debian's and Fedora's QEMU packages, Cloud Hypervisor's docs).
pub const KNOWN_PATHS: &[&str] = &[
    "/usr/libexec/virtiofsd",
    "/usr/lib/qemu/virtiofsd",
    "/usr/local/libexec/virtiofsd",
];

/// The virtiofsd binary to run: $FLINT_VIRTIOFSD, else `virtiofsd` on $PATH, else
/// [`KNOWN_PATHS`].
pub fn find() -> Result<PathBuf, FsError> {
    if let Some(p) = std::env::var_os("FLINT_VIRTIOFSD") {
        return Ok(PathBuf::from(p));
    }
    find_program(Path::new("virtiofsd"))
        .or_else(|| KNOWN_PATHS.iter().find_map(|p| find_program(Path::new(p))))
        .ok_or_else(|| {
            FsError::Daemon(
                "--fs path= needs virtiofsd (the Rust one: `cargo install virtiofsd`, or \
                 resources/guest/build-virtiofsd.sh): none on $PATH or in /usr/libexec, \
                 /usr/lib/qemu; set FLINT_VIRTIOFSD=PATH, or start it yourself and give \
                 --fs tag=T,socket=PATH"
                    .into(),
            )
        })
}

/// A virtiofsd flint started. Dropping it stops it (SIGTERM, then SIGKILL after a second)
/// and reaps it, in the process that started it only: a forked copy (the jail's confined
/// flint) leaves it to that process.
pub struct Virtiofsd {
    child: Child,
    pidfd: OwnedFd,
    owner: u32,
}

/// How long virtiofsd may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(1);

impl Virtiofsd {
    /// Starts virtiofsd sharing `path` (a directory, or a file shared alone) as `tag`, and
    /// returns it with its connected, checked backend.
    pub fn start(
        binary: &Path,
        tag: &str,
        path: &Path,
        read_only: bool,
    ) -> Result<(Virtiofsd, Backend), FsError> {
        let daemon = |why: String| FsError::Daemon(format!("--fs tag={tag}: {why}"));
        let meta =
            std::fs::metadata(path).map_err(|e| daemon(format!("{}: {e}", path.display())))?;
        let dir = PrivateDir::new()
            .map_err(|e| daemon(format!("cannot make a private directory: {e}")))?;
        let sock = dir.path.join("vhost-user.sock");
        let listener = UnixListener::bind(&sock)
            .map_err(|e| daemon(format!("cannot listen on {}: {e}", sock.display())))?;
        let stream = UnixStream::connect(&sock)
            .map_err(|e| daemon(format!("cannot connect to {}: {e}", sock.display())))?;
        // A single file is shared as the only entry of a directory of its own: virtiofsd
        // shares directories, and the file's own directory may hold what the guest must not see.
        let file_share = if meta.is_file() {
            let stage = dir.path.join("share");
            std::fs::create_dir(&stage)
                .map_err(|e| daemon(format!("cannot make {}: {e}", stage.display())))?;
            let name = path
                .file_name()
                .ok_or_else(|| daemon(format!("{} has no file name", path.display())))?;
            Some(FileShare::new(path, &stage, Path::new(name)).map_err(daemon)?)
        } else {
            None
        };
        let shared_dir = match &file_share {
            Some(f) => f.stage_path.clone(),
            None => path.to_path_buf(),
        };
        let listen_fd = listener.as_raw_fd();
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--fd={listen_fd}"))
            .arg("--shared-dir")
            .arg(&shared_dir)
            // Only errors: flint's stderr may be a container's.
            .args(["--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if read_only {
            cmd.arg("--readonly");
        }
        let parent = std::process::id();
        // SAFETY: between fork and exec only async-signal-safe calls are made (die_with_parent's
        // prctl and getppid, fcntl, and FileShare::enter's mount calls), on memory prepared
        // before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // virtiofsd ends with flint, even if flint is killed.
                crate::sandbox::die_with_parent(parent, libc::SIGTERM)?;
                // The listener crosses exec.
                if libc::fcntl(listen_fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(f) = &file_share {
                    f.enter()?;
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| daemon(format!("cannot start {}: {e}", binary.display())))?;
        drop(listener);
        let pidfd = pidfd_open(child.id()).map_err(|e| daemon(format!("pidfd_open: {e}")))?;
        let mut started = Virtiofsd {
            child,
            pidfd,
            owner: std::process::id(),
        };
        let backend = Backend::open(stream).map_err(|e| {
            // An early exit explains itself better than the broken connection it left.
            match started.exited_within(Duration::from_millis(500)) {
                Some(status) => daemon(format!(
                    "{} exited ({status}) at start (its messages are above)",
                    binary.display()
                )),
                None => daemon(crate::exit::error_chain(&e)),
            }
        })?;
        drop(dir);
        Ok((started, backend))
    }

    /// Waits up to `limit` for the process to exit; its status if it did.
    fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => return None,
            }
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo: it only signals that process.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        if std::process::id() != self.owner {
            return;
        }
        self.signal(libc::SIGTERM);
        if self.exited_within(STOP_GRACE).is_none() {
            self.signal(libc::SIGKILL);
            let _ = self.exited_within(STOP_GRACE);
        }
    }
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::other("pidfd out of range"))?;
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A 0700 directory of flint's own under the temporary directory, removed on drop.
struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    fn new() -> std::io::Result<PrivateDir> {
        let template = std::env::temp_dir().join("flint-fs-XXXXXX");
        let mut bytes = CString::new(template.as_os_str().as_bytes())
            .map_err(std::io::Error::other)?
            .into_bytes_with_nul();
        // SAFETY: mkdtemp rewrites the XXXXXX of a NUL-terminated buffer we own.
        let r = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
        if r.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        bytes.pop();
        Ok(PrivateDir {
            path: PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)),
        })
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A single file shared as the only entry of a tmpfs of its own, in virtiofsd's own mount
/// namespace (needs CAP_SYS_ADMIN: flint runs as root then).
struct FileShare {
    stage_path: PathBuf,
    stage: CString,
    entry: CString,
    file: CString,
}

impl FileShare {
    fn new(file: &Path, stage: &Path, name: &Path) -> Result<FileShare, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(format!(
                "sharing the single file {} needs root (flint mounts it into a directory of \
                 its own); share its directory instead",
                file.display()
            ));
        }
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|e| e.to_string());
        Ok(FileShare {
            stage_path: stage.to_path_buf(),
            stage: c(stage)?,
            entry: c(&stage.join(name))?,
            file: c(file)?,
        })
    }

    /// In the child, before exec: a private mount namespace where the stage is a tmpfs
    /// holding one entry, the file bind-mounted onto it.
    fn enter(&self) -> std::io::Result<()> {
        let check = |r: libc::c_int| {
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY: plain syscalls on NUL-terminated strings prepared before the fork.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                c"tmpfs".as_ptr(),
                self.stage.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"mode=0755".as_ptr().cast(),
            ))?;
            let fd = libc::open(
                self.entry.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o600,
            );
            check(fd)?;
            libc::close(fd);
            check(libc::mount(
                self.file.as_ptr(),
                self.entry.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
        }
        Ok(())
    }
}
