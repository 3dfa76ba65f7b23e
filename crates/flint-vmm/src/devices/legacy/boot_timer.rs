//! The boot timer: the guest's init writes `BOOT_TIMER_MAGIC` to `BOOT_TIMER_ADDR` when it starts,
//! and flint reports the time since its own start. Same address and value as Firecracker's.

use std::time::{Duration, Instant};

use crate::arch::x86_64::layout::BOOT_TIMER_MAGIC;
use crate::bus::BusDevice;

pub struct BootTimer {
    start: Instant,
    report: Box<dyn FnMut(Duration) + Send>,
    fired: bool,
}

impl BootTimer {
    /// `start` is when the flint process started; the first magic write calls `report` with the
    /// time elapsed since.
    pub fn new(start: Instant, report: Box<dyn FnMut(Duration) + Send>) -> Self {
        BootTimer {
            start,
            report,
            fired: false,
        }
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && data.first() == Some(&BOOT_TIMER_MAGIC) && !self.fired {
            self.fired = true;
            (self.report)(self.start.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_once_on_the_magic_value() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut t = BootTimer::new(Instant::now(), Box::new(move |d| tx.send(d).unwrap()));
        t.write(0, &[1]);
        t.write(1, &[BOOT_TIMER_MAGIC]);
        assert!(rx.try_recv().is_err());
        t.write(0, &[BOOT_TIMER_MAGIC]);
        t.write(0, &[BOOT_TIMER_MAGIC]);
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err(), "only the first write counts");
    }
}
