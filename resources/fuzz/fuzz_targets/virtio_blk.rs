//! virtio-blk requests: one descriptor chain, built from the input the way a (hostile) driver
//! lays out a request in guest memory, handed to the request parser and executed on a scratch
//! disk image (`flint_vmm::devices::virtio::block::request::handle`, what the device's queue
//! worker calls for each chain).
//!
//! Input: a config byte (offered features, read-only disk, tight limits), the limits if tight,
//! a descriptor count, then per descriptor a placement byte, a length, flags and (for a fresh
//! buffer) its contents. Checked after each request: the status byte the device reports is
//! the one in guest memory, the used length never exceeds the device-writable bytes, a read
//! that succeeded filled exactly its buffers, and the image never changes size.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use flint_fuzz::{clear, guest_memory, scratch_dir, Input, F_NEXT, F_WRITE};
use flint_vmm::devices::virtio::block::request::{handle, Limits, RequestHeader};
use flint_vmm::devices::virtio::block::*;
use flint_vmm::devices::virtio::VIRTIO_F_VERSION_1;
use libfuzzer_sys::fuzz_target;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest RAM: 128 KiB at 0.
const MEM: usize = 0x2_0000;
/// The scratch disks: 64 KiB (128 sectors).
const DISK: usize = 0x1_0000;

/// What the device uses (block/device.rs).
const DEVICE_LIMITS: Limits = Limits {
    seg_max: 254,
    discard_seg_max: 32,
    discard_sectors_max: u32::MAX >> 9,
    max_data: 32 << 20,
};

struct State {
    mem: GuestMemoryMmap,
    rw: DiskImage,
    ro: DiskImage,
    rw_path: PathBuf,
    serial: [u8; VIRTIO_BLK_ID_BYTES],
}

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let dir = scratch_dir("blk");
        let rw_path = dir.join("rw.img");
        let ro_path = dir.join("ro.img");
        std::fs::write(&rw_path, vec![0u8; DISK]).unwrap();
        std::fs::write(&ro_path, vec![0x5au8; DISK]).unwrap();
        State {
            mem: guest_memory(MEM),
            rw: DiskImage::open(&rw_path, false).unwrap(),
            ro: DiskImage::open(&ro_path, true).unwrap(),
            rw_path,
            serial: *b"flint-fuzz-serial-01",
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = state();
    clear(&s.mem, MEM);
    let mut input = Input::new(data);

    let cfg = input.u8();
    let mut features = VIRTIO_F_VERSION_1;
    for (bit, feature) in [
        (1, VIRTIO_BLK_F_FLUSH),
        (2, VIRTIO_BLK_F_DISCARD),
        (4, VIRTIO_BLK_F_WRITE_ZEROES),
    ] {
        if cfg & bit != 0 {
            features |= feature;
        }
    }
    let disk = if cfg & 8 != 0 { &s.ro } else { &s.rw };
    let limits = if cfg & 16 != 0 {
        Limits {
            seg_max: usize::from(input.u8() % 8),
            discard_seg_max: usize::from(input.u8() % 8),
            discard_sectors_max: u32::from(input.u16()),
            max_data: u64::from(input.u32() % (1 << 20)),
        }
    } else {
        DEVICE_LIMITS
    };

    // The chain, as a driver lays it out: mostly fresh buffers one after another in RAM
    // (their contents from the input), sometimes anywhere at all.
    let count = usize::from(input.u8() % 12);
    let mut descs = Vec::with_capacity(count);
    let mut next_free = 0x1000u64;
    let mut prev = (0u64, 0u32);
    for i in 0..count {
        let place = input.u8();
        let len = input.len32();
        let mut flags = 0;
        if place & 0x80 != 0 {
            flags |= F_WRITE;
        }
        if i + 1 < count {
            flags |= F_NEXT;
        }
        let addr = match place & 7 {
            0 => input.addr(MEM as u64),
            1 => prev.0.wrapping_add(u64::from(input.u8())), // overlapping the last one
            _ => {
                let at = next_free;
                let room = (MEM as u64).saturating_sub(at);
                let fill = usize::try_from(u64::from(len).min(room)).unwrap();
                let bytes = input.bytes(fill);
                s.mem.write_slice(bytes, GuestAddress(at)).unwrap();
                next_free = (at + u64::from(len)).min(MEM as u64);
                at
            }
        };
        prev = (addr, len);
        let next = u16::try_from(i + 1).unwrap();
        descs.push(Descriptor::new(addr, len, flags, next));
    }

    let size_before = std::fs::metadata(&s.rw_path).unwrap().len();
    // The header as the device will read it (a read may overwrite it afterwards).
    let hdr: Option<RequestHeader> = descs.first().and_then(|d| s.mem.read_obj(d.addr()).ok());
    let result = handle(&descs, &s.mem, disk, &s.serial, features, &limits);
    if let Ok(out) = result {
        let status_desc = descs.last().unwrap();
        let in_ram: u8 = s.mem.read_obj(status_desc.addr()).unwrap();
        assert_eq!(in_ram, out.status, "status byte in RAM vs reported");
        let data = &descs[1..descs.len() - 1];
        let writable: u64 = data
            .iter()
            .filter(|d| d.is_write_only())
            .map(|d| u64::from(d.len()))
            .sum();
        assert!(
            u64::from(out.written) <= writable + 1,
            "used length {} beyond the {writable} writable bytes and the status",
            out.written
        );
        if out.status == VIRTIO_BLK_S_OK
            && hdr.is_some_and(|h| h.type_.to_native() == VIRTIO_BLK_T_IN)
        {
            assert_eq!(
                u64::from(out.written),
                writable + 1,
                "a successful read fills its buffers"
            );
        }
    }
    let size_after = std::fs::metadata(&s.rw_path).unwrap().len();
    assert_eq!(size_before, size_after, "the image changed size");
});
