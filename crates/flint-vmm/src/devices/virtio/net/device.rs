//! The virtio-net device: RX queue 0, TX queue 1, on a frame backend (a TAP).

use std::sync::Arc;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::tap::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6};
use super::*;
use crate::devices::virtio::iovec::GuestIovecs;
use crate::devices::virtio::{
    notify_if_needed, pop_chain, read_config_bytes, serve_queue, ActivateContext, Budget,
    ChainError, Interrupt, Popped, QueueWorker, Served, VirtioDevice, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
};

pub const QUEUE_SIZE: u16 = 256;
const DEVICE_TYPE_NET: u32 = 1;
const RX: usize = 0;
const TX: usize = 1;
/// Frames moved per wake-up before letting other events in (the fd stays readable).
const RX_BATCH: usize = 256;
/// Guest RX chains one frame may take with mergeable buffers: a largest frame in buffers of
/// 512 bytes (Linux posts at least 1518). A driver posting smaller ones gets the frame dropped
/// rather than flint holding a chain per byte.
pub const MAX_RX_CHAINS: usize = MAX_FRAME_LEN.div_ceil(512);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames from the host that did not fit the guest's buffer, or whose buffers were bad.
    pub rx_dropped: u64,
    /// Frames from the guest that were malformed or too large, or that the host refused.
    pub tx_dropped: u64,
    /// Of `rx_dropped`: frames that would have needed more than [`MAX_RX_CHAINS`] buffers.
    pub rx_too_many_buffers: u64,
    /// Of `rx_dropped`: frames from the host with an offload the guest did not accept.
    pub rx_bad_offload: u64,
    /// Of `tx_dropped`: frames whose header asked for an offload the guest did not negotiate.
    pub tx_bad_offload: u64,
}

/// An RX chain taken from the ring: its head and its device-writable buffers.
type RxChain = (u16, Vec<(GuestAddress, usize)>);

struct Active {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    interrupt: Arc<Interrupt>,
    features: u64,
    /// Chains already taken for the waiting frame when it needs more (mergeable) buffers than
    /// the guest has posted. Held, not handed back: rewinding the ring would publish an
    /// `avail_event` the driver has already passed, and it would never kick RX again.
    rx_held: Vec<RxChain>,
}

/// The register side of a virtio-net device.
pub struct Net {
    /// Shared with the worker, which reads and writes frames on it.
    backend: Arc<dyn Backend>,
    features: u64,
    config: Vec<u8>,
    queue_sizes: [u16; 2],
}

/// The RX and TX queues of an active virtio-net device, and the frame between them and the
/// backend.
pub struct NetWorker {
    backend: Arc<dyn Backend>,
    active: Active,
    /// A frame read from the backend that waits for guest RX buffers.
    frame: Vec<u8>,
    pending: Option<usize>,
    stats: NetStats,
}

enum Delivery {
    Delivered,
    NoBuffers,
    /// The wake-up's budget ran out while taking buffers: what was taken stays held.
    Later,
    Dropped,
    TooManyBuffers,
    Broken,
}

impl Net {
    /// A NIC with `mac`, and `mtu` if given (else the driver's default, 1500).
    pub fn new(backend: Box<dyn Backend>, mac: Mac, mtu: Option<u16>) -> Net {
        let mut features = VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_EVENT_IDX
            | VIRTIO_NET_F_MAC
            | VIRTIO_NET_F_STATUS
            | VIRTIO_NET_F_MRG_RXBUF;
        if backend.supports_offloads() {
            features |= VIRTIO_NET_F_CSUM
                | VIRTIO_NET_F_GUEST_CSUM
                | VIRTIO_NET_F_GUEST_TSO4
                | VIRTIO_NET_F_GUEST_TSO6
                | VIRTIO_NET_F_HOST_TSO4
                | VIRTIO_NET_F_HOST_TSO6;
        }
        let mut config = vec![0u8; 10];
        config[..6].copy_from_slice(&mac.0);
        config[6..8].copy_from_slice(&VIRTIO_NET_S_LINK_UP.to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes()); // max_virtqueue_pairs
        if let Some(mtu) = mtu {
            features |= VIRTIO_NET_F_MTU;
            config.extend_from_slice(&mtu.to_le_bytes());
        }
        Net {
            backend: Arc::from(backend),
            features,
            config,
            queue_sizes: [QUEUE_SIZE, QUEUE_SIZE],
        }
    }

