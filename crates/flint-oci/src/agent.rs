//! The host side of the guest init's agent: signals for a running container's workload and
//! `exec` of a second process inside it, over the VM's virtio-vsock device.
//!
//! The guest side is the init's loop (`crates/flint-oci/src/init/agent.c`), which listens on
//! vsock port [`AGENT_PORT`] while the workload runs, if the VM has a vsock device. The host
//! reaches it through the device's Unix socket (`--vsock cid=N,socket=PATH`, Firecracker's
//! hybrid vsock): [`connect`] writes `CONNECT 1024\n`, reads `OK <port>\n`, and the socket is
//! then a byte stream to the agent.
//!
//! # Protocol
//!
//! Every message is a frame: `[type: u8][len: u32 little-endian][payload: len bytes]`. A
//! connection carries one request, its first frame; the agent closes it when the request is
//! done. Frames (the C side's `enum agent_frame` in `init/flint-init.h` must match):
//!
//! | type | name | direction | payload |
//! |---|---|---|---|
//! | `0x01` | `EXEC` | host → guest, request | an exec spec (below), 1 byte to 1 MiB |
//! | `0x02` | `SIGNAL` | host → guest, request or in an exec | u32 signal number (1 to 64) |
//! | `0x10` | `STDIN` | host → guest, in an exec | data for the process's stdin, ≤ 64 KiB |
//! | `0x11` | `STDIN_EOF` | host → guest, in an exec | empty: close the process's stdin |
//! | `0x12` | `RESIZE` | host → guest, in an exec | u16 rows, u16 columns: the pty's size |
//! | `0x80` | `OK` | guest → host | empty: the signal was sent |
//! | `0x81` | `ERROR` | guest → host | UTF-8 text, ≤ 64 KiB (the agent's are ≤ 1 KiB) |
//! | `0x82` | `STARTED` | guest → host | u32: the process's PID in the container's PID namespace |
//! | `0x83` | `STDOUT` | guest → host | the process's output, ≤ 64 KiB (the agent sends ≤ 16 KiB) |
//! | `0x84` | `STDERR` | guest → host | the same, from its stderr |
//! | `0x85` | `EXIT` | guest → host | i32: its exit code, or 128+N if signal N killed it |
//!
//! A frame of a type the receiver does not expect at that point, a fixed-size payload of
//! another size, or a length over the type's limit ends the connection: the agent closes it
//! (reading no payload past the header), and the client here fails with
//! [`AgentError::Protocol`].
//!
//! - **`SIGNAL` request:** the agent sends the signal to the workload (the container's process,
//!   PID 1 of its PID namespace, which like any PID-namespace init only receives the signals
//!   it has a handler for; SIGKILL always ends it), replies `OK` or `ERROR text`, and closes.
//! - **`EXEC` request:** the payload is a run spec ([`crate::spec`]) with the process's
//!   records only (`arg`, `env`, `cwd`, `uid`, `gid`, `group`, `umask`, `terminal`,
//!   `no-new-privileges`, `rlimit`, `caps`, `oom-score-adj`, `seccomp`; `root-readonly 0` is
//!   accepted as [`RunSpec::encode`] writes it); see [`exec_spec_for_args`] and
//!   [`exec_spec_from_process_json`]. The agent forks a child that joins the workload's
//!   namespaces (mount last, which makes the container's root its root; it is born in the
//!   container's PID namespace, and joins its pids cgroup if the bundle has a pids limit),
//!   gets a session of its own and its stdio, and becomes the process exactly as the
//!   workload did (rlimits, umask, seccomp, user, groups, capabilities, `no_new_privs`, cwd,
//!   `execve` with a PATH lookup in the spec's environment). Once `execve` succeeded, the
//!   agent sends `STARTED`; then `STDOUT`/`STDERR` frames as the process writes, while the
//!   host may send `STDIN`, `STDIN_EOF`, `RESIZE` and `SIGNAL` (for that process); once the
//!   process has exited and the output it left has been sent, `EXIT`, and the agent closes.
//!   A request the agent refuses (a bad spec, too many execs) gets `ERROR text` and the
//!   close. A process that cannot start gets `ERROR text` (e.g. `exec foo: No such file or
//!   directory`) and `EXIT` with 127 (not found), 126 (found but not executable) or 125
//!   (its setup failed, e.g. no such `cwd`), as shells report, and no `STARTED`.
//! - **Terminal:** with `terminal 1` the process's stdin, stdout and stderr are a pty (from
//!   the init's own devpts) that is its controlling terminal; all its output comes as
//!   `STDOUT`, in the pty's modes (cooked, echo: the host's terminal should be raw), `RESIZE`
//!   sets its size, and `STDIN_EOF` is ignored (a terminal's end of input is its EOF
//!   character, sent as data). Without, it has three pipes.
//! - **Bounds:** 16 exec'd processes at once ([`MAX_EXECS`]); 8 connections that are reading
//!   their request or sending a last reply, each of which must be done within 10 s; more are
//!   closed at once. Each connection holds one frame of input and 64 KiB of output: a host
//!   that does not read holds up its own process's output (its pipe fills and the process
//!   waits), nothing else.
//! - **Ends:** the host must not half-close: the end of its stream (or a broken frame) ends
//!   the connection, and a running process loses its stdio (EOF on stdin, EPIPE on its
//!   output, a hangup for a terminal) but keeps running, and its slot, until it exits. When
//!   the workload exits, the VM ends as without the agent: running execs are cut off (their
//!   connections close without `EXIT`). Output a process's descendants write after it
//!   exited is not waited for.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::bundle::{self, invalid, BundleError};
use crate::spec::RunSpec;

/// The vsock port the guest's agent listens on.
pub const AGENT_PORT: u32 = 1024;
/// A frame's header: its type and its payload's length.
pub const HEADER_LEN: usize = 5;
/// The most a data frame (`STDIN`, `STDOUT`, `STDERR`, `ERROR`) carries.
pub const DATA_MAX: usize = 64 << 10;
/// The most an `EXEC` frame's spec may be.
pub const EXEC_SPEC_MAX: usize = 1 << 20;
/// The most processes the agent runs for exec at once.
pub const MAX_EXECS: usize = 16;
/// How long [`signal`] and [`exec`] wait for the vsock handshake and the agent's replies.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`AgentStream::start_exec`] waits for `STARTED`: the process's setup and
/// `execve` in a guest that may be slow (emulated, nested).
const STARTED_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest `OK <port>\n` line the vsock device answers with.
const HANDSHAKE_LINE_MAX: usize = 32;

