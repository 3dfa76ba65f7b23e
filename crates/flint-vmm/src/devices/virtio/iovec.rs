//! Guest buffers as host `iovec`s, for one vectored syscall straight to or from guest memory
//! (virtio-blk's preadv/pwritev, virtio-net's writev).
//!
//! Every buffer is checked to lie in guest RAM, and the total length is bounded, before any
//! iovec exists; the iovecs cannot outlive the guest memory they point into.

use vm_memory::volatile_memory::PtrGuardMut;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Why a buffer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IovecError {
    /// The buffers add up to more than the limit.
    TooLong,
    /// The buffer is not contiguous guest RAM.
    NotInMemory,
}

/// Host iovecs for guest buffers, each checked to lie in guest RAM, totalling at most `limit`
/// bytes.
pub struct GuestIovecs<'a> {
    iov: Vec<libc::iovec>,
    /// Keep the host pointers valid (a no-op for plain mmap'd RAM) while the iovecs exist.
    _guards: Vec<PtrGuardMut>,
    total: usize,
    limit: usize,
    /// The iovecs hold raw pointers into this memory; the borrow keeps it mapped while they
    /// exist.
    mem: &'a GuestMemoryMmap,
}

impl<'a> GuestIovecs<'a> {
    /// An empty list for buffers in `mem`, refusing more than `limit` bytes in all.
    pub fn new(mem: &'a GuestMemoryMmap, limit: usize) -> Self {
        GuestIovecs {
            iov: Vec::new(),
            _guards: Vec::new(),
            total: 0,
            limit,
            mem,
        }
    }

    /// Adds the guest buffer at `addr`, `len` bytes long (both from a guest descriptor).
    pub fn push(&mut self, addr: GuestAddress, len: u32) -> Result<(), IovecError> {
        let len = usize::try_from(len).map_err(|_| IovecError::TooLong)?;
        let total = self
            .total
            .checked_add(len)
            .filter(|&t| t <= self.limit)
            .ok_or(IovecError::TooLong)?;
        let slice = self
            .mem
            .get_slice(addr, len)
            .map_err(|_| IovecError::NotInMemory)?;
        let guard = slice.ptr_guard_mut();
        self.iov.push(libc::iovec {
            iov_base: guard.as_ptr().cast(),
            iov_len: slice.len(),
        });
        self._guards.push(guard);
        self.total = total;
        Ok(())
    }

    /// Bytes in all the buffers.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The iovecs: each points into guest RAM, valid for reads and writes of its length for as
    /// long as `self` lives.
    pub fn as_slice(&self) -> &[libc::iovec] {
        &self.iov
    }

    /// The iovec count as the vectored syscalls take it.
    pub fn count(&self) -> std::io::Result<libc::c_int> {
        libc::c_int::try_from(self.iov.len())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1_0000)]).unwrap()
    }

    #[test]
    fn buffers_become_iovecs_into_guest_memory() {
        let m = mem();
        m.write_slice(b"abcdef", GuestAddress(0x100)).unwrap();
        let mut v = GuestIovecs::new(&m, 100);
        v.push(GuestAddress(0x100), 3).unwrap();
        v.push(GuestAddress(0x103), 3).unwrap();
        assert_eq!(
            (v.total(), v.count().unwrap(), v.as_slice().len()),
            (6, 2, 2)
        );
        let mut got = Vec::new();
        for iov in v.as_slice() {
            // SAFETY: the iovec points into `m`'s RAM, checked by `push` and still mapped.
            let bytes =
                unsafe { std::slice::from_raw_parts(iov.iov_base.cast::<u8>(), iov.iov_len) };
            got.extend_from_slice(bytes);
        }
        assert_eq!(got, b"abcdef");
    }

    #[test]
    fn the_total_is_bounded_without_overflow() {
        let m = mem();
        let mut v = GuestIovecs::new(&m, 10);
        v.push(GuestAddress(0), 10).unwrap();
        assert_eq!(v.push(GuestAddress(0), 1), Err(IovecError::TooLong));
        let mut v = GuestIovecs::new(&m, usize::MAX);
        v.total = usize::MAX - 1;
        assert_eq!(v.push(GuestAddress(0), u32::MAX), Err(IovecError::TooLong));
        // A refused buffer leaves the list as it was.
        assert_eq!((v.total(), v.as_slice().len()), (usize::MAX - 1, 0));
    }

    #[test]
    fn buffers_outside_guest_ram_are_refused() {
        let m = mem();
        let mut v = GuestIovecs::new(&m, usize::MAX);
        assert_eq!(
            v.push(GuestAddress(0xfff0), 0x20),
            Err(IovecError::NotInMemory)
        );
        assert_eq!(
            v.push(GuestAddress(u64::MAX - 1), 8),
            Err(IovecError::NotInMemory)
        );
        assert_eq!(v.total(), 0);
    }
}
