//! A snapshot's memory file: guest RAM regions back to back, only non-zero pages written.

use std::fs::File;
use std::os::unix::fs::FileExt;

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MemoryRegionAddress,
};

use super::{MemoryRange, SnapshotError};

const PAGE: usize = 4096;

/// What writing the memory file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Bytes of pages written (the file's allocated size, roughly).
    pub data: u64,
    /// The file's length (the guest's RAM size).
    pub len: u64,
}

/// Writes guest RAM into `file` (truncated first): each region at its offset, all-zero pages
/// left as holes; then makes it durable. Returns the layout and what was written.
pub fn save(
    mem: &GuestMemoryMmap,
    file: &File,
) -> Result<(Vec<MemoryRange>, Written), SnapshotError> {
    let io = |what| move |e| SnapshotError::Io(what, e);
    let mut ranges = Vec::new();
    let mut offset = 0u64;
    for region in mem.iter() {
        ranges.push(MemoryRange {
            guest_addr: region.start_addr().0,
            len: region.len(),
            file_offset: offset,
        });
        offset += region.len();
    }
    // Truncating to 0 first drops any old contents: what is not written below is a hole.
    file.set_len(0).map_err(io("truncating the memory file"))?;
    file.set_len(offset).map_err(io("sizing the memory file"))?;
    let mut data = 0u64;
    let mut page = [0u8; PAGE];
    for (region, range) in mem.iter().zip(&ranges) {
        let resident = resident_pages(region);
        let pages = region.len() / PAGE as u64;
        for p in 0..pages {
            if let Some(r) = &resident {
                // Never touched: it reads as zeros, a hole in the file.
                if r.get(usize::try_from(p).unwrap_or(usize::MAX))
                    .is_some_and(|b| b & 1 == 0)
                {
                    continue;
                }
            }
            let at = p * PAGE as u64;
            region
                .read_slice(&mut page, MemoryRegionAddress(at))
                .map_err(|e| SnapshotError::Io("reading guest memory", std::io::Error::other(e)))?;
            if is_zero(&page) {
                continue;
            }
            file.write_all_at(&page, range.file_offset + at)
                .map_err(io("writing the memory file"))?;
            data += PAGE as u64;
        }
    }
    file.sync_all().map_err(io("syncing the memory file"))?;
    Ok((ranges, Written { data, len: offset }))
}

fn is_zero(page: &[u8; PAGE]) -> bool {
    // Eight bytes at a time: scanning resident pages is most of a large guest's capture.
    page.chunks_exact(8).all(|w| w == [0u8; 8])
}

/// For guest RAM that is anonymous memory (a booted VM's), which pages were ever touched
/// (`mincore`: an untouched anonymous page is not resident, and reads as zeros). None for
/// memory mapped from a file (a restored VM's), where a page not resident may still hold data.
fn resident_pages(region: &GuestRegionMmap) -> Option<Vec<u8>> {
    if region.file_offset().is_some() {
        return None;
    }
    let len = region.size();
    let mut vec = vec![0u8; len.div_ceil(PAGE)];
    // SAFETY: the range is one whole mapping vm-memory made (page-aligned); mincore writes one
    // byte per page of it into `vec`, which has that many.
    let r = unsafe { libc::mincore(region.as_ptr().cast(), len, vec.as_mut_ptr()) };
    (r == 0).then_some(vec)
}

/// Guest RAM mapped copy-on-write from the memory file: the guest's writes stay in this
/// process, the file is never changed, and pages are read only when the guest touches them.
pub fn map(file: &File, ranges: &[MemoryRange]) -> Result<GuestMemoryMmap, SnapshotError> {
    let expected = ranges
        .iter()
        .try_fold(0u64, |acc, r| acc.checked_add(r.len))
        .ok_or_else(|| SnapshotError::Mismatch("the snapshot's memory layout overflows".into()))?;
    let found = file
        .metadata()
        .map_err(|e| SnapshotError::Io("reading the memory file's size", e))?
        .len();
    if found != expected {
        return Err(SnapshotError::MemorySize { found, expected });
    }
    let mut regions = Vec::new();
    for r in ranges {
        let bad = || SnapshotError::Mismatch(format!("a bad memory range in the snapshot: {r:?}"));
        let len = usize::try_from(r.len).map_err(|_| bad())?;
        let end = r.file_offset.checked_add(r.len).ok_or_else(bad)?;
        if end > found || r.len == 0 {
            return Err(bad());
        }
        let dup = file
            .try_clone()
            .map_err(|e| SnapshotError::Io("dup of the memory file", e))?;
        let mapping = MmapRegionBuilder::new(len)
            .with_file_offset(FileOffset::new(dup, r.file_offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| SnapshotError::Io("mapping the memory file", std::io::Error::other(e)))?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(r.guest_addr)).ok_or_else(bad)?;
        regions.push(region);
    }
    let mem = GuestMemoryMmap::from_regions(regions).map_err(|e| {
        SnapshotError::Mismatch(format!("the snapshot's memory regions are invalid: {e}"))
    })?;
    for region in mem.iter() {
        // SAFETY: as at build time (vstate::memory): one mapping vm-memory owns; only a flag.
        let r =
            unsafe { libc::madvise(region.as_ptr().cast(), region.size(), libc::MADV_DONTDUMP) };
        if r != 0 {
            return Err(SnapshotError::Io(
                "madvise MADV_DONTDUMP",
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(mem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_non_zero_pages_are_written_and_a_mapping_reads_them_back() {
        let mem = crate::vstate::memory::create_guest_memory(4, false).unwrap();
        mem.write_slice(b"hello", GuestAddress(0x1000)).unwrap();
        mem.write_slice(&[7u8; 10], GuestAddress(0x1f_fffa))
            .unwrap();
        let path = std::env::temp_dir().join(format!("flint-mem-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let (ranges, written) = save(&mem, &file).unwrap();
        assert_eq!(written.len, 4 << 20);
        assert_eq!(
            written.data,
            3 * PAGE as u64,
            "one page, and two across a boundary"
        );
        use std::os::unix::fs::MetadataExt;
        assert!(
            file.metadata().unwrap().blocks() * 512 < 64 * 1024,
            "holes elsewhere"
        );

        let restored = map(&file, &ranges).unwrap();
        let mut b = [0u8; 5];
        restored.read_slice(&mut b, GuestAddress(0x1000)).unwrap();
        assert_eq!(&b, b"hello");
        // Copy-on-write: the guest's writes never reach the file.
        restored
            .write_slice(b"HELLO", GuestAddress(0x1000))
            .unwrap();
        let mut f = [0u8; 5];
        file.read_exact_at(&mut f, 0x1000).unwrap();
        assert_eq!(&f, b"hello");

        // A restored guest's memory (file-backed) saves again: its pages from the file
        // and its own writes, untouched pages still holes.
        let path2 = path.with_extension("2");
        let file2 = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path2)
            .unwrap();
        let (_, written2) = save(&restored, &file2).unwrap();
        assert_eq!(written2.data, 3 * PAGE as u64);
        let mut g = [0u8; 5];
        file2.read_exact_at(&mut g, 0x1000).unwrap();
        assert_eq!(&g, b"HELLO");
        std::fs::remove_file(&path2).unwrap();

        // A memory file of another size is refused.
        file.set_len(1 << 20).unwrap();
        assert!(matches!(
            map(&file, &ranges),
            Err(SnapshotError::MemorySize { .. })
        ));
        std::fs::remove_file(&path).unwrap();
    }
}
