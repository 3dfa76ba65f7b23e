//! Fast tier: the control API (`--api-sock`) on a firmware guest that counts: pause stops the
//! count and resume continues it, state says which, bad requests get a 4xx with a message, a
//! client cannot make flint hold many connections, the socket is the owner's alone and gone
//! once flint exits — all under flint's default seccomp filter.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use flint_vmm::api::client::{request, ClientError};

fn refused(r: Result<String, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Refused { status, message }) => (status, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn pause_stops_the_guest_and_resume_continues_it() {
    let mut vm = CounterVm::start("pause", &[]);
    assert_eq!(vm.state(), "Running");
    vm.call("PATCH", "/vm", Some(r#"{"state":"Paused"}"#))
        .unwrap();
    assert_eq!(vm.state(), "Paused");
    // Whatever was on its way out is out by now; then nothing more.
    std::thread::sleep(Duration::from_millis(100));
    let paused_at = vm.count();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(vm.count(), paused_at, "the guest counted while paused");
    // Pausing twice is not an error (the state is what was asked for).
    vm.call("PATCH", "/vm", Some(r#"{"state":"Paused"}"#))
        .unwrap();
    vm.call("PATCH", "/vm", Some(r#"{"state":"Resumed"}"#))
        .unwrap();
    assert_eq!(vm.state(), "Running");
    vm.wait_for(|c| c > paused_at + 5, "the count to go on after resume");

    // Through `flint ctl` too.
    let ctl = |what: &str| {
        flint()
            .args(["ctl", "--api-sock", vm.sock.to_str().unwrap(), what])
            .output()
            .unwrap()
    };
    let o = ctl("pause");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = ctl("state");
    assert!(String::from_utf8_lossy(&o.stdout).contains(r#""state":"Paused""#));
    let at = vm.count();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(vm.count(), at);
    assert!(ctl("resume").status.success());
    vm.wait_for(|c| c > at + 5, "the count to go on after flint ctl resume");

    // A VM paused when it is stopped still stops.
    vm.call("PATCH", "/vm", Some(r#"{"state":"Paused"}"#))
        .unwrap();
    let stderr = vm.stop();
    assert!(stderr.contains("stopped by signal 15"), "{stderr}");
}

#[test]
fn bad_requests_get_a_4xx_that_says_what_was_wrong() {
    let vm = CounterVm::start("bad", &["--no-acpi"]);
    let (status, msg) = refused(vm.call("PATCH", "/vm", Some(r#"{"state":"Asleep"}"#)));
    assert_eq!(status, 400);
    assert!(msg.contains("unknown variant `Asleep`"), "{msg}");
    let (status, msg) = refused(vm.call("PATCH", "/vm", Some("{")));
    assert_eq!(status, 400, "{msg}");
    assert_eq!(refused(vm.call("GET", "/nothing", None)).0, 404);
    assert_eq!(refused(vm.call("DELETE", "/vm", None)).0, 405);
    let (status, msg) = refused(vm.call("PUT", "/actions", Some(r#"{"action_type":"Shutdown"}"#)));
    assert_eq!(status, 400);
    assert!(msg.contains("no power button"), "{msg}");

    // Not HTTP at all: a 400 and the connection closed.
    let mut s = UnixStream::connect(&vm.sock).unwrap();
    s.write_all(b"\x16\x03\x01 hello\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");

    // Too big: refused, not buffered without end.
    let mut s = UnixStream::connect(&vm.sock).unwrap();
    let _ = s.write_all(b"PUT /vm HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 413 "), "{reply}");

    // File descriptors where none belong.
    let f = std::fs::File::open("/dev/null").unwrap();
    let r = request(
        &vm.sock,
        "GET",
        "/",
        None,
        &[std::os::fd::AsRawFd::as_raw_fd(&f)],
    );
    let (status, msg) = refused(r.map(|r| r.body));
    assert_eq!(status, 400);
    assert!(msg.contains("takes no file descriptors"), "{msg}");

    // The guest never noticed.
    let c = vm.count();
    vm.wait_for(|n| n > c, "the guest to go on counting");
}

#[test]
fn idle_connections_cannot_shut_the_api_out() {
    let vm = CounterVm::start("conns", &[]);
    // Connections that send nothing: flint holds at most 16, closing the idle longest.
    let idle: Vec<UnixStream> = (0..40)
        .filter_map(|_| UnixStream::connect(&vm.sock).ok())
        .collect();
    // A request still gets through while they are all open.
    assert_eq!(vm.state(), "Running");
    let closed = idle
        .iter()
        .filter(|s| {
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            matches!((&**s).read(&mut [0u8; 1]), Ok(0))
        })
        .count();
    assert!(
        closed >= 40 - 16,
        "only {closed} of 40 idle connections were closed"
    );
}

#[test]
fn the_socket_is_private_taken_once_and_removed_when_flint_exits() {
    let mut vm = CounterVm::start("sock", &[]);
    let mode = std::fs::metadata(&vm.sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    // A second flint on the same socket: a one-line error before anything runs.
    let r = second_flint(&vm.sock);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("another process is serving this socket"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert_eq!(vm.state(), "Running", "the first flint's API survived");

    vm.stop();
    assert!(!vm.sock.exists(), "the socket outlived flint");
    assert_no_client(&vm.sock);

    // A regular file where the socket would go is left alone.
    std::fs::write(&vm.sock, b"mine").unwrap();
    let r = second_flint(&vm.sock);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("is not a socket"), "{}", r.stderr);
    assert_eq!(std::fs::read(&vm.sock).unwrap(), b"mine");
}

#[test]
fn a_killed_flint_leaves_no_socket_behind() {
    let mut vm = CounterVm::start("kill", &[]);
    let mut child = vm.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while vm.sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!vm.sock.exists(), "SIGKILL left the socket behind");
}

/// Another flint asked to serve its API on `sock`.
fn second_flint(sock: &Path) -> Run {
    let fw = firmware("counter");
    run(&[
        "run",
        "--kernel",
        fw.to_str().unwrap(),
        "--api-sock",
        sock.to_str().unwrap(),
    ])
}

/// `flint ctl` on a socket nobody serves: one line that says so, exit 1.
fn assert_no_client(sock: &Path) {
    let o = flint()
        .args(["ctl", "--api-sock", sock.to_str().unwrap(), "state"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot reach flint's API"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
