//! The block device driven through a split virtqueue written into guest memory, the way a
//! driver would: good requests, and every kind of malformed chain a malicious guest can send.

use std::sync::Arc;

use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::devices::irq::IrqLine;
use crate::devices::virtio::testing::{write_descriptors, TestQueue, F_INDIRECT, F_NEXT, F_WRITE};
use crate::devices::virtio::{ActivateContext, Interrupt, QueueWorker, Served, VirtioDevice};

const MEM_SIZE: usize = 4 << 20;
const QSIZE: u16 = 16;
const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;
const W: u16 = F_WRITE;

struct Harness {
    mem: GuestMemoryMmap,
    q: TestQueue,
    path: std::path::PathBuf,
    device: Block,
    block: BlockWorker,
    irq: EventFd,
}

impl Harness {
    /// A disk whose sector `n` is filled with the byte `n`, without EVENT_IDX.
    fn new(name: &str, sectors: u64, read_only: bool) -> Harness {
        let image: Vec<u8> = (0..sectors * SECTOR_SIZE)
            .map(|i| ((i / SECTOR_SIZE) & 0xff) as u8)
            .collect();
        Harness::with_image(name, &image, read_only, false)
    }

    fn with_image(name: &str, image: &[u8], read_only: bool, event_idx: bool) -> Harness {
        Harness::with_acked(name, image, read_only, event_idx, true)
    }

    /// As `with_image`; `indirect` says whether the driver acked VIRTIO_RING_F_INDIRECT_DESC.
    fn with_acked(
        name: &str,
        image: &[u8],
        read_only: bool,
        event_idx: bool,
        indirect: bool,
    ) -> Harness {
        let path = std::env::temp_dir().join(format!("flint-blk-{}-{name}", std::process::id()));
        std::fs::write(&path, image).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let device = Block::new(DiskImage::open(&path, read_only).unwrap(), "test-serial");
        let (q, mut queue) = TestQueue::new(&mem, GuestAddress(0), QSIZE);
        // As the transport does for a driver that negotiated EVENT_IDX.
        queue.set_event_idx(event_idx);
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut features = device.features();
        if !event_idx {
            features &= !crate::devices::virtio::VIRTIO_RING_F_EVENT_IDX;
        }
        if !indirect {
            features &= !crate::devices::virtio::VIRTIO_RING_F_INDIRECT_DESC;
        }
        let block = device
            .start(ActivateContext {
                mem: mem.clone(),
                queues: vec![queue],
                acked_features: features,
                interrupt: Arc::new(Interrupt::new(IrqLine::Fd(irq.try_clone().unwrap()))),
            })
            .unwrap();
        Harness {
            mem,
            q,
            path,
            device,
            block,
            irq,
        }
    }

    fn put_raw(&mut self, descs: &[(u64, u32, u16, u16)]) -> u16 {
        self.q.put_raw(&self.mem, descs)
    }

    /// Makes `head` available, runs the device, returns the used ring entry's length.
    fn run(&mut self, head: u16) -> u32 {
        self.run_calls(head, 1)
    }

    /// As `run`, for a chain long enough to spend a call's budget: the device may ask to be
    /// called again, up to `calls` calls in all.
    fn run_calls(&mut self, head: u16, calls: usize) -> u32 {
        self.q.make_available(&self.mem, head);
        let mut served = self.block.process_queue(0);
        for _ in 1..calls {
            if served == Served::More {
                served = self.block.process_queue(0);
            }
        }
        assert_eq!(served, Served::Done, "device must not need a reset");
        let n = self.q.made_available();
        assert_eq!(self.q.used_idx(&self.mem), n, "request completed");
        // Completed requests give their descriptors back.
        self.q.recycle();
        let (id, len) = self.q.used(&self.mem, n - 1);
        assert_eq!(id, head as u32);
        len
    }

    /// Submits a chain (addr, len, flags) with NEXT links filled in; returns (used len, status).
    fn submit(&mut self, descs: &[(u64, u32, u16)]) -> (u32, u8) {
        self.mem.write_obj(0xaau8, GuestAddress(STATUS)).unwrap();
        let head = self.q.put_chain(&self.mem, descs);
        let len = self.run(head);
        (len, self.mem.read_obj(GuestAddress(STATUS)).unwrap())
    }

