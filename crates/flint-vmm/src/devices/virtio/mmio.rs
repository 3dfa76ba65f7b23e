//! The virtio-mmio transport (virtio 1.1 §4.2.2, version 2 registers only). It runs on the
//! vCPU threads and does no device I/O: the device's queues are served by its worker thread
//! (see [`super::worker`]).

use std::sync::Arc;

use virtio_queue::{Queue, QueueState, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::worker::DeviceQueues;
use super::{
    status, ActivateContext, Interrupt, VirtioDevice, INT_CONFIG_CHANGE, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
};
use crate::bus::BusDevice;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x544e_4c46; // "FLNT"

/// Register offsets.
pub const REG_MAGIC: u64 = 0x000;
pub const REG_VERSION: u64 = 0x004;
pub const REG_DEVICE_ID: u64 = 0x008;
pub const REG_VENDOR_ID: u64 = 0x00c;
pub const REG_DEVICE_FEATURES: u64 = 0x010;
pub const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
pub const REG_DRIVER_FEATURES: u64 = 0x020;
pub const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
pub const REG_QUEUE_SEL: u64 = 0x030;
pub const REG_QUEUE_NUM_MAX: u64 = 0x034;
pub const REG_QUEUE_NUM: u64 = 0x038;
pub const REG_QUEUE_READY: u64 = 0x044;
pub const REG_QUEUE_NOTIFY: u64 = 0x050;
pub const REG_INTERRUPT_STATUS: u64 = 0x060;
pub const REG_INTERRUPT_ACK: u64 = 0x064;
pub const REG_STATUS: u64 = 0x070;
pub const REG_QUEUE_DESC_LOW: u64 = 0x080;
pub const REG_QUEUE_DESC_HIGH: u64 = 0x084;
pub const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
pub const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
pub const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
pub const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
/// Shared memory regions (virtio 1.2 §4.2.2): flint's devices have none, which reads as
/// all ones (a length of 0 would be a region, and virtio-fs would try to map it for DAX).
pub const REG_SHM_LEN_LOW: u64 = 0x0b0;
pub const REG_SHM_LEN_HIGH: u64 = 0x0b4;
pub const REG_SHM_BASE_LOW: u64 = 0x0b8;
pub const REG_SHM_BASE_HIGH: u64 = 0x0bc;
pub const REG_CONFIG_GENERATION: u64 = 0x0fc;
pub const CONFIG_SPACE: u64 = 0x100;

pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    /// The queue side, shared with the device's worker thread.
    device_queues: Arc<DeviceQueues>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    /// One per queue; the device's worker thread watches them. KVM writes them directly when the notify
    /// register is backed by an ioeventfd; otherwise the transport does on the MMIO exit.
    queue_evts: Vec<EventFd>,
    ioeventfd: bool,
    queues: Vec<Queue>,
    /// Per queue: the driver wrote a size the queue cannot take. virtio-queue keeps the old
    /// size then, so the transport remembers and refuses the queue at DRIVER_OK.
    size_refused: Vec<bool>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    status: u32,
    active: bool,
}

/// One queue in a snapshot (virtio-queue's `QueueState`, which a restore validates again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedQueue {
    pub max_size: u16,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx_enabled: bool,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
}

impl From<QueueState> for SavedQueue {
    fn from(q: QueueState) -> Self {
        SavedQueue {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

impl From<SavedQueue> for QueueState {
    fn from(q: SavedQueue) -> Self {
        QueueState {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

/// A virtio-mmio device in a snapshot: the transport's registers and each queue (from the
/// worker when the device is active).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransportState {
    pub device_type: u32,
    pub status: u32,
    pub acked_features: u64,
    pub queue_sel: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub active: bool,
    pub size_refused: Vec<bool>,
    pub queues: Vec<SavedQueue>,
    pub interrupt_status: u32,
    pub needs_reset: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("creating a queue notification eventfd failed")]
    EventFd(#[source] std::io::Error),
    #[error("a device queue size is not a power of two up to 32768")]
    QueueSize,
    #[error("the snapshot's {0}")]
    BadState(String),
}

impl MmioTransport {
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
    ) -> Result<Self, TransportError> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| Queue::new(max).map_err(|_| TransportError::QueueSize))
            .collect::<Result<Vec<_>, _>>()?;
        let queue_evts = (0..queues.len())
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).map_err(TransportError::EventFd))
            .collect::<Result<Vec<_>, _>>()?;
        let size_refused = vec![false; queues.len()];
        Ok(MmioTransport {
            device,
            size_refused,
            device_queues: Arc::new(DeviceQueues::new(interrupt.clone())),
            mem,
            interrupt,
            queue_evts,
            ioeventfd: false,
            queues,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            status: 0,
            active: false,
        })
    }

