//! One measured run of one command: launch → first stdout byte → exit, host CPU time and peak
//! RSS from `wait4`, and a memory snapshot taken with the process tree stopped at its first
//! output.
//!
//! Threads: one reads stdout (and timestamps its first byte the moment `read` returns), one
//! reads stderr, one waits for the exit with `waitid(WNOWAIT)`, which leaves the child a
//! zombie: its pid cannot be reused while we may still signal it, and `wait4` reaps it
//! afterwards for the rusage. The calling thread takes the events in order and enforces the
//! timeout.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::interrupt;
use super::measure::{self, StoppedTree, Totals, VmmSplit};

/// What the memory snapshot looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryKind {
    /// A VMM: its own process, split into guest RAM (mappings of these sizes) and the rest.
    /// With `helpers`, its descendants too (the virtiofsd flint starts for a live root),
    /// summed apart and without their own mappings of the guest RAM.
    Vmm {
        guest_sizes: Vec<u64>,
        helpers: bool,
    },
    /// A container runtime: everything in the tree (the runtime and the container's processes).
    Tree,
}

/// The memory snapshot at the first output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemorySample {
    Vmm {
        split: VmmSplit,
        /// The VMM's descendants, if [`MemoryKind::Vmm`] asked for them (`processes` is 0 if
        /// none was found).
        helpers: Option<Totals>,
    },
    Tree {
        rss_kib: u64,
        pss_kib: u64,
        processes: usize,
    },
}

/// How the process ended, as `wait4` reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    Exited(i32),
    Signaled(i32),
}

impl WaitStatus {
    /// From a `wait4` status word.
    pub(crate) fn from_raw(status: i32) -> WaitStatus {
        if libc::WIFSIGNALED(status) {
            WaitStatus::Signaled(libc::WTERMSIG(status))
        } else {
            WaitStatus::Exited(libc::WEXITSTATUS(status))
        }
    }
}

impl std::fmt::Display for WaitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitStatus::Exited(c) => write!(f, "exit code {c}"),
            WaitStatus::Signaled(s) => write!(f, "signal {s}"),
        }
    }
}

/// What to measure besides the times.
pub struct Measure<'a> {
    pub timeout: Duration,
    pub memory: MemoryKind,
    /// A directory whose allocated size is sampled while the tree is stopped (crun's state).
    pub state_dir: Option<&'a Path>,
}

