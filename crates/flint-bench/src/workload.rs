//! What the snapshot and density benches share: their common arguments, the preparation
//! (bundle, kernel, image, scratch directory), flint's warm-up, and the capture of a running
//! workload through flint's control API.
//!
//! Their workload is an OCI bundle whose process prints a line periodically forever, e.g.
//! `/bin/sh -c 'i=0; while :; do i=$((i+1)); echo "tick $i"; usleep 10000; done'`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use clap::value_parser;
use flint_vmm::snapshot::create::Summary;
use serde::{Deserialize, Serialize};

use super::environment::{iso8601_utc, Environment};
use super::live::{ended_by_sigterm, parse_tick, Exit, Line, Live};
use super::run::WaitStatus;
use super::startup::{check_bundle, micros, resolve_kernel, Workdir, WARM_UP_EXTRA};
use super::system::{describe, Setup, System};
use super::{interrupt, measure, quoted, BenchError};

/// The arguments `flint bench snapshot` and `flint bench density` share.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// The OCI bundle to run: its process must print a line periodically forever, and for the
    /// snapshot bench the lines must be `tick N` with N counting up, e.g. /bin/sh -c 'i=0;
    /// while :; do i=$((i+1)); echo "tick $i"; usleep 10000; done'. It must not ask for a
    /// terminal.
    #[arg(long, value_name = "DIR")]
    pub bundle: PathBuf,
    /// Guest kernel for flint [default: $FLINT_KERNEL, else /usr/local/share/flint/vmlinux or
    /// /usr/share/flint/vmlinux].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Guest memory in MiB, for every VM.
    #[arg(long, value_name = "MIB", default_value_t = 128,
          value_parser = value_parser!(u64).range(1..=(1 << 20)))]
    pub memory: u64,
    /// vCPUs, for every VM.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = value_parser!(u32).range(1..=255))]
    pub cpus: u32,
    /// Directory for the JSON, Markdown and SVG results (created if needed).
    #[arg(long, value_name = "DIR", default_value = "results")]
    pub out: PathBuf,
    /// Seconds each wait may take (for the workload's lines, a request, an exit); the first
    /// flint run, which also makes flint's warm snapshot, gets 300 s more.
    #[arg(long, value_name = "SECS", default_value_t = 120,
          value_parser = value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
    /// The crun binary (a path, or a name looked up on PATH).
    #[arg(long, value_name = "PATH", default_value = "crun")]
    pub crun: PathBuf,
    /// Free text saying where this ran, added to the report's environment record.
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
}

/// The arguments as the JSON report records them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArgsRecord {
    pub bundle: String,
    pub kernel: String,
    pub memory_mib: u64,
    pub cpus: u32,
    pub timeout_s: u64,
    pub crun: String,
}

/// Everything ready for the first run.
pub(crate) struct Prepared {
    pub setup: Setup,
    pub environment: Environment,
    /// When the bench started, UTC ISO-8601.
    pub date: String,
    pub timeout: Duration,
    pub args: ArgsRecord,
    /// Removed when dropped; every process must be gone by then (declare it first).
    pub workdir: Workdir,
}

/// Checks the bundle and kernel, makes the scratch directory and builds the bundle's image
/// into the bench's own image cache (so that no run pays for it, and the image and flint's
/// warm snapshot live and die with the bench).
pub(crate) fn prepare(args: &CommonArgs, crun: PathBuf) -> Result<Prepared, BenchError> {
    let bundle = check_bundle(&args.bundle)?;
    let kernel = resolve_kernel(args.kernel.as_deref())?;
    let flint =
        std::env::current_exe().map_err(BenchError::io("cannot find flint's own executable"))?;
    let workdir = Workdir::create()?;
    let image_cache = workdir.0.join("images");
    flint_oci::prepare(&bundle.dir, &image_cache)?;
    let record = ArgsRecord {
        bundle: bundle.dir.display().to_string(),
        kernel: kernel.display().to_string(),
        memory_mib: args.memory,
        cpus: args.cpus,
        timeout_s: args.timeout,
        crun: crun.display().to_string(),
    };
    Ok(Prepared {
        setup: Setup {
            bundle: bundle.dir.clone(),
            memory_mib: args.memory,
            cpus: args.cpus,
            flint,
            crun,
            qemu: PathBuf::new(),
            kernel: Some(kernel),
            image_cache,
            crun_logs: workdir.0.clone(),
            vm: None,
        },
        environment: Environment::detect(args.label.clone()),
        date: iso8601_utc(SystemTime::now()),
        timeout: Duration::from_secs(args.timeout),
        args: record,
        workdir,
    })
}