    fn header(&self, type_: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&type_.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
    }

    fn file(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn req(data: Option<(u64, u32, u16)>) -> Vec<(u64, u32, u16)> {
    let mut v = vec![(HDR, 16, 0)];
    v.extend(data);
    v.push((STATUS, 1, W));
    v
}

#[test]
fn write_read_flush_and_id() {
    let mut h = Harness::new("rw", 8, false);
    h.mem
        .write_slice(&[0x5a; 1024], GuestAddress(DATA))
        .unwrap();
    h.header(VIRTIO_BLK_T_OUT, 3);
    assert_eq!(h.submit(&req(Some((DATA, 1024, 0)))), (1, VIRTIO_BLK_S_OK));
    assert!(h.file()[3 * 512..5 * 512].iter().all(|&b| b == 0x5a));
    assert_eq!(h.file()[5 * 512], 5, "the next sector is untouched");

    h.header(VIRTIO_BLK_T_IN, 2);
    assert_eq!(
        h.submit(&req(Some((DATA, 1024, W)))),
        (1025, VIRTIO_BLK_S_OK)
    );
    let mut back = [0u8; 1024];
    h.mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
    assert!(back[..512].iter().all(|&b| b == 2) && back[512..].iter().all(|&b| b == 0x5a));

    h.header(VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(h.submit(&req(None)), (1, VIRTIO_BLK_S_OK));

    h.header(VIRTIO_BLK_T_GET_ID, 0);
    assert_eq!(h.submit(&req(Some((DATA, 20, W)))), (21, VIRTIO_BLK_S_OK));
    let mut id = [0u8; 20];
    h.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..11], b"test-serial");
    assert!(h.irq.read().is_ok(), "the guest was interrupted");
    assert_eq!(h.block.stats().errors, 0);
}

#[test]
fn out_of_range_and_odd_lengths_are_ioerr() {
    let mut h = Harness::new("range", 8, false);
    let before = h.file();
    for (sector, len) in [
        (8, 512),
        (7, 1024),
        (u64::MAX, 512),
        (u64::MAX / 512 + 1, 512),
        (0, 100),
    ] {
        h.header(VIRTIO_BLK_T_OUT, sector);
        assert_eq!(
            h.submit(&req(Some((DATA, len, 0)))).1,
            VIRTIO_BLK_S_IOERR,
            "sector {sector} len {len}"
        );
        h.header(VIRTIO_BLK_T_IN, sector);
        assert_eq!(
            h.submit(&req(Some((DATA, len, W)))),
            (1, VIRTIO_BLK_S_IOERR)
        );
    }
    assert_eq!(h.file(), before);
}

#[test]
fn wrong_buffer_directions_are_ioerr() {
    let mut h = Harness::new("dir", 8, false);
    h.mem.write_slice(&[0x11; 512], GuestAddress(DATA)).unwrap();
    // A read into a buffer the driver marked device-readable: the device must not write it.
    h.header(VIRTIO_BLK_T_IN, 1);
    assert_eq!(
        h.submit(&req(Some((DATA, 512, 0)))),
        (1, VIRTIO_BLK_S_IOERR)
    );
    let mut buf = [0u8; 512];
    h.mem.read_slice(&mut buf, GuestAddress(DATA)).unwrap();
    assert!(buf.iter().all(|&b| b == 0x11));
    // A write from a device-writable buffer.
    h.header(VIRTIO_BLK_T_OUT, 1);
    let before = h.file();
    // (A writable data descriptor ends the readable part: the header alone is read.)
    assert_eq!(h.submit(&req(Some((DATA, 512, W)))).1, VIRTIO_BLK_S_IOERR);
    assert_eq!(h.file(), before);
    // A header in a device-writable descriptor, or too short.
    assert_eq!(
        h.submit(&[(HDR, 16, W), (STATUS, 1, W)]).1,
        VIRTIO_BLK_S_IOERR
    );
    assert_eq!(
        h.submit(&[(HDR, 8, 0), (STATUS, 1, W)]).1,
        VIRTIO_BLK_S_IOERR
    );
}

#[test]
fn addresses_outside_guest_memory() {
    let mut h = Harness::new("oob", 8, false);
    let outside = MEM_SIZE as u64;
    h.header(VIRTIO_BLK_T_IN, 0);
    // Data buffer past the end of RAM, or straddling it.
    assert_eq!(
        h.submit(&req(Some((outside, 512, W)))),
        (1, VIRTIO_BLK_S_IOERR)
    );
    assert_eq!(
        h.submit(&req(Some((outside - 256, 512, W)))),
        (1, VIRTIO_BLK_S_IOERR)
    );
    assert_eq!(
        h.submit(&req(Some((u64::MAX - 100, 512, W)))),
        (1, VIRTIO_BLK_S_IOERR)
    );
    // Header outside RAM.
    assert_eq!(
        h.submit(&[(outside, 16, 0), (STATUS, 1, W)]).1,
        VIRTIO_BLK_S_IOERR
    );
    // Status outside RAM: no status can be written; the chain completes with nothing written.
    let head = h.put_raw(&[(HDR, 16, F_NEXT, 1), (outside, 1, W, 0)]);
    assert_eq!(h.run(head), 0);
    assert_eq!(h.block.stats().dropped_chains, 1);
}

#[test]
fn chains_without_a_usable_status_are_dropped() {
    let mut h = Harness::new("nostatus", 8, false);
    h.header(VIRTIO_BLK_T_IN, 0);
    // Only a header.
    assert_eq!(h.submit(&[(HDR, 16, 0)]), (0, 0xaa));
    // The status descriptor is not device-writable, or empty.
    assert_eq!(h.submit(&[(HDR, 16, 0), (STATUS, 1, 0)]), (0, 0xaa));
    assert_eq!(h.submit(&[(HDR, 16, 0), (STATUS, 0, W)]), (0, 0xaa));
    assert_eq!(h.block.stats().dropped_chains, 3);
}

#[test]
fn looping_chain_terminates() {
    let mut h = Harness::new("loop", 8, false);
    h.header(VIRTIO_BLK_T_IN, 0);
    h.mem.write_slice(&[0xaa; 512], GuestAddress(DATA)).unwrap();
    let n = F_NEXT;
    // 0 -> 1 -> 0 -> ...: the walk is bounded by the queue size; no hang, no panic, and no
    // request cut out of it (the last descriptor walked taken for a status byte).
    let head = h.put_raw(&[(HDR, 16, n, 1), (DATA, 512, W | n, 0)]);
    assert_eq!(h.run(head), 0);
    let mut data = [0u8; 512];
    h.mem.read_slice(&mut data, GuestAddress(DATA)).unwrap();
    assert!(data.iter().all(|&b| b == 0xaa), "nothing written");
    // A `next` index beyond the table.
    let head = h.put_raw(&[(HDR, 16, n, 1000)]);
    assert_eq!(h.run(head), 0);
    assert_eq!(h.block.stats().dropped_chains, 2);
}

#[test]
fn chains_that_end_mid_walk_are_not_run() {
    let mut h = Harness::new("midwalk", 8, false);
    h.mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
    let before = h.file();
    // A whole write request, but its status descriptor says NEXT to an index past the table:
    // not a request that ends at its status byte.
    h.header(VIRTIO_BLK_T_OUT, 1);
    h.mem.write_obj(0xaau8, GuestAddress(STATUS)).unwrap();
    let n = F_NEXT;
    let head = h.put_raw(&[
        (HDR, 16, n, 1),
        (DATA, 512, n, 2),
        (STATUS, 1, W | n, QSIZE),
    ]);
    assert_eq!(h.run(head), 0);
    assert_eq!(h.file(), before, "the write was not run");
    assert_eq!(h.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), 0xaa);
    // Lengths adding up past 4 GiB: a read whose last descriptor overflows the total.
    h.header(VIRTIO_BLK_T_IN, 0);
    let head = h.put_raw(&[
        (HDR, 16, n, 1),
        (DATA, u32::MAX - 100, W | n, 2),
        (STATUS, 1, W | n, 3),
        (DATA, 200, W, 0),
    ]);
    assert_eq!(h.run(head), 0);
    assert_eq!(
        h.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(),
        0xaa,
        "no status: the chain is not a request"
    );
    assert_eq!(h.block.stats().dropped_chains, 2);
}

