//! flint as an OCI runtime: runc's command line (`create`, `start`, `state`, `kill`, `delete`,
//! `list`, `features`), so that podman's conmon and containerd's runc shim run a container's
//! workload in a microVM. The container's process is the VMM: `create` forks it, it builds the
//! VM and waits; `start` releases it; its exit status is the workload's.

pub mod cgroup;
pub mod exec;
pub mod log;
pub mod sandbox;
pub mod state;
pub mod tty;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use self::log::LogFormat;
use self::state::{Container, OciState, Record, Status};

/// runc's global options, given before the subcommand.
#[derive(clap::Args, Debug)]
pub struct Globals {
    /// OCI runtime: the directory holding containers' state.
    #[arg(long, global = true, value_name = "DIR", default_value = state::DEFAULT_ROOT)]
    pub root: PathBuf,
    /// OCI runtime: also write errors to this file (podman and containerd read it).
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// OCI runtime: the format of --log.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// OCI runtime: cgroupsPath is systemd's `slice:prefix:name` (accepted; see the README).
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// OCI runtime: accepted for runc compatibility; flint logs errors only.
    #[arg(long, global = true)]
    pub debug: bool,
}

impl Globals {
    pub fn report(&self, msg: &str) {
        log::error(self.log.as_deref(), self.log_format, msg);
    }
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The bundle directory (config.json and the root filesystem).
    #[arg(long, short = 'b', value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container's PID (the VMM's) here.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Send the master of the container's terminal (a pty) to this Unix socket.
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility: the guest has its own root, never pivoted from the host.
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility: keyrings are the guest kernel's own.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Accepted with 0 only: no host descriptor can be handed into a VM.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,
    /// The container's ID (letters, digits and _ + - .).
    pub id: String,
}

#[derive(clap::Args, Debug)]
pub struct IdArgs {
    pub id: String,
}

#[derive(clap::Args, Debug)]
pub struct KillArgs {
    /// Every process of the container (for flint: the VMM, as without it).
    #[arg(long, short = 'a')]
    pub all: bool,
    pub id: String,
    /// A signal name (TERM or SIGTERM) or number.
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// Stop the container first if it runs (and succeed if it does not exist).
    #[arg(long, short = 'f')]
    pub force: bool,
    pub id: String,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// table or json.
    #[arg(long, short = 'f', default_value = "table")]
    pub format: String,
    /// Only the IDs.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// What `create` leaves this process as after its fork.
pub enum Created {
    /// The `create` command: the container exists and waits for `start`.
    Done,
    /// The container's process: run the bundle's VM through this gate.
    Container(Box<Gate>),
}

/// The container's process's two channels: a pipe to `create` (what became of building the
/// VM), and the socket `start` connects to.
pub struct Gate {
    pub bundle: PathBuf,
    /// The VM's vsock socket, through which the guest's agent takes `exec` and signals.
    pub vsock: PathBuf,
    /// The cgroup the VMM is to join (made by `create`'s side, joined by the VMM).
    pub cgroup: Option<PathBuf>,
    /// A pod's sandbox: no VM, only these namespaces held (see [`sandbox`]).
    pub sandbox: Option<sandbox::Holds>,
    sync: Option<OwnedFd>,
    start: UnixListener,
}

impl Gate {
    /// Tells `create` that the VM is built and waits for `start`.
    pub fn ready(&mut self) -> std::io::Result<()> {
        match self.sync.take() {
            Some(fd) => std::fs::File::from(fd).write_all(b"ok\n"),
            None => Ok(()),
        }
    }

    /// Tells `create` why the VM could not be built (if it still listens).
    pub fn fail(&mut self, msg: &str) -> bool {
        match self.sync.take() {
            Some(fd) => {
                let _ = std::fs::File::from(fd).write_all(format!("error: {msg}").as_bytes());
                true
            }
            None => false,
        }
    }

