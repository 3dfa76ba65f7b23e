//! Just enough of the i8042 keyboard controller (ports 0x60–0x64) for Linux: it answers the
//! controller self-tests so the driver's probe does not wait for timeouts, acknowledges keyboard
//! commands, and turns the CPU-reset command (0xFE, what `reboot=k` sends) into a VM shutdown.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::bus::BusDevice;
use crate::exit::{ExitEvent, ExitReason};

const OFF_DATA: u64 = 0; // port 0x60
const OFF_CMD: u64 = 4; // port 0x64

const STATUS_OUT_FULL: u8 = 1 << 0;
const STATUS_SYSTEM_FLAG: u8 = 1 << 2;
const STATUS_LAST_WAS_CMD: u8 = 1 << 3;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_READ_OUTPORT: u8 = 0xd0;
const CMD_WRITE_OUTPORT: u8 = 0xd1;
const CMD_RESET_CPU: u8 = 0xfe;

const SELF_TEST_OK: u8 = 0x55;
const KBD_ACK: u8 = 0xfa;
const KBD_CMD_RESET: u8 = 0xff;
const KBD_RESET_OK: u8 = 0xaa;

/// Bytes waiting for the guest to read port 0x60. A real 8042 holds one; a few let a keyboard
/// reset's ACK and result both wait. A guest that writes commands without reading loses the
/// replies past this, rather than growing flint's memory.
pub const MAX_OUTPUT: usize = 16;

pub struct I8042 {
    exit: Arc<ExitEvent>,
    ctr: u8,
    out: VecDeque<u8>,
    /// The command whose parameter the next data-port write carries.
    awaiting: Option<u8>,
    last_was_cmd: bool,
}

/// The controller's state in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct I8042Snapshot {
    pub ctr: u8,
    pub out: Vec<u8>,
    pub awaiting: Option<u8>,
    pub last_was_cmd: bool,
}

impl I8042 {
    pub fn snapshot(&self) -> I8042Snapshot {
        I8042Snapshot {
            ctr: self.ctr,
            out: self.out.iter().copied().collect(),
            awaiting: self.awaiting,
            last_was_cmd: self.last_was_cmd,
        }
    }

    /// A controller in the saved state `s` (its output queue bounded as ever).
    pub fn restore(exit: Arc<ExitEvent>, s: &I8042Snapshot) -> Self {
        I8042 {
            exit,
            ctr: s.ctr,
            out: s.out.iter().copied().take(MAX_OUTPUT).collect(),
            awaiting: s.awaiting,
            last_was_cmd: s.last_was_cmd,
        }
    }

    pub fn new(exit: Arc<ExitEvent>) -> Self {
        I8042 {
            exit,
            // Keyboard interrupt on, translation on, as firmware leaves it.
            ctr: 0x45,
            out: VecDeque::new(),
            awaiting: None,
            last_was_cmd: false,
        }
    }

    fn status(&self) -> u8 {
        let mut s = STATUS_SYSTEM_FLAG;
        if !self.out.is_empty() {
            s |= STATUS_OUT_FULL;
        }
        if self.last_was_cmd {
            s |= STATUS_LAST_WAS_CMD;
        }
        s
    }

    /// Queues a reply for the guest; dropped when the queue is full.
    fn reply(&mut self, v: u8) {
        if self.out.len() < MAX_OUTPUT {
            self.out.push_back(v);
        }
    }

    fn command(&mut self, cmd: u8) {
        self.last_was_cmd = true;
        match cmd {
            CMD_READ_CTR => self.reply(self.ctr),
            CMD_WRITE_CTR | CMD_WRITE_OUTPORT => self.awaiting = Some(cmd),
            CMD_SELF_TEST => self.reply(SELF_TEST_OK),
            CMD_KBD_TEST => self.reply(0),
            // Output port: A20 enabled, CPU not held in reset.
            CMD_READ_OUTPORT => self.reply(0x03),
            CMD_RESET_CPU => self.exit.request(ExitReason::Shutdown),
            _ => {}
        }
    }