#[test]
fn a_request_in_an_indirect_table_is_run_only_when_the_driver_acked_them() {
    // flint offers VIRTIO_RING_F_INDIRECT_DESC: a write request whose header, data and status
    // are in a table reached the disk; a driver that did not ack the feature gets nothing run.
    let image: Vec<u8> = vec![0; 8 * 512];
    for acked in [true, false] {
        let mut h = Harness::with_acked("indirect", &image, false, false, acked);
        assert_ne!(
            h.device.features() & crate::devices::virtio::VIRTIO_RING_F_INDIRECT_DESC,
            0
        );
        let table = 0x38_0000u64;
        let descs = [
            (HDR, 16u32, F_NEXT, 1u16),
            (DATA, 512, F_NEXT, 2),
            (STATUS, 1, W, 0),
        ];
        write_descriptors(&h.mem, GuestAddress(table), &descs);
        h.header(VIRTIO_BLK_T_OUT, 2);
        h.mem.write_slice(&[0x77; 512], GuestAddress(DATA)).unwrap();
        h.mem.write_obj(0xaau8, GuestAddress(STATUS)).unwrap();
        let head = h.put_raw(&[(table, 48, F_INDIRECT, 0)]);
        let len = h.run(head);
        let status: u8 = h.mem.read_obj(GuestAddress(STATUS)).unwrap();
        let file = h.file();
        if acked {
            assert_eq!((len, status), (1, VIRTIO_BLK_S_OK));
            assert_eq!(&file[2 * 512..3 * 512], &[0x77; 512][..]);
            assert_eq!(h.block.stats().dropped_chains, 0);
        } else {
            assert_eq!(
                (len, status),
                (0, 0xaa),
                "no status: the chain is not a request"
            );
            assert_eq!(file, image);
            assert_eq!(h.block.stats().dropped_chains, 1);
        }
    }
}

