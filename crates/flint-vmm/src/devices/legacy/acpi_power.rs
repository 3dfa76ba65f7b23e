//! The ACPI hardware-reduced power registers the FADT points at (see `arch::x86_64::acpi`):
//! sleep control (a guest's `poweroff` writes SLP_EN with the `_S5_` sleep type), sleep status,
//! and reset (a guest's `reboot` through ACPI writes the reset value). Either ends the VM as a
//! clean shutdown, as the i8042 reset does. And the power button ([`PowerButton`]): a host's
//! request that the guest shut itself down.

use std::sync::Arc;

use crate::devices::irq::IrqLine;

use crate::arch::x86_64::acpi::{RESET_VALUE, S5_SLEEP_TYPE};
use crate::bus::BusDevice;
use crate::exit::{ExitEvent, ExitReason};

/// Register offsets from `layout::ACPI_SLEEP_CONTROL_PORT`.
const SLEEP_CONTROL: u64 = 0;
const SLEEP_STATUS: u64 = 1;
const RESET: u64 = 2;

/// Sleep control: SLP_EN, and SLP_TYP in bits 2–4.
const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0b111;
/// Sleep status: WAK_STS, which a guest polls after a sleep (never reached here).
const WAK_STS: u8 = 1 << 7;

pub struct AcpiPower {
    exit: Arc<ExitEvent>,
}

impl AcpiPower {
    pub fn new(exit: Arc<ExitEvent>) -> AcpiPower {
        AcpiPower { exit }
    }
}

impl BusDevice for AcpiPower {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == SLEEP_STATUS {
            if let Some(b) = data.first_mut() {
                *b = WAK_STS;
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            SLEEP_CONTROL
                if v & SLP_EN != 0 && (v >> SLP_TYP_SHIFT) & SLP_TYP_MASK == S5_SLEEP_TYPE =>
            {
                self.exit.request(ExitReason::Shutdown)
            }
            RESET if v == RESET_VALUE => self.exit.request(ExitReason::Shutdown),
            // Other sleep states (S1–S4) are not offered; other values do nothing.
            _ => {}
        }
    }
}

/// The ACPI power button: an edge on the Generic Event Device's line (`layout::GED_IRQ`),
/// for which the DSDT's `_EVT` notifies the `PNP0C0C` button. What the guest does then is its
/// own choice (systemd-logind powers off; a guest without a button driver does nothing).
pub struct PowerButton {
    line: IrqLine,
}

impl PowerButton {
    pub fn new(line: IrqLine) -> PowerButton {
        PowerButton { line }
    }

    pub fn press(&self) -> std::io::Result<()> {
        self.line.trigger()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requested(offset: u64, value: u8) -> bool {
        let exit = Arc::new(ExitEvent::new().unwrap());
        let mut p = AcpiPower::new(exit.clone());
        p.write(offset, &[value]);
        exit.reason().is_some()
    }

    #[test]
    fn s5_and_reset_end_the_vm_and_nothing_else_does() {
        assert!(requested(
            SLEEP_CONTROL,
            SLP_EN | S5_SLEEP_TYPE << SLP_TYP_SHIFT
        ));
        assert!(requested(RESET, RESET_VALUE));
        // Without SLP_EN, another sleep type, other values or registers: nothing.
        assert!(!requested(SLEEP_CONTROL, S5_SLEEP_TYPE << SLP_TYP_SHIFT));
        assert!(!requested(SLEEP_CONTROL, SLP_EN | 3 << SLP_TYP_SHIFT));
        assert!(!requested(RESET, 0));
        assert!(!requested(SLEEP_STATUS, 0xff));
        let exit = Arc::new(ExitEvent::new().unwrap());
        let mut p = AcpiPower::new(exit);
        let mut b = [0u8; 1];
        p.read(SLEEP_STATUS, &mut b);
        assert_eq!(b[0], WAK_STS);
    }
}
