//! The boot timer: the guest's init writes `BOOT_TIMER_MAGIC` to `BOOT_TIMER_ADDR` when it starts,
//! and flint reports the time since its own start. Same address and value as Firecracker's.

use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use crate::arch::x86_64::layout::BOOT_TIMER_MAGIC;
use crate::bus::BusDevice;

pub struct BootTimer {
    start: Instant,
    report: Sender<Duration>,
    fired: bool,
}

impl BootTimer {
    /// `start` is when the flint process started; each first magic write sends the elapsed time.
    pub fn new(start: Instant, report: Sender<Duration>) -> Self {
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
            // Nobody listening is fine: the user did not ask for the time.
            let _ = self.report.send(self.start.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_once_on_the_magic_value() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut t = BootTimer::new(Instant::now(), tx);
        t.write(0, &[1]);
        t.write(1, &[BOOT_TIMER_MAGIC]);
        assert!(rx.try_recv().is_err());
        t.write(0, &[BOOT_TIMER_MAGIC]);
        t.write(0, &[BOOT_TIMER_MAGIC]);
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err(), "only the first write counts");
    }
}
