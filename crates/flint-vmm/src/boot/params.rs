//! The guest's memory map (e820) and the two boot-parameter blocks: Linux's zero page and
//! PVH's `hvm_start_info`.

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::layout::*;
use crate::vstate::memory::ram_ranges;

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x100_0000;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// One e820 entry: (start, length, type).
pub type E820Entry = (u64, u64, u32);

/// The memory map for `mem_size` bytes of RAM: conventional memory up to the EBDA (the MP table
/// lives there, reserved), the legacy hole up to 1 MiB, RAM to the MMIO hole, and RAM above 4 GiB.
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, LEGACY_HOLE_START - EBDA_START, E820_RESERVED),
    ];
    for (start, len) in ram_ranges(mem_size) {
        let (start, end) = (start.0.max(HIMEM_START), start.0 + len);
        if end > start {
            map.push((start, end - start, E820_RAM));
        }
    }
    map
}

#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error("too many memory map entries")]
    TooManyE820Entries,
    #[error(
        "the initrd at {addr:#x} ({size} bytes) is beyond the 4 GiB the zero page can describe"
    )]
    InitrdAbove4G { addr: u64, size: u64 },
    #[error("writing the boot parameters into guest memory failed")]
    Write(#[source] linux_loader::configurator::Error),
}

pub struct Initrd {
    pub addr: u64,
    pub size: u64,
}

/// Writes Linux's zero page. `hdr` is the bzImage's own setup header, or `None` for an ELF;
/// `rsdp` is the ACPI RSDP's address, if the VM has ACPI tables.
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    hdr: Option<setup_header>,
    e820: &[E820Entry],
    cmdline_size: usize,
    initrd: Option<&Initrd>,
    rsdp: Option<u64>,
) -> Result<(), ParamsError> {
    let mut params = boot_params {
        acpi_rsdp_addr: rsdp.unwrap_or(0),
        ..Default::default()
    };
    if let Some(h) = hdr {
        params.hdr = h;
    } else {
        params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        params.hdr.header = KERNEL_HDR_MAGIC;
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = low32(CMDLINE_START);
    // At most the command line area (below 1 MiB), by the caller's cap.
    params.hdr.cmdline_size = u32::try_from(cmdline_size).unwrap_or(u32::MAX);
    if let Some(i) = initrd {
        let too_high = || ParamsError::InitrdAbove4G {
            addr: i.addr,
            size: i.size,
        };
        params.hdr.ramdisk_image = u32::try_from(i.addr).map_err(|_| too_high())?;
        params.hdr.ramdisk_size = u32::try_from(i.size).map_err(|_| too_high())?;
    }
    if e820.len() > params.e820_table.len() {
        return Err(ParamsError::TooManyE820Entries);
    }
    for (slot, &(addr, size, type_)) in params.e820_table.iter_mut().zip(e820) {
        *slot = boot_e820_entry {
            addr,
            size,
            r#type: type_,
        };
    }
    params.e820_entries = u8::try_from(e820.len()).map_err(|_| ParamsError::TooManyE820Entries)?;
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE_START)),
        mem,
    )
    .map_err(ParamsError::Write)
}

/// Writes the PVH start info, its memory map and (for an initrd) its module list; `rsdp` is
/// the ACPI RSDP's address, if the VM has ACPI tables.
pub fn write_pvh_start_info(
    mem: &GuestMemoryMmap,
    e820: &[E820Entry],
    initrd: Option<&Initrd>,
    rsdp: Option<u64>,
) -> Result<(), ParamsError> {
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        rsdp_paddr: rsdp.unwrap_or(0),
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: u32::try_from(e820.len()).map_err(|_| ParamsError::TooManyE820Entries)?,
        ..Default::default()
    };
    let memmap: Vec<hvm_memmap_table_entry> = e820
        .iter()
        .map(|&(addr, size, type_)| hvm_memmap_table_entry {
            addr,
            size,
            type_,
            reserved: 0,
        })
        .collect();
    let memmap_end =
        PVH_MEMMAP_START + (memmap.len() * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
    if memmap_end > ZERO_PAGE_START {
        return Err(ParamsError::TooManyE820Entries);
    }
    let mut params = BootParams::new(&info, GuestAddress(PVH_INFO_START));
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP_START));
    if let Some(i) = initrd {
        // The module list goes right after the memory map.
        info.nr_modules = 1;
        info.modlist_paddr = memmap_end;
        params = BootParams::new(&info, GuestAddress(PVH_INFO_START));
        params.set_sections(&memmap, GuestAddress(PVH_MEMMAP_START));
        let module = hvm_modlist_entry {
            paddr: i.addr,
            size: i.size,
            ..Default::default()
        };
        params.set_modules(&[module], GuestAddress(memmap_end));
    }
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
        .map_err(ParamsError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn e820_small_and_large() {
        assert_eq!(
            e820_map(128 << 20),
            vec![
                (0, EBDA_START, E820_RAM),
                (EBDA_START, 0x400, E820_RESERVED),
                (HIMEM_START, (128 << 20) - HIMEM_START, E820_RAM),
            ]
        );
        let big = e820_map(5 << 30);
        assert_eq!(big[2], (HIMEM_START, MMIO32_START - HIMEM_START, E820_RAM));
        assert_eq!(big[3], (MMIO32_END, (5 << 30) - MMIO32_START, E820_RAM));
        // Nothing in the map overlaps the MMIO hole.
        assert!(big
            .iter()
            .all(|&(s, l, _)| s + l <= MMIO32_START || s >= MMIO32_END));
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap()
    }

    #[test]
    fn zero_page_fields() {
        let m = mem();
        let e820 = e820_map(0x20_0000);
        let initrd = Initrd {
            addr: 0x10_0000,
            size: 0x1234,
        };
        write_zero_page(&m, None, &e820, 2048, Some(&initrd), Some(0xe_0000)).unwrap();
        let p: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ p.acpi_rsdp_addr }, 0xe_0000);
        assert_eq!({ p.hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!(u64::from(p.hdr.cmd_line_ptr), CMDLINE_START);
        assert_eq!({ p.hdr.ramdisk_image }, 0x10_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 0x1234);
        assert_eq!(p.e820_entries, 3);
        assert_eq!({ p.e820_table[2].addr }, HIMEM_START);
    }

    #[test]
    fn pvh_start_info_fields() {
        let m = mem();
        let e820 = e820_map(0x20_0000);
        let initrd = Initrd {
            addr: 0x18_0000,
            size: 77,
        };
        write_pvh_start_info(&m, &e820, Some(&initrd), Some(0xe_0000)).unwrap();
        let info: hvm_start_info = m.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!({ info.rsdp_paddr }, 0xe_0000);
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(info.memmap_entries, 3);
        assert_eq!(info.nr_modules, 1);
        let e: hvm_memmap_table_entry = m.read_obj(GuestAddress(PVH_MEMMAP_START + 48)).unwrap();
        assert_eq!((e.addr, e.type_), (HIMEM_START, E820_RAM));
        let module: hvm_modlist_entry = m.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!((module.paddr, module.size), (0x18_0000, 77));
    }
}
