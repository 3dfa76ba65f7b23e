//! virtio-net: the device's worker (`NetWorker`, as `Net::start` makes it for the transport)
//! driven through an RX and a TX queue in guest memory, with one end of a SOCK_SEQPACKET pair
//! as its backend (it keeps frame boundaries, as a TAP does) and the fuzzer as both the guest
//! driver and the host.
//!
//! Input: a config byte (MRG_RXBUF, EVENT_IDX), the two queue sizes, then operations until
//! the input ends: post RX buffers, send a TX chain and kick, the host sends a frame, kick RX,
//! the host drains its end, raw descriptor writes (loops, indirect tables), raw avail entries
//! and indices. Checked: every frame the host receives is at most MAX_FRAME_LEN, no used RX
//! entry claims more than MAX_FRAME_LEN bytes, TX completions carry length 0.
#![no_main]

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, OnceLock};

use flint_fuzz::{clear, guest_memory, ring_bytes, Input, Ring, F_INDIRECT, F_NEXT, F_WRITE};
use flint_vmm::devices::virtio::net::{
    Mac, Net, MAX_FRAME_LEN, VIRTIO_NET_F_MRG_RXBUF, VNET_HDR_LEN,
};
use flint_vmm::devices::virtio::testing::{seqpacket_pair, SocketBackend};
use flint_vmm::devices::virtio::{
    ActivateContext, Interrupt, IrqLine, QueueWorker, Served, VirtioDevice, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// Guest RAM: 256 KiB. Rings for up to 256 entries: RX at 0x0000, TX at 0x4000; buffers from
/// 0x8000 on.
const MEM: usize = 0x4_0000;
const RX_BASE: u64 = 0x0000;
const TX_BASE: u64 = 0x4000;
const BUFS: u64 = 0x8000;
const MAX_OPS: usize = 96;

fn memory() -> &'static GuestMemoryMmap {
    static MEMORY: OnceLock<GuestMemoryMmap> = OnceLock::new();
    MEMORY.get_or_init(|| guest_memory(MEM))
}

/// The device-side queue for `ring`, as the transport hands it over at DRIVER_OK.
fn queue(ring: &Ring, event_idx: bool, mem: &GuestMemoryMmap) -> Queue {
    let mut q = Queue::new(256).unwrap();
    q.set_size(ring.size);
    q.set_desc_table_address(Some(u32::try_from(ring.desc).unwrap()), Some(0));
    q.set_avail_ring_address(Some(u32::try_from(ring.avail).unwrap()), Some(0));
    q.set_used_ring_address(Some(u32::try_from(ring.used).unwrap()), Some(0));
    q.set_ready(true);
    q.set_event_idx(event_idx);
    assert!(q.is_valid(mem), "the harness's rings are valid");
    q
}

fn ring_at(base: u64, size: u16) -> Ring {
    let (desc, avail, _) = ring_bytes(size);
    let avail_at = (base + desc + 1) & !1;
    let used_at = (avail_at + avail + 3) & !3;
    Ring::new(base, avail_at, used_at, size)
}

/// Buffers for a chain: mostly fresh ones in the buffer area, sometimes raw addresses.
struct Alloc {
    next: u64,
    /// A buffer may overlap the rings: the device's writes into it may then change them.
    rings_clobbered: bool,
}

impl Alloc {
    fn place(&mut self, input: &mut Input, len: u32) -> u64 {
        if input.u8() & 7 == 0 {
            let at = input.addr(MEM as u64);
            self.rings_clobbered |= at < BUFS;
            return at;
        }
        let room = MEM as u64 - BUFS;
        if self.next + u64::from(len) > MEM as u64 {
            self.next = BUFS;
        }
        let at = self.next;
        self.next = BUFS + (at - BUFS + u64::from(len)) % room;
        at
    }
}

