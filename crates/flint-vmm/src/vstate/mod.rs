//! KVM state: guest memory, the VM, and the vCPUs.
pub mod memory;
pub mod pause;
pub mod vcpu;
pub mod vm;
