//! The KVM VM: guest memory slots, the in-kernel interrupt controllers and the PIT.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86_64::layout::KVM_TSS_ADDR;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("KVM_CREATE_VM failed")]
    Create(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_TSS_ADDR failed")]
    TssAddr(#[source] kvm_ioctls::Error),
    #[error("creating the in-kernel IOAPIC/PIC (KVM_CREATE_IRQCHIP) failed")]
    Irqchip(#[source] kvm_ioctls::Error),
    #[error("creating the in-kernel PIT (KVM_CREATE_PIT2) failed")]
    Pit(#[source] kvm_ioctls::Error),
    #[error("registering guest memory with KVM failed")]
    MemorySlot(#[source] kvm_ioctls::Error),
    #[error("guest memory needs {needed} KVM memory slots, this KVM has {max}")]
    TooManySlots { needed: usize, max: usize },
}

pub fn create_vm(kvm: &Kvm, mem: &GuestMemoryMmap) -> Result<VmFd, VmError> {
    let vm = kvm.create_vm().map_err(VmError::Create)?;
    // Intel VT-x needs three pages for a real-mode TSS; harmless elsewhere.
    // Below 4 GiB: fits any usize flint builds for.
    let tss = usize::try_from(KVM_TSS_ADDR).unwrap_or(usize::MAX);
    vm.set_tss_address(tss).map_err(VmError::TssAddr)?;

    let max_slots = kvm.get_nr_memslots();
    let too_many = || VmError::TooManySlots {
        needed: mem.num_regions(),
        max: max_slots,
    };
    if mem.num_regions() > max_slots {
        return Err(too_many());
    }
    for (slot, region) in mem.iter().enumerate() {
        let r = kvm_userspace_memory_region {
            slot: u32::try_from(slot).map_err(|_| too_many())?,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the mapping is owned by `mem`, which the VMM keeps alive (it holds it for as
        // long as the VM fd exists), and the range is exactly that mapping's.
        unsafe { vm.set_user_memory_region(r) }.map_err(VmError::MemorySlot)?;
    }

    // The in-kernel PIC + IOAPIC; LAPICs come with each vCPU. Must precede vCPU creation.
    vm.create_irq_chip().map_err(VmError::Irqchip)?;
    // The PIT drives IRQ 0, which Linux calibrates against; the speaker port stays a dummy.
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(VmError::Pit)?;
    Ok(vm)
}

/// The VM-wide interrupt controllers, the PIT and the KVM clock, as a snapshot holds them.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct VmState {
    pub pic_master: kvm_bindings::kvm_irqchip,
    pub pic_slave: kvm_bindings::kvm_irqchip,
    pub ioapic: kvm_bindings::kvm_irqchip,
    pub pit: kvm_bindings::kvm_pit_state2,
    pub clock: kvm_bindings::kvm_clock_data,
    /// The host's wall clock (ns since the epoch) when `clock` was read.
    pub clock_read_at_ns: u64,
}

/// The host's wall clock in ns since the epoch (0 if it is before 1970).
fn wall_clock_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[derive(Debug, thiserror::Error)]
#[error("{0} failed")]
pub struct VmStateError(&'static str, #[source] kvm_ioctls::Error);

fn irqchip(vm: &VmFd, chip_id: u32) -> Result<kvm_bindings::kvm_irqchip, VmStateError> {
    let mut chip = kvm_bindings::kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip)
        .map_err(|e| VmStateError("KVM_GET_IRQCHIP", e))?;
    Ok(chip)
}

/// Reads the VM's state (its vCPUs paused).
pub fn save_state(vm: &VmFd) -> Result<VmState, VmStateError> {
    Ok(VmState {
        pic_master: irqchip(vm, kvm_bindings::KVM_IRQCHIP_PIC_MASTER)?,
        pic_slave: irqchip(vm, kvm_bindings::KVM_IRQCHIP_PIC_SLAVE)?,
        ioapic: irqchip(vm, kvm_bindings::KVM_IRQCHIP_IOAPIC)?,
        pit: vm.get_pit2().map_err(|e| VmStateError("KVM_GET_PIT2", e))?,
        clock: vm
            .get_clock()
            .map_err(|e| VmStateError("KVM_GET_CLOCK", e))?,
        clock_read_at_ns: wall_clock_ns(),
    })
}

/// Gives a new VM (made by [`create_vm`], before its vCPUs) the saved state.
pub fn restore_state(vm: &VmFd, state: &VmState) -> Result<(), VmStateError> {
    vm.set_pit2(&state.pit)
        .map_err(|e| VmStateError("KVM_SET_PIT2", e))?;
    // The guest's clock runs on by the time the snapshot spent on disk, so that its wall
    // clock reads the host's (its timers see the gap as a long pause). Only the value is
    // settable; the flags KVM reported (stable TSC, ...) are its own.
    let slept = wall_clock_ns().saturating_sub(state.clock_read_at_ns);
    let clock = kvm_bindings::kvm_clock_data {
        clock: state.clock.clock.saturating_add(slept),
        ..Default::default()
    };
    vm.set_clock(&clock)
        .map_err(|e| VmStateError("KVM_SET_CLOCK", e))?;
    for chip in [&state.pic_master, &state.pic_slave, &state.ioapic] {
        vm.set_irqchip(chip)
            .map_err(|e| VmStateError("KVM_SET_IRQCHIP", e))?;
    }
    Ok(())
}
