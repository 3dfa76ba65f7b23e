//! flint: a small, fast, secure virtual machine monitor on Linux KVM.
//!
//! The data path reads top-down: [`config`] (validated once) → [`builder`] makes a
//! [`vmm::Vmm`] from it in named steps ([`vstate`] for memory, VM and vCPUs; [`alloc`] hands
//! out device windows and interrupt lines; [`devices`] sit on a [`bus`] and are all reachable
//! from one [`devices::manager::Devices`]; [`boot`] loads the kernel; [`arch`] writes the x86
//! boot structures) → vCPU threads, one worker thread per virtio device and the control event
//! loop → an [`exit::ExitReason`] → the process exit code. [`panic`] is the one policy for
//! panics: each thread's edge turns one into the VM's end, never a hang. [`api`] is the
//! control API a running VM can serve on a Unix socket.

pub mod alloc;
pub mod api;
pub mod arch;
pub mod boot;
pub mod builder;
pub mod bus;
pub mod config;
pub mod devices;
pub mod event_loop;
pub mod exit;
pub mod kvm;
pub mod panic;
pub mod sandbox;
pub mod snapshot;
pub mod terminal;
pub mod vmm;
pub mod vstate;
