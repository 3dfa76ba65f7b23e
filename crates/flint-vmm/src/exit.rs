//! How the VM ends: the first reason reported wins, and an eventfd wakes the event loop.

use std::sync::Mutex;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Why a VM stopped running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off or rebooted: the i8042 reset Linux uses with `reboot=k`, a KVM
    /// system event (shutdown or reset), or the boot vCPU halting with nothing left to wake it.
    /// flint treats a reboot as power-off, like Firecracker. (A triple fault, which KVM reports
    /// as `KVM_EXIT_SHUTDOWN`, is a [`ExitReason::VcpuFailure`], not this.)
    Shutdown,
    /// The guest wrote an exit status to the exit-status port (0x501).
    Status(u8),
    /// SIGINT, SIGTERM or SIGHUP reached flint.
    Signal(i32),
    /// The user typed Ctrl-A x on an interactive console.
    ConsoleQuit,
    /// A snapshot was taken with the request to stop the VM after it.
    Snapshotted,
    /// A vCPU hit something it cannot go on from; the string says what, with the vCPU's RIP.
    VcpuFailure(String),
    /// A flint thread panicked (a flint bug): where and why (see [`crate::panic`]).
    InternalError(String),
    /// A device's backend outside flint failed (a share's virtiofsd ended): what happened.
    DeviceFailure(String),
}

impl ExitReason {
    /// The process exit code a user sees.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitReason::Shutdown | ExitReason::Snapshotted => 0,
            ExitReason::Status(s) => *s as i32,
            ExitReason::Signal(sig) => 128 + sig,
            // As a shell reports a job ended with Ctrl-C.
            ExitReason::ConsoleQuit => 128 + libc::SIGINT,
            ExitReason::VcpuFailure(_)
            | ExitReason::InternalError(_)
            | ExitReason::DeviceFailure(_) => 1,
        }
    }
}

/// An error and its causes on one line, as the CLI prints them: each message says what it adds,
/// so joined by ": " they read as one sentence.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    msg
}

pub struct ExitEvent {
    fd: EventFd,
    reason: Mutex<Option<ExitReason>>,
}

impl ExitEvent {
    pub fn new() -> std::io::Result<Self> {
        Ok(ExitEvent {
            fd: EventFd::new(EFD_NONBLOCK)?,
            reason: Mutex::new(None),
        })
    }

    /// Records `reason` unless another came first, and wakes whoever waits on `fd()`.
    pub fn request(&self, reason: ExitReason) {
        let mut r = crate::bus::lock(&self.reason);
        if r.is_none() {
            *r = Some(reason);
        }
        // A full eventfd counter still wakes the reader; nothing to do on error.
        let _ = self.fd.write(1);
    }

    pub fn reason(&self) -> Option<ExitReason> {
        crate::bus::lock(&self.reason).clone()
    }

    pub fn fd(&self) -> &EventFd {
        &self.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins_and_fd_is_signalled() {
        let e = ExitEvent::new().unwrap();
        assert_eq!(e.reason(), None);
        assert!(e.fd().read().is_err(), "nothing signalled yet");
        e.request(ExitReason::Shutdown);
        e.request(ExitReason::Signal(15));
        assert_eq!(e.reason(), Some(ExitReason::Shutdown));
        assert_eq!(e.fd().read().unwrap(), 2);
        assert_eq!(ExitReason::Signal(15).exit_code(), 143);
    }
}
