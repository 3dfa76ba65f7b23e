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
    #[error("the kernel is malformed")]
    Segment(#[from] kernel::SegmentError),
    #[error("the kernel's setup header is malformed: {0}")]
    SetupHeader(&'static str),
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
    rsdp: Option<u64>,
) -> Result<Loaded, BootError> {
    let himem = Some(GuestAddress(HIMEM_START));
    let segments_end = match info.format {
        KernelFormat::Elf => kernel::elf_segments_end(kernel, HIMEM_START)?,
        KernelFormat::BzImage => 0,
    };
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
    let mut kernel_end = result.kernel_end.max(segments_end);
    if let Some(h) = &hdr {
        let extract_at = result.kernel_load.0.max(h.pref_address);
        // Both come from the kernel file.
        let extract_end =
            extract_at
                .checked_add(u64::from(h.init_size))
                .ok_or(BootError::SetupHeader(
                    "pref_address + init_size is past the end of the address space",
                ))?;
        kernel_end = kernel_end.max(extract_end);
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
            params::write_pvh_start_info(mem, &e820, initrd.as_ref(), rsdp)?;
            EntryMode::Pvh32(addr.0)
        }
        (KernelFormat::Elf, _) => {
            params::write_zero_page(mem, None, &e820, capacity - 1, initrd.as_ref(), rsdp)?;
            EntryMode::Long64(result.kernel_load.0)
        }
        (KernelFormat::BzImage, _) => {
            params::write_zero_page(mem, hdr, &e820, capacity - 1, initrd.as_ref(), rsdp)?;
            let entry = result
                .kernel_load
                .0
                .checked_add(BZIMAGE_64BIT_ENTRY_OFFSET)
                .ok_or(BootError::SetupHeader("code32_start is out of range"))?;
            EntryMode::Long64(entry)
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

#[cfg(test)]
mod tests {
    use super::*;
    use kernel::SegmentError;
    use std::io::Write;

    /// (p_type, p_offset, p_paddr, p_filesz, p_memsz)
    type Phdr = (u32, u64, u64, u64, u64);

    /// A little-endian ELF64 executable entering at 1 MiB with these program headers, padded
    /// to `len` bytes.
    fn elf(phdrs: &[Phdr], len: usize) -> Vec<u8> {
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        (f[4], f[5], f[6]) = (2, 1, 1);
        f[16..18].copy_from_slice(&2u16.to_le_bytes());
        f[18..20].copy_from_slice(&0x3eu16.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&HIMEM_START.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&u16::try_from(phdrs.len()).unwrap().to_le_bytes());
        for &(t, offset, paddr, filesz, memsz) in phdrs {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&t.to_le_bytes());
            ph[8..16].copy_from_slice(&offset.to_le_bytes());
            ph[16..24].copy_from_slice(&paddr.to_le_bytes());
            ph[24..32].copy_from_slice(&paddr.to_le_bytes());
            ph[32..40].copy_from_slice(&filesz.to_le_bytes());
            ph[40..48].copy_from_slice(&memsz.to_le_bytes());
            f.extend(ph);
        }
        f.resize(len.max(f.len()), 0x90);
        f
    }

    fn file(name: &str, bytes: &[u8]) -> File {
        let path = std::env::temp_dir().join(format!("flint-boot-{}-{name}", std::process::id()));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        let f = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    const MEM: u64 = 8 << 20;

    fn guest_mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap()
    }

    fn load_elf(name: &str, bytes: &[u8], initrd: Option<&[u8]>) -> Result<Loaded, BootError> {
        let mem = guest_mem();
        let info = KernelInfo {
            format: KernelFormat::Elf,
            is_linux: false,
        };
        let initrd = initrd.map(InitrdImage::Bytes);
        load(&mem, MEM, &mut file(name, bytes), info, initrd, "", None)
    }

    const LOAD: u32 = 1;

    #[test]
    fn a_well_formed_elf_loads() {
        let k = elf(&[(LOAD, 0x1000, HIMEM_START, 0x100, 0x1000)], 0x1100);
        assert!(load_elf("good", &k, Some(&[1; 4096])).is_ok());
    }

    #[test]
    fn segment_sizes_that_overflow_or_lie_are_errors() {
        let bad = |name, ph: Phdr| {
            let k = elf(&[(LOAD, 0x1000, HIMEM_START, 0x100, 0x1000), ph], 0x1100);
            match load_elf(name, &k, None) {
                Err(BootError::Segment(e)) => e,
                other => panic!("{name}: {:?}", other.map(|_| ())),
            }
        };
        // p_offset + p_filesz wraps, or goes past the file's end.
        assert!(matches!(
            bad(
                "offset-wraps",
                (LOAD, u64::MAX - 8, 0x20_0000, 0x100, 0x100)
            ),
            SegmentError::BeyondFile { index: 1, .. }
        ));
        assert!(matches!(
            bad("past-eof", (LOAD, 0x1000, 0x20_0000, 0x1000, 0x1000)),
            SegmentError::BeyondFile { index: 1, .. }
        ));
        // p_paddr + p_memsz wraps (no file bytes: the loader itself would skip it).
        assert!(matches!(
            bad("paddr-wraps", (LOAD, 0, u64::MAX - 0xfff, 0, 0x2000)),
            SegmentError::AddressOverflow { index: 1, .. }
        ));
        assert!(matches!(
            bad("filesz>memsz", (LOAD, 0x1000, 0x20_0000, 0x100, 0x10)),
            SegmentError::FileLargerThanMemory { index: 1, .. }
        ));
        // Over the zero page and command line, which flint writes after loading.
        assert!(matches!(
            bad("low", (LOAD, 0x1000, 0x7000, 0x100, 0x100)),
            SegmentError::BelowHighMemory { index: 1, .. }
        ));
        assert_eq!(
            SegmentError::BeyondFile {
                index: 1,
                offset: 0x1000,
                size: 16,
                file_len: 8
            }
            .to_string(),
            "ELF segment 1: 16 bytes at file offset 0x1000 go past the file's end (8 bytes)"
        );
    }

    #[test]
    fn the_initrd_goes_above_a_segment_without_file_bytes() {
        // A bss-only segment up to 6 MiB: the initrd (1 MiB) cannot go below 6 MiB; in 8 MiB
        // it goes at 7 MiB.
        let bss_end = 6 << 20;
        let k = elf(
            &[
                (LOAD, 0x1000, HIMEM_START, 0x100, 0x1000),
                (LOAD, 0, 0x20_0000, 0, bss_end - 0x20_0000),
            ],
            0x1100,
        );
        let mem = guest_mem();
        let mut f = file("bss", &k);
        assert_eq!(kernel::elf_segments_end(&mut f, HIMEM_START), Ok(bss_end));
        let info = KernelInfo {
            format: KernelFormat::Elf,
            is_linux: false,
        };
        load(
            &mem,
            MEM,
            &mut f,
            info,
            Some(InitrdImage::Bytes(&[7; 1 << 20])),
            "",
            None,
        )
        .unwrap();
        let mut b = [0u8; 1];
        mem.read_slice(&mut b, GuestAddress(bss_end - 1)).unwrap();
        assert_eq!(b[0], 0, "the kernel's bss is not under the initrd");
        // Where it does not fit above the kernel, it is an error, not an overlap.
        let big = vec![7u8; 3 << 20];
        assert!(matches!(
            load_elf("bss-big", &k, Some(&big)),
            Err(BootError::InitrdDoesNotFit { kernel_end, .. }) if kernel_end == bss_end
        ));
    }

    #[test]
    fn a_setup_header_whose_sizes_overflow_is_an_error() {
        // A bzImage: 4 setup sectors + the boot sector, then 4 KiB of "kernel".
        let mut bz = vec![0u8; 5 * 512 + 4096];
        bz[0x1f1] = 4; // setup_sects
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206..0x208].copy_from_slice(&0x20cu16.to_le_bytes()); // version 2.12
        bz[0x211] = 1; // loadflags: LOADED_HIGH
        bz[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
        bz[0x258..0x260].copy_from_slice(&(u64::MAX - 0x1000).to_le_bytes()); // pref_address
        bz[0x260..0x264].copy_from_slice(&0x10_0000u32.to_le_bytes()); // init_size
        let mem = guest_mem();
        let info = KernelInfo {
            format: KernelFormat::BzImage,
            is_linux: true,
        };
        let r = load(&mem, MEM, &mut file("bz", &bz), info, None, "", None);
        assert!(
            matches!(r, Err(BootError::SetupHeader(_))),
            "{:?}",
            r.map(|_| ())
        );
        // The same with a sane pref_address loads.
        bz[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes());
        assert!(load(&mem, MEM, &mut file("bz2", &bz), info, None, "", None).is_ok());
    }
}
