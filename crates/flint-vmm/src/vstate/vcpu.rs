//! vCPUs: configuration before the first run, and one thread per vCPU running `KVM_RUN` in a loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::arch::x86_64::{cpuid, msr, regs};
use crate::bus::Bus;
use crate::exit::{error_chain, ExitEvent, ExitReason};
use crate::sandbox::seccomp::{Filters, ThreadKind};
use crate::vstate::pause::PauseControl;

#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("creating vCPU {0} failed")]
    Create(u8, #[source] kvm_ioctls::Error),
    #[error("vCPU {index}: {what} failed")]
    Setup {
        index: u8,
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("vCPU {0}: KVM accepted only {1} of {2} MSRs")]
    Msrs(u8, usize, usize),
    #[error("vCPU {0}: building the MSR list failed")]
    MsrList(u8),
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    #[error("cannot start the vCPU thread")]
    Spawn(#[source] std::io::Error),
    #[error("cannot install the vCPU kick signal handler")]
    Signal(#[source] vmm_sys_util::errno::Error),
}

/// What every vCPU thread shares: the buses, how to report an exit, and the stop flag.
pub struct VcpuContext {
    pub pio: Bus,
    pub mmio: Bus,
    pub exit: Arc<ExitEvent>,
    pub stop: AtomicBool,
    /// Pausing the vCPUs (the control API, snapshots).
    pub pause: PauseControl,
}

/// Creates vCPU `index` and sets its CPUID, MSRs, FPU and LAPIC; the boot vCPU (`entry` given)
/// also gets its registers. The others wait in KVM for the guest's INIT/SIPI.
pub fn create_vcpu(
    vm: &VmFd,
    index: u8,
    num_cpus: u8,
    supported_cpuid: &CpuId,
    caps: cpuid::HostCaps,
    mem: &GuestMemoryMmap,
    entry: Option<regs::EntryMode>,
) -> Result<VcpuFd, VcpuError> {
    let fd = vm
        .create_vcpu(index as u64)
        .map_err(|e| VcpuError::Create(index, e))?;
    let setup = |what: &'static str| {
        move |source| VcpuError::Setup {
            index,
            what,
            source,
        }
    };

    let mut cpuid = supported_cpuid.clone();
    cpuid::filter_cpuid(&mut cpuid, index, num_cpus, caps);
    fd.set_cpuid2(&cpuid).map_err(setup("KVM_SET_CPUID2"))?;

    let msrs = msr::boot_msrs().map_err(|_| VcpuError::MsrList(index))?;
    let n = fd.set_msrs(&msrs).map_err(setup("KVM_SET_MSRS"))?;
    if n != msrs.as_slice().len() {
        return Err(VcpuError::Msrs(index, n, msrs.as_slice().len()));
    }
    fd.set_fpu(&regs::boot_fpu())
        .map_err(setup("KVM_SET_FPU"))?;
    let mut lapic = fd.get_lapic().map_err(setup("KVM_GET_LAPIC"))?;
    regs::set_lint(&mut lapic);
    fd.set_lapic(&lapic).map_err(setup("KVM_SET_LAPIC"))?;

    if let Some(mode) = entry {
        let sregs = fd.get_sregs().map_err(setup("KVM_GET_SREGS"))?;
        let sregs = regs::setup_sregs(mem, mode, sregs)?;
        fd.set_sregs(&sregs).map_err(setup("KVM_SET_SREGS"))?;
        fd.set_regs(&regs::boot_regs(mode))
            .map_err(setup("KVM_SET_REGS"))?;
    }
    Ok(fd)
}

/// The signal that kicks a vCPU thread out of `KVM_RUN` (its handler does nothing: the
/// interrupted ioctl returning EINTR is the point).
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn noop_handler(_: i32, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

pub fn install_kick_handler() -> Result<(), VcpuError> {
    register_signal_handler(kick_signal(), noop_handler).map_err(VcpuError::Signal)
}

/// Starts vCPU `index`'s thread; it installs its seccomp filter before its first `KVM_RUN`.
pub fn spawn(
    fd: VcpuFd,
    index: u8,
    ctx: Arc<VcpuContext>,
    filters: Filters,
) -> Result<JoinHandle<()>, VcpuError> {
    use std::os::unix::thread::JoinHandleExt;
    let name = format!("flint-vcpu{index}");
    let thread_ctx = ctx.clone();
    ctx.pause.thread_starting();
    let spawned = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let ctx = thread_ctx;
            if let Err(e) = filters.apply(ThreadKind::Vcpu, &name) {
                ctx.exit.request(ExitReason::VcpuFailure(error_chain(&e)));
            } else {
                let reason = crate::panic::guard(|| run_loop(fd, index, &ctx))
                    .unwrap_or_else(|what| Some(ExitReason::InternalError(what)));
                if let Some(r) = reason {
                    ctx.exit.request(r);
                }
            }
            // SAFETY: pthread_self has no preconditions.
            ctx.pause
                .thread_ended(Some(unsafe { libc::pthread_self() }));
        });
    match spawned {
        Ok(handle) => {
            ctx.pause.thread_spawned(handle.as_pthread_t());
            Ok(handle)
        }
        Err(e) => {
            ctx.pause.thread_ended(None);
            Err(VcpuError::Spawn(e))
        }
    }
}

