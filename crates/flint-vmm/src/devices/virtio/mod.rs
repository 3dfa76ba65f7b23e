//! virtio devices over the virtio-mmio transport (virtio 1.x, "modern" only).
//!
//! A device implements [`VirtioDevice`]; the [`mmio::MmioTransport`] owns it and speaks the
//! register protocol to the guest driver (feature negotiation, status, queue setup, reset) on
//! the vCPU threads. When the driver is ready the device hands its queues to a [`QueueWorker`],
//! which lives in the device's [`worker::DeviceQueues`] and runs on the device's own thread
//! ([`worker::spawn`]): queue notifications (an ioeventfd, or the transport's fallback) and
//! backend input reach it there, never on a vCPU thread or the control event loop, and no
//! register access waits for its I/O.
//!
//! Everything in the rings is the guest's and may be hostile: [`pop_chain`] walks each chain
//! from the descriptor table itself (an indirect table only where the device offered them and
//! only one, at the chain's end; at most a queue size of descriptors in the ring and
//! [`INDIRECT_MAX`] in a table; lengths that add up within 4 GiB; or the chain is an error), and
//! a [`Budget`] bounds what one call may take from a queue.

pub mod block;
pub mod fs;
pub mod iovec;
pub mod mmio;
pub mod vsock;
pub mod worker;

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

pub use crate::devices::irq::IrqLine;

pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;

/// Most descriptors an indirect table may hold. virtio lets a table be longer than the ring;
/// flint's devices never need more than this, and the bound keeps one chain's walk short.
pub const INDIRECT_MAX: u32 = 1024;

/// Device status bits (virtio 1.1 §2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    pub const FAILED: u32 = 128;
}

/// InterruptStatus bits (virtio 1.1 §4.2.2).
pub const INT_USED_RING: u32 = 1;
pub const INT_CONFIG_CHANGE: u32 = 2;

/// The interrupt of one virtio-mmio device and its InterruptStatus register.
pub struct Interrupt {
    line: IrqLine,
    status: AtomicU32,
}

impl Interrupt {
    /// Puts InterruptStatus back as a snapshot had it (the interrupt controller's own state
    /// says whether the line is still asserted).
    pub fn restore_status(&self, bits: u32) {
        self.status.store(bits, Ordering::Release);
    }

    pub fn new(line: IrqLine) -> Self {
        Interrupt {
            line,
            status: AtomicU32::new(0),
        }
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::AcqRel);
    }

    /// Sets `bits` in InterruptStatus and interrupts the guest.
    pub fn trigger(&self, bits: u32) {
        self.status.fetch_or(bits, Ordering::AcqRel);
        // A failed injection leaves the bit set; the driver finds the work on its next look.
        let _ = self.line.trigger();
    }
}

/// What a device gets when the driver sets DRIVER_OK.
pub struct ActivateContext {
    pub mem: GuestMemoryMmap,
    pub queues: Vec<Queue>,
    pub acked_features: u64,
    pub interrupt: Arc<Interrupt>,
}

/// The register side of a virtio device: what the transport answers vCPUs with. It never does
/// I/O: when the driver is ready, [`VirtioDevice::activate`] hands the queues to a
/// [`QueueWorker`] that runs on the device's own thread (see [`worker`]), so a vCPU reading a
/// register never waits on a disk or a TAP.
pub trait VirtioDevice: Send {
    /// virtio device ID (2 = block, 1 = net, 26 = fs, 19 = vsock).
    fn device_type(&self) -> u32;
    /// Feature bits offered (VERSION_1 included).
    fn features(&self) -> u64;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads the device-specific configuration space (bytes beyond it read as 0).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the configuration space (most devices ignore it).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver is ready: returns what serves the queues from now on, or `None` if the
    /// driver's setup cannot be served (the device then needs a reset).
    fn activate(&mut self, ctx: ActivateContext) -> Option<Box<dyn QueueWorker>>;
    /// The driver reset the device (its worker is already gone): back to the initial state.
    fn reset(&mut self) {}
}

