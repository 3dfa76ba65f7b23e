//! The guest init's agent (`init/agent.c`) against the host's client ([`crate::agent`]), on
//! this host: the init's `--agent-test SOCKET TIMEOUT_MS PROGRAM…` mode runs its loop as in a
//! guest, listening on a Unix socket instead of vsock, with PROGRAM as the workload. The
//! workload shares the test's namespaces, so an exec'd process enters none (in a guest it
//! enters the container's); everything else is the guest's code path: the loop, the framing,
//! the spec parser, the pty or pipes, the process's setup and exec, reaping.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::agent::{
    self, encode_exec_spec, encode_frame, AgentError, AgentStream, ExecIo, ExecSession,
    FrameDecoder, FrameType, DATA_MAX, EXEC_SPEC_MAX, HEADER_LEN, MAX_EXECS,
};
use crate::spec::{GuestMount, Mount, RunSpec};

const INIT: &str = env!("FLINT_INIT_BIN");

/// The request timeout the tests give the agent, in milliseconds.
const TIMEOUT_MS: u64 = 400;

/// A directory of the test's own in the temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("flint-agent-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test's directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The init in `--agent-test` mode, with its workload.
struct Agent {
    child: Child,
    socket: PathBuf,
    dir: TempDir,
}

impl Agent {
    /// Starts the agent with `workload` (a shell script, run in the test's directory, where
    /// `$D` names it) and waits until it accepts connections.
    fn start(name: &str, workload: &str) -> Agent {
        let dir = TempDir::new(name);
        let socket = dir.0.join("agent.sock");
        let child = Command::new(INIT)
            .arg("--agent-test")
            .arg(&socket)
            .arg(TIMEOUT_MS.to_string())
            .args(["/bin/sh", "-c", workload])
            .env("D", &dir.0)
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .spawn()
            .expect("run flint-init --agent-test");
        let agent = Agent { child, socket, dir };
        // The probe's connection ends at once, which frees its slot.
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&agent.socket).is_err() {
            assert!(Instant::now() < deadline, "the agent never listened");
            std::thread::sleep(Duration::from_millis(5));
        }
        agent
    }

    fn connect(&self) -> UnixStream {
        UnixStream::connect(&self.socket).expect("connect to the agent")
    }

    fn stream(&self) -> AgentStream {
        AgentStream::from_stream(self.connect())
    }

    /// Waits for the file `name` in the test's directory (the workload or a process made it).
    fn wait_for_file(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.dir.0.join(name).exists() {
            assert!(Instant::now() < deadline, "{name} never appeared");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The init's exit status, once it has exited (within 10 s).
    fn status(mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait for the init") {
                return s.code().expect("the init exited");
            }
            assert!(Instant::now() < deadline, "the init did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The init's resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read the init's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An exec spec for `args` (a shell script if `args` is one string) in `/`.
fn spec(args: &[&str], terminal: bool) -> Vec<u8> {
    encode_exec_spec(&run_spec(args, terminal)).expect("an exec spec")
}

fn run_spec(args: &[&str], terminal: bool) -> RunSpec {
    RunSpec {
        args: args.iter().map(|a| a.to_string()).collect(),
        env: vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".into(),
            "LC_ALL=C".into(),
        ],
        cwd: "/".into(),
        terminal,
        ..RunSpec::default()
    }
}

fn sh(script: &str) -> Vec<u8> {
    spec(&["/bin/sh", "-c", script], false)
}

/// A file the relay writes a process's output to.
struct Capture(std::fs::File, PathBuf);

impl Capture {
    fn new(dir: &TempDir, name: &str) -> Capture {
        let path = dir.0.join(name);
        let file = std::fs::File::create(&path).expect("create a capture file");
        Capture(file, path)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.1).expect("read a capture file")
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array on success.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are new and owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A pipe's read end that gives `input` and then its end.
fn input(bytes: &[u8]) -> OwnedFd {
    assert!(bytes.len() < 4096, "more than a pipe surely holds");
    let (r, w) = pipe();
    std::fs::File::from(w)
        .write_all(bytes)
        .expect("fill the pipe");
    r
}

/// Reads a raw connection to its end (or a reset), within 5 s.
fn read_to_end(mut s: UnixStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("read the connection: {e}"),
        }
    }
}

fn frames(bytes: &[u8]) -> Vec<(FrameType, Vec<u8>)> {
    let mut d = FrameDecoder::new();
    d.push(bytes);
    let mut out = Vec::new();
    while let Some(f) = d.next_frame().expect("well-formed frames") {
        out.push((f.kind, f.payload));
    }
    out
}

fn start(agent: &Agent, spec: &[u8]) -> ExecSession {
    agent.stream().start_exec(spec).expect("the process starts")
}

#[test]
fn a_signal_reaches_the_workload() {
    let agent = Agent::start(
        "signal",
        r#"trap 'exit 42' USR1; touch "$D/ready"; while :; do sleep 0.02; done"#,
    );
    agent.wait_for_file("ready");
    // A number that is no signal is refused, and the workload is untouched.
    for bad in [0, 65] {
        let e = agent.stream().signal(bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("signal {bad} is not one of 1 to 64"),
            "{e:?}"
        );
    }
    agent
        .stream()
        .signal(libc::SIGUSR1)
        .expect("signal the workload");
    assert_eq!(agent.status(), 42);
}

#[test]
fn exec_relays_stdin_stdout_stderr_and_the_exit_code() {
    let agent = Agent::start("pipes", "sleep 30");
    let out = Capture::new(&agent.dir, "out");
    let err = Capture::new(&agent.dir, "err");
    let stdin = input(b"hello\nworld\n");
    let session = start(
        &agent,
        &sh("cat; echo to-stderr >&2; [ -t 0 ] || echo not-a-tty; exit 7"),
    );
    let pid = session.pid();
    let outcome = session
        .relay(ExecIo {
            stdin: Some(stdin.as_fd()),
            stdout: out.0.as_fd(),
            stderr: err.0.as_fd(),
            signals: None,
            terminal: None,
        })
        .expect("relay");
    assert_eq!(outcome.exit_code, 7);
    assert_eq!(outcome.pid, pid);
    // On this host the process shares the test's PID namespace: its PID is a real one.
    assert!(pid > 1, "{pid}");
    assert_eq!(out.text(), "hello\nworld\nnot-a-tty\n");
    assert_eq!(err.text(), "to-stderr\n");

    // A signal kills it: 128+N. No stdin: it ends at once.
    let out = Capture::new(&agent.dir, "out2");
    let session = start(&agent, &sh("cat; kill -TERM $$"));
    let outcome = session.relay(ExecIo::output_to(out.0.as_fd())).unwrap();
    assert_eq!(outcome.exit_code, 128 + libc::SIGTERM);
    assert_eq!(out.text(), "");
}

#[test]
fn large_input_and_output_pass_through_intact() {
    let agent = Agent::start("large", "sleep 30");
    // More than every buffer on the way: the frames, the agent's queue, the pipes.
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(7) ^ (i >> 9)).to_le_bytes()[0])
        .collect();
    let (r, w) = pipe();
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || std::fs::File::from(w).write_all(&data))
    };
    let out = Capture::new(&agent.dir, "out");
    let err = Capture::new(&agent.dir, "err");
    let outcome = start(&agent, &spec(&["cat"], false))
        .relay(ExecIo {
            stdin: Some(r.as_fd()),
            stdout: out.0.as_fd(),
            stderr: err.0.as_fd(),
            signals: None,
            terminal: None,
        })
        .unwrap();
    writer.join().unwrap().expect("write the input");
    assert_eq!(outcome.exit_code, 0);
    let got = out.bytes();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the output differs from the input");
    assert!(err.bytes().is_empty());
}