/// Runs until the VM stops; returns why, if this vCPU is the reason.
fn run_loop(mut fd: VcpuFd, index: u8, ctx: &VcpuContext) -> Option<ExitReason> {
    loop {
        if ctx.stop.load(Ordering::Acquire) {
            return None;
        }
        if ctx.pause.requested() {
            // Completes the exit the vCPU was in (KVM finishes an I/O read on the next entry)
            // without entering the guest, so the state it parks with is final.
            fd.set_kvm_immediate_exit(1);
            let _ = fd.run();
            fd.set_kvm_immediate_exit(0);
            ctx.pause.park(&mut fd, index);
            continue;
        }
        let exit = fd.run();
        crate::panic::test_point("vcpu");
        let failure = match exit {
            Ok(VcpuExit::IoIn(port, data)) => {
                if !ctx.pio.read(port as u64, data) {
                    data.fill(0xff); // nothing there: an open bus reads all ones
                }
                None
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                ctx.pio.write(port as u64, data);
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !ctx.mmio.read(addr, data) {
                    data.fill(0xff);
                }
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                ctx.mmio.write(addr, data);
                None
            }
            // With no way left to wake it, a halted vCPU is a powered-off machine.
            Ok(VcpuExit::Hlt) => return Some(ExitReason::Shutdown),
            Ok(VcpuExit::Shutdown) => Some("triple fault (KVM_EXIT_SHUTDOWN)".to_string()),
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN | kvm_bindings::KVM_SYSTEM_EVENT_RESET => {
                    return Some(ExitReason::Shutdown);
                }
                other => Some(format!("system event {other}")),
            },
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(format!(
                "KVM_EXIT_FAIL_ENTRY (hardware entry failure reason {reason:#x}, host cpu {cpu})"
            )),
            Ok(VcpuExit::InternalError) => {
                // SAFETY: KVM filled the `internal` member of the union for this exit reason.
                let sub = unsafe { fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                Some(format!(
                    "KVM internal error (suberror {sub}{})",
                    if sub == kvm_bindings::KVM_INTERNAL_ERROR_EMULATION {
                        ": KVM could not emulate an instruction"
                    } else {
                        ""
                    }
                ))
            }
            Ok(VcpuExit::Intr) => None,
            Ok(other) => Some(format!("unexpected KVM exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => Some(format!("KVM_RUN failed: {e}")),
        };
        if let Some(what) = failure {
            let rip = fd
                .get_regs()
                .map(|r| format!("{:#x}", r.rip))
                .unwrap_or_else(|_| "unknown".into());
            return Some(ExitReason::VcpuFailure(format!(
                "vCPU {index}: {what} at RIP {rip}"
            )));
        }
        // A device (i8042 reset) may have ended the VM during this exit.
        if ctx.exit.reason().is_some() {
            return None;
        }
    }
}
