//! The virtio-blk device: what it offers and its config space ([`Block`], the register side),
//! and its one request queue ([`BlockWorker`], on the device's worker thread).

use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use super::request::{self, Limits};
use super::*;
use crate::devices::virtio::{
    read_config_bytes, serve_queue, ActivateContext, Interrupt, QueueWorker, Served, VirtioDevice,
    VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};

pub const QUEUE_SIZE: u16 = 256;
const DEVICE_TYPE_BLOCK: u32 = 2;

const LIMITS: Limits = Limits {
    // Header and status take two of a chain's descriptors. Linux's 1 MiB request is then two
    // requests (as with QEMU); with indirect tables both are in the ring at once.
    seg_max: QUEUE_SIZE as usize - 2,
    discard_seg_max: 32,
    discard_sectors_max: u32::MAX >> 9,
    max_data: 32 << 20,
};

/// Counters of what the guest sent that could not be served.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockStats {
    pub requests: u64,
    pub errors: u64,
    pub dropped_chains: u64,
}

pub struct Block {
    /// Shared with the worker: reads and writes go through `&DiskImage` (pread/pwrite).
    disk: Arc<DiskImage>,
    serial: [u8; VIRTIO_BLK_ID_BYTES],
    features: u64,
    config: Vec<u8>,
    queue_sizes: [u16; 1],
}

/// The request queue of an active virtio-blk device.
pub struct BlockWorker {
    disk: Arc<DiskImage>,
    serial: [u8; VIRTIO_BLK_ID_BYTES],
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: Arc<Interrupt>,
    features: u64,
    stats: BlockStats,
}

impl Block {
    /// `serial` is what GET_ID answers (at most 20 bytes; the config layer checks it).
    pub fn new(disk: DiskImage, serial: &str) -> Block {
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES];
        let n = serial.len().min(VIRTIO_BLK_ID_BYTES);
        id[..n].copy_from_slice(&serial.as_bytes()[..n]);

        // Indirect tables: a request takes one ring entry however many buffers it has, so a
        // large request no longer has to wait for the ring to drain.
        let mut features = VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_EVENT_IDX
            | VIRTIO_RING_F_INDIRECT_DESC
            | VIRTIO_BLK_F_SEG_MAX
            | VIRTIO_BLK_F_BLK_SIZE
            | VIRTIO_BLK_F_FLUSH;
        if disk.read_only() {
            features |= VIRTIO_BLK_F_RO;
        }
        if disk.supports_discard() {
            features |= VIRTIO_BLK_F_DISCARD | VIRTIO_BLK_F_WRITE_ZEROES;
        }
        let config = config_space(disk.size() >> SECTOR_SHIFT);
        Block {
            disk: Arc::new(disk),
            serial: id,
            features,
            config,
            queue_sizes: [QUEUE_SIZE],
        }
    }

    /// The worker for the driver's queues, or `None` if the driver enabled none.
    pub fn start(&self, ctx: ActivateContext) -> Option<BlockWorker> {
        let queue = ctx.queues.into_iter().next()?;
        Some(BlockWorker {
            disk: self.disk.clone(),
            serial: self.serial,
            mem: ctx.mem,
            queue,
            interrupt: ctx.interrupt,
            features: ctx.acked_features,
            stats: BlockStats::default(),
        })
    }
}

impl BlockWorker {
    pub fn stats(&self) -> BlockStats {
        self.stats
    }
}

/// The config space (§5.2.4), little-endian, up to `write_zeroes_may_unmap`.
// The `as u32` casts narrow small constants (at most 512).
#[allow(clippy::cast_possible_truncation)]
fn config_space(capacity_sectors: u64) -> Vec<u8> {
    let mut c = vec![0u8; 60];
    let mut put = |off: usize, bytes: &[u8]| c[off..off + bytes.len()].copy_from_slice(bytes);
    put(0, &capacity_sectors.to_le_bytes());
    put(12, &(LIMITS.seg_max as u32).to_le_bytes()); // seg_max
    put(20, &(SECTOR_SIZE as u32).to_le_bytes()); // blk_size
    put(34, &1u16.to_le_bytes()); // num_queues
    put(36, &LIMITS.discard_sectors_max.to_le_bytes()); // max_discard_sectors
    put(40, &(LIMITS.discard_seg_max as u32).to_le_bytes()); // max_discard_seg
    put(44, &1u32.to_le_bytes()); // discard_sector_alignment
    put(48, &LIMITS.discard_sectors_max.to_le_bytes()); // max_write_zeroes_sectors
    put(52, &(LIMITS.discard_seg_max as u32).to_le_bytes()); // max_write_zeroes_seg
    put(56, &[1]); // write_zeroes_may_unmap
    c
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE_BLOCK
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

impl QueueWorker for BlockWorker {
    fn queue_states(&self) -> Vec<virtio_queue::QueueState> {
        // Every request is finished within its batch: nothing is in flight between batches.
        vec![self.queue.state()]
    }

    fn process_queue(&mut self, index: usize) -> Served {
        if index != 0 {
            return Served::Done;
        }
        let BlockWorker {
            disk,
            serial,
            mem,
            queue,
            interrupt,
            features,
            stats,
        } = self;
        let indirect = *features & VIRTIO_RING_F_INDIRECT_DESC != 0;
        serve_queue(queue, mem, interrupt, indirect, |descs| {
            stats.requests += 1;
            // A chain that cannot be walked whole is not a request: nothing of it is run.
            let Ok(descs) = descs else {
                stats.dropped_chains += 1;
                return 0;
            };
            match request::handle(descs, mem, disk, serial, *features, &LIMITS) {
                Ok(out) => {
                    if out.status != VIRTIO_BLK_S_OK {
                        stats.errors += 1;
                    }
                    out.written
                }
                Err(_) => {
                    stats.dropped_chains += 1;
                    0
                }
            }
        })
    }
}
