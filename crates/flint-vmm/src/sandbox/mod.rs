//! What limits flint itself, so that a guest that took over a flint thread could do almost
//! nothing: [`seccomp`] filters per thread kind, [`landlock`] (no file reachable by path), and
//! with `--jail` the [`jail`] (namespaces, an empty root, an unprivileged user, rlimits) and a
//! [`cgroup`].

pub mod cgroup;
pub mod jail;
pub mod landlock;
pub mod seccomp;

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
