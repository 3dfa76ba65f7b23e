//! `--jail`: flint as root confines itself without a separate jailer binary. Once its inputs
//! are open (`/dev/kvm`, kernel, initrd, disks, TAPs — TAPs inside `--netns` if given), it
//! enters new mount, PID, IPC and UTS namespaces and forks: the child — PID 1 of its own PID
//! namespace — turns an empty, read-only tmpfs into its root (`pivot_root`), sets rlimits (open
//! files, file size no bigger than it needs, no core dumps), gives up every capability and
//! becomes `--uid`/`--gid`, then builds and runs the VM from the open files. The parent drops to
//! the same user too, passes on the signals it gets, and exits with the child's status.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

/// RLIMIT_NOFILE in the jail: flint needs about 10 descriptors, plus a few per device and one
/// per vCPU; this leaves room for 255 vCPUs and every device slot.
pub const OPEN_FILES: u64 = 1024;

/// Where the jail's root is mounted before it becomes `/` (in flint's own mount namespace:
/// the host sees nothing).
const STAGING: &std::ffi::CStr = c"/tmp";

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("--jail needs root (it makes namespaces, mounts its root and changes user); as a user in the kvm group, run flint without --jail")]
    NotRoot,
    #[error("--{0} 0 would keep root's rights in the jail; give an unprivileged id")]
    RootId(&'static str),
    #[error("--netns {path}: {reason}")]
    Netns { path: String, reason: String },
    #[error("jail: {what} failed")]
    Sys {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "jail: /tmp is not a directory (the jail's root is mounted there before it becomes /)"
    )]
    NoStaging,
    #[error("jail: still able to become root after dropping to uid {0}")]
    KeptRoot(u32),
}

fn sys(what: &'static str) -> JailError {
    JailError::Sys {
        what,
        source: std::io::Error::last_os_error(),
    }
}

fn check(r: libc::c_int, what: &'static str) -> Result<(), JailError> {
    if r < 0 {
        Err(sys(what))
    } else {
        Ok(())
    }
}

/// Who the jailed flint becomes, and the most it may write into one file.
#[derive(Debug, Clone, Copy)]
pub struct Jail {
    pub uid: u32,
    pub gid: u32,
    /// RLIMIT_FSIZE: see [`file_size_limit`].
    pub max_file_size: u64,
}

/// Which process returned from [`Jail::enter`].
#[derive(Debug, PartialEq, Eq)]
pub enum Side {
    /// The parent, after the jailed child ended: exit with this status.
    Supervisor(i32),
    /// The child, now jailed: build and run the VM.
    Jailed,
}

/// What `--jail` needs before anything is opened: root, and ids that are not root's.
pub fn check_can_jail(uid: u32, gid: u32) -> Result<(), JailError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(JailError::NotRoot);
    }
    if uid == 0 {
        return Err(JailError::RootId("uid"));
    }
    if gid == 0 {
        return Err(JailError::RootId("gid"));
    }
    Ok(())
}

/// Joins the network namespace bound at `path` (e.g. /run/netns/NAME, /proc/PID/ns/net), so
/// that the TAPs flint opens next are that namespace's.
pub fn enter_netns(path: &Path) -> Result<(), JailError> {
    let bad = |reason: String| JailError::Netns {
        path: path.display().to_string(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| bad(crate::config::io_reason(&e)))?;
    // SAFETY: setns takes an open namespace fd; CLONE_NEWNET makes it refuse any other kind.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        let e = std::io::Error::last_os_error();
        return Err(bad(match e.raw_os_error() {
            Some(libc::EINVAL) => "not a network namespace".into(),
            _ => e.to_string(),
        }));
    }
    Ok(())
}

/// RLIMIT_FSIZE for the jail: the largest writable disk, or more where the console (stdout,
/// stderr) is a regular file — its size now plus `console_limit`, or no limit without one
/// (then `--console-limit` is what bounds it).
pub fn file_size_limit(largest_writable_disk: u64, console_limit: Option<u64>) -> u64 {
    let mut limit = largest_writable_disk;
    for fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        if let Some(size) = regular_file_size(fd) {
            // Room for flint's own few lines on stderr too.
            let room = console_limit.map_or(u64::MAX, |l| l.saturating_add(1 << 20));
            limit = limit.max(size.saturating_add(room));
        }
    }
    limit
}

fn regular_file_size(fd: RawFd) -> Option<u64> {
    // SAFETY: fstat fills the zeroed struct for an fd of ours (or fails).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::fstat(fd, &mut st) };
    (r == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG)
        .then(|| u64::try_from(st.st_size).unwrap_or(0))
}

