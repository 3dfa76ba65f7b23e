//! Loading a kernel, its initrd and its command line into guest memory, and writing the boot
//! parameters for the entry point the kernel supports (PVH when its ELF note says so, else the
//! 64-bit Linux boot protocol).

pub mod kernel;
pub mod params;

use std::fs::File;

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{load_cmdline, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::layout::*;
use crate::arch::x86_64::regs::EntryMode;
pub use kernel::{KernelFormat, KernelInfo};
use params::Initrd;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot load the kernel (is guest memory large enough for it?)")]
    Load(#[source] linux_loader::loader::Error),
    #[error("the kernel command line is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("the kernel command line is not valid: {0}")]
    CmdlineInvalid(linux_loader::cmdline::Error),
    #[error(
        "the initrd ({size} bytes) does not fit in guest memory between the kernel's end \
         ({kernel_end:#x}) and {limit:#x}: give the VM more --memory"
    )]
    InitrdDoesNotFit {
        size: u64,
        kernel_end: u64,
        limit: u64,
    },
    #[error("cannot read the initrd")]
    InitrdRead(#[source] std::io::Error),
    #[error("cannot copy the initrd into guest memory")]
    InitrdCopy(#[source] vm_memory::GuestMemoryError),
    #[error(transparent)]
    Params(#[from] params::ParamsError),
}

/// What `load` did: where the boot vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub entry: EntryMode,
}

/// Offset of the 64-bit entry point from where a bzImage's protected-mode code is loaded.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// Highest initrd address for kernels that do not say (the boot protocol's historical default
/// is lower, but every 64-bit kernel accepts up to 2 GiB).
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x7fff_ffff;

/// Room for the command line in the layout: from CMDLINE_START up to the EBDA.
const CMDLINE_AREA: usize = 0x7_fc00;
const _: () = assert!(CMDLINE_START + CMDLINE_AREA as u64 == EBDA_START);

/// The command line capacity (bytes, NUL included) a kernel accepts.
fn cmdline_capacity(hdr: Option<&linux_loader::loader::bootparam::setup_header>) -> usize {
    match hdr.map(|h| h.cmdline_size as usize) {
        // `cmdline_size` excludes the NUL; keep within the space reserved for it in the layout.
        Some(n) if n > 0 => n.saturating_add(1).min(CMDLINE_AREA),
        _ => CMDLINE_MAX_SIZE,
    }
}

pub fn load(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel: &mut File,
    info: KernelInfo,
    initrd: Option<InitrdImage>,
    cmdline: &str,
) -> Result<Loaded, BootError> {
    let himem = Some(GuestAddress(HIMEM_START));
    let result = match info.format {
        KernelFormat::Elf => Elf::load(mem, None, kernel, himem),
        KernelFormat::BzImage => BzImage::load(mem, None, kernel, himem),
    }
    .map_err(BootError::Load)?;
    let hdr = result.setup_header;

    // Command line: validated against what this kernel accepts.
    let capacity = cmdline_capacity(hdr.as_ref());
    if cmdline.len() + 1 > capacity {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max: capacity - 1,
        });
    }
    let cl = Cmdline::try_from(cmdline, capacity).map_err(BootError::CmdlineInvalid)?;
    load_cmdline(mem, GuestAddress(CMDLINE_START), &cl).map_err(BootError::Load)?;

    // Everything up to here is taken by the kernel (and, for a bzImage, by its decompression).
    let mut kernel_end = result.kernel_end;
    if let Some(h) = &hdr {
        let extract_at = result.kernel_load.0.max(h.pref_address);
        // Both come from the kernel file: an absurd sum means nothing fits after the kernel.
        kernel_end = kernel_end.max(extract_at.saturating_add(u64::from(h.init_size)));
    }
    let initrd_addr_max = hdr
        .map(|h| u64::from(h.initrd_addr_max))
        .filter(|&m| m > 0)
        .unwrap_or(DEFAULT_INITRD_ADDR_MAX);
    let initrd = match initrd {
        Some(image) => Some(load_initrd(
            mem,
            mem_size,
            image,
            kernel_end,
            initrd_addr_max,
        )?),
        None => None,
    };

    let e820 = params::e820_map(mem_size);
    let entry = match (info.format, result.pvh_boot_cap) {
        (KernelFormat::Elf, PvhBootCapability::PvhEntryPresent(addr)) => {
            params::write_pvh_start_info(mem, &e820, initrd.as_ref())?;
            EntryMode::Pvh32(addr.0)
        }
        (KernelFormat::Elf, _) => {
            params::write_zero_page(mem, None, &e820, capacity - 1, initrd.as_ref())?;
            EntryMode::Long64(result.kernel_load.0)
        }
        (KernelFormat::BzImage, _) => {
            params::write_zero_page(mem, hdr, &e820, capacity - 1, initrd.as_ref())?;
            EntryMode::Long64(result.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET)
        }
    };
    Ok(Loaded { entry })
}

/// Where the initrd's bytes come from.
pub enum InitrdImage<'a> {
    File(&'a mut File),
    Bytes(&'a [u8]),
}

/// Puts the initrd as high in low memory as the kernel allows, page-aligned, above the kernel.
fn load_initrd(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    image: InitrdImage,
    kernel_end: u64,
    initrd_addr_max: u64,
) -> Result<Initrd, BootError> {
    let size = match &image {
        InitrdImage::File(f) => f.metadata().map_err(BootError::InitrdRead)?.len(),
        InitrdImage::Bytes(b) => b.len() as u64,
    };
    let limit = mem_size
        .min(MMIO32_START)
        .min(initrd_addr_max.saturating_add(1));
    let addr = limit.checked_sub(size).map(|a| a & !0xfff);
    let does_not_fit = || BootError::InitrdDoesNotFit {
        size,
        kernel_end,
        limit,
    };
    let addr = match addr {
        Some(a) if a >= kernel_end && a >= HIMEM_START && size > 0 => a,
        _ => return Err(does_not_fit()),
    };
    // Below 4 GiB by now; a host whose usize is narrower could still not hold it.
    let len = usize::try_from(size).map_err(|_| does_not_fit())?;
    match image {
        InitrdImage::File(file) => {
            use std::io::{Seek, SeekFrom};
            file.seek(SeekFrom::Start(0))
                .map_err(BootError::InitrdRead)?;
            mem.read_exact_volatile_from(GuestAddress(addr), file, len)
        }
        InitrdImage::Bytes(mut bytes) => {
            mem.read_exact_volatile_from(GuestAddress(addr), &mut bytes, len)
        }
    }
    .map_err(BootError::InitrdCopy)?;
    Ok(Initrd { addr, size })
}
