//! A long-running process the bench watches line by line (the snapshot and density benches'
//! workloads print a line periodically forever): its complete stdout lines, each with the time
//! it was read, its stderr kept for error messages, and its end, waited for with a deadline.
//!
//! The process runs in its own process group (so that Ctrl-C reaches the bench, not it, and
//! the bench stops it through its cleanup: see [`super::interrupt`]). Dropping a [`Live`]
//! kills the process and its descendants and reaps it, unless it was reaped already.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::run::{peak_rss_kib, Reaper, WaitStatus};
use super::{interrupt, BenchError};

/// One complete stdout line (without its `\n`, and without a `\r` before it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// When the read that completed it returned.
    pub at: Instant,
    pub text: String,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub status: WaitStatus,
    /// `ru_maxrss` of the process and the children it reaped.
    pub peak_rss_kib: u64,
}

enum Event {
    Line(Line),
    Eof(io::Result<()>),
}

/// The most of a process's stderr kept (its end), for error messages.
const STDERR_KEPT: usize = 64 * 1024;
/// A "line" longer than this without a newline is dropped: no workload the benches take
/// prints one, and the reader must not grow without bound.
const MAX_LINE: usize = 1 << 20;

/// A running process with its stdout read line by line.
pub struct Live {
    /// What it is, for error messages ("snapshot round 2: flint run --restore").
    step: String,
    reaper: Reaper,
    /// Just before the spawn.
    pub launch: Instant,
    rx: mpsc::Receiver<Event>,
    lines: Vec<Line>,
    /// Whether its stdout has ended (every process holding it has exited or closed it).
    eof: bool,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Set when its stderr has closed (everything it wrote there is in `stderr`).
    stderr_done: Arc<AtomicBool>,
}

/// Appends `bytes` to `pending` and takes out every complete line; what follows the last
/// newline stays in `pending` (a partial line is never returned).
pub fn split_lines(pending: &mut Vec<u8>, bytes: &[u8]) -> Vec<String> {
    pending.extend_from_slice(bytes);
    let mut lines = Vec::new();
    while let Some(i) = pending.iter().position(|&b| b == b'\n') {
        let mut line: Vec<u8> = pending.drain(..=i).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        lines.push(String::from_utf8_lossy(&line).into_owned());
    }
    if pending.len() > MAX_LINE {
        pending.clear();
    }
    lines
}

