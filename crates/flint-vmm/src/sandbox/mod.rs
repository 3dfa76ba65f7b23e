//! What limits flint itself, so that a guest that took over a flint thread could do almost
//! nothing: [`seccomp`] filters per thread kind, [`landlock`] (no file reachable by path), and
//! with `--jail` the [`jail`] (namespaces, an empty root, an unprivileged user, rlimits) and a
//! [`cgroup`].

pub mod cgroup;
pub mod jail;
pub mod landlock;
pub mod seccomp;

/// For a child flint starts, between fork and exec: the kernel sends it `signal` when its
/// parent (`parent`, flint) ends, so that a killed flint leaves nothing running; and it fails
/// if flint ended already (the signal would then never come). Only prctl and getppid:
/// async-signal-safe, as a `pre_exec` hook must be.
pub fn die_with_parent(parent: u32, signal: i32) -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: getppid has no preconditions.
    if u32::try_from(unsafe { libc::getppid() }).ok() != Some(parent) {
        return Err(std::io::Error::other(
            "flint ended before its child started",
        ));
    }
    Ok(())
}

/// Closes every file descriptor flint inherited beyond stdin, stdout and stderr, so that
/// nothing its parent left open (a socket, a host file) is reachable from flint. Called first
/// thing, before flint opens anything of its own.
pub fn close_inherited_fds() -> std::io::Result<()> {
    // SAFETY: close_range closes fds 3 and up of this process; none is in use yet (nothing is
    // open but what the parent passed, and no thread has started).
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if r == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    // Before Linux 5.9: close what /proc lists (collected first: the listing has an fd too).
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: as above; the directory's own fd is closed already, so EBADF is harmless.
        unsafe { libc::close(fd) };
    }
    Ok(())
}
