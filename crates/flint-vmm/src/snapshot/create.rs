//! Taking a snapshot of a running VM: pause, save every vCPU (each on its own thread), the VM
//! and the devices, write guest memory and the state file, make both durable, and let the VM
//! run again (unless it was paused already, or is to stop).

use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_ioctls::VmFd;
use vm_memory::GuestMemoryMmap;

use super::{host_cpu_vendor, memory, write_state, LegacyStates, Machine, Snapshot, SnapshotError};
use crate::bus::lock;
use crate::devices::legacy::cmos::Cmos;
use crate::devices::legacy::i8042::I8042;
use crate::devices::legacy::serial::SerialDevice;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::worker::DeviceQueues;
use crate::vstate::pause::VcpuJob;
use crate::vstate::vcpu::{self, VcpuContext, VcpuState};
use crate::vstate::vm;

/// How long saving the vCPUs may take once they are parked.
const SAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a snapshot is taken from: shared handles on a running VM's parts.
pub struct Source {
    pub ctx: Arc<VcpuContext>,
    pub vm: Arc<VmFd>,
    pub mem: GuestMemoryMmap,
    pub machine: Machine,
    /// The MSRs KVM lists as saveable (read at build time: the control thread may not ask
    /// /dev/kvm once confined).
    pub msr_list: Arc<Vec<u32>>,
    /// The CPUID flint gave each vCPU.
    pub cpuids: crate::builder::Cpuids,
    pub serial: Arc<Mutex<SerialDevice>>,
    pub serial2: Option<Arc<Mutex<SerialDevice>>>,
    pub i8042: Arc<Mutex<I8042>>,
    pub cmos: Arc<Mutex<Cmos>>,
    /// Each virtio device's register side and queue side.
    pub virtio: Vec<(Arc<Mutex<MmioTransport>>, Arc<DeviceQueues>)>,
}

/// What a snapshot cost.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Summary {
    /// From the request to both files durable, in microseconds.
    pub capture_us: u64,
    pub state_bytes: u64,
    /// Bytes of guest pages written (the rest of the memory file is holes).
    pub memory_bytes_written: u64,
    /// The memory file's length (the guest's RAM).
    pub memory_len: u64,
}

/// Refuses a VM whose devices hold state outside flint's reach.
fn refuse_unsaveable(src: &Source) -> Result<(), SnapshotError> {
    let has = |id: u32| {
        src.virtio
            .iter()
            .any(|(t, _)| crate::bus::lock(t).device_type() == id)
    };
    // A share's state lives in its virtiofsd (open files, inode numbers the guest holds):
    // nothing flint could save or give back.
    if has(crate::devices::virtio::fs::DEVICE_ID) {
        return Err(SnapshotError::Mismatch(
            "a VM with --fs shares cannot be snapshotted (virtiofsd's open files and the \
             guest's view of them are not flint's to save)"
                .into(),
        ));
    }
    // Its connections are host sockets, with peers flint cannot take along.
    if has(crate::devices::virtio::vsock::DEVICE_ID) {
        return Err(SnapshotError::Mismatch(
            "a VM with --vsock cannot be snapshotted (its connections are host sockets, \
             which are not flint's to save)"
                .into(),
        ));
    }
    Ok(())
}

/// Takes a snapshot into `state_file` and `memory_file`. The VM stays paused afterwards when
/// `stay_paused` (the caller stops it) or when it was paused before.
pub fn create(
    src: &Source,
    state_file: &File,
    memory_file: &File,
    stay_paused: bool,
    pause_timeout: Duration,
) -> Result<Summary, SnapshotError> {
    let start = Instant::now();
    refuse_unsaveable(src)?;
    let was_paused = src.ctx.pause.is_paused();
    src.ctx
        .pause
        .pause(pause_timeout, vcpu::kick)
        .map_err(|e| SnapshotError::Mismatch(format!("cannot pause the VM: {e}")))?;
    let result = capture(src, state_file, memory_file);
    if !was_paused && !stay_paused {
        src.ctx.pause.resume();
    }
    let (state_bytes, written) = result?;
    Ok(Summary {
        capture_us: u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
        state_bytes,
        memory_bytes_written: written.data,
        memory_len: written.len,
    })
}

/// The paused VM into the two files.
fn capture(
    src: &Source,
    state_file: &File,
    memory_file: &File,
) -> Result<(u64, memory::Written), SnapshotError> {
    let vcpus = save_vcpus(src)?;
    // Each device's worker is held idle until the memory is written: a TAP's frame arriving
    // meanwhile waits in the TAP instead of landing in guest memory half-saved. (Transport
    // first, then worker, as a vCPU resetting a device takes them.)
    let mut held = Vec::with_capacity(src.virtio.len());
    let mut virtio = Vec::with_capacity(src.virtio.len());
    for (transport, queues) in &src.virtio {
        let t = lock(transport);
        let worker = queues.hold();
        virtio.push(t.snapshot(worker.as_deref()));
        held.push(worker);
    }
    let vm = vm::save_state(&src.vm).map_err(|e| {
        SnapshotError::Mismatch(format!(
            "saving the VM's state: {}",
            crate::exit::error_chain(&e)
        ))
    })?;
    let legacy = LegacyStates {
        serial: lock(&src.serial).snapshot(),
        serial2: src.serial2.as_ref().map(|s| lock(s).snapshot()),
        i8042: lock(&src.i8042).snapshot(),
        cmos: lock(&src.cmos).snapshot(),
    };
    let (memory, written) = memory::save(&src.mem, memory_file)?;
    let snapshot = Snapshot {
        flint_version: env!("CARGO_PKG_VERSION").into(),
        machine: src.machine.clone(),
        cpu_vendor: host_cpu_vendor(),
        vcpus,
        vm,
        legacy,
        virtio,
        memory,
    };
    drop(held);
    let state_bytes = write_state(state_file, &snapshot)?;
    Ok((state_bytes, written))
}

type Saved = Vec<Option<Result<VcpuState, String>>>;

/// Each parked vCPU saves its own state (vCPU ioctls belong on the vCPU's thread).
fn save_vcpus(src: &Source) -> Result<Vec<VcpuState>, SnapshotError> {
    let n = usize::from(src.machine.vcpus);
    let saved: Arc<Mutex<Saved>> = Arc::new(Mutex::new((0..n).map(|_| None).collect()));
    let out = saved.clone();
    let msr_list = src.msr_list.clone();
    let cpuids = src.cpuids.clone();
    let job: VcpuJob = Arc::new(move |fd, index| {
        let cpuid = cpuids.get(usize::from(index)).cloned().unwrap_or_default();
        let r =
            vcpu::save_state(fd, index, &msr_list, cpuid).map_err(|e| crate::exit::error_chain(&e));
        if let Some(slot) = lock(&out).get_mut(usize::from(index)) {
            *slot = Some(r);
        }
    });
    src.ctx
        .pause
        .run_on_each(job, SAVE_TIMEOUT)
        .map_err(|e| SnapshotError::Mismatch(format!("saving the vCPUs: {e}")))?;
    let saved = std::mem::take(&mut *lock(&saved));
    saved
        .into_iter()
        .enumerate()
        .map(|(i, s)| match s {
            Some(Ok(state)) => Ok(state),
            Some(Err(e)) => Err(SnapshotError::Mismatch(format!("saving the vCPUs: {e}"))),
            None => Err(SnapshotError::Mismatch(format!(
                "saving the vCPUs: vCPU {i} did not report its state"
            ))),
        })
        .collect()
}
