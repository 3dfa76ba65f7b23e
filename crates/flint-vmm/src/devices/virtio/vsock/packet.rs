//! vsock packets (virtio 1.2 §5.10.6): the 44-byte header, and moving packets between
//! descriptor chains and flint.
//!
//! Every header comes from the guest and is checked before anything trusts it: a TX chain must
//! be device-readable only, hold a whole header, and hold the `len` payload bytes the header
//! claims (at most [`MAX_PAYLOAD`]); an RX chain must be device-writable only and have room for
//! a header.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

/// Bytes of `struct virtio_vsock_hdr`.
pub const HDR_LEN: usize = 44;
/// [`HDR_LEN`] as a used-ring length.
pub const HDR_LEN32: u32 = 44;
const _: () = assert!(HDR_LEN32 as usize == HDR_LEN);

/// The host's CID: every connection flint serves has the host at one end.
pub const HOST_CID: u64 = 2;
/// Stream sockets; flint offers no VIRTIO_VSOCK_F_SEQPACKET.
pub const TYPE_STREAM: u16 = 1;

/// The most payload one packet carries, either way (Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Operations (`op`).
pub mod op {
    pub const REQUEST: u16 = 1;
    pub const RESPONSE: u16 = 2;
    pub const RST: u16 = 3;
    pub const SHUTDOWN: u16 = 4;
    pub const RW: u16 = 5;
    pub const CREDIT_UPDATE: u16 = 6;
    pub const CREDIT_REQUEST: u16 = 7;
}

/// SHUTDOWN flags: the sender will receive no more, will send no more.
pub const SHUTDOWN_RCV: u32 = 1;
pub const SHUTDOWN_SEND: u32 = 2;
pub const SHUTDOWN_BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

/// `struct virtio_vsock_hdr`, little-endian and packed on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub kind: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Header {
        let u64_at = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(x)
        };
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            kind: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }
}

/// Why a TX chain is not a packet flint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("a device-writable descriptor in a TX chain")]
    Writable,
    #[error("the chain is shorter than a packet header")]
    NoHeader,
    #[error("a buffer lies outside guest memory")]
    Memory,
    /// The header could be read, but its `len` is more than the chain holds or than any
    /// packet may carry.
    #[error("the header's length ({0}) is past the chain's buffers or the packet limit")]
    BadLength(u32),
}

/// What a TX chain held: its header (when one could be read) and, for a RW packet, how many
/// payload bytes were copied to the front of the scratch buffer.
pub struct TxPacket {
    pub hdr: Header,
    pub payload: usize,
}

/// Reads the packet in a TX chain: the header, and the payload of a RW packet into
/// `scratch` (at least [`MAX_PAYLOAD`] long). On [`TxError::BadLength`] the header is returned
/// too, so that the connection it names can be reset.
pub fn read_tx(
    mem: &GuestMemoryMmap,
    descs: &[Descriptor],
    scratch: &mut [u8],
) -> Result<TxPacket, (TxError, Option<Header>)> {
    if descs.iter().any(|d| d.is_write_only()) {
        return Err((TxError::Writable, None));
    }
    // A walked chain's lengths add up within a u32 (see `walk_chain`).
    let total: u64 = descs.iter().map(|d| u64::from(d.len())).sum();
    let mut raw = [0u8; HDR_LEN];
    if total < HDR_LEN as u64 {
        return Err((TxError::NoHeader, None));
    }
    copy_from_chain(mem, descs, 0, &mut raw).map_err(|e| (e, None))?;
    let hdr = Header::from_bytes(&raw);
    let len = usize::try_from(hdr.len).unwrap_or(usize::MAX);
    let fits = u64::from(hdr.len)
        .checked_add(HDR_LEN as u64)
        .is_some_and(|end| end <= total);
    if !fits || len > MAX_PAYLOAD || len > scratch.len() {
        return Err((TxError::BadLength(hdr.len), Some(hdr)));
    }
    // Only RW carries data; other packets' payloads (none, from a sane driver) are ignored.
    let payload = if hdr.op == op::RW { len } else { 0 };
    copy_from_chain(mem, descs, HDR_LEN, &mut scratch[..payload]).map_err(|e| (e, Some(hdr)))?;
    Ok(TxPacket { hdr, payload })
}

/// Copies `out.len()` bytes starting `skip` bytes into the chain's buffers.
fn copy_from_chain(
    mem: &GuestMemoryMmap,
    descs: &[Descriptor],
    mut skip: usize,
    out: &mut [u8],
) -> Result<(), TxError> {
    let mut done = 0usize;
    for d in descs {
        if done == out.len() {
            break;
        }
        let len = usize::try_from(d.len()).map_err(|_| TxError::Memory)?;
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = (len - skip).min(out.len() - done);
        let addr = d
            .addr()
            .checked_add(u64::try_from(skip).map_err(|_| TxError::Memory)?)
            .ok_or(TxError::Memory)?;
        mem.read_slice(&mut out[done..done + n], addr)
            .map_err(|_| TxError::Memory)?;
        done += n;
        skip = 0;
    }
    if done == out.len() {
        Ok(())
    } else {
        Err(TxError::Memory)
    }
}

/// The device-writable buffers of an RX chain, if it is one flint can put a packet in: only
/// writable descriptors, room for a header and at least one byte of data (a chain that could
/// carry no data would leave data waiting for the next chain, which could be another such).
pub fn rx_buffers(descs: &[Descriptor]) -> Option<Vec<(GuestAddress, usize)>> {
    if descs.iter().any(|d| !d.is_write_only()) {
        return None;
    }
    let bufs: Vec<(GuestAddress, usize)> = descs
        .iter()
        .filter_map(|d| Some((d.addr(), usize::try_from(d.len()).ok()?)))
        .collect();
    (capacity(&bufs) > HDR_LEN).then_some(bufs)
}

