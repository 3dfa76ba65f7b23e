//! The virtio-mmio transport (`MmioTransport`) with a real virtio-blk device behind it on a
//! scratch image: register reads and writes of any width and offset, queue setup, resets, and
//! the device's worker serving queue 0 (`device_queues().process_queue`) as its thread would.
//!
//! Input: a config byte (read-only disk), then operations until the input ends: a register
//! write or read, a driver's negotiation up to FEATURES_OK, a queue's setup (canonical or
//! raw addresses and sizes), DRIVER_OK, a block request put on queue 0 and notified, the
//! worker serving a queue, raw RAM writes (rings included), raw descriptors. Checked after
//! each step, as the robustness tests do: the status register holds known bits only,
//! InterruptStatus only its two bits, QueueNumMax is the device's (or 0), the identity
//! registers never change.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use flint_fuzz::{clear, guest_memory, scratch_dir, Input, Ring, F_NEXT, F_WRITE};
use flint_vmm::bus::BusDevice;
use flint_vmm::devices::virtio::block::{Block, DiskImage};
use flint_vmm::devices::virtio::mmio::*;
use flint_vmm::devices::virtio::{status, Interrupt, IrqLine, VirtioDevice};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// Guest RAM: 128 KiB.
const MEM: usize = 0x2_0000;
const MAX_OPS: usize = 128;

const REGS: [u64; 26] = [
    REG_MAGIC,
    REG_VERSION,
    REG_DEVICE_ID,
    REG_DEVICE_FEATURES,
    REG_DEVICE_FEATURES_SEL,
    REG_DRIVER_FEATURES,
    REG_DRIVER_FEATURES_SEL,
    REG_QUEUE_SEL,
    REG_QUEUE_NUM_MAX,
    REG_QUEUE_NUM,
    REG_QUEUE_READY,
    REG_QUEUE_NOTIFY,
    REG_INTERRUPT_STATUS,
    REG_INTERRUPT_ACK,
    REG_STATUS,
    REG_QUEUE_DESC_LOW,
    REG_QUEUE_DESC_HIGH,
    REG_QUEUE_DRIVER_LOW,
    REG_QUEUE_DRIVER_HIGH,
    REG_QUEUE_DEVICE_LOW,
    REG_QUEUE_DEVICE_HIGH,
    REG_CONFIG_GENERATION,
    CONFIG_SPACE,
    CONFIG_SPACE + 8,
    CONFIG_SPACE + 56,
    0x3,
];

const KNOWN_STATUS: u32 = status::ACKNOWLEDGE
    | status::DRIVER
    | status::DRIVER_OK
    | status::FEATURES_OK
    | status::DEVICE_NEEDS_RESET
    | status::FAILED;

struct Images {
    rw: PathBuf,
    ro: PathBuf,
    mem: GuestMemoryMmap,
}

fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let dir = scratch_dir("mmio");
        let (rw, ro) = (dir.join("rw.img"), dir.join("ro.img"));
        std::fs::write(&rw, vec![0u8; 0x1_0000]).unwrap();
        std::fs::write(&ro, vec![0u8; 0x1_0000]).unwrap();
        Images {
            rw,
            ro,
            mem: guest_memory(MEM),
        }
    })
}

