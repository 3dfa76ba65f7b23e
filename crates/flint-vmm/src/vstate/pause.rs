//! Pausing the vCPUs: the control thread asks, each vCPU thread leaves `KVM_RUN` (kicked by a
//! signal), finishes the exit it was in, parks, and while parked runs whatever the control
//! thread gives every vCPU to do (saving its state, for a snapshot) on its own `VcpuFd`.
//!
//! A vCPU parks only between two `KVM_RUN`s, after a run with `immediate_exit` set: KVM
//! finishes an I/O or MMIO read the vCPU was in only when it is next entered, so before that
//! its registers are not final (see the KVM API's `KVM_EXIT_IO`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kvm_ioctls::VcpuFd;

use crate::bus::{lock, poisoned};

/// Something every parked vCPU runs once, with its fd and index.
pub type VcpuJob = Arc<dyn Fn(&mut VcpuFd, u8) + Send + Sync>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PauseError {
    #[error("the vCPUs did not stop within {0:?}")]
    Timeout(Duration),
    #[error("the VM is stopping")]
    Stopping,
}

#[derive(Default)]
struct State {
    /// The control thread wants the vCPUs parked.
    requested: bool,
    /// vCPU threads running (started and not yet returned).
    running: usize,
    /// vCPU threads parked now.
    parked: usize,
    /// The VM is ending: nobody parks any more, and waits give up.
    stopping: bool,
    /// The current job and its number; each parked vCPU runs each number once.
    job: Option<(u64, VcpuJob)>,
    /// How many vCPUs have finished the current job.
    job_done: usize,
    /// The signal targets (pthread ids) of the running vCPU threads, to kick them.
    threads: Vec<libc::pthread_t>,
}

/// Shared by the control thread and every vCPU thread.
#[derive(Default)]
pub struct PauseControl {
    state: Mutex<State>,
    changed: Condvar,
    /// `requested && !stopping`, read by every vCPU before each `KVM_RUN` without the lock.
    park_now: AtomicBool,
}

impl PauseControl {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn wait<'a>(&self, g: MutexGuard<'a, State>, timeout: Duration) -> MutexGuard<'a, State> {
        match self.changed.wait_timeout(g, timeout) {
            Ok((g, _)) => g,
            Err(_) => poisoned(),
        }
    }

    /// A vCPU thread is about to start: counted from now, so that a pause waits for it.
    pub fn thread_starting(&self) {
        self.state().running += 1;
    }

    /// The vCPU thread started is `thread` (a pthread id, for kicks; it stays valid until the
    /// thread is joined, which happens only once the VM has stopped).
    pub fn thread_spawned(&self, thread: libc::pthread_t) {
        self.state().threads.push(thread);
    }

    /// A vCPU thread is returning (`None`: it never started).
    pub fn thread_ended(&self, thread: Option<libc::pthread_t>) {
        let mut s = self.state();
        s.running = s.running.saturating_sub(1);
        if let Some(t) = thread {
            s.threads.retain(|x| *x != t);
        }
        self.changed.notify_all();
    }

    /// Whether a vCPU should park before its next `KVM_RUN` (a lock-free read: it is asked
    /// on every exit).
    pub fn requested(&self) -> bool {
        self.park_now.load(Ordering::Acquire)
    }

    /// Keeps `park_now` in step with the state (called with the lock held).
    fn publish(&self, s: &State) {
        self.park_now
            .store(s.requested && !s.stopping, Ordering::Release);
    }

    pub fn is_paused(&self) -> bool {
        self.state().requested
    }

    /// Parks the calling vCPU until it is resumed or the VM stops, running each job given
    /// meanwhile on `fd`.
    pub fn park(&self, fd: &mut VcpuFd, index: u8) {
        let mut s = self.state();
        s.parked += 1;
        self.changed.notify_all();
        let mut last_job = 0;
        while s.requested && !s.stopping {
            if let Some((n, job)) = s.job.clone().filter(|(n, _)| *n != last_job) {
                last_job = n;
                drop(s);
                job(fd, index);
                s = self.state();
                s.job_done += 1;
                self.changed.notify_all();
                continue;
            }
            s = self.wait(s, Duration::from_secs(1));
        }
        s.parked -= 1;
        self.changed.notify_all();
    }

    /// Asks every vCPU to park and waits (kicking them out of `KVM_RUN`) until all have, for at
    /// most `timeout`. `kick` sends the kick signal to one thread.
    pub fn pause(
        &self,
        timeout: Duration,
        kick: impl Fn(libc::pthread_t),
    ) -> Result<(), PauseError> {
        let deadline = Instant::now() + timeout;
        let mut s = self.state();
        if s.stopping {
            return Err(PauseError::Stopping);
        }
        s.requested = true;
        self.publish(&s);
        // A kick can land just before a thread enters KVM_RUN, so it repeats until all park.
        while s.parked < s.running {
            if s.stopping {
                return Err(PauseError::Stopping);
            }
            if Instant::now() >= deadline {
                s.requested = false;
                self.publish(&s);
                self.changed.notify_all();
                return Err(PauseError::Timeout(timeout));
            }
            for t in &s.threads {
                kick(*t);
            }
            s = self.wait(s, Duration::from_millis(5));
        }
        Ok(())
    }

    /// Lets the vCPUs run again.
    pub fn resume(&self) {
        let mut s = self.state();
        s.requested = false;
        s.job = None;
        self.publish(&s);
        self.changed.notify_all();
    }

    /// Runs `job` on every parked vCPU (the VM must be paused) and waits until each has.
    pub fn run_on_each(&self, job: VcpuJob, timeout: Duration) -> Result<(), PauseError> {
        let deadline = Instant::now() + timeout;
        let mut s = self.state();
        let n = s.job.as_ref().map_or(1, |(n, _)| n + 1);
        s.job = Some((n, job));
        s.job_done = 0;
        self.changed.notify_all();
        while s.job_done < s.parked {
            if s.stopping {
                return Err(PauseError::Stopping);
            }
            if Instant::now() >= deadline {
                return Err(PauseError::Timeout(timeout));
            }
            s = self.wait(s, Duration::from_millis(5));
        }
        Ok(())
    }

    /// The VM is ending: parked vCPUs return and nothing parks again.
    pub fn stop(&self) {
        let mut s = self.state();
        s.stopping = true;
        self.publish(&s);
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_with_no_vcpus_is_immediate_and_resume_clears_it() {
        let p = PauseControl::default();
        assert!(!p.is_paused());
        p.pause(Duration::from_millis(10), |_| {}).unwrap();
        assert!(p.is_paused());
        assert!(p.requested());
        p.resume();
        assert!(!p.is_paused());
    }

    #[test]
    fn a_vcpu_that_never_parks_times_out_and_is_not_left_paused() {
        let p = PauseControl::default();
        p.thread_starting();
        p.thread_spawned(0);
        let kicks = std::sync::atomic::AtomicUsize::new(0);
        let r = p.pause(Duration::from_millis(30), |_| {
            kicks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        assert_eq!(r, Err(PauseError::Timeout(Duration::from_millis(30))));
        assert!(kicks.load(std::sync::atomic::Ordering::Relaxed) >= 1);
        assert!(!p.is_paused());
    }

    #[test]
    fn stopping_refuses_pause() {
        let p = PauseControl::default();
        p.stop();
        assert_eq!(
            p.pause(Duration::from_millis(10), |_| {}),
            Err(PauseError::Stopping)
        );
        assert!(!p.requested());
    }
}
