//! Ctrl-C during a benchmark. The runs are in their own process groups (so that a timeout can
//! kill a whole run), which also keeps the terminal's SIGINT from reaching them: without this,
//! an interrupted bench would leave its VMs and containers running and its scratch directory
//! behind. Instead SIGINT, SIGTERM and SIGHUP are noted here, the run in progress is killed,
//! and the bench returns an error through its ordinary cleanup.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that arrived, or 0.
static PENDING: AtomicI32 = AtomicI32::new(0);

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn note(sig: libc::c_int) {
    // Async-signal-safe: one atomic store.
    PENDING.store(sig, Ordering::SeqCst);
}

/// The signal that interrupted the bench, if one did.
pub fn pending() -> Option<i32> {
    match PENDING.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Catches the signals while it lives; restores the previous handlers when dropped.
pub struct Catch {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl Catch {
    pub fn install() -> Catch {
        PENDING.store(0, Ordering::SeqCst);
        let mut previous = Vec::new();
        for sig in SIGNALS {
            // SAFETY: sigaction is plain data; the handler only stores to an atomic.
            unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = note as *const () as libc::sighandler_t;
                act.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut act.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &act, &mut old) == 0 {
                    previous.push((sig, old));
                }
            }
        }
        Catch { previous }
    }
}

impl Drop for Catch {
    fn drop(&mut self) {
        for (sig, old) in &self.previous {
            // SAFETY: restores what sigaction returned.
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
    }
}