/// A pty of the test's own, standing for the user's terminal: its slave's size is what the
/// relay sends.
fn test_terminal(rows: u16, cols: u16) -> (OwnedFd, OwnedFd) {
    // SAFETY: open(2) of a constant path; the result is checked.
    let m = unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    assert!(
        m >= 0,
        "open /dev/ptmx: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a new descriptor owned by nothing else.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the valid pointer.
    let r = unsafe { libc::ioctl(m, libc::TIOCSPTLCK, &unlock) };
    assert_eq!(r, 0, "unlock the pty");
    // SAFETY: TIOCGPTPEER returns a new descriptor or -1.
    let s = unsafe { libc::ioctl(m, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY) };
    assert!(s >= 0, "open the pty's slave");
    // SAFETY: a new descriptor owned by nothing else.
    let slave = unsafe { OwnedFd::from_raw_fd(s) };
    set_size(&slave, rows, cols);
    (master, slave)
}

fn set_size(fd: &OwnedFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the valid pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    assert_eq!(r, 0, "set the pty's size");
}

/// The writing end of a pipe standing for a signalfd: `send` writes a signalfd_siginfo record
/// of signal `n` (the relay reads nothing else of it).
struct SignalWriter(std::fs::File);

impl SignalWriter {
    fn send(&mut self, n: i32) {
        let mut record = [0u8; 128];
        record[..4].copy_from_slice(&n.to_ne_bytes());
        self.0.write_all(&record).expect("write a signal record");
    }
}

/// A fake signalfd: the reader for the relay, the writer for the test.
fn fake_signals() -> (OwnedFd, SignalWriter) {
    let (r, w) = pipe();
    (r, SignalWriter(std::fs::File::from(w)))
}

/// Waits until the capture holds `text` (the process got that far).
fn wait_for_output(c: &Capture, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.text().contains(text) {
        assert!(
            Instant::now() < deadline,
            "{text:?} never came; got {:?}",
            c.text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn exec_with_a_terminal_gets_a_controlling_pty_of_the_callers_size() {
    let agent = Agent::start("tty", "sleep 30");
    let out = Capture::new(&agent.dir, "out");
    let err = Capture::new(&agent.dir, "err");
    let (_master, slave) = test_terminal(33, 101);
    let (stdin_r, stdin_w) = pipe();
    let (signals_r, mut signals) = fake_signals();
    let script = "read x; stty size; echo \"[$x]\"; \
                  [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-ttys; \
                  exec 3</dev/tty && echo has-ctty; \
                  echo to-stderr >&2; \
                  read y; stty size; exit 3";
    let session = start(&agent, &spec(&["/bin/sh", "-c", script], true));
    let follower = {
        let out_path = out.1.clone();
        let slave = slave.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut stdin = std::fs::File::from(stdin_w);
            stdin.write_all(b"go\n").unwrap();
            let probe = Capture(std::fs::File::open(&out_path).unwrap(), out_path);
            wait_for_output(&probe, "to-stderr");
            // The user's terminal changes size: SIGWINCH, then more input.
            set_size(&slave, 40, 120);
            signals.send(libc::SIGWINCH);
            stdin.write_all(b"again\n").unwrap();
            // The input ends; a terminal's process goes on regardless.
            drop(stdin);
            signals
        })
    };
    let outcome = session
        .relay(ExecIo {
            stdin: Some(stdin_r.as_fd()),
            stdout: out.0.as_fd(),
            stderr: err.0.as_fd(),
            signals: Some(signals_r.as_fd()),
            terminal: Some(slave.as_fd()),
        })
        .unwrap();
    let _ = follower.join();
    assert_eq!(outcome.exit_code, 3);
    // Everything comes as STDOUT, through the pty's line discipline (echo, "\r\n").
    assert_eq!(
        out.text(),
        "go\r\n33 101\r\n[go]\r\nall-ttys\r\nhas-ctty\r\nto-stderr\r\nagain\r\n40 120\r\n"
    );
    assert_eq!(err.text(), "");
}

#[test]
fn signals_for_the_exec_reach_its_process() {
    let agent = Agent::start("exec-signal", "sleep 30");
    let out = Capture::new(&agent.dir, "out");
    let (reader, mut signals) = fake_signals();
    let session = start(
        &agent,
        &sh("trap 'echo got-usr1; exit 9' USR1; echo ready; while :; do sleep 0.02; done"),
    );
    let out_path = out.1.clone();
    let sender = std::thread::spawn(move || {
        let probe = Capture(std::fs::File::open(&out_path).unwrap(), out_path);
        wait_for_output(&probe, "ready");
        signals.send(libc::SIGUSR1);
        signals
    });
    let outcome = session
        .relay(ExecIo {
            stdin: None,
            stdout: out.0.as_fd(),
            stderr: out.0.as_fd(),
            signals: Some(reader.as_fd()),
            terminal: None,
        })
        .unwrap();
    let _ = sender.join();
    assert_eq!(outcome.exit_code, 9);
    assert_eq!(out.text(), "ready\ngot-usr1\n");
}

#[test]
fn a_process_that_cannot_start_reports_why_and_a_shells_status() {
    let agent = Agent::start("missing", "sleep 30");
    let cases: &[(RunSpec, i32, &str)] = &[
        (
            run_spec(&["/nonexistent/program"], false),
            127,
            "exec /nonexistent/program: No such file or directory",
        ),
        (
            run_spec(&["flint-no-such-program"], false),
            127,
            "exec flint-no-such-program: No such file or directory",
        ),
        (
            run_spec(&["/etc/passwd"], false),
            126,
            "exec /etc/passwd: Permission denied",
        ),
        (
            RunSpec {
                cwd: "/nonexistent-dir".into(),
                ..run_spec(&["true"], false)
            },
            125,
            "chdir to the working directory /nonexistent-dir: No such file or directory",
        ),
        (
            run_spec(&["/nonexistent/with-tty"], true),
            127,
            "exec /nonexistent/with-tty: No such file or directory",
        ),
    ];
    for (spec, want_status, want_message) in cases {
        let bytes = encode_exec_spec(spec).unwrap();
        match agent.stream().start_exec(&bytes) {
            Err(AgentError::NotStarted { message, status }) => {
                assert_eq!(status, *want_status, "{message}");
                assert_eq!(message, *want_message);
            }
            other => panic!("{want_message}: {other:?}"),
        }
    }
    // The raw frames: ERROR, then EXIT, then the end; never STARTED.
    let mut s = agent.connect();
    s.write_all(&encode_frame(FrameType::Exec, &spec(&["/nonexistent"], false)).unwrap())
        .unwrap();
    let got = frames(&read_to_end(s));
    assert_eq!(
        got,
        vec![
            (
                FrameType::Error,
                b"exec /nonexistent: No such file or directory".to_vec()
            ),
            (FrameType::Exit, 127i32.to_le_bytes().to_vec()),
        ]
    );
}

#[test]
fn a_refused_request_gets_an_error_and_the_end() {
    let agent = Agent::start("refused", "sleep 30");
    let mut with_mount = run_spec(&["true"], false);
    with_mount.mounts.push(GuestMount::New(Mount {
        destination: "/x".into(),
        fstype: "tmpfs".into(),
        source: "tmpfs".into(),
        flags: 0,
        data: String::new(),
    }));
    let mut with_hostname = run_spec(&["true"], false).encode().unwrap();
    // A container's record, spliced in before `end` (encode_exec_spec would refuse it).
    let end = with_hostname.len() - "end\0".len();
    with_hostname.splice(end..end, b"hostname\0h\0".iter().copied());
    let cases: &[(Vec<u8>, &str)] = &[
        (
            b"not a spec".to_vec(),
            "bad exec spec: wrong magic: not a flint-spec-1 file",
        ),
        (
            with_mount.encode().unwrap(),
            "bad exec spec: a mount, fs-mount or file record; an exec spec has only the process's records",
        ),
        (
            with_hostname,
            "bad exec spec: a hostname record; an exec spec has only the process's records",
        ),
        (
            b"flint-spec-1\0arg\0true\0end\0".to_vec(),
            "bad exec spec: no cwd record",
        ),
    ];
    for (bytes, why) in cases {
        match agent.stream().start_exec(bytes) {
            Err(AgentError::Refused(text)) => assert_eq!(text, *why),
            other => panic!("{why}: {other:?}"),
        }
    }
}

/// Writes `bytes` on a new connection and asserts that the agent closes it without a frame.
fn assert_closed_silently(agent: &Agent, bytes: &[u8], what: &str) {
    let mut s = agent.connect();
    s.write_all(bytes).unwrap();
    let start = Instant::now();
    let got = read_to_end(s);
    assert!(got.is_empty(), "{what}: {got:?}");
    // At once, not at the request timeout.
    assert!(
        start.elapsed() < Duration::from_millis(TIMEOUT_MS),
        "{what}: closed after {:?}",
        start.elapsed()
    );
}

fn header(kind: u8, len: u32) -> Vec<u8> {
    let mut h = vec![kind];
    h.extend_from_slice(&len.to_le_bytes());
    h
}

#[test]
fn malformed_and_oversize_frames_close_the_connection() {
    let agent = Agent::start(
        "malformed",
        r#"trap 'exit 21' USR2; touch "$D/ready"; while :; do sleep 0.02; done"#,
    );
    let max = u32::try_from(EXEC_SPEC_MAX).unwrap();
    let data_max = u32::try_from(DATA_MAX).unwrap();
    for (bytes, what) in [
        (header(0x7f, 0), "an unknown type"),
        (header(0x00, 0), "type 0"),
        (header(0x80, 0), "a guest-to-host type"),
        (header(0x10, 0), "STDIN as a request"),
        (header(0x02, 3), "a SIGNAL of 3 bytes"),
        (header(0x02, u32::MAX), "a SIGNAL of 4 GiB"),
        (header(0x01, 0), "an empty EXEC"),
        // Only the header is sent: the agent must not wait for (or allocate) the payload.
        (header(0x01, max + 1), "an EXEC over 1 MiB"),
        (header(0x01, u32::MAX), "an EXEC of 4 GiB"),
    ] {
        assert_closed_silently(&agent, &bytes, what);
    }

    // In a session: after STARTED, a bad frame ends the connection without EXIT.
    for (bytes, what) in [
        (header(0x10, data_max + 1), "STDIN over 64 KiB"),
        (header(0x11, 1), "a STDIN_EOF with a payload"),
        (header(0x12, 2), "a RESIZE of 2 bytes"),
        (header(0x01, 10), "a second EXEC"),
        (header(0x85, 4), "a guest-to-host type"),
    ] {
        let mut s = agent.connect();
        s.write_all(&encode_frame(FrameType::Exec, &spec(&["cat"], false)).unwrap())
            .unwrap();
        let mut started = [0u8; HEADER_LEN + 4];
        s.read_exact(&mut started).unwrap();
        assert_eq!(started[0], FrameType::Started.byte(), "{what}");
        s.write_all(&bytes).unwrap();
        let rest = read_to_end(s);
        assert!(rest.is_empty(), "{what}: {rest:?}");
    }

    // The agent still serves, and the workload still runs.
    let out = Capture::new(&agent.dir, "out");
    let outcome = agent::AgentStream::from_stream(agent.connect())
        .start_exec(&sh("echo fine"))
        .unwrap()
        .relay(ExecIo::output_to(out.0.as_fd()))
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    assert_eq!((outcome.exit_code, out.text().as_str()), (0, "fine\n"));
    agent.wait_for_file("ready");
    agent.stream().signal(libc::SIGUSR2).unwrap();
    assert_eq!(agent.status(), 21);
}

#[test]
fn a_request_must_come_in_time() {
    let agent = Agent::start("timeout", "sleep 30");
    for partial in [&[][..], &header(0x01, 100)[..3], &header(0x01, 100)[..]] {
        let mut s = agent.connect();
        s.write_all(partial).unwrap();
        let start = Instant::now();
        assert!(read_to_end(s).is_empty());
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(TIMEOUT_MS - 50) && took < Duration::from_secs(3),
            "{partial:?}: closed after {took:?}"
        );
    }
}

#[test]
fn execs_run_side_by_side_up_to_the_limit() {
    let agent = Agent::start(
        "concurrent",
        r#"trap 'exit 33' USR1; touch "$D/ready"; while :; do sleep 0.02; done"#,
    );
    // A waits for its input while B starts, runs and ends.
    let (a_in_r, a_in_w) = pipe();
    let a = start(&agent, &sh("read x; echo \"a got $x\"; exit 1"));
    let b_out = Capture::new(&agent.dir, "b");
    let b = start(&agent, &sh("echo b; exit 2"))
        .relay(ExecIo::output_to(b_out.0.as_fd()))
        .unwrap();
    assert_eq!((b.exit_code, b_out.text().as_str()), (2, "b\n"));
    std::fs::File::from(a_in_w).write_all(b"late\n").unwrap();
    let a_out = Capture::new(&agent.dir, "a");
    let a = a
        .relay(ExecIo {
            stdin: Some(a_in_r.as_fd()),
            stdout: a_out.0.as_fd(),
            stderr: a_out.0.as_fd(),
            signals: None,
            terminal: None,
        })
        .unwrap();
    assert_eq!((a.exit_code, a_out.text().as_str()), (1, "a got late\n"));

    // MAX_EXECS at once; one more is refused while they run.
    let sessions: Vec<ExecSession> = (0..MAX_EXECS)
        .map(|_| start(&agent, &spec(&["sleep", "30"], false)))
        .collect();
    match agent.stream().start_exec(&spec(&["true"], false)) {
        Err(AgentError::Refused(text)) => assert_eq!(
            text,
            "16 exec'd processes are running already, the most there may be"
        ),
        other => panic!("{other:?}"),
    }
    // Signals still get through; the workload's exit ends the rest.
    agent.wait_for_file("ready");
    agent.stream().signal(libc::SIGUSR1).unwrap();
    let pids: Vec<u32> = sessions.iter().map(ExecSession::pid).collect();
    assert_eq!(agent.status(), 33);
    drop(sessions);
    // The agent killed them (on this host they are real PIDs).
    for pid in pids {
        assert_gone(pid);
    }
}

/// Asserts that the process `pid` ends (or is a zombie) within 5 s.
fn assert_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return,
            Ok(stat) => {
                let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
                if state == Some("Z") || state == Some("X") {
                    return;
                }
            }
        }
        assert!(Instant::now() < deadline, "process {pid} still runs");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_host_that_stops_reading_holds_up_only_its_own_process() {
    let agent = Agent::start("stalled", "sleep 30");
    // A floods its stdout and nobody reads it.
    let flood = start(&agent, &spec(&["yes", "0123456789abcdef"], false));
    let flood_pid = flood.pid();
    std::thread::sleep(Duration::from_millis(500));
    // The agent holds a bounded amount: its queue, not the flood.
    let rss = agent.rss_kib();
    assert!(rss < 16 << 10, "the agent's RSS grew to {rss} KiB");
    // Others are served meanwhile.
    let out = Capture::new(&agent.dir, "out");
    let outcome = start(&agent, &sh("echo still-served"))
        .relay(ExecIo::output_to(out.0.as_fd()))
        .unwrap();
    assert_eq!(
        (outcome.exit_code, out.text().as_str()),
        (0, "still-served\n")
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.rss_kib() < 16 << 10);
    // The host goes away: the flood's output ends (EPIPE), and so does it.
    drop(flood);
    assert_gone(flood_pid);
}