    /// The worker for the driver's RX and TX queues (`None` without both), after telling the
    /// backend which offloads the driver accepted.
    pub fn start(&self, ctx: ActivateContext) -> Option<NetWorker> {
        let mut queues = ctx.queues.into_iter();
        let (Some(rx), Some(tx)) = (queues.next(), queues.next()) else {
            return None;
        };
        // The TAP may hand the guest partial checksums and large segments only if it said so.
        let f = ctx.acked_features;
        let mut offload = 0;
        if f & VIRTIO_NET_F_GUEST_CSUM != 0 {
            offload |= TUN_F_CSUM;
            if f & VIRTIO_NET_F_GUEST_TSO4 != 0 {
                offload |= TUN_F_TSO4;
            }
            if f & VIRTIO_NET_F_GUEST_TSO6 != 0 {
                offload |= TUN_F_TSO6;
            }
        }
        if self.backend.supports_offloads() {
            let _ = self.backend.set_offload(offload);
        }
        Some(NetWorker {
            backend: self.backend.clone(),
            active: Active {
                mem: ctx.mem,
                rx,
                tx,
                interrupt: ctx.interrupt,
                features: f,
                rx_held: Vec::new(),
            },
            frame: vec![0; MAX_FRAME_LEN],
            pending: None,
            stats: NetStats::default(),
        })
    }
}

impl NetWorker {
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Moves frames from the backend to the guest until the backend is empty, the guest has no
    /// buffers, or a batch (frames, and the RX queue's [`Budget`]) is done.
    fn receive(&mut self) -> Served {
        let a = &mut self.active;
        // A corrupted avail ring is found on every RX wake-up, even with no frame waiting.
        if a.rx.iter(&a.mem).is_err() {
            return Served::Broken;
        }
        let mut budget = Budget::for_queue(&a.rx);
        let mut delivered = false;
        let mut outcome = Served::Done;
        for _ in 0..RX_BATCH {
            let len = match self.pending {
                Some(len) => len,
                None => {
                    // SAFETY: reads at most `frame.len()` bytes into our own buffer.
                    let n = unsafe {
                        libc::read(
                            self.backend.fd(),
                            self.frame.as_mut_ptr().cast(),
                            self.frame.len(),
                        )
                    };
                    // EAGAIN: empty; other errors: try again on the next wake-up.
                    let Ok(n) = usize::try_from(n) else { break };
                    if n == 0 {
                        break;
                    }
                    if n < VNET_HDR_LEN {
                        self.stats.rx_dropped += 1;
                        continue;
                    }
                    if !fit_rx_header(&mut self.frame[..VNET_HDR_LEN], a.features) {
                        self.stats.rx_dropped += 1;
                        self.stats.rx_bad_offload += 1;
                        continue;
                    }
                    self.pending = Some(n);
                    n
                }
            };
            match deliver(a, &mut self.frame[..len], &mut budget) {
                Delivery::Delivered => {
                    self.pending = None;
                    self.stats.rx_frames += 1;
                    delivered = true;
                }
                d @ (Delivery::Dropped | Delivery::TooManyBuffers) => {
                    self.pending = None;
                    self.stats.rx_dropped += 1;
                    if matches!(d, Delivery::TooManyBuffers) {
                        self.stats.rx_too_many_buffers += 1;
                    }
                    delivered = true; // buffers were returned
                }
                Delivery::NoBuffers => {
                    // Ask the driver to kick RX when it adds buffers (with EVENT_IDX it would
                    // not otherwise); if some arrived meanwhile, use them now.
                    match a.rx.enable_notification(&a.mem) {
                        Ok(true) => continue,
                        Ok(false) => break,
                        Err(_) => return Served::Broken,
                    }
                }
                Delivery::Later => {
                    outcome = Served::More;
                    break;
                }
                Delivery::Broken => return Served::Broken,
            }
        }
        if delivered && !notify_if_needed(&mut a.rx, &a.mem, &a.interrupt) {
            return Served::Broken;
        }
        outcome
    }