/// A frame's type (see the module's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    Exec = 0x01,
    Signal = 0x02,
    Stdin = 0x10,
    StdinEof = 0x11,
    Resize = 0x12,
    Ok = 0x80,
    Error = 0x81,
    Started = 0x82,
    Stdout = 0x83,
    Stderr = 0x84,
    Exit = 0x85,
}

impl FrameType {
    const ALL: [FrameType; 11] = [
        FrameType::Exec,
        FrameType::Signal,
        FrameType::Stdin,
        FrameType::StdinEof,
        FrameType::Resize,
        FrameType::Ok,
        FrameType::Error,
        FrameType::Started,
        FrameType::Stdout,
        FrameType::Stderr,
        FrameType::Exit,
    ];

    /// The type with this byte, if it is one.
    pub fn from_byte(byte: u8) -> Option<FrameType> {
        Self::ALL.into_iter().find(|t| t.byte() == byte)
    }

    pub fn byte(self) -> u8 {
        self as u8
    }

    /// Its name in the protocol's documentation.
    pub fn name(self) -> &'static str {
        match self {
            FrameType::Exec => "EXEC",
            FrameType::Signal => "SIGNAL",
            FrameType::Stdin => "STDIN",
            FrameType::StdinEof => "STDIN_EOF",
            FrameType::Resize => "RESIZE",
            FrameType::Ok => "OK",
            FrameType::Error => "ERROR",
            FrameType::Started => "STARTED",
            FrameType::Stdout => "STDOUT",
            FrameType::Stderr => "STDERR",
            FrameType::Exit => "EXIT",
        }
    }

    /// The sizes a payload of this type may have, inclusive.
    pub fn payload_range(self) -> (usize, usize) {
        match self {
            FrameType::Exec => (1, EXEC_SPEC_MAX),
            FrameType::Signal | FrameType::Resize | FrameType::Started | FrameType::Exit => (4, 4),
            FrameType::StdinEof | FrameType::Ok => (0, 0),
            FrameType::Stdin | FrameType::Error | FrameType::Stdout | FrameType::Stderr => {
                (0, DATA_MAX)
            }
        }
    }
}

/// One frame, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameType,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The payload as the u32 of a `SIGNAL` or `STARTED` frame (checked to be 4 bytes when
    /// decoded).
    fn u32(&self) -> Result<u32, AgentError> {
        let bytes: [u8; 4] = self.payload.as_slice().try_into().map_err(|_| {
            AgentError::Protocol(format!(
                "{} frame of {} bytes, not 4",
                self.kind.name(),
                self.payload.len()
            ))
        })?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("connect to the VM's vsock socket {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the guest's agent (vsock port {port}) did not take the connection: {0}", port = AGENT_PORT)]
    Handshake(String),
    #[error("the guest's agent did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the connection to the guest's agent: {0}")]
    Io(#[from] io::Error),
    #[error("the guest's agent broke the protocol: {0}")]
    Protocol(String),
    /// The agent refused the request (`ERROR`, then the end of the connection).
    #[error("{0}")]
    Refused(String),
    /// The process could not be started (`ERROR`, then `EXIT` with `status`: 125, 126, 127).
    #[error("{message}")]
    NotStarted { message: String, status: i32 },
    #[error("the guest's agent closed the connection before the process's exit status (has the container stopped?)")]
    Closed,
    #[error("{} frame of {len} bytes: it carries {min} to {max}", kind.name())]
    TooLarge {
        kind: FrameType,
        len: usize,
        min: usize,
        max: usize,
    },
}

/// A frame's bytes; a payload outside the type's sizes is refused.
pub fn encode_frame(kind: FrameType, payload: &[u8]) -> Result<Vec<u8>, AgentError> {
    let (min, max) = kind.payload_range();
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|_| (min..=max).contains(&payload.len()))
        .ok_or(AgentError::TooLarge {
            kind,
            len: payload.len(),
            min,
            max,
        })?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(kind.byte());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Splits a byte stream into frames. A header is judged as soon as it is whole, so that a
/// peer cannot make the buffer hold more than one frame's limit and what was read after it.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, None if more bytes are needed, or an error for a frame of an
    /// unknown type or with a payload outside its type's sizes (nothing more can be read
    /// from the stream then).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, AgentError> {
        let Some(head) = self.buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let kind = FrameType::from_byte(head[0]).ok_or_else(|| {
            AgentError::Protocol(format!("a frame of unknown type {:#04x}", head[0]))
        })?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        let (min, max) = kind.payload_range();
        let len = usize::try_from(len)
            .ok()
            .filter(|l| (min..=max).contains(l))
            .ok_or_else(|| {
                AgentError::Protocol(format!(
                    "{} frame of {len} bytes (it carries {min} to {max})",
                    kind.name()
                ))
            })?;
        // At most HEADER_LEN + EXEC_SPEC_MAX: no overflow.
        let end = HEADER_LEN + len;
        if self.buf.len() < end {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..end].to_vec();
        self.buf.drain(..end);
        Ok(Some(Frame { kind, payload }))
    }
}

/// A connection to the guest's agent, after the vsock handshake: one request.
#[derive(Debug)]
pub struct AgentStream {
    stream: UnixStream,
    decoder: FrameDecoder,
}

/// Connects to the agent through the VM's hybrid-vsock socket `uds`: `CONNECT 1024`, then the
/// device's `OK` once the guest has accepted, all within `timeout`.
pub fn connect(uds: &Path, timeout: Duration) -> Result<AgentStream, AgentError> {
    let deadline = Instant::now() + timeout;
    let mut stream = UnixStream::connect(uds).map_err(|source| AgentError::Connect {
        path: uds.display().to_string(),
        source,
    })?;
    stream.set_write_timeout(Some(timeout))?;
    stream
        .write_all(format!("CONNECT {AGENT_PORT}\n").as_bytes())
        .map_err(|e| timed_out(e, timeout))?;
    // A byte at a time: what follows the line is the agent's.
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(AgentError::Timeout(timeout));
        }
        stream.set_read_timeout(Some(left))?;
        let mut byte = [0u8];
        match stream.read(&mut byte) {
            Ok(0) => {
                return Err(AgentError::Handshake(if line.is_empty() {
                    "the VM closed the connection (is the container running, with its VM's vsock device?)".into()
                } else {
                    format!("the VM answered {:?}", String::from_utf8_lossy(&line))
                }))
            }
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() >= HANDSHAKE_LINE_MAX => {
                return Err(AgentError::Handshake(format!(
                    "the VM's answer is longer than {HANDSHAKE_LINE_MAX} bytes"
                )))
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(timed_out(e, timeout)),
        }
    }
    if !line.starts_with(b"OK ") {
        return Err(AgentError::Handshake(format!(
            "the VM answered {:?}",
            String::from_utf8_lossy(&line)
        )));
    }
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    Ok(AgentStream::from_stream(stream))
}