    fn data(&mut self, v: u8) {
        self.last_was_cmd = false;
        match self.awaiting.take() {
            Some(CMD_WRITE_CTR) => self.ctr = v,
            // Bit 0 of the output port low = pulse the CPU's reset line.
            Some(CMD_WRITE_OUTPORT) if v & 1 == 0 => self.exit.request(ExitReason::Shutdown),
            Some(_) => {}
            None => {
                // A command for the keyboard itself: acknowledge it.
                self.reply(KBD_ACK);
                if v == KBD_CMD_RESET {
                    self.reply(KBD_RESET_OK);
                }
            }
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            OFF_DATA => self.out.pop_front().unwrap_or(0),
            OFF_CMD => self.status(),
            _ => 0xff,
        };
        if let [first, rest @ ..] = data {
            *first = v;
            rest.fill(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            OFF_DATA => self.data(v),
            OFF_CMD => self.command(v),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> (I8042, Arc<ExitEvent>) {
        let e = Arc::new(ExitEvent::new().unwrap());
        (I8042::new(e.clone()), e)
    }

    fn rd(d: &mut I8042, off: u64) -> u8 {
        let mut b = [0];
        d.read(off, &mut b);
        b[0]
    }

    #[test]
    fn reset_command_shuts_down() {
        let (mut d, e) = dev();
        d.write(OFF_CMD, &[CMD_RESET_CPU]);
        assert_eq!(e.reason(), Some(ExitReason::Shutdown));
    }

    #[test]
    fn self_test_and_ctr_round_trip() {
        let (mut d, e) = dev();
        assert_eq!(rd(&mut d, OFF_CMD) & STATUS_OUT_FULL, 0);
        d.write(OFF_CMD, &[CMD_SELF_TEST]);
        assert_ne!(rd(&mut d, OFF_CMD) & STATUS_OUT_FULL, 0);
        assert_eq!(rd(&mut d, OFF_DATA), SELF_TEST_OK);
        d.write(OFF_CMD, &[CMD_WRITE_CTR]);
        d.write(OFF_DATA, &[0x12]);
        d.write(OFF_CMD, &[CMD_READ_CTR]);
        assert_eq!(rd(&mut d, OFF_DATA), 0x12);
        d.write(OFF_DATA, &[KBD_CMD_RESET]);
        assert_eq!(
            (rd(&mut d, OFF_DATA), rd(&mut d, OFF_DATA)),
            (KBD_ACK, KBD_RESET_OK)
        );
        assert_eq!(e.reason(), None);
        d.write(OFF_CMD, &[CMD_WRITE_OUTPORT]);
        d.write(OFF_DATA, &[0xfe]);
        assert_eq!(e.reason(), Some(ExitReason::Shutdown));
    }

    #[test]
    fn unread_replies_are_bounded() {
        let (mut d, _) = dev();
        for _ in 0..100_000 {
            d.write(OFF_CMD, &[CMD_SELF_TEST]);
            d.write(OFF_DATA, &[KBD_CMD_RESET]);
        }
        assert_eq!(d.out.len(), MAX_OUTPUT);
        // What was kept is still read in order, then the buffer is empty.
        assert_eq!(rd(&mut d, OFF_DATA), SELF_TEST_OK);
        assert_eq!(rd(&mut d, OFF_DATA), KBD_ACK);
        for _ in 2..MAX_OUTPUT {
            rd(&mut d, OFF_DATA);
        }
        assert_eq!(rd(&mut d, OFF_CMD) & STATUS_OUT_FULL, 0);
    }

    #[test]
    fn odd_accesses_do_not_panic() {
        let (mut d, _) = dev();
        d.write(2, &[1]);
        d.write(OFF_CMD, &[]);
        let mut b = [0u8; 8];
        d.read(99, &mut b);
        d.read(OFF_DATA, &mut []);
    }
}