    /// Waits until `start` connects, and acknowledges it.
    pub fn wait_for_start(&self) -> std::io::Result<()> {
        let (mut conn, _) = self.start.accept()?;
        conn.write_all(b"s")
    }
}

/// `flint create`: claims the ID, forks the container's process (the VMM) and waits until it
/// has built the VM or failed; then records the state and writes the PID file. In the forked
/// process it returns [`Created::Container`].
pub fn create(g: &Globals, args: &CreateArgs) -> anyhow::Result<Created> {
    let c = Container::new(&g.root, &args.id)?;
    if args.preserve_fds != 0 {
        anyhow::bail!(
            "--preserve-fds {}: a host file descriptor cannot be handed into a VM",
            args.preserve_fds
        );
    }
    let bundle = std::fs::canonicalize(&args.bundle)
        .with_context(|| format!("the bundle {}", args.bundle.display()))?;
    let Config {
        annotations,
        cgroups_path,
        sandbox,
    } = read_config(&bundle)?;
    let cgroup = match cgroups_path.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => Some(cgroup::dir_for(p, g.systemd_cgroup)?),
        None => None,
    };
    c.claim()?;
    let result = (|| {
        if let Some(dir) = &cgroup {
            cgroup::prepare(dir)?;
        }
        fork_container(&c, &bundle, cgroup.clone(), sandbox, args)
    })()
    .and_then(|forked| match forked {
        Forked::Child(gate) => Ok(Created::Container(gate)),
        Forked::Parent(pid) => {
            let recorded = (|| {
                let start_time = state::start_time(pid)
                    .context("the container's process ended as soon as it was ready")?;
                c.save(&Record {
                    id: args.id.clone(),
                    pid,
                    start_time,
                    bundle: bundle.clone(),
                    created: state::rfc3339_now(),
                    annotations,
                    cgroup: cgroup.clone(),
                })?;
                if let Some(file) = &args.pid_file {
                    state::write_atomically(file, pid.to_string().as_bytes())?;
                }
                Ok(Created::Done)
            })();
            if recorded.is_err() {
                // A VMM nobody can start or find again would wait forever: end it.
                // SAFETY: kill and waitpid on our own child, not yet reaped.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
            }
            recorded
        }
    });
    if result.is_err() {
        let _ = c.remove();
    }
    result
}

enum Forked {
    Child(Box<Gate>),
    Parent(i32),
}

fn fork_container(
    c: &Container,
    bundle: &Path,
    cgroup: Option<PathBuf>,
    sandbox: Option<sandbox::Holds>,
    args: &CreateArgs,
) -> anyhow::Result<Forked> {
    let slave = match &args.console_socket {
        Some(socket) => Some(tty::send_pty(socket)?),
        None => None,
    };
    let start = UnixListener::bind(c.start_socket()).context("cannot make the start socket")?;
    let (pid, read) = match fork_reporting("the container's process")? {
        ForkSide::Parent(pid, read) => (pid, read),
        ForkSide::Child(write) => {
            let mut gate = Gate {
                bundle: bundle.to_path_buf(),
                vsock: c.vsock_socket(),
                cgroup,
                sandbox,
                sync: Some(write),
                start,
            };
            if let Some(slave) = slave {
                if let Err(e) = tty::become_controlling(&slave) {
                    gate.fail(&format!(
                        "cannot make the pty the container's terminal: {e}"
                    ));
                    // SAFETY: _exit ends this forked process at once, as it must on failure.
                    unsafe { libc::_exit(1) };
                }
            }
            return Ok(Forked::Child(Box::new(gate)));
        }
    };
    drop((start, slave));
    await_report(
        pid,
        read,
        "the container's process ended before its VM was ready",
    )?;
    Ok(Forked::Parent(pid))
}

/// Either side of [`fork_reporting`].
pub(crate) enum ForkSide {
    /// The child, with the pipe's end to write its report to.
    Child(OwnedFd),
    /// The parent: the child's PID and the pipe's end its report arrives on.
    Parent(i32, OwnedFd),
}