#[test]
fn a_request_longer_than_the_ring_fits_in_an_indirect_table_up_to_seg_max() {
    // The ring holds QSIZE descriptors; a table holds a request of seg_max data buffers
    // whatever the ring's size, and one more fails as without a table.
    let seg_max = u32::from(super::device::QUEUE_SIZE) - 2;
    let sectors = u64::from(seg_max) + 1;
    for (data, ok) in [(seg_max, true), (seg_max + 1, false)] {
        let mut h = Harness::new("indirect-long", sectors, false);
        h.header(VIRTIO_BLK_T_IN, 0);
        h.mem.write_obj(0xaau8, GuestAddress(STATUS)).unwrap();
        let table = 0x38_0000u64;
        let mut descs = vec![(HDR, 16u32, 0u16)];
        for i in 0..u64::from(data) {
            descs.push((DATA + i * 512, 512, W));
        }
        descs.push((STATUS, 1, W));
        let n = u16::try_from(descs.len()).unwrap();
        let linked: Vec<_> = (1..)
            .zip(&descs)
            .map(|(next, &(addr, len, flags))| {
                let flags = if next < n { flags | F_NEXT } else { flags };
                (addr, len, flags, next)
            })
            .collect();
        write_descriptors(&h.mem, GuestAddress(table), &linked);
        assert!(usize::from(n) > usize::from(QSIZE), "longer than the ring");
        let head = h.put_raw(&[(table, u32::from(n) * 16, F_INDIRECT, 0)]);
        // A table this long spends the call's budget (twice the ring of descriptors).
        let len = h.run_calls(head, 2);
        let status: u8 = h.mem.read_obj(GuestAddress(STATUS)).unwrap();
        if ok {
            assert_eq!((len, status), (data * 512 + 1, VIRTIO_BLK_S_OK));
            let last = DATA + (u64::from(data) - 1) * 512;
            assert_eq!(
                h.mem.read_obj::<u8>(GuestAddress(last)).unwrap(),
                u8::try_from(data - 1).unwrap()
            );
        } else {
            assert_eq!(status, VIRTIO_BLK_S_IOERR, "more than seg_max data buffers");
            assert_eq!(h.block.stats().errors, 1);
        }
    }
}