/// The N of a `tick N` line (surrounding blanks ignored); `None` for anything else, such as
/// the tail of a line cut by a capture.
pub fn parse_tick(line: &str) -> Option<u64> {
    let n = line.trim().strip_prefix("tick ")?.trim();
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

fn read_lines(mut r: impl Read, tx: mpsc::Sender<Event>) {
    let mut pending = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let end = loop {
        match r.read(&mut chunk) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                let at = Instant::now();
                for text in split_lines(&mut pending, &chunk[..n]) {
                    if tx.send(Event::Line(Line { at, text })).is_err() {
                        return;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    let _ = tx.send(Event::Eof(end));
}

fn keep_stderr(r: impl Read, kept: Arc<Mutex<Vec<u8>>>, done: Arc<AtomicBool>) {
    read_stderr(r, kept);
    done.store(true, Ordering::Release);
}

fn read_stderr(mut r: impl Read, kept: Arc<Mutex<Vec<u8>>>) {
    let mut chunk = [0u8; 4096];
    loop {
        match r.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                let Ok(mut k) = kept.lock() else { return };
                k.extend_from_slice(&chunk[..n]);
                let excess = k.len().saturating_sub(STDERR_KEPT);
                k.drain(..excess);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// How long a wait sleeps between looks at the process and the interrupt flag.
const POLL: Duration = Duration::from_millis(10);

impl Live {
    /// Starts `cmd` (stdin /dev/null, stdout and stderr piped, in its own process group).
    pub fn spawn(step: impl Into<String>, mut cmd: Command) -> Result<Live, BenchError> {
        let step = step.into();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let launch = Instant::now();
        let mut child = cmd.spawn().map_err(|e| BenchError::Step {
            step: step.clone(),
            what: format!("cannot start {}: {e}", cmd.get_program().to_string_lossy()),
            stderr: Vec::new(),
        })?;
        let reaper = Reaper {
            pid: child.id() as i32,
            reaped: false,
        };
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            // `reaper` kills and reaps it.
            return Err(BenchError::Internal {
                what: "no pipes to a child",
            });
        };
        // From here on the pid is managed by hand (wait4), not through `child`.
        drop(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || read_lines(out, tx));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&stderr);
        let stderr_done = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&stderr_done);
        std::thread::spawn(move || keep_stderr(err, kept, done));
        Ok(Live {
            step,
            reaper,
            launch,
            rx,
            lines: Vec::new(),
            eof: false,
            stderr,
            stderr_done,
        })
    }

    pub fn pid(&self) -> i32 {
        self.reaper.pid
    }

    /// The complete lines read so far.
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// The end of what it wrote on stderr.
    pub fn stderr(&self) -> Vec<u8> {
        self.stderr.lock().map(|k| k.clone()).unwrap_or_default()
    }

    /// An error about this process, with its stderr's last lines: what it wrote until its
    /// stderr closed (its end), or, if that takes longer than a second (a child of its holds
    /// the pipe), until then.
    pub fn error(&self, what: impl Into<String>) -> BenchError {
        let deadline = Instant::now() + Duration::from_secs(1);
        while !self.stderr_done.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        BenchError::Step {
            step: self.step.clone(),
            what: what.into(),
            stderr: self.stderr(),
        }
    }

    /// Takes what the readers have sent, waiting at most `wait` for the first of it.
    fn pump(&mut self, wait: Duration) -> Result<(), BenchError> {
        let mut next = self.rx.recv_timeout(wait);
        loop {
            match next {
                Ok(Event::Line(l)) => self.lines.push(l),
                Ok(Event::Eof(Ok(()))) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.eof = true
                }
                Ok(Event::Eof(Err(e))) => {
                    self.eof = true;
                    return Err(self.error(format!("reading its stdout failed: {e}")));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(()),
            }
            if self.eof {
                return Ok(());
            }
            next = self.rx.try_recv().map_err(|e| match e {
                mpsc::TryRecvError::Empty => mpsc::RecvTimeoutError::Timeout,
                mpsc::TryRecvError::Disconnected => mpsc::RecvTimeoutError::Disconnected,
            });
        }
    }

    /// Waits until `done` holds for the lines read so far, for at most `timeout`. `waiting_for`
    /// says what for, in the error ("3 complete lines").
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        waiting_for: &str,
        mut done: impl FnMut(&[Line]) -> bool,
    ) -> Result<(), BenchError> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.lines) {
                return Ok(());
            }
            if let Some(sig) = interrupt::pending() {
                return Err(BenchError::Interrupted(sig));
            }
            if self.eof {
                let how = self.ended_how();
                return Err(self.error(format!(
                    "its stdout ended after {} complete line(s), before {waiting_for}{how}",
                    self.lines.len()
                )));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.error(format!(
                    "no {waiting_for} within {} s ({} complete line(s) read)",
                    timeout.as_secs_f64(),
                    self.lines.len()
                )));
            }
            self.pump((deadline - now).min(Duration::from_millis(100)))?;
        }
    }

    /// After its stdout ended: how the process ended, if it has (" (it exited with exit code
    /// 1)"), waiting a moment for it.
    fn ended_how(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match self.reaper.try_reap() {
                Ok(Some((status, _))) => {
                    return format!(" (it ended with {})", WaitStatus::from_raw(status))
                }
                Ok(None) => std::thread::sleep(POLL),
                Err(_) => break,
            }
        }
        String::new()
    }

    /// Reads the rest of its stdout, until every writer has closed it, for at most `timeout`.
    pub fn read_to_end(&mut self, timeout: Duration) -> Result<(), BenchError> {
        let deadline = Instant::now() + timeout;
        while !self.eof {
            if let Some(sig) = interrupt::pending() {
                return Err(BenchError::Interrupted(sig));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.error(format!(
                    "its stdout was still open {} s later",
                    timeout.as_secs_f64()
                )));
            }
            self.pump((deadline - now).min(Duration::from_millis(100)))?;
        }
        Ok(())
    }

    /// Waits for the process to exit and reaps it, for at most `timeout`; past that it is
    /// killed and this is an error.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Exit, BenchError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(sig) = interrupt::pending() {
                return Err(BenchError::Interrupted(sig));
            }
            match self.reaper.try_reap() {
                Ok(Some((status, usage))) => {
                    return Ok(Exit {
                        status: WaitStatus::from_raw(status),
                        peak_rss_kib: peak_rss_kib(&usage),
                    })
                }
                Ok(None) => {}
                Err(e) => return Err(self.error(format!("wait4 failed: {e}"))),
            }
            if Instant::now() >= deadline {
                self.reaper.kill();
                let _ = self.reaper.reap();
                return Err(self.error(format!(
                    "no exit within {} s: killed",
                    timeout.as_secs_f64()
                )));
            }
            // Keep the lines flowing meanwhile (the channel would only grow).
            if !self.eof {
                self.pump(POLL)?;
            } else {
                std::thread::sleep(POLL);
            }
        }
    }

    /// Sends SIGTERM and waits for the exit as [`Live::wait_exit`] does.
    pub fn terminate(&mut self, timeout: Duration) -> Result<Exit, BenchError> {
        self.signal(libc::SIGTERM);
        self.wait_exit(timeout)
    }

    /// Sends `sig` to the process (not its group), unless it was reaped already.
    pub fn signal(&self, sig: libc::c_int) {
        if !self.reaper.reaped {
            // SAFETY: kill has no memory effects; the child is unreaped, so its pid is ours.
            unsafe { libc::kill(self.reaper.pid, sig) };
        }
    }
}

