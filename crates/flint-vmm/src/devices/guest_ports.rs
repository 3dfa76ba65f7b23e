//! Two I/O ports through which flint's OCI guest init talks to flint:
//!
//! - 0x501, exit status: the guest writes one byte, the VM ends, and flint exits with that byte
//!   as its status. It is QEMU's `isa-debug-exit` default port, so the same guest also ends a
//!   QEMU run with a status (QEMU exits with `status << 1 | 1`).
//! - 0x502, console ready: the guest has opened its console and set its terminal modes; console
//!   input held until then (see [`SerialDevice::hold_input`]) flows from now on. Linux's 8250
//!   driver clears the UART's FIFO when the console is opened, and a tty still in its default
//!   modes echoes what it receives, so input sent earlier would be lost or echoed.
//! - 0x503, warm ready: a guest booted for a warm start waits for its workload; the VMM making
//!   the warm snapshot takes it now (see [`GuestPorts::on_warm_ready`]).
//! - 0x504, console size (read, 32 bits): the host terminal's rows << 16 | columns, 0 when the
//!   console is not a terminal. The init polls it while its workload has a terminal and sets
//!   the guest console's size from it (the workload then gets SIGWINCH), as a container's
//!   terminal follows the one `podman run -t` or `flint run` was given.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;
use crate::devices::legacy::serial::SerialDevice;
use crate::exit::{ExitEvent, ExitReason};

pub use crate::arch::x86_64::layout::{
    CONSOLE_READY_PORT, CONSOLE_SIZE_PORT, EXIT_STATUS_PORT, WARM_READY_PORT,
};

/// The host terminal's size as the console size port gives it (rows << 16 | columns), kept
/// up to date by the control loop (on SIGWINCH).
pub type ConsoleSize = Arc<AtomicU32>;

pub struct GuestPorts {
    exit: Arc<ExitEvent>,
    console: Arc<Mutex<SerialDevice>>,
    warm_ready: Option<EventFd>,
    size: ConsoleSize,
}

impl GuestPorts {
    pub fn new(exit: Arc<ExitEvent>, console: Arc<Mutex<SerialDevice>>) -> Self {
        GuestPorts {
            exit,
            console,
            warm_ready: None,
            size: ConsoleSize::default(),
        }
    }

    /// The size the console size port reads, for the control loop to keep current.
    pub fn console_size(&self) -> ConsoleSize {
        self.size.clone()
    }

    /// Signals `event` when the guest says it is ready for a warm snapshot; without one, that
    /// write is ignored (a guest cannot make an ordinary VM snapshot itself).
    pub fn on_warm_ready(&mut self, event: EventFd) {
        self.warm_ready = Some(event);
    }
}

impl BusDevice for GuestPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        // The size port, read whole (inl); narrower or misaligned reads see zeros.
        if offset == 3 && data.len() == 4 {
            data.copy_from_slice(&self.size.load(Ordering::Relaxed).to_le_bytes());
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Wider writes (outw/outl) count by their low byte, as with QEMU's device.
        match (offset, data.first()) {
            (0, Some(&status)) => self.exit.request(ExitReason::Status(status)),
            (1, Some(_)) => crate::bus::lock(&self.console).release_input(),
            (2, Some(_)) => {
                if let Some(event) = &self.warm_ready {
                    // A full counter (2^64 - 2 writes) only means the event is pending already.
                    let _ = event.write(1);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::irq::IrqLine;

    #[test]
    fn the_first_status_written_ends_the_vm_and_ready_releases_input() {
        let exit = Arc::new(ExitEvent::new().unwrap());
        let serial = serial();
        serial.lock().unwrap().hold_input();
        serial.lock().unwrap().queue_input(b"x");
        let mut ports = GuestPorts::new(exit.clone(), serial.clone());
        let mut b = [9u8];
        ports.read(0, &mut b);
        assert_eq!(b, [0]);

        // Held: the guest's receive buffer is empty (LSR bit 0 clear).
        let mut lsr = [0u8];
        serial.lock().unwrap().read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 0);
        ports.write(1, &[1]);
        serial.lock().unwrap().read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "released");

        assert_eq!(exit.reason(), None);
        ports.write(0, &[3, 1]);
        ports.write(0, &[4]);
        assert_eq!(exit.reason(), Some(ExitReason::Status(3)));
        assert_eq!(ExitReason::Status(3).exit_code(), 3);
    }

    /// A console whose output goes nowhere.
    fn serial() -> Arc<Mutex<SerialDevice>> {
        let out: crate::devices::legacy::serial::SerialOut = Box::new(std::io::sink());
        Arc::new(Mutex::new(SerialDevice::new(
            IrqLine::Fd(EventFd::new(libc::EFD_NONBLOCK).unwrap()),
            out,
        )))
    }

    #[test]
    fn warm_ready_signals_only_a_vm_that_listens() {
        let exit = Arc::new(ExitEvent::new().unwrap());
        let mut ports = GuestPorts::new(exit.clone(), serial());
        ports.write(2, &[1]); // no listener: nothing happens
        let event = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        ports.on_warm_ready(event.try_clone().unwrap());
        assert!(event.read().is_err(), "not signalled yet");
        ports.write(2, &[1]);
        assert_eq!(event.read().unwrap(), 1);
        assert_eq!(exit.reason(), None);
    }

    #[test]
    fn the_console_size_port_reads_what_the_control_loop_set() {
        let mut ports = GuestPorts::new(Arc::new(ExitEvent::new().unwrap()), serial());
        let mut word = [9u8; 4];
        ports.read(3, &mut word);
        assert_eq!(word, [0; 4], "no terminal: 0");
        ports
            .console_size()
            .store(40 << 16 | 120, Ordering::Relaxed);
        ports.read(3, &mut word);
        assert_eq!(u32::from_le_bytes(word), 40 << 16 | 120);
        // Only a whole 32-bit read at the port sees it.
        let mut byte = [9u8];
        ports.read(3, &mut byte);
        assert_eq!(byte, [0]);
    }
}