/// A read or write timeout as [`AgentError::Timeout`].
fn timed_out(e: io::Error, timeout: Duration) -> AgentError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => AgentError::Timeout(timeout),
        _ => AgentError::Io(e),
    }
}

/// Sends `signal` to the workload of the VM whose hybrid-vsock socket is `uds`.
pub fn signal(uds: &Path, signal: i32) -> Result<(), AgentError> {
    connect(uds, DEFAULT_TIMEOUT)?.signal(signal)
}

/// Runs the process of the exec spec `spec` in the container of the VM whose hybrid-vsock
/// socket is `uds`, relaying its stdio with `io` until it exits.
pub fn exec(uds: &Path, spec: &[u8], io: ExecIo<'_>) -> Result<ExecOutcome, AgentError> {
    connect(uds, DEFAULT_TIMEOUT)?.start_exec(spec)?.relay(io)
}

impl AgentStream {
    /// A stream already connected to the agent (after the vsock handshake; in tests, to the
    /// init's `--agent-test` socket).
    pub fn from_stream(stream: UnixStream) -> AgentStream {
        AgentStream {
            stream,
            decoder: FrameDecoder::new(),
        }
    }

    fn send(&mut self, kind: FrameType, payload: &[u8]) -> Result<(), AgentError> {
        let frame = encode_frame(kind, payload)?;
        self.stream.write_all(&frame)?;
        Ok(())
    }

    /// The next frame, within `timeout`; None at the end of the stream.
    fn recv(&mut self, timeout: Duration) -> Result<Option<Frame>, AgentError> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; DATA_MAX];
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AgentError::Timeout(timeout));
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(None),
                Ok(n) => self.decoder.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(timed_out(e, timeout)),
            }
        }
    }

    /// The `SIGNAL` request: `signal` to the workload.
    pub fn signal(mut self, signal: i32) -> Result<(), AgentError> {
        let number = u32::try_from(signal)
            .map_err(|_| AgentError::Refused(format!("{signal} is not a signal number")))?;
        self.send(FrameType::Signal, &number.to_le_bytes())?;
        match self.recv(DEFAULT_TIMEOUT)? {
            Some(f) if f.kind == FrameType::Ok => Ok(()),
            Some(f) if f.kind == FrameType::Error => Err(AgentError::Refused(f.text())),
            Some(f) => Err(unexpected(&f, "OK or ERROR")),
            None => Err(AgentError::Closed),
        }
    }

    /// The `EXEC` request: starts the process of the exec spec `spec` and returns once it
    /// runs (`STARTED`). A process that could not start is [`AgentError::NotStarted`], a
    /// refused request [`AgentError::Refused`].
    pub fn start_exec(mut self, spec: &[u8]) -> Result<ExecSession, AgentError> {
        self.send(FrameType::Exec, spec)?;
        let first = self.recv(STARTED_TIMEOUT)?.ok_or(AgentError::Closed)?;
        match first.kind {
            FrameType::Started => {
                let pid = first.u32()?;
                Ok(ExecSession { stream: self, pid })
            }
            FrameType::Error => match self.recv(DEFAULT_TIMEOUT)? {
                None => Err(AgentError::Refused(first.text())),
                Some(f) if f.kind == FrameType::Exit => Err(AgentError::NotStarted {
                    message: first.text(),
                    status: exit_status(&f)?,
                }),
                Some(f) => Err(unexpected(&f, "EXIT or the end")),
            },
            _ => Err(unexpected(&first, "STARTED or ERROR")),
        }
    }
}

fn unexpected(f: &Frame, wanted: &str) -> AgentError {
    AgentError::Protocol(format!("{} frame where {wanted} was due", f.kind.name()))
}

fn exit_status(f: &Frame) -> Result<i32, AgentError> {
    Ok(i32::from_le_bytes(f.u32()?.to_le_bytes()))
}

/// Where an exec'd process's stdio comes from and goes to, on the caller's side. None of
/// these descriptors is made non-blocking or closed.
#[derive(Debug, Clone, Copy)]
pub struct ExecIo<'a> {
    /// Read for the process's stdin while it is readable; its end becomes `STDIN_EOF`. None:
    /// the process's stdin ends at once.
    pub stdin: Option<BorrowedFd<'a>>,
    /// Where `STDOUT` frames are written (all the output, with a terminal).
    pub stdout: BorrowedFd<'a>,
    /// Where `STDERR` frames are written.
    pub stderr: BorrowedFd<'a>,
    /// A signalfd (anything that reads as `struct signalfd_siginfo` records): each signal is
    /// sent to the process, but SIGWINCH, which sends `RESIZE` with the size of `terminal`.
    pub signals: Option<BorrowedFd<'a>>,
    /// The caller's terminal, whose size (TIOCGWINSZ) the process's pty takes at the start
    /// and on each SIGWINCH.
    pub terminal: Option<BorrowedFd<'a>>,
}

#[cfg(test)]
impl<'a> ExecIo<'a> {
    /// No input, no signals, no terminal; stdout and stderr both to `out` (the tests' shape).
    pub(crate) fn output_to(out: BorrowedFd<'a>) -> ExecIo<'a> {
        ExecIo {
            stdin: None,
            stdout: out,
            stderr: out,
            signals: None,
            terminal: None,
        }
    }
}

/// How an exec'd process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecOutcome {
    /// Its PID in the container's PID namespace.
    pub pid: u32,
    /// Its exit code, or 128+N if signal N killed it.
    pub exit_code: i32,
}

/// A process the agent started ([`AgentStream::start_exec`]), to relay.
#[derive(Debug)]
pub struct ExecSession {
    stream: AgentStream,
    pid: u32,
}

