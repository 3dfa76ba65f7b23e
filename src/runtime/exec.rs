//! `flint exec`: another process in a running container, started by the agent in the guest's
//! init over the VM's vsock socket (`ROOT/ID/vsock.sock`). This process relays its stdio,
//! signals and terminal size and exits with its status; with `--detach` (what conmon asks
//! for), a forked relay does that and `exec` returns once the process has started, the
//! relay's PID in `--pid-file` (conmon waits on it as the exec'd process).

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use anyhow::Context;
use flint_oci::agent::{self, AgentError, ExecIo, ExecOptions};

use super::state::{Container, Status};
use super::{await_report, fork_reporting, tty, ForkSide, Globals};

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// The process to run, as an OCI `process` object (what podman writes); ARGS are then
    /// not given.
    #[arg(long, short = 'p', value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Return once the process has started; a relay of its stdio stays behind.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Write the PID of the process's relay (its stand-in on the host) here.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Send the master of the process's terminal (a pty) to this Unix socket.
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Give the process a terminal.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// The working directory (absolute).
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// NAME=VALUE, replacing the container's entry of that name. Repeatable.
    #[arg(long, short = 'e', value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// UID[:GID] to run as.
    #[arg(long, short = 'u', value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Additional group IDs. Repeatable.
    #[arg(long, short = 'g', value_name = "GID")]
    pub additional_gids: Vec<u32>,
    /// Set no_new_privs for the process.
    #[arg(long)]
    pub no_new_privs: bool,
    /// Accepted with 0 only: no host descriptor can be handed into a VM.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,
    pub id: String,
    /// The program and its arguments (without --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs `flint exec`; returns the status to exit with.
pub fn exec(g: &Globals, args: &ExecArgs) -> anyhow::Result<u8> {
    let c = Container::new(&g.root, &args.id)?;
    let record = c.load()?;
    if c.status(&record) != Status::Running {
        anyhow::bail!("container \"{}\" is not running", args.id);
    }
    if args.preserve_fds != 0 {
        anyhow::bail!(
            "--preserve-fds {}: a host file descriptor cannot be handed into a VM",
            args.preserve_fds
        );
    }
    let (spec, terminal) = match &args.process {
        Some(path) => {
            if !args.args.is_empty() {
                anyhow::bail!("give either --process or the program and its arguments, not both");
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--process {}", path.display()))?;
            let terminal = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("terminal").and_then(|t| t.as_bool()))
                .unwrap_or(false);
            let spec = agent::exec_spec_from_process_json_in(&record.bundle, &text)
                .with_context(|| format!("--process {}", path.display()))?;
            (spec, terminal)
        }
        None => {
            let options = ExecOptions {
                tty: args.tty,
                env: args.env.clone(),
                cwd: args.cwd.clone(),
                user: args.user.as_deref().map(parse_user).transpose()?,
                additional_gids: (!args.additional_gids.is_empty())
                    .then(|| args.additional_gids.clone()),
                no_new_privileges: args.no_new_privs,
            };
            let spec = agent::exec_spec_for_args(&record.bundle, &args.args, &options)?;
            (spec, args.tty)
        }
    };
    // The process's terminal: a new pty whose master goes to the console socket, else ours.
    let slave = match (&args.console_socket, terminal) {
        (Some(socket), true) => Some(tty::send_pty(socket)?),
        _ => None,
    };
    let uds = c.vsock_socket();
    if args.detach {
        return detach(&uds, &spec, slave, args.pid_file.as_ref());
    }
    if let Some(file) = &args.pid_file {
        super::state::write_atomically(file, std::process::id().to_string().as_bytes())?;
    }
    let session = agent::connect(&uds, agent::DEFAULT_TIMEOUT)
        .and_then(|s| s.start_exec(&spec))
        .map_err(not_started)?;
    if let Some(slave) = &slave {
        tty::become_controlling(slave).context("cannot use the pty")?;
    }
    Ok(relay(session, terminal))
}

/// The process's stdio is ours (fds 0-2; the pty's slave after `become_controlling`): relay
/// until it exits, with our terminal raw, and signals (SIGWINCH as the terminal's size)
/// forwarded.
fn relay(session: agent::ExecSession, terminal: bool) -> u8 {
    let signals = forwarded_signals().ok();
    let _raw = if terminal {
        flint_vmm::terminal::RawTerminal::enable_fully_if_tty(libc::STDIN_FILENO)
            .ok()
            .flatten()
    } else {
        None
    };
    // SAFETY: the standard descriptors stay open for the whole of this process.
    let (stdin, stdout, stderr) = unsafe {
        (
            BorrowedFd::borrow_raw(0),
            BorrowedFd::borrow_raw(1),
            BorrowedFd::borrow_raw(2),
        )
    };
    // SAFETY: isatty only inspects the descriptor.
    let tty_in = unsafe { libc::isatty(0) } == 1;
    let io = ExecIo {
        stdin: Some(stdin),
        stdout,
        stderr,
        signals: signals.as_ref().map(|s| s.as_fd()),
        terminal: (terminal && tty_in).then_some(stdin),
    };
    match session.relay(io) {
        Ok(outcome) => u8::try_from(outcome.exit_code).unwrap_or(1),
        Err(e) => {
            eprintln!("flint: error: exec: {e}");
            // The process's status is unknown: 255, as runc reports a lost exec.
            255
        }
    }
}