#[test]
fn a_chain_of_a_whole_queue_is_one_request() {
    // The longest chain there is: header, QSIZE - 2 data buffers, status.
    let mut h = Harness::new("long", 32, false);
    h.header(VIRTIO_BLK_T_IN, 1);
    let mut descs = vec![(HDR, 16, 0)];
    for i in 0..u64::from(QSIZE) - 2 {
        descs.push((DATA + i * 512, 512, W));
    }
    descs.push((STATUS, 1, W));
    let (len, status) = h.submit(&descs);
    assert_eq!(
        (len, status),
        (512 * (u32::from(QSIZE) - 2) + 1, VIRTIO_BLK_S_OK)
    );
    let mut last = [0u8; 512];
    h.mem
        .read_slice(&mut last, GuestAddress(DATA + 512 * (u64::from(QSIZE) - 3)))
        .unwrap();
    assert!(last
        .iter()
        .all(|&b| usize::from(b) == usize::from(QSIZE) - 2));
}

#[test]
fn a_guest_that_keeps_the_queue_busy_is_served_in_batches() {
    // Each request reads a sector that makes the next request available: its first data
    // buffer is the avail ring (the disk's bytes advance its index), its second holds the
    // header (the next sector). So the ring never empties while the disk lasts, as with a
    // guest that re-posts requests as fast as they complete, with EVENT_IDX.
    const SECTORS: u16 = 64;
    const AVAIL_LEN: u32 = 40; // flags, idx, 16 ring entries, used_event, padding
    const NEXT: u64 = 0x28_0000; // the second data buffer: the header, then scratch
    let mut image = vec![0u8; usize::from(SECTORS) * 512];
    for (k, sector) in image.chunks_mut(512).enumerate() {
        let k = u16::try_from(k).unwrap();
        sector[2..4].copy_from_slice(&(k + 2).to_le_bytes()); // avail idx: one more chain
                                                              // Ring entries are all 0: head 0 again. Then, at the second buffer, the header.
        sector[40..44].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
        sector[48..56].copy_from_slice(&u64::from(k + 1).to_le_bytes());
    }
    let mut h = Harness::with_image("busy", &image, false, true);
    let avail = h.q.avail_addr().0;
    let mut hdr = [0u8; 16];
    hdr[0..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
    h.mem.write_slice(&hdr, GuestAddress(NEXT)).unwrap();
    let head = h.q.put_chain(
        &h.mem,
        &[
            (NEXT, 16, 0),
            (avail, AVAIL_LEN, W),
            (NEXT, 512 - AVAIL_LEN, W),
            (STATUS, 1, W),
        ],
    );
    assert_eq!(head, 0);
    h.q.make_available(&h.mem, head);

    let first = h.block.process_queue(0);
    let served = h.q.used_idx(&h.mem);
    assert!(
        served <= QSIZE,
        "one process_queue call served {served} requests; the bound is {QSIZE}"
    );
    assert_eq!(first, Served::More);
    // The worker thread calls again until it is done: every request is served in the end.
    let mut calls = 1;
    while h.block.process_queue(0) == Served::More {
        calls += 1;
        assert!(calls < 1000);
    }
    assert!(calls > 1);
    // Sectors 0..63 served, then sector 64 is past the end and the chain stops coming back.
    assert_eq!(h.q.used_idx(&h.mem), SECTORS + 1);
    assert_eq!(h.block.stats().requests, u64::from(SECTORS) + 1);
    assert_eq!(h.block.stats().errors, 1);
}

#[test]
fn unknown_type_is_unsupp() {
    let mut h = Harness::new("unsupp", 8, false);
    h.header(0x4242, 0);
    assert_eq!(h.submit(&req(None)), (1, VIRTIO_BLK_S_UNSUPP));
}

#[test]
fn read_only_disk_refuses_writes() {
    let mut h = Harness::new("ro", 8, true);
    assert_ne!(h.device.features() & VIRTIO_BLK_F_RO, 0);
    assert_eq!(h.device.features() & VIRTIO_BLK_F_DISCARD, 0);
    let before = h.file();
    h.header(VIRTIO_BLK_T_OUT, 0);
    assert_eq!(
        h.submit(&req(Some((DATA, 512, 0)))),
        (1, VIRTIO_BLK_S_IOERR)
    );
    h.header(VIRTIO_BLK_T_IN, 0);
    assert_eq!(h.submit(&req(Some((DATA, 512, W)))), (513, VIRTIO_BLK_S_OK));
    assert_eq!(h.file(), before);
}

fn segment(sector: u64, sectors: u32, flags: u32) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[0..8].copy_from_slice(&sector.to_le_bytes());
    s[8..12].copy_from_slice(&sectors.to_le_bytes());
    s[12..16].copy_from_slice(&flags.to_le_bytes());
    s
}

