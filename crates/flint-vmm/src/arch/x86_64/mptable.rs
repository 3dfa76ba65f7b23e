//! Intel MultiProcessor Specification 1.4 tables.
//!
//! Without ACPI, this is how a Linux guest learns how many CPUs it has, where the I/O APIC is and
//! how ISA interrupts reach it. The floating pointer structure and the configuration table are
//! written back to back at [`layout::MPTABLE_START`], the first KiB of the EBDA, which is one of
//! the places Linux scans for the "_MP_" signature.
//!
//! Interrupt routing follows KVM's default GSI routing (used when the VMM creates the in-kernel
//! irqchip without installing its own table): GSI `n` drives I/O APIC pin `n`, including GSI 0,
//! which the in-kernel PIT uses. So ISA IRQ `n` is described as a plain INT on pin `n`, IRQ 0
//! included. Real boards wire the 8259's output to pin 0 as ExtINT and the timer to pin 2; copying
//! that would send Linux's timer check to a pin the PIT never drives, and an ExtINT entry on pin 0
//! next to the INT one would describe one pin twice. The 8259 stays reachable as a virtual wire
//! through every local APIC's LINT0, which Linux falls back to if the I/O APIC timer path fails.
//!
//! All multi-byte fields are little-endian, which is the native order on x86_64 hosts.

use std::mem::size_of;

use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::layout;

/// Errors while building the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    #[error("an MP table needs at least one CPU")]
    NoCpus,
    #[error("{0} CPUs requested; the MP table in the EBDA fits at most {MAX_SUPPORTED_CPUS}")]
    TooManyCpus(u8),
    #[error("guest memory does not cover the MP table at {start:#x}+{len:#x}")]
    NotInGuestMemory { start: u64, len: usize },
    #[error("failed to write the MP table to guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

// Entry type codes (MP spec 1.4, table 4-3).
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

// Interrupt types (MP spec 1.4, table 4-9).
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

/// Polarity and trigger mode "conform to the bus" (ISA: active high, edge).
const INT_FLAGS_CONFORMING: u16 = 0;

const SPEC_REV_1_4: u8 = 4;
/// Integrated local APICs report version 0x1x; 0x14 is what a modern xAPIC reports.
const APIC_VERSION: u8 = 0x14;
/// The 82093AA I/O APIC version, which KVM's I/O APIC also reports.
const IOAPIC_VERSION: u8 = 0x11;

const CPU_FLAG_ENABLED: u8 = 1 << 0;
const CPU_FLAG_BSP: u8 = 1 << 1;
const IOAPIC_FLAG_ENABLED: u8 = 1 << 0;

/// CPUID leaf 1 EAX layout: family 6, model 0, stepping 0; only logged by guests.
const CPU_SIGNATURE: u32 = 6 << 8;
/// CPUID leaf 1 EDX bits: FPU (bit 0) and an on-chip APIC (bit 9).
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

const ISA_BUS_ID: u8 = 0;
/// Local interrupt destination meaning "every local APIC".
const ALL_LOCAL_APICS: u8 = 0xff;

const OEM_ID: [u8; 8] = *b"FLINT   ";
const PRODUCT_ID: [u8; 12] = *b"FLINTVMM    ";

/// MP floating pointer structure (MP spec 1.4, section 4.1).
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct MpfIntel {
    signature: [u8; 4],
    physptr: u32,
    /// In 16-byte paragraphs.
    length: u8,
    specification: u8,
    checksum: u8,
    /// 0: a configuration table is present (no default configuration).
    feature1: u8,
    /// Bit 7 clear: virtual wire mode rather than PIC mode (no IMCR).
    feature2: u8,
    feature3: [u8; 3],
}

/// MP configuration table header (MP spec 1.4, section 4.2).
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct MpcTable {
    signature: [u8; 4],
    /// Header plus base entries, in bytes.
    length: u16,
    spec: u8,
    checksum: u8,
    oem: [u8; 8],
    product: [u8; 12],
    oem_ptr: u32,
    oem_size: u16,
    entry_count: u16,
    lapic: u32,
    ext_length: u16,
    ext_checksum: u8,
    reserved: u8,
}

