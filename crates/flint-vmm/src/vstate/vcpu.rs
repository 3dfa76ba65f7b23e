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
) -> Result<(VcpuFd, Vec<kvm_bindings::kvm_cpuid_entry2>), VcpuError> {
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
    Ok((fd, cpuid.as_slice().to_vec()))
}

/// The signal that kicks a vCPU thread out of `KVM_RUN` (its handler does nothing: the
/// interrupted ioctl returning EINTR is the point).
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

/// Kicks one vCPU thread out of `KVM_RUN`.
pub fn kick(thread: libc::pthread_t) {
    // SAFETY: `thread` is a vCPU thread not yet joined (they are joined only after the control
    // loop, the one caller, ends); the signal's handler does nothing.
    unsafe { libc::pthread_kill(thread, kick_signal()) };
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

/// Everything KVM holds for one vCPU that a snapshot must carry: what the guest sees (CPUID),
/// its registers of every kind, the MSRs KVM lists as saveable, its local APIC, whether it is
/// running or waiting for a SIPI, the events KVM has pending for it, and its TSC rate.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct VcpuState {
    pub cpuid: Vec<kvm_bindings::kvm_cpuid_entry2>,
    pub msrs: Vec<kvm_bindings::kvm_msr_entry>,
    pub regs: kvm_bindings::kvm_regs,
    pub sregs: kvm_bindings::kvm_sregs,
    /// The x87/SSE/AVX state (XSAVE covers what KVM_GET_FPU would).
    pub xsave: kvm_bindings::kvm_xsave,
    pub xcrs: kvm_bindings::kvm_xcrs,
    pub debugregs: kvm_bindings::kvm_debugregs,
    pub lapic: kvm_bindings::kvm_lapic_state,
    pub mp_state: kvm_bindings::kvm_mp_state,
    pub events: kvm_bindings::kvm_vcpu_events,
    /// None where KVM cannot say (no KVM_CAP_GET_TSC_KHZ).
    pub tsc_khz: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum VcpuStateError {
    #[error("vCPU {index}: {what} failed")]
    Ioctl {
        index: u8,
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error(
        "vCPU {index}: KVM took only {set} of the {total} saved MSRs (the first refused: {msr:#x})"
    )]
    Msrs {
        index: u8,
        set: usize,
        total: usize,
        msr: u32,
    },
    #[error("vCPU {0}: the saved state is malformed ({1})")]
    Malformed(u8, &'static str),
}

/// Reads vCPU `index`'s state; `msr_list` is what KVM_GET_MSR_INDEX_LIST said (an MSR KVM
/// lists but cannot read here is left out), `cpuid` what flint gave the vCPU (kept as given:
/// some KVMs, PVM's among them, answer KVM_GET_CPUID2 with more than was set). Runs on the
/// vCPU's own thread while it is parked.
pub fn save_state(
    fd: &VcpuFd,
    index: u8,
    msr_list: &[u32],
    cpuid: Vec<kvm_bindings::kvm_cpuid_entry2>,
) -> Result<VcpuState, VcpuStateError> {
    let err = |what: &'static str| {
        move |source| VcpuStateError::Ioctl {
            index,
            what,
            source,
        }
    };
    let mut wanted: Vec<u32> = msr_list.to_vec();
    let msrs = loop {
        let entries: Vec<kvm_bindings::kvm_msr_entry> = wanted
            .iter()
            .map(|&index| kvm_bindings::kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = kvm_bindings::Msrs::from_entries(&entries)
            .map_err(|_| VcpuStateError::Malformed(index, "too many MSRs"))?;
        let n = fd.get_msrs(&mut msrs).map_err(err("KVM_GET_MSRS"))?;
        if n >= wanted.len() {
            break msrs.as_slice().to_vec();
        }
        // KVM stops at the first MSR it cannot read: leave that one out and ask again.
        wanted.remove(n);
    };
    Ok(VcpuState {
        cpuid,
        msrs,
        regs: fd.get_regs().map_err(err("KVM_GET_REGS"))?,
        sregs: fd.get_sregs().map_err(err("KVM_GET_SREGS"))?,
        xsave: fd.get_xsave().map_err(err("KVM_GET_XSAVE"))?,
        xcrs: fd.get_xcrs().map_err(err("KVM_GET_XCRS"))?,
        debugregs: fd.get_debug_regs().map_err(err("KVM_GET_DEBUGREGS"))?,
        lapic: fd.get_lapic().map_err(err("KVM_GET_LAPIC"))?,
        mp_state: fd.get_mp_state().map_err(err("KVM_GET_MP_STATE"))?,
        events: fd.get_vcpu_events().map_err(err("KVM_GET_VCPU_EVENTS"))?,
        tsc_khz: fd.get_tsc_khz().ok(),
    })
}

/// Whether this host's KVM runs guests with AMD's SVM (AMD and Hygon CPUs).
fn svm_host() -> bool {
    matches!(
        crate::snapshot::host_cpu_vendor().as_str(),
        "AuthenticAMD" | "HygonGenuine"
    )
}

/// KVM on SVM reports the task register's cached type as a busy TSS (11), as VMX requires,
/// though the VMCB holds what `ltr` loaded: an available one (9). SVM checks neither, but
/// QEMU's TCG (the lab's CPU) checks for 9 before it reads the TSS's I/O permission bitmap,
/// so that a restored guest's `outb` after `ioperm` would fault there. Restored as 9, the
/// value the guest's own `ltr` gave it.
fn task_register_as_svm_had_it(sregs: &mut kvm_bindings::kvm_sregs) {
    const TSS_BUSY: u8 = 11;
    const TSS_AVAILABLE: u8 = 9;
    if sregs.tr.type_ == TSS_BUSY {
        sregs.tr.type_ = TSS_AVAILABLE;
    }
}

/// Creates vCPU `index` of a restored VM and gives it `state`, in the order KVM needs: CPUID
/// first, the local APIC before the MSRs (the TSC deadline MSR depends on its mode), the
/// pending events last.
pub fn restore_vcpu(vm: &VmFd, index: u8, state: &VcpuState) -> Result<VcpuFd, VcpuStateError> {
    let fd = vm
        .create_vcpu(u64::from(index))
        .map_err(|source| VcpuStateError::Ioctl {
            index,
            what: "creating the vCPU",
            source,
        })?;
    let err = |what: &'static str| {
        move |source| VcpuStateError::Ioctl {
            index,
            what,
            source,
        }
    };
    let cpuid = CpuId::from_entries(&state.cpuid)
        .map_err(|_| VcpuStateError::Malformed(index, "too many CPUID entries"))?;
    fd.set_cpuid2(&cpuid).map_err(err("KVM_SET_CPUID2"))?;
    if let (Some(khz), Ok(here)) = (state.tsc_khz, fd.get_tsc_khz()) {
        if khz != here {
            fd.set_tsc_khz(khz).map_err(err("KVM_SET_TSC_KHZ"))?;
        }
    }
    fd.set_mp_state(state.mp_state)
        .map_err(err("KVM_SET_MP_STATE"))?;
    fd.set_regs(&state.regs).map_err(err("KVM_SET_REGS"))?;
    let mut sregs = state.sregs;
    if svm_host() {
        task_register_as_svm_had_it(&mut sregs);
    }
    fd.set_sregs(&sregs).map_err(err("KVM_SET_SREGS"))?;
    // SAFETY: the buffer is a whole kvm_xsave as KVM_GET_XSAVE returned it.
    unsafe { fd.set_xsave(&state.xsave) }.map_err(err("KVM_SET_XSAVE"))?;
    fd.set_xcrs(&state.xcrs).map_err(err("KVM_SET_XCRS"))?;
    fd.set_debug_regs(&state.debugregs)
        .map_err(err("KVM_SET_DEBUGREGS"))?;
    fd.set_lapic(&state.lapic).map_err(err("KVM_SET_LAPIC"))?;
    let msrs = kvm_bindings::Msrs::from_entries(&state.msrs)
        .map_err(|_| VcpuStateError::Malformed(index, "too many MSRs"))?;
    let set = fd.set_msrs(&msrs).map_err(err("KVM_SET_MSRS"))?;
    if set != state.msrs.len() {
        return Err(VcpuStateError::Msrs {
            index,
            set,
            total: state.msrs.len(),
            msr: state.msrs.get(set).map_or(0, |m| m.index),
        });
    }
    fd.set_vcpu_events(&state.events)
        .map_err(err("KVM_SET_VCPU_EVENTS"))?;
    Ok(fd)
}