/// Bytes an RX chain's buffers hold (a walked chain's lengths add up within a u32).
pub fn capacity(bufs: &[(GuestAddress, usize)]) -> usize {
    bufs.iter().fold(0usize, |n, b| n.saturating_add(b.1))
}

/// Writes a packet (header, then `payload`) into an RX chain's buffers; returns the length
/// for the used ring, or `None` if a buffer is not guest memory. The caller made sure it fits.
pub fn write_rx(
    mem: &GuestMemoryMmap,
    bufs: &[(GuestAddress, usize)],
    hdr: &Header,
    payload: &[u8],
) -> Option<u32> {
    let raw = hdr.to_bytes();
    let mut parts = [&raw[..], payload];
    let mut written = 0usize;
    for &(addr, len) in bufs {
        let mut off = 0usize;
        for part in parts.iter_mut() {
            if off == len {
                break;
            }
            let n = part.len().min(len - off);
            if n == 0 {
                continue;
            }
            let at = addr.checked_add(u64::try_from(off).ok()?)?;
            mem.write_slice(&part[..n], at).ok()?;
            *part = &part[n..];
            off += n;
            written += n;
        }
        if parts.iter().all(|p| p.is_empty()) {
            break;
        }
    }
    if parts.iter().any(|p| !p.is_empty()) {
        return None;
    }
    u32::try_from(written).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::F_WRITE;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    fn desc(addr: u64, len: u32, flags: u16) -> Descriptor {
        Descriptor::new(addr, len, flags, 0)
    }

    #[test]
    fn header_round_trips_in_wire_order() {
        let h = Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 0x1234,
            dst_port: 0x5678,
            len: 7,
            kind: TYPE_STREAM,
            op: op::RW,
            flags: 2,
            buf_alloc: 0x4_0000,
            fwd_cnt: 9,
        };
        let b = h.to_bytes();
        assert_eq!(&b[0..8], &3u64.to_le_bytes());
        assert_eq!(&b[28..32], &[1, 0, 5, 0]);
        assert_eq!(Header::from_bytes(&b), h);
    }

    #[test]
    fn a_header_split_over_descriptors_and_its_payload_are_read() {
        let m = mem();
        let h = Header {
            src_cid: 3,
            len: 5,
            op: op::RW,
            ..Header::default()
        };
        let b = h.to_bytes();
        m.write_slice(&b[..10], GuestAddress(0x1000)).unwrap();
        m.write_slice(&b[10..], GuestAddress(0x2000)).unwrap();
        m.write_slice(b"hello", GuestAddress(0x2000 + 34)).unwrap();
        let descs = [desc(0x1000, 10, 0), desc(0x2000, 34 + 5, 0)];
        let mut scratch = vec![0u8; MAX_PAYLOAD];
        let p = read_tx(&m, &descs, &mut scratch).ok().unwrap();
        assert_eq!(p.hdr, h);
        assert_eq!(&scratch[..p.payload], b"hello");
    }

    #[test]
    fn hostile_tx_chains_are_refused() {
        let m = mem();
        let mut scratch = vec![0u8; MAX_PAYLOAD];
        let h = |len| Header {
            len,
            op: op::RW,
            ..Header::default()
        };
        m.write_slice(&h(100).to_bytes(), GuestAddress(0x1000))
            .unwrap();
        let err = |descs: &[Descriptor], s: &mut [u8]| read_tx(&m, descs, s).err().unwrap().0;
        // The header claims more than the chain holds.
        assert_eq!(
            err(&[desc(0x1000, 44 + 99, 0)], &mut scratch),
            TxError::BadLength(100)
        );
        // More than any packet may carry, even if the chain is that long.
        m.write_slice(&h(u32::MAX).to_bytes(), GuestAddress(0x1000))
            .unwrap();
        assert_eq!(
            err(&[desc(0x1000, u32::MAX, 0)], &mut scratch),
            TxError::BadLength(u32::MAX)
        );
        assert_eq!(err(&[desc(0x1000, 43, 0)], &mut scratch), TxError::NoHeader);
        assert_eq!(
            err(&[desc(0x1000, 44, F_WRITE)], &mut scratch),
            TxError::Writable
        );
        assert_eq!(
            err(&[desc(0x10_0000 - 10, 44, 0)], &mut scratch),
            TxError::Memory
        );
    }

    #[test]
    fn rx_packets_fill_buffers_in_order() {
        let m = mem();
        let descs = [desc(0x1000, 20, F_WRITE), desc(0x2000, 100, F_WRITE)];
        let bufs = rx_buffers(&descs).unwrap();
        assert_eq!(capacity(&bufs), 120);
        let h = Header {
            op: op::RW,
            len: 6,
            ..Header::default()
        };
        assert_eq!(write_rx(&m, &bufs, &h, b"abcdef"), Some(50));
        let mut got = [0u8; 50];
        m.read_slice(&mut got[..20], GuestAddress(0x1000)).unwrap();
        m.read_slice(&mut got[20..], GuestAddress(0x2000)).unwrap();
        assert_eq!(Header::from_bytes(got[..44].try_into().unwrap()), h);
        assert_eq!(&got[44..], b"abcdef");
        // A readable descriptor, or no room for a header: not an RX buffer.
        assert!(rx_buffers(&[desc(0x1000, 100, 0)]).is_none());
        assert!(rx_buffers(&[desc(0x1000, 44, F_WRITE)]).is_none());
        assert!(rx_buffers(&[desc(0x1000, 45, F_WRITE)]).is_some());
        // A buffer outside memory fails the write.
        let bad = [(GuestAddress(0x10_0000 - 4), 100)];
        assert_eq!(write_rx(&m, &bad, &h, b""), None);
    }
}