/// The jailed child's PID, for the parent's signal forwarding.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let child = CHILD.load(Ordering::Relaxed);
    if child > 0 {
        // SAFETY: kill is async-signal-safe; the child is ours.
        unsafe { libc::kill(child, sig) };
    }
}

impl Jail {
    /// Enters the jail. Returns [`Side::Jailed`] in the jailed child and
    /// [`Side::Supervisor`] in the parent once the child has ended. Must be called while
    /// flint has a single thread (fork copies only the caller).
    pub fn enter(&self) -> Result<Side, JailError> {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        let flags =
            libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWPID;
        // SAFETY: unshare takes flags only; the new PID namespace is for children to come.
        let r = unsafe { libc::unshare(flags) };
        check(r, "unshare (new mount, PID, IPC and UTS namespaces)")?;
        // SAFETY: flint is single-threaded here (the caller's contract), so the child is a
        // complete copy that may go on running Rust code.
        let pid = unsafe { libc::fork() };
        match pid {
            p if p < 0 => Err(sys("fork")),
            0 => {
                self.confine()?;
                Ok(Side::Jailed)
            }
            child => self.supervise(child),
        }
    }

    /// The parent: passes signals on, drops to the jail's user, waits.
    fn supervise(&self, child: libc::pid_t) -> Result<Side, JailError> {
        CHILD.store(child, Ordering::Relaxed);
        // What the VM's event loop handles, and SIGQUIT (whose default ends the child too).
        for sig in crate::event_loop::CONTROL_SIGNALS
            .into_iter()
            .chain([libc::SIGQUIT])
        {
            // SAFETY: `forward` only loads an atomic and calls kill, both async-signal-safe.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = forward as *const () as usize;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
        if let Err(e) = self.drop_privileges() {
            // SAFETY: the child is ours; it must not outlive a parent that failed.
            unsafe { libc::kill(child, libc::SIGKILL) };
            wait_for(child);
            return Err(e);
        }
        Ok(Side::Supervisor(wait_for(child)))
    }

    /// The child: its own empty root, rlimits, no capabilities, the jail's user.
    fn confine(&self) -> Result<(), JailError> {
        pivot_to_empty_root()?;
        let host = b"flint";
        // SAFETY: sethostname reads `host.len()` bytes (the new UTS namespace's name).
        let r = unsafe { libc::sethostname(host.as_ptr().cast(), host.len()) };
        check(r, "sethostname")?;
        set_rlimit(libc::RLIMIT_NOFILE, OPEN_FILES, "setrlimit(RLIMIT_NOFILE)")?;
        set_rlimit(libc::RLIMIT_CORE, 0, "setrlimit(RLIMIT_CORE)")?;
        set_rlimit(
            libc::RLIMIT_FSIZE,
            self.max_file_size,
            "setrlimit(RLIMIT_FSIZE)",
        )?;
        // A write past the file-size limit then fails (EFBIG) instead of killing flint.
        // SAFETY: SIG_IGN for SIGXFSZ changes no memory of ours.
        unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
        self.drop_privileges()?;
        // Set after the user change, which clears it. The parent's death ends the jail.
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
        check(r, "prctl(PR_SET_PDEATHSIG)")?;
        // SAFETY: as above.
        let r = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        check(r, "prctl(PR_SET_DUMPABLE)")?;
        Ok(())
    }

    /// No capabilities left to regain (bounding and ambient sets emptied), no supplementary
    /// groups, and every uid and gid the jail's.
    fn drop_privileges(&self) -> Result<(), JailError> {
        // SAFETY: prctl with integer arguments only.
        let r = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            )
        };
        check(r, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")?;
        for cap in 0..64 {
            // SAFETY: as above; EINVAL marks the end of the kernel's capabilities.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                    break;
                }
                return Err(sys("prctl(PR_CAPBSET_DROP)"));
            }
        }
        // SAFETY: setgroups with an empty list reads nothing.
        check(unsafe { libc::setgroups(0, std::ptr::null()) }, "setgroups")?;
        // SAFETY: integer arguments only.
        let r = unsafe { libc::setresgid(self.gid, self.gid, self.gid) };
        check(r, "setresgid")?;
        // SAFETY: integer arguments only. With every uid non-zero the kernel clears the
        // permitted and effective capabilities.
        let r = unsafe { libc::setresuid(self.uid, self.uid, self.uid) };
        check(r, "setresuid")?;
        // SAFETY: integer argument only; it must fail now.
        if unsafe { libc::setuid(0) } == 0 {
            return Err(JailError::KeptRoot(self.uid));
        }
        Ok(())
    }
}

fn set_rlimit(
    resource: libc::__rlimit_resource_t,
    value: u64,
    what: &'static str,
) -> Result<(), JailError> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads the struct.
    check(unsafe { libc::setrlimit(resource, &lim) }, what)
}

