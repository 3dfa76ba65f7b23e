//! The 8250/16550 UART at 0x3f8 (COM1), backed by `vm-superio`.
//!
//! Output goes to a host writer (the bounded console buffer, see `console_out`); input from the
//! host is queued here and fed into the UART's 64-byte FIFO as the guest drains it, so piped
//! input larger than the FIFO is not lost.

use std::collections::VecDeque;
use std::io::Write;

use crate::bus::BusDevice;
use crate::devices::irq::IrqLine;
use vm_superio::{Serial, Trigger};

/// Raises the serial interrupt (IRQ 4).
pub struct IrqTrigger(pub IrqLine);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.trigger()
    }
}

/// Where the UART's output goes: for a VM, a [`super::console_out::ConsoleSink`], which never
/// blocks the vCPU writing it.
pub type SerialOut = Box<dyn Write + Send>;

pub struct SerialDevice {
    uart: Serial<IrqTrigger, vm_superio::serial::NoEvents, SerialOut>,
    pending_input: VecDeque<u8>,
    /// Input waits in `pending_input` until the guest says it is ready for it.
    input_held: bool,
}

/// Stop reading host input once this much waits for the guest (it resumes as the guest reads).
pub const MAX_PENDING_INPUT: usize = 1 << 20;

/// A UART's state in a snapshot: its registers and FIFO (vm-superio's `SerialState`), and the
/// host input still waiting for the FIFO.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SerialSnapshot {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub fifo: Vec<u8>,
    pub pending_input: Vec<u8>,
    pub input_held: bool,
}

impl SerialDevice {
    pub fn snapshot(&self) -> SerialSnapshot {
        let s = self.uart.state();
        SerialSnapshot {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            fifo: s.in_buffer,
            pending_input: self.pending_input.iter().copied().collect(),
            input_held: self.input_held,
        }
    }

    /// A UART in the saved state `s` (None: the FIFO in it is longer than a UART's).
    pub fn restore(irq: IrqLine, out: SerialOut, s: &SerialSnapshot) -> Option<Self> {
        let state = vm_superio::serial::SerialState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.fifo.clone(),
        };
        let uart =
            Serial::from_state(&state, IrqTrigger(irq), vm_superio::serial::NoEvents, out).ok()?;
        let pending = s.pending_input.len().min(MAX_PENDING_INPUT);
        Some(SerialDevice {
            uart,
            pending_input: s.pending_input[..pending].iter().copied().collect(),
            input_held: s.input_held,
        })
    }

    pub fn new(irq: IrqLine, out: SerialOut) -> Self {
        SerialDevice {
            uart: Serial::new(IrqTrigger(irq), out),
            pending_input: VecDeque::new(),
            input_held: false,
        }
    }

    /// Keeps host input from the guest until [`Self::release_input`] (the guest's console-ready
    /// signal, see `devices::guest_ports`).
    pub fn hold_input(&mut self) {
        self.input_held = true;
    }

    pub fn release_input(&mut self) {
        self.input_held = false;
        self.feed_fifo();
    }

    /// Queues host input for the guest.
    pub fn queue_input(&mut self, bytes: &[u8]) {
        self.pending_input.extend(bytes);
        self.feed_fifo();
    }

    pub fn pending_input(&self) -> usize {
        self.pending_input.len()
    }

    fn feed_fifo(&mut self) {
        while !self.input_held && !self.pending_input.is_empty() && self.uart.fifo_capacity() > 0 {
            let (front, _) = self.pending_input.as_slices();
            match self.uart.enqueue_raw_bytes(front) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.pending_input.drain(..n);
                }
            }
        }
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let (Ok(off), [first, rest @ ..]) = (u8::try_from(offset), data) {
            *first = self.uart.read(off);
            rest.fill(0);
            // A read of the receive register may have made room in the FIFO.
            self.feed_fifo();
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // A device that panics while a vCPU holds its lock (the tests' case of a device bug).
        crate::panic::test_point("serial");
        if let (Ok(off), Some(&v)) = (u8::try_from(offset), data.first()) {
            // A failed host write (closed stdout) loses console output, never the VM.
            let _ = self.uart.write(off, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vmm_sys_util::eventfd::EventFd;

    fn line(fd: &EventFd) -> IrqLine {
        IrqLine::Fd(fd.try_clone().unwrap())
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const THR_RBR: u64 = 0;
    const IER: u64 = 1;
    const LSR: u64 = 5;
    const LSR_DATA_READY: u8 = 1;

    #[test]
    fn output_reaches_the_writer() {
        let out = Shared::default();
        let mut s = SerialDevice::new(line(&EventFd::new(0).unwrap()), Box::new(out.clone()));
        for b in b"hi\n" {
            s.write(THR_RBR, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
    }

    #[test]
    fn input_larger_than_the_fifo_is_not_lost() {
        let irq = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let mut s = SerialDevice::new(line(&irq), Box::new(std::io::sink()));
        // The driver enables the received-data interrupt (IER bit 0) before it expects input.
        s.write(IER, &[1]);
        let input: Vec<u8> = (0..200u32).map(|i| (i % 251) as u8).collect();
        s.queue_input(&input);
        assert!(irq.read().unwrap() >= 1, "the guest was interrupted");
        let mut got = vec![];
        let mut b = [0u8];
        loop {
            s.read(LSR, &mut b);
            if b[0] & LSR_DATA_READY == 0 {
                break;
            }
            s.read(THR_RBR, &mut b);
            got.push(b[0]);
        }
        assert_eq!(got, input);
        assert_eq!(s.pending_input(), 0);
    }

    #[test]
    fn odd_accesses_do_not_panic() {
        let mut s = SerialDevice::new(line(&EventFd::new(0).unwrap()), Box::new(std::io::sink()));
        s.write(u64::MAX, &[1]);
        s.write(3, &[]);
        let mut four = [0xffu8; 4];
        s.read(5, &mut four);
        s.read(1 << 40, &mut four);
        s.read(0, &mut []);
    }
}
