//! Fast tier: the guest's console output never blocks it. A stdout nobody reads costs the
//! guest nothing (the output is dropped and counted, not waited for), a VM stopped by a signal
//! still stops at once, and `--console-limit` caps what is passed on.

mod common;

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const UNREAD: &str = "bytes of console output were dropped (the output was not being read)";

/// A pipe that holds only 4 KiB: (read end, write end).
fn small_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: F_SETPIPE_SZ takes an int; the fd is the pipe just made.
    assert!(unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, 4096) } >= 0);
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// flint with its stdout on a pipe that nobody reads (kept open, so writes block, not fail).
fn unread_stdout(args: &[&str]) -> (std::process::Child, OwnedFd) {
    let (read_end, write_end) = small_pipe();
    let child = flint()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, read_end)
}

#[test]
fn a_guest_whose_console_nobody_reads_runs_to_its_end() {
    let fw = firmware("chatty_exit");
    let (child, _unread) = unread_stdout(&["run", "--kernel", fw.to_str().unwrap()]);
    let r: Run = wait_or_kill(child, Duration::from_secs(60)).into();
    assert_eq!(r.code, Some(7), "the guest finished: {}", r.stderr);
    let dropped: u64 = r
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("flint: ")?.strip_suffix(UNREAD))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no drop count: {}", r.stderr));
    // 96 KiB printed; at most the pipe and the buffer (4 + 64 KiB) can hold the rest.
    assert!(dropped >= (96 - 68) << 10, "{dropped}");
    assert!(dropped <= 96 << 10, "{dropped}");
}

#[test]
fn sigterm_stops_a_guest_whose_console_nobody_reads() {
    let fw = firmware("chatty");
    let (child, _unread) = unread_stdout(&["run", "--kernel", fw.to_str().unwrap()]);
    // Long enough for the guest to fill the pipe.
    std::thread::sleep(Duration::from_secs(1));
    signal(&child, libc::SIGTERM);
    let t = Instant::now();
    let r: Run = wait_or_kill(child, Duration::from_secs(30)).into();
    assert_eq!(r.code, Some(128 + libc::SIGTERM), "{}", r.stderr);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(r.stderr.contains(UNREAD), "{}", r.stderr);
    assert!(r.stderr.contains("stopped by signal 15"), "{}", r.stderr);
}

#[test]
fn console_limit_caps_the_output() {
    let fw = firmware("chatty_exit");
    let r = run(&[
        "run",
        "--kernel",
        fw.to_str().unwrap(),
        "--console-limit",
        "100",
    ]);
    assert_eq!(r.code, Some(7), "{}", r.stderr);
    let line = "flint-fw: chatty 0123456789abcdefghijklmnopqrstuvwxyz0123456789\n";
    assert_eq!(r.stdout, line.repeat(2)[..100]);
    assert_eq!(
        r.stderr,
        format!(
            "flint: {} bytes of console output were dropped (past --console-limit 100)\n",
            (96 << 10) - 100
        )
    );
}
