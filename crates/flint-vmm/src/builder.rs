//! [`Inputs::open`] then [`Vmm::build`]: a VM from a validated [`VmConfig`], in named steps —
//! inputs (opened first, on their own), memory, the VM and its interrupt controllers, legacy
//! devices, virtio devices, kernel and boot data, vCPUs.
//! Each step takes what the earlier ones made; devices land in one [`Devices`].

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::alloc::ResourceAllocator;
use crate::arch::x86_64::{acpi, cpuid, layout, mptable, regs::EntryMode};
use crate::boot::{self, InitrdImage, KernelInfo};
use crate::bus::Bus;
use crate::config::{
    io_reason, open_input, ConfigError, DiskConfig, FsSource, Initrd, InputKind, NetConfig,
    VmConfig,
};
use crate::devices::guest_ports::GuestPorts;
use crate::devices::irq::IrqLine;
use crate::devices::legacy::acpi_power::{AcpiPower, PowerButton};
use crate::devices::legacy::boot_timer::BootTimer;
use crate::devices::legacy::cmos::Cmos;
use crate::devices::legacy::console_out::{Budget, ConsoleOutput};
use crate::devices::legacy::i8042::I8042;
use crate::devices::legacy::serial::{SerialDevice, SerialOut};
use crate::devices::manager::{Devices, VirtioSlot};
use crate::devices::virtio::block::{in_memory_file, Block, DiskImage};
use crate::devices::virtio::fs::{Backend, Fs, Virtiofsd};
use crate::devices::virtio::mmio::{MmioTransport, REG_QUEUE_NOTIFY};
use crate::devices::virtio::net::{Mac, Net, Tap};
use crate::devices::virtio::vsock::{Vsock, VsockBackend};
use crate::devices::virtio::{Interrupt, VirtioDevice};
use crate::event_loop::block_control_signals;
use crate::exit::ExitEvent;
use crate::kvm;
use crate::sandbox::seccomp::ThreadKind;
use crate::snapshot::{self, LegacyStates, Machine, SavedDisk, SavedNet, Snapshot, SnapshotError};
use crate::vmm::{Console, Vmm, VmmError};
use crate::vstate::memory::create_guest_memory;
use crate::vstate::vcpu::{self, VcpuContext};
use crate::vstate::vm::create_vm;

/// The most vCPUs flint can give a VM here: what KVM allows and what the MP table can describe.
pub fn max_vcpus(kvm: &Kvm) -> u32 {
    let kvm_max = u32::try_from(kvm.get_max_vcpus()).unwrap_or(u32::MAX);
    let table_max = u32::from(mptable::MAX_SUPPORTED_CPUS);
    kvm_max.min(table_max)
}

/// KVM fast paths flint uses when present.
#[derive(Clone, Copy)]
struct FastPaths {
    /// Interrupts through eventfds (else KVM_IRQ_LINE).
    irqfd: bool,
    /// Queue notifications through eventfds, without a vCPU exit to flint.
    ioeventfd: bool,
}

impl FastPaths {
    fn probe(kvm: &Kvm) -> FastPaths {
        FastPaths {
            irqfd: use_fast_path(kvm, Cap::Irqfd, "IRQFD"),
            ioeventfd: use_fast_path(kvm, Cap::Ioeventfd, "IOEVENTFD"),
        }
    }
}

/// Whether to use a KVM fast path: present, and not switched off with `FLINT_NO_<NAME>=1` (how the
/// tests exercise the fallbacks on hosts that have both).
fn use_fast_path(kvm: &Kvm, cap: Cap, name: &str) -> bool {
    kvm.check_extension(cap)
        && std::env::var_os(format!("FLINT_NO_{name}")).is_none_or(|v| v != "1")
}

/// What a VM is built from, opened: `/dev/kvm` and every file and device the config names.
/// Opening them is the build's first step, on its own, so that flint can then give up opening
/// anything at all (Landlock, the jail's empty root) before it parses a byte of the guest's.
pub struct Inputs {
    kvm: Kvm,
    kernel: File,
    kernel_info: KernelInfo,
    initrd: Option<File>,
    disks: Vec<DiskImage>,
    taps: Vec<Tap>,
    shares: Vec<OpenShare>,
    /// The vsock device's listening socket, bound (flint can make no socket file once
    /// confined).
    vsock: Option<VsockBackend>,
}

/// A share's backend, connected, and the virtiofsd flint started for it (if it did).
struct OpenShare {
    tag: String,
    backend: Backend,
    daemon: Option<Virtiofsd>,
}

/// A share of the running VM: the backend's socket, watched for the backend going away, and
/// the virtiofsd to stop when the VM ends.
pub struct ShareWatch {
    pub tag: String,
    pub socket: OwnedFd,
    pub daemon: Option<Virtiofsd>,
}

/// Starts (or connects to) each share's backend.
fn open_shares(config: &VmConfig) -> Result<Vec<OpenShare>, VmmError> {
    let mut binary = None;
    let mut shares = Vec::with_capacity(config.fs.len());
    for f in &config.fs {
        let (backend, daemon) = match &f.source {
            FsSource::Socket(path) => (Backend::connect(path)?, None),
            FsSource::Path { path, read_only } => {
                let bin = match &binary {
                    Some(b) => b,
                    None => binary.insert(crate::devices::virtio::fs::virtiofsd::find()?),
                };
                let (daemon, backend) = Virtiofsd::start(bin, &f.tag, path, *read_only)?;
                (backend, Some(daemon))
            }
        };
        shares.push(OpenShare {
            tag: f.tag.clone(),
            backend,
            daemon,
        });
    }
    Ok(shares)
}

