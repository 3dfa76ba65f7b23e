//! A built VM ([`Vmm`], made by [`Vmm::build`](crate::builder)) and how it runs: vCPU threads,
//! one worker thread per virtio device, and the control event loop (signals, console input,
//! the exit event) on the calling thread, until the guest powers off, a vCPU fails, a thread
//! panics, or a signal arrives.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::VmFd;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::Killable;

use crate::api::http::Response;
use crate::api::server::ApiServer;
use crate::api::{Command, Controller, InstanceInfo, VmState};
use crate::arch::x86_64::mptable;
use crate::boot;
use crate::bus::{lock, BusError};
use crate::config::ConfigError;
use crate::devices::legacy::console_out::{self, ConsoleOutput};
use crate::devices::manager::Devices;
use crate::devices::virtio::block::DiskError;
use crate::devices::virtio::mmio::TransportError;
use crate::devices::virtio::net::TapError;
use crate::devices::virtio::worker::{self, WorkerThread};
use crate::event_loop::{ConsoleInput, Control};
use crate::exit::ExitReason;
use crate::kvm::KvmError;
use crate::sandbox::seccomp::{Filters, SeccompError, SeccompLevel, ThreadKind};
use crate::snapshot::{self, Machine};
use crate::vstate::memory::MemoryError;
use crate::vstate::vcpu::{self, VcpuContext, VcpuError};
use crate::vstate::vm::VmError;

