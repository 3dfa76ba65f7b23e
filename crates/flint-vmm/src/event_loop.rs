//! The device event loop's subscribers (`event-manager`): host input for the serial console, and
//! the control events (via a signalfd): SIGINT/SIGTERM/SIGHUP end the VM, SIGPWR presses its
//! ACPI power button; and the exit eventfd.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use crate::bus::lock;
use crate::devices::guest_ports::ConsoleSize;
use crate::devices::legacy::acpi_power::PowerButton;
use crate::devices::legacy::serial::{SerialDevice, MAX_PENDING_INPUT};
use crate::exit::{ExitEvent, ExitReason};

/// The signal that asks the guest to shut itself down (its ACPI power button), as init systems
/// take SIGPWR for "the power is going".
pub const POWER_BUTTON_SIGNAL: i32 = libc::SIGPWR;
/// Every signal the event loop handles: SIGINT, SIGTERM and SIGHUP stop the VM,
/// [`POWER_BUTTON_SIGNAL`], and SIGWINCH (the console terminal's new size, for the guest).
/// Blocked in every thread and read from a signalfd.
pub const CONTROL_SIGNALS: [i32; 5] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    POWER_BUTTON_SIGNAL,
    libc::SIGWINCH,
];

fn sigset(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset uses it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

/// Blocks the control signals in the calling thread (and so in every thread it starts after)
/// and returns a signalfd that reports them.
pub fn block_control_signals() -> std::io::Result<OwnedFd> {
    let set = sigset(&CONTROL_SIGNALS);
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    // SAFETY: -1 asks for a new fd; flags are valid.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by signalfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Ends the loop on the exit eventfd or a stop signal; presses the power button on SIGPWR;
/// on SIGWINCH, reads the console terminal's size for the guest.
pub struct Control {
    pub exit: Arc<ExitEvent>,
    pub signals: OwnedFd,
    pub power_button: Option<Arc<PowerButton>>,
    /// The console's terminal (flint's stdin, when a tty) and where its size goes.
    pub console_size: Option<(RawFd, ConsoleSize)>,
}

impl Control {
    /// Reads the console terminal's size into what the guest's size port gives.
    pub fn update_console_size(&self) {
        if let Some((tty, size)) = &self.console_size {
            if let Some(value) = terminal_size(*tty) {
                size.store(value, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// `tty`'s size as the console size port gives it: rows << 16 | columns (None if it is no
/// terminal).
pub fn terminal_size(tty: RawFd) -> Option<u32> {
    crate::terminal::size(tty).map(|(rows, cols)| u32::from(rows) << 16 | u32::from(cols))
}

/// Presses the guest's power button; the error says why it could not (no ACPI, or the press
/// failed). The one press for every way a host asks (SIGPWR, Ctrl-A p, the API).
pub fn power_button_press(button: Option<&PowerButton>) -> Result<(), PressError> {
    match button {
        Some(b) => b.press().map_err(PressError::Failed),
        None => Err(PressError::NoButton),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PressError {
    #[error("the guest has no power button to press (it has no ACPI: --no-acpi)")]
    NoButton,
    #[error("pressing the guest's power button failed: {0}")]
    Failed(std::io::Error),
}

/// Presses the guest's power button, or says on stderr why it could not.
pub fn press_power_button(button: Option<&PowerButton>, why: &str) {
    if let Err(e) = power_button_press(button) {
        eprintln!("flint: {why}: {e}");
    }
}

impl MutEventSubscriber for Control {
    fn init(&mut self, ops: &mut EventOps) {
        // Without these two the VM could not be stopped: failing here is a bug worth a loud exit.
        if let Err(e) = ops
            .add(Events::new(self.exit.fd(), EventSet::IN))
            .and_then(|_| ops.add(Events::new(&self.signals, EventSet::IN)))
        {
            self.exit.request(ExitReason::VcpuFailure(format!(
                "cannot watch the exit events: {e:?}"
            )));
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.exit.fd().as_raw_fd() {
            let _ = self.exit.fd().read();
        } else if events.fd() == self.signals.as_raw_fd() {
            let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
            // SAFETY: reads at most `info.len()` bytes into the buffer.
            let n = unsafe {
                libc::read(
                    self.signals.as_raw_fd(),
                    info.as_mut_ptr().cast(),
                    info.len(),
                )
            };
            if n == info.len() as isize {
                let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
                match i32::try_from(signo) {
                    Ok(POWER_BUTTON_SIGNAL) => {
                        press_power_button(self.power_button.as_deref(), "SIGPWR")
                    }
                    Ok(libc::SIGWINCH) => self.update_console_size(),
                    Ok(s) => self.exit.request(ExitReason::Signal(s)),
                    Err(_) => {}
                }
            }
        }
    }
}

/// Ctrl-A then `x` quits when the console is a terminal (raw mode sends Ctrl-C to the guest),
/// Ctrl-A then `p` presses the guest's power button; Ctrl-A twice sends one Ctrl-A.
const ESCAPE: u8 = 0x01;

/// Host input (stdin) → the serial console.
pub struct ConsoleInput {
    pub input: RawFd,
    pub serial: Arc<Mutex<SerialDevice>>,
    pub exit: Arc<ExitEvent>,
    pub power_button: Option<Arc<PowerButton>>,
    /// Interactive terminal: honour the Ctrl-A escape.
    pub escapes: bool,
    /// Queued for the guest once the input ends.
    pub eof_byte: Option<u8>,
    pub after_escape: bool,
    /// Watching the input fd; false after EOF or while the guest has lots of input unread.
    pub watching: bool,
}

impl ConsoleInput {
    fn forward(&mut self, bytes: &[u8]) {
        let mut out = Vec::with_capacity(bytes.len());
        for &b in bytes {
            if !self.escapes {
                out.push(b);
            } else if self.after_escape {
                self.after_escape = false;
                match b {
                    b'x' | b'X' => self.exit.request(ExitReason::ConsoleQuit),
                    b'p' | b'P' => press_power_button(self.power_button.as_deref(), "Ctrl-A p"),
                    ESCAPE => out.push(ESCAPE),
                    _ => out.extend([ESCAPE, b]),
                }
            } else if b == ESCAPE {
                self.after_escape = true;
            } else {
                out.push(b);
            }
        }
        lock(&self.serial).queue_input(&out);
    }

    fn end_of_input(&mut self) {
        self.input = -1;
        if let Some(b) = self.eof_byte.take() {
            lock(&self.serial).queue_input(&[b]);
        }
    }

    /// Resumes watching once the guest has drained its backlog (called from the loop).
    pub fn maybe_resume(&mut self, ops: &mut EventOps) {
        if !self.watching
            && self.input >= 0
            && lock(&self.serial).pending_input() < MAX_PENDING_INPUT / 2
            && ops.add(Events::new_raw(self.input, EventSet::IN)).is_ok()
        {
            self.watching = true;
        }
    }
}

impl MutEventSubscriber for ConsoleInput {
    fn init(&mut self, ops: &mut EventOps) {
        if ops.add(Events::new_raw(self.input, EventSet::IN)).is_ok() {
            self.watching = true;
            return;
        }
        // epoll refuses regular files (stdin redirected from a file): hand over what it holds.
        let mut buf = Vec::new();
        // SAFETY: the fd stays owned by the process (stdin); ManuallyDrop keeps it open.
        let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(self.input) });
        let _ = (&mut *f)
            .take(MAX_PENDING_INPUT as u64)
            .read_to_end(&mut buf);
        self.forward(&buf);
        self.end_of_input();
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buf = [0u8; 4096];
        // SAFETY: reads at most `buf.len()` bytes into the buffer.
        let n = unsafe { libc::read(self.input, buf.as_mut_ptr().cast(), buf.len()) };
        let stop_watching = match n {
            n if n > 0 => {
                self.forward(&buf[..n as usize]);
                lock(&self.serial).pending_input() >= MAX_PENDING_INPUT
            }
            0 => {
                self.end_of_input(); // the guest keeps running with no more input
                true
            }
            _ => {
                let e = std::io::Error::last_os_error();
                let again = matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                );
                if !again {
                    self.end_of_input();
                }
                !again || events.event_set().contains(EventSet::HANG_UP)
            }
        };
        if stop_watching && self.watching {
            let _ = ops.remove(events);
            self.watching = false;
        }
    }
}
