//! The exit-status port: the guest writes one byte, the VM ends, and flint exits with that
//! byte as its status. flint's OCI init reports the workload's exit code this way. The port is
//! QEMU's `isa-debug-exit` default (0x501), so the same guest ends a QEMU run too (QEMU exits
//! with `status << 1 | 1` there).

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::exit::{ExitEvent, ExitReason};

pub struct ExitStatusPort {
    exit: Arc<ExitEvent>,
}

impl ExitStatusPort {
    pub fn new(exit: Arc<ExitEvent>) -> Self {
        ExitStatusPort { exit }
    }
}

impl BusDevice for ExitStatusPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Wider writes (outw/outl) count by their low byte, as with QEMU's device.
        if let (0, Some(&status)) = (offset, data.first()) {
            self.exit.request(ExitReason::Status(status));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_status_written_ends_the_vm() {
        let exit = Arc::new(ExitEvent::new().unwrap());
        let mut port = ExitStatusPort::new(exit.clone());
        let mut b = [9u8];
        port.read(0, &mut b);
        assert_eq!(b, [0]);
        assert_eq!(exit.reason(), None);
        port.write(0, &[3, 1]);
        port.write(0, &[4]);
        assert_eq!(exit.reason(), Some(ExitReason::Status(3)));
        assert_eq!(ExitReason::Status(3).exit_code(), 3);
    }
}
