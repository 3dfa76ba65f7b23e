//! The guest physical memory map: every fixed address flint uses lives here.
//!
//! Low memory (below 1 MiB) holds the boot structures; the kernel loads at its own physical
//! address (16 MiB for a non-relocatable vmlinux, 1 MiB for a bzImage); the initrd goes at the top
//! of low RAM. Between 3 GiB and 4 GiB is a hole for MMIO devices and the APICs; RAM that does not
//! fit below it continues at 4 GiB.

/// GDT used for the 64-bit and PVH entries.
pub const BOOT_GDT_START: u64 = 0x500;
/// An empty IDT: the guest sets its own before enabling interrupts.
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`, followed by its memory map.
pub const PVH_INFO_START: u64 = 0x6000;
pub const PVH_MEMMAP_START: u64 = 0x6040;
/// Linux "zero page" (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack for the 64-bit entry (grows down, below the page tables).
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables for the 64-bit entry: one PML4, one PDPT, one PD of 2 MiB pages.
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// Kernel command line (NUL-terminated).
pub const CMDLINE_START: u64 = 0x20000;
/// Linux's own limit on x86 (`COMMAND_LINE_SIZE`), used when the kernel does not state one.
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the Extended BIOS Data Area; the MP table lives in its first KiB, where Linux looks.
pub const EBDA_START: u64 = 0x9fc00;
pub const MPTABLE_START: u64 = EBDA_START;
/// Everything from here to 1 MiB is the legacy VGA/BIOS area and is not RAM in the e820 map.
pub const LEGACY_HOLE_START: u64 = 0xa0000;
/// The ACPI tables: the RSDP first, in the BIOS area Linux scans for it (0xE0000–0xFFFFF).
pub const ACPI_START: u64 = 0xe_0000;
pub const ACPI_END: u64 = HIMEM_START;
/// The VM generation ID (16 bytes), alone on the last page of the ACPI area.
pub const VMGENID_ADDR: u64 = ACPI_END - 0x1000;
/// First address of "high" memory: kernels and initrds load at or above it.
pub const HIMEM_START: u64 = 0x10_0000;

/// The 32-bit MMIO hole: no RAM between these addresses.
pub const MMIO32_START: u64 = 0xc000_0000;
pub const MMIO32_END: u64 = 0x1_0000_0000;
/// Where flint's own MMIO devices go (boot timer, then virtio-mmio windows).
pub const MMIO_DEVICES_START: u64 = 0xd000_0000;
pub const MMIO_DEVICE_WINDOW: u64 = 0x1000;
/// The guest writes `BOOT_TIMER_MAGIC` (one byte) here when its init starts; same address and
/// value as Firecracker's boot timer, so the same guest init works on both.
pub const BOOT_TIMER_ADDR: u64 = MMIO_DEVICES_START;
pub const BOOT_TIMER_MAGIC: u8 = 123;
/// Where the IOAPIC and local APIC sit (architectural defaults).
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
pub const APIC_ADDR: u64 = 0xfee0_0000;
/// The three TSS pages KVM needs on Intel (in the MMIO hole, above the APICs). KVM
/// keeps its EPT identity-map page at its own default, 0xfffb_c000: the page below.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;

/// Legacy interrupt lines (ISA IRQs on the IOAPIC / PIC).
pub const SERIAL_IRQ: u32 = 4;
/// The second UART (COM2: port 0x2f8, IRQ 3), present when the console has an error output.
pub const SERIAL2_PORT: u16 = 0x2f8;
pub const SERIAL2_IRQ: u32 = 3;
/// GSIs for virtio-mmio devices: from here to [`IRQ_DEVICES_END`].
pub const IRQ_DEVICES_START: u32 = 5;
pub const IRQ_DEVICES_END: u32 = 21;
/// The ACPI Generic Event Device's second line: the VM generation ID changed (a restore).
pub const VMGENID_IRQ: u32 = 22;
/// The ACPI Generic Event Device's line: the power button (see `arch::x86_64::acpi`).
pub const GED_IRQ: u32 = 23;
/// The IOAPIC's last pin (it has 24).
pub const IRQ_MAX: u32 = 23;

/// The virtio-mmio windows: one [`MMIO_DEVICE_WINDOW`] each, after the boot timer's, handed
/// out in order by `alloc::ResourceAllocator`.
pub const VIRTIO_MMIO_START: u64 = MMIO_DEVICES_START + MMIO_DEVICE_WINDOW;
/// End (exclusive) of the virtio-mmio windows: well below the IOAPIC.
pub const VIRTIO_MMIO_END: u64 = 0xe000_0000;

/// Legacy I/O ports and their spans on the port bus.
/// COM1, the guest's ttyS0 (IRQ [`SERIAL_IRQ`]).
pub const SERIAL_PORT: u16 = 0x3f8;
/// Every UART (COM1, COM2) takes eight ports.
pub const SERIAL_PORT_LEN: u64 = 8;
/// The i8042 keyboard controller: data at 0x60, status/command at 0x64.
pub const I8042_PORT: u16 = 0x60;
pub const I8042_PORT_LEN: u64 = 5;
/// The CMOS RAM and RTC: index at 0x70, data at 0x71.
pub const CMOS_PORT: u16 = 0x70;
pub const CMOS_PORT_LEN: u64 = 2;
/// flint's OCI guest init reports its exit status here (QEMU's `isa-debug-exit` port)...
pub const EXIT_STATUS_PORT: u16 = 0x501;
/// ...and that its console is ready here...
pub const CONSOLE_READY_PORT: u16 = 0x502;
/// ...and, booted for a warm start, that it waits for its workload (snapshot it now);
pub const WARM_READY_PORT: u16 = 0x503;
/// it reads the host terminal's size here (32 bits: rows << 16 | columns; 0 if none).
pub const CONSOLE_SIZE_PORT: u16 = 0x504;
/// (The size port is 4 bytes wide: 0x504 to 0x507.)
pub const GUEST_PORTS_LEN: u64 = 7;
/// The ACPI hardware-reduced registers (one byte each; see `arch::x86_64::acpi`): sleep
/// control, sleep status, reset.
pub const ACPI_SLEEP_CONTROL_PORT: u16 = 0x3c0;
pub const ACPI_SLEEP_STATUS_PORT: u16 = 0x3c1;
pub const ACPI_RESET_PORT: u16 = 0x3c2;
pub const ACPI_PORTS_LEN: u64 = 3;

/// A fixed address below 4 GiB as a boot structure's 32-bit field. Meant for `const` items,
/// where an address that does not fit fails the build.
pub const fn low32(addr: u64) -> u32 {
    assert!(
        addr <= u32::MAX as u64,
        "address above 4 GiB in a 32-bit field"
    );
    // Checked just above: the value fits.
    #[allow(clippy::cast_possible_truncation)]
    let low = addr as u32;
    low
}
