//! The PC CMOS RAM and real-time clock (MC146818-compatible) at I/O ports 0x70/0x71.
//!
//! Linux reads the clock at boot; with no device there, the data port reads 0xff (the
//! update-in-progress bit looks stuck) and the guest polls for about a second. The time comes
//! straight from the host's UTC clock on every read, so an update is never in progress. The
//! memory size registers are filled in as a PC BIOS (and QEMU) leaves them, for guests and
//! firmware that size memory from CMOS. No RTC interrupts are generated.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::bus::BusDevice;

/// Port offsets relative to the device's base (0x70).
const INDEX_PORT: u64 = 0;
const DATA_PORT: u64 = 1;

/// Bit 7 of the index port masks NMIs on real hardware; flint keeps it but ignores it.
const INDEX_MASK: u8 = 0x7f;
const CMOS_SIZE: usize = 128;
const _: () = assert!(INDEX_MASK as usize + 1 == CMOS_SIZE);

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_DAY_OF_WEEK: u8 = 0x06;
const REG_DAY_OF_MONTH: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_STATUS_A: u8 = 0x0a;
const REG_STATUS_B: u8 = 0x0b;
const REG_STATUS_C: u8 = 0x0c;
const REG_STATUS_D: u8 = 0x0d;
const REG_BASE_MEM_LO: u8 = 0x15;
const REG_BASE_MEM_HI: u8 = 0x16;
const REG_EXT_MEM_LO: u8 = 0x17;
const REG_EXT_MEM_HI: u8 = 0x18;
const REG_EXT_MEM2_LO: u8 = 0x30;
const REG_EXT_MEM2_HI: u8 = 0x31;
const REG_CENTURY: u8 = 0x32;
const REG_HIGH_MEM_LO: u8 = 0x34;
const REG_HIGH_MEM_HI: u8 = 0x35;
const REG_MEM_ABOVE_4G_LO: u8 = 0x5b;
const REG_MEM_ABOVE_4G_MID: u8 = 0x5c;
const REG_MEM_ABOVE_4G_HI: u8 = 0x5d;