#[test]
fn discard_and_write_zeroes() {
    let mut h = Harness::new("discard", 16, false);
    if h.device.features() & VIRTIO_BLK_F_DISCARD == 0 {
        eprintln!("host file system cannot punch holes; discard is not offered");
        return;
    }
    h.mem
        .write_slice(&segment(2, 2, 0), GuestAddress(DATA))
        .unwrap();
    h.header(VIRTIO_BLK_T_DISCARD, 0);
    assert_eq!(h.submit(&req(Some((DATA, 16, 0)))), (1, VIRTIO_BLK_S_OK));
    let f = h.file();
    assert!(f[2 * 512..4 * 512].iter().all(|&b| b == 0));
    assert_eq!((f[512], f[4 * 512]), (1, 4), "neighbours untouched");

    h.mem
        .write_slice(&segment(6, 1, 0), GuestAddress(DATA))
        .unwrap();
    h.header(VIRTIO_BLK_T_WRITE_ZEROES, 0);
    assert_eq!(h.submit(&req(Some((DATA, 16, 0)))), (1, VIRTIO_BLK_S_OK));
    assert!(h.file()[6 * 512..7 * 512].iter().all(|&b| b == 0));

    // Unmap is only valid on WRITE_ZEROES; a bad segment anywhere changes nothing.
    let before = h.file();
    h.mem
        .write_slice(&segment(8, 1, 1), GuestAddress(DATA))
        .unwrap();
    h.header(VIRTIO_BLK_T_DISCARD, 0);
    assert_eq!(h.submit(&req(Some((DATA, 16, 0)))).1, VIRTIO_BLK_S_UNSUPP);
    let mut two = segment(9, 1, 0).to_vec();
    two.extend(segment(15, 2, 0)); // runs past the end
    h.mem.write_slice(&two, GuestAddress(DATA)).unwrap();
    assert_eq!(h.submit(&req(Some((DATA, 32, 0)))).1, VIRTIO_BLK_S_IOERR);
    assert_eq!(
        h.submit(&req(Some((DATA, 20, 0)))).1,
        VIRTIO_BLK_S_IOERR,
        "not whole segments"
    );
    assert_eq!(h.file(), before);
}

#[test]
fn bogus_avail_index_needs_reset() {
    let mut h = Harness::new("avail", 8, false);
    // More entries "available" than the queue holds: a broken or hostile driver.
    h.q.set_avail_idx(&h.mem, QSIZE + 5);
    assert_eq!(h.block.process_queue(0), Served::Broken);
}

#[test]
fn config_space_reports_capacity_and_limits() {
    let h = Harness::new("config", 24, false);
    let mut cap = [0u8; 8];
    h.device.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 24);
    let mut blk_size = [0u8; 4];
    h.device.read_config(20, &mut blk_size);
    assert_eq!(u32::from_le_bytes(blk_size), 512);
    let mut beyond = [0xffu8; 8];
    h.device.read_config(4096, &mut beyond);
    assert_eq!(beyond, [0; 8]);
}

/// `request::handle` on chains built in memory, with limits small enough to reach (the
/// device's own are as large as its queue allows).
mod limits {
    use virtio_queue::desc::split::Descriptor;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    use super::super::request::{handle, Limits};
    use super::super::*;
    use super::{segment, DATA, HDR, MEM_SIZE, STATUS, W};

    const LIMITS: Limits = Limits {
        seg_max: 2,
        discard_seg_max: 2,
        discard_sectors_max: 4,
        max_data: 1024,
    };
    const ALL: u64 = VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_DISCARD | VIRTIO_BLK_F_WRITE_ZEROES;

    struct Setup {
        mem: GuestMemoryMmap,
        disk: DiskImage,
        path: std::path::PathBuf,
    }

    impl Drop for Setup {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    fn setup(name: &str) -> Setup {
        let path = std::env::temp_dir().join(format!("flint-lim-{}-{name}", std::process::id()));
        std::fs::write(&path, vec![0x11u8; 16 * 512]).unwrap();
        Setup {
            mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap(),
            disk: DiskImage::open(&path, false).unwrap(),
            path,
        }
    }

