//! flint: a small, fast, secure virtual machine monitor on Linux KVM.
//!
//! The data path reads top-down: [`config`] (validated once) → [`vmm`] builds the VM from it
//! ([`vstate`] for memory, VM and vCPUs; [`boot`] loads the kernel; [`arch`] writes the x86 boot
//! structures; [`devices`] sit on a [`bus`]) → vCPU threads and one device event loop → an
//! [`exit::ExitReason`] → the process exit code.

pub mod arch;
pub mod boot;
pub mod bus;
pub mod config;
pub mod devices;
pub mod event_loop;
pub mod exit;
pub mod kvm;
pub mod terminal;
pub mod vmm;
pub mod vstate;