pub use crate::builder::{max_vcpus, DiskSizes, Inputs, RestoreInputs};

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
    #[error("cannot write the MP table")]
    Mptable(#[from] mptable::MptableError),
    #[error("cannot write the ACPI tables")]
    Acpi(#[from] crate::arch::x86_64::acpi::AcpiError),
    #[error("KVM_GET_SUPPORTED_CPUID failed")]
    Cpuid(#[source] kvm_ioctls::Error),
    #[error("registering the interrupt for {0} failed")]
    Irq(&'static str, #[source] kvm_ioctls::Error),
    #[error("placing a device on the bus failed")]
    Bus(#[from] BusError),
    #[error("setting up the event loop failed: {0}")]
    EventLoop(String),
    #[error("{0}")]
    Io(&'static str, #[source] std::io::Error),
    // DiskError's message starts with the path: "--disk PATH: what was wrong".
    #[error("{0} {1}")]
    Disk(&'static str, DiskError),
    #[error("setting up a virtio device failed")]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Alloc(#[from] crate::alloc::Exhausted),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error("a virtio device has more queues than KVM can number")]
    TooManyQueues,
    #[error("--net")]
    Tap(#[from] TapError),
    #[error("the snapshot cannot be restored")]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error("registering a virtio queue notification with KVM (KVM_IOEVENTFD) failed")]
    IoEvent(#[source] kvm_ioctls::Error),
    #[error(transparent)]
    Fs(#[from] crate::devices::virtio::fs::FsError),
    #[error(transparent)]
    Vsock(#[from] crate::devices::virtio::vsock::VsockError),
}

/// Where the console's bytes come from and go to.
pub struct Console {
    pub input: Option<std::os::fd::RawFd>,
    /// COM1's output (the guest's ttyS0), written by a thread of its own (see `console_out`).
    pub output: std::os::fd::OwnedFd,
    /// A second UART (COM2, the guest's ttyS1) writing here: the OCI workload's stderr.
    pub error_output: Option<std::os::fd::OwnedFd>,
    /// After this many bytes of console output (both UARTs together), the rest is dropped.
    pub limit: Option<u64>,
    /// Interactive terminal: Ctrl-A x quits.
    pub escapes: bool,
    /// Sent to the guest when the input ends (^D lets a guest tty in canonical mode see EOF).
    pub eof_byte: Option<u8>,
    /// Hold input until the guest signals that its console is ready (port 0x502).
    pub hold_input_until_ready: bool,
}

/// A VM ready to run. Field order matters for drop: vCPUs, devices and the VM go before guest
/// memory.
pub struct Vmm {
    pub(crate) vcpus: Vec<(kvm_ioctls::VcpuFd, u8)>,
    pub(crate) ctx: Arc<VcpuContext>,
    /// Every device, by name and by address.
    pub(crate) devices: Devices,
    pub(crate) console_input: Option<std::os::fd::RawFd>,
    pub(crate) escapes: bool,
    pub(crate) eof_byte: Option<u8>,
    pub(crate) signals: std::os::fd::OwnedFd,
    /// The console outputs' writers, flushed when the VM ends.
    pub(crate) console_outputs: Vec<ConsoleOutput>,
    pub(crate) console_limit: Option<u64>,
    /// The control API's listening socket, if any (see [`Vmm::serve_api`]).
    pub(crate) api: Option<std::os::unix::net::UnixListener>,
    /// Where to write the snapshot the guest asks for on its warm-ready port, if anywhere
    /// (see [`Vmm::snapshot_when_ready`]).
    pub(crate) warm_snapshot: Option<SnapshotFiles>,
    /// What a snapshot records of the machine, and the MSRs it saves.
    pub(crate) machine: Machine,
    /// The shares' backends: watched while the VM runs, stopped after it (see
    /// [`ShareWatch`](crate::builder::ShareWatch)).
    pub(crate) shares: Vec<crate::builder::ShareWatch>,
    pub(crate) msr_list: Arc<Vec<u32>>,
    pub(crate) cpuids: crate::builder::Cpuids,
    pub(crate) _vm: Arc<VmFd>,
    pub(crate) _mem: GuestMemoryMmap,
}

impl Vmm {
    /// The VM's devices (state, counters; snapshots walk them).
    pub fn devices(&self) -> &Devices {
        &self.devices
    }

    /// Serves the control API on `listener` while the VM runs.
    pub fn serve_api(&mut self, listener: std::os::unix::net::UnixListener) {
        self.api = Some(listener);
    }

    /// When the guest writes its warm-ready port (flint's OCI init, booted to wait for a
    /// workload), snapshots the VM into these files and ends it (`ExitReason::Snapshotted`).
    pub fn snapshot_when_ready(&mut self, files: SnapshotFiles) {
        self.warm_snapshot = Some(files);
    }

    /// Shared handles on what a snapshot reads.
    fn snapshot_source(&self) -> snapshot::create::Source {
        snapshot::create::Source {
            ctx: self.ctx.clone(),
            vm: self._vm.clone(),
            mem: self._mem.clone(),
            machine: self.machine.clone(),
            msr_list: self.msr_list.clone(),
            cpuids: self.cpuids.clone(),
            serial: self.devices.serial.clone(),
            serial2: self.devices.serial2.clone(),
            i8042: self.devices.i8042.clone(),
            cmos: self.devices.cmos.clone(),
            virtio: self
                .devices
                .virtio
                .iter()
                .map(|v| (v.transport.clone(), v.queues.clone()))
                .collect(),
        }
    }

    /// Runs the VM to its end and returns why it ended. Every flint thread runs under its
    /// seccomp filter at `seccomp` from before the guest can make it do anything.
    pub fn run(mut self, seccomp: SeccompLevel) -> Result<ExitReason, VmmError> {
        vcpu::install_kick_handler()?;
        let filters = Filters::new(seccomp)?;
        let mut em = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new()
            .map_err(|e| VmmError::EventLoop(format!("{e:?}")))?;
        let signals = self
            .signals
            .try_clone()
            .map_err(|e| VmmError::Io("dup", e))?;
        // The console's terminal size, for the guest's size port: read now and on SIGWINCH.
        let console_size = self.console_input.and_then(|fd| {
            let now = crate::event_loop::terminal_size(fd)?;
            let size = crate::bus::lock(&self.devices.guest_ports).console_size();
            size.store(now, std::sync::atomic::Ordering::Relaxed);
            Some((fd, size))
        });
        em.add_subscriber(Arc::new(Mutex::new(Control {
            exit: self.ctx.exit.clone(),
            signals,
            power_button: self.devices.power_button.clone(),
            console_size,
        })));
        if let Some(listener) = self.api.take() {
            let controller = VmController {
                power_button: self.devices.power_button.clone(),
                snapshot: self.snapshot_source(),
            };
            em.add_subscriber(Arc::new(Mutex::new(ApiServer::new(listener, controller))));
        }
        if let Some(files) = self.warm_snapshot.take() {
            let ready = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
                .map_err(|e| VmmError::Io("eventfd", e))?;
            let signal = ready.try_clone().map_err(|e| VmmError::Io("eventfd", e))?;
            lock(&self.devices.guest_ports).on_warm_ready(signal);
            em.add_subscriber(Arc::new(Mutex::new(WarmSnapshot {
                ready,
                files: Some(files),
                source: self.snapshot_source(),
            })));
        }
        if !self.shares.is_empty() {
            em.add_subscriber(Arc::new(Mutex::new(BackendWatch {
                sockets: self
                    .shares
                    .iter()
                    .map(|s| (s.socket.as_raw_fd(), s.tag.clone()))
                    .collect(),
                exit: self.ctx.exit.clone(),
            })));
        }
        let input = self.console_input.map(|fd| {
            let sub = Arc::new(Mutex::new(ConsoleInput {
                input: fd,
                serial: self.devices.serial.clone(),
                exit: self.ctx.exit.clone(),
                power_button: self.devices.power_button.clone(),
                escapes: self.escapes,
                eof_byte: self.eof_byte,
                after_escape: false,
                watching: false,
            }));
            let id = em.add_subscriber(sub.clone());
            (sub, id)
        });

        // Device workers before vCPUs: a driver may notify a queue as soon as the guest runs.
        let mut workers: Vec<WorkerThread> = Vec::new();
        for slot in &self.devices.virtio {
            let started = worker::spawn(
                &slot.name,
                slot.queues.clone(),
                &slot.queue_evts,
                self.ctx.exit.clone(),
                filters.clone(),
                slot.worker,
            );
            match started {
                Ok(w) => workers.push(w),
                Err(e) => {
                    stop_workers(workers);
                    return Err(VmmError::Io("starting a device worker thread", e));
                }
            }
        }
        // The console writers started at build time; they take their filter now, before any
        // guest output reaches them.
        for out in &self.console_outputs {
            out.install_filters(&filters);
        }
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        let vcpus = std::mem::take(&mut self.vcpus);
        for (fd, index) in vcpus {
            match vcpu::spawn(fd, index, self.ctx.clone(), filters.clone()) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    self.stop_vcpus(threads);
                    stop_workers(workers);
                    return Err(e.into());
                }
            }
        }

        // The main thread's own filter, now that it has started every thread.
        if let Err(e) = filters.apply(ThreadKind::Main, "main") {
            self.stop_vcpus(threads);
            stop_workers(workers);
            return Err(e.into());
        }
        while self.ctx.exit.reason().is_none() {
            let exit = &self.ctx.exit;
            let step = crate::panic::guard(|| {
                // The timeout lets paused console input resume once the guest drains it.
                if let Err(e) = em.run_with_timeout(100) {
                    exit.request(ExitReason::VcpuFailure(format!("event loop failed: {e:?}")));
                }
                if let Some((sub, id)) = &input {
                    if let Ok(mut ops) = em.event_ops(*id) {
                        lock(sub).maybe_resume(&mut ops);
                    }
                }
                crate::panic::test_point("event-loop");
            });
            if let Err(what) = step {
                exit.request(ExitReason::InternalError(what));
            }
        }
        self.stop_vcpus(threads);
        stop_workers(workers);
        self.flush_console();
        // Every path above set a reason before leaving the loop.
        Ok(self.ctx.exit.reason().unwrap_or(ExitReason::Shutdown))
    }

    /// Flushes the console outputs (a bounded wait) and says what was dropped.
    fn flush_console(&mut self) {
        let mut dropped = console_out::Dropped::default();
        for out in std::mem::take(&mut self.console_outputs) {
            dropped.add(out.finish());
        }
        console_out::report_dropped(dropped, self.console_limit);
    }

    /// Stops every vCPU thread: sets the stop flag and kicks them out of KVM_RUN until they
    /// leave (a kick can land just before a thread re-enters KVM_RUN, so it repeats).
    fn stop_vcpus(&self, threads: Vec<JoinHandle<()>>) {
        self.ctx.stop.store(true, Ordering::Release);
        self.ctx.pause.stop();
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

/// The two files a snapshot is written into.
pub struct SnapshotFiles {
    pub state: std::fs::File,
    pub memory: std::fs::File,
}

/// Takes the warm snapshot when the guest says it is ready, and ends the VM.
struct WarmSnapshot {
    ready: EventFd,
    /// Taken by the first signal: one snapshot.
    files: Option<SnapshotFiles>,
    source: snapshot::create::Source,
}

impl MutEventSubscriber for WarmSnapshot {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.ready, EventSet::IN)) {
            self.source
                .ctx
                .exit
                .request(ExitReason::VcpuFailure(format!(
                    "cannot watch for the guest's warm-ready signal: {e:?}"
                )));
        }
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.ready.read();
        let Some(files) = self.files.take() else {
            return;
        };
        let exit = &self.source.ctx.exit;
        match snapshot::create::create(
            &self.source,
            &files.state,
            &files.memory,
            true,
            PAUSE_TIMEOUT,
        ) {
            Ok(_) => exit.request(ExitReason::Snapshotted),
            Err(e) => exit.request(ExitReason::VcpuFailure(format!(
                "the warm snapshot failed: {}",
                crate::exit::error_chain(&e)
            ))),
        }
    }
}

/// Ends the VM when a share's backend goes away (virtiofsd exited or was killed): its guest
/// file system would hang on every request from then on.
struct BackendWatch {
    /// Each backend's socket (owned by the Vmm's shares) and the share's tag.
    sockets: Vec<(std::os::fd::RawFd, String)>,
    exit: Arc<crate::exit::ExitEvent>,
}

impl MutEventSubscriber for BackendWatch {
    fn init(&mut self, ops: &mut EventOps) {
        for (i, (fd, tag)) in self.sockets.iter().enumerate() {
            let data = u32::try_from(i).unwrap_or(u32::MAX);
            // Hang-ups only: the socket's replies are read by the device, not here.
            if let Err(e) = ops.add(Events::with_data_raw(*fd, data, EventSet::READ_HANG_UP)) {
                self.exit.request(ExitReason::DeviceFailure(format!(
                    "cannot watch the backend of share '{tag}': {e:?}"
                )));
            }
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let Some((fd, tag)) = self.sockets.get(events.data() as usize) else {
            return;
        };
        let _ = ops.remove(Events::with_data_raw(
            *fd,
            events.data(),
            EventSet::READ_HANG_UP,
        ));
        self.exit.request(ExitReason::DeviceFailure(format!(
            "the virtio-fs backend (virtiofsd) of share '{tag}' went away; the VM is stopped \
             (its guest file system could not answer again)"
        )));
    }
}

/// How long a pause may wait for every vCPU to leave the guest.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the control API drives.
struct VmController {
    power_button: Option<Arc<crate::devices::legacy::acpi_power::PowerButton>>,
    snapshot: snapshot::create::Source,
}

impl VmController {
    fn state(&self) -> VmState {
        if self.snapshot.ctx.pause.is_paused() {
            VmState::Paused
        } else {
            VmState::Running
        }
    }
}

impl Controller for VmController {
    fn handle(&mut self, command: Command) -> Response {
        match command {
            Command::Info => Response::json(
                200,
                &InstanceInfo {
                    app_name: "flint".into(),
                    state: self.state(),
                    vmm_version: env!("CARGO_PKG_VERSION").into(),
                },
            ),
            Command::Snapshot {
                stop,
                state,
                memory,
            } => {
                if let Err(why) = check_writable(&state).and_then(|_| check_writable(&memory)) {
                    return Response::error(400, why);
                }
                match snapshot::create::create(&self.snapshot, &state, &memory, stop, PAUSE_TIMEOUT)
                {
                    Ok(summary) => {
                        if stop {
                            self.snapshot.ctx.exit.request(ExitReason::Snapshotted);
                        }
                        Response::json(200, &summary)
                    }
                    Err(e) => Response::error(
                        500,
                        format!("the snapshot failed: {}", crate::exit::error_chain(&e)),
                    ),
                }
            }
            Command::Pause => match self.snapshot.ctx.pause.pause(PAUSE_TIMEOUT, vcpu::kick) {
                Ok(()) => Response::no_content(),
                Err(e) => Response::error(503, format!("cannot pause: {e}")),
            },
            Command::Resume => {
                self.snapshot.ctx.pause.resume();
                Response::no_content()
            }
            Command::Shutdown => {
                use crate::event_loop::{power_button_press, PressError};
                match power_button_press(self.power_button.as_deref()) {
                    Ok(()) => Response::no_content(),
                    Err(e @ PressError::NoButton) => Response::error(400, e.to_string()),
                    Err(e @ PressError::Failed(_)) => Response::error(500, e.to_string()),
                }
            }
        }
    }
}

/// A file a client sent for flint to write into must be a regular file open for writing: a
/// pipe or a device could block the control loop or mean something else entirely.
fn check_writable(file: &std::fs::File) -> Result<(), String> {
    // SAFETY: fstat fills `st` for a descriptor this process owns.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(file.as_raw_fd(), &mut st) } != 0 {
        return Err(format!(
            "cannot inspect a file sent: {}",
            std::io::Error::last_os_error()
        ));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err("the files sent for a snapshot must be regular files".into());
    }
    // SAFETY: F_GETFL only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    if flags < 0
        || flags & libc::O_ACCMODE != libc::O_RDWR && flags & libc::O_ACCMODE != libc::O_WRONLY
    {
        return Err("the files sent for a snapshot must be open for writing".into());
    }
    Ok(())
}

/// Stops the device workers (each finishes the request it is serving first).
fn stop_workers(workers: Vec<WorkerThread>) {
    for w in workers {
        w.stop();
    }
}

/// A console on this process's stdin/stdout.
pub fn stdio_console() -> std::io::Result<Console> {
    use std::os::fd::AsFd;
    let stdin = std::io::stdin().as_raw_fd();
    // SAFETY: isatty only inspects the descriptor.
    let tty = unsafe { libc::isatty(stdin) } == 1;
    Ok(Console {
        input: Some(stdin),
        output: std::io::stdout().as_fd().try_clone_to_owned()?,
        error_output: None,
        limit: None,
        escapes: tty,
        eof_byte: None,
        hold_input_until_ready: false,
    })
}
