//! seccomp filters: one allow-list per kind of flint thread, installed by each thread once its
//! setup is done and before the guest can make it do anything (the vCPUs before their first
//! `KVM_RUN`, device workers before their first queue, the main thread once every thread is
//! started). Each list is what that thread's code calls from then on, measured with strace on
//! every test scenario, with a reason for each; `ioctl` is limited to the request numbers the
//! thread uses, and memory may never be mapped executable. `no_new_privs` comes with it.
//!
//! A syscall outside the list ([`SeccompLevel::Kill`], the default) raises SIGSYS; the handler
//! prints one line naming the thread and the syscall and ends flint with status 159 (128 +
//! SIGSYS). [`SeccompLevel::Log`] lets it through and the kernel logs it (for finding what a
//! new path needs); [`SeccompLevel::Off`] installs nothing.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

include!(concat!(env!("OUT_DIR"), "/syscall_names.rs"));

/// What to do about a syscall outside a thread's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeccompLevel {
    /// No filter.
    Off,
    /// Allow it, and let the kernel log it.
    Log,
    /// End flint with a message naming the thread and the syscall.
    #[default]
    Kill,
}

impl SeccompLevel {
    /// The level as `--seccomp` takes it.
    pub fn name(self) -> &'static str {
        match self {
            SeccompLevel::Off => "off",
            SeccompLevel::Log => "log",
            SeccompLevel::Kill => "kill",
        }
    }
}

impl std::str::FromStr for SeccompLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(SeccompLevel::Off),
            "log" => Ok(SeccompLevel::Log),
            "kill" => Ok(SeccompLevel::Kill),
            other => Err(format!(
                "'{other}' is not a seccomp level (off, log or kill)"
            )),
        }
    }
}