    /// The transport's state for a snapshot; `worker` is the device's worker when active
    /// (held idle by the caller, see `DeviceQueues::hold`).
    pub fn snapshot(&self, worker: Option<&dyn super::QueueWorker>) -> TransportState {
        let queues = match (self.active, worker) {
            (true, Some(w)) => w.queue_states(),
            _ => self.queues.iter().map(|q| q.state()).collect(),
        };
        TransportState {
            device_type: self.device.device_type(),
            status: self.status,
            acked_features: self.acked_features,
            queue_sel: self.queue_sel,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            active: self.active,
            size_refused: self.size_refused.clone(),
            queues: queues.into_iter().map(SavedQueue::from).collect(),
            interrupt_status: self.interrupt.status(),
            needs_reset: self.device_queues.needs_reset(),
        }
    }

    /// Puts a new transport (for the same kind of device) into the saved state; an active
    /// device gets its worker again, with the saved queues, and is woken to serve them.
    pub fn restore(&mut self, s: &TransportState) -> Result<(), TransportError> {
        let bad = |what: &str| TransportError::BadState(what.to_string());
        if s.device_type != self.device.device_type() {
            return Err(bad("virtio devices are not the ones this VM has"));
        }
        if s.queues.len() != self.queues.len() || s.size_refused.len() != self.queues.len() {
            return Err(bad("virtio device has another number of queues"));
        }
        if s.acked_features & !self.device.features() != 0 {
            return Err(bad(
                "virtio driver uses features this device does not offer",
            ));
        }
        let mut queues = Vec::with_capacity(s.queues.len());
        for (saved, mine) in s.queues.iter().zip(&self.queues) {
            if saved.max_size != mine.max_size() {
                return Err(bad("virtio queue has another maximum size"));
            }
            let q = Queue::try_from(QueueState::from(*saved))
                .map_err(|e| TransportError::BadState(format!("virtio queue is invalid: {e}")))?;
            queues.push(q);
        }
        self.status = s.status;
        self.acked_features = s.acked_features;
        self.queue_sel = s.queue_sel;
        self.device_features_sel = s.device_features_sel;
        self.driver_features_sel = s.driver_features_sel;
        self.size_refused = s.size_refused.clone();
        self.interrupt.restore_status(s.interrupt_status);
        self.device_queues.restore_needs_reset(s.needs_reset);
        if !s.active {
            self.queues = queues;
            return Ok(());
        }
        if queues.iter().any(|q| q.ready() && !q.is_valid(&self.mem)) {
            return Err(bad("virtio queue lies outside guest memory"));
        }
        // As at DRIVER_OK: the device takes the queues, the transport keeps their shape.
        for (mine, q) in self.queues.iter_mut().zip(&queues) {
            let mut fresh = Queue::new(q.max_size()).map_err(|_| TransportError::QueueSize)?;
            fresh.set_size(q.size());
            fresh.set_ready(q.ready());
            *mine = fresh;
        }
        let worker = self
            .device
            .activate(ActivateContext {
                mem: self.mem.clone(),
                queues,
                acked_features: self.acked_features,
                interrupt: self.interrupt.clone(),
            })
            .ok_or_else(|| bad("virtio device cannot serve its saved queues"))?;
        self.device_queues.activate(worker);
        self.active = true;
        for evt in &self.queue_evts {
            let _ = evt.write(1);
        }
        Ok(())
    }

