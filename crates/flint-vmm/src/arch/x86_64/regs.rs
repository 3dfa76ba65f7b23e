//! Initial CPU state for the two entry points flint supports.
//!
//! * 64-bit Linux boot protocol (`Documentation/x86/boot.rst`, "64-bit boot protocol"): long mode,
//!   paging on with an identity map, flat `__BOOT_CS` (0x10) / `__BOOT_DS` (0x18), RSI = zero page.
//! * PVH (Xen's `pvh.pandoc`): 32-bit protected mode, paging off, flat segments, an active TSS,
//!   EBX = `hvm_start_info`.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::*;

#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("writing the boot GDT/IDT into guest memory failed")]
    Gdt(#[source] vm_memory::GuestMemoryError),
    #[error("writing the boot page tables into guest memory failed")]
    PageTables(#[source] vm_memory::GuestMemoryError),
}

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit entry at this address with RSI = zero page.
    Long64(u64),
    /// PVH 32-bit entry at this address with EBX = start info.
    Pvh32(u64),
}

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Selector indexes in the boot GDT (Linux's `__BOOT_CS` = 0x10, `__BOOT_DS` = 0x18).
const CODE_INDEX: u16 = 2;
const DATA_INDEX: u16 = 3;
const TSS_INDEX: u16 = 4;

/// A segment descriptor from its access/flags word (`flags` holds access byte in bits 0–7 and the
/// G/DB/L/AVL nibble in bits 12–15, as the descriptor's bytes 5–6 lay them out), base and limit.
const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = base as u64;
    let limit = limit as u64;
    ((base & 0xff00_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
        | ((limit & 0x000f_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
}

/// The `kvm_segment` matching a descriptor, as the CPU would cache it after loading `index`.
fn segment_from_gdt(entry: u64, index: u16) -> kvm_segment {
    let limit_raw = (entry & 0xffff) as u32 | ((entry >> 32) & 0xf_0000) as u32;
    let g = ((entry >> 55) & 1) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000),
        // The cached limit is in bytes: with G set, the 20-bit limit counts 4 KiB pages.
        limit: if g == 1 {
            (limit_raw << 12) | 0xfff
        } else {
            limit_raw
        },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: if (entry >> 47) & 1 == 1 { 0 } else { 1 },
        padding: 0,
    }
}

fn boot_gdt(mode: EntryMode) -> [u64; 5] {
    let code = match mode {
        EntryMode::Long64(_) => gdt_entry(0xa09b, 0, 0xfffff), // 64-bit code, 4 GiB
        EntryMode::Pvh32(_) => gdt_entry(0xc09b, 0, 0xfffff),  // 32-bit code, 4 GiB
    };
    [
        0,
        0,
        code,
        gdt_entry(0xc093, 0, 0xfffff), // read/write data, 4 GiB
        gdt_entry(0x008b, 0, 0x67),    // busy 32-bit TSS (PVH requires an active TR)
    ]
}

/// Writes the GDT, an empty IDT and (for 64-bit entry) identity page tables; returns the special
/// registers to load on the boot vCPU, starting from the vCPU's current `sregs`.
pub fn setup_sregs(
    mem: &GuestMemoryMmap,
    mode: EntryMode,
    mut sregs: kvm_sregs,
) -> Result<kvm_sregs, RegsError> {
    let gdt = boot_gdt(mode);
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_START + 8 * i as u64))
            .map_err(RegsError::Gdt)?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(RegsError::Gdt)?;

    sregs.gdt.base = BOOT_GDT_START;
    // Five 8-byte entries: a limit of 39.
    sregs.gdt.limit = u16::try_from(std::mem::size_of_val(&gdt) - 1).unwrap_or(u16::MAX);
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;

    let code = segment_from_gdt(gdt[CODE_INDEX as usize], CODE_INDEX);
    let data = segment_from_gdt(gdt[DATA_INDEX as usize], DATA_INDEX);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment_from_gdt(gdt[TSS_INDEX as usize], TSS_INDEX);

    match mode {
        EntryMode::Long64(_) => {
            setup_page_tables(mem)?;
            sregs.cr3 = PML4_START;
            sregs.cr4 = CR4_PAE;
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.efer = EFER_LME | EFER_LMA;
        }
        EntryMode::Pvh32(_) => {
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.cr3 = 0;
            sregs.efer = 0;
        }
    }
    Ok(sregs)
}

/// Identity-maps the first 1 GiB with 2 MiB pages: enough for the kernel, zero page, command line
/// and early stack; the kernel builds its own page tables right away.
fn setup_page_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    const PRESENT_RW: u64 = 0x3;
    const PAGE_SIZE_2M: u64 = 0x80;
    mem.write_obj(PDPTE_START | PRESENT_RW, GuestAddress(PML4_START))
        .map_err(RegsError::PageTables)?;
    mem.write_obj(PDE_START | PRESENT_RW, GuestAddress(PDPTE_START))
        .map_err(RegsError::PageTables)?;
    let pde: Vec<u8> = (0..512u64)
        .flat_map(|i| ((i << 21) | PRESENT_RW | PAGE_SIZE_2M).to_le_bytes())
        .collect();
    mem.write_slice(&pde, GuestAddress(PDE_START))
        .map_err(RegsError::PageTables)
}