#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct MpcCpu {
    entry_type: u8,
    apic_id: u8,
    apic_version: u8,
    cpu_flags: u8,
    signature: u32,
    feature_flags: u32,
    reserved: [u32; 2],
}

#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct MpcBus {
    entry_type: u8,
    bus_id: u8,
    bus_type: [u8; 6],
}

#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct MpcIoapic {
    entry_type: u8,
    apic_id: u8,
    apic_version: u8,
    flags: u8,
    address: u32,
}

/// Shared layout of I/O (type 3) and local (type 4) interrupt assignment entries.
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct MpcInterrupt {
    entry_type: u8,
    irq_type: u8,
    irq_flags: u16,
    src_bus_id: u8,
    src_bus_irq: u8,
    /// I/O APIC id (type 3) or local APIC id (type 4).
    dst_apic_id: u8,
    /// I/O APIC pin (type 3) or LINTn (type 4).
    dst_pin: u8,
}

// SAFETY: each struct is `repr(C, packed)` and made only of integers and byte arrays, so it has no
// padding and every bit pattern is a valid value.
unsafe impl ByteValued for MpfIntel {}
// SAFETY: as above.
unsafe impl ByteValued for MpcTable {}
// SAFETY: as above.
unsafe impl ByteValued for MpcCpu {}
// SAFETY: as above.
unsafe impl ByteValued for MpcBus {}
// SAFETY: as above.
unsafe impl ByteValued for MpcIoapic {}
// SAFETY: as above.
unsafe impl ByteValued for MpcInterrupt {}

/// ISA IRQs 0..=IRQ_MAX, one I/O interrupt entry each.
const NUM_IO_INTERRUPTS: usize = layout::IRQ_MAX as usize + 1;
const NUM_LOCAL_INTERRUPTS: usize = 2;

/// Bytes of everything except the per-CPU entries.
const FIXED_SIZE: usize = size_of::<MpfIntel>()
    + size_of::<MpcTable>()
    + size_of::<MpcBus>()
    + size_of::<MpcIoapic>()
    + NUM_IO_INTERRUPTS * size_of::<MpcInterrupt>()
    + NUM_LOCAL_INTERRUPTS * size_of::<MpcInterrupt>();

/// Room from the table's start to the end of the EBDA (the legacy hole starts right after):
/// 1 KiB, which fits any usize.
#[allow(clippy::cast_possible_truncation)]
const AREA_SIZE: usize = (layout::LEGACY_HOLE_START - layout::MPTABLE_START) as usize;

const MAX_CPUS_USIZE: usize = (AREA_SIZE - FIXED_SIZE) / size_of::<MpcCpu>();

/// How many vCPUs fit in the MP table area (37 with 24 I/O APIC pins).
// The narrowing is in the branch where the value is at most u8::MAX.
#[allow(clippy::cast_possible_truncation)]
pub const MAX_SUPPORTED_CPUS: u8 = if MAX_CPUS_USIZE > u8::MAX as usize {
    u8::MAX
} else {
    MAX_CPUS_USIZE as u8
};

// The brief for this VMM promises at least 32 vCPUs.
const _: () = assert!(MAX_SUPPORTED_CPUS >= 32);

/// The 32-bit addresses the tables hold.
const IOAPIC_ADDR32: u32 = layout::low32(layout::IOAPIC_ADDR);
const APIC_ADDR32: u32 = layout::low32(layout::APIC_ADDR);
/// The configuration table follows the floating pointer.
const CONFIG_ADDR: u64 = layout::MPTABLE_START + size_of::<MpfIntel>() as u64;
const CONFIG_ADDR32: u32 = layout::low32(CONFIG_ADDR);
/// The floating pointer's length, in 16-byte paragraphs.
const MPF_PARAGRAPHS: u8 = 1;
const _: () = assert!(size_of::<MpfIntel>() == 16 * MPF_PARAGRAPHS as usize);

/// Total size of the floating pointer plus configuration table for `num_cpus` CPUs.
fn table_size(num_cpus: u8) -> usize {
    FIXED_SIZE + usize::from(num_cpus) * size_of::<MpcCpu>()
}