/// The first `tick N` line among `lines`: its index (how many complete lines came before
/// it), N, and when it was read.
pub fn first_tick(lines: &[Line]) -> Option<(usize, u64, Instant)> {
    lines
        .iter()
        .enumerate()
        .find_map(|(i, l)| Some((i, parse_tick(&l.text)?, l.at)))
}

/// The highest tick among `lines`.
pub fn last_tick(lines: &[Line]) -> Option<u64> {
    lines.iter().filter_map(|l| parse_tick(&l.text)).max()
}

/// Whether a restored workload continued: its first tick must come after the last one the
/// captured workload printed. The error says what was seen.
pub fn check_continues(last_before: u64, first_after: u64) -> Result<(), String> {
    if first_after > last_before {
        return Ok(());
    }
    Err(format!(
        "the workload did not continue: the restored one's first line is tick {first_after}, \
         but the captured one had already printed tick {last_before}"
    ))
}

/// A restore timed from its launch to the workload's next line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NextLine {
    pub after_us: u64,
    pub tick: u64,
    /// Complete lines before it that were not `tick N` (the tail of a line the capture cut).
    pub skipped: usize,
}

/// Waits for `restored`'s first `tick N` line and checks that it continues from `last_before`.
pub(crate) fn next_line(
    restored: &mut Live,
    last_before: u64,
    timeout: Duration,
) -> Result<NextLine, BenchError> {
    restored.wait_for(timeout, "`tick N` line", |l| first_tick(l).is_some())?;
    let Some((skipped, tick, at)) = first_tick(restored.lines()) else {
        return Err(BenchError::Internal {
            what: "a waited-for tick line is missing",
        });
    };
    check_continues(last_before, tick).map_err(|what| restored.error(what))?;
    Ok(NextLine {
        after_us: micros(at.saturating_duration_since(restored.launch)),
        tick,
        skipped,
    })
}

/// Stops a flint with SIGTERM and checks that it ended as flint does on it (exit 143).
pub(crate) fn stop_flint(vm: &mut Live, timeout: Duration) -> Result<Exit, BenchError> {
    let exit = vm.terminate(timeout)?;
    expect_sigterm_exit(vm, exit)
}

/// `exit` if it is how flint ends on SIGTERM (exit 143), else an error about `vm`.
pub(crate) fn expect_sigterm_exit(vm: &Live, exit: Exit) -> Result<Exit, BenchError> {
    if ended_by_sigterm(&exit) {
        return Ok(exit);
    }
    Err(vm.error(format!(
        "flint ended with {} on SIGTERM (expected exit code 143)",
        exit.status
    )))
}

/// One untimed `flint run --oci-bundle`, stopped after its first line: it makes flint's warm
/// snapshot in the bench's image cache, so that the timed runs are all warm starts. Returns
/// its launch → first line.
pub(crate) fn warm_up(p: &Prepared) -> Result<Duration, BenchError> {
    let cmd = p.setup.command(System::FlintRestored, 0)?;
    let mut vm = Live::spawn(
        "warm-up (untimed, makes flint's warm snapshot): flint run --oci-bundle",
        cmd,
    )?;
    vm.wait_for(
        p.timeout.saturating_add(WARM_UP_EXTRA),
        "complete line",
        |l| !l.is_empty(),
    )?;
    let first = vm.lines()[0].at.saturating_duration_since(vm.launch);
    stop_flint(&mut vm, p.timeout)?;
    Ok(first)
}

/// What a capture of the running workload cost, as flint reported it and as measured here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureRecord {
    /// flint's own measure: pause → both files durable.
    pub capture_us: u64,
    /// The API request's round trip, from the bench.
    pub capture_wall_us: u64,
    pub state_bytes: u64,
    /// Bytes of guest pages written.
    pub memory_bytes_written: u64,
    /// The memory file's length: the guest's RAM.
    pub memory_len: u64,
    /// The memory file's allocated bytes (st_blocks × 512).
    pub memory_allocated_bytes: u64,
    /// The highest `tick N` the workload printed before it was stopped.
    pub last_tick_before: u64,
}

/// A capture and the command line of the VM it captured.
pub(crate) struct Capture {
    pub record: CaptureRecord,
    pub command: Vec<String>,
    /// The snapshot's directory.
    pub dir: PathBuf,
}