    /// Sends the frames the guest queued on TX, one batch of them.
    fn transmit(&mut self) -> Served {
        let NetWorker {
            active: a,
            backend,
            stats,
            ..
        } = self;
        let fd = backend.fd();
        let features = a.features;
        serve_queue(&mut a.tx, &a.mem, &a.interrupt, false, |descs| {
            match descs
                .map_err(TxDrop::Chain)
                .and_then(|d| send(fd, d, &a.mem, features))
            {
                Ok(()) => stats.tx_frames += 1,
                Err(e) => {
                    stats.tx_dropped += 1;
                    if e == TxDrop::Offload {
                        stats.tx_bad_offload += 1;
                    }
                }
            }
            0
        })
    }
}

/// Why a TX chain was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxDrop {
    /// Not a frame: a writable buffer, shorter than the header, too long, outside RAM.
    Malformed,
    /// The chain could not be walked.
    Chain(ChainError),
    /// The header asks for an offload the guest did not negotiate.
    Offload,
    /// The backend did not take the whole frame.
    Backend,
}

/// Whether a header from the guest asks only for offloads it negotiated: a checksum offload
/// with CSUM, a TCP segmentation one with HOST_TSO4/6 (which need CSUM too, §5.1.3.1); nothing
/// else (no UFO, ECN or flags a driver must not send is offered).
fn tx_header_allowed(hdr: &[u8; VNET_HDR_LEN], features: u64) -> bool {
    let has = |f: u64| features & (f | VIRTIO_NET_F_CSUM) == f | VIRTIO_NET_F_CSUM;
    let flags_ok = match hdr[0] {
        0 => true,
        VIRTIO_NET_HDR_F_NEEDS_CSUM => has(VIRTIO_NET_F_CSUM),
        _ => false,
    };
    let gso_ok = match hdr[1] {
        VIRTIO_NET_HDR_GSO_NONE => true,
        VIRTIO_NET_HDR_GSO_TCPV4 => has(VIRTIO_NET_F_HOST_TSO4),
        VIRTIO_NET_HDR_GSO_TCPV6 => has(VIRTIO_NET_F_HOST_TSO6),
        _ => false,
    };
    flags_ok && gso_ok
}

/// Makes the header of a frame from the backend say only what the guest accepted. False if
/// the frame itself needs an offload the guest did not take (a partial checksum, a large
/// segment): it cannot be delivered. (The TAP is told the guest's offloads, but flint does not
/// count on that having worked.)
fn fit_rx_header(hdr: &mut [u8], features: u64) -> bool {
    // Every RX offload needs GUEST_CSUM (§5.1.3.1).
    let has = |f: u64| features & (f | VIRTIO_NET_F_GUEST_CSUM) == f | VIRTIO_NET_F_GUEST_CSUM;
    let (Some(&flags), Some(&gso)) = (hdr.first(), hdr.get(1)) else {
        return false;
    };
    let csum = has(VIRTIO_NET_F_GUEST_CSUM);
    if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 && !csum {
        return false;
    }
    let gso_ok = match gso {
        VIRTIO_NET_HDR_GSO_NONE => true,
        VIRTIO_NET_HDR_GSO_TCPV4 => has(VIRTIO_NET_F_GUEST_TSO4),
        VIRTIO_NET_HDR_GSO_TCPV6 => has(VIRTIO_NET_F_GUEST_TSO6),
        _ => false,
    };
    // Without GUEST_CSUM the flags must be zero (§5.1.6.4.1); with it, only the two defined.
    hdr[0] = if csum {
        flags & (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID)
    } else {
        0
    };
    gso_ok
}