/// The queue side of an active virtio device: it owns the queues and the backend work, and
/// runs on the device's worker thread only.
pub trait QueueWorker: Send {
    /// Queue `index` was notified; process what the driver made available, within a
    /// [`Budget`]: [`Served::More`] asks to be called again, [`Served::Broken`] that the device
    /// found the driver's queue state broken and needs a reset.
    fn process_queue(&mut self, index: usize) -> Served;
    /// Host-side descriptors the worker watches for this device (a TAP, say).
    fn backend_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
    /// Backend descriptor `index` is readable. Returns as `process_queue` does.
    fn process_backend(&mut self, _index: usize) -> Served {
        Served::Done
    }
    /// Whether to watch backend descriptor `index` now: a device that cannot take more input
    /// (no guest buffers) says no, instead of dropping it or spinning on it.
    fn backend_wanted(&self, _index: usize) -> bool {
        true
    }
    /// Each queue's state for a snapshot (the worker idle: between batches), in queue order,
    /// as a restored device must see it: chains taken from a ring and not yet used count as
    /// not taken (the restored device takes them again).
    fn queue_states(&self) -> Vec<virtio_queue::QueueState>;
}

/// What serving a queue (or a backend) came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Everything there was is done.
    Done,
    /// The batch bound was reached with work left: call again (the worker thread re-arms the
    /// event itself, so that its stop event and other queues get their turn first).
    More,
    /// The driver's queue state is broken: the device needs a reset.
    Broken,
}

/// What one call may spend on a queue, so that a driver re-posting as fast as the device
/// completes cannot keep the worker (and a vCPU resetting the device, which waits for it) in
/// one call forever: at most a queue size of chains, and no new chain once twice the queue
/// size of descriptors has been read (a chain in progress may read one queue size more, and
/// [`INDIRECT_MAX`] more from an indirect table).
pub struct Budget {
    chains: usize,
    descriptors: usize,
}

impl Budget {
    pub fn for_queue(queue: &Queue) -> Budget {
        // A ready queue has at least one entry; never a budget that is spent before it starts.
        let size = usize::from(queue.size()).max(1);
        Budget {
            chains: size,
            descriptors: 2 * size,
        }
    }

    fn exhausted(&self) -> bool {
        self.chains == 0 || self.descriptors == 0
    }
}

/// Why a descriptor chain is not served (the chain is handed back with nothing written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("descriptor index {0} is outside the queue")]
    IndexOutOfRange(u16),
    #[error("the chain has more descriptors than the queue (a loop)")]
    TooLong,
    #[error("a descriptor is outside guest memory")]
    Unreadable,
    #[error("an indirect descriptor, but VIRTIO_RING_F_INDIRECT_DESC was not negotiated")]
    Indirect,
    #[error(
        "an indirect descriptor chained on (NEXT) or inside a table, or a table that is empty, \
         not whole descriptors or longer than {INDIRECT_MAX}"
    )]
    BadIndirect,
    #[error("the chain's buffers add up to more than 4 GiB")]
    LengthOverflow,
}

/// One entry taken from a queue's avail ring.
pub enum Popped {
    /// The chain at head index `.0`: its descriptors, or why it cannot be served.
    Chain(u16, Result<Vec<Descriptor>, ChainError>),
    /// The ring is empty.
    Empty,
    /// The budget is spent; the ring may hold more.
    Later,
}

/// Takes the next available chain from `queue` and walks it, charging `budget`; `indirect`
/// says whether VIRTIO_RING_F_INDIRECT_DESC was negotiated. Err means the avail ring itself is
/// broken (an index more than a queue ahead, or rings outside memory).
pub fn pop_chain(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    indirect: bool,
    budget: &mut Budget,
) -> Result<Popped, virtio_queue::Error> {
    if budget.exhausted() {
        return Ok(Popped::Later);
    }
    let table = GuestAddress(queue.desc_table());
    let size = queue.size();
    let Some(chain) = queue.iter(mem)?.next() else {
        return Ok(Popped::Empty);
    };
    let head = chain.head_index();
    budget.chains -= 1;
    Ok(Popped::Chain(
        head,
        walk_chain(mem, table, size, head, indirect, budget),
    ))
}

/// Bytes of one split-ring descriptor.
const DESCRIPTOR_SIZE: u32 = 16;