/// The value that makes `bytes` sum to 0 mod 256 when stored in a zeroed checksum field.
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the configuration table's entries, in the order the spec requires (by entry type).
fn build_entries(num_cpus: u8) -> (Vec<u8>, u16) {
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    let mut push = |bytes: &[u8]| {
        entries.extend_from_slice(bytes);
        count += 1;
    };

    for cpu in 0..num_cpus {
        let bsp = if cpu == 0 { CPU_FLAG_BSP } else { 0 };
        let entry = MpcCpu {
            entry_type: ENTRY_PROCESSOR,
            apic_id: cpu,
            apic_version: APIC_VERSION,
            cpu_flags: CPU_FLAG_ENABLED | bsp,
            signature: CPU_SIGNATURE,
            feature_flags: CPU_FEATURES,
            reserved: [0; 2],
        };
        push(entry.as_slice());
    }

    let bus = MpcBus {
        entry_type: ENTRY_BUS,
        bus_id: ISA_BUS_ID,
        bus_type: *b"ISA   ",
    };
    push(bus.as_slice());

    // The first id after the local APICs, so the two never clash.
    let ioapic_id = num_cpus;
    let ioapic = MpcIoapic {
        entry_type: ENTRY_IOAPIC,
        apic_id: ioapic_id,
        apic_version: IOAPIC_VERSION,
        flags: IOAPIC_FLAG_ENABLED,
        address: IOAPIC_ADDR32,
    };
    push(ioapic.as_slice());

    // IRQ numbers as the u8 the entries hold.
    for irq in (0..=u8::MAX).take(NUM_IO_INTERRUPTS) {
        let entry = MpcInterrupt {
            entry_type: ENTRY_IO_INTERRUPT,
            irq_type: INT_TYPE_INT,
            irq_flags: INT_FLAGS_CONFORMING,
            src_bus_id: ISA_BUS_ID,
            src_bus_irq: irq,
            dst_apic_id: ioapic_id,
            dst_pin: irq,
        };
        push(entry.as_slice());
    }

    // Virtual wire mode: the 8259 on LINT0, NMIs on LINT1, for every CPU.
    for (irq_type, lint) in [(INT_TYPE_EXTINT, 0), (INT_TYPE_NMI, 1)] {
        let entry = MpcInterrupt {
            entry_type: ENTRY_LOCAL_INTERRUPT,
            irq_type,
            irq_flags: INT_FLAGS_CONFORMING,
            src_bus_id: ISA_BUS_ID,
            src_bus_irq: 0,
            dst_apic_id: ALL_LOCAL_APICS,
            dst_pin: lint,
        };
        push(entry.as_slice());
    }

    (entries, count)
}