#[test]
fn the_workloads_exit_cuts_off_running_execs() {
    let agent = Agent::start(
        "cutoff",
        r#"while [ ! -e "$D/go" ]; do sleep 0.02; done; exit 5"#,
    );
    let session = start(&agent, &spec(&["sleep", "30"], false));
    let pid = session.pid();
    let go = agent.dir.0.join("go");
    let relay = std::thread::spawn(move || {
        let sink = std::fs::File::create("/dev/null").unwrap();
        session.relay(ExecIo::output_to(sink.as_fd()))
    });
    std::thread::sleep(Duration::from_millis(100));
    std::fs::write(go, b"").unwrap();
    assert_eq!(agent.status(), 5);
    match relay.join().unwrap() {
        Err(AgentError::Closed) => {}
        other => panic!("{other:?}"),
    }
    assert_gone(pid);
}

/// A stand-in for the VM's hybrid-vsock socket: answers `CONNECT 1024` with `OK`, then
/// relays bytes between its client and the agent, for `connections` clients.
fn vsock_proxy(agent_socket: PathBuf, dir: &Path, connections: usize) -> PathBuf {
    let path = dir.join("vsock.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().take(connections) {
            let mut client = client.unwrap();
            let mut line = Vec::new();
            let mut byte = [0u8];
            while client.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
                line.push(byte[0]);
            }
            assert_eq!(line, b"CONNECT 1024");
            let guest = UnixStream::connect(&agent_socket).unwrap();
            client.write_all(b"OK 1073741824\n").unwrap();
            let (mut c2, mut g2) = (client.try_clone().unwrap(), guest.try_clone().unwrap());
            let mut guest = guest;
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut g2);
                let _ = g2.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut guest, &mut client);
                let _ = client.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    path
}