/// The result of one run.
#[derive(Debug)]
pub struct Outcome {
    pub status: WaitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Launch → first stdout byte; `None` if the process wrote nothing.
    pub first_output: Option<Duration>,
    /// Launch → exit, minus `paused`.
    pub exit: Duration,
    /// How long the tree was held stopped for the snapshot (zero if it had already exited:
    /// then the pause cost it nothing).
    pub paused: Duration,
    pub cpu_user: Duration,
    pub cpu_sys: Duration,
    pub peak_rss_kib: u64,
    /// `None` if the process had exited before its first output reached us.
    pub memory: Option<MemorySample>,
    /// Allocated bytes of [`Measure::state_dir`] at the snapshot; `None` if not sampled or it
    /// did not exist.
    pub state_dir_bytes: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start it")]
    Spawn(#[source] io::Error),
    #[error("no exit within {} s: killed", .timeout.as_secs_f64())]
    Timeout { timeout: Duration, stderr: Vec<u8> },
    #[error("interrupted by signal {0}")]
    Interrupted(i32),
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

enum Event {
    FirstByte(Instant),
    Stdout(io::Result<Vec<u8>>),
    Stderr(io::Result<Vec<u8>>),
    Exited(Instant),
}

/// Kills and reaps the child unless it was reaped normally: no run outlives an error.
pub(crate) struct Reaper {
    pub(crate) pid: i32,
    pub(crate) reaped: bool,
}

impl Reaper {
    pub(crate) fn kill(&self) {
        // The tree first (a container may be in another process group), then the group.
        for pid in measure::process_tree(self.pid) {
            // SAFETY: kill has no memory effects; the child is unreaped, so its pid is ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // SAFETY: as above; the child leads its own process group (process_group(0)).
        unsafe { libc::kill(-self.pid, libc::SIGKILL) };
    }

    /// Blocks until the child exits and reaps it.
    pub(crate) fn reap(&mut self) -> io::Result<(i32, libc::rusage)> {
        loop {
            if let Some(done) = self.wait4(0)? {
                return Ok(done);
            }
        }
    }

    /// Reaps the child if it has exited; `None` if it is still running.
    pub(crate) fn try_reap(&mut self) -> io::Result<Option<(i32, libc::rusage)>> {
        self.wait4(libc::WNOHANG)
    }

    fn wait4(&mut self, flags: libc::c_int) -> io::Result<Option<(i32, libc::rusage)>> {
        let mut status = 0;
        // SAFETY: rusage is plain data; wait4 fills it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: valid pointers to locals.
            let r = unsafe { libc::wait4(self.pid, &mut status, flags, &mut usage) };
            if r == self.pid {
                self.reaped = true;
                return Ok(Some((status, usage)));
            }
            if r == 0 {
                return Ok(None);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            let _ = self.reap();
        }
    }
}

fn read_all(mut r: impl Read, tx: mpsc::Sender<Event>, first: bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let result = loop {
        match r.read(&mut chunk) {
            Ok(0) => break Ok(buf),
            Ok(n) => {
                if first && buf.is_empty() {
                    let _ = tx.send(Event::FirstByte(Instant::now()));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    let _ = tx.send(if first {
        Event::Stdout(result)
    } else {
        Event::Stderr(result)
    });
}

/// Waits for the child's exit without reaping it.
fn wait_exit(pid: i32, tx: mpsc::Sender<Event>) {
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a local.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            let _ = tx.send(Event::Exited(Instant::now()));
            return;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            // Reaped by the Reaper after a timeout: nobody is listening any more.
            return;
        }
    }
}

/// Runs `cmd` (stdin /dev/null, stdout and stderr piped, in its own process group) and
/// measures it. The launch time is taken just before the spawn.
pub fn run(mut cmd: Command, m: &Measure) -> Result<Outcome, RunError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let (tx, rx) = mpsc::channel();
    let launch = Instant::now();
    let mut child = cmd.spawn().map_err(RunError::Spawn)?;
    let pid = child.id() as i32;
    let mut reaper = Reaper { pid, reaped: false };
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(RunError::Io {
            what: "no pipes to the child",
            source: io::ErrorKind::BrokenPipe.into(),
        });
    };
    // From here on the pid is managed by hand (waitid/wait4), not through `child`.
    drop(child);
    let tx_out = tx.clone();
    std::thread::spawn(move || read_all(out, tx_out, true));
    let tx_err = tx.clone();
    std::thread::spawn(move || read_all(err, tx_err, false));
    std::thread::spawn(move || wait_exit(pid, tx));

    let deadline = launch + m.timeout;
    let mut first_output = None;
    let mut exited_at = None;
    let mut stdout = None;
    let mut stderr: Option<Vec<u8>> = None;
    let mut memory = None;
    let mut state_dir_bytes = None;
    let mut paused = Duration::ZERO;
    let mut pause_end = None;
    while exited_at.is_none() || stdout.is_none() || stderr.is_none() {
        let now = Instant::now();
        if let Some(sig) = interrupt::pending() {
            reaper.kill();
            return Err(RunError::Interrupted(sig));
        }
        if now >= deadline {
            reaper.kill();
            // The readers see EOF once the tree is dead; wait a little for stderr.
            let grace = now + Duration::from_millis(500);
            while stderr.is_none() {
                match rx.recv_timeout(grace.saturating_duration_since(Instant::now())) {
                    Ok(Event::Stderr(r)) => stderr = Some(r.unwrap_or_default()),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            return Err(RunError::Timeout {
                timeout: m.timeout,
                stderr: stderr.unwrap_or_default(),
            });
        }
        // Wake up now and then to notice an interrupt.
        let event = match rx.recv_timeout((deadline - now).min(Duration::from_millis(100))) {
            Ok(e) => e,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(RunError::Io {
                    what: "lost track of the process (waitid failed)",
                    source: io::ErrorKind::Other.into(),
                })
            }
        };
        match event {
            Event::FirstByte(t) => {
                first_output = Some(t - launch);
                if exited_at.is_none() {
                    let stopped = StoppedTree::stop(pid);
                    memory = sample_memory(stopped.pids(), &m.memory);
                    state_dir_bytes = m
                        .state_dir
                        .and_then(|d| measure::tree_allocated_bytes(d).ok());
                    paused = stopped.resume();
                    pause_end = Some(Instant::now());
                }
            }
            Event::Exited(t) => exited_at = Some(t),
            Event::Stdout(r) => {
                stdout = Some(r.map_err(|source| RunError::Io {
                    what: "reading its stdout",
                    source,
                })?)
            }
            Event::Stderr(r) => {
                stderr = Some(r.map_err(|source| RunError::Io {
                    what: "reading its stderr",
                    source,
                })?)
            }
        }
    }
    let (Some(exited_at), Some(stdout), Some(stderr)) = (exited_at, stdout, stderr) else {
        unreachable!("the loop runs until all three are set");
    };
    // The pause delayed the exit only if the process was alive when stopped (it had memory)
    // and exited after it was continued; a process that was already exiting lost no time.
    if memory.is_none() || pause_end.is_some_and(|end| exited_at <= end) {
        paused = Duration::ZERO;
    }
    let (status, usage) = reaper.reap().map_err(|source| RunError::Io {
        what: "wait4",
        source,
    })?;
    Ok(Outcome {
        status: WaitStatus::from_raw(status),
        stdout,
        stderr,
        first_output,
        exit: (exited_at - launch).saturating_sub(paused),
        paused,
        cpu_user: timeval(usage.ru_utime),
        cpu_sys: timeval(usage.ru_stime),
        peak_rss_kib: peak_rss_kib(&usage),
        memory,
        state_dir_bytes,
    })
}

/// `ru_maxrss`: the largest resident set of the process and the children it reaped, in KiB.
pub(crate) fn peak_rss_kib(usage: &libc::rusage) -> u64 {
    u64::try_from(usage.ru_maxrss).unwrap_or(0)
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
        + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
}

/// Reads the stopped tree's smaps. `None` if the root has no memory left (it is exiting: its
/// smaps is empty or gone), so nothing meaningful can be said.
fn sample_memory(pids: &[i32], kind: &MemoryKind) -> Option<MemorySample> {
    let root = measure::read_smaps(*pids.first()?).filter(|m| !m.is_empty())?;
    match kind {
        MemoryKind::Vmm {
            guest_sizes,
            helpers,
        } => Some(MemorySample::Vmm {
            split: measure::split_guest(&root, guest_sizes),
            helpers: helpers.then(|| measure::sum_smaps_outside_guest(&pids[1..], guest_sizes)),
        }),
        MemoryKind::Tree => {
            let rest = measure::sum_smaps(&pids[1..]);
            Some(MemorySample::Tree {
                rss_kib: root.iter().map(|m| m.rss_kib).sum::<u64>() + rest.rss_kib,
                pss_kib: root.iter().map(|m| m.pss_kib).sum::<u64>() + rest.pss_kib,
                processes: 1 + rest.processes,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    fn measure(timeout_ms: u64) -> Measure<'static> {
        Measure {
            timeout: Duration::from_millis(timeout_ms),
            memory: MemoryKind::Tree,
            state_dir: None,
        }
    }

    #[test]
    fn output_exit_status_and_snapshot() {
        let o = run(
            sh("echo hello; echo oops >&2; sleep 0.3; exit 3"),
            &measure(10_000),
        )
        .unwrap();
        assert_eq!(o.status, WaitStatus::Exited(3));
        assert_eq!(o.stdout, b"hello\n");
        assert_eq!(o.stderr, b"oops\n");
        let first = o.first_output.unwrap();
        assert!(first < o.exit, "{first:?} !< {:?}", o.exit);
        // The sleep is measured, the pause is not.
        assert!(o.exit >= Duration::from_millis(250), "{:?}", o.exit);
        assert!(o.paused > Duration::ZERO);
        match o.memory {
            Some(MemorySample::Tree {
                rss_kib, processes, ..
            }) => {
                assert!(rss_kib > 0);
                assert!(processes >= 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(o.peak_rss_kib > 0);
    }

    #[test]
    fn a_vmm_sample_sums_its_helpers_apart_when_asked() {
        let vmm = |helpers| Measure {
            timeout: Duration::from_secs(10),
            // No mapping of that size: no split, every mapping counts.
            memory: MemoryKind::Vmm {
                guest_sizes: vec![1 << 40],
                helpers,
            },
            state_dir: None,
        };
        let script = "sleep 1 & echo hi; wait";
        match run(sh(script), &vmm(true)).unwrap().memory {
            Some(MemorySample::Vmm {
                split,
                helpers: Some(h),
            }) => {
                assert!(split.guest.is_none());
                assert!(split.total_pss_kib > 0);
                assert!(h.processes >= 1 && h.pss_kib > 0, "{h:?}");
            }
            other => panic!("{other:?}"),
        }
        match run(sh(script), &vmm(false)).unwrap().memory {
            Some(MemorySample::Vmm { helpers: None, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_output_means_no_first_output_and_no_snapshot() {
        let o = run(sh("exit 0"), &measure(10_000)).unwrap();
        assert_eq!(o.status, WaitStatus::Exited(0));
        assert!(o.stdout.is_empty());
        assert_eq!(o.first_output, None);
        assert_eq!(o.memory, None);
        assert_eq!(o.paused, Duration::ZERO);
    }

    #[test]
    fn a_killed_process_is_signaled() {
        let o = run(sh("kill -9 $$"), &measure(10_000)).unwrap();
        assert_eq!(o.status, WaitStatus::Signaled(9));
    }

    #[test]
    fn a_run_past_its_timeout_is_killed_with_its_children() {
        let start = Instant::now();
        let e = run(
            sh("echo started >&2; sleep 30 & sleep 30; wait"),
            &measure(300),
        )
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        match e {
            RunError::Timeout { stderr, .. } => assert_eq!(stderr, b"started\n"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let e = run(Command::new("/nonexistent/flint-bench"), &measure(1000)).unwrap_err();
        assert!(matches!(e, RunError::Spawn(_)), "{e:?}");
    }
}
