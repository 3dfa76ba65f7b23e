//! Builds a VM from a validated [`VmConfig`] and runs it: vCPU threads plus one device event
//! loop on the calling thread, until the guest powers off, a vCPU fails, or a signal arrives.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::signal::Killable;

use crate::arch::x86_64::{cpuid, layout, mptable};
use crate::boot::{self, InitrdImage, KernelInfo};
use crate::bus::{Bus, BusError};
use crate::config::{io_reason, ConfigError, Initrd, VmConfig};
use crate::devices::guest_ports::{self, GuestPorts, EXIT_STATUS_PORT};
use crate::devices::irq::IrqLine;
use crate::devices::legacy::boot_timer::BootTimer;
use crate::devices::legacy::cmos::Cmos;
use crate::devices::legacy::i8042::I8042;
use crate::devices::legacy::serial::{SerialDevice, SerialOut};
use crate::devices::virtio::block::{Block, DiskError, DiskImage};
use crate::devices::virtio::mmio::{MmioTransport, QueueEvents, TransportError, REG_QUEUE_NOTIFY};
use crate::devices::virtio::net::{Mac, Net, Tap, TapError};
use crate::devices::virtio::{Interrupt, VirtioDevice};
use crate::event_loop::{block_stop_signals, ConsoleInput, Control};
use crate::exit::{ExitEvent, ExitReason};
use crate::kvm::{self, KvmError};
use crate::vstate::memory::{create_guest_memory, MemoryError};
use crate::vstate::vcpu::{self, VcpuContext, VcpuError};
use crate::vstate::vm::{create_vm, VmError};

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "--kernel {0}: not a kernel image flint can boot (expected an ELF vmlinux or a bzImage)"
    )]
    NotAKernel(String),
    #[error("{what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error(transparent)]
    Kvm(#[from] KvmError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error("cannot write the MP table: {0}")]
    Mptable(#[from] mptable::MptableError),
    #[error("KVM_GET_SUPPORTED_CPUID failed: {0}")]
    Cpuid(#[source] kvm_ioctls::Error),
    #[error("registering the interrupt for {0} failed: {1}")]
    Irq(&'static str, #[source] kvm_ioctls::Error),
    #[error("placing a device on the bus failed: {0}")]
    Bus(#[from] BusError),
    #[error("setting up the event loop failed: {0}")]
    EventLoop(String),
    #[error("{0}: {1}")]
    Io(&'static str, #[source] std::io::Error),
    #[error("{0} {1}")]
    Disk(&'static str, #[source] DiskError),
    #[error("setting up a virtio device failed: {0}")]
    Transport(#[from] TransportError),
    #[error("--net: {0}")]
    Tap(#[from] TapError),
    #[error("registering a virtio queue notification with KVM (KVM_IOEVENTFD) failed: {0}")]
    IoEvent(#[source] kvm_ioctls::Error),
}

/// Where the console's bytes come from and go to.
pub struct Console {
    pub input: Option<std::os::fd::RawFd>,
    pub output: SerialOut,
    /// A second UART (COM2, the guest's ttyS1) writing here: the OCI workload's stderr.
    pub error_output: Option<SerialOut>,
    /// Interactive terminal: Ctrl-A x quits.
    pub escapes: bool,
    /// Sent to the guest when the input ends (^D lets a guest tty in canonical mode see EOF).
    pub eof_byte: Option<u8>,
    /// Hold input until the guest signals that its console is ready (port 0x502).
    pub hold_input_until_ready: bool,
}

/// A VM ready to run. Field order matters for drop: vCPUs and the VM go before guest memory.
pub struct Vmm {
    vcpus: Vec<(kvm_ioctls::VcpuFd, u8)>,
    ctx: Arc<VcpuContext>,
    serial: Arc<Mutex<SerialDevice>>,
    console_input: Option<std::os::fd::RawFd>,
    escapes: bool,
    eof_byte: Option<u8>,
    signals: std::os::fd::OwnedFd,
    virtio: Vec<Arc<Mutex<MmioTransport>>>,
    _vm: Arc<VmFd>,
    _mem: GuestMemoryMmap,
}

/// The most vCPUs flint can give a VM here: what KVM allows and what the MP table can describe.
pub fn max_vcpus(kvm: &Kvm) -> u32 {
    (kvm.get_max_vcpus() as u32).min(mptable::MAX_SUPPORTED_CPUS as u32)
}

/// Whether to use a KVM fast path: present, and not switched off with `FLINT_NO_<NAME>=1` (how the
/// tests exercise the fallbacks on hosts that have both).
fn use_fast_path(kvm: &Kvm, cap: Cap, name: &str) -> bool {
    kvm.check_extension(cap)
        && std::env::var_os(format!("FLINT_NO_{name}")).is_none_or(|v| v != "1")
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

fn open_file(what: &'static str, path: &std::path::Path) -> Result<File, VmmError> {
    File::open(path).map_err(|e| VmmError::Read {
        what,
        path: path.display().to_string(),
        reason: io_reason(&e),
    })
}

impl Vmm {
    /// Builds the VM. `start` is when the process started (for the boot timer).
    pub fn build(config: &VmConfig, console: Console, start: Instant) -> Result<Vmm, VmmError> {
        // Input checks that need no KVM come first, so a typo never waits on anything.
        config.validate_inputs()?;
        let mut kernel = open_file("--kernel", &config.kernel)?;
        let info: KernelInfo = boot::kernel::inspect(&mut kernel)
            .map_err(|e| VmmError::Read {
                what: "--kernel",
                path: config.kernel.display().to_string(),
                reason: io_reason(&e),
            })?
            .ok_or_else(|| VmmError::NotAKernel(config.kernel.display().to_string()))?;

        let kvm = kvm::open()?;
        config.validate_limits(max_vcpus(&kvm))?;
        if info.is_linux {
            kvm::check_can_boot_linux()?;
        }
        let mut initrd_file = match &config.initrd {
            Some(Initrd::File(p)) => Some(open_file("--initrd", p)?),
            _ => None,
        };

        // Signals are blocked before any thread starts so that they all inherit the mask.
        let signals = block_stop_signals().map_err(|e| VmmError::Io("signalfd", e))?;

        let mem_size = config.memory_mib << 20;
        let mem = create_guest_memory(config.memory_mib)?;
        let vm = Arc::new(create_vm(&kvm, &mem)?);
        let irqfd = use_fast_path(&kvm, Cap::Irqfd, "IRQFD");
        let ioeventfd = use_fast_path(&kvm, Cap::Ioeventfd, "IOEVENTFD");

        // virtio-mmio devices: one 4 KiB window after the boot timer's and one IOAPIC pin each,
        // announced to the kernel on its command line. Disks first (vda, vdb, ...), then NICs.
        let mut mmio = Bus::new();
        let mut boot_args = Vec::new();
        let mut virtio = Vec::new();
        let mut devices: Vec<(&'static str, Box<dyn VirtioDevice>)> = Vec::new();
        for (i, disk) in config.disks.iter().enumerate() {
            let what = if i == 0 && config.root_on_first_disk {
                "--rootfs"
            } else {
                "--disk"
            };
            let image =
                DiskImage::open(&disk.path, disk.read_only).map_err(|e| VmmError::Disk(what, e))?;
            let serial = disk
                .serial
                .clone()
                .unwrap_or_else(|| format!("flint-vd{}", (b'a' + i as u8) as char));
            devices.push(("a disk", Box::new(Block::new(image, &serial))));
        }
        for net in &config.nets {
            let tap = Tap::open(&net.tap)?;
            let mac = net.mac.unwrap_or_else(|| Mac::for_tap(&net.tap));
            devices.push((
                "a network interface",
                Box::new(Net::new(Box::new(tap), mac)),
            ));
        }
        for (i, (what, device)) in devices.into_iter().enumerate() {
            let base = layout::MMIO_DEVICES_START + (i as u64 + 1) * layout::MMIO_DEVICE_WINDOW;
            let gsi = layout::IRQ_DEVICES_START + i as u32;
            let line = IrqLine::new(&vm, gsi, irqfd).map_err(|e| VmmError::Irq(what, e))?;
            let mut transport =
                MmioTransport::new(device, mem.clone(), Arc::new(Interrupt::new(line)))?;
            if ioeventfd {
                for (q, evt) in transport.queue_evts().iter().enumerate() {
                    let addr = IoEventAddress::Mmio(base + REG_QUEUE_NOTIFY);
                    vm.register_ioevent(evt, &addr, q as u32)
                        .map_err(VmmError::IoEvent)?;
                }
                transport.set_ioeventfd(true);
            }
            let transport = Arc::new(Mutex::new(transport));
            mmio.insert(base, layout::MMIO_DEVICE_WINDOW, transport.clone())?;
            boot_args.push(format!("virtio_mmio.device=4K@{base:#x}:{gsi}"));
            virtio.push(transport);
        }
        if let (true, Some(root)) = (config.root_on_first_disk, config.disks.first()) {
            let mode = if root.read_only { "ro" } else { "rw" };
            boot_args.push(format!("root=/dev/vda {mode}"));
        }
        let cmdline = with_boot_args(&config.cmdline, &boot_args);

        let initrd = match (&config.initrd, initrd_file.as_mut()) {
            (_, Some(f)) => Some(InitrdImage::File(f)),
            (Some(Initrd::Generated(bytes)), None) => Some(InitrdImage::Bytes(bytes)),
            _ => None,
        };
        let loaded = boot::load(&mem, mem_size, &mut kernel, info, initrd, &cmdline)?;
        let num_cpus = config.vcpus as u8;
        mptable::setup_mptable(&mem, num_cpus)?;

        let exit = Arc::new(ExitEvent::new().map_err(|e| VmmError::Io("eventfd", e))?);
        let serial_irq = IrqLine::new(&vm, layout::SERIAL_IRQ, irqfd)
            .map_err(|e| VmmError::Irq("the serial port", e))?;
        let mut serial = SerialDevice::new(serial_irq, console.output);
        if console.hold_input_until_ready {
            serial.hold_input();
        }
        let serial = Arc::new(Mutex::new(serial));

        let mut pio = Bus::new();
        pio.insert(0x3f8, 8, serial.clone())?;
        if let Some(out) = console.error_output {
            let irq = IrqLine::new(&vm, layout::SERIAL2_IRQ, irqfd)
                .map_err(|e| VmmError::Irq("the second serial port", e))?;
            let serial2 = SerialDevice::new(irq, out);
            pio.insert(
                layout::SERIAL2_PORT as u64,
                8,
                Arc::new(Mutex::new(serial2)),
            )?;
        }
        pio.insert(
            EXIT_STATUS_PORT as u64,
            guest_ports::PORTS_LEN,
            Arc::new(Mutex::new(GuestPorts::new(exit.clone(), serial.clone()))),
        )?;
        pio.insert(0x60, 5, Arc::new(Mutex::new(I8042::new(exit.clone()))))?;
        let below_4g = mem_size.min(layout::MMIO32_START);
        pio.insert(
            0x70,
            2,
            Arc::new(Mutex::new(Cmos::new(below_4g, mem_size - below_4g))),
        )?;
        if config.boot_timer {
            let report = Box::new(|d: Duration| {
                eprintln!("flint: guest booted in {} us", d.as_micros());
            });
            mmio.insert(
                layout::BOOT_TIMER_ADDR,
                layout::MMIO_DEVICE_WINDOW,
                Arc::new(Mutex::new(BootTimer::new(start, report))),
            )?;
        }

        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(VmmError::Cpuid)?;
        let caps = cpuid::HostCaps {
            tsc_deadline: kvm.check_extension(Cap::TscDeadlineTimer),
        };
        let mut vcpus = Vec::with_capacity(num_cpus as usize);
        for i in 0..num_cpus {
            let entry = (i == 0).then_some(loaded.entry);
            vcpus.push((
                vcpu::create_vcpu(&vm, i, num_cpus, &supported, caps, &mem, entry)?,
                i,
            ));
        }

        Ok(Vmm {
            vcpus,
            ctx: Arc::new(VcpuContext {
                pio,
                mmio,
                exit,
                stop: Default::default(),
            }),
            serial,
            console_input: console.input,
            escapes: console.escapes,
            eof_byte: console.eof_byte,
            signals,
            virtio,
            _vm: vm,
            _mem: mem,
        })
    }

    /// Runs the VM to its end and returns why it ended.
    pub fn run(mut self) -> Result<ExitReason, VmmError> {
        vcpu::install_kick_handler()?;
        let mut em = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new()
            .map_err(|e| VmmError::EventLoop(format!("{e:?}")))?;
        let signals = self
            .signals
            .try_clone()
            .map_err(|e| VmmError::Io("dup", e))?;
        em.add_subscriber(Arc::new(Mutex::new(Control {
            exit: self.ctx.exit.clone(),
            signals,
        })));
        for t in &self.virtio {
            let events = QueueEvents::new(t.clone()).map_err(|e| VmmError::Io("eventfd", e))?;
            em.add_subscriber(Arc::new(Mutex::new(events)));
        }
        let input = self.console_input.map(|fd| {
            let sub = Arc::new(Mutex::new(ConsoleInput {
                input: fd,
                serial: self.serial.clone(),
                exit: self.ctx.exit.clone(),
                escapes: self.escapes,
                eof_byte: self.eof_byte,
                after_escape: false,
                watching: false,
            }));
            let id = em.add_subscriber(sub.clone());
            (sub, id)
        });

        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        let vcpus = std::mem::take(&mut self.vcpus);
        for (fd, index) in vcpus {
            match vcpu::spawn(fd, index, self.ctx.clone()) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    self.stop_vcpus(threads);
                    return Err(e.into());
                }
            }
        }

        while self.ctx.exit.reason().is_none() {
            // The timeout lets paused console input resume once the guest drains it.
            if let Err(e) = em.run_with_timeout(100) {
                self.ctx
                    .exit
                    .request(ExitReason::VcpuFailure(format!("event loop failed: {e:?}")));
            }
            if let Some((sub, id)) = &input {
                if let Ok(mut ops) = em.event_ops(*id) {
                    crate::bus::lock(sub).maybe_resume(&mut ops);
                }
            }
        }
        self.stop_vcpus(threads);
        // Every path above set a reason before leaving the loop.
        Ok(self.ctx.exit.reason().unwrap_or(ExitReason::Shutdown))
    }

    /// Stops every vCPU thread: sets the stop flag and kicks them out of KVM_RUN until they
    /// leave (a kick can land just before a thread re-enters KVM_RUN, so it repeats).
    fn stop_vcpus(&self, threads: Vec<JoinHandle<()>>) {
        self.ctx.stop.store(true, Ordering::Release);
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut threads = threads;
        while !threads.is_empty() && Instant::now() < deadline {
            for t in &threads {
                let _ = t.kill(vcpu::kick_signal());
            }
            std::thread::sleep(Duration::from_millis(5));
            let (done, running): (Vec<_>, Vec<_>) =
                threads.into_iter().partition(|t| t.is_finished());
            for t in done {
                let _ = t.join();
            }
            threads = running;
        }
        // A thread still running after this is abandoned; process exit ends it.
    }
}

/// A console on this process's stdin/stdout.
pub fn stdio_console() -> Console {
    use crate::devices::legacy::serial::Unbuffered;
    let stdin = std::io::stdin().as_raw_fd();
    // SAFETY: isatty only inspects the descriptor.
    let tty = unsafe { libc::isatty(stdin) } == 1;
    Console {
        input: Some(stdin),
        output: Box::new(Unbuffered(std::io::stdout())),
        error_output: None,
        escapes: tty,
        eof_byte: None,
        hold_input_until_ready: false,
    }
}