/// Forks a child that carries on alone (the container's VMM, an exec relay) and tells its
/// parent how its start went on a pipe: `ok\n`, or `error: MESSAGE` (see [`await_report`]).
pub(crate) fn fork_reporting(what: &str) -> anyhow::Result<ForkSide> {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot make a pipe");
    }
    // SAFETY: pipe2 succeeded: both descriptors are new and ours alone.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    check_single_threaded()?;
    // SAFETY: this process has one thread (checked above), so the child is a full copy with
    // no lock held by a thread that does not exist in it.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("cannot fork {what}"));
    }
    if pid == 0 {
        drop(read);
        return Ok(ForkSide::Child(write));
    }
    drop(write);
    Ok(ForkSide::Parent(pid, read))
}

/// In the parent: waits until the child reports (or ends). Its `ok` is Ok; its error, or
/// `ended` with its status if it said nothing, is the error (the child is reaped then).
pub(crate) fn await_report(pid: i32, read: OwnedFd, ended: &str) -> anyhow::Result<()> {
    let mut text = String::new();
    // Until the child says how it went and closes its end (or ends).
    let _ = std::fs::File::from(read).read_to_string(&mut text);
    if text == "ok\n" {
        return Ok(());
    }
    let mut status = 0;
    // SAFETY: waitpid on our own child, to reap it.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match text.strip_prefix("error: ") {
        Some(msg) => Err(anyhow::anyhow!("{msg}")),
        None => Err(anyhow::anyhow!("{ended} ({})", describe_status(status))),
    }
}

fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    }
}

/// fork() copies only the calling thread: the runtime forks before any thread starts.
pub(crate) fn check_single_threaded() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("cannot read /proc")?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(str::trim);
    if threads != Some("1") {
        anyhow::bail!("internal error: create must fork with one thread, not {threads:?}");
    }
    Ok(())
}

/// What `create` itself takes from config.json (the container's process reads the rest).
struct Config {
    annotations: std::collections::BTreeMap<String, String>,
    cgroups_path: Option<String>,
    /// Set for a pod's sandbox container.
    sandbox: Option<sandbox::Holds>,
}

/// What `create` itself needs of the bundle's config: its annotations (for `state`),
/// linux.cgroupsPath, and a pod sandbox's namespaces. The config is read once, at create: the
/// VMM reads the rest when it builds the VM, before `create` returns.
fn read_config(bundle: &Path) -> anyhow::Result<Config> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let annotations: std::collections::BTreeMap<String, String> = value
        .get("annotations")
        .and_then(|a| a.as_object())
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let cgroups_path = value
        .pointer("/linux/cgroupsPath")
        .and_then(|p| p.as_str())
        .map(str::to_string);
    let sandbox = if sandbox::is_sandbox(&annotations) {
        Some(sandbox::Holds::from_config(&value)?)
    } else {
        None
    };
    Ok(Config {
        annotations,
        cgroups_path,
        sandbox,
    })
}

/// `flint start`: releases the created container's VMM.
pub fn start(g: &Globals, args: &IdArgs) -> anyhow::Result<()> {
    let c = Container::new(&g.root, &args.id)?;
    let _lock = c.lock()?;
    let record = c.load()?;
    match c.status(&record) {
        Status::Created => {}
        Status::Running => anyhow::bail!("container \"{}\" is already running", args.id),
        Status::Stopped => anyhow::bail!(
            "cannot start container \"{}\": it has stopped (delete it)",
            args.id
        ),
    }
    let mut conn =
        UnixStream::connect(c.start_socket()).context("cannot reach the container's process")?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut ack = [0u8; 1];
    conn.read_exact(&mut ack)
        .context("the container's process did not confirm the start")?;
    c.mark_started()?;
    let _ = std::fs::remove_file(c.start_socket());
    Ok(())
}

fn oci_state<'a>(c: &'a Container, record: &'a Record) -> OciState<'a> {
    let status = c.status(record);
    OciState {
        oci_version: state::OCI_VERSION,
        id: &c.id,
        status: status.name(),
        pid: if status == Status::Stopped {
            0
        } else {
            record.pid
        },
        bundle: &record.bundle,
        created: &record.created,
        annotations: &record.annotations,
    }
}