impl Inputs {
    /// Checks and opens the config's inputs. Input checks that need no KVM come first, so a
    /// typo never waits on anything. With `config.vsock`, binds the vsock device's socket
    /// (which forks the process that removes it at exit: call while flint has no other thread).
    pub fn open(config: &VmConfig) -> Result<Inputs, VmmError> {
        config.validate_inputs()?;
        let (kernel, kernel_info) = open_kernel(config)?;
        let kvm = kvm::open()?;
        config.validate_limits(max_vcpus(&kvm))?;
        if kernel_info.is_linux {
            kvm::check_can_boot_linux()?;
        }
        let initrd = match &config.initrd {
            Some(Initrd::File(p)) => Some(open_file("--initrd", p)?),
            _ => None,
        };
        let disks = config
            .disks
            .iter()
            .enumerate()
            .map(|(i, disk)| {
                let what = if i == 0 && config.root_on_first_disk {
                    "--rootfs"
                } else {
                    "--disk"
                };
                DiskImage::open(&disk.path, disk.read_only).map_err(|e| VmmError::Disk(what, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let taps = config
            .nets
            .iter()
            .map(|net| Tap::open(&net.tap))
            .collect::<Result<Vec<_>, _>>()?;
        // Before the shares: a path in the way is an error before any virtiofsd starts.
        let vsock = config
            .vsock
            .as_ref()
            .map(|v| VsockBackend::bind(&v.uds_path))
            .transpose()?;
        let shares = open_shares(config)?;
        Ok(Inputs {
            kvm,
            kernel,
            kernel_info,
            initrd,
            disks,
            taps,
            shares,
            vsock,
        })
    }

    /// The size of the largest disk the guest may write, in bytes (0 without one): as far as
    /// flint ever needs to write into a file.
    pub fn largest_writable_disk(&self) -> u64 {
        largest_writable(&self.disks)
    }
}

impl Vmm {
    /// Builds the VM from its opened `inputs` (see [`Inputs::open`]); opens no file itself.
    /// `start` is when the process started (for the boot timer).
    pub fn build(
        config: &VmConfig,
        inputs: Inputs,
        console: Console,
        start: Instant,
    ) -> Result<Vmm, VmmError> {
        let Inputs {
            kvm,
            mut kernel,
            kernel_info: info,
            initrd: mut initrd_file,
            disks,
            taps,
            shares,
            vsock,
        } = inputs;

        // Signals are blocked before any thread starts so that they all inherit the mask.
        let signals = block_control_signals().map_err(|e| VmmError::Io("signalfd", e))?;

        let mem = create_guest_memory(config.memory_mib, !config.fs.is_empty())?;
        let mem_size = config.memory_mib << 20; // at most the host's memory (validated)
        let vm = Arc::new(create_vm(&kvm, &mem)?);
        let fast = FastPaths::probe(&kvm);
        let exit = Arc::new(ExitEvent::new().map_err(|e| VmmError::Io("eventfd", e))?);

        let (console_outputs, outputs, rest) = split_console(console, &exit)?;
        let machine = Machine {
            vcpus: u8::try_from(config.vcpus).map_err(|_| ConfigError::TooManyVcpus {
                requested: config.vcpus,
                max: u8::MAX.into(),
            })?,
            memory_mib: config.memory_mib,
            acpi: config.acpi,
            boot_timer: config.boot_timer,
            serial2: outputs.error_output.is_some(),
            disks: config
                .disks
                .iter()
                .zip(&disks)
                .map(|(d, image)| SavedDisk {
                    path: d.path.clone(),
                    read_only: d.read_only,
                    serial: d.serial.clone(),
                    size: image.size(),
                    in_memory: false,
                })
                .collect(),
            nets: config
                .nets
                .iter()
                .map(|n| SavedNet {
                    tap: n.tap.clone(),
                    mac: n.mac.unwrap_or_else(|| Mac::for_tap(&n.tap)).0,
                    mtu: n.mtu,
                })
                .collect(),
        };
        let mut devices =
            legacy_devices(&vm, fast, &machine, None, mem_size, outputs, &exit, start)?;
        let (fs_devices, watches) = share_devices(shares)?;
        let vsock = config
            .vsock
            .as_ref()
            .zip(vsock)
            .map(|(c, backend)| Vsock::new(c.cid, backend));
        let mut boot_args = virtio_devices(
            &mut devices,
            &vm,
            fast,
            &mem,
            &machine,
            disks,
            taps,
            fs_devices,
            vsock,
        )?;
        if let (true, Some(root)) = (config.root_on_first_disk, config.disks.first()) {
            let mode = if root.read_only { "ro" } else { "rw" };
            boot_args.push(format!("root=/dev/vda {mode}"));
        }

        let initrd = match (&config.initrd, initrd_file.as_mut()) {
            (_, Some(f)) => Some(InitrdImage::File(f)),
            (Some(Initrd::Generated(bytes)), None) => Some(InitrdImage::Bytes(bytes)),
            _ => None,
        };
        let cmdline = with_boot_args(&config.cmdline, &boot_args);
        let num_cpus = u8::try_from(config.vcpus).map_err(|_| ConfigError::TooManyVcpus {
            requested: config.vcpus,
            max: u8::MAX.into(),
        })?;
        let rsdp = if config.acpi {
            Some(setup_acpi(&mem, num_cpus, &devices)?)
        } else {
            None
        };
        let loaded = boot::load(&mem, mem_size, &mut kernel, info, initrd, &cmdline, rsdp)?;
        mptable::setup_mptable(&mem, num_cpus)?;

        let (vcpus, cpuids) = create_vcpus(&kvm, &vm, &mem, num_cpus, loaded.entry)?;

        Ok(assemble(Parts {
            kvm: &kvm,
            vm,
            mem,
            vcpus,
            cpuids,
            devices,
            exit,
            signals,
            console_outputs,
            console: rest,
            machine,
            shares: watches,
        }))
    }
}

/// What a VM is restored from, opened: `/dev/kvm`, the snapshot's state (read and checked)
/// and its memory file.
pub struct RestoreInputs {
    kvm: Kvm,
    snapshot: Snapshot,
    memory: File,
    disks: Vec<DiskImage>,
    taps: Vec<Tap>,
    /// Which disks were given with another size than the snapshot's (the guest is told).
    resized: Vec<bool>,
}

/// Whether disks given at restore must have the sizes the snapshot's had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskSizes {
    /// Each disk its saved size: the guest knows it and may have cached what it read.
    AsSaved,
    /// Any size: the guest is told of the new ones with a config-change interrupt. Only for
    /// guests that have not read from those disks (flint's warm OCI guest).
    New,
}

impl RestoreInputs {
    /// Opens and checks the snapshot in `dir`: a truncated, corrupted, other-version or
    /// other-machine snapshot is an error here, before anything is built.
    /// `disks` and `nets`, when given, replace the snapshot's disk files and TAPs in order
    /// (as many as it has; each disk the size it had).
    pub fn open(
        dir: &std::path::Path,
        disks: &[DiskConfig],
        nets: &[NetConfig],
    ) -> Result<RestoreInputs, VmmError> {
        Self::open_with(dir, disks, nets, DiskSizes::AsSaved)
    }

    /// [`RestoreInputs::open`], with disks of other sizes allowed if `sizes` says so.
    pub fn open_with(
        dir: &std::path::Path,
        disks: &[DiskConfig],
        nets: &[NetConfig],
        sizes: DiskSizes,
    ) -> Result<RestoreInputs, VmmError> {
        let mut state = open_file("--restore", &dir.join(snapshot::STATE_FILE))?;
        let memory = open_file("--restore", &dir.join(snapshot::MEMORY_FILE))?;
        let mut snapshot = snapshot::read_state(&mut state)?;
        let devices = snapshot.machine.disks.len() + snapshot.machine.nets.len();
        if snapshot.virtio.len() != devices {
            return Err(SnapshotError::Mismatch(format!(
                "the snapshot holds {} virtio device states for {devices} devices",
                snapshot.virtio.len()
            ))
            .into());
        }
        let (disks, taps, resized) =
            open_restored_devices(&mut snapshot.machine, disks, nets, sizes)?;
        let kvm = kvm::open()?;
        let vendor = snapshot::host_cpu_vendor();
        if snapshot.cpu_vendor != vendor {
            return Err(SnapshotError::Mismatch(format!(
                "the snapshot was taken on a {} CPU; this host's is {vendor}",
                snapshot.cpu_vendor
            ))
            .into());
        }
        let m = &snapshot.machine;
        if snapshot.vcpus.len() != usize::from(m.vcpus) || m.vcpus == 0 {
            return Err(SnapshotError::Mismatch(format!(
                "the snapshot holds {} vCPU states for {} vCPUs",
                snapshot.vcpus.len(),
                m.vcpus
            ))
            .into());
        }
        if u32::from(m.vcpus) > max_vcpus(&kvm) {
            return Err(ConfigError::TooManyVcpus {
                requested: m.vcpus.into(),
                max: max_vcpus(&kvm),
            }
            .into());
        }
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(VmmError::Cpuid)?;
        for (i, v) in snapshot.vcpus.iter().enumerate() {
            let mut here = supported.clone();
            let index = u8::try_from(i).unwrap_or(u8::MAX);
            cpuid::filter_cpuid(&mut here, index, m.vcpus, host_caps(&kvm));
            if let Some((leaf, sub, reg, bits)) = cpuid::missing_features(&v.cpuid, &here) {
                return Err(SnapshotError::Mismatch(format!(
                    "the snapshot's guest uses CPU features this host does not offer (CPUID \
                     leaf {leaf:#x}.{sub} {reg} bits {bits:#x}); restore it on the kind of host \
                     it was taken on"
                ))
                .into());
            }
        }
        // The layout must be exactly what this flint gives that much memory.
        let expected: Vec<(u64, u64)> = crate::vstate::memory::ram_ranges(
            m.memory_mib
                .checked_mul(1 << 20)
                .ok_or(SnapshotError::Mismatch("absurd memory size".into()))?,
        )
        .into_iter()
        .map(|(a, l)| (a.0, l))
        .collect();
        let saved: Vec<(u64, u64)> = snapshot
            .memory
            .iter()
            .map(|r| (r.guest_addr, r.len))
            .collect();
        if expected != saved {
            return Err(SnapshotError::Mismatch(format!(
                "the snapshot's memory layout {saved:x?} is not that of {} MiB",
                m.memory_mib
            ))
            .into());
        }
        Ok(RestoreInputs {
            kvm,
            snapshot,
            memory,
            disks,
            taps,
            resized,
        })
    }

    /// Records that disk `index` was made in memory (see [`SavedDisk::in_memory`]), for the
    /// snapshots of this VM.
    pub fn mark_in_memory(&mut self, index: usize) {
        if let Some(d) = self.snapshot.machine.disks.get_mut(index) {
            d.in_memory = true;
        }
    }

    /// Gives the restored VM a boot timer (or none), whatever the snapshot's had: it is the
    /// guest's next write to it that is timed, from this flint's start.
    pub fn set_boot_timer(&mut self, on: bool) {
        self.snapshot.machine.boot_timer = on;
    }

    /// As [`Inputs::largest_writable_disk`].
    pub fn largest_writable_disk(&self) -> u64 {
        largest_writable(&self.disks)
    }

    /// The machine the snapshot describes.
    pub fn machine(&self) -> &Machine {
        &self.snapshot.machine
    }
}

/// A disk of zeros in memory the size of the in-memory disk `saved` had (its contents, read by
/// the guest before the snapshot, are gone with the flint that made it).
fn zeros_disk(saved: &mut SavedDisk) -> Result<DiskImage, VmmError> {
    if saved.size > MAX_IN_MEMORY_DISK {
        return Err(SnapshotError::Mismatch(format!(
            "the snapshot's in-memory disk has {} bytes (at most {MAX_IN_MEMORY_DISK})",
            saved.size
        ))
        .into());
    }
    // An empty in-memory file grown to the size reads as zeros and takes no memory.
    let (file, path) = in_memory_file(c"flint-zeros", &[])
        .and_then(|(file, path)| file.set_len(saved.size).map(|()| (file, path)))
        .map_err(|e| VmmError::Io("making an in-memory disk", e))?;
    let image = DiskImage::open(&path, true).map_err(|e| VmmError::Disk("--disk", e))?;
    drop(file);
    saved.path = path;
    Ok(image)
}

/// The largest in-memory disk a snapshot may ask for (a spec disk is at most 1 MiB).
const MAX_IN_MEMORY_DISK: u64 = 16 << 20;

/// A restored VM's disks, TAPs, and which disks changed size.
type RestoredDevices = (Vec<DiskImage>, Vec<Tap>, Vec<bool>);

/// Opens a restored VM's disks and TAPs: the snapshot's own, or those given instead (same
/// count, same sizes unless `sizes` allows others, same modes); `machine` then names what was
/// opened. Also returns which disks changed size.
fn open_restored_devices(
    machine: &mut Machine,
    disks: &[DiskConfig],
    nets: &[NetConfig],
    sizes: DiskSizes,
) -> Result<RestoredDevices, VmmError> {
    let mismatch = |m: String| VmmError::Snapshot(SnapshotError::Mismatch(m));
    if !disks.is_empty() && disks.len() != machine.disks.len() {
        return Err(mismatch(format!(
            "the snapshot's VM has {} disks; --disk was given {} times (give all or none)",
            machine.disks.len(),
            disks.len()
        )));
    }
    if !nets.is_empty() && nets.len() != machine.nets.len() {
        return Err(mismatch(format!(
            "the snapshot's VM has {} network interfaces; --net was given {} times (give all \
             or none)",
            machine.nets.len(),
            nets.len()
        )));
    }
    let mut images = Vec::new();
    let mut resized = Vec::new();
    for (i, saved) in machine.disks.iter_mut().enumerate() {
        if let Some(given) = disks.get(i) {
            if given.read_only != saved.read_only {
                return Err(mismatch(format!(
                    "--disk {}: the snapshot's disk {i} was {}",
                    given.path.display(),
                    if saved.read_only {
                        "read-only (add ,ro)"
                    } else {
                        "writable (drop ,ro)"
                    }
                )));
            }
            saved.path = given.path.clone();
            saved.in_memory = false;
        }
        let image = if saved.in_memory && saved.read_only && disks.is_empty() {
            zeros_disk(saved)?
        } else {
            DiskImage::open(&saved.path, saved.read_only)
                .map_err(|e| VmmError::Disk("--disk", e))?
        };
        let resize = image.size() != saved.size;
        if resize && sizes == DiskSizes::AsSaved {
            return Err(mismatch(format!(
                "{}: {} bytes, but the snapshot's disk {i} had {} bytes",
                saved.path.display(),
                image.size(),
                saved.size
            )));
        }
        saved.size = image.size();
        resized.push(resize);
        images.push(image);
    }
    let mut taps = Vec::new();
    for (i, saved) in machine.nets.iter_mut().enumerate() {
        if let Some(given) = nets.get(i) {
            saved.tap = given.tap.clone();
            if let Some(mac) = given.mac {
                saved.mac = mac.0;
            }
        }
        taps.push(Tap::open(&saved.tap)?);
    }
    Ok((images, taps, resized))
}

impl Vmm {
    /// Makes the VM a snapshot holds, ready to continue where it was taken. Memory is mapped
    /// from the snapshot's file copy-on-write; nothing is read from it up front.
    pub fn restore(
        inputs: RestoreInputs,
        console: Console,
        start: Instant,
    ) -> Result<Vmm, VmmError> {
        let RestoreInputs {
            kvm,
            snapshot,
            memory,
            disks,
            taps,
            resized,
        } = inputs;
        let signals = block_control_signals().map_err(|e| VmmError::Io("signalfd", e))?;
        let mem = snapshot::memory::map(&memory, &snapshot.memory)?;
        let machine = snapshot.machine;
        let mem_size = machine.memory_mib << 20; // checked against the layout in open()
        let vm = Arc::new(create_vm(&kvm, &mem)?);
        crate::vstate::vm::restore_state(&vm, &snapshot.vm)
            .map_err(|e| SnapshotError::Mismatch(crate::exit::error_chain(&e)))?;
        let fast = FastPaths::probe(&kvm);
        let exit = Arc::new(ExitEvent::new().map_err(|e| VmmError::Io("eventfd", e))?);
        if console.error_output.is_some() != machine.serial2 {
            return Err(SnapshotError::Mismatch(
                "the snapshot's VM had a different console (a second serial port or not)".into(),
            )
            .into());
        }
        let (console_outputs, outputs, rest) = split_console(console, &exit)?;
        let mut devices = legacy_devices(
            &vm,
            fast,
            &machine,
            Some(&snapshot.legacy),
            mem_size,
            outputs,
            &exit,
            start,
        )?;
        virtio_devices(
            &mut devices,
            &vm,
            fast,
            &mem,
            &machine,
            disks,
            taps,
            Vec::new(),
            None,
        )?;
        for (slot, state) in devices.virtio.iter().zip(&snapshot.virtio) {
            crate::bus::lock(&slot.transport).restore(state)?;
        }
        let cpuids: Cpuids = Arc::new(snapshot.vcpus.iter().map(|v| v.cpuid.clone()).collect());
        let vcpus = snapshot
            .vcpus
            .iter()
            .enumerate()
            .map(|(i, state)| {
                let index = u8::try_from(i).unwrap_or(u8::MAX);
                let fd = crate::vstate::vcpu::restore_vcpu(&vm, index, state)
                    .map_err(|e| SnapshotError::Mismatch(crate::exit::error_chain(&e)))?;
                Ok((fd, index))
            })
            .collect::<Result<Vec<_>, VmmError>>()?;
        // A restored VM is a new instance: it gets a new generation ID, and the guest is told
        // so that it reseeds its RNG (now that its vCPUs exist: the interrupt waits in the
        // local APIC for the first run).
        if let Some(line) = &devices.vmgenid_changed {
            mem.write_slice(&random_id()?, GuestAddress(layout::VMGENID_ADDR))
                .map_err(|e| {
                    VmmError::Io("writing the VM generation ID", std::io::Error::other(e))
                })?;
            line.trigger()
                .map_err(|e| VmmError::Io("signalling the new VM generation ID", e))?;
        }
        // Disks are numbered first among the virtio devices.
        for (slot, _) in devices.virtio.iter().zip(&resized).filter(|(_, r)| **r) {
            crate::bus::lock(&slot.transport).config_changed();
        }
        Ok(assemble(Parts {
            kvm: &kvm,
            vm,
            mem,
            vcpus,
            cpuids,
            devices,
            exit,
            signals,
            console_outputs,
            console: rest,
            machine,
            shares: Vec::new(),
        }))
    }
}

/// Where console input comes from and how it is handled (what of a [`Console`] the run loop
/// keeps).
struct ConsoleRest {
    input: Option<std::os::fd::RawFd>,
    escapes: bool,
    eof_byte: Option<u8>,
    limit: Option<u64>,
}

/// The console's outputs (their writer threads, and the sinks the UARTs write into) and the
/// rest of it.
fn split_console(
    console: Console,
    exit: &Arc<ExitEvent>,
) -> Result<(Vec<ConsoleOutput>, ConsoleOutputs, ConsoleRest), VmmError> {
    let Console {
        input,
        output,
        error_output,
        escapes,
        eof_byte,
        hold_input_until_ready,
        limit,
    } = console;
    let (writers, outputs) =
        console_outputs(output, error_output, limit, hold_input_until_ready, exit)?;
    let rest = ConsoleRest {
        input,
        escapes,
        eof_byte,
        limit,
    };
    Ok((writers, outputs, rest))
}

/// What a VM is made of, booted or restored.
struct Parts<'a> {
    kvm: &'a Kvm,
    vm: Arc<VmFd>,
    mem: GuestMemoryMmap,
    vcpus: Vec<(VcpuFd, u8)>,
    cpuids: Cpuids,
    devices: Devices,
    exit: Arc<ExitEvent>,
    signals: OwnedFd,
    console_outputs: Vec<ConsoleOutput>,
    console: ConsoleRest,
    machine: Machine,
    shares: Vec<ShareWatch>,
}

fn assemble(p: Parts) -> Vmm {
    Vmm {
        vcpus: p.vcpus,
        ctx: Arc::new(VcpuContext {
            pio: p.devices.pio.clone(),
            mmio: p.devices.mmio.clone(),
            exit: p.exit,
            stop: Default::default(),
            pause: Default::default(),
        }),
        devices: p.devices,
        console_input: p.console.input,
        escapes: p.console.escapes,
        eof_byte: p.console.eof_byte,
        signals: p.signals,
        console_outputs: p.console_outputs,
        console_limit: p.console.limit,
        api: None,
        warm_snapshot: None,
        machine: p.machine,
        shares: p.shares,
        msr_list: Arc::new(msr_list(p.kvm)),
        cpuids: p.cpuids,
        _vm: p.vm,
        _mem: p.mem,
    }
}

fn host_caps(kvm: &Kvm) -> cpuid::HostCaps {
    cpuid::HostCaps {
        tsc_deadline: kvm.check_extension(Cap::TscDeadlineTimer),
    }
}

fn largest_writable(disks: &[DiskImage]) -> u64 {
    disks
        .iter()
        .filter(|d| !d.read_only())
        .map(DiskImage::size)
        .max()
        .unwrap_or(0)
}

fn open_file(what: &'static str, path: &std::path::Path) -> Result<File, VmmError> {
    open_input(path, InputKind::File, false).map_err(|reason| VmmError::Read {
        what,
        path: path.display().to_string(),
        reason,
    })
}

/// Opens the kernel and finds out what it is.
fn open_kernel(config: &VmConfig) -> Result<(File, KernelInfo), VmmError> {
    let mut kernel = open_file("--kernel", &config.kernel)?;
    let info = boot::kernel::inspect(&mut kernel)
        .map_err(|e| VmmError::Read {
            what: "--kernel",
            path: config.kernel.display().to_string(),
            reason: io_reason(&e),
        })?
        .ok_or_else(|| VmmError::NotAKernel(config.kernel.display().to_string()))?;
    Ok((kernel, info))
}

/// A writer thread for each console output fd (COM1's, and COM2's if any), and the sinks the
/// UARTs write into.
fn console_outputs(
    output: OwnedFd,
    error_output: Option<OwnedFd>,
    limit: Option<u64>,
    hold_input_until_ready: bool,
    exit: &Arc<ExitEvent>,
) -> Result<(Vec<ConsoleOutput>, ConsoleOutputs), VmmError> {
    let budget = Budget::new(limit);
    let start = |name, fd| {
        ConsoleOutput::start(name, fd, budget.clone(), exit.clone())
            .map_err(|e| VmmError::Io("starting a console output thread", e))
    };
    let output_fd = output
        .try_clone()
        .map_err(|e| VmmError::Io("duplicating the console output", e))?;
    let (out, sink) = start("console", output)?;
    let mut writers = vec![out];
    let error_output = match error_output {
        // Both UARTs to one file (a container's terminal): one writer, so that what the guest
        // wrote to COM1 and COM2 reaches it in the order written, as on a real terminal.
        Some(fd) if same_file(&output_fd, &fd) => Some(Box::new(sink.clone()) as SerialOut),
        Some(fd) => {
            let (out, sink) = start("console2", fd)?;
            writers.push(out);
            Some(Box::new(sink) as SerialOut)
        }
        None => None,
    };
    let outputs = ConsoleOutputs {
        output: Box::new(sink),
        error_output,
        hold_input_until_ready,
    };
    Ok((writers, outputs))
}

/// Whether `a` and `b` are the same open file (device and inode), e.g. both a pty's slave.
fn same_file(a: &OwnedFd, b: &OwnedFd) -> bool {
    use std::os::unix::fs::MetadataExt;
    let meta = |fd: &OwnedFd| {
        fd.try_clone()
            .map(std::fs::File::from)
            .and_then(|f| f.metadata())
            .map(|m| (m.dev(), m.ino()))
    };
    matches!((meta(a), meta(b)), (Ok(x), Ok(y)) if x == y)
}

/// Where the legacy devices' console output goes.
struct ConsoleOutputs {
    output: SerialOut,
    error_output: Option<SerialOut>,
    hold_input_until_ready: bool,
}

/// The legacy devices on the port bus (serial ports, the guest init's ports, i8042, CMOS) and
/// the boot timer on the MMIO bus, each at its address from `layout`.
#[allow(clippy::too_many_arguments)]
fn legacy_devices(
    vm: &Arc<VmFd>,
    fast: FastPaths,
    config: &Machine,
    saved: Option<&LegacyStates>,
    mem_size: u64,
    console: ConsoleOutputs,
    exit: &Arc<ExitEvent>,
    start: Instant,
) -> Result<Devices, VmmError> {
    let irq = |gsi, what| IrqLine::new(vm, gsi, fast.irqfd).map_err(|e| VmmError::Irq(what, e));
    let mut pio = Bus::new();
    let mut mmio = Bus::new();

    let line = irq(layout::SERIAL_IRQ, "the serial port")?;
    let mut serial = match saved {
        Some(s) => SerialDevice::restore(line, console.output, &s.serial)
            .ok_or_else(|| bad_state("the serial port's"))?,
        None => SerialDevice::new(line, console.output),
    };
    if console.hold_input_until_ready && saved.is_none() {
        serial.hold_input();
    }
    let serial = Arc::new(Mutex::new(serial));
    pio.insert(
        layout::SERIAL_PORT.into(),
        layout::SERIAL_PORT_LEN,
        serial.clone(),
    )?;
    let serial2 = match console.error_output {
        Some(out) => {
            let line = irq(layout::SERIAL2_IRQ, "the second serial port")?;
            let dev = match saved.map(|s| s.serial2.as_ref()) {
                Some(Some(state)) => SerialDevice::restore(line, out, state)
                    .ok_or_else(|| bad_state("the second serial port's"))?,
                Some(None) => return Err(bad_state("the second serial port's")),
                None => SerialDevice::new(line, out),
            };
            let s = Arc::new(Mutex::new(dev));
            pio.insert(
                layout::SERIAL2_PORT.into(),
                layout::SERIAL_PORT_LEN,
                s.clone(),
            )?;
            Some(s)
        }
        None => None,
    };
    let guest_ports = Arc::new(Mutex::new(GuestPorts::new(exit.clone(), serial.clone())));
    pio.insert(
        layout::EXIT_STATUS_PORT.into(),
        layout::GUEST_PORTS_LEN,
        guest_ports.clone(),
    )?;
    let i8042 = Arc::new(Mutex::new(match saved {
        Some(s) => I8042::restore(exit.clone(), &s.i8042),
        None => I8042::new(exit.clone()),
    }));
    pio.insert(
        layout::I8042_PORT.into(),
        layout::I8042_PORT_LEN,
        i8042.clone(),
    )?;
    let power_button = if config.acpi {
        let power = Arc::new(Mutex::new(AcpiPower::new(exit.clone())));
        pio.insert(
            layout::ACPI_SLEEP_CONTROL_PORT.into(),
            layout::ACPI_PORTS_LEN,
            power,
        )?;
        let line = irq(layout::GED_IRQ, "the ACPI power button")?;
        Some(Arc::new(PowerButton::new(line)))
    } else {
        None
    };
    let vmgenid_changed = if config.acpi {
        Some(irq(layout::VMGENID_IRQ, "the VM generation ID")?)
    } else {
        None
    };
    let below_4g = mem_size.min(layout::MMIO32_START);
    let mut cmos = Cmos::new(below_4g, mem_size - below_4g);
    if let Some(s) = saved {
        cmos.restore(&s.cmos)
            .ok_or_else(|| bad_state("the CMOS's"))?;
    }
    let cmos = Arc::new(Mutex::new(cmos));
    pio.insert(
        layout::CMOS_PORT.into(),
        layout::CMOS_PORT_LEN,
        cmos.clone(),
    )?;
    let boot_timer = if config.boot_timer {
        let report = Box::new(|d: Duration| {
            eprintln!("flint: guest booted in {} us", d.as_micros());
        });
        let t = Arc::new(Mutex::new(BootTimer::new(start, report)));
        mmio.insert(
            layout::BOOT_TIMER_ADDR,
            layout::MMIO_DEVICE_WINDOW,
            t.clone(),
        )?;
        Some(t)
    } else {
        None
    };
    Ok(Devices {
        pio,
        mmio,
        serial,
        serial2,
        guest_ports,
        i8042,
        cmos,
        boot_timer,
        power_button,
        vmgenid_changed,
        virtio: Vec::new(),
    })
}

fn bad_state(whose: &str) -> VmmError {
    VmmError::Snapshot(SnapshotError::Mismatch(format!(
        "{whose} state in the snapshot is malformed"
    )))
}

/// Each share's device, and what the VM keeps to watch and stop its backend.
fn share_devices(shares: Vec<OpenShare>) -> Result<(Vec<Fs>, Vec<ShareWatch>), VmmError> {
    let mut devices = Vec::with_capacity(shares.len());
    let mut watches = Vec::with_capacity(shares.len());
    for s in shares {
        let socket = s.backend.watch_fd().map_err(|e| VmmError::Io("dup", e))?;
        watches.push(ShareWatch {
            tag: s.tag.clone(),
            socket,
            daemon: s.daemon,
        });
        devices.push(Fs::new(&s.tag, s.backend)?);
    }
    Ok((devices, watches))
}

/// The disk, network, file system and socket devices, disks first (vda, vdb, …), then NICs
/// (eth0, …), then shares, then the vsock device, each with a window and an interrupt line from
/// the allocator. Returns the kernel arguments that announce them (and the root disk, if any).
#[allow(clippy::too_many_arguments)]
fn virtio_devices(
    devices: &mut Devices,
    vm: &Arc<VmFd>,
    fast: FastPaths,
    mem: &GuestMemoryMmap,
    machine: &Machine,
    images: Vec<DiskImage>,
    taps: Vec<Tap>,
    shares: Vec<Fs>,
    vsock: Option<Vsock>,
) -> Result<Vec<String>, VmmError> {
    let mut wanted: Vec<(String, &'static str, Box<dyn VirtioDevice>)> = Vec::new();
    for (i, (disk, image)) in machine.disks.iter().zip(images).enumerate() {
        let serial = match &disk.serial {
            Some(s) => s.clone(),
            None => format!("flint-vd{}", disk_letter(i)),
        };
        wanted.push((
            format!("virtio-blk{i}"),
            "a disk",
            Box::new(Block::new(image, &serial)),
        ));
    }
    for (i, (net, tap)) in machine.nets.iter().zip(taps).enumerate() {
        wanted.push((
            format!("virtio-net{i}"),
            "a network interface",
            Box::new(Net::new(Box::new(tap), Mac(net.mac), net.mtu)),
        ));
    }
    for (i, fs) in shares.into_iter().enumerate() {
        wanted.push((format!("virtio-fs{i}"), "a shared directory", Box::new(fs)));
    }
    if let Some(v) = vsock {
        wanted.push(("virtio-vsock0".into(), "a vsock device", Box::new(v)));
    }

    let mut alloc = ResourceAllocator::new();
    let mut boot_args = Vec::new();
    for (name, what, device) in wanted {
        // Only the vsock worker may make and connect sockets (its own seccomp list).
        let worker = if device.device_type() == crate::devices::virtio::vsock::DEVICE_ID {
            ThreadKind::VsockWorker
        } else {
            ThreadKind::DeviceWorker
        };
        let res = alloc.virtio_device()?;
        let line = IrqLine::new(vm, res.gsi, fast.irqfd).map_err(|e| VmmError::Irq(what, e))?;
        let mut transport =
            MmioTransport::new(device, mem.clone(), Arc::new(Interrupt::new(line)))?;
        if fast.ioeventfd {
            for (q, evt) in transport.queue_evts().iter().enumerate() {
                let addr = IoEventAddress::Mmio(res.mmio_base + REG_QUEUE_NOTIFY);
                let q = u32::try_from(q).map_err(|_| VmmError::TooManyQueues)?;
                vm.register_ioevent(evt, &addr, q)
                    .map_err(VmmError::IoEvent)?;
            }
            transport.set_ioeventfd(true);
        }
        let queue_evts = transport
            .queue_evts()
            .iter()
            .map(|e| e.try_clone())
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| VmmError::Io("eventfd", e))?;
        let queues = transport.device_queues().clone();
        boot_args.push(format!(
            "virtio_mmio.device={}K@{:#x}:{}",
            res.mmio_len >> 10,
            res.mmio_base,
            res.gsi
        ));
        devices.add_virtio(VirtioSlot {
            name,
            resources: res,
            transport: Arc::new(Mutex::new(transport)),
            queues,
            queue_evts,
            worker,
        })?;
    }
    Ok(boot_args)
}

/// The ACPI tables for these vCPUs and devices, in guest memory; returns the RSDP's address.
fn setup_acpi(mem: &GuestMemoryMmap, num_cpus: u8, devices: &Devices) -> Result<u64, VmmError> {
    let mut serials = vec![acpi::SerialPort {
        port: layout::SERIAL_PORT,
        irq: layout::SERIAL_IRQ,
    }];
    if devices.serial2.is_some() {
        serials.push(acpi::SerialPort {
            port: layout::SERIAL2_PORT,
            irq: layout::SERIAL2_IRQ,
        });
    }
    let virtio: Vec<acpi::VirtioMmio> = devices
        .virtio
        .iter()
        .map(|slot| acpi::VirtioMmio {
            base: slot.resources.mmio_base,
            len: slot.resources.mmio_len,
            gsi: slot.resources.gsi,
        })
        .collect();
    let config = acpi::AcpiConfig {
        num_cpus,
        serials: &serials,
        virtio: &virtio,
        vm_generation_id: random_id()?,
    };
    Ok(acpi::setup_acpi(mem, &config)?)
}

/// 16 random bytes from the kernel (getrandom: no file, which flint can no longer open here).
fn random_id() -> Result<[u8; 16], VmmError> {
    let mut id = [0u8; 16];
    // SAFETY: getrandom writes at most `id.len()` bytes into `id`.
    let n = unsafe { libc::getrandom(id.as_mut_ptr().cast(), id.len(), 0) };
    if usize::try_from(n).ok() != Some(id.len()) {
        return Err(VmmError::Io(
            "getrandom for the VM generation ID",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(id)
}

/// The letter of disk `i` as the guest names it (vda, vdb, …).
fn disk_letter(i: usize) -> char {
    (b'a'..=b'z').nth(i).map_or('?', char::from)
}

/// Adds `extra` to the kernel's own arguments, before any `--` that starts init's.
fn with_boot_args(cmdline: &str, extra: &[String]) -> String {
    if extra.is_empty() {
        return cmdline.to_string();
    }
    let extra = extra.join(" ");
    match cmdline.find(" -- ") {
        Some(i) => format!("{} {extra}{}", &cmdline[..i], &cmdline[i..]),
        None if cmdline.is_empty() => extra,
        None => format!("{cmdline} {extra}"),
    }
}

/// The MSRs KVM can save and restore (none where it cannot list them).
fn msr_list(kvm: &Kvm) -> Vec<u32> {
    kvm.get_msr_index_list()
        .map(|l| l.as_slice().to_vec())
        .unwrap_or_default()
}

/// The vCPUs: CPUID, MSRs, FPU and LAPIC on each; the boot vCPU also gets the entry state.
fn create_vcpus(
    kvm: &Kvm,
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    num_cpus: u8,
    entry: EntryMode,
) -> Result<(Vec<(VcpuFd, u8)>, Cpuids), VmmError> {
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(VmmError::Cpuid)?;
    let caps = host_caps(kvm);
    let mut vcpus = Vec::new();
    let mut cpuids = Vec::new();
    for i in 0..num_cpus {
        let entry = (i == 0).then_some(entry);
        let (fd, cpuid) = vcpu::create_vcpu(vm, i, num_cpus, &supported, caps, mem, entry)?;
        vcpus.push((fd, i));
        cpuids.push(cpuid);
    }
    Ok((vcpus, Arc::new(cpuids)))
}

/// The CPUID flint gave each vCPU, by index (a snapshot records it).
pub type Cpuids = Arc<Vec<Vec<kvm_bindings::kvm_cpuid_entry2>>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_args_go_before_init_args() {
        let extra = vec!["a=1".to_string(), "b".to_string()];
        assert_eq!(
            with_boot_args("console=ttyS0", &extra),
            "console=ttyS0 a=1 b"
        );
        assert_eq!(with_boot_args("", &extra), "a=1 b");
        assert_eq!(with_boot_args("x -- init", &extra), "x a=1 b -- init");
        assert_eq!(with_boot_args("x", &[]), "x");
    }

    #[test]
    fn an_in_memory_disk_is_restored_as_zeros_of_its_size_unless_disks_are_given() {
        let disk = |path: &str, in_memory| SavedDisk {
            path: path.into(),
            read_only: true,
            serial: None,
            size: 1024,
            in_memory,
        };
        let mut machine = Machine {
            vcpus: 1,
            memory_mib: 128,
            acpi: true,
            boot_timer: false,
            serial2: true,
            disks: vec![disk("/proc/self/fd/999999", true)],
            nets: Vec::new(),
        };
        let (images, _, resized) =
            open_restored_devices(&mut machine, &[], &[], DiskSizes::AsSaved).unwrap();
        assert_eq!((images[0].size(), images[0].read_only()), (1024, true));
        assert_eq!(resized, [false]);
        assert!(machine.disks[0].path.starts_with("/proc/self/fd/"));
        // Not in memory: the path is opened, and here it names nothing.
        let mut machine2 = Machine {
            disks: vec![disk("/proc/self/fd/999999", false)],
            ..machine.clone()
        };
        assert!(open_restored_devices(&mut machine2, &[], &[], DiskSizes::AsSaved).is_err());
        // Given a disk for it, that disk is used and the mark goes.
        let file = std::env::temp_dir().join(format!("flint-inmem-{}", std::process::id()));
        std::fs::write(&file, [1u8; 1024]).unwrap();
        let given = DiskConfig {
            path: file.clone(),
            read_only: true,
            serial: None,
        };
        open_restored_devices(&mut machine, &[given], &[], DiskSizes::AsSaved).unwrap();
        assert_eq!(machine.disks[0].path, file);
        assert!(!machine.disks[0].in_memory);
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn disks_are_lettered_as_the_guest_names_them() {
        assert_eq!(disk_letter(0), 'a');
        assert_eq!(disk_letter(25), 'z');
        assert_eq!(disk_letter(26), '?');
    }
}