/// General-purpose registers for the boot vCPU.
pub fn boot_regs(mode: EntryMode) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2, // bit 1 is reserved and must be set; interrupts off
        ..Default::default()
    };
    match mode {
        EntryMode::Long64(entry) => {
            regs.rip = entry;
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_START;
        }
        EntryMode::Pvh32(entry) => {
            regs.rip = entry;
            regs.rbx = PVH_INFO_START;
        }
    }
    regs
}

/// The FPU state after `FNINIT`, plus the SSE default MXCSR.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// Local APIC: LINT0 delivers ExtINT (the PIC) and LINT1 NMI, as a BIOS leaves them for an MP
/// table that says so.
pub fn set_lint(lapic: &mut kvm_bindings::kvm_lapic_state) {
    const LVT_LINT0: usize = 0x350;
    const LVT_LINT1: usize = 0x360;
    const MODE_EXTINT: u32 = 0x7;
    const MODE_NMI: u32 = 0x4;
    for (off, mode) in [(LVT_LINT0, MODE_EXTINT), (LVT_LINT1, MODE_NMI)] {
        let mut raw = [0u8; 4];
        for (b, r) in raw.iter_mut().zip(&lapic.regs[off..off + 4]) {
            *b = *r as u8;
        }
        let v = (u32::from_le_bytes(raw) & !0x700) | (mode << 8);
        for (r, b) in lapic.regs[off..off + 4].iter_mut().zip(v.to_le_bytes()) {
            *r = b as _;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    #[test]
    fn gdt_entries_decode_to_flat_segments() {
        let code = segment_from_gdt(gdt_entry(0xa09b, 0, 0xfffff), 2);
        assert_eq!(
            (code.base, code.limit, code.selector),
            (0, 0xffff_ffff, 0x10)
        );
        assert_eq!(
            (code.l, code.db, code.g, code.present, code.s),
            (1, 0, 1, 1, 1)
        );
        assert_eq!(code.type_, 0xb);
        let data = segment_from_gdt(gdt_entry(0xc093, 0, 0xfffff), 3);
        assert_eq!(
            (data.l, data.db, data.type_, data.selector),
            (0, 1, 3, 0x18)
        );
        let tss = segment_from_gdt(gdt_entry(0x008b, 0, 0x67), 4);
        assert_eq!((tss.limit, tss.g, tss.type_, tss.s), (0x67, 0, 0xb, 0));
        assert_eq!(segment_from_gdt(0, 0).unusable, 1);
    }

    #[test]
    fn long_mode_sregs_and_identity_map() {
        let m = mem();
        let s = setup_sregs(&m, EntryMode::Long64(0x100_0000), kvm_sregs::default()).unwrap();
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!(
            (s.cr3, s.cr4, s.efer),
            (PML4_START, CR4_PAE, EFER_LME | EFER_LMA)
        );
        assert_eq!(s.cs.l, 1);
        let pml4: u64 = m.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        // The PD entry mapping 16 MiB (entry 8) points at 16 MiB, 2 MiB page, present, writable.
        let pde8: u64 = m.read_obj(GuestAddress(PDE_START + 8 * 8)).unwrap();
        assert_eq!(pde8, (8 << 21) | 0x83);
        let gdt2: u64 = m.read_obj(GuestAddress(BOOT_GDT_START + 16)).unwrap();
        assert_eq!(gdt2, gdt_entry(0xa09b, 0, 0xfffff));
    }

    #[test]
    fn pvh_sregs_are_protected_mode_without_paging() {
        let s = setup_sregs(&mem(), EntryMode::Pvh32(0x100_0000), kvm_sregs::default()).unwrap();
        assert_eq!(
            (s.cr0 & CR0_PG, s.cr0 & CR0_PE, s.cr4, s.efer),
            (0, 1, 0, 0)
        );
        assert_eq!((s.cs.db, s.cs.l, s.tr.selector), (1, 0, 0x20));
        let r = boot_regs(EntryMode::Pvh32(0x1234));
        assert_eq!((r.rip, r.rbx, r.rflags), (0x1234, PVH_INFO_START, 2));
    }

    #[test]
    fn too_small_memory_is_an_error_not_a_panic() {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        assert!(setup_sregs(&m, EntryMode::Long64(0), kvm_sregs::default()).is_err());
    }

    #[test]
    fn lint_modes() {
        let mut l = kvm_bindings::kvm_lapic_state::default();
        set_lint(&mut l);
        assert_eq!(l.regs[0x351] as u8 & 7, 7);
        assert_eq!(l.regs[0x361] as u8 & 7, 4);
    }
}