/// The kinds of flint threads, each with its own list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// The main thread once the VM runs: the control event loop, then shutdown.
    Main,
    /// A vCPU: `KVM_RUN` and the device registers it reaches.
    Vcpu,
    /// A virtio device's worker: its queues, disk or TAP I/O, interrupts.
    DeviceWorker,
    /// The vsock device's worker: a device worker's list, and the host's Unix sockets (the
    /// only thread that may make and connect a socket).
    VsockWorker,
    /// A console writer: the guest's console output to stdout or stderr.
    ConsoleWriter,
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the seccomp filter for the {0:?} threads failed")]
    Build(ThreadKind, #[source] seccompiler::BackendError),
    #[error("installing the seccomp filter in thread '{0}' failed")]
    Install(String, #[source] seccompiler::Error),
    #[error("installing the SIGSYS handler failed")]
    Handler(#[source] std::io::Error),
}

/// The compiled filters, one per thread kind (empty when seccomp is off).
#[derive(Clone)]
pub struct Filters {
    level: SeccompLevel,
    main: Arc<BpfProgram>,
    vcpu: Arc<BpfProgram>,
    worker: Arc<BpfProgram>,
    vsock: Arc<BpfProgram>,
    console: Arc<BpfProgram>,
    /// Installed beside every thread's list: opening a file fails with EACCES (see
    /// [`FILE_OPENS`]).
    no_files: Arc<BpfProgram>,
}

impl Filters {
    /// Compiles every thread kind's filter for `level` and, unless it is off, installs the
    /// SIGSYS handler that reports a blocked syscall.
    pub fn new(level: SeccompLevel) -> Result<Filters, SeccompError> {
        if level == SeccompLevel::Off {
            let empty = Arc::new(BpfProgram::new());
            return Ok(Filters {
                level,
                main: empty.clone(),
                vcpu: empty.clone(),
                worker: empty.clone(),
                vsock: empty.clone(),
                console: empty.clone(),
                no_files: empty,
            });
        }
        install_sigsys_handler()?;
        Ok(Filters {
            level,
            main: Arc::new(compile(ThreadKind::Main, level)?),
            vcpu: Arc::new(compile(ThreadKind::Vcpu, level)?),
            worker: Arc::new(compile(ThreadKind::DeviceWorker, level)?),
            vsock: Arc::new(compile(ThreadKind::VsockWorker, level)?),
            console: Arc::new(compile(ThreadKind::ConsoleWriter, level)?),
            no_files: Arc::new(no_files().map_err(|e| SeccompError::Build(ThreadKind::Main, e))?),
        })
    }

    pub fn level(&self) -> SeccompLevel {
        self.level
    }

    /// Installs `kind`'s filter in the calling thread, which the SIGSYS report calls `name`.
    pub fn apply(&self, kind: ThreadKind, name: &str) -> Result<(), SeccompError> {
        if self.level == SeccompLevel::Off {
            return Ok(());
        }
        set_thread_label(name);
        let program = match kind {
            ThreadKind::Main => &self.main,
            ThreadKind::Vcpu => &self.vcpu,
            ThreadKind::DeviceWorker => &self.worker,
            ThreadKind::VsockWorker => &self.vsock,
            ThreadKind::ConsoleWriter => &self.console,
        };
        let install = |p: &BpfProgram| {
            seccompiler::apply_filter(p).map_err(|e| SeccompError::Install(name.to_string(), e))
        };
        install(&self.no_files)?;
        install(program)
    }
}

/// ioctl request numbers flint's threads make once filtered.
mod ioctls {
    use kvm_bindings::{
        kvm_clock_data, kvm_debugregs, kvm_irq_level, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
        kvm_msrs, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
    };
    use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr, ioctl_iowr_nr};

    const KVMIO: u32 = 0xae;
    ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
    ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
    ioctl_iow_nr!(KVM_IRQ_LINE, KVMIO, 0x61, kvm_irq_level);
    // What a snapshot reads: the VM's (control thread) ...
    ioctl_iowr_nr!(KVM_GET_IRQCHIP, KVMIO, 0x62, kvm_irqchip);
    ioctl_ior_nr!(KVM_GET_CLOCK, KVMIO, 0x7c, kvm_clock_data);
    ioctl_ior_nr!(KVM_GET_PIT2, KVMIO, 0x9f, kvm_pit_state2);
    // ... and each vCPU's (its own thread, parked).
    ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);
    ioctl_iowr_nr!(KVM_GET_MSRS, KVMIO, 0x88, kvm_msrs);
    ioctl_ior_nr!(KVM_GET_LAPIC, KVMIO, 0x8e, kvm_lapic_state);
    ioctl_ior_nr!(KVM_GET_MP_STATE, KVMIO, 0x98, kvm_mp_state);
    ioctl_ior_nr!(KVM_GET_VCPU_EVENTS, KVMIO, 0x9f, kvm_vcpu_events);
    ioctl_ior_nr!(KVM_GET_DEBUGREGS, KVMIO, 0xa1, kvm_debugregs);
    ioctl_io_nr!(KVM_GET_TSC_KHZ, KVMIO, 0xa3);
    ioctl_ior_nr!(KVM_GET_XSAVE, KVMIO, 0xa4, kvm_xsave);
    ioctl_ior_nr!(KVM_GET_XCRS, KVMIO, 0xa6, kvm_xcrs);
    /// The offloads a virtio-net driver accepted, told to the TAP when the driver activates
    /// the device (on the vCPU that wrote DRIVER_OK).
    pub const TUNSETOFFLOAD: u64 = crate::devices::virtio::net::tap::TUNSETOFFLOAD;
    /// Terminal modes (the main thread restores the user's terminal at the end).
    pub const TCGETS: u64 = 0x5401;
    pub const TCSETS: u64 = 0x5402;
    pub const TCSETSW: u64 = 0x5403;
    pub const TCSETSF: u64 = 0x5404;
    /// The console terminal's size (SIGWINCH), for the guest.
    pub const TIOCGWINSZ: u64 = 0x5413;
}

/// A syscall allowed whatever its arguments, or only when one of `rules` matches.
type Entry = (i64, Vec<SeccompRule>);

