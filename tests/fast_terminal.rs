//! Fast tier: on a terminal, flint puts the console in raw mode and restores it on every exit
//! path; Ctrl-A x quits, Ctrl-A p presses the power button. Uses a real pseudo-terminal as flint's stdin and stdout.

mod common;

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors into the given ints; null name/termios/winsize.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

fn lflag(fd: &OwnedFd) -> libc::tcflag_t {
    // SAFETY: a zeroed termios is valid for tcgetattr to fill.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid termios and `fd` a terminal.
    assert_eq!(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }, 0);
    t.c_lflag
}

/// Runs `fw` with the pty slave as stdin/stdout, calls `act` once `ready` shows on the console,
/// and checks that the terminal is back in its original mode after flint exits.
fn run_on_pty(fw: &str, ready: &str, act: impl FnOnce(&Child, &OwnedFd)) -> (Option<i32>, String) {
    run_on_pty_with(fw, &[], ready, act)
}

/// [`run_on_pty`] with more flint arguments.
fn run_on_pty_with(
    fw: &str,
    args: &[&str],
    ready: &str,
    act: impl FnOnce(&Child, &OwnedFd),
) -> (Option<i32>, String) {
    let (master, slave) = openpty();
    let before = lflag(&slave);
    assert_ne!(
        before & libc::ICANON,
        0,
        "a fresh pty starts in canonical mode"
    );
    let child = flint()
        .args(["run", "--kernel", firmware(fw).to_str().unwrap()])
        .args(args)
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut console = std::fs::File::from(master.try_clone().unwrap());
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 256];
    while !seen.contains(ready) {
        assert!(
            Instant::now() < deadline,
            "no {ready:?} on the console: {seen:?}"
        );
        let n = console.read(&mut buf).unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // Raw while the VM runs: no line editing, no echo, no signals from keys.
    assert_eq!(lflag(&slave) & (libc::ICANON | libc::ECHO | libc::ISIG), 0);
    act(&child, &master);
    let out = wait_or_kill(child, Duration::from_secs(60));
    assert_eq!(lflag(&slave), before, "terminal mode restored");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn raw_mode_is_restored_after_guest_power_off() {
    let (code, err) = run_on_pty("echo", "ready", |_, master| {
        // SAFETY: writes a short buffer to the pty master.
        let n = unsafe { libc::write(master.as_raw_fd(), b"hi\r".as_ptr().cast(), 3) };
        assert_eq!(n, 3);
    });
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn raw_mode_is_restored_after_sigterm() {
    let (code, _) = run_on_pty("spin", "spinning", |child, _| signal(child, libc::SIGTERM));
    assert_eq!(code, Some(128 + libc::SIGTERM));
}

#[test]
fn ctrl_a_x_quits() {
    let (code, err) = run_on_pty("spin", "spinning", |_, master| {
        // SAFETY: writes a short buffer to the pty master.
        let n = unsafe { libc::write(master.as_raw_fd(), b"\x01x".as_ptr().cast(), 2) };
        assert_eq!(n, 2);
    });
    assert_eq!(code, Some(128 + libc::SIGINT), "{err}");
}

/// Types `keys` on the console.
fn type_keys(master: &OwnedFd, keys: &[u8]) {
    // SAFETY: writes a short buffer to the pty master.
    let n = unsafe { libc::write(master.as_raw_fd(), keys.as_ptr().cast(), keys.len()) };
    assert_eq!(n, keys.len() as isize);
}

#[test]
fn ctrl_a_p_presses_the_power_button() {
    // With ACPI the press goes through (no message) and the VM runs on until Ctrl-A x.
    let (code, err) = run_on_pty("spin", "spinning", |_, master| {
        type_keys(master, b"\x01p");
        std::thread::sleep(Duration::from_millis(300));
        type_keys(master, b"\x01x");
    });
    assert_eq!(code, Some(128 + libc::SIGINT), "{err}");
    assert!(!err.contains("power button"), "{err}");
    // Without ACPI there is no button: flint says so, and the key goes nowhere else.
    let (code, err) = run_on_pty_with("spin", &["--no-acpi"], "spinning", |_, master| {
        type_keys(master, b"\x01p");
        std::thread::sleep(Duration::from_millis(300));
        type_keys(master, b"\x01x");
    });
    assert_eq!(code, Some(128 + libc::SIGINT), "{err}");
    assert!(
        err.contains("flint: Ctrl-A p: the guest has no power button to press"),
        "{err}"
    );
}
