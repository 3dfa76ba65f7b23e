//! The block device driven through a split virtqueue written into guest memory, the way a
//! driver would: good requests, and every kind of malformed chain a malicious guest can send.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::devices::irq::IrqLine;
use crate::devices::virtio::testing::{TestQueue, F_NEXT, F_WRITE};
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
    fn new(name: &str, sectors: u64, read_only: bool) -> Harness {
        let path = std::env::temp_dir().join(format!("flint-blk-{}-{name}", std::process::id()));
        let image: Vec<u8> = (0..sectors * SECTOR_SIZE)
            .map(|i| ((i / SECTOR_SIZE) & 0xff) as u8)
            .collect();
        std::fs::write(&path, image).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let device = Block::new(DiskImage::open(&path, read_only).unwrap(), "test-serial");
        let (q, queue) = TestQueue::new(&mem, GuestAddress(0), QSIZE);
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let features = device.features();
        let block = device
            .start(ActivateContext {
                mem: mem.clone(),
                queues: vec![queue],
                acked_features: features & !crate::devices::virtio::VIRTIO_RING_F_EVENT_IDX,
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
        self.q.make_available(&self.mem, head);
        assert_eq!(
            self.block.process_queue(0),
            Served::Done,
            "device must not need a reset"
        );
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
    let n = F_NEXT;
    // 0 -> 1 -> 0 -> ...: the walk is bounded by the queue size; no hang, no panic.
    let head = h.put_raw(&[(HDR, 16, n, 1), (DATA, 512, W | n, 0)]);
    let len = h.run(head);
    assert!(len <= 1, "completed with at most a status byte, got {len}");
    // A `next` index beyond the table.
    let head = h.put_raw(&[(HDR, 16, n, 1000)]);
    assert_eq!(h.run(head), 0);
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
