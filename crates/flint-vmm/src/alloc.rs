//! Hands out what each virtio device needs from the machine: an MMIO window and an interrupt
//! line (an IOAPIC pin). The ranges come from `arch::x86_64::layout`; how many devices fit
//! ([`VIRTIO_DEVICE_CAPACITY`]) follows from them, and the configuration's limit is that.

use crate::arch::x86_64::layout::{
    IRQ_DEVICES_END, IRQ_DEVICES_START, MMIO_DEVICE_WINDOW, VIRTIO_MMIO_END, VIRTIO_MMIO_START,
};

/// MMIO windows between `VIRTIO_MMIO_START` and `VIRTIO_MMIO_END`.
const MMIO_WINDOWS: u64 = (VIRTIO_MMIO_END - VIRTIO_MMIO_START) / MMIO_DEVICE_WINDOW;
/// IOAPIC pins from `IRQ_DEVICES_START` to `IRQ_DEVICES_END`.
const IRQ_LINES: u64 = (IRQ_DEVICES_END - IRQ_DEVICES_START + 1) as u64;

/// How many virtio devices a VM can have: the scarcer of windows and interrupt lines.
pub const VIRTIO_DEVICE_CAPACITY: usize = {
    let n = if MMIO_WINDOWS < IRQ_LINES {
        MMIO_WINDOWS
    } else {
        IRQ_LINES
    };
    // A handful of devices; the const assertion proves the narrowing below loses nothing.
    assert!(n <= 1024);
    #[allow(clippy::cast_possible_truncation)]
    let n = n as usize;
    n
};

/// One device's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceResources {
    /// Base of its MMIO window, [`MMIO_DEVICE_WINDOW`] long.
    pub mmio_base: u64,
    pub mmio_len: u64,
    /// Its GSI (IOAPIC pin).
    pub gsi: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no room for another virtio device: a VM has at most {VIRTIO_DEVICE_CAPACITY}")]
pub struct Exhausted;

/// Hands out windows and lines in order, each once.
#[derive(Debug, Default)]
pub struct ResourceAllocator {
    next: u32,
}

impl ResourceAllocator {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next device's window and line.
    pub fn virtio_device(&mut self) -> Result<DeviceResources, Exhausted> {
        let i = self.next;
        if usize::try_from(i).map_or(true, |i| i >= VIRTIO_DEVICE_CAPACITY) {
            return Err(Exhausted);
        }
        self.next += 1;
        Ok(DeviceResources {
            mmio_base: VIRTIO_MMIO_START + u64::from(i) * MMIO_DEVICE_WINDOW,
            mmio_len: MMIO_DEVICE_WINDOW,
            gsi: IRQ_DEVICES_START + i,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::{
        BOOT_TIMER_ADDR, GED_IRQ, IOAPIC_ADDR, IRQ_MAX, VMGENID_IRQ,
    };

    #[test]
    fn hands_out_distinct_windows_and_lines_until_full() {
        let mut a = ResourceAllocator::new();
        let all: Vec<_> = std::iter::from_fn(|| a.virtio_device().ok()).collect();
        assert_eq!(all.len(), VIRTIO_DEVICE_CAPACITY);
        // The first device is where the kernel command line has always announced it.
        assert_eq!(all[0].mmio_base, 0xd000_1000);
        assert_eq!(all[0].gsi, 5);
        for (i, r) in all.iter().enumerate() {
            assert!(r.mmio_base > BOOT_TIMER_ADDR);
            assert!(r.mmio_base + r.mmio_len <= IOAPIC_ADDR);
            assert!(r.gsi <= IRQ_MAX && r.gsi != GED_IRQ && r.gsi != VMGENID_IRQ);
            for s in &all[..i] {
                assert!(s.mmio_base + s.mmio_len <= r.mmio_base);
                assert_ne!(s.gsi, r.gsi);
            }
        }
        assert_eq!(a.virtio_device(), Err(Exhausted));
        // The IOAPIC's 24 pins are the limit today, less the legacy ones and the Generic Event
        // Device's two (the power button, the VM generation ID).
        assert_eq!(VIRTIO_DEVICE_CAPACITY, 17);
    }
}