#[test]
fn the_client_speaks_the_vsock_handshake() {
    let agent = Agent::start(
        "vsock",
        r#"trap 'exit 44' HUP; touch "$D/ready"; while :; do sleep 0.02; done"#,
    );
    let uds = vsock_proxy(agent.socket.clone(), &agent.dir.0, 2);
    let out = Capture::new(&agent.dir, "out");
    let stdin = input(b"through vsock\n");
    let outcome = agent::exec(
        &uds,
        &spec(&["cat"], false),
        ExecIo {
            stdin: Some(stdin.as_fd()),
            stdout: out.0.as_fd(),
            stderr: out.0.as_fd(),
            signals: None,
            terminal: None,
        },
    )
    .unwrap();
    assert_eq!(
        (outcome.exit_code, out.text().as_str()),
        (0, "through vsock\n")
    );
    agent.wait_for_file("ready");
    agent::signal(&uds, libc::SIGHUP).unwrap();
    assert_eq!(agent.status(), 44);
}

#[test]
fn a_vsock_socket_that_does_not_answer_ok_fails_the_connect() {
    let dir = TempDir::new("handshake");
    let refusing = dir.0.join("refusing.sock");
    let silent = dir.0.join("silent.sock");
    let (l1, l2) = (
        UnixListener::bind(&refusing).unwrap(),
        UnixListener::bind(&silent).unwrap(),
    );
    std::thread::spawn(move || {
        // As the VMM does when nothing listens on the port: the line, then the close.
        for c in l1.incoming().take(2) {
            let mut c = c.unwrap();
            let mut line = [0u8; 13];
            c.read_exact(&mut line).unwrap();
            drop(c);
        }
    });
    let held = std::thread::spawn(move || l2.accept().map(|(s, _)| s));
    let e = agent::connect(&refusing, Duration::from_secs(5)).unwrap_err();
    assert!(
        matches!(e, AgentError::Handshake(_)) && e.to_string().contains("closed the connection"),
        "{e}"
    );
    let e = agent::signal(&refusing, libc::SIGTERM).unwrap_err();
    assert!(matches!(e, AgentError::Handshake(_)), "{e}");
    let start = Instant::now();
    let e = agent::connect(&silent, Duration::from_millis(200)).unwrap_err();
    assert!(matches!(e, AgentError::Timeout(_)), "{e}");
    assert!(start.elapsed() < Duration::from_secs(2));
    drop(held);
    let e = agent::connect(&dir.0.join("absent.sock"), Duration::from_secs(1)).unwrap_err();
    assert!(matches!(e, AgentError::Connect { .. }), "{e}");
}

#[test]
fn the_agent_frames_what_it_sends() {
    // The raw bytes of one exec, as a client in another language would see them.
    let agent = Agent::start("raw", "sleep 30");
    let mut s = agent.connect();
    let mut request = encode_frame(FrameType::Exec, &sh("cat; echo e >&2")).unwrap();
    request.extend(encode_frame(FrameType::Stdin, b"abc").unwrap());
    request.extend(encode_frame(FrameType::StdinEof, &[]).unwrap());
    s.write_all(&request).unwrap();
    let got = frames(&read_to_end(s));
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0].0, FrameType::Started);
    assert_eq!(got[1], (FrameType::Stdout, b"abc".to_vec()));
    assert_eq!(got[2], (FrameType::Stderr, b"e\n".to_vec()));
    assert_eq!(got[3], (FrameType::Exit, 0i32.to_le_bytes().to_vec()));
    assert_eq!(HEADER_LEN, 5);
}