fn any(nr: i64) -> Entry {
    (nr, Vec::new())
}

/// `nr` when argument `arg` is one of `values`.
fn arg_in(nr: i64, arg: u8, values: &[u64]) -> Result<Entry, seccompiler::BackendError> {
    let rules = values
        .iter()
        .map(|&v| SeccompRule::new(vec![SeccompCondition::new(arg, Len::Dword, Op::Eq, v)?]))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((nr, rules))
}

/// `nr` when every `(arg, mask, value)` holds: argument `arg`, masked, is `value`.
fn args_masked(nr: i64, conds: &[(u8, u64, u64)]) -> Result<Entry, seccompiler::BackendError> {
    let conds = conds
        .iter()
        .map(|&(arg, mask, value)| {
            SeccompCondition::new(arg, Len::Dword, Op::MaskedEq(mask), value)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((nr, vec![SeccompRule::new(conds)?]))
}

/// `nr` when argument `arg` has none of the bits in `mask`.
fn arg_without(nr: i64, arg: u8, mask: u64) -> Result<Entry, seccompiler::BackendError> {
    let cond = SeccompCondition::new(arg, Len::Qword, Op::MaskedEq(mask), 0)?;
    Ok((nr, vec![SeccompRule::new(vec![cond])?]))
}

/// What every flint thread does once filtered, whatever its kind.
fn common() -> Result<Vec<Entry>, seccompiler::BackendError> {
    let no_exec = u64::try_from(libc::PROT_EXEC).unwrap_or(u64::MAX);
    Ok(vec![
        // The allocator (malloc arenas, thread stacks at thread exit); never executable memory.
        arg_without(libc::SYS_mmap, 2, no_exec)?,
        arg_without(libc::SYS_mprotect, 2, no_exec)?,
        any(libc::SYS_munmap),
        any(libc::SYS_mremap),
        any(libc::SYS_madvise),
        any(libc::SYS_brk),
        // Locks, and a thread ending.
        any(libc::SYS_futex),
        any(libc::SYS_sched_yield),
        any(libc::SYS_exit),
        any(libc::SYS_exit_group),
        any(libc::SYS_rt_sigprocmask),
        any(libc::SYS_rt_sigreturn),
        // The kernel resumes a wait or sleep that a stop (SIGSTOP/SIGCONT: job control, a
        // debugger, the startup benchmark measuring flint paused) interrupted.
        any(libc::SYS_restart_syscall),
        any(libc::SYS_sigaltstack),
        any(libc::SYS_gettid),
        // Time (when the vDSO is not used): the boot timer, the RTC, timeouts.
        any(libc::SYS_clock_gettime),
        // Messages on stderr, eventfd signals (interrupts, the exit event), console output.
        any(libc::SYS_write),
        // Dropping a descriptor (Rust's debug builds check it with F_GETFD first).
        any(libc::SYS_close),
        arg_in(
            libc::SYS_fcntl,
            1,
            &[libc::F_GETFD, libc::F_GETFL, libc::F_SETFL].map(|c| u64::try_from(c).unwrap_or(0)),
        )?,
    ])
}

/// Each thread kind's own list, on top of [`common`].
fn own(kind: ThreadKind) -> Result<Vec<Entry>, seccompiler::BackendError> {
    use ioctls::*;
    Ok(match kind {
        ThreadKind::Main => vec![
            // The control event loop: console input, the signalfd, the exit eventfd.
            any(libc::SYS_epoll_wait),
            any(libc::SYS_epoll_pwait),
            any(libc::SYS_epoll_ctl),
            any(libc::SYS_read),
            // Kicking vCPUs out of KVM_RUN at the end (pthread_kill), and waiting for them.
            any(libc::SYS_getpid),
            any(libc::SYS_tgkill),
            any(libc::SYS_clock_nanosleep),
            any(libc::SYS_nanosleep),
            // The control API (--api-sock): accepting a connection on the socket flint bound
            // before it was confined, and reading a request with the files a client sends
            // beside it (SCM_RIGHTS; they are only written into, never opened by path).
            any(libc::SYS_accept4),
            any(libc::SYS_recvmsg),
            // Waiting at exit for the process that removes the API socket's file, and for the
            // virtiofsd processes of --fs shares, stopped through their pidfds (which signal
            // only the process flint started, never another).
            any(libc::SYS_wait4),
            any(libc::SYS_pidfd_send_signal),
            // A snapshot (PUT /snapshot/create): checking that the files a client sent are
            // regular files (fstat, which glibc makes newfstatat on the descriptor itself), and
            // writing them durably.
            arg_in(
                libc::SYS_newfstatat,
                3,
                &[u64::try_from(libc::AT_EMPTY_PATH).unwrap_or(0)],
            )?,
            any(libc::SYS_ftruncate),
            any(libc::SYS_pwrite64),
            // Which guest pages were ever touched (only those are written).
            any(libc::SYS_mincore),
            any(libc::SYS_fsync),
            // Restoring the user's terminal, and reading its size on SIGWINCH; pressing the
            // ACPI power button (SIGPWR, Ctrl-A p) where KVM has no irqfd; a snapshot's VM
            // state (interrupt controllers, PIT, clock).
            arg_in(
                libc::SYS_ioctl,
                1,
                &[
                    TIOCGWINSZ,
                    TCGETS,
                    TCSETS,
                    TCSETSW,
                    TCSETSF,
                    KVM_IRQ_LINE(),
                    KVM_GET_IRQCHIP(),
                    KVM_GET_PIT2(),
                    KVM_GET_CLOCK(),
                ],
            )?,
        ],
        ThreadKind::Vcpu => vec![
            // Running the guest; its registers for a failure message; the serial port's
            // interrupt where KVM has no irqfd; a NIC's offloads when its driver starts it;
            // the vCPU's state for a snapshot (read on its own thread while parked).
            arg_in(
                libc::SYS_ioctl,
                1,
                &[
                    KVM_RUN(),
                    KVM_GET_REGS(),
                    KVM_IRQ_LINE(),
                    TUNSETOFFLOAD,
                    KVM_GET_SREGS(),
                    KVM_GET_MSRS(),
                    KVM_GET_LAPIC(),
                    KVM_GET_MP_STATE(),
                    KVM_GET_VCPU_EVENTS(),
                    KVM_GET_DEBUGREGS(),
                    KVM_GET_TSC_KHZ(),
                    KVM_GET_XSAVE(),
                    KVM_GET_XCRS(),
                ],
            )?,
            // A virtio-fs driver starting or resetting its device: vhost-user messages to the
            // share's virtiofsd (the rings, the memory table with the guest RAM's memfd,
            // eventfds) and its answers, on the socket flint connected before confinement.
            any(libc::SYS_sendmsg),
            any(libc::SYS_recvmsg),
        ],
        ThreadKind::DeviceWorker => device_worker()?,
        ThreadKind::VsockWorker => {
            let unix = u64::try_from(libc::AF_UNIX).unwrap_or(u64::MAX);
            let stream = u64::try_from(libc::SOCK_STREAM).unwrap_or(u64::MAX);
            // SOCK_TYPE_MASK: the type without SOCK_NONBLOCK and SOCK_CLOEXEC.
            let type_mask = 0xf;
            let mut list = device_worker()?;
            list.extend([
                // Host clients of the vsock listener (bound before flint was confined).
                any(libc::SYS_accept4),
                // A guest connection to host port P: a Unix stream socket connected to
                // `<uds_path>_<P>`; no other family or type.
                args_masked(
                    libc::SYS_socket,
                    &[(0, u64::from(u32::MAX), unix), (1, type_mask, stream)],
                )?,
                any(libc::SYS_connect),
                // Guest data to a host socket (send with MSG_NOSIGNAL), and the guest's end
                // of stream passed on (shutdown SHUT_WR). Host data is read with read.
                any(libc::SYS_sendto),
                any(libc::SYS_shutdown),
                // Its timer for the connections' deadlines (made before confinement).
                any(libc::SYS_timerfd_settime),
            ]);
            list
        }
        // Writing (common) and waiting for bytes (futex, common) is all it does.
        ThreadKind::ConsoleWriter => Vec::new(),
    })
}

/// A device worker's list (and the base of the vsock worker's).
fn device_worker() -> Result<Vec<Entry>, seccompiler::BackendError> {
    use ioctls::*;
    Ok(vec![
        // Its event loop: queue eventfds, the TAP, the stop event (and the vsock device's
        // own epoll instance, read without waiting).
        any(libc::SYS_epoll_wait),
        any(libc::SYS_epoll_pwait),
        any(libc::SYS_epoll_ctl),
        any(libc::SYS_read),
        // Disk I/O: requests, flushes, discard and write-zeroes.
        any(libc::SYS_preadv),
        any(libc::SYS_pwritev),
        any(libc::SYS_pread64),
        any(libc::SYS_pwrite64),
        any(libc::SYS_fdatasync),
        any(libc::SYS_fsync),
        any(libc::SYS_fallocate),
        // Frames to and from the TAP.
        any(libc::SYS_readv),
        any(libc::SYS_writev),
        // The device's interrupt where KVM has no irqfd.
        arg_in(libc::SYS_ioctl, 1, &[KVM_IRQ_LINE()])?,
    ])
}

/// The system calls that open files. Every list lets them through to [`no_files`], which makes
/// them fail with EACCES: when filters stack, seccomp takes the strictest answer, and EACCES is
/// stricter than "allow" but milder than the SIGSYS a call outside the lists gets. Why not stop
/// flint instead: nothing in flint opens a file once its thread is set up, but glibc's allocator
/// reads /proc/sys/vm/overcommit_memory the first time a thread's heap shrinks (which can be a
/// vCPU freeing a device's buffers at a reset, or any thread at its exit, when glibc has blocked
/// every signal so a SIGSYS could only kill without a word), and it copes with the open failing.
const FILE_OPENS: [i64; 3] = [libc::SYS_open, libc::SYS_openat, libc::SYS_openat2];

/// The filter that refuses to open files (see [`FILE_OPENS`]).
fn no_files() -> Result<BpfProgram, seccompiler::BackendError> {
    let rules = FILE_OPENS.iter().map(|&nr| any(nr)).collect();
    let eacces = u32::try_from(libc::EACCES).unwrap_or(1);
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(eacces),
        TargetArch::x86_64,
    )?
    .try_into()
}

fn compile(kind: ThreadKind, level: SeccompLevel) -> Result<BpfProgram, SeccompError> {
    let err = |e| SeccompError::Build(kind, e);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (nr, r) in common()
        .map_err(err)?
        .into_iter()
        .chain(own(kind).map_err(err)?)
    {
        rules.entry(nr).or_default().extend(r);
    }
    // Answered by `no_files` (EACCES), never by a SIGSYS.
    for nr in FILE_OPENS {
        rules.insert(nr, Vec::new());
    }
    let mismatch = match level {
        SeccompLevel::Log => SeccompAction::Log,
        _ => SeccompAction::Trap,
    };
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)
        .map_err(err)?;
    filter.try_into().map_err(err)
}

