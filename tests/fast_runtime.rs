//! Fast tier: flint as an OCI runtime (runc's command line), with firmware guests standing in
//! for Linux: `create` forks the VMM and returns once the VM is built, without running it;
//! `start` releases it; `state` follows the VMM across processes; the VMM's exit status is the
//! workload's; `kill`, `delete`, `list`, `features`, `--console-socket`, `--log`, and the
//! errors of each. The container's root is shared live (virtio-fs), so virtiofsd runs too.

mod common;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// A runtime root and a bundle whose "kernel" is firmware `fw`.
struct Runtime {
    root: PathBuf,
    bundle: TestBundle,
    kernel: PathBuf,
    virtiofsd: PathBuf,
}

impl Runtime {
    /// None (reported as skipped) without KVM or virtiofsd.
    fn new(test: &str, fw: &str) -> Option<Runtime> {
        if !have_kvm() {
            skip(test, "no usable /dev/kvm");
            return None;
        }
        let virtiofsd = virtiofsd(test)?;
        // The VMM outlives `create`: as conmon and containerd's shim do, this process takes
        // its orphans, so that the tests can read the VMM's exit status.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
        let bundle = TestBundle::with_args(test, r#"["sh", "-c", "true"]"#);
        Some(Runtime {
            root: bundle.dir.with_extension("root"),
            bundle,
            kernel: firmware(fw),
            virtiofsd,
        })
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.bundle.flint();
        c.env("FLINT_KERNEL", &self.kernel)
            .env("FLINT_VIRTIOFSD", &self.virtiofsd)
            .arg("--root")
            .arg(&self.root)
            .args(args);
        c
    }

    /// Runs a short runtime command to its end.
    fn run(&self, args: &[&str]) -> Run {
        run_command(self.cmd(args), b"", Duration::from_secs(30))
    }

    /// `create` with the container's stdout and stderr going to files (the VMM keeps them
    /// open after `create` returns, as it keeps conmon's pipes). Returns create's status and
    /// the stdout file.
    fn create(&self, id: &str, extra: &[&str]) -> (i32, PathBuf, String) {
        let out = self.root.with_extension(format!("{id}.out"));
        let err = self.root.with_extension(format!("{id}.err"));
        let mut c = self.cmd(&["create", "--bundle", self.bundle.path()]);
        c.args(extra)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        let status = c.status().expect("run flint create");
        let stderr = std::fs::read_to_string(&err).unwrap_or_default();
        (status.code().unwrap_or(-1), out, stderr)
    }

    fn state(&self, id: &str) -> serde_json::Value {
        let r = self.run(&["state", id]);
        assert_eq!(r.code, Some(0), "state {id}: {}", r.stderr);
        serde_json::from_str(&r.stdout).expect("state is JSON")
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Whatever a failed test left running.
        let _ = self.cmd(&["delete", "--force", "c1"]).output();
        let _ = self.cmd(&["delete", "--force", "c2"]).output();
        let _ = std::fs::remove_dir_all(&self.root);
        for f in ["c1.out", "c1.err", "c2.out", "c2.err"] {
            let _ = std::fs::remove_file(self.root.with_extension(f));
        }
    }
}

/// The VMM's exit: its status code, or 128+N for signal N (as a shell reports it).
fn wait_exit(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waitpid on a process this test's process adopted as subreaper.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(
        r,
        pid,
        "waitpid({pid}): {}",
        std::io::Error::last_os_error()
    );
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

fn pid_of(state: &serde_json::Value) -> i32 {
    i32::try_from(state["pid"].as_i64().expect("pid")).unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn create_waits_start_runs_and_the_vmm_exits_with_the_workload_status() {
    let name = "create_waits_start_runs_and_the_vmm_exits_with_the_workload_status";
    let Some(rt) = Runtime::new(name, "oci_probe") else {
        return;
    };
    let pid_file = rt.root.with_extension("pid");
    let (code, out, stderr) = rt.create("c1", &["--pid-file", pid_file.to_str().unwrap()]);
    assert_eq!(code, 0, "create: {stderr}");
    let state = rt.state("c1");
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], "c1");
    assert_eq!(state["ociVersion"], "1.1.0");
    assert_eq!(
        Path::new(state["bundle"].as_str().unwrap()),
        std::fs::canonicalize(&rt.bundle.dir).unwrap()
    );
    let pid = pid_of(&state);
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), pid.to_string());
    let _ = std::fs::remove_file(&pid_file);
    // The container's process is the VMM, built but not running: the guest printed nothing.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "");
    assert_eq!(rt.state("c1")["status"], "created");

    let r = rt.run(&["start", "c1"]);
    assert_eq!(r.code, Some(0), "start: {}", r.stderr);
    // The probe reports 42 on the exit-status port: the VMM's status, as conmon reads it.
    assert_eq!(wait_exit(pid), 42);
    let stdout = std::fs::read_to_string(&out).unwrap();
    assert!(stdout.contains("flint-fw: cmdline="), "{stdout}");
    let state = rt.state("c1");
    assert_eq!(state["status"], "stopped");
    assert_eq!(state["pid"], 0);

    let r = rt.run(&["start", "c1"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("it has stopped"), "{}", r.stderr);
    let r = rt.run(&["kill", "c1", "TERM"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("is not running"), "{}", r.stderr);
    let r = rt.run(&["delete", "c1"]);
    assert_eq!(r.code, Some(0), "delete: {}", r.stderr);
    let r = rt.run(&["state", "c1"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr.trim(),
        "flint: error: container \"c1\" does not exist"
    );
    assert_eq!(std::fs::read_dir(&rt.root).unwrap().count(), 0);
}

#[test]
fn kill_stops_a_running_container_and_delete_refuses_it_without_force() {
    let name = "kill_stops_a_running_container_and_delete_refuses_it_without_force";
    let Some(rt) = Runtime::new(name, "spin") else {
        return;
    };
    let (code, out, stderr) = rt.create("c1", &[]);
    assert_eq!(code, 0, "create: {stderr}");
    let pid = pid_of(&rt.state("c1"));
    assert_eq!(rt.run(&["start", "c1"]).code, Some(0));
    assert_eq!(rt.state("c1")["status"], "running");
    wait_for("the guest to spin", || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.contains("spinning"))
    });
    let r = rt.run(&["start", "c1"]);
    assert!(r.stderr.contains("already running"), "{}", r.stderr);
    let r = rt.run(&["delete", "c1"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("it is running"), "{}", r.stderr);
    // The firmware has no agent: exec and a signal only the workload could take are refused
    // in one line each (after the vsock device's 2 s wait for an answer), and it runs on.
    let r = rt.run(&["exec", "c1", "ls"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("the guest's agent"), "{}", r.stderr);
    let r = rt.run(&["kill", "c1", "USR1"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("signal 10 cannot reach the workload"),
        "{}",
        r.stderr
    );
    assert_eq!(rt.state("c1")["status"], "running");

    let list = rt.run(&["list", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(list[0]["id"], "c1");
    assert_eq!(list[0]["status"], "running");
    let table = rt.run(&["list"]).stdout;
    assert!(table.starts_with("ID\tPID\tSTATUS"), "{table}");
    assert!(table.contains(&format!("c1\t{pid}\trunning\t")), "{table}");

    // SIGTERM ends the VM as it ends `flint run`: 128+15, and not a word on its stderr.
    let r = rt.run(&["kill", "c1", "SIGTERM"]);
    assert_eq!(r.code, Some(0), "kill: {}", r.stderr);
    assert_eq!(wait_exit(pid), 143);
    assert_eq!(rt.state("c1")["status"], "stopped");
    let err = std::fs::read_to_string(rt.root.with_extension("c1.err")).unwrap();
    assert_eq!(err, "");
    assert_eq!(rt.run(&["delete", "c1"]).code, Some(0));

    // A second one, deleted by force while it runs; and one deleted while only created.
    let (code, _, stderr) = rt.create("c2", &[]);
    assert_eq!(code, 0, "create: {stderr}");
    let pid = pid_of(&rt.state("c2"));
    assert_eq!(rt.run(&["start", "c2"]).code, Some(0));
    let r = rt.run(&["delete", "--force", "c2"]);
    assert_eq!(r.code, Some(0), "delete --force: {}", r.stderr);
    assert_eq!(wait_exit(pid), 128 + libc::SIGKILL);
    assert_eq!(rt.run(&["state", "c2"]).code, Some(1));
    let (code, _, stderr) = rt.create("c2", &[]);
    assert_eq!(code, 0, "create: {stderr}");
    let pid = pid_of(&rt.state("c2"));
    assert_eq!(rt.run(&["delete", "c2"]).code, Some(0));
    assert_eq!(wait_exit(pid), 128 + libc::SIGKILL);
    // --force on what does not exist succeeds, as with runc (podman relies on it).
    assert_eq!(rt.run(&["delete", "--force", "c2"]).code, Some(0));
    assert_eq!(rt.run(&["delete", "c2"]).code, Some(1));
}

/// Sets the terminal's size through its master, as conmon does.
fn set_size(master: &impl std::os::fd::AsRawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the winsize it is given.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    assert_eq!(r, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
}

#[test]
fn the_console_socket_gets_a_pty_that_is_the_guest_console() {
    let name = "the_console_socket_gets_a_pty_that_is_the_guest_console";
    let Some(rt) = Runtime::new(name, "oci_probe") else {
        return;
    };
    std::fs::create_dir_all(&rt.root).unwrap();
    let socket = rt.root.join("console.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let (code, _, stderr) = rt.create("c1", &["--console-socket", socket.to_str().unwrap()]);
    assert_eq!(code, 0, "create: {stderr}");
    let (conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 128];
    let (n, master) = conn.recv_with_fd(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("/dev/pts/"),
        "the message names the pty"
    );
    let master = master.expect("the pty's master came with the message");
    let pid = pid_of(&rt.state("c1"));
    // The engine sizes the terminal (conmon does, on the master): the guest reads it.
    set_size(&master, 33, 101);
    assert_eq!(rt.run(&["start", "c1"]).code, Some(0));
    // Read the guest's console from the master in a thread; answer the probe's one byte.
    let mut reader = master.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut seen = Vec::new();
        let mut b = [0u8; 256];
        while let Ok(n) = reader.read(&mut b) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&b[..n]);
            let _ = tx.send(String::from_utf8_lossy(&seen).into_owned());
        }
    });
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !text.contains("flint-fw: size=") || !text.ends_with('\n') {
        text = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no size line on the pty: {text:?}"));
    }
    // A resize while it runs (SIGWINCH to the VMM) reaches the guest's size port too.
    set_size(&master, 44, 120);
    std::thread::sleep(Duration::from_millis(300));
    {
        use std::io::Write;
        (&master).write_all(b"x").unwrap();
    }
    while text.matches("flint-fw: size=").count() < 2 || !text.ends_with('\n') {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(t) => text = t,
            Err(_) => break,
        }
    }
    // Raw mode on the slave: the byte reached the guest as typed (0x78), not waiting for a line.
    // COM1 and COM2 share the terminal, so their lines arrive whole and in the guest's order.
    // (rows << 16 | columns: 33 x 101, then 44 x 120.)
    assert!(
        text.contains(
            "\nflint-fw: on COM2\nflint-fw: size=0000000000210065\n\
             flint-fw: input=0000000000000078\nflint-fw: size=00000000002c0078\n"
        ),
        "{text}"
    );
    assert_eq!(wait_exit(pid), 42);
    assert_eq!(rt.run(&["delete", "c1"]).code, Some(0));
}

#[test]
fn runtime_errors_are_one_line_on_stderr_and_in_the_log() {
    let name = "runtime_errors_are_one_line_on_stderr_and_in_the_log";
    let Some(rt) = Runtime::new(name, "oci_probe") else {
        return;
    };
    let log = rt.root.with_extension("log.json");
    let log_arg = log.to_str().unwrap();
    // A config.json without a process: create fails with the bundle's error, in the log in
    // JSON, and leaves no container behind.
    std::fs::write(
        rt.bundle.dir.join("config.json"),
        r#"{"ociVersion": "1.0.2", "root": {"path": "rootfs"}}"#,
    )
    .unwrap();
    let (code, _, stderr) = rt.create("c1", &["--log-format", "json", "--log", log_arg]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("process: missing"), "{stderr}");
    let line = std::fs::read_to_string(&log).unwrap();
    let entry: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(entry["level"], "error");
    assert!(entry["msg"].as_str().unwrap().contains("process: missing"));
    assert!(entry["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(rt.run(&["list", "-q"]).stdout, "");
    assert_eq!(rt.run(&["state", "c1"]).code, Some(1));

    // Text format: logrus's line.
    let _ = std::fs::remove_file(&log);
    let r = rt.run(&["--log", log_arg, "state", "nope"]);
    assert_eq!(r.code, Some(1));
    let line = std::fs::read_to_string(&log).unwrap();
    assert!(
        line.starts_with("time=\"")
            && line.ends_with("level=error msg=\"container \\\"nope\\\" does not exist\"\n"),
        "{line}"
    );
    let _ = std::fs::remove_file(&log);

    for (args, want) in [
        (&["state", "a/b"][..], "invalid container ID 'a/b'"),
        (&["kill", "c1", "SIGNOPE"], "unknown signal 'SIGNOPE'"),
        (&["start", "c1"], "container \"c1\" does not exist"),
        (&["delete", "c1"], "container \"c1\" does not exist"),
        (&["exec", "c1", "ls"], "container \"c1\" does not exist"),
        (
            &["list", "--format", "yaml"],
            "--format yaml: use table or json",
        ),
    ] {
        let r = rt.run(args);
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
    }
    let (code, _, stderr) = rt.create("c1", &["--preserve-fds", "1"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--preserve-fds 1"), "{stderr}");

    // Two creates of one ID: the second is refused and leaves the first alone.
    std::fs::write(
        rt.bundle.dir.join("config.json"),
        r#"{"ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "annotations": {"org.example/a": "b"},
            "process": {"args": ["sh"], "env": ["PATH=/bin"], "cwd": "/"}}"#,
    )
    .unwrap();
    // A PID file that cannot be written fails create after the VMM was ready: it must not
    // stay behind, waiting for a start nobody can send.
    let (code, _, stderr) = rt.create("c1", &["--pid-file", "/nonexistent-dir/c1.pid"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("/nonexistent-dir/c1.tmp"), "{stderr}");
    assert_eq!(rt.run(&["list", "-q"]).stdout, "");
    let root = rt.root.to_str().unwrap().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&root) && c.contains(" create "))
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
    let (code, _, stderr) = rt.create("c1", &[]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = rt.create("c1", &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("container \"c1\" already exists"),
        "{stderr}"
    );
    let state = rt.state("c1");
    assert_eq!(state["status"], "created");
    assert_eq!(state["annotations"]["org.example/a"], "b");
    let pid = pid_of(&state);
    assert_eq!(rt.run(&["delete", "c1"]).code, Some(0));
    assert_eq!(wait_exit(pid), 128 + libc::SIGKILL);

    let features = rt.run(&["features"]);
    let features: serde_json::Value = serde_json::from_str(&features.stdout).unwrap();
    assert_eq!(features["ociVersionMax"], "1.1.0");
    assert!(features["mountOptions"]
        .as_array()
        .unwrap()
        .contains(&"rbind".into()));
}

/// Whether /sys/fs/cgroup is a cgroup v2 mount (this machine mixes v1 controllers with it).
fn cgroup2_root() -> bool {
    // SAFETY: statfs fills the zeroed struct from a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::statfs(c"/sys/fs/cgroup".as_ptr(), &mut st) };
    r == 0 && st.f_type == 0x6367_7270
}

#[test]
fn the_vmm_runs_in_the_bundles_cgroup_and_delete_removes_it() {
    let name = "the_vmm_runs_in_the_bundles_cgroup_and_delete_removes_it";
    let Some(rt) = Runtime::new(name, "spin") else {
        return;
    };
    let leaf = format!("flint-test-{}", std::process::id());
    std::fs::write(
        rt.bundle.dir.join("config.json"),
        format!(
            r#"{{"ociVersion": "1.0.2", "root": {{"path": "rootfs"}},
                "process": {{"args": ["sh"], "env": ["PATH=/bin"], "cwd": "/"}},
                "linux": {{"cgroupsPath": "/flint-tests/{leaf}"}}}}"#
        ),
    )
    .unwrap();
    let (code, _, stderr) = rt.create("c1", &[]);
    if !cgroup2_root() {
        // Here: a one-line refusal, and nothing left behind.
        assert_eq!(code, 1, "{stderr}");
        assert_eq!(
            stderr.trim(),
            "flint: error: linux.cgroupsPath: /sys/fs/cgroup is not a cgroup v2 hierarchy (flint places the VMM in cgroup v2 only)"
        );
        assert_eq!(rt.run(&["list", "-q"]).stdout, "");
        return;
    }
    assert_eq!(code, 0, "{stderr}");
    let pid = pid_of(&rt.state("c1"));
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cgroup.contains(&format!("0::/flint-tests/{leaf}\n")),
        "{cgroup}"
    );
    assert_eq!(rt.run(&["delete", "--force", "c1"]).code, Some(0));
    assert_eq!(wait_exit(pid), 128 + libc::SIGKILL);
    assert!(!Path::new(&format!("/sys/fs/cgroup/flint-tests/{leaf}")).exists());
    let _ = std::fs::remove_dir("/sys/fs/cgroup/flint-tests");
}
