//! Helpers shared by the integration tests: run the real `flint` binary and inspect what it did.
#![allow(dead_code)] // each test crate uses a different subset

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub fn flint() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flint"))
}

/// A firmware guest built by build.rs from `firmware/NAME.S`.
pub fn firmware(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("FLINT_FIRMWARE_DIR")).join(format!("{name}.elf"));
    assert!(p.exists(), "firmware {} was not built", p.display());
    p
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs flint with `args` and `input` on stdin; kills it after `timeout`.
pub fn run_with_input(args: &[&str], input: &[u8], timeout: Duration) -> Run {
    let mut cmd = flint();
    cmd.args(args);
    run_command(cmd, input, timeout)
}

/// Runs `cmd` with `input` on stdin; kills it after `timeout` (see [`wait_or_kill`]).
pub fn run_command(mut cmd: Command, input: &[u8], timeout: Duration) -> Run {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flint");
    if let Some(mut stdin) = child.stdin.take() {
        let input = input.to_vec();
        // In a thread: a child that does not read its input must not stall us before the
        // deadline is even set. A write error only means the child exited or closed stdin.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    wait_or_kill(child, timeout).into()
}

/// Waits for `child` to exit, and kills it if it is still running after `timeout`; meanwhile
/// collects what it writes to its piped stdout and stderr (in threads, so that a full pipe
/// cannot block it).
///
/// The kill goes through `Child::kill`, before the child is reaped: until then its PID cannot
/// be reused, so a late watchdog can never hit some other process (a sleeping thread that
/// kills a PID after the timeout could).
pub fn wait_or_kill(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    let stdout = child.stdout.take().map(Collector::start);
    let stderr = child.stderr.take().map(Collector::start);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let note = format!(
                "flint-test: killed process {} after {timeout:?}\n",
                child.id()
            );
            let _ = std::io::stderr().write_all(note.as_bytes());
            break child.wait().expect("wait for the killed child");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // A grandchild may still hold a pipe open: give it a moment, not forever.
    let until = Instant::now() + Duration::from_secs(5);
    Output {
        status,
        stdout: stdout.map(|c| c.finish(until)).unwrap_or_default(),
        stderr: stderr.map(|c| c.finish(until)).unwrap_or_default(),
    }
}

/// Sends `signal` to `child`, which must not have been waited for yet: until it is reaped its
/// PID cannot be reused, so the signal reaches this child and nothing else.
pub fn signal(child: &Child, signal: i32) {
    let pid = libc::pid_t::try_from(child.id()).expect("a PID fits pid_t");
    // SAFETY: kill(2) touches no memory of ours; `pid` is our unreaped child.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

/// Reads a pipe to its end in a thread, keeping what has arrived so far where
/// [`Collector::finish`] can take it even if the end never comes.
struct Collector {
    data: Arc<Mutex<Vec<u8>>>,
    ended: mpsc::Receiver<()>,
}

impl Collector {
    fn start(mut pipe: impl Read + Send + 'static) -> Collector {
        let data = Arc::new(Mutex::new(Vec::new()));
        let (tx, ended) = mpsc::channel();
        let sink = Arc::clone(&data);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(());
        });
        Collector { data, ended }
    }

    /// What was read, once the pipe ended or at `until`, whichever comes first.
    fn finish(self, until: Instant) -> Vec<u8> {
        let _ = self
            .ended
            .recv_timeout(until.saturating_duration_since(Instant::now()));
        std::mem::take(&mut *self.data.lock().unwrap())
    }
}

pub fn run(args: &[&str]) -> Run {
    run_with_input(args, b"", Duration::from_secs(60))
}

/// True where `/dev/kvm` is the nested PVM hypervisor (Linux cannot boot on it).
pub fn kvm_is_pvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

/// The virtiofsd the tests run: built (or found in the cache) by the resources script, as CI
/// and the lab get it.
pub fn virtiofsd(test: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLINT_VIRTIOFSD") {
        return Some(PathBuf::from(p));
    }
    let out = resource_script("guest/build-virtiofsd.sh", NO_ARGS);
    if !out.status.success() {
        skip(
            test,
            &format!(
                "resources/guest/build-virtiofsd.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        );
        return None;
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Some(PathBuf::from(path))
}

pub fn have_kvm() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Where the tests record what they skipped and what the lab ran again:
/// `$FLINT_TEST_REPORT_DIR`, else `flint-test-report/` in cargo's target directory (where
/// `.ci/run` reads it).
pub fn report_dir() -> PathBuf {
    match std::env::var_os("FLINT_TEST_REPORT_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_TARGET_TMPDIR")).with_file_name("flint-test-report"),
    }
}