/// An exec that did not start: its own status (125-127) if the agent gave one.
fn not_started(e: AgentError) -> anyhow::Error {
    anyhow::Error::new(e).context("exec")
}

/// `--detach`: forks the relay, returns once the process has started (or failed to).
fn detach(
    uds: &std::path::Path,
    spec: &[u8],
    slave: Option<OwnedFd>,
    pid_file: Option<&PathBuf>,
) -> anyhow::Result<u8> {
    let write = match fork_reporting("the exec relay")? {
        ForkSide::Parent(pid, read) => {
            drop(slave);
            await_report(pid, read, "the exec relay ended before the process started")?;
            if let Some(file) = pid_file {
                super::state::write_atomically(file, pid.to_string().as_bytes())?;
            }
            return Ok(0);
        }
        ForkSide::Child(write) => write,
    };
    // The relay: start the process, say so, and relay it until it exits.
    let mut sync = std::fs::File::from(write);
    let session = match agent::connect(uds, agent::DEFAULT_TIMEOUT).and_then(|s| s.start_exec(spec))
    {
        Ok(s) => s,
        Err(e) => {
            let _ = write!(
                sync,
                "error: {}",
                flint_vmm::exit::error_chain(not_started(e).as_ref())
            );
            // SAFETY: _exit ends this forked process at once.
            unsafe { libc::_exit(1) };
        }
    };
    let terminal = slave.is_some();
    if let Some(slave) = &slave {
        if let Err(e) = tty::become_controlling(slave) {
            let _ = write!(sync, "error: cannot use the pty: {e}");
            // SAFETY: as above.
            unsafe { libc::_exit(1) };
        }
    }
    drop(slave);
    let _ = sync.write_all(b"ok\n");
    drop(sync);
    let code = relay(session, terminal);
    // SAFETY: the relay is done; end with the process's status.
    unsafe { libc::_exit(i32::from(code)) }
}

/// A signalfd for the signals a relay forwards to the process (blocked for this process, so
/// they arrive there instead of ending the relay).
fn forwarded_signals() -> std::io::Result<OwnedFd> {
    const FORWARDED: &[i32] = &[
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGTERM,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
        libc::SIGCONT,
    ];
    // SAFETY: an all-zero sigset is valid for sigemptyset to initialise.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigemptyset/sigaddset fill the set we own; sigprocmask blocks them for this
    // (single-threaded) process; signalfd returns a new descriptor or -1.
    let fd = unsafe {
        libc::sigemptyset(&mut set);
        for &s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC)
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `UID[:GID]` (a GID-less user keeps GID = UID's group 0, as runc does with numeric IDs).
fn parse_user(s: &str) -> anyhow::Result<(u32, u32)> {
    let bad = || {
        anyhow::anyhow!(
            "--user '{s}': give numeric UID[:GID] (names need the container's /etc/passwd)"
        )
    };
    let (uid, gid) = match s.split_once(':') {
        Some((u, g)) => (u, g),
        None => (s, "0"),
    };
    Ok((
        uid.parse().map_err(|_| bad())?,
        gid.parse().map_err(|_| bad())?,
    ))
}

/// The exit status for a runtime command's error: an exec that could not start keeps the
/// agent's 125/126/127, as a shell reports them; anything else is 1.
pub fn error_status(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|c| match c.downcast_ref::<AgentError>() {
            Some(AgentError::NotStarted { status, .. }) => u8::try_from(*status).ok(),
            _ => None,
        })
        .unwrap_or(1)
}

/// Signals the workload through the agent; false if the agent could not be reached (no
/// agent yet, or the guest is not running), so that the caller signals the VMM instead.
pub fn signal_workload(c: &Container, sig: i32) -> anyhow::Result<bool> {
    match agent::signal(&c.vsock_socket(), sig) {
        Ok(()) => Ok(true),
        Err(AgentError::Refused(msg)) => Err(anyhow::anyhow!("the guest's agent: {msg}")),
        Err(_) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_numeric() {
        assert_eq!(parse_user("1000:1001").unwrap(), (1000, 1001));
        assert_eq!(parse_user("5").unwrap(), (5, 0));
        for bad in ["alice", "1:x", "", ":1", "1:2:3"] {
            assert!(parse_user(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_process_that_could_not_start_keeps_its_status() {
        let e = anyhow::Error::new(AgentError::NotStarted {
            message: "exec foo: No such file or directory".into(),
            status: 127,
        })
        .context("exec");
        assert_eq!(error_status(&e), 127);
        assert_eq!(error_status(&anyhow::anyhow!("other")), 1);
    }
}
