//! One virtio-blk request: parsed from an untrusted descriptor chain, checked, and executed.
//!
//! Layout (§5.2.6): a device-readable 16-byte header, data descriptors (device-writable for
//! reads, device-readable for writes), and a device-writable status byte in the last
//! descriptor. Anything that does not fit gets VIRTIO_BLK_S_IOERR (or UNSUPP for unknown
//! types); a chain with no usable status byte is completed without one.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, ByteValued, Bytes, GuestMemoryMmap, Le32, Le64};

use super::*;
use crate::devices::virtio::iovec::GuestIovecs;

/// The request header as the guest lays it out.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct RequestHeader {
    pub type_: Le32,
    pub reserved: Le32,
    pub sector: Le64,
}
// SAFETY: plain little-endian integers, no padding, any bit pattern valid.
unsafe impl ByteValued for RequestHeader {}

/// One DISCARD / WRITE_ZEROES segment.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct DiscardSegment {
    sector: Le64,
    num_sectors: Le32,
    flags: Le32,
}
// SAFETY: plain little-endian integers, no padding, any bit pattern valid.
unsafe impl ByteValued for DiscardSegment {}

const WRITE_ZEROES_FLAG_UNMAP: u32 = 1;

/// Limits a request must respect; also what the device advertises in its config space.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Data descriptors per request (config `seg_max`).
    pub seg_max: usize,
    /// Segments per DISCARD / WRITE_ZEROES request.
    pub discard_seg_max: usize,
    /// Sectors per DISCARD / WRITE_ZEROES segment.
    pub discard_sectors_max: u32,
    /// Largest data payload of one request, bytes.
    pub max_data: u64,
}

/// Why a chain could not even report a status.
#[derive(Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Fewer than two descriptors, or the last one is not a writable byte in guest memory.
    NoStatus,
}

pub struct Outcome {
    pub status: u8,
    /// Bytes the device wrote into the chain's buffers (data + status), for the used ring.
    pub written: u32,
}

/// Handles the request in `descs` (the chain, already walked: bounded by the queue size).
pub fn handle(
    descs: &[Descriptor],
    mem: &GuestMemoryMmap,
    disk: &DiskImage,
    serial: &[u8; VIRTIO_BLK_ID_BYTES],
    features: u64,
    limits: &Limits,
) -> Result<Outcome, Dropped> {
    let (status_desc, rest) = match descs.split_last() {
        Some((s, rest)) if !rest.is_empty() => (s, rest),
        _ => return Err(Dropped::NoStatus),
    };
    let status_addr = status_desc.addr();
    if !status_desc.is_write_only()
        || status_desc.len() < 1
        || mem.write_obj(0xffu8, status_addr).is_err()
    {
        return Err(Dropped::NoStatus);
    }
    let (status, data_written) = match execute(rest, mem, disk, serial, features, limits) {
        Ok(n) => (VIRTIO_BLK_S_OK, n),
        Err(s) => (s, 0),
    };
    // Checked writable just above; the guest cannot unmap its own RAM.
    let _ = mem.write_obj(status, status_addr);
    Ok(Outcome {
        status,
        // At most `limits.max_data` + 1: no overflow, but the used length never wraps anyway.
        written: data_written.saturating_add(1),
    })
}

/// Runs the request; Ok(bytes written to the guest) or Err(status).
fn execute(
    descs: &[Descriptor],
    mem: &GuestMemoryMmap,
    disk: &DiskImage,
    serial: &[u8; VIRTIO_BLK_ID_BYTES],
    features: u64,
    limits: &Limits,
) -> Result<u32, u8> {
    let (head, data) = descs.split_first().ok_or(VIRTIO_BLK_S_IOERR)?;
    if head.is_write_only() || (head.len() as usize) < std::mem::size_of::<RequestHeader>() {
        return Err(VIRTIO_BLK_S_IOERR);
    }
    let hdr: RequestHeader = mem.read_obj(head.addr()).map_err(|_| VIRTIO_BLK_S_IOERR)?;
    let sector = hdr.sector.to_native();
    if data.len() > limits.seg_max {
        return Err(VIRTIO_BLK_S_IOERR);
    }
    match hdr.type_.to_native() {
        VIRTIO_BLK_T_IN => {
            let n = transfer(data, mem, disk, sector, limits, true)?;
            // The used ring's length is 32 bits; `limits.max_data` keeps a read far below that.
            u32::try_from(n).map_err(|_| VIRTIO_BLK_S_IOERR)
        }
        VIRTIO_BLK_T_OUT => {
            if disk.read_only() {
                return Err(VIRTIO_BLK_S_IOERR);
            }
            transfer(data, mem, disk, sector, limits, false)?;
            Ok(0)
        }
        VIRTIO_BLK_T_FLUSH => {
            if features & VIRTIO_BLK_F_FLUSH == 0 {
                return Err(VIRTIO_BLK_S_UNSUPP);
            }
            disk.flush().map_err(|_| VIRTIO_BLK_S_IOERR)?;
            Ok(0)
        }
        VIRTIO_BLK_T_GET_ID => {
            let d = match data {
                [d] if d.is_write_only() => d,
                _ => return Err(VIRTIO_BLK_S_IOERR),
            };
            let n = (d.len() as usize).min(VIRTIO_BLK_ID_BYTES);
            mem.write_slice(&serial[..n], d.addr())
                .map_err(|_| VIRTIO_BLK_S_IOERR)?;
            // At most VIRTIO_BLK_ID_BYTES.
            u32::try_from(n).map_err(|_| VIRTIO_BLK_S_IOERR)
        }
        t @ (VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES) => {
            let feature = if t == VIRTIO_BLK_T_DISCARD {
                VIRTIO_BLK_F_DISCARD
            } else {
                VIRTIO_BLK_F_WRITE_ZEROES
            };
            if features & feature == 0 {
                return Err(VIRTIO_BLK_S_UNSUPP);
            }
            if disk.read_only() {
                return Err(VIRTIO_BLK_S_IOERR);
            }
            discard_or_zero(t, data, mem, disk, limits)?;
            Ok(0)
        }
        _ => Err(VIRTIO_BLK_S_UNSUPP),
    }
}

