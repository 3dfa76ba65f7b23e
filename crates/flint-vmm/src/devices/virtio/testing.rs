//! Test support: a split virtqueue in guest memory that tests drive like a guest driver would.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::net::Backend;

/// Descriptor flags as the u16 the descriptor table holds (virtio-bindings has them as u32;
/// both are single low bits, 1 and 2).
#[allow(clippy::cast_possible_truncation)]
pub const F_NEXT: u16 = VRING_DESC_F_NEXT as u16;
#[allow(clippy::cast_possible_truncation)]
pub const F_WRITE: u16 = VRING_DESC_F_WRITE as u16;
#[allow(clippy::cast_possible_truncation)]
pub const F_INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

/// Writes raw descriptors (addr, len, flags, next) one after the other from `at`: a ring's
/// descriptor table, or an indirect table anywhere in guest memory.
pub fn write_descriptors(mem: &GuestMemoryMmap, at: GuestAddress, descs: &[(u64, u32, u16, u16)]) {
    for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
        let d = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next));
        mem.write_obj(d, at.unchecked_add(16 * i as u64)).unwrap();
    }
}

pub struct TestQueue {
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
    size: u16,
    next_desc: u16,
    next_avail: u16,
}

impl TestQueue {
    /// A queue of `size` entries at `base`, and the device-side `Queue` for it. The rings are
    /// laid out here, one after the other, zeroed: virtio-queue 0.18's `MockSplitQueue` puts the
    /// used ring inside the avail ring of a queue of more than a few entries.
    pub fn new(mem: &GuestMemoryMmap, base: GuestAddress, size: u16) -> (TestQueue, Queue) {
        let n = u64::from(size);
        let desc = base;
        let avail = desc.unchecked_add(16 * n);
        // flags, idx, ring, used_event; the used ring is 4-aligned.
        let used = GuestAddress((avail.0 + 6 + 2 * n + 3) & !3);
        let end = used.0 + 6 + 8 * n;
        let len = usize::try_from(end - base.0).unwrap();
        mem.write_slice(&vec![0u8; len], base).unwrap();
        let mut queue = Queue::new(size).unwrap();
        queue.try_set_desc_table_address(desc).unwrap();
        queue.try_set_avail_ring_address(avail).unwrap();
        queue.try_set_used_ring_address(used).unwrap();
        queue.set_ready(true);
        assert!(queue.is_valid(mem));
        let tq = TestQueue {
            desc,
            avail,
            used,
            size,
            next_desc: 0,
            next_avail: 0,
        };
        (tq, queue)
    }

    /// Where the avail ring is (a test may aim a device-writable buffer at it).
    pub fn avail_addr(&self) -> GuestAddress {
        self.avail
    }

    /// Makes the chain at `head` available without touching the index: with
    /// [`TestQueue::set_avail_idx`], a driver that re-posts faster than the device serves.
    pub fn put_avail_entry(&self, mem: &GuestMemoryMmap, n: u16, head: u16) {
        let slot = u64::from(n % self.size);
        mem.write_obj(head, self.avail.unchecked_add(4 + 2 * slot))
            .unwrap();
    }

    /// Puts raw descriptors (addr, len, flags, next) in the table; returns the first's index.
    pub fn put_raw(&mut self, mem: &GuestMemoryMmap, descs: &[(u64, u32, u16, u16)]) -> u16 {
        let head = self.next_desc;
        assert!(
            head as usize + descs.len() <= self.size as usize,
            "descriptor table full"
        );
        write_descriptors(mem, self.desc.unchecked_add(16 * head as u64), descs);
        self.next_desc += u16::try_from(descs.len()).unwrap();
        head
    }

    /// Puts a chain (addr, len, flags) with its NEXT links filled in; returns its head.
    pub fn put_chain(&mut self, mem: &GuestMemoryMmap, descs: &[(u64, u32, u16)]) -> u16 {
        let base = self.next_desc;
        let raw: Vec<_> = descs
            .iter()
            .enumerate()
            .map(|(i, &(a, l, f))| {
                if i + 1 < descs.len() {
                    (a, l, f | F_NEXT, base + u16::try_from(i).unwrap() + 1)
                } else {
                    (a, l, f, 0)
                }
            })
            .collect();
        self.put_raw(mem, &raw)
    }

    /// Makes the chain at `head` available to the device.
    pub fn make_available(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = (self.next_avail % self.size) as u64;
        mem.write_obj(head, self.avail.unchecked_add(4 + 2 * slot))
            .unwrap();
        self.next_avail += 1;
        self.set_avail_idx(mem, self.next_avail);
    }

    pub fn set_avail_idx(&self, mem: &GuestMemoryMmap, idx: u16) {
        mem.write_obj(idx, self.avail.unchecked_add(2)).unwrap();
    }

    pub fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(self.used.unchecked_add(2)).unwrap()
    }

    /// The used ring entry `n` (counting from 0 since the start): (descriptor head, length).
    pub fn used(&self, mem: &GuestMemoryMmap, n: u16) -> (u32, u32) {
        let elem = self.used.unchecked_add(4 + 8 * (n % self.size) as u64);
        (
            mem.read_obj(elem).unwrap(),
            mem.read_obj(elem.unchecked_add(4)).unwrap(),
        )
    }

    /// `avail_event` (after the used ring): with EVENT_IDX, the driver kicks when its avail
    /// index moves past this.
    pub fn avail_event(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(self.used.unchecked_add(4 + 8 * self.size as u64))
            .unwrap()
    }

    /// Chains the device completed can be reused: start filling the table from the top again.
    pub fn recycle(&mut self) {
        self.next_desc = 0;
    }

    pub fn made_available(&self) -> u16 {
        self.next_avail
    }

    /// The index the next chain put in the table starts at.
    pub fn next_desc(&self) -> u16 {
        self.next_desc
    }
}

/// A connected, non-blocking SOCK_SEQPACKET pair: it keeps frame boundaries like a TAP does.
pub fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two new descriptors into `fds`.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A net backend on one end of a socket pair, without offloads: a TAP for tests.
pub struct SocketBackend(pub OwnedFd);

impl Backend for SocketBackend {
    fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
    fn supports_offloads(&self) -> bool {
        false
    }
    fn set_offload(&self, _: u32) -> std::io::Result<()> {
        Ok(())
    }
}

/// A socket-pair backend that claims the checksum and TSO offloads, as most TAPs do.
pub struct OffloadSocketBackend(pub OwnedFd);

impl Backend for OffloadSocketBackend {
    fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
    fn supports_offloads(&self) -> bool {
        true
    }
    fn set_offload(&self, _: u32) -> std::io::Result<()> {
        Ok(())
    }
}
