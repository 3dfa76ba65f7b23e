//! The net device with its queues in guest memory and a SOCK_SEQPACKET socket pair standing in
//! for the TAP (it keeps frame boundaries): frames both ways, mergeable buffers, waiting for
//! buffers, and malformed chains from a hostile guest.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::device::MAX_RX_CHAINS;
use super::*;
use crate::devices::irq::IrqLine;
use crate::devices::virtio::testing::{
    seqpacket_pair, OffloadSocketBackend, SocketBackend, TestQueue, F_WRITE,
};
use crate::devices::virtio::{
    ActivateContext, Interrupt, QueueWorker, Served, VirtioDevice, VIRTIO_RING_F_EVENT_IDX,
};

const MEM_SIZE: usize = 4 << 20;
const QSIZE: u16 = 16;
const W: u16 = F_WRITE;
/// VNET_HDR_LEN as a descriptor or used-ring length.
const HDR_LEN32: u32 = 12;
const _: () = assert!(HDR_LEN32 as usize == VNET_HDR_LEN);

/// A frame's length as the used ring reports it.
fn len32(frame: &[u8]) -> u32 {
    u32::try_from(frame.len()).unwrap()
}
const RXBUF: u64 = 0x10_0000;
const TXBUF: u64 = 0x20_0000;

struct Harness {
    mem: GuestMemoryMmap,
    rx: TestQueue,
    tx: TestQueue,
    device: Net,
    net: NetWorker,
    /// The "host" end of the link.
    peer: OwnedFd,
    irq: EventFd,
}

impl Harness {
    /// A device on a backend without offloads; the driver accepts `features` of what it offers.
    fn new(features: u64) -> Harness {
        let (dev_end, peer) = seqpacket_pair();
        Harness::on(Box::new(SocketBackend(dev_end)), peer, features)
    }

    /// The same on a backend with checksum and TSO offloads, as most TAPs have.
    fn with_offloads(features: u64) -> Harness {
        let (dev_end, peer) = seqpacket_pair();
        Harness::on(Box::new(OffloadSocketBackend(dev_end)), peer, features)
    }

    fn on(backend: Box<dyn Backend>, peer: OwnedFd, features: u64) -> Harness {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let device = Net::new(backend, Mac([6, 1, 2, 3, 4, 5]), None);
        let (rx, mut rxq) = TestQueue::new(&mem, GuestAddress(0), QSIZE);
        let (tx, mut txq) = TestQueue::new(&mem, GuestAddress(0x8000), QSIZE);
        // As the transport does for a driver that negotiated EVENT_IDX.
        let event_idx = device.features() & features & VIRTIO_RING_F_EVENT_IDX != 0;
        rxq.set_event_idx(event_idx);
        txq.set_event_idx(event_idx);
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let net = device
            .start(ActivateContext {
                mem: mem.clone(),
                queues: vec![rxq, txq],
                acked_features: device.features() & features,
                interrupt: Arc::new(Interrupt::new(IrqLine::Fd(irq.try_clone().unwrap()))),
            })
            .unwrap();
        Harness {
            mem,
            rx,
            tx,
            device,
            net,
            peer,
            irq,
        }
    }