fn host_drain(peer: &OwnedFd, buf: &mut [u8]) {
    loop {
        // SAFETY: receives into our own buffer, at most its length.
        let n = unsafe { libc::recv(peer.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(n) = usize::try_from(n) else { break };
        assert!(n <= MAX_FRAME_LEN, "the guest sent a {n}-byte frame");
        assert!(
            n >= VNET_HDR_LEN,
            "a frame without its header reached the host"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mem = memory();
    clear(mem, MEM);
    let mut input = Input::new(data);

    let cfg = input.u8();
    let mut features = VIRTIO_F_VERSION_1;
    if cfg & 1 != 0 {
        features |= VIRTIO_NET_F_MRG_RXBUF;
    }
    if cfg & 2 != 0 {
        features |= VIRTIO_RING_F_EVENT_IDX;
    }
    let event_idx = cfg & 2 != 0;
    let mut rx = ring_at(RX_BASE, 1 << (input.u8() % 9));
    let mut tx = ring_at(TX_BASE, 1 << (input.u8() % 9));

    let (dev_end, peer) = seqpacket_pair();
    let device = Net::new(
        Box::new(SocketBackend(dev_end)),
        Mac([6, 0, 0, 0, 0, 1]),
        None,
    );
    let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let mut worker = device
        .start(ActivateContext {
            mem: mem.clone(),
            queues: vec![queue(&rx, event_idx, mem), queue(&tx, event_idx, mem)],
            acked_features: device.features() & features,
            interrupt: Arc::new(Interrupt::new(IrqLine::Fd(irq))),
        })
        .unwrap();

    let mut alloc = Alloc {
        next: BUFS,
        rings_clobbered: false,
    };
    let (mut rx_next, mut tx_next) = (0u16, 0u16);
    let mut frame = vec![0u8; MAX_FRAME_LEN + 64];
    let mut broken = false;
    for _ in 0..MAX_OPS {
        if input.is_empty() || broken {
            break;
        }
        match input.u8() % 9 {
            // The guest posts an RX chain.
            0 => {
                let n = 1 + input.u8() % 4;
                let head = rx_next;
                for i in 0..n {
                    let len = input.len32() % 0x2_0000;
                    let addr = alloc.place(&mut input, len);
                    let mut flags = if input.one_in(8) { 0 } else { F_WRITE };
                    if i + 1 < n {
                        flags |= F_NEXT;
                    }
                    rx.put_desc(
                        mem,
                        rx_next,
                        addr,
                        len,
                        flags,
                        rx_next.wrapping_add(1) % rx.size,
                    );
                    rx_next = rx_next.wrapping_add(1) % rx.size;
                }
                rx.make_available(mem, head);
            }
            // The guest queues a frame on TX and kicks.
            1 => {
                let n = 1 + input.u8() % 4;
                let head = tx_next;
                for i in 0..n {
                    let len = input.len32() % 0x1_8000;
                    let addr = alloc.place(&mut input, len);
                    let fill = usize::try_from(len).unwrap();
                    let _ = mem.write_slice(input.bytes(fill.min(64)), GuestAddress(addr));
                    let mut flags = if input.one_in(8) { F_WRITE } else { 0 };
                    if i + 1 < n {
                        flags |= F_NEXT;
                    }
                    tx.put_desc(
                        mem,
                        tx_next,
                        addr,
                        len,
                        flags,
                        tx_next.wrapping_add(1) % tx.size,
                    );
                    tx_next = tx_next.wrapping_add(1) % tx.size;
                }
                tx.make_available(mem, head);
                broken = worker.process_queue(1) == Served::Broken;
            }
            // The host sends a frame; the worker's backend descriptor is readable.
            2 => {
                let len = usize::from(input.u16()) + usize::from(input.u8() % 2) * 0x1_0000;
                let len = len.min(frame.len());
                let head = input.bytes(64);
                frame[..head.len()].copy_from_slice(head);
                // SAFETY: sends from our own buffer, at most its length; a full socket fails.
                unsafe { libc::send(peer.as_raw_fd(), frame.as_ptr().cast(), len, 0) };
                broken = worker.process_backend(0) == Served::Broken;
            }
            // The guest kicks RX.
            3 => broken = worker.process_queue(0) == Served::Broken,
            // The host reads what the guest sent.
            4 => host_drain(&peer, &mut frame),
            // Raw descriptor table entries: loops, indirect tables, anything.
            5 | 6 => {
                let ring = if input.bool() { &rx } else { &tx };
                let index = input.u16();
                let addr = input.addr(MEM as u64);
                alloc.rings_clobbered |= addr < BUFS;
                let len = input.len32();
                let flags = input.u16() & 7;
                // An indirect table's entries come from RAM: they may point anywhere.
                alloc.rings_clobbered |= flags & F_INDIRECT != 0;
                let next = input.u16();
                ring.put_desc(mem, index, addr, len, flags, next);
            }
            // A raw avail entry, or a raw avail index.
            7 => {
                let head = input.u16();
                if input.bool() {
                    rx.make_available(mem, head);
                } else {
                    tx.make_available(mem, head);
                }
            }
            _ => {
                let idx = input.u16();
                if input.bool() {
                    rx.set_avail_idx(mem, idx);
                } else {
                    tx.set_avail_idx(mem, idx);
                }
            }
        }
    }
    if !broken {
        worker.process_queue(0);
        worker.process_queue(1);
    }
    host_drain(&peer, &mut frame);

    if alloc.rings_clobbered {
        return;
    }
    // What the device published in the used rings (the last `size` entries).
    let (rx_used, tx_used) = (rx.used_idx(mem), tx.used_idx(mem));
    for k in 0..rx.size.min(rx_used) {
        let (_, len) = rx.used(mem, rx_used.wrapping_sub(1 + k));
        assert!(len as usize <= MAX_FRAME_LEN, "RX used length {len}");
    }
    for k in 0..tx.size.min(tx_used) {
        let (_, len) = tx.used(mem, tx_used.wrapping_sub(1 + k));
        assert_eq!(len, 0, "TX used length");
    }
});
