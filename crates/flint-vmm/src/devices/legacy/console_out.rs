//! The guest's console output on its way to the host, without ever blocking the guest.
//!
//! A UART's bytes go into a bounded in-memory buffer ([`ConsoleSink`], written by the vCPU
//! holding the UART's lock); a writer thread of its own per output ([`ConsoleOutput`]) moves
//! them to the host fd with plain blocking writes. If nobody reads that fd (a full pipe, a
//! stopped terminal), only the writer thread waits: the buffer fills, further bytes are dropped
//! and counted, and the vCPU and the event loop go on.
//!
//! Why a thread and not the event loop: writing only what the fd can take without blocking
//! needs O_NONBLOCK on it, and stdout's open file description is shared with the shell and
//! anything else on the terminal, so setting the flag would leak to them (and a crash would
//! leave it set). Polling for EPOLLOUT is no substitute: a regular file cannot be polled, and a
//! terminal that says "writable" may still block a write of more than its free room. A thread
//! that may block is correct for every kind of fd.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bus::lock;
use crate::exit::{error_chain, ExitEvent, ExitReason};
use crate::sandbox::seccomp::{Filters, ThreadKind};

/// Guest output waiting for the host, per console; what does not fit is dropped.
pub const BUFFER_BYTES: usize = 64 * 1024;
/// The writer's unit: a pipe writes at most PIPE_BUF bytes all or nothing, so a write still
/// blocked when flint gives up has written nothing of its chunk (counted as dropped).
const CHUNK: usize = 4096;
/// At the VM's end, the flush gives up once the output has taken nothing for this long...
const FLUSH_STALL: Duration = Duration::from_millis(500);
/// ...or after this long in all.
const FLUSH_MAX: Duration = Duration::from_secs(5);

/// Bytes of console output that never reached the host.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// The buffer was full (the output was not being read) or the output failed.
    pub unread: u64,
    /// Past `--console-limit`.
    pub over_limit: u64,
}

impl Dropped {
    pub fn add(&mut self, other: Dropped) {
        self.unread = self.unread.saturating_add(other.unread);
        self.over_limit = self.over_limit.saturating_add(other.over_limit);
    }
}

/// How many more bytes of guest output may go out, shared by every console of a VM.
pub struct Budget(AtomicU64);

impl Budget {
    /// `None`: no limit.
    pub fn new(limit: Option<u64>) -> Arc<Budget> {
        Arc::new(Budget(AtomicU64::new(limit.unwrap_or(u64::MAX))))
    }

    /// Takes up to `n` bytes from the budget; returns how many may go out.
    fn take(&self, n: u64) -> u64 {
        let unlimited = u64::MAX;
        match self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                (left != unlimited).then(|| left - n.min(left))
            }) {
            Ok(left) => n.min(left),
            Err(_) => n,
        }
    }
}

struct State {
    buf: VecDeque<u8>,
    /// Taken by the writer and not yet written.
    in_flight: usize,
    /// Bytes written to the host so far (the flush watches it move).
    written: u64,
    dropped: Dropped,
    /// No more output: the writer ends once the buffer is empty.
    closed: bool,
    /// The seccomp filters for the writer to install before it writes anything more (handed
    /// over when the VM starts running; the writer starts earlier, at build time).
    filters: Option<Filters>,
}

struct Shared {
    state: Mutex<State>,
    /// The writer waits here for bytes.
    more: Condvar,
    /// The flush waits here for the writer's progress.
    progress: Condvar,
    budget: Arc<Budget>,
    capacity: usize,
    /// The writer thread's name, for its seccomp report.
    name: String,
}

/// The UART's side: appends to the buffer and never blocks on the host. Clones share one
/// buffer and writer, keeping the order of what their UARTs wrote.
#[derive(Clone)]
pub struct ConsoleSink(Arc<Shared>);

impl Write for ConsoleSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let len = bytes.len();
        let allowed = usize::try_from(self.0.budget.take(len as u64)).map_or(len, |a| a.min(len));
        let mut s = lock(&self.0.state);
        s.dropped.over_limit = s.dropped.over_limit.saturating_add((len - allowed) as u64);
        let fits = allowed.min(self.0.capacity.saturating_sub(s.buf.len()));
        s.dropped.unread = s.dropped.unread.saturating_add((allowed - fits) as u64);
        let was_empty = s.buf.is_empty();
        s.buf.extend(&bytes[..fits]);
        if was_empty && fits > 0 {
            self.0.more.notify_one();
        }
        Ok(len)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The host side: the writer thread for one output fd.
