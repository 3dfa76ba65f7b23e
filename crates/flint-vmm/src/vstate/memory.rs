//! Guest RAM: host mappings laid out around the 32-bit MMIO hole: anonymous memory, or (when a
//! vhost-user backend such as virtiofsd must map it too) one shared memfd.

use std::sync::Arc;

use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::arch::x86_64::layout::{MMIO32_END, MMIO32_START};

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error(
        "cannot map {mib} MiB of guest memory (try a smaller --memory, or check the host's \
         free memory and overcommit settings)"
    )]
    Map {
        mib: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("guest memory size {mib} MiB is too large for this host's address space")]
    TooLarge { mib: u64 },
    #[error("cannot keep guest memory out of core dumps (madvise MADV_DONTDUMP)")]
    DontDump(#[source] std::io::Error),
    #[error("cannot make a shareable memory file of {mib} MiB for the guest (memfd)")]
    Memfd {
        mib: u64,
        #[source]
        source: std::io::Error,
    },
}

/// The RAM ranges (guest address, length) for `size` bytes of guest memory: everything below the
/// MMIO hole first, the rest from 4 GiB up.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, u64)> {
    if size <= MMIO32_START {
        vec![(GuestAddress(0), size)]
    } else {
        vec![
            (GuestAddress(0), MMIO32_START),
            (GuestAddress(MMIO32_END), size - MMIO32_START),
        ]
    }
}

/// Allocates `mib` MiB of guest RAM. Pages are mapped lazily (MAP_NORESERVE), so untouched guest
/// memory costs the host nothing. Zero is refused by config validation, and here by the host
/// (no empty mapping). The guest's memory is left out of any core dump of flint: it is the
/// guest's, not flint's, and may hold its secrets.
///
/// With `shareable`, the RAM is one memfd mapped MAP_SHARED, region by region at its guest
/// offset, so that a vhost-user backend given the descriptor sees the same pages; untouched
/// pages still cost nothing (a memfd is sparse).
pub fn create_guest_memory(mib: u64, shareable: bool) -> Result<GuestMemoryMmap, MemoryError> {
    let size = mib
        .checked_mul(1 << 20)
        .ok_or(MemoryError::TooLarge { mib })?;
    // The top must stay addressable by the guest's physical address width and by usize.
    if size.checked_add(MMIO32_END - MMIO32_START).is_none() || usize::try_from(size).is_err() {
        return Err(MemoryError::TooLarge { mib });
    }
    let ranges = ram_ranges(size)
        .into_iter()
        .map(|(a, l)| usize::try_from(l).map(|l| (a, l)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| MemoryError::TooLarge { mib })?;
    let mem = if shareable {
        let file = Arc::new(memfd(size).map_err(|source| MemoryError::Memfd { mib, source })?);
        let mut offset = 0u64;
        let mut with_files = Vec::with_capacity(ranges.len());
        for (addr, len) in ranges {
            with_files.push((addr, len, Some(FileOffset::from_arc(file.clone(), offset))));
            offset += len as u64; // the ranges add up to `size`, a u64
        }
        GuestMemoryMmap::from_ranges_with_files(&with_files)
            .map_err(|source| MemoryError::Map { mib, source })?
    } else {
        GuestMemoryMmap::from_ranges(&ranges).map_err(|source| MemoryError::Map { mib, source })?
    };
    for region in mem.iter() {
        // SAFETY: the range is exactly one mapping vm-memory made and owns; MADV_DONTDUMP only
        // sets a flag on it and never changes its contents.
        let r =
            unsafe { libc::madvise(region.as_ptr().cast(), region.size(), libc::MADV_DONTDUMP) };
        if r != 0 {
            return Err(MemoryError::DontDump(std::io::Error::last_os_error()));
        }
    }
    Ok(mem)
}

/// An empty memfd of `size` bytes (sparse: no page is allocated until written).
fn memfd(size: u64) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: the name is a NUL-terminated string; the result is checked.
    let fd = unsafe { libc::memfd_create(c"flint-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.set_len(size)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryRegion};

    #[test]
    fn small_memory_is_one_region() {
        let m = create_guest_memory(128, false).unwrap();
        assert_eq!(m.num_regions(), 1);
        assert_eq!(m.last_addr(), GuestAddress((128 << 20) - 1));
    }

    #[test]
    fn large_memory_skips_the_mmio_hole() {
        assert_eq!(
            ram_ranges(4 << 30),
            vec![(GuestAddress(0), 3 << 30), (GuestAddress(4 << 30), 1 << 30)]
        );
        let m = create_guest_memory(4096, false).unwrap();
        let regions: Vec<_> = m.iter().map(|r| (r.start_addr().0, r.len())).collect();
        assert_eq!(regions, vec![(0, 3 << 30), (4 << 30, 1 << 30)]);
        assert!(m.find_region(GuestAddress(MMIO32_START)).is_none());
    }

    #[test]
    fn shareable_memory_is_one_memfd_at_each_region_s_guest_offset() {
        let m = create_guest_memory(4096, true).unwrap();
        let regions: Vec<_> = m
            .iter()
            .map(|r| r.file_offset().map(|f| f.start()))
            .collect();
        assert_eq!(regions, vec![Some(0), Some(3 << 30)]);
        // The same pages through the file: what a vhost-user backend maps.
        m.write_obj(0x1234_5678u32, GuestAddress(4 << 30)).unwrap();
        let f = m.iter().nth(1).unwrap().file_offset().unwrap().file();
        let mut buf = [0u8; 4];
        std::os::unix::fs::FileExt::read_exact_at(f, &mut buf, 3 << 30).unwrap();
        assert_eq!(u32::from_le_bytes(buf), 0x1234_5678);
    }

    #[test]
    fn zero_and_absurd_sizes_are_errors() {
        assert!(matches!(
            create_guest_memory(0, false),
            Err(MemoryError::Map { .. })
        ));
        assert!(matches!(
            create_guest_memory(u64::MAX / 2, false),
            Err(MemoryError::TooLarge { .. })
        ));
        // Bigger than any host can map: a clean error, not a panic or abort.
        assert!(create_guest_memory(1 << 40, false).is_err());
    }
}
