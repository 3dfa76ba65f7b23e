//! Guest RAM: anonymous host mappings laid out around the 32-bit MMIO hole.

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

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
pub fn create_guest_memory(mib: u64) -> Result<GuestMemoryMmap, MemoryError> {
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
    let mem =
        GuestMemoryMmap::from_ranges(&ranges).map_err(|source| MemoryError::Map { mib, source })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryRegion;

    #[test]
    fn small_memory_is_one_region() {
        let m = create_guest_memory(128).unwrap();
        assert_eq!(m.num_regions(), 1);
        assert_eq!(m.last_addr(), GuestAddress((128 << 20) - 1));
    }

    #[test]
    fn large_memory_skips_the_mmio_hole() {
        assert_eq!(
            ram_ranges(4 << 30),
            vec![(GuestAddress(0), 3 << 30), (GuestAddress(4 << 30), 1 << 30)]
        );
        let m = create_guest_memory(4096).unwrap();
        let regions: Vec<_> = m.iter().map(|r| (r.start_addr().0, r.len())).collect();
        assert_eq!(regions, vec![(0, 3 << 30), (4 << 30, 1 << 30)]);
        assert!(m.find_region(GuestAddress(MMIO32_START)).is_none());
    }

    #[test]
    fn zero_and_absurd_sizes_are_errors() {
        assert!(matches!(
            create_guest_memory(0),
            Err(MemoryError::Map { .. })
        ));
        assert!(matches!(
            create_guest_memory(u64::MAX / 2),
            Err(MemoryError::TooLarge { .. })
        ));
        // Bigger than any host can map: a clean error, not a panic or abort.
        assert!(create_guest_memory(1 << 40).is_err());
    }
}