pub struct ConsoleOutput {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl ConsoleOutput {
    /// Starts a writer thread (`name`) for `out`; a panic in it ends the VM through `exit`.
    pub fn start(
        name: &str,
        out: OwnedFd,
        budget: Arc<Budget>,
        exit: Arc<ExitEvent>,
    ) -> std::io::Result<(ConsoleOutput, ConsoleSink)> {
        Self::with_capacity(name, out, budget, exit, BUFFER_BYTES)
    }

    fn with_capacity(
        name: &str,
        out: OwnedFd,
        budget: Arc<Budget>,
        exit: Arc<ExitEvent>,
        capacity: usize,
    ) -> std::io::Result<(ConsoleOutput, ConsoleSink)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: VecDeque::new(),
                in_flight: 0,
                written: 0,
                dropped: Dropped::default(),
                closed: false,
                filters: None,
            }),
            more: Condvar::new(),
            progress: Condvar::new(),
            budget,
            capacity,
            name: format!("flint-{name}"),
        });
        let writer = shared.clone();
        let thread = std::thread::Builder::new()
            .name(shared.name.clone())
            .spawn(move || {
                let guarded = crate::panic::guard(|| write_out(&writer, File::from(out), &exit));
                if let Err(what) = guarded {
                    exit.request(ExitReason::InternalError(what));
                }
            })?;
        Ok((
            ConsoleOutput {
                shared: shared.clone(),
                thread: Some(thread),
            },
            ConsoleSink(shared),
        ))
    }

    /// Has the writer thread install its seccomp filter before it writes anything more.
    pub fn install_filters(&self, filters: &Filters) {
        let mut s = lock(&self.shared.state);
        s.filters = Some(filters.clone());
        self.shared.more.notify_all();
    }

    /// Writes out what is buffered, waiting while the output takes it (bounded: see
    /// [`FLUSH_STALL`], [`FLUSH_MAX`]), and returns what never reached it. A writer still
    /// blocked then is left behind; the process's exit ends it.
    pub fn finish(mut self) -> Dropped {
        let Ok(mut s) = self.shared.state.lock() else {
            return Dropped::default(); // a panic already ended the VM
        };
        s.closed = true;
        self.shared.more.notify_all();
        let start = Instant::now();
        let (mut seen, mut moved_at) = (s.written, start);
        while !s.buf.is_empty() || s.in_flight > 0 {
            let now = Instant::now();
            if now.duration_since(moved_at) >= FLUSH_STALL || now.duration_since(start) >= FLUSH_MAX
            {
                break;
            }
            s = match self
                .shared
                .progress
                .wait_timeout(s, Duration::from_millis(20))
            {
                Ok((s, _)) => s,
                Err(_) => return Dropped::default(),
            };
            if s.written != seen {
                (seen, moved_at) = (s.written, Instant::now());
            }
        }
        let mut dropped = s.dropped;
        let left = s.buf.len().saturating_add(s.in_flight) as u64;
        dropped.unread = dropped.unread.saturating_add(left);
        drop(s);
        if let Some(t) = self.thread.take().filter(JoinHandle::is_finished) {
            let _ = t.join();
        }
        dropped
    }
}

impl Drop for ConsoleOutput {
    /// Without [`ConsoleOutput::finish`] (the VM was never run): the writer ends when idle.
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.state.lock() {
            s.closed = true;
            self.shared.more.notify_all();
        }
    }
}

/// The writer thread: takes chunks from the buffer and writes them to `out` until closed and
/// drained.
fn write_out(shared: &Shared, mut out: File, exit: &ExitEvent) {
    let mut chunk = Vec::with_capacity(CHUNK);
    loop {
        {
            let mut s = lock(&shared.state);
            while s.buf.is_empty() && !s.closed && s.filters.is_none() {
                s = wait(&shared.more, s);
            }
            if let Some(filters) = s.filters.take() {
                if let Err(e) = filters.apply(ThreadKind::ConsoleWriter, &shared.name) {
                    // Unfiltered output is not worth running a guest for: stop the VM.
                    drop(s);
                    exit.request(ExitReason::VcpuFailure(error_chain(&e)));
                    return;
                }
                continue;
            }
            if s.buf.is_empty() {
                return;
            }
            let n = s.buf.len().min(CHUNK);
            chunk.clear();
            chunk.extend(s.buf.drain(..n));
            s.in_flight = n;
        }
        // write_all retries interrupted and partial writes; an error (a closed pipe) loses the
        // chunk, never the VM.
        let ok = out.write_all(&chunk).is_ok();
        let mut s = lock(&shared.state);
        s.in_flight = 0;
        if ok {
            s.written = s.written.saturating_add(chunk.len() as u64);
        } else {
            s.dropped.unread = s.dropped.unread.saturating_add(chunk.len() as u64);
        }
        shared.progress.notify_all();
    }
}