    /// Runs a request of `type_` at `sector` with these data buffers; returns its status.
    fn status(s: &Setup, type_: u32, sector: u64, data: &[(u64, u32, u16)]) -> u8 {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&type_.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        s.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
        let mut descs = vec![Descriptor::new(HDR, 16, 0, 0)];
        descs.extend(data.iter().map(|&(a, l, f)| Descriptor::new(a, l, f, 0)));
        descs.push(Descriptor::new(STATUS, 1, W, 0));
        let out = handle(&descs, &s.mem, &s.disk, &[0; 20], ALL, &LIMITS).unwrap();
        assert_eq!(
            s.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(),
            out.status
        );
        out.status
    }

    #[test]
    fn data_segments_and_length_are_bounded() {
        let s = setup("segs");
        let seg = |i: u64| (DATA + i * 512, 512, W);
        assert_eq!(
            status(&s, VIRTIO_BLK_T_IN, 0, &[seg(0), seg(1)]),
            VIRTIO_BLK_S_OK
        );
        assert_eq!(
            status(&s, VIRTIO_BLK_T_IN, 0, &[seg(0), seg(1), seg(2)]),
            VIRTIO_BLK_S_IOERR,
            "more than seg_max data descriptors"
        );
        // Empty descriptors count as segments too.
        assert_eq!(
            status(
                &s,
                VIRTIO_BLK_T_IN,
                0,
                &[(DATA, 0, W), (DATA, 0, W), seg(0)]
            ),
            VIRTIO_BLK_S_IOERR
        );
        assert_eq!(
            status(&s, VIRTIO_BLK_T_IN, 0, &[(DATA, 1536, W)]),
            VIRTIO_BLK_S_IOERR,
            "more than max_data"
        );
        // Two u32::MAX buffers: the total is checked without overflow, nothing is read.
        assert_eq!(
            status(
                &s,
                VIRTIO_BLK_T_IN,
                0,
                &[(DATA, u32::MAX, W), (DATA, u32::MAX, W)]
            ),
            VIRTIO_BLK_S_IOERR
        );
        // The last sector and one past it; a sector whose byte offset overflows.
        assert_eq!(status(&s, VIRTIO_BLK_T_IN, 15, &[seg(0)]), VIRTIO_BLK_S_OK);
        for sector in [16, u64::MAX >> 9, (u64::MAX >> 9) + 1, u64::MAX] {
            assert_eq!(
                status(&s, VIRTIO_BLK_T_IN, sector, &[seg(0)]),
                VIRTIO_BLK_S_IOERR,
                "sector {sector}"
            );
        }
    }

    #[test]
    fn discard_and_write_zeroes_segments_are_bounded() {
        let s = setup("discard");
        let before = std::fs::read(&s.path).unwrap();
        let put = |segs: &[[u8; 16]]| {
            s.mem
                .write_slice(&segs.concat(), GuestAddress(DATA))
                .unwrap();
            u32::try_from(segs.len() * 16).unwrap()
        };
        for t in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES] {
            // More than discard_seg_max segments, in one descriptor or spread over two.
            let len = put(&[segment(0, 1, 0), segment(1, 1, 0), segment(2, 1, 0)]);
            assert_eq!(status(&s, t, 0, &[(DATA, len, 0)]), VIRTIO_BLK_S_IOERR);
            assert_eq!(
                status(&s, t, 0, &[(DATA, 32, 0), (DATA + 32, 16, 0)]),
                VIRTIO_BLK_S_IOERR
            );
            // A segment longer than discard_sectors_max, past the disk, or overflowing.
            for seg in [
                segment(0, 5, 0),
                segment(15, 2, 0),
                segment(u64::MAX >> 9, 1, 0),
                segment(u64::MAX, 1, 0),
            ] {
                let len = put(&[seg]);
                assert_eq!(status(&s, t, 0, &[(DATA, len, 0)]), VIRTIO_BLK_S_IOERR);
            }
            // Segments read from device-writable buffers are refused.
            let len = put(&[segment(0, 1, 0)]);
            assert_eq!(status(&s, t, 0, &[(DATA, len, W)]), VIRTIO_BLK_S_IOERR);
        }
        assert_eq!(std::fs::read(&s.path).unwrap(), before, "nothing changed");
    }
}
