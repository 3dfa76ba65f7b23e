//! virtio-fs (virtio 1.2 §5.11) as a vhost-user frontend: the guest's FUSE requests are served
//! by a separate process, virtiofsd, that maps guest memory itself (it gets the guest RAM's
//! memfd, see `vstate::memory`) and reads and writes the rings directly. flint only speaks the
//! device's registers and config space (the tag), hands the rings to the backend when the driver
//! is ready, and passes notifications both ways: a queue notify becomes a write to the
//! backend's kick eventfd, and the backend's call eventfd an interrupt, on the device's worker
//! thread. So no FUSE request, file name or file byte is ever parsed by flint.
//!
//! [`backend`] connects to the backend and checks what it offers; [`virtiofsd`] starts one per
//! shared path and stops it when flint ends.

pub mod backend;
pub mod virtiofsd;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use vhost::vhost_user::message::VhostUserVirtioFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::{Queue, QueueState, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::{
    ActivateContext, Interrupt, QueueWorker, Served, VirtioDevice, INT_USED_RING,
    VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
pub use backend::{Backend, FsError};
pub use virtiofsd::Virtiofsd;

/// virtio device ID of a file system device.
pub const DEVICE_ID: u32 = 26;
/// One high-priority queue (FUSE_INTERRUPT, FORGET) and one request queue.
const NUM_QUEUES: usize = 2;
const REQUEST_QUEUES: u32 = 1;
/// Queue size: what Cloud Hypervisor offers; virtiofsd takes up to 32768.
const QUEUE_SIZE: u16 = 1024;
/// What the guest may use of what the backend offers: the ring formats flint knows the
/// transport can carry (split rings; no packed rings, no notification data).
const GUEST_FEATURES: u64 =
    VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX | VIRTIO_RING_F_INDIRECT_DESC;

/// A virtio-fs device whose requests a vhost-user backend serves.
pub struct Fs {
    tag: String,
    backend: Backend,
    /// The config space: the tag (36 bytes, NUL-padded) and the number of request queues.
    config: [u8; 40],
    /// Queues handed to the backend at the last activation (stopped again at reset).
    started: Vec<usize>,
    /// Per queue: written to tell the backend the queue has work (the driver notified it),
    /// and written by the backend when it used buffers (the driver wants an interrupt). Made
    /// here, once: activation runs on a vCPU thread, whose seccomp filter makes no eventfds.
    kicks: Vec<Arc<EventFd>>,
    calls: Vec<Arc<EventFd>>,
}

impl Fs {
    /// The device for share `tag`, served by `backend` (connected and checked already).
    pub fn new(tag: &str, backend: Backend) -> Result<Fs, FsError> {
        let bytes = tag.as_bytes();
        if bytes.is_empty() || bytes.len() > 36 {
            return Err(FsError::Tag(tag.to_string()));
        }
        let mut config = [0u8; 40];
        config[..bytes.len()].copy_from_slice(bytes);
        config[36..].copy_from_slice(&REQUEST_QUEUES.to_le_bytes());
        let eventfds = || {
            (0..NUM_QUEUES)
                .map(|_| {
                    EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
                        .map(Arc::new)
                        .map_err(FsError::EventFd)
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Fs {
            tag: tag.to_string(),
            backend,
            config,
            started: Vec::new(),
            kicks: eventfds()?,
            calls: eventfds()?,
        })
    }

    /// Hands the driver's rings and guest memory to the backend and returns the worker that
    /// relays notifications.
    fn start(&mut self, ctx: &ActivateContext) -> Result<FsWorker, FsError> {
        let fe = self.backend.frontend();
        let step = |what: &'static str| move |e| FsError::Protocol(what, e);
        let mut features = ctx.acked_features & GUEST_FEATURES;
        if self.backend.protocol_features() {
            features |= VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        }
        fe.set_features(features).map_err(step("SET_FEATURES"))?;
        let regions = memory_regions(&ctx.mem)?;
        fe.set_mem_table(&regions).map_err(step("SET_MEM_TABLE"))?;
        let mut worker = FsWorker {
            kicks: Vec::new(),
            calls: Vec::new(),
            queues: Vec::new(),
            interrupt: ctx.interrupt.clone(),
        };
        for (i, q) in ctx.queues.iter().enumerate() {
            let (Some(kick), Some(call)) = (self.kicks.get(i), self.calls.get(i)) else {
                break;
            };
            // A call left from before a reset reaches this driver as one spurious interrupt,
            // which virtio drivers take (it is not drained here: vCPU threads may not read).
            if q.ready() {
                self.start_queue(&fe, i, q, &ctx.mem, kick, call)?;
                self.started.push(i);
            }
            worker.kicks.push(kick.clone());
            worker.calls.push(call.clone());
            worker.queues.push(q.state());
        }
        Ok(worker)
    }

    fn start_queue(
        &self,
        fe: &Frontend,
        i: usize,
        q: &Queue,
        mem: &GuestMemoryMmap,
        kick: &EventFd,
        call: &EventFd,
    ) -> Result<(), FsError> {
        let step = |what: &'static str| move |e| FsError::Protocol(what, e);
        // The backend finds the rings through flint's own addresses of them (translated back
        // with the memory table); the transport checked they lie in guest memory.
        let host = |gpa: u64| {
            mem.get_host_address(GuestAddress(gpa))
                .map(|p| p as u64)
                .map_err(|_| FsError::RingOutsideMemory)
        };
        fe.set_vring_num(i, q.size())
            .map_err(step("SET_VRING_NUM"))?;
        let addrs = VringConfigData {
            queue_max_size: q.max_size(),
            queue_size: q.size(),
            flags: 0,
            desc_table_addr: host(q.desc_table())?,
            used_ring_addr: host(q.used_ring())?,
            avail_ring_addr: host(q.avail_ring())?,
            log_addr: None,
        };
        fe.set_vring_addr(i, &addrs)
            .map_err(step("SET_VRING_ADDR"))?;
        fe.set_vring_base(i, q.next_avail())
            .map_err(step("SET_VRING_BASE"))?;
        fe.set_vring_call(i, call).map_err(step("SET_VRING_CALL"))?;
        fe.set_vring_kick(i, kick).map_err(step("SET_VRING_KICK"))?;
        if self.backend.protocol_features() {
            // With protocol features, a ring starts disabled until enabled (vhost-user spec).
            let mut fe = fe.clone();
            fe.set_vring_enable(i, true)
                .map_err(step("SET_VRING_ENABLE"))?;
        }
        Ok(())
    }
}

/// Guest RAM as the backend must map it: each region's memfd, offset and flint's address.
fn memory_regions(mem: &GuestMemoryMmap) -> Result<Vec<VhostUserMemoryRegionInfo>, FsError> {
    mem.iter()
        .map(|r| {
            VhostUserMemoryRegionInfo::from_guest_region(r).map_err(|_| FsError::MemoryNotShared)
        })
        .collect()
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | (self.backend.features() & GUEST_FEATURES)
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; NUM_QUEUES]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Option<Box<dyn QueueWorker>> {
        match self.start(&ctx) {
            Ok(worker) => Some(Box::new(worker)),
            Err(e) => {
                // The driver sees a device that needs a reset; the user sees why.
                eprintln!(
                    "flint: virtio-fs '{}': cannot start the share: {}",
                    self.tag,
                    crate::exit::error_chain(&e)
                );
                self.reset();
                None
            }
        }
    }

    fn reset(&mut self) {
        // GET_VRING_BASE stops a ring: after it the backend no longer touches the rings the
        // driver is about to reuse.
        let mut fe = self.backend.frontend();
        for i in std::mem::take(&mut self.started) {
            if self.backend.protocol_features() {
                let _ = fe.set_vring_enable(i, false);
            }
            let _ = fe.get_vring_base(i);
        }
    }
}

/// Relays notifications between the driver and the backend, on the device's worker thread.
struct FsWorker {
    /// The device's kick and call eventfds, by queue.
    kicks: Vec<Arc<EventFd>>,
    calls: Vec<Arc<EventFd>>,
    /// The queues as they were handed over: the backend has them now.
    queues: Vec<QueueState>,
    interrupt: Arc<Interrupt>,
}

impl QueueWorker for FsWorker {
    fn process_queue(&mut self, index: usize) -> Served {
        if let Some(kick) = self.kicks.get(index) {
            // A full counter still wakes the backend.
            let _ = kick.write(1);
        }
        Served::Done
    }

    fn backend_fds(&self) -> Vec<RawFd> {
        self.calls.iter().map(|c| c.as_raw_fd()).collect()
    }

    fn process_backend(&mut self, index: usize) -> Served {
        if let Some(call) = self.calls.get(index) {
            if call.read().is_ok() {
                self.interrupt.trigger(INT_USED_RING);
            }
        }
        Served::Done
    }

    fn queue_states(&self) -> Vec<QueueState> {
        // Never used for a snapshot: a VM with shares refuses one (virtiofsd's state is not
        // flint's to save).
        self.queues.clone()
    }
}

// Tested against a real virtiofsd in tests/fast_fs.rs (the test plays the guest's FUSE driver on
// these queues) and with Linux guests in tests/lab_fs.rs.