/// Status A: divider 010 (32.768 kHz time base) and rate 0110 (1024 Hz), a real RTC's default.
const STATUS_A_DEFAULT: u8 = 0x26;
/// Status A bit 7, update in progress: read-only, and always 0 here.
const STATUS_A_UIP: u8 = 0x80;
/// Status B bit 1: 24-hour mode.
const STATUS_B_24H: u8 = 0x02;
/// Status B bit 2: binary (set) or BCD (clear) time registers.
const STATUS_B_BINARY: u8 = 0x04;
/// Status D bit 7: the CMOS battery is good, so RAM and time are valid.
const STATUS_D_VALID: u8 = 0x80;
/// Hours register bit 7 in 12-hour mode.
const HOURS_PM: u8 = 0x80;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Seconds since the UNIX epoch: the host's UTC clock, or `fixed` (tests pin a known instant).
fn unix_now(fixed: Option<u64>) -> u64 {
    fixed.unwrap_or_else(|| {
        // A host clock before 1970 is broken; 1970 is as good a guess as any, and no panic.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    })
}

/// A UTC calendar date and time, as the RTC registers hold it. flint-bench dates its reports
/// with it too, so the workspace has one calendar conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    pub year: u64,
    /// 1 = January ... 12 = December.
    pub month: u8,
    /// 1..=31.
    pub day: u8,
    /// 1 = Sunday ... 7 = Saturday, the RTC's convention.
    pub weekday: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl DateTime {
    /// Converts seconds since 1970-01-01T00:00:00Z (proleptic Gregorian, no leap seconds).
    pub fn from_unix(secs: u64) -> Self {
        let days = secs / 86_400;
        let rem = secs % 86_400;
        // 1970-01-01 was a Thursday (RTC weekday 5).
        let weekday = ((days + 4) % 7) as u8 + 1;

        // Howard Hinnant's days-to-civil method: count in 400-year eras starting 0000-03-01, so
        // the leap day falls at the end of each year and a month's position no longer depends
        // on leap years. 1970-01-01 is day 719_468 counted from 0000-03-01. A u64 cannot
        // overflow here: days < 2^64 / 86_400.
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097; // day of era, 0..=146_096
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of March-based year, 0..=365
        let mp = (5 * doy + 2) / 153; // March = 0 ... February = 11
                                      // Day 1..=31 and month 1..=12, by the ranges above: they fit a u8.
        #[allow(clippy::cast_possible_truncation)]
        let (day, month) = (
            (doy - (153 * mp + 2) / 5 + 1) as u8,
            if mp < 10 { mp + 3 } else { mp - 9 } as u8,
        );
        let year = era * 400 + yoe + u64::from(month <= 2);

        Self {
            year,
            month,
            day,
            weekday,
            hour: (rem / 3_600) as u8,
            minute: (rem % 3_600 / 60) as u8,
            second: (rem % 60) as u8,
        }
    }
}

fn is_time_reg(reg: u8) -> bool {
    matches!(
        reg,
        REG_SECONDS | REG_MINUTES | REG_HOURS | REG_DAY_OF_WEEK..=REG_YEAR | REG_CENTURY
    )
}

/// Packs 0..=99 as two BCD digits.
fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

/// Splits `v` into its low and high bytes, capped at `u16::MAX`.
fn u16_bytes(v: u64) -> [u8; 2] {
    u16::try_from(v).unwrap_or(u16::MAX).to_le_bytes()
}

/// The CMOS/RTC device; insert it on the port I/O bus at 0x70 with length 2.
#[derive(Debug)]
pub struct Cmos {
    /// Last value written to the index port, NMI bit included.
    index: u8,
    /// CMOS RAM; the time and status C/D registers are computed on read instead.
    data: [u8; CMOS_SIZE],
    /// `None` reads the host clock; tests set a fixed UNIX time.
    fixed_time: Option<u64>,
}

/// The CMOS's state in a snapshot: its index register and RAM (the time is the host's, read
/// when the guest asks).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CmosSnapshot {
    pub index: u8,
    pub data: Vec<u8>,
}

impl Cmos {
    pub fn snapshot(&self) -> CmosSnapshot {
        CmosSnapshot {
            index: self.index,
            data: self.data.to_vec(),
        }
    }

    /// Puts the saved registers back (a RAM image of another size is refused: None).
    pub fn restore(&mut self, s: &CmosSnapshot) -> Option<()> {
        self.data = s.data.as_slice().try_into().ok()?;
        self.index = s.index;
        Some(())
    }

    /// A CMOS/RTC for a guest with `mem_below_4g` bytes of RAM below 4 GiB (counted from 0) and
    /// `mem_above_4g` bytes from 4 GiB up.
    pub fn new(mem_below_4g: u64, mem_above_4g: u64) -> Cmos {
        Self::with_clock(mem_below_4g, mem_above_4g, None)
    }

    fn with_clock(mem_below_4g: u64, mem_above_4g: u64, fixed_time: Option<u64>) -> Cmos {
        let mut data = [0u8; CMOS_SIZE];
        data[usize::from(REG_STATUS_A)] = STATUS_A_DEFAULT;
        data[usize::from(REG_STATUS_B)] = STATUS_B_24H;

        // Conventional memory in KiB, never more than the 640 KiB below the legacy hole.
        let base = u16_bytes((mem_below_4g / KIB).min(640));
        // Extended memory above 1 MiB in KiB; the 16-bit field tops out just under 64 MiB.
        let ext = u16_bytes(mem_below_4g.saturating_sub(MIB) / KIB);
        // Memory between 16 MiB and 4 GiB in 64 KiB units.
        let high = u16_bytes(mem_below_4g.saturating_sub(16 * MIB) / (64 * KIB));
        // Memory above 4 GiB in 64 KiB units, a 24-bit field.
        let above = (mem_above_4g / (64 * KIB)).min(0xff_ffff).to_le_bytes();

        for (reg, val) in [
            (REG_BASE_MEM_LO, base[0]),
            (REG_BASE_MEM_HI, base[1]),
            (REG_EXT_MEM_LO, ext[0]),
            (REG_EXT_MEM_HI, ext[1]),
            (REG_EXT_MEM2_LO, ext[0]),
            (REG_EXT_MEM2_HI, ext[1]),
            (REG_HIGH_MEM_LO, high[0]),
            (REG_HIGH_MEM_HI, high[1]),
            (REG_MEM_ABOVE_4G_LO, above[0]),
            (REG_MEM_ABOVE_4G_MID, above[1]),
            (REG_MEM_ABOVE_4G_HI, above[2]),
        ] {
            data[usize::from(reg)] = val;
        }

        Cmos {
            index: 0,
            data,
            fixed_time,
        }
    }

    /// The selected register: below `CMOS_SIZE`, so indexing `data` with it cannot panic.
    fn reg(&self) -> u8 {
        self.index & INDEX_MASK
    }

    fn status_b(&self) -> u8 {
        self.data[usize::from(REG_STATUS_B)]
    }

    /// Encodes a time field in the format status B selects.
    fn encode(&self, v: u8) -> u8 {
        if self.status_b() & STATUS_B_BINARY != 0 {
            v
        } else {
            to_bcd(v)
        }
    }

    /// The time register `reg` as the guest should see it now, or `None` if `reg` is not one.
    fn read_time(&self, reg: u8) -> Option<u8> {
        if !is_time_reg(reg) {
            // Not worth a clock read.
            return None;
        }
        let now = DateTime::from_unix(unix_now(self.fixed_time));
        let value = match reg {
            REG_SECONDS => self.encode(now.second),
            REG_MINUTES => self.encode(now.minute),
            REG_HOURS if self.status_b() & STATUS_B_24H != 0 => self.encode(now.hour),
            REG_HOURS => {
                // 12-hour mode: 12, 1, ..., 11 with the PM flag in bit 7.
                let h12 = match now.hour % 12 {
                    0 => 12,
                    h => h,
                };
                let pm = if now.hour >= 12 { HOURS_PM } else { 0 };
                self.encode(h12) | pm
            }
            REG_DAY_OF_WEEK => self.encode(now.weekday),
            REG_DAY_OF_MONTH => self.encode(now.day),
            REG_MONTH => self.encode(now.month),
            REG_YEAR => self.encode((now.year % 100) as u8),
            // Wraps like the year does, so the encoding never sees more than two digits.
            REG_CENTURY => self.encode((now.year / 100 % 100) as u8),
            _ => return None,
        };
        Some(value)
    }

    fn read_data(&self) -> u8 {
        let reg = self.reg();
        if let Some(value) = self.read_time(reg) {
            return value;
        }
        match reg {
            REG_STATUS_A => self.data[usize::from(REG_STATUS_A)] & !STATUS_A_UIP,
            // No interrupt is ever pending.
            REG_STATUS_C => 0,
            REG_STATUS_D => STATUS_D_VALID,
            _ => self.data[usize::from(reg)],
        }
    }

    fn write_data(&mut self, value: u8) {
        let reg = self.reg();
        match reg {
            // The host clock is authoritative; setting the guest's clock is not supported.
            _ if is_time_reg(reg) => {}
            REG_STATUS_A => self.data[usize::from(REG_STATUS_A)] = value & !STATUS_A_UIP,
            // Read-only on real hardware.
            REG_STATUS_C | REG_STATUS_D => {}
            _ => self.data[usize::from(reg)] = value,
        }
    }

    fn read_port(&self, offset: u64) -> u8 {
        match offset {
            INDEX_PORT => self.index,
            DATA_PORT => self.read_data(),
            // Like an unclaimed port.
            _ => 0xff,
        }
    }

    fn write_port(&mut self, offset: u64, value: u8) {
        match offset {
            INDEX_PORT => self.index = value,
            DATA_PORT => self.write_data(value),
            _ => {}
        }
    }
}

/// Wider accesses behave like consecutive byte accesses to consecutive ports, as the ISA bus
/// splits them; so `outw 0x70` selects a register and writes it, and bytes past 0x71 read 0xff.
impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = offset
                .checked_add(i as u64)
                .map_or(0xff, |port| self.read_port(port));
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, byte) in data.iter().enumerate() {
            if let Some(port) = offset.checked_add(i as u64) {
                self.write_port(port, *byte);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-22 15:47:09 UTC, a Sunday.
    const KNOWN: u64 = 1_795_362_429;

    fn read_reg(cmos: &mut Cmos, reg: u8) -> u8 {
        cmos.write(INDEX_PORT, &[reg]);
        let mut b = [0u8];
        cmos.read(DATA_PORT, &mut b);
        b[0]
    }

    fn write_reg(cmos: &mut Cmos, reg: u8, value: u8) {
        cmos.write(INDEX_PORT, &[reg]);
        cmos.write(DATA_PORT, &[value]);
    }

    fn fixed(secs: u64) -> Cmos {
        Cmos::with_clock(256 * MIB, 0, Some(secs))
    }

    /// (seconds, minutes, hours, weekday, day, month, year, century) as the guest reads them.
    fn read_time(cmos: &mut Cmos) -> [u8; 8] {
        [
            REG_SECONDS,
            REG_MINUTES,
            REG_HOURS,
            REG_DAY_OF_WEEK,
            REG_DAY_OF_MONTH,
            REG_MONTH,
            REG_YEAR,
            REG_CENTURY,
        ]
        .map(|r| read_reg(cmos, r))
    }

    fn from_bcd(v: u8) -> u8 {
        (v >> 4) * 10 + (v & 0xf)
    }

    #[test]
    fn bcd_conversion() {
        assert_eq!(to_bcd(0), 0x00);
        assert_eq!(to_bcd(9), 0x09);
        assert_eq!(to_bcd(10), 0x10);
        assert_eq!(to_bcd(47), 0x47);
        assert_eq!(to_bcd(99), 0x99);
        for v in 0..100 {
            assert_eq!(from_bcd(to_bcd(v)), v);
        }
    }

    #[test]
    fn known_date_in_bcd_by_default() {
        let mut cmos = fixed(KNOWN);
        assert_eq!(
            read_time(&mut cmos),
            [0x09, 0x47, 0x15, 0x01, 0x22, 0x11, 0x26, 0x20]
        );
    }

    #[test]
    fn known_date_in_binary_when_selected() {
        let mut cmos = fixed(KNOWN);
        write_reg(&mut cmos, REG_STATUS_B, STATUS_B_24H | STATUS_B_BINARY);
        assert_eq!(read_reg(&mut cmos, REG_STATUS_B), 0x06);
        assert_eq!(read_time(&mut cmos), [9, 47, 15, 1, 22, 11, 26, 20]);
    }

    #[test]
    fn twelve_hour_mode() {
        let mut cmos = fixed(KNOWN);
        write_reg(&mut cmos, REG_STATUS_B, 0);
        // 15h is 3 PM.
        assert_eq!(read_reg(&mut cmos, REG_HOURS), 0x80 | 0x03);
        // Midnight and noon both read as 12.
        let mut cmos = fixed(0);
        write_reg(&mut cmos, REG_STATUS_B, 0);
        assert_eq!(read_reg(&mut cmos, REG_HOURS), 0x12);
        let mut cmos = fixed(12 * 3600);
        write_reg(&mut cmos, REG_STATUS_B, STATUS_B_BINARY);
        assert_eq!(read_reg(&mut cmos, REG_HOURS), 0x80 | 12);
    }

    #[test]
    fn epoch_and_calendar_edges() {
        let day = |y, m, d, wd| DateTime {
            year: y,
            month: m,
            day: d,
            weekday: wd,
            hour: 0,
            minute: 0,
            second: 0,
        };
        // Thursday.
        assert_eq!(DateTime::from_unix(0), day(1970, 1, 1, 5));
        // 2000 is a leap year (divisible by 400): Feb 29 exists, a Tuesday.
        assert_eq!(DateTime::from_unix(951_782_400), day(2000, 2, 29, 3));
        assert_eq!(DateTime::from_unix(951_868_800), day(2000, 3, 1, 4));
        // 2024 is a leap year; Feb 29, 2024 was a Thursday.
        assert_eq!(DateTime::from_unix(1_709_164_800), day(2024, 2, 29, 5));
        // 2100 is not a leap year: Feb 28 is followed by Mar 1 (a Sunday then Monday).
        assert_eq!(DateTime::from_unix(4_107_456_000), day(2100, 2, 28, 1));
        assert_eq!(DateTime::from_unix(4_107_542_400), day(2100, 3, 1, 2));
        // Last second of the 20th century's final year, then the 21st century starts.
        let end = DateTime::from_unix(946_684_799);
        assert_eq!((end.year, end.month, end.day), (1999, 12, 31));
        assert_eq!((end.hour, end.minute, end.second), (23, 59, 59));
        assert_eq!(DateTime::from_unix(946_684_800), day(2000, 1, 1, 7));
    }

    #[test]
    fn century_register_rolls_over() {
        let mut cmos = fixed(946_684_799);
        let t = read_time(&mut cmos);
        assert_eq!((t[6], t[7]), (0x99, 0x19));
        let mut cmos = fixed(946_684_800);
        let t = read_time(&mut cmos);
        assert_eq!((t[6], t[7]), (0x00, 0x20));
        // 2100-03-01.
        let mut cmos = fixed(4_107_542_400);
        let t = read_time(&mut cmos);
        assert_eq!((t[4], t[5], t[6], t[7]), (0x01, 0x03, 0x00, 0x21));
    }

    #[test]
    fn extreme_timestamps_do_not_panic() {
        let mut cmos = fixed(u64::MAX);
        for v in read_time(&mut cmos) {
            // Every field is still valid BCD.
            assert!(v >> 4 <= 9 && v & 0xf <= 9, "{v:#x}");
        }
    }

    #[test]
    fn host_clock_is_plausible() {
        let mut cmos = Cmos::new(256 * MIB, 0);
        let t = read_time(&mut cmos);
        let year = u32::from(from_bcd(t[7])) * 100 + u32::from(from_bcd(t[6]));
        assert!((2024..2200).contains(&year), "year {year}");
        assert!((1..=12).contains(&from_bcd(t[5])));
        assert!((1..=31).contains(&from_bcd(t[4])));
        assert!((1..=7).contains(&from_bcd(t[3])));
    }

    #[test]
    fn writes_to_time_registers_are_ignored() {
        let mut cmos = fixed(KNOWN);
        write_reg(&mut cmos, REG_SECONDS, 0x33);
        write_reg(&mut cmos, REG_YEAR, 0x99);
        write_reg(&mut cmos, REG_CENTURY, 0x19);
        assert_eq!(read_reg(&mut cmos, REG_SECONDS), 0x09);
        assert_eq!(read_reg(&mut cmos, REG_YEAR), 0x26);
        assert_eq!(read_reg(&mut cmos, REG_CENTURY), 0x20);
    }

    #[test]
    fn alarms_and_ram_read_back() {
        let mut cmos = fixed(KNOWN);
        for (reg, v) in [
            (0x01, 0x30),
            (0x03, 0x15),
            (0x05, 0x07),
            (0x0f, 0xa5),
            (0x7f, 0x5a),
        ] {
            write_reg(&mut cmos, reg, v);
            assert_eq!(read_reg(&mut cmos, reg), v);
        }
        // Unwritten RAM reads 0.
        assert_eq!(read_reg(&mut cmos, 0x40), 0);
    }

    #[test]
    fn status_registers() {
        let mut cmos = fixed(KNOWN);
        assert_eq!(read_reg(&mut cmos, REG_STATUS_A), 0x26);
        assert_eq!(read_reg(&mut cmos, REG_STATUS_B), 0x02);
        assert_eq!(read_reg(&mut cmos, REG_STATUS_C), 0x00);
        assert_eq!(read_reg(&mut cmos, REG_STATUS_D), 0x80);

        // The update-in-progress bit cannot be set by the guest.
        write_reg(&mut cmos, REG_STATUS_A, 0xa6);
        assert_eq!(read_reg(&mut cmos, REG_STATUS_A), 0x26);
        write_reg(&mut cmos, REG_STATUS_B, 0x12);
        assert_eq!(read_reg(&mut cmos, REG_STATUS_B), 0x12);
        // C and D are read-only.
        write_reg(&mut cmos, REG_STATUS_C, 0xff);
        write_reg(&mut cmos, REG_STATUS_D, 0x00);
        assert_eq!(read_reg(&mut cmos, REG_STATUS_C), 0x00);
        assert_eq!(read_reg(&mut cmos, REG_STATUS_D), 0x80);
    }

    #[test]
    fn index_port_keeps_nmi_bit_but_ignores_it() {
        let mut cmos = fixed(KNOWN);
        cmos.write(INDEX_PORT, &[0x80 | REG_STATUS_D]);
        let mut b = [0u8];
        cmos.read(INDEX_PORT, &mut b);
        assert_eq!(b[0], 0x8d);
        cmos.read(DATA_PORT, &mut b);
        assert_eq!(b[0], 0x80, "register 0x0d selected despite the NMI bit");
        // RAM writes through an NMI-masked index land in the same register.
        write_reg(&mut cmos, 0x80 | 0x20, 0x42);
        assert_eq!(read_reg(&mut cmos, 0x20), 0x42);
    }

    #[test]
    fn memory_registers_256m() {
        let mut cmos = Cmos::with_clock(256 * MIB, 0, Some(KNOWN));
        let mut r = |reg| read_reg(&mut cmos, reg);
        // 640 KiB base memory.
        assert_eq!((r(0x15), r(0x16)), (0x80, 0x02));
        // 255 MiB of extended memory does not fit 16 bits: capped.
        assert_eq!((r(0x17), r(0x18)), (0xff, 0xff));
        assert_eq!((r(0x30), r(0x31)), (0xff, 0xff));
        // (256 - 16) MiB / 64 KiB = 3840.
        assert_eq!((r(0x34), r(0x35)), (0x00, 0x0f));
        assert_eq!((r(0x5b), r(0x5c), r(0x5d)), (0, 0, 0));
    }

    #[test]
    fn memory_registers_3g_plus_2g_high() {
        let mut cmos = Cmos::with_clock(3 * 1024 * MIB, 2 * 1024 * MIB, Some(KNOWN));
        let mut r = |reg| read_reg(&mut cmos, reg);
        assert_eq!((r(0x15), r(0x16)), (0x80, 0x02));
        assert_eq!((r(0x17), r(0x18)), (0xff, 0xff));
        // (3072 - 16) MiB / 64 KiB = 48896 = 0xbf00.
        assert_eq!((r(0x34), r(0x35)), (0x00, 0xbf));
        // 2 GiB / 64 KiB = 32768 = 0x8000.
        assert_eq!((r(0x5b), r(0x5c), r(0x5d)), (0x00, 0x80, 0x00));
    }

    #[test]
    fn memory_registers_small_and_huge() {
        // 32 MiB: 31 MiB extended (31744 KiB = 0x7c00), 16 MiB above 16 MiB (256 = 0x100).
        let mut cmos = Cmos::with_clock(32 * MIB, 0, Some(KNOWN));
        let mut r = |reg| read_reg(&mut cmos, reg);
        assert_eq!((r(0x17), r(0x18)), (0x00, 0x7c));
        assert_eq!((r(0x34), r(0x35)), (0x00, 0x01));
        // Less than 640 KiB and nothing above 1 MiB.
        let mut cmos = Cmos::with_clock(512 * KIB, 0, Some(KNOWN));
        let mut r = |reg| read_reg(&mut cmos, reg);
        assert_eq!((r(0x15), r(0x16)), (0x00, 0x02));
        assert_eq!((r(0x17), r(0x18), r(0x34), r(0x35)), (0, 0, 0, 0));
        // Absurd sizes saturate instead of wrapping.
        let mut cmos = Cmos::with_clock(u64::MAX, u64::MAX, Some(KNOWN));
        let mut r = |reg| read_reg(&mut cmos, reg);
        assert_eq!((r(0x34), r(0x35)), (0xff, 0xff));
        assert_eq!((r(0x5b), r(0x5c), r(0x5d)), (0xff, 0xff, 0xff));
    }

    #[test]
    fn wide_odd_and_out_of_range_accesses() {
        let mut cmos = fixed(KNOWN);
        // A 16-bit write selects the register and writes it, as two byte cycles would.
        cmos.write(INDEX_PORT, &[0x20, 0x77]);
        assert_eq!(read_reg(&mut cmos, 0x20), 0x77);
        // A 16-bit read returns the index then the data.
        cmos.write(INDEX_PORT, &[REG_STATUS_D]);
        let mut w = [0u8; 2];
        cmos.read(INDEX_PORT, &mut w);
        assert_eq!(w, [REG_STATUS_D, 0x80]);
        // Bytes beyond the two ports read as an empty bus.
        let mut d = [0u8; 4];
        cmos.read(DATA_PORT, &mut d);
        assert_eq!(d, [0x80, 0xff, 0xff, 0xff]);
        let mut d = [0u8; 3];
        cmos.read(2, &mut d);
        assert_eq!(d, [0xff; 3]);
        cmos.read(u64::MAX, &mut d);
        assert_eq!(d, [0xff; 3]);
        // Empty and out-of-range accesses change nothing.
        cmos.read(0, &mut []);
        cmos.write(0, &[]);
        cmos.write(2, &[0x0f, 0x0f]);
        cmos.write(u64::MAX, &[0x0f, 0x0f, 0x0f]);
        cmos.write(u64::MAX - 1, &[0x0f, 0x0f, 0x0f]);
        let mut b = [0u8];
        cmos.read(INDEX_PORT, &mut b);
        assert_eq!(b[0], REG_STATUS_D);
    }
}