/// In the report directory: one line per skipped test.
pub const SKIPS_LOG: &str = "skips.log";
/// In the report directory: one line per rerun; each rerun's diagnostics are in a file of
/// their own under [`RERUNS_DIR`].
pub const RERUNS_LOG: &str = "reruns.log";
pub const RERUNS_DIR: &str = "reruns";

/// Why something was run again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rerun {
    /// A whole lab run failed by itself (exit 125: the lab stalled or died).
    LabStall,
    /// A lab scenario was still running after its limit (see [`LAB_LOGGED_FN`]).
    ScenarioHang,
    /// A guest in a lab scenario triple-faulted (see [`GUEST_CRASH_ONCE_MORE`]).
    GuestCrash,
}

impl Rerun {
    pub fn as_str(self) -> &'static str {
        match self {
            Rerun::LabStall => "lab-stall",
            Rerun::ScenarioHang => "scenario-hang",
            Rerun::GuestCrash => "guest-crash",
        }
    }
}

/// Records skips and reruns in a report directory (see [`report_dir`]), and says so on stderr.
pub struct Report {
    dir: PathBuf,
    quiet: bool,
}

impl Default for Report {
    fn default() -> Self {
        Report {
            dir: report_dir(),
            quiet: false,
        }
    }
}

impl Report {
    /// A report in `dir` that prints nothing (for tests of these helpers).
    pub fn quiet_at(dir: &Path) -> Report {
        Report {
            dir: dir.to_path_buf(),
            quiet: true,
        }
    }

    /// Appends `text` to `file` in the report directory with one write, so that records from
    /// tests running in parallel do not interleave.
    fn append(&self, file: &str, text: &str) {
        let path = self.dir.join(file);
        std::fs::create_dir_all(&self.dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", self.dir.display()));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
    }

    /// Writes `line` straight to stderr: libtest captures `eprintln!` and shows it only for
    /// failing tests, and these lines are for every run.
    fn show(&self, line: &str) {
        if !self.quiet {
            let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
        }
    }

    /// Records that `test` (in this test file) was skipped for `reason`; returns the line.
    pub fn skip(&self, test: &str, reason: &str) -> String {
        let line = format!(
            "flint-test: SKIPPED {}::{test}: {reason}",
            env!("CARGO_CRATE_NAME")
        );
        self.append(SKIPS_LOG, &format!("{line}\n"));
        self.show(&line);
        line
    }

    /// Records a rerun of `what` (this test file's lab, or one of its scenarios): `summary` on
    /// a line of [`RERUNS_LOG`], `diagnostics` in a file of its own, whose path it returns.
    pub fn rerun(
        &self,
        kind: Rerun,
        scenario: Option<&str>,
        summary: &str,
        diagnostics: &str,
    ) -> PathBuf {
        let lab = env!("CARGO_CRATE_NAME");
        let what = match scenario {
            Some(name) => format!("{lab}/{name}"),
            None => lab.to_string(),
        };
        let dir = self.dir.join(RERUNS_DIR);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        // Scenario names become part of a file name: keep them to a safe alphabet.
        let stem: String = format!("{what}-{}-{}", kind.as_str(), std::process::id())
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut n = 1;
        let path = loop {
            let path = dir.join(format!("{stem}-{n}.txt"));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(diagnostics.as_bytes())
                        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
                    break path;
                }
                // Left by an earlier run into the same directory.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => panic!("create {}: {e}", path.display()),
            }
        };
        let line = format!(
            "{} {what}: {summary}; diagnostics: {}",
            kind.as_str(),
            path.display()
        );
        self.append(RERUNS_LOG, &format!("{line}\n"));
        self.show(&format!("flint-test: RERUN {line}"));
        path
    }
}

/// Whether this is CI (`CI=true`), which has root, `/dev/kvm`, TAP support and every tool.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Reports `test` as skipped for `reason` (libtest has no such state at run time): a line on
/// stderr and in the skip log (see [`report_dir`]). In CI, where nothing may be skipped, it
/// panics instead. The caller returns after it, or carries on without the skipped part.
pub fn skip(test: &str, reason: &str) {
    let line = Report::default().skip(test, reason);
    assert!(
        !in_ci(),
        "{line}\nCI has root, /dev/kvm, TAPs and every tool: a skip there means something is broken"
    );
}