/// Makes an empty tmpfs this process's `/`, read-only, with nothing of the host's left in
/// its mount namespace.
fn pivot_to_empty_root() -> Result<(), JailError> {
    let (root, dot, staging) = (c"/", c".", STAGING);
    let (tmpfs, name) = (c"tmpfs", c"flint-jail");
    let opts = c"size=16k,nr_inodes=16,mode=0555";
    // SAFETY: this and the mount calls below pass NUL-terminated strings or nulls, as mount(2)
    // takes them. Nothing the host sees changes: the namespace is private from this call on.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    check(r, "making the mount namespace private")?;
    if !Path::new(std::ffi::OsStr::from_bytes(STAGING.to_bytes())).is_dir() {
        return Err(JailError::NoStaging);
    }
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: see above.
    let r = unsafe {
        libc::mount(
            name.as_ptr(),
            staging.as_ptr(),
            tmpfs.as_ptr(),
            flags,
            opts.as_ptr().cast(),
        )
    };
    check(r, "mounting the jail's tmpfs")?;
    // SAFETY: chdir reads the path.
    check(unsafe { libc::chdir(staging.as_ptr()) }, "chdir")?;
    if pivot_root_here()? {
        // SAFETY: see above.
        let r = unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) };
        check(r, "detaching the old root")?;
    } else {
        // The root is the initramfs (rootfs), which cannot be pivoted away from: move the
        // tmpfs over it and chroot, as switch_root does. What lies under stays covered, and
        // without CAP_SYS_CHROOT nothing can chroot back out.
        // SAFETY: see above.
        let r = unsafe {
            libc::mount(
                dot.as_ptr(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_MOVE,
                std::ptr::null(),
            )
        };
        check(r, "moving the jail's root over /")?;
        // SAFETY: chroot reads the path.
        check(unsafe { libc::chroot(dot.as_ptr()) }, "chroot")?;
    }
    // SAFETY: chdir reads the path.
    check(unsafe { libc::chdir(root.as_ptr()) }, "chdir /")?;
    // SAFETY: see above.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | flags,
            std::ptr::null(),
        )
    };
    check(r, "making the jail's root read-only")?;
    Ok(())
}

/// `pivot_root(".", ".")` from the new root (the old one ends up stacked on it, for the caller
/// to detach); false where the root cannot be pivoted away from (EINVAL: an initramfs), or in
/// debug builds with `FLINT_TEST_NO_PIVOT=1` (how the tests reach the other path).
fn pivot_root_here() -> Result<bool, JailError> {
    if cfg!(debug_assertions) && std::env::var_os("FLINT_TEST_NO_PIVOT").is_some_and(|v| v == "1") {
        return Ok(false);
    }
    let dot = c".";
    // SAFETY: pivot_root reads the two NUL-terminated paths.
    if unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } == 0 {
        return Ok(true);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EINVAL) => Ok(false),
        _ => Err(sys("pivot_root")),
    }
}

/// Waits for `child` and returns the status to exit with: its own, or 128 + the signal that
/// ended it.
fn wait_for(child: libc::pid_t) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child, writing its status into `status`.
        let r = unsafe { libc::waitpid(child, &mut status, 0) };
        if r == child {
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status);
            }
            if libc::WIFSIGNALED(status) {
                return 128 + libc::WTERMSIG(status);
            }
        } else if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_ids_are_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(matches!(
                check_can_jail(1000, 1000),
                Err(JailError::NotRoot)
            ));
            return;
        }
        assert!(matches!(
            check_can_jail(0, 1000),
            Err(JailError::RootId("uid"))
        ));
        assert!(matches!(
            check_can_jail(1000, 0),
            Err(JailError::RootId("gid"))
        ));
        assert!(check_can_jail(1000, 1000).is_ok());
    }

    #[test]
    fn file_size_limit_is_the_largest_disk_unless_the_console_is_a_file() {
        // The test harness's stdout and stderr are pipes or a terminal under cargo test, and
        // files only when redirected; both cases keep the disk's size as the floor.
        let l = file_size_limit(5 << 20, Some(1000));
        assert!(l >= 5 << 20);
        if regular_file_size(libc::STDOUT_FILENO).is_none()
            && regular_file_size(libc::STDERR_FILENO).is_none()
        {
            assert_eq!(l, 5 << 20);
            assert_eq!(file_size_limit(0, None), 0);
        }
    }

    #[test]
    fn netns_errors_say_what_was_wrong() {
        let e = enter_netns(Path::new("/nonexistent/netns"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "--netns /nonexistent/netns: no such file");
    }
}