    /// The host sends a frame (header + payload) to the guest.
    fn host_sends(&self, frame: &[u8]) {
        // SAFETY: sends from a valid buffer on our socket.
        let n = unsafe { libc::send(self.peer.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(n, frame.len() as isize);
    }

    /// What the host received, if anything.
    fn host_receives(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; MAX_FRAME_LEN + 100];
        // SAFETY: receives into our own buffer.
        let n = unsafe { libc::recv(self.peer.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        (n >= 0).then(|| {
            buf.truncate(n as usize);
            buf
        })
    }

    /// The guest posts one RX chain of writable buffers (addr, len).
    fn post_rx(&mut self, bufs: &[(u64, u32)]) -> u16 {
        let descs: Vec<_> = bufs.iter().map(|&(a, l)| (a, l, W)).collect();
        let head = self.rx.put_chain(&self.mem, &descs);
        self.rx.make_available(&self.mem, head);
        head
    }

    /// Calls process_queue until the batch that finishes the work.
    fn kick_until_done(&mut self, queue: usize) {
        for _ in 0..1000 {
            match self.net.process_queue(queue) {
                Served::More => continue,
                served => return assert_eq!(served, Served::Done),
            }
        }
        panic!("queue {queue} never done");
    }

    /// The guest queues a TX chain (addr, len, flags) and kicks TX.
    fn guest_sends(&mut self, descs: &[(u64, u32, u16)]) {
        let head = self.tx.put_chain(&self.mem, descs);
        self.tx.make_available(&self.mem, head);
        assert_eq!(self.net.process_queue(1), Served::Done);
        self.tx.recycle();
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f.extend_from_slice(payload);
    f
}

const ALL: u64 = u64::MAX;

#[test]
fn transmit_reaches_the_host_intact() {
    let mut h = Harness::new(ALL);
    let f = frame(b"hello, host");
    h.mem
        .write_slice(&f[..VNET_HDR_LEN], GuestAddress(TXBUF))
        .unwrap();
    h.mem
        .write_slice(&f[VNET_HDR_LEN..], GuestAddress(TXBUF + 0x1000))
        .unwrap();
    h.guest_sends(&[(TXBUF, HDR_LEN32, 0), (TXBUF + 0x1000, 11, 0)]);
    assert_eq!(h.host_receives().unwrap(), f);
    assert_eq!(h.tx.used_idx(&h.mem), 1);
    assert_eq!(h.tx.used(&h.mem, 0), (0, 0));
    assert_eq!(h.net.stats().tx_frames, 1);
    assert!(h.irq.read().is_ok());
}

#[test]
fn malformed_tx_chains_are_dropped_and_counted() {
    let mut h = Harness::new(ALL);
    let outside = MEM_SIZE as u64;
    let bad: [&[(u64, u32, u16)]; 4] = [
        &[(TXBUF, 100, W)],                      // device-writable: not a frame to send
        &[(TXBUF, 8, 0)],                        // shorter than the header
        &[(outside - 10, 100, 0)],               // runs out of guest memory
        &[(TXBUF, 65536, 0), (TXBUF, 65536, 0)], // larger than any frame
    ];
    for chain in bad {
        h.guest_sends(chain);
        assert!(h.host_receives().is_none(), "{chain:?} must not be sent");
    }
    assert_eq!(h.net.stats().tx_dropped, 4);
    // Every chain still comes back to the guest.
    assert_eq!(h.tx.used_idx(&h.mem), 4);
}

#[test]
fn receive_into_one_buffer() {
    let mut h = Harness::new(ALL);
    h.post_rx(&[(RXBUF, 2048)]);
    let f = frame(b"hello, guest");
    h.host_sends(&f);
    assert_eq!(h.net.process_backend(0), Served::Done);
    assert_eq!(h.rx.used(&h.mem, 0), (0, len32(&f)));
    let mut got = vec![0u8; f.len()];
    h.mem.read_slice(&mut got, GuestAddress(RXBUF)).unwrap();
    assert_eq!(&got[VNET_HDR_LEN..], b"hello, guest");
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1, "num_buffers");
    assert!(h.irq.read().is_ok());
}

#[test]
fn mergeable_buffers_carry_a_large_frame() {
    let mut h = Harness::new(ALL);
    for i in 0..3 {
        h.post_rx(&[(RXBUF + i * 0x1000, 1500)]);
    }
    let payload: Vec<u8> = (0..3000u32).map(|i| (i & 0xff) as u8).collect();
    let f = frame(&payload);
    h.host_sends(&f);
    assert_eq!(h.net.process_backend(0), Served::Done);
    assert_eq!(h.rx.used_idx(&h.mem), 3);
    let lens: Vec<u32> = (0..3).map(|i| h.rx.used(&h.mem, i).1).collect();
    assert_eq!(lens, vec![1500, 1500, len32(&f) - 3000]);
    let mut got = Vec::new();
    for (i, len) in lens.iter().enumerate() {
        let mut part = vec![0u8; *len as usize];
        h.mem
            .read_slice(&mut part, GuestAddress(RXBUF + i as u64 * 0x1000))
            .unwrap();
        got.extend(part);
    }
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 3, "num_buffers");
    assert_eq!(&got[VNET_HDR_LEN..], &payload[..]);
}

#[test]
fn rx_waits_for_guest_buffers_without_dropping() {
    let mut h = Harness::new(ALL);
    h.host_sends(&frame(b"first"));
    h.host_sends(&frame(b"second"));
    assert_eq!(h.net.process_backend(0), Served::Done);
    // No buffers: the frame is held and the backend is no longer watched.
    assert!(!h.net.backend_wanted(0));
    assert_eq!(h.rx.used_idx(&h.mem), 0);
    assert_eq!(h.net.stats().rx_dropped, 0);
    // The guest adds buffers and kicks RX: both frames arrive, in order.
    h.post_rx(&[(RXBUF, 2048)]);
    h.post_rx(&[(RXBUF + 0x1000, 2048)]);
    assert_eq!(h.net.process_queue(0), Served::Done);
    assert!(h.net.backend_wanted(0));
    assert_eq!(h.rx.used_idx(&h.mem), 2);
    let mut second = [0u8; 6];
    h.mem
        .read_slice(
            &mut second,
            GuestAddress(RXBUF + 0x1000 + VNET_HDR_LEN as u64),
        )
        .unwrap();
    assert_eq!(&second, b"second");
    assert_eq!(h.net.stats().rx_frames, 2);
}

#[test]
fn too_small_buffer_without_mergeable_drops_the_frame() {
    let mut h = Harness::new(ALL & !VIRTIO_NET_F_MRG_RXBUF & !VIRTIO_RING_F_EVENT_IDX);
    h.post_rx(&[(RXBUF, 64)]);
    h.host_sends(&frame(&[7u8; 200]));
    assert_eq!(h.net.process_backend(0), Served::Done);
    assert_eq!(h.rx.used(&h.mem, 0), (0, 0), "buffer returned unused");
    assert_eq!(h.net.stats().rx_dropped, 1);
    assert!(h.net.backend_wanted(0), "not stuck on the dropped frame");
}

#[test]
fn bad_rx_buffers_do_not_hurt_the_host() {
    let mut h = Harness::new(ALL);
    // A chain with no writable buffer is handed back empty; the frame goes to the next chain.
    let head = h.rx.put_chain(&h.mem, &[(RXBUF, 2048, 0)]);
    h.rx.make_available(&h.mem, head);
    h.post_rx(&[(RXBUF + 0x1000, 2048)]);
    h.host_sends(&frame(b"x"));
    assert_eq!(h.net.process_backend(0), Served::Done);
    assert_eq!(h.rx.used(&h.mem, 0), (0, 0));
    assert_eq!(h.rx.used(&h.mem, 1).1, HDR_LEN32 + 1);
    // A buffer outside guest memory: the frame is dropped, the buffer returned unused.
    h.rx.recycle();
    h.post_rx(&[(MEM_SIZE as u64 - 4, 2048)]);
    h.host_sends(&frame(b"y"));
    assert_eq!(h.net.process_backend(0), Served::Done);
    assert_eq!(h.rx.used(&h.mem, 2).1, 0);
    assert_eq!(h.net.stats().rx_dropped, 1);
}

#[test]
fn config_space_has_mac_and_link_up() {
    let h = Harness::new(ALL);
    let mut c = [0u8; 8];
    h.device.read_config(0, &mut c);
    assert_eq!(&c[..6], &[6, 1, 2, 3, 4, 5]);
    assert_eq!(u16::from_le_bytes([c[6], c[7]]), VIRTIO_NET_S_LINK_UP);
    assert_ne!(h.device.features() & VIRTIO_NET_F_MAC, 0);
    assert_eq!(
        h.device.features() & VIRTIO_NET_F_HOST_TSO4,
        0,
        "no offloads on this backend"
    );
    // No MTU given: none offered (the driver's default), nothing past max_virtqueue_pairs.
    assert_eq!(h.device.features() & VIRTIO_NET_F_MTU, 0);
    let mut past = [0xffu8; 2];
    h.device.read_config(10, &mut past);
    assert_eq!(past, [0, 0]);
}

#[test]
fn a_given_mtu_is_offered_in_config_space() {
    let (dev_end, _peer) = seqpacket_pair();
    let device = Net::new(
        Box::new(SocketBackend(dev_end)),
        Mac([6, 1, 2, 3, 4, 5]),
        Some(1450),
    );
    assert_ne!(device.features() & VIRTIO_NET_F_MTU, 0);
    let mut mtu = [0u8; 2];
    device.read_config(10, &mut mtu);
    assert_eq!(u16::from_le_bytes(mtu), 1450);
}

#[test]
fn frame_waiting_for_more_mergeable_buffers_still_gets_kicked() {
    // A frame that needs two buffers while the guest has posted one: the device must keep the
    // one it took and ask to be kicked at the guest's current avail index, or RX dies.
    let mut h = Harness::new(ALL);
    h.post_rx(&[(RXBUF, 1500)]);
    let payload: Vec<u8> = (0..2500u32).map(|i| ((i * 7) & 0xff) as u8).collect();
    let f = frame(&payload);
    h.host_sends(&f);
    assert_eq!(h.net.process_backend(0), Served::Done);
    assert!(
        !h.net.backend_wanted(0),
        "waiting for buffers, not reading the backend"
    );
    assert_eq!(h.rx.used_idx(&h.mem), 0);
    assert_eq!(
        h.rx.avail_event(&h.mem),
        h.rx.made_available(),
        "the next buffer the guest posts must trigger a kick"
    );
    h.post_rx(&[(RXBUF + 0x1000, 1500)]);
    assert_eq!(h.net.process_queue(0), Served::Done);
    assert!(h.net.backend_wanted(0));
    assert_eq!(h.rx.used_idx(&h.mem), 2);
    let (l0, l1) = (h.rx.used(&h.mem, 0).1, h.rx.used(&h.mem, 1).1);
    assert_eq!((l0, l0 + l1), (1500, len32(&f)));
    let mut got = vec![0u8; f.len()];
    h.mem
        .read_slice(&mut got[..1500], GuestAddress(RXBUF))
        .unwrap();
    h.mem
        .read_slice(&mut got[1500..], GuestAddress(RXBUF + 0x1000))
        .unwrap();
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 2, "num_buffers");
    assert_eq!(&got[VNET_HDR_LEN..], &payload[..]);
    assert_eq!(h.net.stats().rx_dropped, 0);
}

/// A frame whose header has these flags and GSO type.
fn frame_with(flags: u8, gso: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = frame(payload);
    f[0] = flags;
    f[1] = gso;
    f
}

#[test]
fn a_corrupted_rx_ring_needs_reset() {
    // A frame waits for buffers while the driver's avail index is more than a queue ahead.
    let mut h = Harness::new(ALL);
    h.rx.set_avail_idx(&h.mem, QSIZE + 3);
    h.host_sends(&frame(b"x"));
    assert_eq!(h.net.process_backend(0), Served::Broken);
    // The same found on the guest's RX kick, with no frame waiting.
    let mut h = Harness::new(ALL);
    h.rx.set_avail_idx(&h.mem, QSIZE + 3);
    assert_eq!(h.net.process_queue(0), Served::Broken);
    // And an RX chain whose head is outside the table cannot be returned.
    let mut h = Harness::new(ALL);
    h.rx.make_available(&h.mem, QSIZE);
    h.host_sends(&frame(b"y"));
    assert_eq!(h.net.process_backend(0), Served::Broken);
}

#[test]
fn a_frame_takes_a_bounded_number_of_mergeable_buffers() {
    // A driver posting 1-byte buffers, re-using its descriptors as fast as the device takes
    // them: the frame is dropped once it would need more than MAX_RX_CHAINS buffers, and all
    // of them come back.
    let mut h = Harness::new(ALL);
    h.host_sends(&frame(&[0x33; 1000]));
    assert_eq!(h.net.process_backend(0), Served::Done);
    let mut posted = 0usize;
    while posted < MAX_RX_CHAINS + usize::from(QSIZE) && h.net.stats().rx_dropped == 0 {
        h.rx.recycle();
        for i in 0..u64::from(QSIZE) {
            h.post_rx(&[(RXBUF + i, 1)]);
        }
        posted += usize::from(QSIZE);
        h.kick_until_done(0);
    }
    assert_eq!(
        h.net.stats().rx_dropped,
        1,
        "{posted} 1-byte buffers posted"
    );
    assert_eq!(h.net.stats().rx_too_many_buffers, 1);
    assert!(posted > MAX_RX_CHAINS && posted <= MAX_RX_CHAINS + usize::from(QSIZE));
    let returned = usize::from(h.rx.used_idx(&h.mem));
    assert_eq!(returned, MAX_RX_CHAINS, "every chain taken came back");
    for n in 0..QSIZE {
        assert_eq!(h.rx.used(&h.mem, n).1, 0, "returned unused");
    }
    // The device reads the backend again, and the next frame gets the remaining buffers.
    assert!(h.net.backend_wanted(0));
}

#[test]
fn tx_headers_carry_only_negotiated_offloads() {
    // This backend offers no offloads, so the guest negotiated none.
    let mut h = Harness::new(ALL);
    let mut sent = 0;
    for (flags, gso, ok) in [
        (0, VIRTIO_NET_HDR_GSO_NONE, true),
        (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, false),
        (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, false),
        (0, VIRTIO_NET_HDR_GSO_TCPV6, false),
        (VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_GSO_NONE, false),
    ] {
        let f = frame_with(flags, gso, b"payload");
        h.mem.write_slice(&f, GuestAddress(TXBUF)).unwrap();
        h.guest_sends(&[(TXBUF, len32(&f), 0)]);
        let got = h.host_receives();
        assert_eq!(got.is_some(), ok, "flags {flags:#x} gso {gso:#x}");
        sent += u64::from(ok);
    }
    let stats = h.net.stats();
    assert_eq!(
        (stats.tx_frames, stats.tx_dropped, stats.tx_bad_offload),
        (sent, 4, 4)
    );

    // Here the guest took CSUM and HOST_TSO4 but not HOST_TSO6.
    let mut h = Harness::with_offloads(ALL & !VIRTIO_NET_F_HOST_TSO6);
    for (flags, gso, ok) in [
        (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, true),
        (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, true),
        (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6, false),
        (VIRTIO_NET_HDR_F_NEEDS_CSUM, 3, false), // UDP (UFO): never offered
        (VIRTIO_NET_HDR_F_NEEDS_CSUM, 0x81, false), // ECN: never offered
        (0x80, VIRTIO_NET_HDR_GSO_NONE, false),  // an undefined flag
    ] {
        let mut f = frame_with(flags, gso, &[0x42; 100]);
        f[4..6].copy_from_slice(&1448u16.to_le_bytes()); // gso_size
                                                         // The header split over two descriptors, the payload in a third.
        h.mem.write_slice(&f[..5], GuestAddress(TXBUF)).unwrap();
        h.mem
            .write_slice(&f[5..VNET_HDR_LEN], GuestAddress(TXBUF + 0x100))
            .unwrap();
        h.mem
            .write_slice(&f[VNET_HDR_LEN..], GuestAddress(TXBUF + 0x200))
            .unwrap();
        h.guest_sends(&[
            (TXBUF, 5, 0),
            (TXBUF + 0x100, 7, 0),
            (TXBUF + 0x200, 100, 0),
        ]);
        let got = h.host_receives();
        if ok {
            assert_eq!(got.as_deref(), Some(&f[..]), "sent intact");
        } else {
            assert!(got.is_none(), "flags {flags:#x} gso {gso:#x}");
        }
    }
    assert_eq!(h.net.stats().tx_bad_offload, 4);

    // HOST_TSO4 without CSUM (a driver ignoring the feature dependency): no segmentation.
    let mut h = Harness::with_offloads(ALL & !VIRTIO_NET_F_CSUM);
    let f = frame_with(0, VIRTIO_NET_HDR_GSO_TCPV4, b"payload");
    h.mem.write_slice(&f, GuestAddress(TXBUF)).unwrap();
    h.guest_sends(&[(TXBUF, len32(&f), 0)]);
    assert!(h.host_receives().is_none());
    assert_eq!(h.net.stats().tx_bad_offload, 1);
}

#[test]
fn rx_headers_carry_only_flags_the_guest_accepted() {
    // No GUEST_CSUM or GUEST_TSO here: flags are cleared, frames needing an offload dropped.
    let mut h = Harness::new(ALL);
    for i in 0..3 {
        h.post_rx(&[(RXBUF + i * 0x1000, 2048)]);
    }
    h.host_sends(&frame_with(VIRTIO_NET_HDR_F_DATA_VALID | 0x40, 0, b"valid"));
    h.host_sends(&frame_with(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, b"partial"));
    h.host_sends(&frame_with(0, VIRTIO_NET_HDR_GSO_TCPV4, b"large"));
    assert_eq!(h.net.process_backend(0), Served::Done);
    assert_eq!(h.rx.used_idx(&h.mem), 1, "one frame delivered");
    let mut hdr = [0u8; VNET_HDR_LEN];
    h.mem.read_slice(&mut hdr, GuestAddress(RXBUF)).unwrap();
    assert_eq!((hdr[0], hdr[1]), (0, 0), "flags cleared");
    let stats = h.net.stats();
    assert_eq!(
        (stats.rx_frames, stats.rx_dropped, stats.rx_bad_offload),
        (1, 2, 2)
    );

    // With GUEST_CSUM and GUEST_TSO4 (not TSO6): the defined flags and TSO4 pass.
    let mut h = Harness::with_offloads(ALL & !VIRTIO_NET_F_GUEST_TSO6);
    for i in 0..3 {
        h.post_rx(&[(RXBUF + i * 0x1000, 2048)]);
    }
    h.host_sends(&frame_with(VIRTIO_NET_HDR_F_DATA_VALID | 0x40, 0, b"valid"));
    h.host_sends(&frame_with(
        VIRTIO_NET_HDR_F_NEEDS_CSUM,
        VIRTIO_NET_HDR_GSO_TCPV4,
        b"tso4",
    ));
    h.host_sends(&frame_with(
        VIRTIO_NET_HDR_F_NEEDS_CSUM,
        VIRTIO_NET_HDR_GSO_TCPV6,
        b"tso6",
    ));
    assert_eq!(h.net.process_backend(0), Served::Done);
    assert_eq!(h.rx.used_idx(&h.mem), 2);
    let mut hdr = [0u8; VNET_HDR_LEN];
    h.mem.read_slice(&mut hdr, GuestAddress(RXBUF)).unwrap();
    assert_eq!(
        hdr[0], VIRTIO_NET_HDR_F_DATA_VALID,
        "undefined flag cleared"
    );
    h.mem
        .read_slice(&mut hdr, GuestAddress(RXBUF + 0x1000))
        .unwrap();
    assert_eq!(
        (hdr[0], hdr[1]),
        (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4)
    );
    assert_eq!(h.net.stats().rx_bad_offload, 1);

    // GUEST_TSO4 without GUEST_CSUM (a driver ignoring the feature dependency): no large
    // segments either.
    let mut h = Harness::with_offloads(ALL & !VIRTIO_NET_F_GUEST_CSUM);
    h.post_rx(&[(RXBUF, 2048)]);
    h.host_sends(&frame_with(0, VIRTIO_NET_HDR_GSO_TCPV4, b"tso4"));
    assert_eq!(h.net.process_backend(0), Served::Done);
    assert_eq!(h.rx.used_idx(&h.mem), 0);
    assert_eq!(h.net.stats().rx_bad_offload, 1);
}