/// Moves the data buffers between guest memory and the disk at `sector`: into the guest when
/// `to_guest` (a read), out of it otherwise. Returns the bytes moved.
fn transfer(
    data: &[Descriptor],
    mem: &GuestMemoryMmap,
    disk: &DiskImage,
    sector: u64,
    limits: &Limits,
    to_guest: bool,
) -> Result<u64, u8> {
    let bufs = guest_buffers(data, mem, to_guest, limits)?;
    let len = bufs.total() as u64;
    let offset = checked_range(sector, len, disk.size())?;
    let n = if to_guest {
        disk.read_vectored_at(&bufs, offset)
    } else {
        disk.write_vectored_at(&bufs, offset)
    }
    .map_err(|_| VIRTIO_BLK_S_IOERR)?;
    if n as u64 != len {
        return Err(VIRTIO_BLK_S_IOERR);
    }
    Ok(len)
}

/// Byte offset of `sector`, if `len` bytes from there lie inside a disk of `size` bytes.
fn checked_range(sector: u64, len: u64, size: u64) -> Result<u64, u8> {
    let offset = sector.checked_mul(SECTOR_SIZE).ok_or(VIRTIO_BLK_S_IOERR)?;
    match offset.checked_add(len) {
        Some(end) if end <= size && len.is_multiple_of(SECTOR_SIZE) => Ok(offset),
        _ => Err(VIRTIO_BLK_S_IOERR),
    }
}

/// The data descriptors as host iovecs, each checked to lie in guest RAM and to have the
/// direction the request needs (`device_writes`: the device fills them, for reads), at most
/// `limits.max_data` bytes in all.
fn guest_buffers<'a>(
    data: &[Descriptor],
    mem: &'a GuestMemoryMmap,
    device_writes: bool,
    limits: &Limits,
) -> Result<GuestIovecs<'a>, u8> {
    // A limit beyond the address space cannot be reached anyway.
    let max = usize::try_from(limits.max_data).unwrap_or(usize::MAX);
    let mut bufs = GuestIovecs::new(mem, max);
    for d in data {
        if d.is_write_only() != device_writes {
            return Err(VIRTIO_BLK_S_IOERR);
        }
        bufs.push(d.addr(), d.len())
            .map_err(|_| VIRTIO_BLK_S_IOERR)?;
    }
    Ok(bufs)
}

fn discard_or_zero(
    kind: u32,
    data: &[Descriptor],
    mem: &GuestMemoryMmap,
    disk: &DiskImage,
    limits: &Limits,
) -> Result<(), u8> {
    let seg_size = std::mem::size_of::<DiscardSegment>() as u64;
    let mut segments = Vec::new();
    for d in data {
        if d.is_write_only() || !(d.len() as u64).is_multiple_of(seg_size) {
            return Err(VIRTIO_BLK_S_IOERR);
        }
        for i in 0..d.len() as u64 / seg_size {
            if segments.len() >= limits.discard_seg_max {
                return Err(VIRTIO_BLK_S_IOERR);
            }
            let addr = d
                .addr()
                .checked_add(i * seg_size)
                .ok_or(VIRTIO_BLK_S_IOERR)?;
            let seg: DiscardSegment = mem.read_obj(addr).map_err(|_| VIRTIO_BLK_S_IOERR)?;
            segments.push(seg);
        }
    }
    // Check every segment before touching the disk: a bad request changes nothing.
    let mut ranges = Vec::with_capacity(segments.len());
    for seg in &segments {
        let flags = seg.flags.to_native();
        let unmap = flags & WRITE_ZEROES_FLAG_UNMAP != 0;
        if flags & !WRITE_ZEROES_FLAG_UNMAP != 0 || (kind == VIRTIO_BLK_T_DISCARD && unmap) {
            return Err(VIRTIO_BLK_S_UNSUPP);
        }
        let sectors = seg.num_sectors.to_native();
        if sectors > limits.discard_sectors_max {
            return Err(VIRTIO_BLK_S_IOERR);
        }
        let len = sectors as u64 * SECTOR_SIZE;
        let offset = checked_range(seg.sector.to_native(), len, disk.size())?;
        ranges.push((offset, len, unmap));
    }
    for (offset, len, unmap) in ranges {
        let r = if kind == VIRTIO_BLK_T_DISCARD || unmap {
            disk.punch_hole(offset, len)
        } else {
            disk.write_zeroes(offset, len)
        };
        r.map_err(|_| VIRTIO_BLK_S_IOERR)?;
    }
    Ok(())
}
