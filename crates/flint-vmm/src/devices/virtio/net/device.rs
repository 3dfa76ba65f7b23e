//! The virtio-net device: RX queue 0, TX queue 1, on a frame backend (a TAP).

use std::sync::Arc;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::tap::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6};
use super::*;
use crate::devices::virtio::iovec::GuestIovecs;
use crate::devices::virtio::{
    notify_if_needed, read_config_bytes, serve_queue, ActivateContext, Interrupt, QueueWorker,
    VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};

pub const QUEUE_SIZE: u16 = 256;
const DEVICE_TYPE_NET: u32 = 1;
const RX: usize = 0;
const TX: usize = 1;
/// Frames moved per wake-up before letting other events in (the fd stays readable).
const RX_BATCH: usize = 256;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames from the host that did not fit the guest's buffer, or whose buffers were bad.
    pub rx_dropped: u64,
    /// Frames from the guest that were malformed or too large, or that the host refused.
    pub tx_dropped: u64,
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
    Dropped,
    Broken,
}

impl Net {
    pub fn new(backend: Box<dyn Backend>, mac: Mac) -> Net {
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
    /// buffers, or a batch is done. Returns false if the RX queue is broken.
    fn receive(&mut self) -> bool {
        let a = &mut self.active;
        let mut delivered = false;
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
                    if n <= 0 {
                        break; // EAGAIN: empty; other errors: try again on the next wake-up
                    }
                    let n = n as usize;
                    if n < VNET_HDR_LEN {
                        self.stats.rx_dropped += 1;
                        continue;
                    }
                    self.pending = Some(n);
                    n
                }
            };
            match deliver(a, &mut self.frame[..len]) {
                Delivery::Delivered => {
                    self.pending = None;
                    self.stats.rx_frames += 1;
                    delivered = true;
                }
                Delivery::Dropped => {
                    self.pending = None;
                    self.stats.rx_dropped += 1;
                    delivered = true; // buffers were returned
                }
                Delivery::NoBuffers => {
                    // Ask the driver to kick RX when it adds buffers (with EVENT_IDX it would
                    // not otherwise); if some arrived meanwhile, use them now.
                    match a.rx.enable_notification(&a.mem) {
                        Ok(true) => continue,
                        Ok(false) => break,
                        Err(_) => return false,
                    }
                }
                Delivery::Broken => return false,
            }
        }
        !delivered || notify_if_needed(&mut a.rx, &a.mem, &a.interrupt)
    }

    /// Sends every frame the guest queued on TX. Returns false if the TX queue is broken.
    fn transmit(&mut self) -> bool {
        let NetWorker {
            active: a,
            backend,
            stats,
            ..
        } = self;
        let fd = backend.fd();
        serve_queue(&mut a.tx, &a.mem, &a.interrupt, |descs| {
            if send(fd, descs, &a.mem) {
                stats.tx_frames += 1;
            } else {
                stats.tx_dropped += 1;
            }
            0
        })
    }
}

/// One TX chain to the backend: device-readable descriptors only, a header and at most
/// MAX_FRAME_LEN bytes, all in guest RAM; written with one writev straight from guest memory.
fn send(fd: std::os::fd::RawFd, descs: &[Descriptor], mem: &GuestMemoryMmap) -> bool {
    let mut bufs = GuestIovecs::new(mem, MAX_FRAME_LEN);
    for d in descs {
        if d.is_write_only() || bufs.push(d.addr(), d.len()).is_err() {
            return false;
        }
    }
    if bufs.total() < VNET_HDR_LEN {
        return false;
    }
    let Ok(count) = bufs.count() else {
        return false;
    };
    // SAFETY: `bufs` holds iovecs into guest RAM, each checked to be mapped for its length,
    // and its borrow of guest memory keeps them mapped for the call; writev only reads them.
    let n = unsafe { libc::writev(fd, bufs.as_slice().as_ptr(), count) };
    usize::try_from(n) == Ok(bufs.total())
}

/// Puts one frame (header included) into the guest's RX buffers: one chain, or several with
/// mergeable buffers, setting `num_buffers` in the header accordingly.
fn deliver(a: &mut Active, frame: &mut [u8]) -> Delivery {
    let mergeable = a.features & VIRTIO_NET_F_MRG_RXBUF != 0;
    let mut capacity: usize = a.rx_held.iter().flat_map(|c| &c.1).map(|b| b.1).sum();
    while capacity < frame.len() && (mergeable || a.rx_held.is_empty()) {
        let Some(chain) = a.rx.pop_descriptor_chain(&a.mem) else {
            return Delivery::NoBuffers; // what was taken stays held for the next try
        };
        let head = chain.head_index();
        // Only device-writable buffers take data; the walk is bounded by the queue size.
        let bufs: Vec<(GuestAddress, usize)> = chain
            .filter(|d| d.is_write_only())
            .map(|d| (d.addr(), d.len() as usize))
            .collect();
        let size: usize = bufs.iter().map(|b| b.1).sum();
        if size == 0 {
            // A chain the device cannot write to: hand it back empty.
            if a.rx.add_used(&a.mem, head, 0).is_err() {
                return Delivery::Broken;
            }
            continue;
        }
        capacity += size;
        a.rx_held.push((head, bufs));
    }
    let chains = std::mem::take(&mut a.rx_held);
    // Without mergeable buffers a frame must fit one chain; if it does not, it is dropped.
    let mut ok = capacity >= frame.len();
    if ok {
        // At most a queue's worth of chains (the ring cannot hold more): fits in a u16.
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
    fn process_queue(&mut self, index: usize) -> bool {
        match index {
            // New RX buffers: deliver what waits, and what the backend has meanwhile.
            RX => self.receive(),
            TX => self.transmit(),
            _ => true,
        }
    }

    fn backend_fds(&self) -> Vec<std::os::fd::RawFd> {
        vec![self.backend.fd()]
    }

    fn process_backend(&mut self, _index: usize) -> bool {
        self.receive()
    }

    fn backend_wanted(&self, _index: usize) -> bool {
        // With a frame waiting for buffers, stop reading: RX resumes on the guest's next notify.
        self.pending.is_none()
    }
}