fn rd(t: &mut MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn low32(v: u64) -> u32 {
    u32::try_from(v & 0xffff_ffff).unwrap()
}

fn wr(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

/// A register value a driver might plausibly (or maliciously) write.
fn value(input: &mut Input) -> u32 {
    match input.u8() % 6 {
        0 => u32::from(input.u8() % 16),
        1 => [1, 3, 7, 11, 15, 0x8f, 0x40][usize::from(input.u8() % 7)],
        2 => u32::from(input.u16() & !0xf) * 2, // an address in RAM
        3 => 1 << (input.u8() % 32),
        4 => u32::MAX,
        _ => input.u32(),
    }
}

fn check(t: &mut MmioTransport) {
    let st = rd(t, REG_STATUS);
    assert_eq!(st & !KNOWN_STATUS, 0, "status {st:#x}");
    let is = rd(t, REG_INTERRUPT_STATUS);
    assert_eq!(is & !3, 0, "interrupt status {is:#x}");
    assert_eq!(rd(t, REG_MAGIC), 0x7472_6976);
    assert_eq!(rd(t, REG_VERSION), 2);
    assert_eq!(rd(t, REG_DEVICE_ID), 2);
    let max = rd(t, REG_QUEUE_NUM_MAX);
    assert!(max == 0 || max == 256, "QueueNumMax {max}");
}

fuzz_target!(|data: &[u8]| {
    let img = images();
    let mem = &img.mem;
    clear(mem, MEM);
    let mut input = Input::new(data);
    let read_only = input.bool();
    let disk = DiskImage::open(if read_only { &img.ro } else { &img.rw }, read_only).unwrap();
    let device: Box<dyn VirtioDevice> = Box::new(Block::new(disk, "fuzz"));
    let offered = device.features();
    let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let interrupt = Arc::new(Interrupt::new(IrqLine::Fd(irq)));
    let mut t = MmioTransport::new(device, mem.clone(), interrupt).unwrap();

    // Where the harness last put queue 0's rings (for request and descriptor ops).
    let mut ring = Ring::new(0, 0x1000, 0x2000, 256);
    let mut next_desc = 0u16;
    let mut next_buf = 0x1_0000u64;
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 12 {
            // A register write of any width at a register (or any) offset.
            0..=2 => {
                let off = if input.one_in(8) {
                    u64::from(input.u16() & 0x1ff)
                } else {
                    REGS[usize::from(input.u8()) % REGS.len()]
                };
                let v = value(&mut input).to_le_bytes();
                let width = [4, 4, 4, 1, 2, 8, 3, 0][usize::from(input.u8() % 8)];
                let mut bytes = v.to_vec();
                bytes.resize(width, 0xff);
                t.write(off, &bytes);
            }
            // A register read of any width.
            3 => {
                let off = u64::from(input.u16() & 0x1ff);
                let mut b = vec![0u8; [4, 1, 2, 8, 0][usize::from(input.u8() % 5)]];
                t.read(off, &mut b);
            }
            // A driver negotiating features up to FEATURES_OK.
            4 => {
                wr(&mut t, REG_STATUS, 0);
                wr(&mut t, REG_STATUS, status::ACKNOWLEDGE);
                wr(&mut t, REG_STATUS, status::ACKNOWLEDGE | status::DRIVER);
                let want = offered & (input.u64() | 1 << 32);
                for sel in 0..2u32 {
                    wr(&mut t, REG_DRIVER_FEATURES_SEL, sel);
                    let half = if sel == 0 { want } else { want >> 32 };
                    wr(&mut t, REG_DRIVER_FEATURES, low32(half));
                }
                wr(
                    &mut t,
                    REG_STATUS,
                    status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
                );
            }
            // A queue's setup: size, ring addresses (canonical or raw), ready.
            5 => {
                let sel = u32::from(input.u8() % 3);
                wr(&mut t, REG_QUEUE_SEL, sel);
                let size = if input.one_in(8) {
                    input.u32()
                } else {
                    1 << (input.u8() % 10)
                };
                wr(&mut t, REG_QUEUE_NUM, size);
                let (desc, avail, used) = if input.one_in(8) {
                    (
                        u64::from(input.u32()),
                        u64::from(input.u32()),
                        u64::from(input.u32()),
                    )
                } else {
                    let base = u64::from(input.u8() % 8) * 0x2000;
                    (base, base + 0x1000, base + 0x1800)
                };
                for (low, v) in [
                    (REG_QUEUE_DESC_LOW, desc),
                    (REG_QUEUE_DRIVER_LOW, avail),
                    (REG_QUEUE_DEVICE_LOW, used),
                ] {
                    wr(&mut t, low, low32(v));
                    wr(&mut t, low + 4, 0);
                }
                wr(&mut t, REG_QUEUE_READY, 1);
                if sel == 0 {
                    if let Ok(size) = u16::try_from(size) {
                        ring = Ring::new(desc, avail, used, size.max(1));
                        next_desc = 0;
                    }
                }
            }
            // DRIVER_OK (or any status value).
            6 => {
                let v = if input.bool() { 15 } else { value(&mut input) };
                wr(&mut t, REG_STATUS, v);
            }
            // A block request on queue 0 (header, one data buffer, status), then a notify.
            7 => {
                let kind = [0u32, 1, 4, 8, 11, 13, 99][usize::from(input.u8() % 7)];
                let sector = u64::from(input.u8());
                let len = u32::from(input.u8()) * 64;
                let hdr_at = next_buf;
                let mut hdr = [0u8; 16];
                hdr[..4].copy_from_slice(&kind.to_le_bytes());
                hdr[8..].copy_from_slice(&sector.to_le_bytes());
                let _ = mem.write_slice(&hdr, GuestAddress(hdr_at));
                let data_at = hdr_at + 16;
                let status_at = data_at + u64::from(len);
                next_buf = if status_at + 1 >= MEM as u64 - 0x100 {
                    0x1_0000
                } else {
                    status_at + 1
                };
                let data_flags = if kind == 0 || kind == 8 { F_WRITE } else { 0 };
                let head = next_desc;
                let n = ring.size;
                let (d1, d2) = ((head + 1) % n, (head + 2) % n);
                ring.put_desc(mem, head, hdr_at, 16, F_NEXT, d1);
                ring.put_desc(mem, d1, data_at, len, F_NEXT | data_flags, d2);
                ring.put_desc(mem, d2, status_at, 1, F_WRITE, 0);
                next_desc = (head + 3) % n;
                ring.make_available(mem, head);
                wr(&mut t, REG_QUEUE_NOTIFY, 0);
            }
            // The worker thread serving a notification, or backend input.
            8 => {
                let q = usize::from(input.u8() % 3);
                t.device_queues().process_queue(q);
                t.device_queues().process_backend(0);
            }
            // Raw RAM writes: rings, buffers, anything.
            9 => {
                let at = u64::from(input.u32()) % MEM as u64;
                let n = usize::from(input.u8() % 16);
                let bytes = input.bytes(n);
                let _ = mem.write_slice(bytes, GuestAddress(at));
            }
            // A raw descriptor in queue 0's table.
            10 => {
                let index = input.u16();
                let addr = input.addr(MEM as u64);
                let len = input.len32();
                let flags = input.u16() & 7;
                let next = input.u16();
                ring.put_desc(mem, index, addr, len, flags, next);
            }
            // A raw avail entry or index.
            _ => {
                let v = input.u16();
                if input.bool() {
                    ring.make_available(mem, v);
                } else {
                    ring.set_avail_idx(mem, v);
                }
            }
        }
        check(&mut t);
    }
    t.device_queues().process_queue(0);
    check(&mut t);
    // Reset: the worker is dropped and the disk closed with the transport.
    wr(&mut t, REG_STATUS, 0);
    assert_eq!(rd(&mut t, REG_STATUS), 0, "after a reset");
});