/// Reads the chain at `head` from the descriptor table at `table` itself rather than through
/// virtio-queue's iterator: that one follows INDIRECT descriptors unasked and ends a looping,
/// overflowing or out-of-range chain silently, which would serve a truncated chain as if it
/// were whole. With `indirect`, the chain may end in one descriptor that points at a table
/// (virtio 1.1 §2.6.5.3): the table's descriptors follow, chained by NEXT from its first.
fn walk_chain(
    mem: &GuestMemoryMmap,
    table: GuestAddress,
    size: u16,
    head: u16,
    indirect: bool,
    budget: &mut Budget,
) -> Result<Vec<Descriptor>, ChainError> {
    let mut descs = Vec::new();
    let mut index = head;
    let mut total = 0u32;
    // The table being walked: the ring's, then perhaps an indirect one.
    let (mut table, mut size, mut in_table) = (table, u32::from(size), false);
    // Descriptors read from the current table: more than it holds means one was read twice.
    let mut read = 0u32;
    loop {
        if u32::from(index) >= size {
            return Err(ChainError::IndexOutOfRange(index));
        }
        if read >= size {
            return Err(ChainError::TooLong);
        }
        read += 1;
        budget.descriptors = budget.descriptors.saturating_sub(1);
        let addr = table
            .checked_add(u64::from(index) * u64::from(DESCRIPTOR_SIZE))
            .ok_or(ChainError::Unreadable)?;
        let d: Descriptor = mem.read_obj(addr).map_err(|_| ChainError::Unreadable)?;
        if d.refers_to_indirect_table() {
            if !indirect {
                return Err(ChainError::Indirect);
            }
            // One table per chain, at its end (never with NEXT, never inside a table), made
            // of whole descriptors; its WRITE flag means nothing and is ignored.
            let entries = d.len() / DESCRIPTOR_SIZE;
            if in_table
                || d.has_next()
                || !d.len().is_multiple_of(DESCRIPTOR_SIZE)
                || entries == 0
                || entries > INDIRECT_MAX
            {
                return Err(ChainError::BadIndirect);
            }
            (table, size, in_table, read, index) = (d.addr(), entries, true, 0, 0);
            continue;
        }
        total = total
            .checked_add(d.len())
            .ok_or(ChainError::LengthOverflow)?;
        descs.push(d);
        if !d.has_next() {
            return Ok(descs);
        }
        index = d.next();
    }
}

/// Serves the descriptor chains the driver makes available on `queue`, within one [`Budget`]:
/// `handle` gets each walked chain (or why it could not be walked) and returns the length to
/// put in the used ring. With EVENT_IDX, notifications stay off while serving and the ring is
/// re-checked before stopping. Then the driver is interrupted if the ring's rules ask for it.
/// `indirect`: whether VIRTIO_RING_F_INDIRECT_DESC was negotiated.
pub fn serve_queue(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &Interrupt,
    indirect: bool,
    mut handle: impl FnMut(Result<&[Descriptor], ChainError>) -> u32,
) -> Served {
    let event_idx = queue.event_idx_enabled();
    let mut budget = Budget::for_queue(queue);
    if event_idx && queue.disable_notification(mem).is_err() {
        return Served::Broken;
    }
    let outcome = loop {
        let (head, len) = match pop_chain(queue, mem, indirect, &mut budget) {
            Ok(Popped::Chain(head, descs)) => (head, handle(descs.as_deref().map_err(|e| *e))),
            Ok(Popped::Later) => break Served::More,
            Ok(Popped::Empty) if !event_idx => break Served::Done,
            Ok(Popped::Empty) => match queue.enable_notification(mem) {
                // More arrived while notifications were off.
                Ok(true) if queue.disable_notification(mem).is_ok() => continue,
                Ok(false) => break Served::Done,
                _ => return Served::Broken,
            },
            // A malformed avail ring (index out of range) is a broken driver: stop serving.
            Err(_) => return Served::Broken,
        };
        if queue.add_used(mem, head, len).is_err() {
            return Served::Broken;
        }
    };
    if notify_if_needed(queue, mem, interrupt) {
        outcome
    } else {
        Served::Broken
    }
}

/// Interrupts the driver if the queue's notification rules (EVENT_IDX) say so. Returns false if
/// the ring cannot be read.
pub fn notify_if_needed(queue: &mut Queue, mem: &GuestMemoryMmap, interrupt: &Interrupt) -> bool {
    match queue.needs_notification(mem) {
        Ok(true) => {
            interrupt.trigger(INT_USED_RING);
            true
        }
        Ok(false) => true,
        Err(_) => false,
    }
}

/// The low (`high == false`) or high 32 bits of a 64-bit feature word, as the 32-bit
/// feature registers show it.
pub fn feature_half(features: u64, high: bool) -> u32 {
    let half = if high {
        features >> 32
    } else {
        features & 0xffff_ffff
    };
    u32::try_from(half).unwrap_or(u32::MAX) // cannot fail: 32 bits at most
}

/// Reads `data.len()` bytes at `offset` from a config-space byte image; out of range reads 0.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}
pub mod net;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod robustness_tests;

#[cfg(test)]
mod queue_tests;
