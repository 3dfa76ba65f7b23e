//! `create --console-socket`: the container's terminal. As runc does, flint makes a pty, sends
//! its master to the socket (SCM_RIGHTS, with the slave's name as the message) and gives the
//! slave to the container's process as its stdin, stdout, stderr and controlling terminal; the
//! VMM puts it in raw mode and the guest's own tty does the line discipline.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::Context;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// Makes a pty and sends its master to `socket`; returns the slave.
pub fn send_pty(socket: &Path) -> anyhow::Result<OwnedFd> {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors into our variables; the name, termios and
    // winsize arguments may be null.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot make a pty");
    }
    // SAFETY: openpty succeeded: both are new descriptors that nothing else owns.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    set_cloexec(&master)?;
    set_cloexec(&slave)?;
    let name = std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let stream = UnixStream::connect(socket)
        .with_context(|| format!("cannot connect to the console socket {}", socket.display()))?;
    stream
        .send_with_fd(name.as_bytes(), master.as_raw_fd())
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
        .with_context(|| {
            format!(
                "cannot send the terminal to the console socket {}",
                socket.display()
            )
        })?;
    Ok(slave)
}

fn set_cloexec(fd: &OwnedFd) -> anyhow::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot set up the pty");
    }
    Ok(())
}

/// In the container's process (after fork): the pty slave becomes its stdio and controlling
/// terminal, in a session of its own.
pub fn become_controlling(slave: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: setsid has no preconditions; it fails only if we lead a group already.
    unsafe { libc::setsid() };
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which this process owns.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SAFETY: TIOCSCTTY with 0 makes the tty on fd 0 this session's terminal.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn the_master_reaches_the_socket_and_talks_to_the_slave() {
        let dir = std::env::temp_dir().join(format!("flint-tty-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("console.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let slave = send_pty(&path).unwrap();
        let (conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        let (n, master) = conn.recv_with_fd(&mut buf).unwrap();
        assert!(std::str::from_utf8(&buf[..n])
            .unwrap()
            .starts_with("/dev/pts/"));
        let mut master = master.expect("a descriptor came with the message");
        use std::io::{Read, Write};
        let mut slave = std::fs::File::from(slave);
        master.write_all(b"hi\n").unwrap();
        let mut got = [0u8; 3];
        slave.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