/// Writes the MP floating pointer and configuration table for `num_cpus` vCPUs at
/// [`layout::MPTABLE_START`].
pub fn setup_mptable(mem: &GuestMemoryMmap, num_cpus: u8) -> Result<(), MptableError> {
    if num_cpus == 0 {
        return Err(MptableError::NoCpus);
    }
    if num_cpus > MAX_SUPPORTED_CPUS {
        return Err(MptableError::TooManyCpus(num_cpus));
    }

    let start = GuestAddress(layout::MPTABLE_START);
    let total = table_size(num_cpus);
    // Checked up front so a short guest gets a clear error instead of a partial table.
    if !mem.check_range(start, total) {
        return Err(MptableError::NotInGuestMemory {
            start: start.0,
            len: total,
        });
    }

    let (entries, entry_count) = build_entries(num_cpus);

    let mut header = MpcTable {
        signature: *b"PCMP",
        // At most AREA_SIZE (1 KiB), as enforced by MAX_SUPPORTED_CPUS.
        length: u16::try_from(size_of::<MpcTable>() + entries.len())
            .map_err(|_| MptableError::TooManyCpus(num_cpus))?,
        spec: SPEC_REV_1_4,
        checksum: 0,
        oem: OEM_ID,
        product: PRODUCT_ID,
        oem_ptr: 0,
        oem_size: 0,
        entry_count,
        lapic: APIC_ADDR32,
        ext_length: 0,
        ext_checksum: 0,
        reserved: 0,
    };
    let mut config = Vec::with_capacity(total - size_of::<MpfIntel>());
    config.extend_from_slice(header.as_slice());
    config.extend_from_slice(&entries);
    header.checksum = checksum(&config);
    // Re-emit the header now that its checksum is known.
    config[..size_of::<MpcTable>()].copy_from_slice(header.as_slice());

    let mut mpf = MpfIntel {
        signature: *b"_MP_",
        // The EBDA is below 1 MiB, so the address fits the 32-bit field.
        physptr: CONFIG_ADDR32,
        length: MPF_PARAGRAPHS,
        specification: SPEC_REV_1_4,
        checksum: 0,
        feature1: 0,
        feature2: 0,
        feature3: [0; 3],
    };
    mpf.checksum = checksum(mpf.as_slice());

    mem.write_obj(mpf, start).map_err(MptableError::Write)?;
    mem.write_slice(&config, GuestAddress(CONFIG_ADDR))
        .map_err(MptableError::Write)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest_mem(size: usize) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
    }

    fn read_bytes(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }

    /// Parses the table back the way a guest would: follow the floating pointer, check both
    /// checksums, then walk the entries by type. Returns the header and each entry's raw bytes.
    fn parse(mem: &GuestMemoryMmap) -> (MpcTable, Vec<Vec<u8>>) {
        let mpf: MpfIntel = mem.read_obj(GuestAddress(layout::MPTABLE_START)).unwrap();
        assert_eq!(mpf.signature, *b"_MP_");
        assert_eq!({ mpf.length }, 1);
        assert_eq!({ mpf.specification }, 4);
        assert_eq!(
            { mpf.feature1 },
            0,
            "must not claim a default configuration"
        );
        assert_eq!(sum(&read_bytes(mem, layout::MPTABLE_START, 16)), 0);

        let physptr = u64::from(mpf.physptr);
        assert_eq!(physptr, layout::MPTABLE_START + 16);
        let header: MpcTable = mem.read_obj(GuestAddress(physptr)).unwrap();
        assert_eq!(header.signature, *b"PCMP");
        assert_eq!({ header.spec }, 4);
        assert_eq!(u64::from(header.lapic), layout::APIC_ADDR);
        assert_eq!(header.oem, *b"FLINT   ");
        let len = usize::from(header.length);
        assert!(physptr + len as u64 <= layout::LEGACY_HOLE_START);
        assert_eq!(sum(&read_bytes(mem, physptr, len)), 0);

        let body = read_bytes(mem, physptr, len);
        let mut entries = Vec::new();
        let mut off = size_of::<MpcTable>();
        while off < len {
            let size = match body[off] {
                ENTRY_PROCESSOR => 20,
                ENTRY_BUS | ENTRY_IOAPIC | ENTRY_IO_INTERRUPT | ENTRY_LOCAL_INTERRUPT => 8,
                t => panic!("unknown entry type {t}"),
            };
            entries.push(body[off..off + size].to_vec());
            off += size;
        }
        assert_eq!(off, len, "entries must exactly fill the table");
        assert_eq!(entries.len(), usize::from(header.entry_count));
        (header, entries)
    }

    fn check_table(num_cpus: u8) {
        let mem = guest_mem(0x10_0000 + 0x1000);
        setup_mptable(&mem, num_cpus).unwrap();
        let (_, entries) = parse(&mem);
        let n = usize::from(num_cpus);
        assert_eq!(entries.len(), n + 1 + 1 + 24 + 2);

        // Spec order: processors, bus, I/O APIC, I/O interrupts, local interrupts.
        let types: Vec<u8> = entries.iter().map(|e| e[0]).collect();
        let mut sorted = types.clone();
        sorted.sort();
        assert_eq!(types, sorted);

        for (i, e) in entries[..n].iter().enumerate() {
            // Packed structs have alignment 1, so any 20-byte slice converts.
            let cpu = *MpcCpu::from_slice(e).unwrap();
            assert_eq!(cpu.entry_type, ENTRY_PROCESSOR);
            assert_eq!(usize::from(cpu.apic_id), i);
            assert_eq!(cpu.apic_version, 0x14);
            assert_eq!(cpu.cpu_flags & CPU_FLAG_ENABLED, CPU_FLAG_ENABLED);
            assert_eq!(
                cpu.cpu_flags & CPU_FLAG_BSP != 0,
                i == 0,
                "BSP only on cpu 0"
            );
            assert_eq!({ cpu.feature_flags } & 0x201, 0x201);
        }

        assert_eq!(
            entries[n],
            [ENTRY_BUS, 0, b'I', b'S', b'A', b' ', b' ', b' ']
        );

        let ioapic = &entries[n + 1];
        assert_eq!(ioapic[0], ENTRY_IOAPIC);
        assert_eq!(
            ioapic[1], num_cpus,
            "I/O APIC id follows the local APIC ids"
        );
        assert_eq!(ioapic[2], 0x11);
        assert_eq!(ioapic[3], 1);
        assert_eq!(
            u32::from_le_bytes([ioapic[4], ioapic[5], ioapic[6], ioapic[7]]),
            0xfec0_0000
        );

        for (irq, e) in entries[n + 2..n + 2 + 24].iter().enumerate() {
            // type 3, INT, conforming flags, ISA bus 0, irq -> I/O APIC pin irq.
            assert_eq!(
                e.as_slice(),
                [
                    3,
                    0,
                    0,
                    0,
                    0,
                    u8::try_from(irq).unwrap(),
                    num_cpus,
                    u8::try_from(irq).unwrap()
                ]
            );
        }

        assert_eq!(
            entries[n + 26],
            [4, 3, 0, 0, 0, 0, 0xff, 0],
            "ExtINT on LINT0"
        );
        assert_eq!(entries[n + 27], [4, 1, 0, 0, 0, 0, 0xff, 1], "NMI on LINT1");
    }

    #[test]
    fn one_cpu() {
        check_table(1);
    }

    #[test]
    fn two_cpus() {
        check_table(2);
    }

    #[test]
    fn max_cpus_fit_in_the_ebda() {
        assert_eq!(
            MAX_SUPPORTED_CPUS, 37,
            "24 I/O APIC pins leave room for 37 CPUs"
        );
        assert!(
            layout::MPTABLE_START + table_size(MAX_SUPPORTED_CPUS) as u64
                <= layout::LEGACY_HOLE_START
        );
        // One more CPU would not fit: the constant is as large as it can be.
        assert!(
            layout::MPTABLE_START + (table_size(MAX_SUPPORTED_CPUS) + 20) as u64
                > layout::LEGACY_HOLE_START
        );
        check_table(MAX_SUPPORTED_CPUS);
    }

    #[test]
    fn does_not_write_past_the_ebda() {
        let mem = guest_mem(0x10_0000);
        mem.write_slice(&[0xaa; 16], GuestAddress(layout::LEGACY_HOLE_START))
            .unwrap();
        setup_mptable(&mem, MAX_SUPPORTED_CPUS).unwrap();
        assert_eq!(
            read_bytes(&mem, layout::LEGACY_HOLE_START, 16),
            vec![0xaa; 16]
        );
    }

    #[test]
    fn rejects_bad_cpu_counts() {
        let mem = guest_mem(0x10_0000);
        assert!(matches!(setup_mptable(&mem, 0), Err(MptableError::NoCpus)));
        assert!(matches!(
            setup_mptable(&mem, MAX_SUPPORTED_CPUS + 1),
            Err(MptableError::TooManyCpus(n)) if n == MAX_SUPPORTED_CPUS + 1
        ));
        assert!(matches!(
            setup_mptable(&mem, u8::MAX),
            Err(MptableError::TooManyCpus(255))
        ));
        // Nothing was written on failure.
        assert_eq!(read_bytes(&mem, layout::MPTABLE_START, 4), vec![0; 4]);
    }

    #[test]
    fn rejects_guest_memory_too_small() {
        // Ends before the EBDA.
        let mem = guest_mem(0x9_0000);
        assert!(matches!(
            setup_mptable(&mem, 1),
            Err(MptableError::NotInGuestMemory { .. })
        ));
        // Ends in the middle of the table.
        let mem = guest_mem(usize::try_from(layout::MPTABLE_START).unwrap() + 0x100);
        assert!(matches!(
            setup_mptable(&mem, 4),
            Err(MptableError::NotInGuestMemory { .. })
        ));
        assert_eq!(read_bytes(&mem, layout::MPTABLE_START, 4), vec![0; 4]);
    }
}
