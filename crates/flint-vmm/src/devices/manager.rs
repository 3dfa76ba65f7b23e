//! Every device of a VM, in one place: the two buses the vCPUs dispatch on, each legacy device
//! by name, and each virtio device with its resources and queue side. Saving or inspecting a
//! VM's device state is one walk over [`Devices`] ([`Devices::walk`]), not a hunt.

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use crate::alloc::DeviceResources;
use crate::bus::{Bus, BusError, SharedDevice};
use crate::devices::guest_ports::GuestPorts;
use crate::devices::legacy::acpi_power::PowerButton;
use crate::devices::legacy::boot_timer::BootTimer;
use crate::devices::legacy::cmos::Cmos;
use crate::devices::legacy::i8042::I8042;
use crate::devices::legacy::serial::SerialDevice;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::worker::DeviceQueues;

/// One virtio-mmio device.
pub struct VirtioSlot {
    /// What it is, for its worker thread's name and messages: `virtio-blk0`, `virtio-net1`, ….
    pub name: String,
    /// Its MMIO window and interrupt line.
    pub resources: DeviceResources,
    /// The register side (on the MMIO bus).
    pub transport: Arc<Mutex<MmioTransport>>,
    /// The queue side, served by the device's worker thread.
    pub queues: Arc<DeviceQueues>,
    /// The queue notification eventfds the worker waits on.
    pub queue_evts: Vec<EventFd>,
    /// The seccomp list its worker thread runs under.
    pub worker: crate::sandbox::seccomp::ThreadKind,
}

/// A VM's devices. The buses hold the same devices again, by address.
pub struct Devices {
    pub pio: Bus,
    pub mmio: Bus,
    /// COM1: the console.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// COM2: present when the console has an error output (an OCI workload's stderr).
    pub serial2: Option<Arc<Mutex<SerialDevice>>>,
    pub guest_ports: Arc<Mutex<GuestPorts>>,
    pub i8042: Arc<Mutex<I8042>>,
    pub cmos: Arc<Mutex<Cmos>>,
    pub boot_timer: Option<Arc<Mutex<BootTimer>>>,
    /// With ACPI: the power button a host presses to ask the guest to shut down.
    pub power_button: Option<Arc<PowerButton>>,
    /// With ACPI: the line that tells the guest its VM generation ID changed (a restore).
    pub vmgenid_changed: Option<crate::devices::irq::IrqLine>,
    pub virtio: Vec<VirtioSlot>,
}

impl Devices {
    /// Visits every device by name, legacy ones first, then virtio in order.
    pub fn walk(&self, mut f: impl FnMut(&str, SharedDevice)) {
        f("serial0", self.serial.clone());
        if let Some(s) = &self.serial2 {
            f("serial1", s.clone());
        }
        f("guest-ports", self.guest_ports.clone());
        f("i8042", self.i8042.clone());
        f("cmos", self.cmos.clone());
        if let Some(t) = &self.boot_timer {
            f("boot-timer", t.clone());
        }
        for v in &self.virtio {
            f(&v.name, v.transport.clone());
        }
    }

    /// Puts a virtio device's transport on the MMIO bus at its window.
    pub fn add_virtio(&mut self, slot: VirtioSlot) -> Result<(), BusError> {
        self.mmio.insert(
            slot.resources.mmio_base,
            slot.resources.mmio_len,
            slot.transport.clone(),
        )?;
        self.virtio.push(slot);
        Ok(())
    }
}
