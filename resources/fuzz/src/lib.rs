//! Helpers shared by flint's fuzz targets (`fuzz_targets/`): a reader that turns the fuzzer's
//! bytes into decisions, a scratch directory, a small split-virtqueue "driver" that lays out
//! rings in guest memory, and the C run-spec parser (`c/spec_fuzz.c`).
//!
//! Everything here is for the fuzz harnesses only; the library crates are used through their
//! public API as flint itself uses them.

use std::path::{Path, PathBuf};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub mod spec_c;

/// Reads decisions from the fuzz input; past its end every read is 0, so any input is a
/// complete (if short) program.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        for b in &mut a {
            *b = self.u8();
        }
        a
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// True about once in `n` (for a random input).
    pub fn one_in(&mut self, n: u8) -> bool {
        self.u8().is_multiple_of(n.max(1))
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }

    /// Up to `max` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = max.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// A guest address: mostly inside `[0, window)` (where the harness's RAM is), sometimes
    /// just past it or anywhere in the 64-bit space, so that the bounds checks are exercised.
    pub fn addr(&mut self, window: u64) -> u64 {
        match self.u8() & 7 {
            0 => self.u64(),
            1 => window.wrapping_sub(u64::from(self.u8())),
            _ => u64::from(self.u32()) % window.max(1),
        }
    }

    /// A buffer length: mostly small, sometimes any 32-bit value.
    pub fn len32(&mut self) -> u32 {
        match self.u8() & 3 {
            0 => self.u32(),
            1 => u32::from(self.u8()),
            _ => u32::from(self.u16()),
        }
    }
}

/// A per-process scratch directory on tmpfs where there is one (fdatasync is then free): the
/// fuzz targets' disk images and bundles live there.
pub fn scratch_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("FLINT_FUZZ_SCRATCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let shm = Path::new("/dev/shm");
            if shm.is_dir() {
                shm.to_path_buf()
            } else {
                std::env::temp_dir()
            }
        });
    let dir = base.join(format!("flint-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Guest RAM of `size` bytes at address 0.
pub fn guest_memory(size: usize) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).expect("guest memory")
}

/// Zeroes guest RAM between inputs, so that one input's rings do not leak into the next.
pub fn clear(mem: &GuestMemoryMmap, size: usize) {
    const CHUNK: [u8; 4096] = [0; 4096];
    let mut at = 0usize;
    while at < size {
        let n = CHUNK.len().min(size - at);
        mem.write_slice(&CHUNK[..n], GuestAddress(at as u64))
            .expect("clearing guest RAM");
        at += n;
    }
}

/// Descriptor flags, as flint's own test driver spells them.
pub use flint_vmm::devices::virtio::testing::{F_INDIRECT, F_NEXT, F_WRITE};

/// A split virtqueue's rings in guest memory, filled in as a (possibly hostile) driver would.
pub struct Ring {
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub size: u16,
    next_avail: u16,
}

impl Ring {
    pub fn new(desc: u64, avail: u64, used: u64, size: u16) -> Ring {
        Ring {
            desc,
            avail,
            used,
            size,
            next_avail: 0,
        }
    }

    /// Writes descriptor `index` (modulo the queue size) of the table.
    pub fn put_desc(
        &self,
        mem: &GuestMemoryMmap,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..].copy_from_slice(&next.to_le_bytes());
        let at = self.desc + 16 * u64::from(index % self.size.max(1));
        let _ = mem.write_slice(&raw, GuestAddress(at));
    }

    /// Puts `head` in the next avail slot and publishes it.
    pub fn make_available(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = u64::from(self.next_avail % self.size.max(1));
        let _ = mem.write_obj(head, GuestAddress(self.avail + 4 + 2 * slot));
        self.next_avail = self.next_avail.wrapping_add(1);
        self.set_avail_idx(mem, self.next_avail);
    }

    /// Writes the avail index as a driver would (a hostile one writes anything).
    pub fn set_avail_idx(&self, mem: &GuestMemoryMmap, idx: u16) {
        let _ = mem.write_obj(idx, GuestAddress(self.avail + 2));
    }

    /// The used index the device published.
    pub fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(GuestAddress(self.used + 2)).unwrap_or(0)
    }

    /// Used ring entry `n` (counting from 0 since the start): (descriptor head, length).
    pub fn used(&self, mem: &GuestMemoryMmap, n: u16) -> (u32, u32) {
        let elem = self.used + 4 + 8 * u64::from(n % self.size.max(1));
        (
            mem.read_obj(GuestAddress(elem)).unwrap_or(0),
            mem.read_obj(GuestAddress(elem + 4)).unwrap_or(0),
        )
    }
}

/// Bytes a ring of `size` entries takes: descriptor table, avail ring, used ring (with the
/// EVENT_IDX words).
pub fn ring_bytes(size: u16) -> (u64, u64, u64) {
    let n = u64::from(size);
    (16 * n, 6 + 2 * n, 6 + 8 * n)
}