/// `flint state`: the OCI state JSON.
pub fn show_state(g: &Globals, args: &IdArgs) -> anyhow::Result<()> {
    let c = Container::new(&g.root, &args.id)?;
    let record = c.load()?;
    println!("{}", serde_json::to_string_pretty(&oci_state(&c, &record))?);
    Ok(())
}

/// Signal names as `kill` takes them (with or without SIG), and numbers.
pub fn parse_signal(s: &str) -> anyhow::Result<i32> {
    const NAMES: &[(&str, i32)] = &[
        ("HUP", libc::SIGHUP),
        ("INT", libc::SIGINT),
        ("QUIT", libc::SIGQUIT),
        ("ILL", libc::SIGILL),
        ("TRAP", libc::SIGTRAP),
        ("ABRT", libc::SIGABRT),
        ("IOT", libc::SIGIOT),
        ("BUS", libc::SIGBUS),
        ("FPE", libc::SIGFPE),
        ("KILL", libc::SIGKILL),
        ("USR1", libc::SIGUSR1),
        ("SEGV", libc::SIGSEGV),
        ("USR2", libc::SIGUSR2),
        ("PIPE", libc::SIGPIPE),
        ("ALRM", libc::SIGALRM),
        ("TERM", libc::SIGTERM),
        ("STKFLT", libc::SIGSTKFLT),
        ("CHLD", libc::SIGCHLD),
        ("CONT", libc::SIGCONT),
        ("STOP", libc::SIGSTOP),
        ("TSTP", libc::SIGTSTP),
        ("TTIN", libc::SIGTTIN),
        ("TTOU", libc::SIGTTOU),
        ("URG", libc::SIGURG),
        ("XCPU", libc::SIGXCPU),
        ("XFSZ", libc::SIGXFSZ),
        ("VTALRM", libc::SIGVTALRM),
        ("PROF", libc::SIGPROF),
        ("WINCH", libc::SIGWINCH),
        ("IO", libc::SIGIO),
        ("POLL", libc::SIGPOLL),
        ("PWR", libc::SIGPWR),
        ("SYS", libc::SIGSYS),
    ];
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        anyhow::bail!("invalid signal {s}: numbers go from 1 to 64");
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, sig)| *sig)
        .ok_or_else(|| anyhow::anyhow!("unknown signal '{s}' (e.g. TERM, SIGKILL or 9)"))
}

/// Sends `sig` to the process `record` names, through a pidfd taken while it is known to be
/// that process (so a reused PID is never signalled).
fn signal_vmm(record: &Record, sig: i32) -> anyhow::Result<bool> {
    // SAFETY: pidfd_open with a PID and no flags returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, record.pid, 0) };
    if fd < 0 {
        return Ok(false); // gone already
    }
    // SAFETY: the descriptor is new and ours alone.
    let pidfd = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd)?) };
    if !state::alive(record.pid, record.start_time) {
        return Ok(false);
    }
    // SAFETY: pidfd_send_signal on a pidfd we own, with no siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(false);
        }
        return Err(e).context("cannot signal the container's process");
    }
    Ok(true)
}

/// `flint kill`: a running container's workload gets the signal from the guest's agent
/// (SIGTERM reaches its handler, as in a container); SIGKILL, or any signal before `start`
/// or without an agent, goes to the VMM (SIGKILL ends the VM; SIGTERM, SIGINT and SIGHUP
/// stop it as `flint run` does, with 128+N as the container's status).
pub fn kill(g: &Globals, args: &KillArgs) -> anyhow::Result<()> {
    let sig = parse_signal(&args.signal)?;
    let c = Container::new(&g.root, &args.id)?;
    let _lock = c.lock()?;
    let record = c.load()?;
    let status = c.status(&record);
    if status == Status::Stopped {
        anyhow::bail!("container \"{}\" is not running", args.id);
    }
    // The workload's own signal, through the guest's agent; SIGKILL, and any signal while
    // the guest does not run yet, go to the VMM.
    if status == Status::Running && sig != libc::SIGKILL && exec::signal_workload(&c, sig)? {
        return Ok(());
    }
    // The VMM ends on these (128+N); any other signal would end it without a word.
    const VMM_ENDS_ON: &[i32] = &[libc::SIGKILL, libc::SIGTERM, libc::SIGINT, libc::SIGHUP];
    if !VMM_ENDS_ON.contains(&sig) {
        anyhow::bail!(
            "signal {sig} cannot reach the workload of container \"{}\": the guest's agent does not answer (not started yet?); only KILL, TERM, INT and HUP end the VM itself",
            args.id
        );
    }
    if !signal_vmm(&record, sig)? {
        anyhow::bail!("container \"{}\" is not running", args.id);
    }
    Ok(())
}

