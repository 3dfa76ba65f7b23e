//! A hostile driver: random register writes and random ring contents, thousands of times, against
//! the real transport with a block, a net and a vsock device behind it. Nothing may panic, and
//! what the guest can read back must stay within the spec's bounds.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::block::{Block, DiskImage};
use super::mmio::*;
use super::net::{Mac, Net};
use super::testing::{seqpacket_pair, SocketBackend};
use super::{status, Interrupt, VirtioDevice};
use crate::bus::BusDevice;
use crate::devices::irq::IrqLine;

const MEM_SIZE: usize = 1 << 20;

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// `below` for a u32 bound: the same draw, as a u32.
    fn below_u32(&mut self, n: u32) -> u32 {
        u32::try_from(self.below(u64::from(n))).unwrap()
    }
    /// `below` for an index into `n` things: the same draw, as a usize.
    fn index(&mut self, n: usize) -> usize {
        usize::try_from(self.below(n as u64)).unwrap()
    }
    /// The low 32 bits of the next draw.
    fn next_u32(&mut self) -> u32 {
        (self.next() & 0xffff_ffff) as u32
    }
}

const REGS: [u64; 22] = [
    REG_MAGIC,
    REG_DEVICE_FEATURES_SEL,
    REG_DRIVER_FEATURES,
    REG_DRIVER_FEATURES_SEL,
    REG_QUEUE_SEL,
    REG_QUEUE_NUM,
    REG_QUEUE_READY,
    REG_QUEUE_NOTIFY,
    REG_INTERRUPT_ACK,
    REG_STATUS,
    REG_STATUS,
    REG_STATUS,
    REG_QUEUE_DESC_LOW,
    REG_QUEUE_DESC_HIGH,
    REG_QUEUE_DRIVER_LOW,
    REG_QUEUE_DRIVER_HIGH,
    REG_QUEUE_DEVICE_LOW,
    REG_QUEUE_DEVICE_HIGH,
    CONFIG_SPACE,
    CONFIG_SPACE + 8,
    0x3,
    0xfff,
];

/// A register value a driver might plausibly (or maliciously) write.
fn value(rng: &mut Rng) -> u32 {
    match rng.below(6) {
        0 => rng.below_u32(16),
        1 => [1, 3, 7, 11, 15, 0x8f][rng.index(6)],
        2 => rng.below_u32(u32::try_from(MEM_SIZE / 0x100).unwrap()) * 0x100,
        3 => 1 << rng.below(32),
        4 => u32::MAX,
        _ => rng.next_u32(),
    }
}