    /// The virtio device ID of the device behind this transport.
    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The queue side, for the device's worker thread.
    pub fn device_queues(&self) -> &Arc<DeviceQueues> {
        &self.device_queues
    }

    /// KVM now signals `queue_evts` on notify writes without an exit.
    pub fn set_ioeventfd(&mut self, on: bool) {
        self.ioeventfd = on;
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers may change only between FEATURES_OK and DRIVER_OK, on a queue not yet
    /// ready (§4.2.3.2).
    fn queue_config_allowed(&self) -> bool {
        self.status & (status::FEATURES_OK | status::DRIVER_OK | status::FAILED)
            == status::FEATURES_OK
    }

    fn reset(&mut self) {
        if self.active {
            // Waits for the worker's request in flight: after this the rings are the driver's.
            self.device_queues.deactivate();
            self.device.reset();
        }
        for q in &mut self.queues {
            q.reset();
        }
        self.size_refused.fill(false);
        self.active = false;
        self.status = 0;
        self.acked_features = 0;
        self.queue_sel = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.interrupt.ack(u32::MAX);
    }

    /// The device's config space changed (a restored disk's new size): the driver is told
    /// with a config-change interrupt, if it is driving the device.
    pub fn config_changed(&self) {
        if self.status & status::DRIVER_OK != 0 {
            self.interrupt.trigger(INT_CONFIG_CHANGE);
        }
    }

    fn needs_reset(&mut self) {
        self.status |= status::DEVICE_NEEDS_RESET;
        if self.status & status::DRIVER_OK != 0 {
            self.interrupt.trigger(INT_CONFIG_CHANGE);
        }
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        // Bits are only ever added; anything else (other than a reset) is a driver bug to ignore.
        if v & self.status != self.status {
            return;
        }
        let new = v & !self.status;
        let has = |bit| v & bit != 0;
        let step_ok = match new {
            status::ACKNOWLEDGE => true,
            status::DRIVER => has(status::ACKNOWLEDGE),
            status::FEATURES_OK => {
                has(status::DRIVER)
                    && self.acked_features & !self.device.features() == 0
                    && self.acked_features & VIRTIO_F_VERSION_1 != 0
            }
            status::DRIVER_OK => has(status::FEATURES_OK),
            status::FAILED => true,
            _ => false,
        };
        if !step_ok {
            return;
        }
        self.status = v;
        if new == status::DRIVER_OK {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let event_idx = self.acked_features & VIRTIO_RING_F_EVENT_IDX != 0;
        let valid = self
            .queues
            .iter()
            .zip(&self.size_refused)
            .all(|(q, &refused)| !q.ready() || (!refused && q.is_valid(&self.mem)));
        if !valid || !self.queues.iter().any(|q| q.ready()) {
            self.needs_reset();
            return;
        }
        // The device takes over the queues; the transport keeps fresh ones of the same shape so
        // that the registers still read back (QueueNumMax, QueueReady) until the next reset.
        let mut queues = Vec::with_capacity(self.queues.len());
        for q in &mut self.queues {
            let mut fresh = match Queue::new(q.max_size()) {
                Ok(f) => f,
                Err(_) => {
                    self.status |= status::DEVICE_NEEDS_RESET;
                    return;
                }
            };
            fresh.set_size(q.size());
            fresh.set_ready(q.ready());
            let mut taken = std::mem::replace(q, fresh);
            taken.set_event_idx(event_idx);
            queues.push(taken);
        }
        let worker = self.device.activate(ActivateContext {
            mem: self.mem.clone(),
            queues,
            acked_features: self.acked_features,
            interrupt: self.interrupt.clone(),
        });
        let Some(worker) = worker else {
            self.needs_reset();
            return;
        };
        self.device_queues.activate(worker);
        self.active = true;
        // Wake the worker so that it starts watching the device's backend (and serves anything
        // the driver queued before DRIVER_OK).
        for evt in &self.queue_evts {
            let _ = evt.write(1);
        }
    }

    /// The status register: the driver's bits, and DEVICE_NEEDS_RESET if the transport or
    /// the device's worker found the driver's setup broken.
    fn status(&self) -> u32 {
        if self.device_queues.needs_reset() {
            self.status | status::DEVICE_NEEDS_RESET
        } else {
            self.status
        }
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset {
            REG_MAGIC => MAGIC,
            REG_VERSION => VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => super::feature_half(self.device.features(), false),
                1 => super::feature_half(self.device.features(), true),
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size() as u32),
            REG_QUEUE_READY => self.selected_queue().map_or(0, |q| q.ready() as u32),
            REG_INTERRUPT_STATUS => self.interrupt.status(),
            REG_STATUS => self.status(),
            // The config space never changes under the driver.
            REG_CONFIG_GENERATION => 0,
            REG_SHM_LEN_LOW | REG_SHM_LEN_HIGH | REG_SHM_BASE_LOW | REG_SHM_BASE_HIGH => u32::MAX,
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        let queue_ok = self.queue_config_allowed();
        let features_ok = self.status & (status::DRIVER | status::FEATURES_OK) == status::DRIVER;
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            REG_DRIVER_FEATURES if features_ok => {
                let shift = match self.driver_features_sel {
                    0 => 0,
                    1 => 32,
                    _ => return,
                };
                self.acked_features =
                    (self.acked_features & !(0xffff_ffffu64 << shift)) | ((v as u64) << shift);
            }
            REG_QUEUE_SEL => self.queue_sel = v,
            REG_QUEUE_NOTIFY => {
                if !self.ioeventfd {
                    if let Some(evt) = self.queue_evts.get(v as usize) {
                        let _ = evt.write(1);
                    }
                }
            }
            REG_INTERRUPT_ACK => self.interrupt.ack(v),
            REG_STATUS => self.set_status(v),
            _ if !queue_ok => {}
            _ => {
                let sel = self.queue_sel as usize;
                let (Some(q), Some(refused)) =
                    (self.queues.get_mut(sel), self.size_refused.get_mut(sel))
                else {
                    return;
                };
                if q.ready() && offset != REG_QUEUE_READY {
                    return;
                }
                match offset {
                    REG_QUEUE_NUM => {
                        // An invalid size (0x10010 included: never truncated to 16) makes
                        // the queue unusable until a valid one is written.
                        let size = u16::try_from(v).ok();
                        *refused = size.is_none_or(|n| q.try_set_size(n).is_err());
                    }
                    REG_QUEUE_READY => q.set_ready(v == 1),
                    REG_QUEUE_DESC_LOW => q.set_desc_table_address(Some(v), None),
                    REG_QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(v)),
                    REG_QUEUE_DRIVER_LOW => q.set_avail_ring_address(Some(v), None),
                    REG_QUEUE_DRIVER_HIGH => q.set_avail_ring_address(None, Some(v)),
                    REG_QUEUE_DEVICE_LOW => q.set_used_ring_address(Some(v), None),
                    REG_QUEUE_DEVICE_HIGH => q.set_used_ring_address(None, Some(v)),
                    _ => {}
                }
            }
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            self.device.read_config(offset - CONFIG_SPACE, data);
        } else if data.len() == 4 && offset.is_multiple_of(4) {
            data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
        } else {
            // Registers are 32-bit and aligned (§4.2.2.2): anything else reads as zero.
            data.fill(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            self.device.write_config(offset - CONFIG_SPACE, data);
        } else if let (Ok(bytes), true) = (<[u8; 4]>::try_from(data), offset.is_multiple_of(4)) {
            self.write_reg(offset, u32::from_le_bytes(bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::irq::IrqLine;
    use crate::devices::virtio::{feature_half, QueueWorker, Served};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use vm_memory::GuestAddress;

    /// A device that records what the transport does to it.
    struct Probe {
        activations: Arc<AtomicUsize>,
        resets: Arc<AtomicUsize>,
        sizes: [u16; 2],
        /// What the worker waits on before each queue notification, when set.
        gate: Option<std::sync::mpsc::Receiver<()>>,
    }

    /// Its worker: reports a broken queue, after waiting at the gate if there is one.
    struct ProbeWorker(Option<std::sync::mpsc::Receiver<()>>);

    impl QueueWorker for ProbeWorker {
        fn queue_states(&self) -> Vec<virtio_queue::QueueState> {
            Vec::new()
        }
        fn process_queue(&mut self, _: usize) -> Served {
            if let Some(gate) = &self.0 {
                let _ = gate.recv();
            }
            Served::Broken
        }
    }

    impl VirtioDevice for Probe {
        fn device_type(&self) -> u32 {
            42
        }
        fn features(&self) -> u64 {
            VIRTIO_F_VERSION_1 | 1 << 3
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &self.sizes
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            super::super::read_config_bytes(&[1, 2, 3, 4], offset, data);
        }
        fn activate(&mut self, ctx: ActivateContext) -> Option<Box<dyn QueueWorker>> {
            assert_eq!(ctx.queues.len(), 2);
            self.activations.fetch_add(1, Ordering::SeqCst);
            Some(Box::new(ProbeWorker(self.gate.take())))
        }
        fn reset(&mut self) {
            self.resets.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct T {
        t: MmioTransport,
        activations: Arc<AtomicUsize>,
        resets: Arc<AtomicUsize>,
        irq: EventFd,
    }

    fn transport() -> T {
        transport_with_gate(None)
    }

    fn transport_with_gate(gate: Option<std::sync::mpsc::Receiver<()>>) -> T {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let (activations, resets) = (Arc::default(), Arc::default());
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let probe = Probe {
            activations: Arc::clone(&activations),
            resets: Arc::clone(&resets),
            sizes: [16, 16],
            gate,
        };
        let interrupt = Arc::new(Interrupt::new(IrqLine::Fd(irq.try_clone().unwrap())));
        T {
            t: MmioTransport::new(Box::new(probe), mem, interrupt).unwrap(),
            activations,
            resets,
            irq,
        }
    }

    fn rd(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    /// Takes the driver up to FEATURES_OK accepting `features`.
    fn negotiate(t: &mut MmioTransport, features: u64) {
        wr(t, REG_STATUS, status::ACKNOWLEDGE);
        wr(t, REG_STATUS, status::ACKNOWLEDGE | status::DRIVER);
        for sel in 0..2 {
            wr(t, REG_DRIVER_FEATURES_SEL, sel);
            wr(t, REG_DRIVER_FEATURES, feature_half(features, sel == 1));
        }
        wr(
            t,
            REG_STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
    }

    /// Sets up queue `q` of size 16 at valid addresses and marks it ready.
    fn setup_queue(t: &mut MmioTransport, q: u32) {
        let base = 0x1000 * (q + 1);
        wr(t, REG_QUEUE_SEL, q);
        wr(t, REG_QUEUE_NUM, 16);
        wr(t, REG_QUEUE_DESC_LOW, base);
        wr(t, REG_QUEUE_DRIVER_LOW, base + 0x100);
        wr(t, REG_QUEUE_DEVICE_LOW, base + 0x200);
        wr(t, REG_QUEUE_READY, 1);
    }

    const ALL_OK: u32 =
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

    #[test]
    fn identity_registers_and_config_space() {
        let mut x = transport();
        assert_eq!(rd(&mut x.t, REG_MAGIC), MAGIC);
        assert_eq!(rd(&mut x.t, REG_VERSION), 2);
        assert_eq!(rd(&mut x.t, REG_DEVICE_ID), 42);
        wr(&mut x.t, REG_DEVICE_FEATURES_SEL, 1);
        assert_eq!(rd(&mut x.t, REG_DEVICE_FEATURES), 1);
        wr(&mut x.t, REG_DEVICE_FEATURES_SEL, 0);
        assert_eq!(rd(&mut x.t, REG_DEVICE_FEATURES), 1 << 3);
        let mut c = [0u8; 2];
        x.t.read(CONFIG_SPACE + 2, &mut c);
        assert_eq!(c, [3, 4]);
        // Unaligned or narrow register accesses read zero and change nothing.
        let mut b = [0xffu8; 2];
        x.t.read(REG_MAGIC, &mut b);
        assert_eq!(b, [0, 0]);
        x.t.write(REG_STATUS, &[1]);
        assert_eq!(rd(&mut x.t, REG_STATUS), 0);
        // No shared memory region: all ones, not a region of length 0.
        for reg in [
            REG_SHM_LEN_LOW,
            REG_SHM_LEN_HIGH,
            REG_SHM_BASE_LOW,
            REG_SHM_BASE_HIGH,
        ] {
            assert_eq!(rd(&mut x.t, reg), u32::MAX);
        }
    }

    #[test]
    fn full_negotiation_activates_once() {
        let mut x = transport();
        negotiate(&mut x.t, VIRTIO_F_VERSION_1);
        assert_ne!(rd(&mut x.t, REG_STATUS) & status::FEATURES_OK, 0);
        setup_queue(&mut x.t, 0);
        setup_queue(&mut x.t, 1);
        wr(&mut x.t, REG_STATUS, ALL_OK);
        assert_eq!(rd(&mut x.t, REG_STATUS), ALL_OK);
        assert_eq!(x.activations.load(Ordering::SeqCst), 1);
        // Queue registers are frozen now.
        wr(&mut x.t, REG_QUEUE_SEL, 0);
        wr(&mut x.t, REG_QUEUE_NUM, 4);
        wr(&mut x.t, REG_QUEUE_READY, 0);
        assert_eq!(rd(&mut x.t, REG_QUEUE_READY), 1);
        // Reset: the device is told, everything is back to the start.
        wr(&mut x.t, REG_STATUS, 0);
        assert_eq!(x.resets.load(Ordering::SeqCst), 1);
        assert_eq!(rd(&mut x.t, REG_STATUS), 0);
        assert_eq!(rd(&mut x.t, REG_QUEUE_READY), 0);
    }

    #[test]
    fn features_ok_needs_version_1_and_offered_bits_only() {
        let mut x = transport();
        negotiate(&mut x.t, 1 << 3); // no VERSION_1: legacy drivers are not served
        assert_eq!(rd(&mut x.t, REG_STATUS) & status::FEATURES_OK, 0);
        wr(&mut x.t, REG_STATUS, 0);
        negotiate(&mut x.t, VIRTIO_F_VERSION_1 | 1 << 7); // a bit never offered
        assert_eq!(rd(&mut x.t, REG_STATUS) & status::FEATURES_OK, 0);
    }

    #[test]
    fn out_of_order_status_is_ignored() {
        let mut x = transport();
        wr(&mut x.t, REG_STATUS, status::DRIVER); // DRIVER before ACKNOWLEDGE
        assert_eq!(rd(&mut x.t, REG_STATUS), 0);
        wr(
            &mut x.t,
            REG_STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
        );
        assert_eq!(rd(&mut x.t, REG_STATUS), 0);
        // Queue setup before FEATURES_OK is ignored.
        setup_queue(&mut x.t, 0);
        assert_eq!(rd(&mut x.t, REG_QUEUE_READY), 0);
        assert_eq!(x.activations.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn broken_queue_at_driver_ok_needs_reset() {
        let mut x = transport();
        negotiate(&mut x.t, VIRTIO_F_VERSION_1);
        setup_queue(&mut x.t, 0);
        // Queue 1: rings outside guest memory.
        wr(&mut x.t, REG_QUEUE_SEL, 1);
        wr(&mut x.t, REG_QUEUE_NUM, 16);
        wr(&mut x.t, REG_QUEUE_DESC_HIGH, 1);
        wr(&mut x.t, REG_QUEUE_READY, 1);
        wr(&mut x.t, REG_STATUS, ALL_OK);
        assert_ne!(rd(&mut x.t, REG_STATUS) & status::DEVICE_NEEDS_RESET, 0);
        assert_eq!(x.activations.load(Ordering::SeqCst), 0);
        assert_eq!(rd(&mut x.t, REG_INTERRUPT_STATUS), INT_CONFIG_CHANGE);
        assert!(x.irq.read().is_ok(), "the driver is told");
        wr(&mut x.t, REG_INTERRUPT_ACK, INT_CONFIG_CHANGE);
        assert_eq!(rd(&mut x.t, REG_INTERRUPT_STATUS), 0);
    }

    #[test]
    fn device_that_gives_up_marks_needs_reset() {
        let mut x = transport();
        negotiate(&mut x.t, VIRTIO_F_VERSION_1);
        setup_queue(&mut x.t, 0);
        setup_queue(&mut x.t, 1);
        wr(&mut x.t, REG_STATUS, ALL_OK);
        let _ = x.irq.read();
        x.t.device_queues().process_queue(0); // the probe's worker reports a broken queue
        assert_ne!(rd(&mut x.t, REG_STATUS) & status::DEVICE_NEEDS_RESET, 0);
        assert_eq!(rd(&mut x.t, REG_INTERRUPT_STATUS), INT_CONFIG_CHANGE);
        assert!(x.irq.read().is_ok(), "the driver is told");
        // Until the reset, the worker is not asked again; the reset clears the state.
        wr(&mut x.t, REG_STATUS, 0);
        assert_eq!(rd(&mut x.t, REG_STATUS), 0);
    }

    #[test]
    fn registers_never_wait_for_the_worker() {
        let (open, gate) = std::sync::mpsc::channel();
        let mut x = transport_with_gate(Some(gate));
        negotiate(&mut x.t, VIRTIO_F_VERSION_1);
        setup_queue(&mut x.t, 0);
        setup_queue(&mut x.t, 1);
        wr(&mut x.t, REG_STATUS, ALL_OK);
        // The worker is busy (as with a slow disk) until the gate opens...
        let queues = x.t.device_queues().clone();
        let busy = std::thread::spawn(move || queues.process_queue(0));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!busy.is_finished(), "the worker is held at the gate");
        // ...and every register and config access still answers at once.
        assert_eq!(rd(&mut x.t, REG_STATUS), ALL_OK);
        assert_eq!(rd(&mut x.t, REG_MAGIC), MAGIC);
        let mut c = [0u8; 4];
        x.t.read(CONFIG_SPACE, &mut c);
        assert_eq!(c, [1, 2, 3, 4]);
        wr(&mut x.t, REG_QUEUE_NOTIFY, 1);
        wr(&mut x.t, REG_INTERRUPT_ACK, INT_CONFIG_CHANGE);
        open.send(()).unwrap();
        busy.join().unwrap();
        assert_ne!(rd(&mut x.t, REG_STATUS) & status::DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn queue_num_out_of_u16_range_is_not_truncated() {
        let mut x = transport();
        negotiate(&mut x.t, VIRTIO_F_VERSION_1);
        setup_queue(&mut x.t, 1);
        // 0x10010 would be a valid 16 if truncated: the queue must come out invalid instead.
        wr(&mut x.t, REG_QUEUE_SEL, 0);
        wr(&mut x.t, REG_QUEUE_NUM, 0x10010);
        wr(&mut x.t, REG_QUEUE_DESC_LOW, 0x1000);
        wr(&mut x.t, REG_QUEUE_DRIVER_LOW, 0x1100);
        wr(&mut x.t, REG_QUEUE_DEVICE_LOW, 0x1200);
        wr(&mut x.t, REG_QUEUE_READY, 1);
        wr(&mut x.t, REG_STATUS, ALL_OK);
        assert_ne!(rd(&mut x.t, REG_STATUS) & status::DEVICE_NEEDS_RESET, 0);
        assert_eq!(x.activations.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn notify_without_ioeventfd_signals_the_queue() {
        let mut x = transport();
        wr(&mut x.t, REG_QUEUE_NOTIFY, 1);
        assert_eq!(x.t.queue_evts()[1].read().unwrap(), 1);
        wr(&mut x.t, REG_QUEUE_NOTIFY, 99); // no such queue: ignored
        x.t.set_ioeventfd(true);
        wr(&mut x.t, REG_QUEUE_NOTIFY, 1); // KVM does it then
        assert!(x.t.queue_evts()[1].read().is_err());
    }
}