/// `flint delete`: removes a stopped (or, with --force or still only created, ended) container.
pub fn delete(g: &Globals, args: &DeleteArgs) -> anyhow::Result<()> {
    let c = Container::new(&g.root, &args.id)?;
    if !c.dir.exists() {
        if args.force {
            return Ok(());
        }
        anyhow::bail!("container \"{}\" does not exist", args.id);
    }
    let _lock = c.lock()?;
    match c.load() {
        Ok(record) => {
            let status = c.status(&record);
            if status == Status::Running && !args.force {
                anyhow::bail!(
                    "cannot delete container \"{}\": it is running (stop it first, or delete --force)",
                    args.id
                );
            }
            if status != Status::Stopped {
                signal_vmm(&record, libc::SIGKILL)?;
                wait_until_ended(&record)?;
            }
            if let Some(dir) = &record.cgroup {
                cgroup::remove(dir);
            }
        }
        // A directory without a state: a create that failed half way, or damage.
        Err(e) if !args.force => return Err(e),
        Err(_) => {}
    }
    c.remove()
}

fn wait_until_ended(record: &Record) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while state::alive(record.pid, record.start_time) {
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "the container's process {} did not end within 10 s of SIGKILL",
                record.pid
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// `flint list`: the containers under --root.
pub fn list(g: &Globals, args: &ListArgs) -> anyhow::Result<()> {
    let mut ids: Vec<String> = match std::fs::read_dir(&g.root) {
        Ok(dir) => dir
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", g.root.display())),
    };
    ids.sort();
    let containers: Vec<(Container, Record)> = ids
        .iter()
        .filter_map(|id| {
            let c = Container::new(&g.root, id).ok()?;
            let r = c.load().ok()?;
            Some((c, r))
        })
        .collect();
    let states: Vec<OciState> = containers.iter().map(|(c, r)| oci_state(c, r)).collect();
    match args.format.as_str() {
        _ if args.quiet => states.iter().for_each(|s| println!("{}", s.id)),
        "json" => println!("{}", serde_json::to_string(&states)?),
        "table" => {
            let mut out = String::from("ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER\n");
            for s in &states {
                out.push_str(&format!(
                    "{}\t{}\t{}\t{}\t{}\troot\n",
                    s.id,
                    s.pid,
                    s.status,
                    s.bundle.display(),
                    s.created
                ));
            }
            print!("{out}");
        }
        other => anyhow::bail!("--format {other}: use table or json"),
    }
    Ok(())
}

/// `flint features`: what this runtime honours (runtime-spec features.md).
pub fn features() -> anyhow::Result<()> {
    let value = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": state::OCI_VERSION,
        "hooks": [],
        "mountOptions": [
            "ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "sync", "async",
            "dirsync", "mand", "nomand", "noatime", "atime", "nodiratime", "diratime",
            "relatime", "norelatime", "strictatime", "nostrictatime", "bind", "rbind",
            "private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable",
            "runbindable"
        ],
        "linux": {
            "namespaces": ["pid", "network", "mount", "ipc", "uts", "user", "cgroup"],
            "cgroup": { "v1": false, "v2": true, "systemd": false, "systemdUser": false },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
            "intelRdt": { "enabled": false }
        },
        "annotations": {
            "org.flint.vm": "the container runs in a KVM microVM"
        }
    });
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_with_or_without_sig_and_by_number() {
        assert_eq!(parse_signal("TERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("SIGKILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("sigusr1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("64").unwrap(), 64);
        for bad in ["0", "65", "-1", "SIGFOO", ""] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
    }
}