impl Capture {
    /// `flint run --restore DIR` for this snapshot (a warm-started VM's in-memory spec disk,
    /// read by its guest already, is restored as zeros by flint itself).
    pub fn restore_command(&self, setup: &Setup) -> Command {
        setup.flint_restore(&self.dir)
    }
}

/// Longest Unix socket path (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Runs the workload in a warm-started flint serving the API on `sock`, waits for its third
/// complete line, snapshots it into `dir` with `PUT /snapshot/create {"stop":true}`, and
/// waits for flint to exit 0. `step` names it in errors.
pub(crate) fn capture_running(
    p: &Prepared,
    step: &str,
    sock: &Path,
    dir: &Path,
) -> Result<Capture, BenchError> {
    if sock.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(BenchError::Usage(format!(
            "the API socket path {} is longer than {MAX_SOCKET_PATH} bytes: set TMPDIR to a \
             shorter directory",
            sock.display()
        )));
    }
    let mut cmd = p.setup.command(System::FlintRestored, 0)?;
    cmd.arg("--api-sock").arg(sock);
    let command = describe(&cmd);
    let mut vm = Live::spawn(format!("{step}: flint run --oci-bundle --api-sock"), cmd)?;
    vm.wait_for(p.timeout, "3 complete lines", |l| l.len() >= 3)?;
    let third = &vm.lines()[2].text;
    if parse_tick(third).is_none() {
        return Err(vm.error(format!(
            "the workload's third line is {}, not `tick N`: the bench needs a bundle that \
             prints `tick 1`, `tick 2`, … (see --bundle in --help)",
            quoted(third.as_bytes(), 80)
        )));
    }
    let files = open_snapshot_files(dir)?;
    let (summary, wall) = request_snapshot(&vm, sock, files, p.timeout)?;
    let memory = dir.join(flint_vmm::snapshot::MEMORY_FILE);
    let memory_allocated_bytes = measure::allocated_bytes(&memory).map_err(BenchError::io(
        format!("cannot measure {}", memory.display()),
    ))?;
    // With stop=true flint ends the VM once the files are written: the rest of what the
    // workload printed before the pause comes out, then flint exits 0.
    vm.read_to_end(p.timeout)?;
    let exit = vm.wait_exit(p.timeout)?;
    if exit.status != WaitStatus::Exited(0) {
        return Err(vm.error(format!(
            "flint ended with {} after the snapshot with stop=true (expected exit code 0)",
            exit.status
        )));
    }
    let Some(last_tick_before) = last_tick(vm.lines()) else {
        return Err(BenchError::Internal {
            what: "no tick line after the third line was one",
        });
    };
    Ok(Capture {
        record: CaptureRecord {
            capture_us: summary.capture_us,
            capture_wall_us: micros(wall),
            state_bytes: summary.state_bytes,
            memory_bytes_written: summary.memory_bytes_written,
            memory_len: summary.memory_len,
            memory_allocated_bytes,
            last_tick_before,
        },
        command,
        dir: dir.to_path_buf(),
    })
}

/// Makes `dir` (0700) and creates its snapshot files, new and 0600, for flint to write
/// through the descriptors.
fn open_snapshot_files(dir: &Path) -> Result<[File; 2], BenchError> {
    use flint_vmm::snapshot::FilesError;
    match flint_vmm::snapshot::create_files(dir, true) {
        Ok((state, memory)) => Ok([state, memory]),
        Err(FilesError::Dir(d, e)) => {
            Err(BenchError::io(format!("cannot make {}", d.display()))(e))
        }
        Err(FilesError::File(f, e)) => {
            Err(BenchError::io(format!("cannot create {}", f.display()))(e))
        }
    }
}

/// What the snapshot request answered, and how long it took.
type Answer = (
    Result<flint_vmm::api::client::Reply, flint_vmm::api::client::ClientError>,
    Duration,
);