/// One TX chain to the backend: device-readable descriptors only, a header and at most
/// MAX_FRAME_LEN bytes, all in guest RAM. The header is copied out and checked
/// ([`tx_header_allowed`]), and that copy is what the backend gets, so the guest cannot change
/// it after the check; the rest goes with one writev straight from guest memory.
fn send(
    fd: std::os::fd::RawFd,
    descs: &[Descriptor],
    mem: &GuestMemoryMmap,
    features: u64,
) -> Result<(), TxDrop> {
    let mut hdr = [0u8; VNET_HDR_LEN];
    let mut hdr_len = 0usize;
    let mut bufs = GuestIovecs::new(mem, MAX_FRAME_LEN - VNET_HDR_LEN);
    for d in descs {
        if d.is_write_only() {
            return Err(TxDrop::Malformed);
        }
        let len = usize::try_from(d.len()).map_err(|_| TxDrop::Malformed)?;
        let take = (VNET_HDR_LEN - hdr_len).min(len);
        if take > 0 {
            mem.read_slice(&mut hdr[hdr_len..hdr_len + take], d.addr())
                .map_err(|_| TxDrop::Malformed)?;
            hdr_len += take;
        }
        if len > take {
            // `take` is at most VNET_HDR_LEN and `len - take` at most `d.len()`.
            let addr = d.addr().checked_add(take as u64).ok_or(TxDrop::Malformed)?;
            let rest = u32::try_from(len - take).map_err(|_| TxDrop::Malformed)?;
            bufs.push(addr, rest).map_err(|_| TxDrop::Malformed)?;
        }
    }
    if hdr_len < VNET_HDR_LEN {
        return Err(TxDrop::Malformed);
    }
    if !tx_header_allowed(&hdr, features) {
        return Err(TxDrop::Offload);
    }
    let mut iov = Vec::with_capacity(bufs.as_slice().len() + 1);
    iov.push(libc::iovec {
        iov_base: hdr.as_mut_ptr().cast(),
        iov_len: VNET_HDR_LEN,
    });
    iov.extend_from_slice(bufs.as_slice());
    let count = libc::c_int::try_from(iov.len()).map_err(|_| TxDrop::Malformed)?;
    // SAFETY: the first iovec is `hdr`, alive for the call; the others point into guest RAM,
    // each checked to be mapped for its length, and `bufs`' borrow of guest memory keeps them
    // mapped for the call. writev only reads them.
    let n = unsafe { libc::writev(fd, iov.as_ptr(), count) };
    if usize::try_from(n) == Ok(bufs.total() + VNET_HDR_LEN) {
        Ok(())
    } else {
        Err(TxDrop::Backend)
    }
}