/// Sets the device up as a driver would, but with random queue sizes and ring addresses.
fn negotiate(t: &mut MmioTransport, rng: &mut Rng) {
    let w = |t: &mut MmioTransport, off: u64, v: u32| t.write(off, &v.to_le_bytes());
    w(t, REG_STATUS, 0);
    w(t, REG_STATUS, status::ACKNOWLEDGE);
    w(t, REG_STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w(t, REG_DEVICE_FEATURES_SEL, 0);
    let mut f = [0u8; 4];
    t.read(REG_DEVICE_FEATURES, &mut f);
    w(t, REG_DRIVER_FEATURES_SEL, 0);
    w(
        t,
        REG_DRIVER_FEATURES,
        u32::from_le_bytes(f) & rng.next_u32(),
    );
    w(t, REG_DRIVER_FEATURES_SEL, 1);
    w(t, REG_DRIVER_FEATURES, 1); // VERSION_1
    w(
        t,
        REG_STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    for q in 0..2 {
        w(t, REG_QUEUE_SEL, q);
        w(t, REG_QUEUE_NUM, 1 << rng.below(9));
        let base = rng.below_u32(0x1_0000) & !0xf;
        w(t, REG_QUEUE_DESC_LOW, base);
        w(t, REG_QUEUE_DRIVER_LOW, base + 0x1000);
        w(t, REG_QUEUE_DEVICE_LOW, base + 0x2000);
        w(t, REG_QUEUE_READY, 1);
    }
    w(
        t,
        REG_STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
    );
}

/// Returns in how many rounds the device was being served (DRIVER_OK without NEEDS_RESET).
fn hammer(device: Box<dyn VirtioDevice>, seed: u64, rounds: usize) -> usize {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let interrupt = Arc::new(Interrupt::new(IrqLine::Fd(irq.try_clone().unwrap())));
    let mut t = MmioTransport::new(device, mem.clone(), interrupt).unwrap();
    let mut rng = Rng(seed);
    let mut served = 0;
    for _ in 0..rounds {
        if rng.below(40) == 0 {
            negotiate(&mut t, &mut rng);
        }
        // Scribble over the part of RAM where rings and buffers usually are.
        for _ in 0..rng.below(64) {
            let at = GuestAddress(rng.below(0x2_0000));
            mem.write_obj(rng.next(), at).unwrap_or(());
        }
        for _ in 0..rng.below(8) {
            let off = REGS[rng.index(REGS.len())];
            let mut v = value(&mut rng).to_le_bytes().to_vec();
            v.truncate([4, 4, 4, 1, 2, 8][rng.index(6)].min(4));
            t.write(off, &v);
            let mut r = vec![0u8; [4, 1, 8][rng.index(3)]];
            t.read(rng.below(0x200), &mut r);
        }
        // What the device's worker thread would do on notifications and backend input.
        for q in 0..3 {
            t.device_queues().process_queue(q);
        }
        for b in 0..2 {
            t.device_queues().process_backend(b);
        }
        let mut s = [0u8; 4];
        t.read(REG_STATUS, &mut s);
        let st = u32::from_le_bytes(s);
        let known = status::ACKNOWLEDGE
            | status::DRIVER
            | status::DRIVER_OK
            | status::FEATURES_OK
            | status::DEVICE_NEEDS_RESET
            | status::FAILED;
        assert_eq!(st & !known, 0, "status {st:#x}");
        if st & (status::DRIVER_OK | status::DEVICE_NEEDS_RESET) == status::DRIVER_OK {
            served += 1;
        }
        t.read(REG_INTERRUPT_STATUS, &mut s);
        assert_eq!(u32::from_le_bytes(s) & !3, 0);
    }
    served
}

#[test]
fn hostile_driver_against_block() {
    let path = std::env::temp_dir().join(format!("flint-robust-{}.img", std::process::id()));
    std::fs::write(&path, vec![0u8; 64 * 1024]).unwrap();
    for seed in 1..=8 {
        let disk = DiskImage::open(&path, seed % 2 == 0).unwrap();
        let served = hammer(Box::new(Block::new(disk, "robust")), seed, 3000);
        assert!(
            served > 100,
            "seed {seed}: the device was served in only {served} rounds"
        );
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn hostile_driver_against_net() {
    for seed in 1..=8 {
        let (dev, peer) = seqpacket_pair();
        // The host side keeps sending frames of every size while the driver misbehaves.
        let sender = std::thread::spawn(move || {
            let mut rng = Rng(seed * 77);
            for _ in 0..2000 {
                let frame = vec![0x5au8; 1 + rng.index(9000)];
                // SAFETY: sends from a valid buffer on our socket; a full socket just fails.
                unsafe { libc::send(peer.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            }
        });
        hammer(
            Box::new(Net::new(
                Box::new(SocketBackend(dev)),
                Mac([6, 0, 0, 0, 0, 1]),
                None,
            )),
            seed,
            3000,
        );
        sender.join().unwrap();
    }
}

#[test]
fn hostile_driver_against_vsock() {
    use super::vsock::{Vsock, VsockBackend};
    use std::io::Write;
    for seed in 1..=4 {
        let dir =
            std::env::temp_dir().join(format!("flint-robust-vsock-{}-{seed}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("v.sock");
        let backend = VsockBackend::bind(&uds).unwrap();
        // Host clients keep connecting, asking for ports and sending bytes, while the driver
        // misbehaves; a guest port 1-3 socket takes whatever the guest connects.
        let _guest_side = std::os::unix::net::UnixListener::bind(format!("{}_1", uds.display()));
        let path = uds.clone();
        let clients = std::thread::spawn(move || {
            let mut rng = Rng(seed * 31);
            let mut open = Vec::new();
            for _ in 0..200 {
                if let Ok(mut c) = std::os::unix::net::UnixStream::connect(&path) {
                    c.set_nonblocking(true).unwrap();
                    let line = match rng.below(4) {
                        0 => b"CONNECT 1\n".to_vec(),
                        1 => format!("CONNECT {}\n", rng.next_u32()).into_bytes(),
                        2 => vec![b'C'; 40],
                        _ => Vec::new(),
                    };
                    let _ = c.write_all(&line);
                    let _ = c.write(&vec![0x33; rng.index(5000)]);
                    open.push(c);
                    if open.len() > 20 {
                        open.remove(rng.index(open.len()));
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        hammer(Box::new(Vsock::new(3, backend)), seed, 3000);
        clients.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