/// Whether `exit` is how a process ends on SIGTERM: flint exits 143 (128 + 15), others may
/// die of the signal.
pub fn ended_by_sigterm(exit: &Exit) -> bool {
    matches!(
        exit.status,
        WaitStatus::Exited(143) | WaitStatus::Signaled(libc::SIGTERM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn only_complete_lines_come_out() {
        let mut p = Vec::new();
        assert!(split_lines(&mut p, b"tic").is_empty());
        assert_eq!(
            split_lines(&mut p, b"k 1\ntick 2\r\nti"),
            ["tick 1", "tick 2"]
        );
        assert_eq!(p, b"ti");
        assert_eq!(split_lines(&mut p, b"ck 3\n\n"), ["tick 3", ""]);
        assert!(p.is_empty());
    }

    #[test]
    fn ticks_are_parsed_and_fragments_are_not() {
        assert_eq!(parse_tick("tick 12"), Some(12));
        assert_eq!(parse_tick("  tick 7 "), Some(7));
        assert_eq!(parse_tick("tick 0"), Some(0));
        for bad in [
            "k 12", "12", "tick", "tick ", "tick -1", "tick 1x", "tock 1", "tick 1 2",
        ] {
            assert_eq!(parse_tick(bad), None, "{bad}");
        }
        assert_eq!(parse_tick("tick 99999999999999999999999"), None);
    }

    #[test]
    fn lines_are_waited_for_and_the_process_is_terminated() {
        let mut l = Live::spawn(
            "test",
            sh("i=0; while :; do i=$((i+1)); echo \"tick $i\"; sleep 0.01; done"),
        )
        .unwrap();
        l.wait_for(Duration::from_secs(10), "3 complete lines", |ls| {
            ls.len() >= 3
        })
        .unwrap();
        assert_eq!(parse_tick(&l.lines()[2].text), Some(3));
        assert!(l.lines()[0].at >= l.launch);
        let exit = l.terminate(Duration::from_secs(10)).unwrap();
        assert!(ended_by_sigterm(&exit), "{exit:?}");
        assert!(exit.peak_rss_kib > 0);
    }

    #[test]
    fn an_early_end_is_one_line_with_the_status_and_stderr() {
        let mut l = Live::spawn("step x", sh("echo one; echo 'it broke' >&2; exit 3")).unwrap();
        let e = l
            .wait_for(Duration::from_secs(10), "3 complete lines", |ls| {
                ls.len() >= 3
            })
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "step x: its stdout ended after 1 complete line(s), before 3 complete lines (it \
             ended with exit code 3); its stderr ends with: it broke"
        );
    }

    #[test]
    fn a_wait_past_its_timeout_is_an_error_and_the_process_is_killed() {
        let mut l = Live::spawn("quiet", sh("sleep 30")).unwrap();
        let e = l
            .wait_for(Duration::from_millis(200), "a line", |ls| !ls.is_empty())
            .unwrap_err()
            .to_string();
        assert_eq!(e, "quiet: no a line within 0.2 s (0 complete line(s) read)");
        let e = l
            .wait_exit(Duration::from_millis(100))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "quiet: no exit within 0.1 s: killed");
    }

    #[test]
    fn the_rest_of_stdout_is_read_and_the_exit_status_kept() {
        let mut l = Live::spawn("t", sh("echo a; echo b; printf partial; exit 0")).unwrap();
        l.read_to_end(Duration::from_secs(10)).unwrap();
        let texts: Vec<&str> = l.lines().iter().map(|x| x.text.as_str()).collect();
        assert_eq!(texts, ["a", "b"]);
        let exit = l.wait_exit(Duration::from_secs(10)).unwrap();
        assert_eq!(exit.status, WaitStatus::Exited(0));
        assert!(!ended_by_sigterm(&exit));
    }

    #[test]
    fn a_missing_program_is_a_one_line_error() {
        let e = Live::spawn("s", Command::new("/nonexistent/flint-bench"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("s: cannot start /nonexistent/flint-bench: "),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }
}