/// The size of `struct signalfd_siginfo`, whose first field is the signal's number.
const SIGINFO_LEN: usize = 128;

impl ExecSession {
    /// The process's PID in the container's PID namespace.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Relays the process's stdio with `io` until it exits; returns its status. Output is
    /// written to the caller's descriptors as it comes (a write blocks the relay meanwhile;
    /// one that fails drops that stream's output, the process goes on); input is read only
    /// once what was read before has been sent, so that nothing buffers without bound.
    pub fn relay(self, io: ExecIo<'_>) -> Result<ExecOutcome, AgentError> {
        let ExecSession { stream, pid } = self;
        let AgentStream {
            stream: mut sock,
            mut decoder,
        } = stream;
        sock.set_nonblocking(true)?;
        let mut sinks = [Some(io.stdout), Some(io.stderr)];
        // What came with STARTED may be all there is.
        if let Some(exit_code) = deliver(&mut decoder, &mut sinks)? {
            return Ok(ExecOutcome { pid, exit_code });
        }
        let mut outgoing: Vec<u8> = Vec::new();
        // Once the agent has stopped reading (it closes after EXIT), only EXIT matters.
        let mut writable = true;
        let mut stdin = io.stdin;
        let mut signals = io.signals;
        if stdin.is_none() {
            outgoing.extend(encode_frame(FrameType::StdinEof, &[])?);
        }
        if let Some(size) = io.terminal.and_then(window_size) {
            outgoing.extend(encode_frame(FrameType::Resize, &size)?);
        }
        let mut buf = vec![0u8; DATA_MAX];
        loop {
            let sending = writable && !outgoing.is_empty();
            let mut fds = vec![pollfd(
                sock.as_fd(),
                libc::POLLIN | if sending { libc::POLLOUT } else { 0 },
            )];
            // Bounded like the input: signals wait while a frame's worth is unsent.
            let signals_at = match signals {
                Some(fd) if outgoing.len() < DATA_MAX => {
                    fds.push(pollfd(fd, libc::POLLIN));
                    Some(fds.len() - 1)
                }
                _ => None,
            };
            let stdin_at = match stdin {
                Some(fd) if writable && outgoing.is_empty() => {
                    fds.push(pollfd(fd, libc::POLLIN));
                    Some(fds.len() - 1)
                }
                _ => None,
            };
            poll(&mut fds)?;
            let ready = |at: Option<usize>| at.is_some_and(|i| fds[i].revents != 0);

            if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                loop {
                    match sock.read(&mut buf) {
                        Ok(0) => return Err(AgentError::Closed),
                        Ok(n) => decoder.push(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        // The agent closed without EXIT (the container stopped) while
                        // frames of ours were unread.
                        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                            return Err(AgentError::Closed)
                        }
                        Err(e) => return Err(e.into()),
                    }
                    if let Some(exit_code) = deliver(&mut decoder, &mut sinks)? {
                        return Ok(ExecOutcome { pid, exit_code });
                    }
                }
            }
            if sending && fds[0].revents & libc::POLLOUT != 0 {
                match sock.write(&outgoing) {
                    Ok(n) => {
                        outgoing.drain(..n);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                        ) =>
                    {
                        writable = false;
                        outgoing.clear();
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            // Signals before input: a RESIZE goes out before the keys typed after it.
            if let (true, Some(fd)) = (ready(signals_at), signals) {
                let mut info = [0u8; SIGINFO_LEN];
                match read_fd(fd, &mut info) {
                    Ok(n) if n >= 4 => {
                        let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
                        let frame = if i64::from(signo) == i64::from(libc::SIGWINCH) {
                            io.terminal
                                .and_then(window_size)
                                .map(|size| encode_frame(FrameType::Resize, &size))
                        } else {
                            Some(encode_frame(FrameType::Signal, &signo.to_le_bytes()))
                        };
                        if let (Some(frame), true) = (frame, writable) {
                            outgoing.extend(frame?);
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) => {}
                    // Its end, or a failure: no more signals from it.
                    _ => signals = None,
                }
            }
            if let (true, Some(fd), true) = (ready(stdin_at), stdin, outgoing.is_empty()) {
                match read_fd(fd, &mut buf) {
                    Ok(n) if n > 0 => outgoing.extend(encode_frame(FrameType::Stdin, &buf[..n])?),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) => {}
                    // The end, EIO from a terminal that hung up, or another failure: the
                    // process's input ends.
                    _ => {
                        stdin = None;
                        outgoing.extend(encode_frame(FrameType::StdinEof, &[])?);
                    }
                }
            }
        }
    }
}

/// Writes the output frames the decoder holds to the caller's descriptors; the process's
/// status once EXIT has come.
fn deliver(
    decoder: &mut FrameDecoder,
    sinks: &mut [Option<BorrowedFd<'_>>; 2],
) -> Result<Option<i32>, AgentError> {
    while let Some(f) = decoder.next_frame()? {
        let sink = match f.kind {
            FrameType::Stdout => &mut sinks[0],
            FrameType::Stderr => &mut sinks[1],
            FrameType::Exit => return exit_status(&f).map(Some),
            _ => return Err(unexpected(&f, "STDOUT, STDERR or EXIT")),
        };
        if let Some(fd) = *sink {
            if write_all_fd(fd, &f.payload).is_err() {
                *sink = None;
            }
        }
    }
    Ok(None)
}

fn pollfd(fd: BorrowedFd<'_>, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    }
}

/// poll(2) without a timeout, again after a signal.
fn poll(fds: &mut [libc::pollfd]) -> io::Result<()> {
    let n = libc::nfds_t::try_from(fds.len())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: `fds` is a valid, writable array of `n` pollfds for the call's duration.
        if unsafe { libc::poll(fds.as_mut_ptr(), n, -1) } >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; the descriptor is borrowed
    // open for the call.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Writes all of `buf` to the caller's descriptor, waiting while a non-blocking one is full.
fn write_all_fd(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes; the descriptor is borrowed
        // open for the call.
        let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        match usize::try_from(n) {
            Ok(n) => buf = &buf[n..],
            Err(_) => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => {}
                    io::ErrorKind::WouldBlock => poll(&mut [pollfd(fd, libc::POLLOUT)])?,
                    _ => return Err(e),
                }
            }
        }
    }
    Ok(())
}

/// The terminal's size as a `RESIZE` payload, if `fd` is a terminal.
fn window_size(fd: BorrowedFd<'_>) -> Option<[u8; 4]> {
    let (rows, cols) = flint_vmm::terminal::size(fd.as_raw_fd())?;
    let mut size = [0u8; 4];
    size[..2].copy_from_slice(&rows.to_le_bytes());
    size[2..].copy_from_slice(&cols.to_le_bytes());
    Some(size)
}

// --- exec specs ---

/// An exec spec's bytes: the process's records of `spec` (see the module's documentation).
/// A spec with a container's records (root, mounts, hostname, sysctls, ...) is refused, as
/// is one over [`EXEC_SPEC_MAX`].
pub fn encode_exec_spec(spec: &RunSpec) -> Result<Vec<u8>, BundleError> {
    let container = [
        ("hostname", spec.hostname.is_some()),
        ("root.readonly", spec.root_readonly),
        ("root.path", spec.root_fs.is_some()),
        ("linux.resources.pids", spec.pids_limit.is_some()),
        ("mounts", !spec.mounts.is_empty()),
        ("linux.maskedPaths", !spec.masked_paths.is_empty()),
        ("linux.readonlyPaths", !spec.readonly_paths.is_empty()),
        ("linux.sysctl", !spec.sysctl.is_empty()),
    ];
    if let Some((field, _)) = container.iter().find(|(_, set)| *set) {
        return Err(invalid(
            *field,
            "a container's setting, not a process's: an exec'd process joins the running container's",
        ));
    }
    let bytes = spec
        .encode()
        .map_err(|e| invalid("process", e.to_string()))?;
    if bytes.len() > EXEC_SPEC_MAX {
        return Err(invalid(
            "process",
            format!(
                "{} bytes as an exec spec, more than {EXEC_SPEC_MAX}",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// The exec spec for a `process` object (`runc exec --process FILE`, as podman writes it),
/// on its own: no seccomp profile, and without `capabilities`, root's full set.
pub fn exec_spec_from_process_json(text: &str) -> Result<Vec<u8>, BundleError> {
    encode_exec_spec(&bundle::process_from_json(text)?)
}

/// The exec spec for a `process` object in the container of the bundle in `bundle_dir`, as
/// runc runs it: with the container's seccomp profile, and its capabilities, rlimits and OOM
/// score adjustment where the object has none.
pub fn exec_spec_from_process_json_in(
    bundle_dir: &Path,
    text: &str,
) -> Result<Vec<u8>, BundleError> {
    let mut spec = bundle::process_from_json(text)?;
    let container = bundle::container_process(bundle_dir)?;
    spec.seccomp = container.seccomp;
    if spec.caps.is_none() {
        spec.caps = container.caps;
    }
    if spec.rlimits.is_empty() {
        spec.rlimits = container.rlimits;
    }
    if spec.oom_score_adj.is_none() {
        spec.oom_score_adj = container.oom_score_adj;
    }
    encode_exec_spec(&spec)
}

/// What `flint exec ID ARGS…` changes from the container's own process (runc exec's
/// options); the rest (environment, working directory, user, capabilities, rlimits, seccomp)
/// is the bundle's `process` section's and `linux.seccomp`'s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// Give the process a pty as its controlling terminal (`--tty`).
    pub tty: bool,
    /// `NAME=VALUE` entries (`--env`), each replacing the container's entry of that name or
    /// added after them.
    pub env: Vec<String>,
    /// The working directory (`--cwd`), absolute.
    pub cwd: Option<String>,
    /// The user and group IDs (`--user UID:GID`).
    pub user: Option<(u32, u32)>,
    /// Additional group IDs (`--additional-gids`), replacing the container's.
    pub additional_gids: Option<Vec<u32>>,
    /// Set `no_new_privs` (`--no-new-privs`), whatever the container's process has.
    pub no_new_privileges: bool,
}

/// The exec spec for `args` in the container of the bundle in `bundle_dir`, with the
/// container's process settings changed by `options`.
pub fn exec_spec_for_args(
    bundle_dir: &Path,
    args: &[String],
    options: &ExecOptions,
) -> Result<Vec<u8>, BundleError> {
    if args.first().is_none_or(|a| a.is_empty()) {
        return Err(invalid("exec", "no program to run"));
    }
    let mut spec = bundle::container_process(bundle_dir)?;
    spec.args = args.to_vec();
    spec.terminal = options.tty;
    for entry in &options.env {
        let Some((name, _)) = entry.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(invalid(
                "exec --env",
                format!("'{entry}' is not NAME=VALUE"),
            ));
        };
        let prefix = format!("{name}=");
        match spec.env.iter_mut().find(|e| e.starts_with(&prefix)) {
            Some(e) => e.clone_from(entry),
            None => spec.env.push(entry.clone()),
        }
    }
    if let Some(cwd) = &options.cwd {
        if !cwd.starts_with('/') {
            return Err(invalid(
                "exec --cwd",
                format!("'{cwd}' is not an absolute path"),
            ));
        }
        spec.cwd.clone_from(cwd);
    }
    if let Some((uid, gid)) = options.user {
        spec.uid = uid;
        spec.gid = gid;
    }
    if let Some(gids) = &options.additional_gids {
        spec.additional_gids.clone_from(gids);
    }
    spec.no_new_privileges |= options.no_new_privileges;
    encode_exec_spec(&spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init_tests::print_spec;

    fn frame(kind: FrameType, payload: &[u8]) -> Vec<u8> {
        encode_frame(kind, payload).expect("a valid frame")
    }

    #[test]
    fn frames_encode_as_the_c_side_reads_them() {
        assert_eq!(
            frame(FrameType::Signal, &15u32.to_le_bytes()),
            [0x02, 4, 0, 0, 0, 15, 0, 0, 0]
        );
        assert_eq!(frame(FrameType::StdinEof, &[]), [0x11, 0, 0, 0, 0]);
        assert_eq!(
            frame(FrameType::Resize, &[24, 0, 80, 0]),
            [0x12, 4, 0, 0, 0, 24, 0, 80, 0]
        );
        let data = vec![0xabu8; 300];
        let f = frame(FrameType::Stdin, &data);
        assert_eq!(&f[..HEADER_LEN], &[0x10, 0x2c, 0x01, 0, 0]);
        assert_eq!(&f[HEADER_LEN..], &data[..]);
        // Every type's byte is its own, and reads back.
        for t in FrameType::ALL {
            assert_eq!(FrameType::from_byte(t.byte()), Some(t));
        }
        let bytes: Vec<u8> = FrameType::ALL.iter().map(|t| t.byte()).collect();
        assert_eq!(
            bytes,
            [0x01, 0x02, 0x10, 0x11, 0x12, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85]
        );
        assert_eq!(FrameType::from_byte(0x00), None);
        assert_eq!(FrameType::from_byte(0x86), None);
    }

    #[test]
    fn payloads_outside_their_sizes_are_not_encoded() {
        let big = vec![0u8; DATA_MAX + 1];
        for (kind, payload) in [
            (FrameType::Stdin, &big[..]),
            (FrameType::Exec, &[][..]),
            (FrameType::Signal, &[1, 2, 3][..]),
            (FrameType::StdinEof, &[0][..]),
            (FrameType::Resize, &[0; 5][..]),
        ] {
            let e = encode_frame(kind, payload).unwrap_err();
            assert!(matches!(e, AgentError::TooLarge { .. }), "{kind:?}: {e}");
        }
        assert!(encode_frame(FrameType::Stdin, &big[..DATA_MAX]).is_ok());
        assert!(encode_frame(FrameType::Exec, &vec![0; EXEC_SPEC_MAX]).is_ok());
        assert!(encode_frame(FrameType::Exec, &vec![0; EXEC_SPEC_MAX + 1]).is_err());
    }

    #[test]
    fn the_decoder_takes_frames_in_any_pieces() {
        let mut stream = Vec::new();
        stream.extend(frame(FrameType::Started, &77u32.to_le_bytes()));
        stream.extend(frame(FrameType::Stdout, b"hello"));
        stream.extend(frame(FrameType::Stderr, b""));
        stream.extend(frame(FrameType::Exit, &(-1i32).to_le_bytes()));
        let want = [
            Frame {
                kind: FrameType::Started,
                payload: 77u32.to_le_bytes().to_vec(),
            },
            Frame {
                kind: FrameType::Stdout,
                payload: b"hello".to_vec(),
            },
            Frame {
                kind: FrameType::Stderr,
                payload: vec![],
            },
            Frame {
                kind: FrameType::Exit,
                payload: vec![0xff; 4],
            },
        ];
        for piece in [1, 2, 3, 5, 7, stream.len()] {
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for chunk in stream.chunks(piece) {
                d.push(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, want, "pieces of {piece}");
            assert_eq!(exit_status(&got[3]).unwrap(), -1);
        }
    }

    #[test]
    fn the_decoder_refuses_a_bad_header_before_its_payload() {
        let cases: &[(&[u8], &str)] = &[
            (&[0x7f, 0, 0, 0, 0], "a frame of unknown type 0x7f"),
            (&[0x00, 0, 0, 0, 0], "a frame of unknown type 0x00"),
            // Only the header has come: the announced payload is refused before it is read.
            (
                &[0x83, 0x01, 0x00, 0x01, 0x00],
                "STDOUT frame of 65537 bytes",
            ),
            (
                &[0x83, 0xff, 0xff, 0xff, 0xff],
                "STDOUT frame of 4294967295 bytes",
            ),
            (
                &[0x01, 0x01, 0x00, 0x10, 0x00],
                "EXEC frame of 1048577 bytes",
            ),
            (
                &[0x01, 0, 0, 0, 0],
                "EXEC frame of 0 bytes (it carries 1 to 1048576)",
            ),
            (
                &[0x85, 3, 0, 0, 0],
                "EXIT frame of 3 bytes (it carries 4 to 4)",
            ),
            (&[0x80, 1, 0, 0, 0], "OK frame of 1 bytes"),
        ];
        for (bytes, why) in cases {
            let mut d = FrameDecoder::new();
            d.push(bytes);
            let e = d.next_frame().unwrap_err().to_string();
            assert!(e.contains(why), "{bytes:?}: {e}");
        }
        // A header cut short is only incomplete.
        let mut d = FrameDecoder::new();
        d.push(&[0x83, 5, 0]);
        assert_eq!(d.next_frame().unwrap(), None);
    }

    /// What `--print-spec` shows for an exec spec: the C parser reads it as the agent does.
    fn parsed(spec: &[u8]) -> String {
        let out = print_spec(&format!("exec-{}", spec.len()), spec);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A process object as podman 4.3 writes one for `podman exec -it` (trimmed of the
    /// capability lists' length, not of any field).
    const PODMAN_EXEC_PROCESS: &str = r#"{
        "terminal": true,
        "consoleSize": {"height": 50, "width": 120},
        "user": {"uid": 1000, "gid": 1000, "umask": 18, "additionalGids": [10, 1000]},
        "args": ["/bin/sh", "-c", "echo hi"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm", "container=podman", "HOME=/home/u"],
        "cwd": "/home/u",
        "capabilities": {
            "bounding": ["CAP_CHOWN", "CAP_KILL"],
            "effective": ["CAP_KILL"],
            "permitted": ["CAP_CHOWN", "CAP_KILL"]
        },
        "noNewPrivileges": true,
        "apparmorProfile": "containers-default-0.50.0",
        "selinuxLabel": "",
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024}]
    }"#;

    #[test]
    fn a_process_object_becomes_an_exec_spec() {
        let spec = exec_spec_from_process_json(PODMAN_EXEC_PROCESS).unwrap();
        let text = parsed(&spec);
        for line in [
            "arg /bin/sh\narg -c\narg echo\\x20hi\n",
            "env TERM=xterm\n",
            "cwd /home/u\nuid 1000\ngid 1000\ngroup 10\ngroup 1000\numask 18\n",
            "terminal 1\n",
            "no-new-privileges 1\n",
            "rlimit 7 1024 1024\n",
            // CAP_CHOWN (0) and CAP_KILL (5).
            "caps 33 32 0 33 0\n",
        ] {
            assert!(text.contains(line), "{line:?} not in {text}");
        }
        assert!(!text.contains("seccomp"), "{text}");
        assert!(!text.contains("mount"), "{text}");

        // What config.json refuses, a process object refuses too.
        for (json, why) in [
            ("{", "process: not a valid process object"),
            (
                r#"{"args": ["sh"], "cwd": "/", "unknown": 1}"#,
                "unknown field `unknown`",
            ),
            (r#"{"args": [], "cwd": "/"}"#, "process.args: missing"),
            (
                r#"{"args": ["sh"], "cwd": "rel"}"#,
                "process.cwd: 'rel' is not an absolute path",
            ),
            (
                r#"{"args": ["sh"], "cwd": "/", "env": ["NOEQUALS"]}"#,
                "'NOEQUALS' is not NAME=VALUE",
            ),
            (
                r#"{"args": ["sh\u0000"], "cwd": "/"}"#,
                "process.args contains a NUL byte",
            ),
        ] {
            let e = exec_spec_from_process_json(json).unwrap_err().to_string();
            assert!(e.contains(why), "{json}: {e}");
        }
    }

    /// A bundle directory with just a config.json (the exec helpers read nothing else).
    struct ConfigDir(std::path::PathBuf);

    impl ConfigDir {
        fn new(name: &str, config: &str) -> ConfigDir {
            let dir = std::env::temp_dir()
                .join(format!("flint-agent-config-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("config.json"), config).unwrap();
            ConfigDir(dir)
        }
    }

    impl Drop for ConfigDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const CONTAINER_CONFIG: &str = r#"{
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 5, "gid": 6, "additionalGids": [7]},
            "args": ["/bin/app", "--serve"],
            "env": ["PATH=/bin", "MODE=prod", "HOME=/"],
            "cwd": "/srv",
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                             "permitted": ["CAP_KILL"]},
            "rlimits": [{"type": "RLIMIT_NPROC", "soft": 10, "hard": 20}],
            "oomScoreAdj": 100
        },
        "root": {"path": "rootfs"},
        "hostname": "box",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {
            "seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                        "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]},
            "maskedPaths": ["/proc/kcore"],
            "sysctl": {"net.ipv4.ip_forward": "1"}
        }
    }"#;

    #[test]
    fn exec_args_take_the_containers_process_settings() {
        let dir = ConfigDir::new("args", CONTAINER_CONFIG);
        let args = vec!["sh".to_string(), "-c".into(), "id".into()];
        let plain = parsed(&exec_spec_for_args(&dir.0, &args, &ExecOptions::default()).unwrap());
        for line in [
            "arg sh\narg -c\narg id\n",
            "env PATH=/bin\nenv MODE=prod\nenv HOME=/\n",
            "cwd /srv\nuid 5\ngid 6\ngroup 7\n",
            "terminal 0\n",
            "rlimit 6 10 20\n",
            "caps 32 32 0 32 0\n",
            "oom-score-adj 100\n",
            "seccomp ",
        ] {
            assert!(plain.contains(line), "{line:?} not in {plain}");
        }
        // The container's own records stay the container's.
        for record in ["hostname", "mount", "masked", "sysctl", "root-fs"] {
            assert!(!plain.contains(record), "{record} in {plain}");
        }
        assert!(plain.contains("root-readonly 0\n"), "{plain}");

        let options = ExecOptions {
            tty: true,
            env: vec!["MODE=debug".into(), "EXTRA=1".into()],
            cwd: Some("/tmp".into()),
            user: Some((0, 0)),
            additional_gids: Some(vec![]),
            no_new_privileges: true,
        };
        let changed = parsed(&exec_spec_for_args(&dir.0, &args, &options).unwrap());
        for line in [
            "env PATH=/bin\nenv MODE=debug\nenv HOME=/\nenv EXTRA=1\n",
            "cwd /tmp\nuid 0\ngid 0\nterminal 1\n",
            "no-new-privileges 1\n",
        ] {
            assert!(changed.contains(line), "{line:?} not in {changed}");
        }
        assert!(!changed.contains("group "), "{changed}");

        for (args, options, why) in [
            (vec![], ExecOptions::default(), "exec: no program to run"),
            (
                args.clone(),
                ExecOptions {
                    env: vec!["=x".into()],
                    ..ExecOptions::default()
                },
                "'=x' is not NAME=VALUE",
            ),
            (
                args.clone(),
                ExecOptions {
                    cwd: Some("tmp".into()),
                    ..ExecOptions::default()
                },
                "exec --cwd: 'tmp' is not an absolute path",
            ),
        ] {
            let e = exec_spec_for_args(&dir.0, &args, &options)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{e}");
        }
        let none = std::env::temp_dir().join(format!("flint-agent-none-{}", std::process::id()));
        let e = exec_spec_for_args(&none, &args, &ExecOptions::default()).unwrap_err();
        assert!(e.to_string().starts_with("config.json: "), "{e}");
    }

    #[test]
    fn a_process_object_in_a_bundle_gets_the_containers_seccomp_and_defaults() {
        let dir = ConfigDir::new("process", CONTAINER_CONFIG);
        let own = parsed(&exec_spec_from_process_json_in(&dir.0, PODMAN_EXEC_PROCESS).unwrap());
        // Its own capabilities and rlimits, the container's seccomp and OOM score.
        assert!(own.contains("caps 33 32 0 33 0\n"), "{own}");
        assert!(own.contains("rlimit 7 1024 1024\n"), "{own}");
        assert!(!own.contains("rlimit 6"), "{own}");
        assert!(own.contains("oom-score-adj 100\n"), "{own}");
        assert!(own.contains("seccomp "), "{own}");
        // Without capabilities or rlimits, the container's.
        let bare = parsed(
            &exec_spec_from_process_json_in(&dir.0, r#"{"args": ["ls"], "cwd": "/"}"#).unwrap(),
        );
        assert!(bare.contains("caps 32 32 0 32 0\n"), "{bare}");
        assert!(bare.contains("rlimit 6 10 20\n"), "{bare}");
        assert!(bare.contains("uid 0\ngid 0\n"), "{bare}");
    }

    /// A scripted agent on one end of a socket pair: reads the EXEC frame, optionally stops
    /// reading (`shutdown(SHUT_RD)`, so the client's writes fail with EPIPE), then writes
    /// `script`'s byte strings with `pause` between them and closes.
    fn fake_agent(
        stop_reading: bool,
        pause: Duration,
        script: Vec<Vec<u8>>,
    ) -> (AgentStream, std::thread::JoinHandle<()>) {
        let (client, mut agent) = UnixStream::pair().unwrap();
        let thread = std::thread::spawn(move || {
            let mut head = [0u8; HEADER_LEN];
            agent.read_exact(&mut head).unwrap();
            assert_eq!(head[0], FrameType::Exec.byte());
            let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
            let mut spec = vec![0u8; usize::try_from(len).unwrap()];
            agent.read_exact(&mut spec).unwrap();
            if stop_reading {
                agent.shutdown(std::net::Shutdown::Read).unwrap();
            }
            for (i, bytes) in script.iter().enumerate() {
                if i > 0 {
                    std::thread::sleep(pause);
                }
                agent.write_all(bytes).unwrap();
            }
        });
        (AgentStream::from_stream(client), thread)
    }

    fn capture() -> std::fs::File {
        let path = std::env::temp_dir().join(format!(
            "flint-agent-capture-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    fn captured(mut file: &std::fs::File) -> String {
        use std::io::Seek;
        file.rewind().unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        text
    }

    /// This thread's CPU time so far.
    fn thread_cpu() -> Duration {
        // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes one rusage to the valid pointer.
        let r = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
        assert_eq!(r, 0);
        let micros = |t: libc::timeval| {
            Duration::from_secs(u64::try_from(t.tv_sec).unwrap())
                + Duration::from_micros(u64::try_from(t.tv_usec).unwrap())
        };
        micros(usage.ru_utime) + micros(usage.ru_stime)
    }

    #[test]
    fn frames_that_came_with_started_are_relayed() {
        // STARTED, the output and EXIT in one write, then the end: all of it is in the
        // client's buffer before the relay starts, and nothing more will come.
        let mut all = frame(FrameType::Started, &9u32.to_le_bytes());
        all.extend(frame(FrameType::Stdout, b"out"));
        all.extend(frame(FrameType::Stderr, b"err"));
        all.extend(frame(FrameType::Exit, &4i32.to_le_bytes()));
        let (stream, agent) = fake_agent(true, Duration::ZERO, vec![all]);
        let session = stream.start_exec(b"spec").unwrap();
        agent.join().unwrap();
        let (out, err) = (capture(), capture());
        let outcome = session
            .relay(ExecIo {
                stdin: None,
                stdout: out.as_fd(),
                stderr: err.as_fd(),
                signals: None,
                terminal: None,
            })
            .unwrap();
        assert_eq!(
            outcome,
            ExecOutcome {
                pid: 9,
                exit_code: 4
            }
        );
        assert_eq!(
            (captured(&out), captured(&err)),
            ("out".into(), "err".into())
        );
    }

    #[test]
    fn an_agent_that_no_longer_reads_still_delivers_exit() {
        // The client's first write (STDIN_EOF) fails with EPIPE; EXIT comes later.
        let (stream, agent) = fake_agent(
            true,
            Duration::from_millis(100),
            vec![
                frame(FrameType::Started, &1u32.to_le_bytes()),
                frame(FrameType::Stdout, b"late"),
                frame(FrameType::Exit, &0i32.to_le_bytes()),
            ],
        );
        let out = capture();
        let outcome = stream
            .start_exec(b"spec")
            .unwrap()
            .relay(ExecIo::output_to(out.as_fd()))
            .unwrap();
        agent.join().unwrap();
        assert_eq!(outcome.exit_code, 0);
        assert_eq!(captured(&out), "late");
    }

    #[test]
    fn ended_inputs_are_not_polled_again() {
        // The signals and stdin descriptors are at their end from the start: the relay must
        // wait for the agent, not spin on them.
        let (stream, agent) = fake_agent(
            false,
            Duration::from_millis(300),
            vec![
                frame(FrameType::Started, &1u32.to_le_bytes()),
                frame(FrameType::Exit, &0i32.to_le_bytes()),
            ],
        );
        let (null_r, null_w) = UnixStream::pair().unwrap();
        drop(null_w);
        let out = capture();
        let session = stream.start_exec(b"spec").unwrap();
        let before = thread_cpu();
        let outcome = session
            .relay(ExecIo {
                stdin: Some(null_r.as_fd()),
                stdout: out.as_fd(),
                stderr: out.as_fd(),
                signals: Some(null_r.as_fd()),
                terminal: None,
            })
            .unwrap();
        let spent = thread_cpu() - before;
        agent.join().unwrap();
        assert_eq!(outcome.exit_code, 0);
        assert!(
            spent < Duration::from_millis(100),
            "{spent:?} of CPU in 300 ms"
        );
    }

    #[test]
    fn a_connection_that_ends_before_exit_is_closed() {
        let (stream, agent) = fake_agent(
            false,
            Duration::ZERO,
            vec![
                frame(FrameType::Started, &1u32.to_le_bytes()),
                frame(FrameType::Stdout, b"partial"),
            ],
        );
        let out = capture();
        let e = stream
            .start_exec(b"spec")
            .unwrap()
            .relay(ExecIo::output_to(out.as_fd()))
            .unwrap_err();
        agent.join().unwrap();
        assert!(matches!(e, AgentError::Closed), "{e:?}");
        assert_eq!(captured(&out), "partial");
        // And a frame that is not due is a protocol error.
        let (stream, agent) = fake_agent(false, Duration::ZERO, vec![frame(FrameType::Ok, &[])]);
        let e = stream.start_exec(b"spec").unwrap_err();
        agent.join().unwrap();
        assert_eq!(
            e.to_string(),
            "the guest's agent broke the protocol: OK frame where STARTED or ERROR was due"
        );
    }

    #[test]
    fn a_containers_settings_are_not_an_exec_spec() {
        let base = RunSpec {
            args: vec!["true".into()],
            cwd: "/".into(),
            ..RunSpec::default()
        };
        assert!(encode_exec_spec(&base).is_ok());
        let cases: Vec<(RunSpec, &str)> = vec![
            (
                RunSpec {
                    hostname: Some("h".into()),
                    ..base.clone()
                },
                "hostname: a container's setting",
            ),
            (
                RunSpec {
                    root_readonly: true,
                    ..base.clone()
                },
                "root.readonly",
            ),
            (
                RunSpec {
                    pids_limit: Some(5),
                    ..base.clone()
                },
                "linux.resources.pids",
            ),
            (
                RunSpec {
                    masked_paths: vec!["/x".into()],
                    ..base.clone()
                },
                "linux.maskedPaths",
            ),
            (
                RunSpec {
                    sysctl: vec![("a".into(), "b".into())],
                    ..base.clone()
                },
                "linux.sysctl",
            ),
            (
                RunSpec {
                    args: vec!["x".repeat(EXEC_SPEC_MAX)],
                    ..base.clone()
                },
                "more than 1048576",
            ),
        ];
        for (spec, why) in cases {
            let e = encode_exec_spec(&spec).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }
}