fn wait<'a>(c: &Condvar, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
    c.wait(g).unwrap_or_else(|_| crate::bus::poisoned())
}

/// Says on stderr how much console output was dropped, if any.
pub fn report_dropped(d: Dropped, limit: Option<u64>) {
    if d.unread > 0 {
        eprintln!(
            "flint: {} bytes of console output were dropped (the output was not being read)",
            d.unread
        );
    }
    if let (true, Some(limit)) = (d.over_limit > 0, limit) {
        eprintln!(
            "flint: {} bytes of console output were dropped (past --console-limit {limit})",
            d.over_limit
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::FromRawFd;

    fn pipe() -> (File, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two-element array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both fds were just created and are owned by nobody else.
        unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn exit() -> Arc<ExitEvent> {
        Arc::new(ExitEvent::new().unwrap())
    }

    #[test]
    fn output_reaches_the_fd_in_order() {
        let (mut r, w) = pipe();
        let (out, mut sink) = ConsoleOutput::start("t", w, Budget::new(None), exit()).unwrap();
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        for b in &data {
            sink.write_all(&[*b]).unwrap();
        }
        let reader = std::thread::spawn(move || {
            let mut got = vec![];
            r.read_to_end(&mut got).unwrap();
            got
        });
        drop(sink);
        assert_eq!(out.finish(), Dropped::default());
        assert_eq!(reader.join().unwrap(), data);
    }

    #[test]
    fn an_unread_output_never_blocks_the_writer_and_drops_what_overflows() {
        let (r, w) = pipe();
        let (out, mut sink) =
            ConsoleOutput::with_capacity("t", w, Budget::new(None), exit(), 1000).unwrap();
        let t = Instant::now();
        // Far more than the pipe and the buffer hold, nobody reading; slowly enough for the
        // writer to fill the pipe and block.
        for _ in 0..200 {
            sink.write_all(&[b'x'; 1024]).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(t.elapsed() < Duration::from_secs(5));
        let t = Instant::now();
        let d = out.finish();
        // It waited for the blocked writer, but not for long.
        assert!(t.elapsed() >= FLUSH_STALL, "{:?}", t.elapsed());
        assert!(t.elapsed() < FLUSH_STALL + Duration::from_secs(2));
        // What the pipe took, plus what was dropped, is everything.
        let mut queued: libc::c_int = 0;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&r);
        // SAFETY: FIONREAD stores the pipe's byte count into the int.
        let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut queued) };
        assert_eq!(rc, 0);
        assert_eq!(d.unread + u64::try_from(queued).unwrap(), 200 * 1024);
        assert!(
            queued >= 60_000 && d.unread > 100_000,
            "{d:?}, {queued} in the pipe"
        );
        assert_eq!(d.over_limit, 0);
    }

    #[test]
    fn the_limit_is_shared_and_counts_the_rest() {
        let budget = Budget::new(Some(100));
        let (mut r1, w1) = pipe();
        let (mut r2, w2) = pipe();
        let (o1, mut s1) = ConsoleOutput::start("a", w1, budget.clone(), exit()).unwrap();
        let (o2, mut s2) = ConsoleOutput::start("b", w2, budget, exit()).unwrap();
        s1.write_all(&[1; 60]).unwrap();
        s2.write_all(&[2; 60]).unwrap();
        s1.write_all(&[3; 10]).unwrap();
        drop((s1, s2));
        let (d1, d2) = (o1.finish(), o2.finish());
        let (mut g1, mut g2) = (vec![], vec![]);
        r1.read_to_end(&mut g1).unwrap();
        r2.read_to_end(&mut g2).unwrap();
        assert_eq!((g1, g2), (vec![1; 60], vec![2; 40]));
        let mut total = d1;
        total.add(d2);
        assert_eq!(
            total,
            Dropped {
                unread: 0,
                over_limit: 30
            }
        );
    }
}