/// Puts one frame (header included) into the guest's RX buffers: one chain, or several with
/// mergeable buffers (at most [`MAX_RX_CHAINS`]), setting `num_buffers` in the header
/// accordingly. Chains are taken within `budget`.
fn deliver(a: &mut Active, frame: &mut [u8], budget: &mut Budget) -> Delivery {
    let mergeable = a.features & VIRTIO_NET_F_MRG_RXBUF != 0;
    let mut capacity: usize = a.rx_held.iter().flat_map(|c| &c.1).map(|b| b.1).sum();
    let mut too_many = false;
    while capacity < frame.len() && (mergeable || a.rx_held.is_empty()) {
        if a.rx_held.len() >= MAX_RX_CHAINS {
            too_many = true;
            break;
        }
        let (head, descs) = match pop_chain(&mut a.rx, &a.mem, false, budget) {
            Ok(Popped::Chain(head, descs)) => (head, descs),
            // What was taken stays held for the next try.
            Ok(Popped::Empty) => return Delivery::NoBuffers,
            Ok(Popped::Later) => return Delivery::Later,
            Err(_) => return Delivery::Broken,
        };
        // Only device-writable buffers take data; a chain that cannot be walked takes none.
        let bufs: Vec<(GuestAddress, usize)> = descs
            .unwrap_or_default()
            .iter()
            .filter(|d| d.is_write_only())
            .map(|d| (d.addr(), d.len() as usize))
            .collect();
        // A walked chain's lengths add up to a u32.
        let size: usize = bufs.iter().map(|b| b.1).sum();
        if size == 0 {
            // A chain the device cannot write to: hand it back empty.
            if a.rx.add_used(&a.mem, head, 0).is_err() {
                return Delivery::Broken;
            }
            continue;
        }
        capacity = capacity.saturating_add(size);
        a.rx_held.push((head, bufs));
    }
    let chains = std::mem::take(&mut a.rx_held);
    // Without mergeable buffers a frame must fit one chain; if it does not, it is dropped.
    let mut ok = capacity >= frame.len();
    if ok {
        // At most MAX_RX_CHAINS: fits in a u16.
        let n = u16::try_from(chains.len()).unwrap_or(u16::MAX);
        frame[10..12].copy_from_slice(&n.to_le_bytes());
    }
    let mut off = 0usize;
    let mut used = Vec::with_capacity(chains.len());
    for (head, bufs) in &chains {
        let mut written = 0u32;
        for &(addr, len) in bufs {
            if !ok || off >= frame.len() {
                break;
            }
            let n = len.min(frame.len() - off);
            if a.mem.write_slice(&frame[off..off + n], addr).is_err() {
                ok = false;
                break;
            }
            off += n;
            // n is at most a frame's length (MAX_FRAME_LEN).
            written = written.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        }
        used.push((*head, written));
    }
    for (head, written) in used {
        // A dropped frame returns its buffers unused.
        if a.rx
            .add_used(&a.mem, head, if ok { written } else { 0 })
            .is_err()
        {
            return Delivery::Broken;
        }
    }
    if ok {
        Delivery::Delivered
    } else if too_many {
        Delivery::TooManyBuffers
    } else {
        Delivery::Dropped
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE_NET
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Option<Box<dyn QueueWorker>> {
        self.start(ctx).map(|w| Box::new(w) as Box<dyn QueueWorker>)
    }
}

impl QueueWorker for NetWorker {
    fn queue_states(&self) -> Vec<virtio_queue::QueueState> {
        // RX chains held for a frame waiting for more buffers go back to the ring (the frame
        // itself is dropped, as a NIC drops a packet); TX chains finish within their batch.
        let mut rx = self.active.rx.state();
        let held = u16::try_from(self.active.rx_held.len()).unwrap_or(u16::MAX);
        rx.next_avail = rx.next_avail.wrapping_sub(held);
        vec![rx, self.active.tx.state()]
    }

    fn process_queue(&mut self, index: usize) -> Served {
        match index {
            // New RX buffers: deliver what waits, and what the backend has meanwhile.
            RX => self.receive(),
            TX => self.transmit(),
            _ => Served::Done,
        }
    }

    fn backend_fds(&self) -> Vec<std::os::fd::RawFd> {
        vec![self.backend.fd()]
    }

    fn process_backend(&mut self, _index: usize) -> Served {
        self.receive()
    }

    fn backend_wanted(&self, _index: usize) -> bool {
        // With a frame waiting for buffers, stop reading: RX resumes on the guest's next notify.
        self.pending.is_none()
    }
}

// num_buffers is a u16.
const _: () = assert!(MAX_RX_CHAINS <= u16::MAX as usize);
