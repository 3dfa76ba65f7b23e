//! A device's interrupt line into the in-kernel IOAPIC: an irqfd where KVM has them (no exit
//! to userspace, no ioctl per interrupt), else a `KVM_IRQ_LINE` pulse.

use std::sync::Arc;

use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

pub enum IrqLine {
    Fd(EventFd),
    Pulse { vm: Arc<VmFd>, gsi: u32 },
}

impl IrqLine {
    /// Raises one edge on the line.
    pub fn trigger(&self) -> std::io::Result<()> {
        match self {
            IrqLine::Fd(fd) => fd.write(1),
            IrqLine::Pulse { vm, gsi } => vm
                .set_irq_line(*gsi, true)
                .and_then(|_| vm.set_irq_line(*gsi, false))
                .map_err(std::io::Error::from),
        }
    }

    /// The line for `gsi`: an irqfd registered with `vm` when `use_irqfd`, else a pulse.
    pub fn new(vm: &Arc<VmFd>, gsi: u32, use_irqfd: bool) -> Result<IrqLine, kvm_ioctls::Error> {
        if use_irqfd {
            let fd = EventFd::new(libc::EFD_NONBLOCK).map_err(kvm_ioctls::Error::from)?;
            vm.register_irqfd(&fd, gsi)?;
            Ok(IrqLine::Fd(fd))
        } else {
            Ok(IrqLine::Pulse {
                vm: vm.clone(),
                gsi,
            })
        }
    }
}