/// The name of syscall `nr`, if the build knew it.
pub fn syscall_name(nr: u32) -> Option<&'static str> {
    SYSCALL_NAMES
        .binary_search_by_key(&nr, |&(n, _)| n)
        .ok()
        .map(|i| SYSCALL_NAMES[i].1)
}

thread_local! {
    /// The thread's name for the SIGSYS report (read there without allocating).
    static LABEL: Cell<([u8; 32], usize)> = const { Cell::new(([0; 32], 0)) };
}

fn set_thread_label(name: &str) {
    let mut buf = [0u8; 32];
    let n = name.len().min(buf.len());
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    LABEL.with(|l| l.set((buf, n)));
}

/// A fixed buffer that a signal handler can format into without allocating.
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        let room = self.buf.len() - self.len;
        let n = bytes.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_hex(&mut self, mut v: usize) {
        let mut digits = [0u8; 16];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[v & 0xf];
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        self.push(b"0x");
        self.push(&digits[i..]);
    }

    fn push_number(&mut self, mut v: u32) {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        loop {
            i -= 1;
            // A decimal digit: v % 10 < 10 fits in a u8.
            digits[i] = b'0' + u8::try_from(v % 10).unwrap_or(0);
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

/// The exit status after a blocked syscall: as if SIGSYS had killed flint.
pub const BLOCKED_SYSCALL_STATUS: i32 = 128 + libc::SIGSYS;

/// The message for a blocked syscall `nr` in thread `label`; `code` holds where in flint's
/// code it was made and return addresses found on the stack, as offsets into the binary (for
/// `addr2line -e flint`), when known.
fn blocked_message(label: &[u8], nr: u32, code: &[usize]) -> Line {
    let mut line = Line {
        buf: [0; 512],
        len: 0,
    };
    line.push(b"flint: error: seccomp: thread '");
    line.push(label);
    line.push(b"' made a system call flint does not allow: ");
    match syscall_name(nr) {
        Some(name) => line.push(name.as_bytes()),
        None => line.push(b"syscall"),
    }
    line.push(b" (");
    line.push_number(nr);
    line.push(b")");
    for (i, &off) in code.iter().enumerate() {
        line.push(if i == 0 { b" at flint+" } else { b" < flint+" });
        line.push_hex(off);
    }
    line.push(b"; stopping (--seccomp log lets it through and logs it)\n");
    line
}

/// Where flint is loaded and where its code is ([start, end)), for the report's offsets.
static BASE: AtomicUsize = AtomicUsize::new(0);
static CODE_START: AtomicUsize = AtomicUsize::new(0);
static CODE_END: AtomicUsize = AtomicUsize::new(0);

extern "C" fn find_code(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    _data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid info whose dlpi_phdr has dlpi_phnum headers; the
    // first object it reports is the executable.
    unsafe {
        let info = &*info;
        let base = usize::try_from(info.dlpi_addr).unwrap_or(0);
        BASE.store(base, Ordering::Relaxed);
        for i in 0..usize::from(info.dlpi_phnum) {
            let ph = &*info.dlpi_phdr.add(i);
            if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 {
                let start = base.saturating_add(usize::try_from(ph.p_vaddr).unwrap_or(0));
                let end = start.saturating_add(usize::try_from(ph.p_memsz).unwrap_or(0));
                CODE_START.store(start, Ordering::Relaxed);
                CODE_END.store(end, Ordering::Relaxed);
            }
        }
    }
    1 // the executable is enough
}

/// The offset of `addr` from flint's load base, if it is in flint's code.
fn code_offset(addr: usize) -> Option<usize> {
    let code = CODE_START.load(Ordering::Relaxed)..CODE_END.load(Ordering::Relaxed);
    code.contains(&addr)
        .then(|| addr - BASE.load(Ordering::Relaxed))
}

extern "C" fn on_sigsys(_signo: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // For SIGSYS, the kernel puts the syscall number in the siginfo union's `_syscall` field,
    // 8 bytes into the union (after `_call_addr`), which starts at byte 16.
    // SAFETY: the kernel passes a valid siginfo_t for this signal; the read stays inside it.
    let nr = unsafe {
        info.cast::<u8>()
            .add(24)
            .cast::<libc::c_int>()
            .read_unaligned()
    };
    // Where the call was made, and return addresses into flint's code among the stack's top
    // 512 words (a thread's stack is far larger than that beneath its deepest frames).
    // SAFETY: the kernel passes the interrupted thread's ucontext; these are its registers.
    let (rip, rsp) = unsafe {
        let regs = &(*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs;
        let reg = |i: libc::c_int| usize::try_from(regs[i as usize]).unwrap_or(0);
        (reg(libc::REG_RIP), reg(libc::REG_RSP))
    };
    let mut code = [0usize; 12];
    let mut found = 0;
    let stack = (0..512).map(|i| {
        // SAFETY: reads the interrupted thread's stack above its stack pointer (see above).
        unsafe { (rsp as *const usize).add(i).read_volatile() }
    });
    for off in std::iter::once(rip).chain(stack).filter_map(code_offset) {
        if found == code.len() {
            break;
        }
        code[found] = off;
        found += 1;
    }
    let (buf, n) = LABEL.with(Cell::get);
    let nr = u32::try_from(nr).unwrap_or(u32::MAX);
    let line = blocked_message(&buf[..n], nr, &code[..found]);
    // SAFETY: write and _exit are async-signal-safe, on every thread's list, and take a
    // buffer we own.
    unsafe {
        libc::write(libc::STDERR_FILENO, line.buf.as_ptr().cast(), line.len);
        libc::_exit(BLOCKED_SYSCALL_STATUS);
    }
}

fn install_sigsys_handler() -> Result<(), SeccompError> {
    // SAFETY: the callback only reads what dl_iterate_phdr hands it.
    unsafe { libc::dl_iterate_phdr(Some(find_code), std::ptr::null_mut()) };
    // SAFETY: a zeroed sigaction is a valid starting point; the handler has the SA_SIGINFO
    // signature and only calls async-signal-safe functions.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_sigsys as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut act.sa_mask);
        if libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut()) != 0 {
            return Err(SeccompError::Handler(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::FromRawFd;

    #[test]
    fn names_syscalls_and_formats_the_report() {
        assert_eq!(syscall_name(0), Some("read"));
        assert_eq!(syscall_name(41), Some("socket"));
        let line = blocked_message(b"flint-vcpu0", 41, &[]);
        let text = std::str::from_utf8(&line.buf[..line.len]).unwrap();
        assert_eq!(
            text,
            "flint: error: seccomp: thread 'flint-vcpu0' made a system call flint does not \
             allow: socket (41); stopping (--seccomp log lets it through and logs it)\n"
        );
    }

    /// Runs `body` in a forked child under `kind`'s filter, with the child's stderr in a pipe;
    /// returns its exit status and what it wrote.
    fn in_filtered_child(kind: ThreadKind, body: fn()) -> (i32, String) {
        let filters = Filters::new(SeccompLevel::Kill).unwrap();
        let mut fds = [0; 2];
        // SAFETY: pipe fills the two-element array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only calls dup2, the filter's prctl/seccomp, `body` and _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: plain descriptor calls in the child.
            unsafe {
                libc::dup2(fds[1], libc::STDERR_FILENO);
                libc::close(fds[0]);
            }
            let code = match filters.apply(kind, "test-thread") {
                Ok(()) => {
                    body();
                    0
                }
                Err(_) => 99,
            };
            // SAFETY: ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut out = String::new();
        // SAFETY: the parent owns the read end; closing the write end lets the read finish.
        unsafe {
            libc::close(fds[1]);
            std::fs::File::from_raw_fd(fds[0])
                .read_to_string(&mut out)
                .unwrap();
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        (libc::WEXITSTATUS(status), out)
    }

    const ALL_KINDS: [ThreadKind; 5] = [
        ThreadKind::Main,
        ThreadKind::Vcpu,
        ThreadKind::DeviceWorker,
        ThreadKind::VsockWorker,
        ThreadKind::ConsoleWriter,
    ];

    fn allowed_then_socket() {
        let msg = b"allowed\n";
        // SAFETY: writes our buffer to stderr; then asks for a socket, which no list allows.
        unsafe {
            libc::write(libc::STDERR_FILENO, msg.as_ptr().cast(), msg.len());
            libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        }
    }

    #[test]
    fn each_thread_kind_is_stopped_by_a_syscall_outside_its_list() {
        for kind in ALL_KINDS {
            let (code, out) = in_filtered_child(kind, allowed_then_socket);
            assert_eq!(code, BLOCKED_SYSCALL_STATUS, "{kind:?}: {out}");
            assert!(out.starts_with("allowed\n"), "{kind:?}: {out}");
            assert!(
                out.contains("seccomp: thread 'test-thread' made a system call flint does not allow: socket (41) at flint+0x"),
                "{kind:?}: {out}"
            );
        }
    }

    fn unix_stream_socket() {
        // SAFETY: asks for a Unix stream socket (closed again), then a datagram one.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            let msg: &[u8] = if fd >= 0 {
                b"unix stream ok\n"
            } else {
                b"unix stream failed\n"
            };
            libc::write(libc::STDERR_FILENO, msg.as_ptr().cast(), msg.len());
            libc::close(fd);
            libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0);
        }
    }

    #[test]
    fn only_the_vsock_worker_makes_sockets_and_only_unix_streams() {
        let (code, out) = in_filtered_child(ThreadKind::VsockWorker, unix_stream_socket);
        assert_eq!(code, BLOCKED_SYSCALL_STATUS, "{out}");
        assert!(out.starts_with("unix stream ok\n"), "{out}");
        assert!(out.contains(": socket (41)"), "the datagram socket: {out}");
        let (code, out) = in_filtered_child(ThreadKind::DeviceWorker, unix_stream_socket);
        assert_eq!(code, BLOCKED_SYSCALL_STATUS, "{out}");
        assert!(!out.contains("unix stream ok"), "{out}");
    }

    fn exec_mapping() {
        // SAFETY: asks for an executable anonymous page, which no list allows.
        unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
        }
    }

    fn open_a_file_then_socket() {
        // SAFETY: opening a path we own as a C string; on the expected failure, errno says why.
        let (fd, errno) = unsafe {
            let fd = libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY);
            (fd, *libc::__errno_location())
        };
        let msg: &[u8] = if fd < 0 && errno == libc::EACCES {
            b"open refused with EACCES\n"
        } else {
            b"open was not refused\n"
        };
        // SAFETY: writes our buffer to stderr, then makes a call no list allows.
        unsafe {
            libc::write(libc::STDERR_FILENO, msg.as_ptr().cast(), msg.len());
            libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        }
    }

    #[test]
    fn opening_a_file_fails_with_eacces_and_flint_goes_on() {
        for kind in ALL_KINDS {
            let (code, out) = in_filtered_child(kind, open_a_file_then_socket);
            assert!(
                out.starts_with("open refused with EACCES\n"),
                "{kind:?}: {out}"
            );
            assert_eq!(code, BLOCKED_SYSCALL_STATUS, "{kind:?}: {out}");
        }
    }

    fn foreign_ioctl() {
        // SAFETY: TIOCSTI (pushing input into a terminal) on stdin; no list allows it.
        unsafe { libc::ioctl(0, libc::TIOCSTI, b"x".as_ptr()) };
    }

    #[test]
    fn arguments_are_filtered_too() {
        for kind in ALL_KINDS {
            let (code, out) = in_filtered_child(kind, exec_mapping);
            assert_eq!(code, BLOCKED_SYSCALL_STATUS, "{kind:?} mmap: {out}");
            assert!(out.contains(": mmap (9)"), "{out}");
            let (code, out) = in_filtered_child(kind, foreign_ioctl);
            assert_eq!(code, BLOCKED_SYSCALL_STATUS, "{kind:?} ioctl: {out}");
            assert!(out.contains(": ioctl (16)"), "{out}");
        }
    }

    #[test]
    fn levels_parse() {
        assert_eq!("kill".parse(), Ok(SeccompLevel::Kill));
        assert_eq!("off".parse(), Ok(SeccompLevel::Off));
        assert_eq!("log".parse(), Ok(SeccompLevel::Log));
        assert!("on".parse::<SeccompLevel>().is_err());
    }
}