/// A scratch file with `bytes`, removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str, bytes: &[u8]) -> TempFile {
        let p = std::env::temp_dir().join(format!("flint-test-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        TempFile(p)
    }
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The boot time flint printed for `--boot-timer` ("flint: guest booted in N us"), if any.
pub fn boot_time_us(output: &str) -> Option<u64> {
    output.lines().find_map(|l| {
        l.strip_prefix("flint: guest booted in ")?
            .strip_suffix(" us")?
            .parse()
            .ok()
    })
}

/// Standard base64 (for `flint.run=` scripts on a guest's command line).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// No arguments, for [`resource_script`] and [`resource_stdout`].
pub const NO_ARGS: [&str; 0] = [];

/// Runs the project's `resources/<script>` with `args` and returns its output, whatever its
/// status (see [`resource_stdout`] for the usual case).
pub fn resource_script<I, A>(script: &str, args: I) -> Output
where
    I: IntoIterator<Item = A>,
    A: AsRef<std::ffi::OsStr>,
{
    Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("resources")
            .join(script),
    )
    .args(args)
    .output()
    .unwrap_or_else(|e| panic!("run resources/{script}: {e}"))
}

/// [`resource_script`]'s stdout; panics with its stderr if it failed.
pub fn resource_stdout<I, A>(script: &str, args: I) -> String
where
    I: IntoIterator<Item = A>,
    A: AsRef<std::ffi::OsStr>,
{
    let out = resource_script(script, args);
    assert!(
        out.status.success(),
        "resources/{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How many times a lab run that failed by itself (exit 125) is tried in all, where it cannot
/// resume (see [`rerun_failed_labs`]).
const LAB_ATTEMPTS: usize = 3;
/// `resources/lab/run`'s status when the lab itself failed, not the command in it.
const LAB_FAILED: i32 = 125;

/// One lab run of `script`: `resources/lab/run`'s output.
fn lab_run(script: &str, options: &[String]) -> Output {
    let path = std::env::temp_dir().join(format!(
        "flint-lab-{}-{}.sh",
        std::process::id(),
        script.len()
    ));
    std::fs::write(&path, script).unwrap();
    let add = format!("{}:/scenarios.sh", path.display());
    let head = ["--timeout", "1200", "--add", &add].map(String::from);
    let tail = ["--", "sh", "/scenarios.sh"].map(String::from);
    let out = resource_script("lab/run", head.iter().chain(options).chain(&tail));
    let _ = std::fs::remove_file(&path);
    out
}

/// Panics with the lab's messages if its last run did not end with the script's status 0.
fn assert_lab_ended(out: &Output, stdout: &str) {
    // The lab's own messages first: a long console log would bury them.
    assert_eq!(
        out.status.code(),
        Some(0),
        "the lab failed; its messages:\n{}\nthe end of its output:\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail(stdout, 60)
    );
}

/// Runs `scenarios` in the lab as one [`lab_script`] (`setup`, then each scenario with `limit`
/// seconds) and returns their results (see [`scenarios`]). When the lab itself fails in the
/// middle (see [`resume_failed_labs`]), a new lab run takes up where it stopped.
pub fn run_scenarios_in_lab(
    setup: &str,
    scenarios: &[(String, String)],
    limit: u32,
    options: &[String],
) -> LabResults {
    run_scenario_groups_in_lab(setup, &singles(scenarios), limit, options)
}

/// [`run_scenarios_in_lab`] for scenarios in groups: a group whose lab run failed before all of
/// it finished is run again whole, for its later scenarios read what its earlier ones left in
/// the lab (a file, the warm snapshot), which a new lab run does not have.
pub fn run_scenario_groups_in_lab(
    setup: &str,
    groups: &[Vec<(String, String)>],
    limit: u32,
    options: &[String],
) -> LabResults {
    let (out, finished) = resume_failed_lab_groups(&Report::default(), groups, |left| {
        lab_run(&lab_script(setup, left, limit), options)
    });
    assert_lab_ended(&out, &String::from_utf8_lossy(&out.stdout));
    self::scenarios(&finished)
}

/// Each scenario a group of its own.
fn singles(scenarios: &[(String, String)]) -> Vec<Vec<(String, String)>> {
    scenarios.iter().map(|s| vec![s.clone()]).collect()
}

/// How many lab runs in a row may fail by themselves without finishing a scenario.
const LAB_ATTEMPTS_WITHOUT_PROGRESS: usize = 4;

/// Runs `lab` on `scenarios` until every one has finished (its `=== end` line) or the lab has
/// failed by itself (exit 125) [`LAB_ATTEMPTS_WITHOUT_PROGRESS`] times in a row without
/// finishing one. A failed run is followed by one on the scenarios it did not finish, recorded
/// in `report` as a `lab-stall` with the failed run's stderr and console tail. Returns the last
/// run's output and the finished scenarios' sections, in the order they ran.
///
/// Why: the lab's own kernel crashes now and then while a VM runs (QEMU/TCG's nested SVM; a
/// fault right after VMRUN), about once in three long Debian boots on 2026-12-02: running the
/// whole list again would each time put the scenarios that had passed at the same risk.
pub fn resume_failed_labs(
    report: &Report,
    scenarios: &[(String, String)],
    lab: impl FnMut(&[(String, String)]) -> Output,
) -> (Output, String) {
    resume_failed_lab_groups(report, &singles(scenarios), lab)
}

/// [`resume_failed_labs`] for scenarios in groups (see [`run_scenario_groups_in_lab`]): `lab`
/// is given the unfinished groups' scenarios, in order, and a group counts as finished only
/// when all its scenarios did in one run.
pub fn resume_failed_lab_groups(
    report: &Report,
    groups: &[Vec<(String, String)>],
    mut lab: impl FnMut(&[(String, String)]) -> Output,
) -> (Output, String) {
    let total: usize = groups.iter().map(Vec::len).sum();
    let mut left: Vec<Vec<(String, String)>> =
        groups.iter().filter(|g| !g.is_empty()).cloned().collect();
    let mut finished = String::new();
    let mut failures = 0;
    loop {
        let scenarios: Vec<(String, String)> = left.iter().flatten().cloned().collect();
        let out = lab(&scenarios);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let sections: HashMap<String, String> = finished_sections(&stdout).into_iter().collect();
        let before = left.len();
        left.retain(|group| {
            if !group.iter().all(|(name, _)| sections.contains_key(name)) {
                return true;
            }
            for (name, _) in group {
                finished.push_str(&sections[name]);
            }
            false
        });
        let progress = left.len() < before;
        if out.status.code() != Some(LAB_FAILED) || left.is_empty() {
            return (out, finished);
        }
        failures = if progress { 0 } else { failures + 1 };
        if failures >= LAB_ATTEMPTS_WITHOUT_PROGRESS {
            return (out, finished);
        }
        let done = total - left.iter().map(Vec::len).sum::<usize>();
        let restart = &left[0][0].0;
        let failed = left[0]
            .iter()
            .find(|(name, _)| !sections.contains_key(name))
            .map_or(restart, |(name, _)| name);
        let resume = if failed == restart {
            "there".to_string()
        } else {
            format!("at {restart}, the first of its group")
        };
        let summary = format!(
            "the lab failed (exit {LAB_FAILED}) in scenario {failed} ({done} of {total} done); a \
             new lab run takes up {resume}"
        );
        let diagnostics = format!(
            "The lab failed by itself (exit {LAB_FAILED}) in scenario {failed}; a new lab run \
             takes up {resume} ({failures} failure(s) in a row without a finished scenario, \
             {LAB_ATTEMPTS_WITHOUT_PROGRESS} end it).\n--- its messages (stderr):\n{}\n\
             --- the end of its output (console):\n{}\n",
            String::from_utf8_lossy(&out.stderr),
            tail(&stdout, 200)
        );
        report.rerun(Rerun::LabStall, None, &summary, &diagnostics);
    }
}

/// The `=== begin NAME` … `=== end NAME CODE` sections of a lab run's output (it may have been
/// cut short): (NAME, the section's lines, markers included). The one reader of those markers:
/// [`scenarios`] and [`resume_failed_labs`] both go through it.
pub fn finished_sections(stdout: &str) -> Vec<(String, String)> {
    let mut sections = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in stdout.lines() {
        if let Some(name) = line.strip_prefix("=== begin ") {
            current = Some((name.to_string(), String::new()));
        }
        if let Some((name, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
            let ended = line
                .strip_prefix("=== end ")
                .and_then(|rest| rest.rsplit_once(' '))
                .is_some_and(|(n, _)| n == name.as_str());
            if ended {
                sections.extend(current.take());
            }
        }
    }
    sections
}

/// Runs `lab` (one lab run) until it ends other than by a failure of the lab itself (exit
/// 125), [`LAB_ATTEMPTS`] runs at most, and returns the last run's output. Each rerun is
/// recorded in `report` as a `lab-stall`, with the failed run's stderr and console tail. For a
/// run with no scenarios to resume at (a benchmark script's own lab run); a list of scenarios is
/// better run by [`run_scenarios_in_lab`].
pub fn rerun_failed_labs(report: &Report, mut lab: impl FnMut() -> Output) -> Output {
    let mut out = lab();
    for run in 2..=LAB_ATTEMPTS {
        if out.status.code() != Some(LAB_FAILED) {
            break;
        }
        let diagnostics = format!(
            "The lab failed by itself (exit {LAB_FAILED}); run {run} of {LAB_ATTEMPTS} follows.\n\
             --- its messages (stderr):\n{}\n--- the end of its output (console):\n{}\n",
            String::from_utf8_lossy(&out.stderr),
            tail(&String::from_utf8_lossy(&out.stdout), 200)
        );
        report.rerun(
            Rerun::LabStall,
            None,
            &format!("the lab failed (exit {LAB_FAILED}), run {run} of {LAB_ATTEMPTS} follows"),
            &diagnostics,
        );
        out = lab();
    }
    out
}

/// Shell functions that report why a scenario hangs: the state of every flint thread and KVM's
/// exit counters (twice, 2 s apart). Part of every [`lab_script`].
pub const LAB_HUNG_REPORT_FN: &str = r#"
mount -t debugfs none /sys/kernel/debug 2>/dev/null
kvm_counters() {
    for f in exits halt_exits io_exits mmio_exits irq_exits signal_exits insn_emulation; do
        printf '%s=%s ' $f "$(cat /sys/kernel/debug/kvm/$f 2>/dev/null)"
    done
}
hung_report() {
    for p in $(pidof flint); do
        for t in /proc/$p/task/*; do
            echo "lab: HUNG: flint $p thread $(cat $t/comm): state/utime/stime $(cut -d' ' -f3,14,15 $t/stat) wchan $(cat $t/wchan) syscall $(cut -d' ' -f1 $t/syscall)"
        done
    done
    echo "lab: HUNG: kvm $(kvm_counters)"; sleep 2; echo "lab: HUNG: kvm $(kvm_counters)"
}
"#;

/// What flint prints when a vCPU triple-faults (KVM_EXIT_SHUTDOWN).
pub const TRIPLE_FAULT: &str = "triple fault (KVM_EXIT_SHUTDOWN)";
/// The line `logged` prints before it runs a scenario once more whose guest triple-faulted.
///
/// Why: in the lab, guests triple-fault now and then at random points (the small kernel early
/// in its boot, Debian's kernel at SMP bring-up or under systemd minutes in; with and without
/// ACPI), about one boot in thirty on 2026-12-02, never the same place twice; the lab's own
/// kernel crashes the same way (a recursive page fault on a wrong GS base). QEMU/TCG's nested
/// SVM is the likely cause; AMD's KVM re-initialises the vCPU on a shutdown intercept, so the
/// RIP flint reports (0xfff0) says nothing about where it happened. One more try tells such a
/// flake from a guest or flint bug, which crashes again.
pub const GUEST_CRASH_ONCE_MORE: &str = "lab: GUEST CRASH: once more";

/// The line `logged` prints when a try is still running after its limit.
pub const HUNG_STILL_RUNNING: &str = "lab: HUNG: still running";
/// The line `logged` prints before it runs a hung command once more.
pub const HUNG_ONCE_MORE: &str = "lab: HUNG: once more";
/// A scenario's status in [`lab_script`]'s `=== end` line when both tries hung: no command's
/// exit status can be negative, so no test can take it for one.
pub const HUNG_TWICE: i32 = -1;

/// Shell functions for lab scripts. `logged LIMIT CMD...` runs CMD in a session of its own with
/// its output in a file, prints the output when CMD ends and returns its status. If CMD is
/// still running after LIMIT seconds, it is reported (`lab: HUNG:` with the output so far and
/// `hung_report`'s findings, see [`LAB_HUNG_REPORT_FN`]), killed with its session, and run once
/// more. If that hangs too, `logged` gives up and sets `logged_hung=2` (which [`lab_script`]
/// turns into [`HUNG_TWICE`]); after one try, or a hang and a good second try, it is 0 or 1.
/// A try in which flint reported a guest triple fault is run once more too (see
/// [`GUEST_CRASH_ONCE_MORE`]); a second crash is the scenario's result.
/// A flag, not a status: CMD may exit 255 itself, and must not be run again for that.
///
/// Why: in lab runs where VMs wrote their consoles straight to the lab's serial console, now
/// and then a VM stopped making progress (its console stopped mid-line, both lab CPUs busy,
/// no later output from the lab at all), about one lab run in three; with the output in files,
/// never in 44 boots.
pub const LAB_LOGGED_FN: &str = r#"
logged_once() {
    limit=$1; shift
    out=${TMPDIR:-/tmp}/logged.out
    logged_hung=0
    setsid "$@" </dev/null >"$out" 2>&1 &
    pid=$!
    n=0
    while kill -0 $pid 2>/dev/null && [ $n -lt $limit ]; do sleep 1; n=$((n+1)); done
    if kill -0 $pid 2>/dev/null; then
        echo "lab: HUNG: still running after $limit s: $*; its output so far:"
        cat "$out"; echo
        hung_report
        kill -9 -$pid $pid 2>/dev/null; wait $pid
        logged_hung=1
        return 255
    fi
    wait $pid; c=$?
    cat "$out"
    return $c
}
logged() {
    logged_once "$@"; c=$?
    if [ $logged_hung = 0 ] && grep -q 'triple fault (KVM_EXIT_SHUTDOWN)' "${TMPDIR:-/tmp}/logged.out"; then
        echo "lab: GUEST CRASH: once more"
        logged_once "$@"; c=$?
    fi
    [ $logged_hung = 1 ] || return $c
    echo "lab: HUNG: once more"
    logged_once "$@"; c=$?
    [ $logged_hung = 1 ] || return $c
    echo "lab: HUNG: again, giving up"
    logged_hung=2
    return 255
}
"#;

/// A lab script: [`LAB_HUNG_REPORT_FN`], [`LAB_LOGGED_FN`], `setup` (shell), then each
/// `(name, body)` as a scenario whose shell `body` runs through `logged` with `limit` seconds,
/// between `=== begin/end` markers (see [`scenarios`]).
pub fn lab_script(setup: &str, scenarios: &[(String, String)], limit: u32) -> String {
    let mut s = format!("#!/bin/sh\n{LAB_HUNG_REPORT_FN}{LAB_LOGGED_FN}{setup}");
    for (name, body) in scenarios {
        let quoted = body.replace('\'', r"'\''");
        s.push_str(&format!(
            "echo '=== begin {name}'\nlogged {limit} sh -c '{quoted}'\nc=$?\n\
             if [ $logged_hung = 2 ]; then c={HUNG_TWICE}; fi\necho \"=== end {name} $c\"\n"
        ));
    }
    s
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What a lab run's scenarios printed and exited with, by name (see [`scenarios`]).
pub type LabResults = std::collections::HashMap<String, (String, i32)>;

/// Scenario `name`'s (output, exit status). Panics if it did not run, or if it hung on both
/// tries (see [`LAB_LOGGED_FN`]); a scenario that hung once and then ended is recorded as a
/// rerun by [`scenarios`].
pub fn scenario<'a>(results: &'a LabResults, name: &str) -> &'a (String, i32) {
    let s = results
        .get(name)
        .unwrap_or_else(|| panic!("scenario {name} did not run"));
    assert!(
        s.1 != HUNG_TWICE && !hung_twice(&s.0),
        "scenario {name} hung on both tries: still running after its limit, killed, run once \
         more, and still running again; its output and the lab's reports:\n{}",
        s.0
    );
    s
}

/// The output of scenario `name`, which must have exited 0.
pub fn succeeded<'a>(results: &'a LabResults, name: &str) -> &'a str {
    let (out, code) = scenario(results, name);
    assert_eq!(*code, 0, "{name} failed ({code}):\n{out}");
    out
}

/// How many of a scenario's tries were still running after their limit.
pub fn hung_tries(output: &str) -> usize {
    output
        .lines()
        .filter(|l| l.contains(HUNG_STILL_RUNNING))
        .count()
}

/// Whether a scenario's output shows a try still running after the hung one was run once more.
pub fn hung_twice(output: &str) -> bool {
    output
        .lines()
        .skip_while(|l| !l.contains(HUNG_ONCE_MORE))
        .any(|l| l.contains(HUNG_STILL_RUNNING))
}

/// Splits lab output into scenarios delimited by `=== begin NAME` / `=== end NAME CODE`, and
/// records every scenario that was run again after a hang (see [`scenarios_reported`]).
pub fn scenarios(stdout: &str) -> LabResults {
    scenarios_reported(stdout, &Report::default())
}

/// [`scenarios`], recording in `report` one `scenario-hang` rerun, with the scenario's whole
/// output (its `lab: HUNG:` reports included) as diagnostics, for each scenario that hung.
pub fn scenarios_reported(stdout: &str, report: &Report) -> LabResults {
    let mut results = std::collections::HashMap::new();
    for (name, text) in finished_sections(stdout) {
        // Between the `=== begin` line and the `=== end NAME CODE` line.
        let lines: Vec<&str> = text.lines().collect();
        let (end, body) = lines[1..].split_last().unwrap();
        let code = end.rsplit_once(' ').unwrap().1.parse().unwrap();
        let mut output = String::new();
        for line in body {
            output.push_str(line.trim_end_matches('\r'));
            output.push('\n');
        }
        results.insert(name, (output, code));
    }
    // In name order, so that the records are in the same order every time.
    let mut tried: Vec<(&String, &(String, i32))> = results.iter().collect();
    tried.sort();
    for (name, (out, code)) in tried {
        if hung_tries(out) > 0 {
            let summary = if *code == HUNG_TWICE || hung_twice(out) {
                "hung, ran once more and hung again: the scenario fails".to_string()
            } else {
                format!("hung, ran once more and ended with status {code}")
            };
            report.rerun(Rerun::ScenarioHang, Some(name), &summary, out);
        }
        if out.contains(GUEST_CRASH_ONCE_MORE) {
            let summary = if last_try(out).contains(TRIPLE_FAULT) {
                format!("its guest triple-faulted, ran once more and crashed again (status {code})")
            } else {
                format!("its guest triple-faulted, ran once more and ended with status {code}")
            };
            report.rerun(Rerun::GuestCrash, Some(name), &summary, out);
        }
    }
    // A scenario tried again (after a hang or a guest crash) is judged on its last try alone:
    // what the first try printed (a first boot's lines, say) must not add to what tests count.
    for (out, code) in results.values_mut() {
        if *code != HUNG_TWICE && !hung_twice(out) {
            *out = last_try(out).to_string();
        }
    }
    results
}

/// The output of a scenario's last try: everything after its last [`HUNG_ONCE_MORE`] or
/// [`GUEST_CRASH_ONCE_MORE`] line, or all of it if it was tried once.
pub fn last_try(output: &str) -> &str {
    let at = [HUNG_ONCE_MORE, GUEST_CRASH_ONCE_MORE]
        .iter()
        .filter_map(|m| output.rfind(m))
        .max();
    match at {
        Some(at) => output[at..].split_once('\n').map_or("", |(_, rest)| rest),
        None => output,
    }
}

/// Whether `out` has exactly this line.
pub fn has_line(out: &str, line: &str) -> bool {
    out.lines().any(|l| l == line)
}

/// The rest of the first line of `out` that starts with `prefix`.
pub fn value<'a>(out: &'a str, prefix: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.strip_prefix(prefix))
}

/// An OCI bundle in a temporary directory: `config.json` and a `rootfs/` with an executable
/// `/bin/sh` (a placeholder: the fast tier's firmware never runs it), and an image cache of its
/// own. Removed on drop.
pub struct TestBundle {
    pub dir: PathBuf,
}

impl TestBundle {
    pub fn new(name: &str, config: &str) -> TestBundle {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("flint-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rootfs/bin")).unwrap();
        std::fs::create_dir_all(dir.join("rootfs/tmp")).unwrap();
        std::fs::write(dir.join("rootfs/bin/sh"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            dir.join("rootfs/bin/sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(dir.join("config.json"), config).unwrap();
        TestBundle { dir }
    }

    /// A bundle running `args` (JSON array text) in `/`.
    pub fn with_args(name: &str, args: &str) -> TestBundle {
        TestBundle::new(
            name,
            &format!(
                r#"{{"ociVersion": "1.0.2", "root": {{"path": "rootfs"}},
                    "process": {{"args": {args}, "env": ["PATH=/bin"], "cwd": "/"}}}}"#
            ),
        )
    }

    pub fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// The image cache this bundle's runs use (FLINT_IMAGE_CACHE).
    pub fn cache(&self) -> PathBuf {
        self.dir.with_extension("images")
    }

    /// flint with this bundle's image cache.
    pub fn flint(&self) -> Command {
        let mut c = flint();
        c.env("FLINT_IMAGE_CACHE", self.cache());
        c
    }
}

impl Drop for TestBundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(self.cache());
    }
}

/// Spawns `cmd` (flint running the `spin` firmware, stdout piped) and waits until the guest
/// says "spinning", 20 s at most: by then every flint thread runs, under its filter (the main
/// thread installs its own right after starting the others, hence a short wait more). Returns
/// the child and whether the guest ran.
pub fn spawn_until_spinning(mut cmd: Command) -> (Child, bool) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn flint");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("spinning") {
                let _ = tx.send(());
            }
        }
    });
    let running = rx.recv_timeout(Duration::from_secs(20)).is_ok();
    std::thread::sleep(Duration::from_millis(300));
    (child, running)
}

/// A field of a `/proc/PID/status`-style text (`Name:\tvalue`), trimmed.
pub fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// A directory anyone may read, holding copies of `files` (by file name): for running flint as
/// another user, who may not be able to reach the checkout (CI clones it wherever it likes).
/// Removed on drop.
pub struct SharedCopies(pub PathBuf);

impl SharedCopies {
    pub fn new(tag: &str, files: &[&Path]) -> SharedCopies {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("flint-test-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for f in files {
            std::fs::copy(f, dir.join(f.file_name().unwrap())).unwrap();
        }
        SharedCopies(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for SharedCopies {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Lab shell setup for rootless runs: a user `flint` (uid 1000) in a `kvm` group that owns
/// /dev/kvm (0660, as udev leaves it on Debian), with a home for its image cache. Run a
/// command as that user with `su flint -c '…'` (busybox su sets up its groups).
pub const LAB_USER_SETUP: &str = r#"
echo 'flint:x:1000:1000::/home/flint:/bin/sh' >> /etc/passwd
echo 'flint:x:1000:' >> /etc/group
echo 'kvm:x:36:flint' >> /etc/group
mkdir -p /home/flint && chown 1000:1000 /home/flint
chgrp 36 /dev/kvm && chmod 660 /dev/kvm
"#;

/// Lab shell function `jail_report PID PREFIX`: once the jailed child of flint `PID` runs the
/// VM (its main thread is under seccomp, which comes last; 60 s at most), prints what it is and sees, each line starting PREFIX:
/// its NSpid, uids, effective and bounding capabilities, mount count and mounts, root
/// entries, cgroup and rlimits.
pub const LAB_JAIL_REPORT_FN: &str = r#"
jail_report() {
    p=$1; pre=$2; c=; i=0
    while [ $i -lt 600 ]; do
        c=$(cat /proc/$p/task/$p/children 2>/dev/null | tr -d ' ')
        [ -n "$c" ] && grep -q '^Seccomp:.2' /proc/$c/status 2>/dev/null && break
        sleep 0.1; i=$((i+1))
    done
    echo "$pre nspid: $(grep '^NSpid:' /proc/$c/status | cut -f2- | tr '\t' ' ')"
    echo "$pre uid: $(grep '^Uid:' /proc/$c/status | cut -f2- | tr '\t' ' ')"
    echo "$pre capeff: $(grep '^CapEff:' /proc/$c/status | cut -f2)"
    echo "$pre capbnd: $(grep '^CapBnd:' /proc/$c/status | cut -f2)"
    echo "$pre seccomp: $(grep '^Seccomp:' /proc/$c/status | cut -f2)"
    echo "$pre mounts: $(wc -l < /proc/$c/mountinfo)"
    sed "s/^/$pre mountinfo: /" /proc/$c/mountinfo
    echo "$pre root entries: $(ls -A /proc/$c/root | wc -l)"
    echo "$pre cgroup: $(cat /proc/$c/cgroup)"
    echo "$pre net ns same as the lab's: $([ "$(readlink /proc/$c/ns/net)" = "$(readlink /proc/self/ns/net)" ] && echo yes || echo no)"
}
"#;

/// flint running the counting firmware with its API on a socket in a directory of its own.
pub struct CounterVm {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub sock: PathBuf,
    pub out: PathBuf,
}

impl CounterVm {
    /// Boots the counting firmware with `extra` arguments.
    pub fn start(name: &str, extra: &[&str]) -> CounterVm {
        let kernel = firmware("counter");
        let mut args = vec!["--kernel", kernel.to_str().unwrap()];
        args.extend_from_slice(extra);
        Self::run(name, &args)
    }

    /// `flint run ARGS --api-sock SOCK` (ARGS boot or restore a counting guest), its console
    /// in a file, once the guest has counted twice. A directory of its own per `name`.
    pub fn run(name: &str, args: &[&str]) -> CounterVm {
        Self::run_with_env(name, args, &[])
    }

    /// [`CounterVm::run`] with these environment variables.
    pub fn run_with_env(name: &str, args: &[&str], env: &[(&str, &Path)]) -> CounterVm {
        let dir = std::env::temp_dir().join(format!("flint-counter-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("api.sock");
        let out = dir.join("console");
        let child = flint()
            .envs(env.iter().copied())
            .arg("run")
            .args(args)
            .arg("--api-sock")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let vm = CounterVm {
            child: Some(child),
            dir,
            sock,
            out,
        };
        vm.wait_for(|c| c >= 2, "the guest to count");
        vm
    }

    /// The last count the guest printed (0 before any).
    pub fn count(&self) -> u64 {
        counts(&self.console()).last().copied().unwrap_or(0)
    }

    /// Everything the guest printed so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn wait_for(&self, f: impl Fn(u64) -> bool, what: &str) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let c = self.count();
            if f(c) {
                return c;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<String, flint_vmm::api::client::ClientError> {
        flint_vmm::api::client::request(&self.sock, method, path, body, &[]).map(|r| r.body)
    }

    pub fn state(&self) -> String {
        let body = self.call("GET", "/", None).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["state"].as_str().unwrap().to_string()
    }

    /// Stops flint with SIGTERM; returns its stderr.
    pub fn stop(&mut self) -> String {
        let child = self.child.take().unwrap();
        signal(&child, libc::SIGTERM);
        let out = wait_or_kill(child, Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(128 + libc::SIGTERM));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Drop for CounterVm {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The counts in the counting firmware's output, in order (whole lines only).
pub fn counts(console: &str) -> Vec<u64> {
    console
        .lines()
        .filter(|l| l.len() == "flint-fw: count ".len() + 16)
        .filter_map(|l| l.strip_prefix("flint-fw: count "))
        .filter_map(|n| u64::from_str_radix(n, 16).ok())
        .collect()
}