/// Sends `PUT /snapshot/create {"stop":true}` with the two files, from a thread so that a
/// timeout or Ctrl-C is noticed meanwhile (the VM is then killed, which ends the request).
fn request_snapshot(
    vm: &Live,
    sock: &Path,
    files: [File; 2],
    timeout: Duration,
) -> Result<(Summary, Duration), BenchError> {
    let (tx, rx) = mpsc::channel::<Answer>();
    let socket = sock.to_path_buf();
    std::thread::spawn(move || {
        let fds = [files[0].as_raw_fd(), files[1].as_raw_fd()];
        let start = Instant::now();
        let r = flint_vmm::api::client::request(
            &socket,
            "PUT",
            "/snapshot/create",
            Some(r#"{"stop":true}"#),
            &fds,
        );
        let _ = tx.send((r, start.elapsed()));
    });
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(sig) = interrupt::pending() {
            return Err(BenchError::Interrupted(sig));
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((Ok(reply), wall)) => {
                let summary = parse_summary(&reply.body).map_err(|what| vm.error(what))?;
                return Ok((summary, wall));
            }
            Ok((Err(e), _)) => {
                return Err(vm.error(format!(
                    "the snapshot request failed: {}",
                    crate::with_causes(&e)
                )))
            }
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(vm.error(format!(
                    "no answer to the snapshot request within {} s",
                    timeout.as_secs_f64()
                )))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(BenchError::Internal {
                    what: "the snapshot request's thread ended without an answer",
                })
            }
        }
    }
}

/// flint's answer to a snapshot request: its [`Summary`].
pub fn parse_summary(body: &str) -> Result<Summary, String> {
    serde_json::from_str(body).map_err(|e| {
        format!(
            "flint's answer to the snapshot request is not its summary ({e}): {}",
            quoted(body.as_bytes(), 200)
        )
    })
}

/// Fixtures for the snapshot and density benches' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// The lab's environment record.
    pub fn lab() -> Environment {
        Environment {
            label: None,
            kernel_release: "6.1.0".into(),
            cpu_model: "Test CPU".into(),
            kvm_module: Some("kvm_amd".into()),
            virtualization: "software emulation: QEMU TCG lab, nested kvm-amd".into(),
        }
    }

    /// The default arguments, as recorded.
    pub fn args() -> ArgsRecord {
        ArgsRecord {
            bundle: "/b".into(),
            kernel: "/k/vmlinux".into(),
            memory_mib: 128,
            cpus: 1,
            timeout_s: 120,
            crun: "crun".into(),
        }
    }

    /// `report` as the pretty JSON written to the file, checked to have `keys` at its top
    /// level (and `benchmark` = `name`), and parsed.
    pub fn json(report: &impl Serialize, name: &str, keys: &[&str]) -> (String, serde_json::Value) {
        let text = serde_json::to_string_pretty(report).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for key in [
            "benchmark",
            "flint_version",
            "date",
            "environment",
            "args",
            "systems",
            "notes",
        ]
        .iter()
        .chain(keys)
        {
            assert!(v.get(key).is_some(), "no {key}");
        }
        assert_eq!(v["benchmark"], name);
        (text, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(texts: &[&str]) -> Vec<Line> {
        let at = Instant::now();
        texts
            .iter()
            .map(|t| Line {
                at,
                text: t.to_string(),
            })
            .collect()
    }

    #[test]
    fn the_first_tick_skips_a_cut_line() {
        let l = lines(&["k 57", "tick 58", "tick 59"]);
        let (i, n, _) = first_tick(&l).unwrap();
        assert_eq!((i, n), (1, 58));
        assert_eq!(last_tick(&l), Some(59));
        assert_eq!(first_tick(&lines(&["hello"])), None);
        assert_eq!(last_tick(&[]), None);
    }

    #[test]
    fn a_restore_must_continue_the_count() {
        assert!(check_continues(56, 57).is_ok());
        assert!(check_continues(56, 58).is_ok());
        assert_eq!(
            check_continues(56, 1).unwrap_err(),
            "the workload did not continue: the restored one's first line is tick 1, but the \
             captured one had already printed tick 56"
        );
        assert!(check_continues(56, 56).is_err());
    }

    #[test]
    fn the_summary_is_flints_json() {
        let s = parse_summary(
            r#"{"capture_us":1200,"state_bytes":25000,"memory_bytes_written":4096,"memory_len":134217728}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            Summary {
                capture_us: 1200,
                state_bytes: 25000,
                memory_bytes_written: 4096,
                memory_len: 128 << 20
            }
        );
        let e = parse_summary("oops").unwrap_err();
        assert!(e.starts_with("flint's answer to the snapshot request is not its summary ("));
        assert!(e.ends_with(": \"oops\""), "{e}");
    }

    #[test]
    fn snapshot_files_are_new_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("flint-bench-snapfiles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let dir = d.join("snap-1");
        let files = open_snapshot_files(&dir).unwrap();
        drop(files);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("state")), 0o600);
        assert_eq!(mode(&dir.join("memory")), 0o600);
        // Never an old snapshot's files.
        let e = open_snapshot_files(&dir).err().unwrap().to_string();
        assert!(e.starts_with("cannot create "), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
